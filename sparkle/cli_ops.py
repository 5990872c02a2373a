"""Operator commands of the ``sparkle`` CLI: re-drive, dead letters, cancel, timeline.

Registered on the main group by :mod:`sparkle.cli` from :data:`COMMANDS`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from sparkle.schemas import STAGES

#: Seconds per duration unit (``--older-than 90s``, ``15m``, ``2h``, ``7d``; none = s).
DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``15m``, ``1h30m``, ``1.5h``, ``7d``.

    Raises:
      ValueError: the text is not a duration.
    """
    compact = text.strip().lower()
    if not compact:
        raise ValueError("empty duration")
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match.group(1)) * DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 15m, 1h30m, 7d)")
    return total


class Duration(click.ParamType[float]):
    """A click parameter holding a duration, converted to seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()

runs_dir_option = click.option("--runs-dir", type=click.Path(path_type=Path),
                               help="Runs folder (default ./runs).")
stage_option = click.option("--stage", type=click.Choice(list(STAGES)), help="Only this stage.")


def _configure(runs_dir: Path | None) -> None:
    from sparkle.cli import _settings

    _settings(runs_dir=runs_dir)


def _fail(message: str, code: int = 2) -> NoReturn:
    from sparkle.cli import fail

    fail(message, code)


def _redis_parts() -> tuple[Any, Any, Any, Any]:
    """(settings, broker, client, dispatcher) of the configured Redis."""
    from sparkle.broker import get_client, setup_broker
    from sparkle.dispatch import Dispatcher
    from sparkle.settings import get_settings

    settings = get_settings()
    broker = setup_broker(settings)
    client = get_client()
    return settings, broker, client, Dispatcher(broker, client, settings.namespace)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _redis_errors(fn: Any) -> None:
    """Run ``fn``; a Redis that cannot be reached is a message, not a traceback."""
    import redis

    from sparkle.errors import SparkleError

    try:
        fn()
    except redis.RedisError as exc:
        from sparkle.cli import redis_unreachable

        _fail(redis_unreachable(exc), 1)
    except SparkleError as exc:
        _fail(str(exc))


# -- redrive -----------------------------------------------------------------------------


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what would be re-driven; send nothing.")
@click.option("--older-than", type=DURATION, default=None,
              help="Only runs still for at least this long, e.g. 30s or 5m "
                   "(default: the lease TTL, SPARKLE_LEASE_TTL_SEC).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@runs_dir_option
def redrive(dry_run: bool, older_than: float | None, as_json: bool,
            runs_dir: Path | None) -> None:
    """Re-drive stuck runs once: a stage whose worker died, or whose message was lost.

    The same pass runs periodically in `sparkle worker`, `sparkle watch` and `sparkle
    serve`. Finished, failed and cancelled runs are left alone (use `sparkle resume` or
    `sparkle dlq replay`). Re-driving a run that was not stuck is harmless.
    """
    _configure(runs_dir)
    from sparkle.broker import is_embedded

    if is_embedded():
        _fail("embedded mode (no SPARKLE_REDIS_URL): messages live in the memory of the "
              "`sparkle serve` process, which re-drives its own runs; a separate "
              "`sparkle redrive` cannot see them")

    def body() -> None:
        from sparkle.redrive import Reaper
        from sparkle.runstore import RunStore

        settings, broker, client, dispatcher = _redis_parts()
        reaper = Reaper(RunStore(settings.runs_dir), dispatcher, client, broker, settings)
        found = reaper.run_once(dry_run=dry_run, older_than=older_than)
        if as_json:
            click.echo(json.dumps([r.as_dict() for r in found], indent=2))
            return
        if not found:
            click.echo("nothing stuck")
        for r in found:
            verb = "would re-drive" if dry_run else "re-drove"
            click.echo(f"{verb} {r.run_id} {r.stage} ({r.reason.value}, still for "
                       f"{r.idle_sec:.0f}s)")

    _redis_errors(body)


# -- dead letters ------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Dead-lettered stage messages: list, replay, purge (needs SPARKLE_REDIS_URL)."""


def _dead_letter_queue(runs_dir: Path | None) -> Any:
    _configure(runs_dir)
    from sparkle.broker import is_embedded
    from sparkle.dlq import EMBEDDED_NOTICE, DeadLetterQueue
    from sparkle.runstore import RunStore

    if is_embedded():
        _fail(EMBEDDED_NOTICE)
    settings, _, client, dispatcher = _redis_parts()
    return DeadLetterQueue(client, RunStore(settings.runs_dir), settings.namespace, dispatcher)


@dlq.command("list")
@click.option("--run", "run_id", help="Only this run.")
@stage_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@runs_dir_option
def dlq_list(run_id: str | None, stage: str | None, as_json: bool,
             runs_dir: Path | None) -> None:
    """Each dead-lettered stage message: when it failed, run, stage and the error."""

    def body() -> None:
        letters = _dead_letter_queue(runs_dir).letters(run_id, stage)
        if as_json:
            click.echo(json.dumps([letter.as_dict() for letter in letters], indent=2))
            return
        if not letters:
            click.echo("no dead letters")
            return
        click.echo(f"{'failed at':<19}  {'stage':<9} {'run':<40} error")
        for letter in letters:
            error = (letter.error or "(no failure recorded in the run)").splitlines()[0]
            click.echo(f"{_when(letter.failed_at):<19}  {letter.stage:<9} "
                       f"{letter.run_id or '?':<40} {error}")
        click.echo(f"{len(letters)} dead letter(s); `sparkle dlq replay --all` sends them again")

    _redis_errors(body)


@dlq.command()
@click.option("--run", "run_id", help="Only this run's dead letters.")
@stage_option
@click.option("--all", "replay_all", is_flag=True, help="Every dead letter.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="At most this many messages per second.")
@runs_dir_option
def replay(run_id: str | None, stage: str | None, replay_all: bool, rate: float | None,
           runs_dir: Path | None) -> None:
    """Send dead-lettered stages again (retries reset) and remove their entries.

    A stage that is done already is not sent (its entry is removed); a cancelled run is
    skipped until `sparkle resume`. Give --all, or --run and/or --stage.
    """
    if not (replay_all or run_id or stage):
        _fail("say what to replay: --all, or --run RUN and/or --stage STAGE")

    def body() -> None:
        queue = _dead_letter_queue(runs_dir)

        def report(item: Any) -> None:
            letter, result = item.letter, item.result.value
            notes = {"already_done": "stage already done; entry removed",
                     "cancelled": "run cancelled; kept (resume it first)",
                     "missing": "no such run folder; kept (`sparkle dlq purge` removes it)"}
            text = notes.get(result, "sent again")
            click.echo(f"{result:<12} {letter.run_id or '?'} {letter.stage}: {text}")

        done = queue.replay(run_id, stage, rate=rate, report=report)
        replayed = sum(1 for item in done if item.result.value == "replayed")
        click.echo(f"replayed {replayed} of {len(done)} dead letter(s)" if done
                   else "nothing to replay")

    _redis_errors(body)


@dlq.command()
@click.option("--older-than", type=DURATION, required=True,
              help="Remove dead letters older than this, e.g. 7d or 12h.")
@runs_dir_option
def purge(older_than: float, runs_dir: Path | None) -> None:
    """Remove dead letters older than a duration (dramatiq drops them after 7 days)."""

    def body() -> None:
        removed = _dead_letter_queue(runs_dir).purge(older_than)
        click.echo(f"removed {removed} dead letter(s)")

    _redis_errors(body)


# -- cancel ------------------------------------------------------------------------------


@click.command()
@click.argument("run_id")
@runs_dir_option
def cancel(run_id: str, runs_dir: Path | None) -> None:
    """Cancel RUN_ID: a running stage finishes, no further stage starts.

    The status becomes `cancelled`; only `sparkle resume RUN_ID` continues the run.
    """
    _configure(runs_dir)

    def body() -> None:
        from sparkle.lifecycle import CancelResult, cancel_run
        from sparkle.runstore import RunStore
        from sparkle.settings import get_settings

        run = RunStore(get_settings().runs_dir).run(run_id)
        done = cancel_run(run)
        if done.result is CancelResult.already_cancelled:
            click.echo(f"{run_id} is already cancelled; `sparkle resume {run_id}` continues it")
            return
        if done.result is CancelResult.already_succeeded:
            click.echo(f"{run_id} already succeeded; nothing to cancel")
            return
        running = _running_stage(run_id, done.stage or STAGES[-1])
        click.echo(f"cancelled {run_id}: {running}no further stage starts. "
                   f"Continue it with `sparkle resume {run_id}`")

    _redis_errors(body)


def _running_stage(run_id: str, stage: str) -> str:
    """"<stage> is running and finishes; " when a worker holds the run (Redis only)."""
    from sparkle.broker import get_client, is_embedded
    from sparkle.lease import holder
    from sparkle.settings import get_settings

    if is_embedded():
        return "a stage running in `sparkle run` or `sparkle serve` finishes; "
    if holder(get_client(), get_settings().namespace, run_id) is not None:
        return f"{stage} is running and finishes; "
    return ""


# -- timeline ----------------------------------------------------------------------------


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@runs_dir_option
def timeline(run_id: str, as_json: bool, runs_dir: Path | None) -> None:
    """Every event of RUN_ID in order: stage, attempt, status, duration, error, re-drives."""
    _configure(runs_dir)

    def body() -> None:
        from sparkle.runstore import RunStore
        from sparkle.settings import get_settings
        from sparkle.timeline import render
        from sparkle.timeline import timeline as build

        run = RunStore(get_settings().runs_dir).run(run_id)
        entries = build(run)
        status = run.status().value
        if as_json:
            click.echo(json.dumps({"run_id": run_id, "status": status,
                                   "events": [e.as_dict() for e in entries]}, indent=2))
            return
        click.echo(render(run, entries, status))

    _redis_errors(body)


#: Commands added to the ``sparkle`` group.
COMMANDS: list[click.Command] = [redrive, dlq, cancel, timeline]

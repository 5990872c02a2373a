"""Operator commands: redrive, dlq (list, replay, purge), cancel, timeline, prune, outbox.

Each parses its options, calls the service below (:mod:`sparkle.redrive`,
:mod:`sparkle.dlq`, :mod:`sparkle.lifecycle`, :mod:`sparkle.timeline`,
:mod:`sparkle.retention`, :mod:`sparkle.notifications`) and prints what it did. Those
services import redis, dramatiq or pydantic models, so each command imports its service
when it runs, keeping ``sparkle --help`` fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sparkle.cli import wiring
from sparkle.cli.exits import fail, guard
from sparkle.cli.options import DURATION, json_option, runs_dir_option, stage_option
from sparkle.names import STAGES
from sparkle.retention_policy import RetentionError, RetentionPolicy, parse_keep, parse_statuses

if TYPE_CHECKING:
    from sparkle.dlq import DeadLetterQueue


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _size(count: int) -> str:
    """``count`` bytes for people: 512 B, 3.4 MB, 1.2 GB."""
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


# -- redrive -----------------------------------------------------------------------------


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what would be re-driven; send nothing.")
@click.option("--older-than", type=DURATION, default=None,
              help="Only runs still for at least this long, e.g. 30s or 5m "
                   "(default: the lease TTL, SPARKLE_LEASE_TTL_SEC).")
@json_option("Print a JSON array.")
@runs_dir_option
def redrive(dry_run: bool, older_than: float | None, as_json: bool,
            runs_dir: Path | None) -> None:
    """Re-drive stuck runs once: a stage whose worker died, or whose message was lost.

    The same pass runs periodically in `sparkle worker`, `sparkle watch` and `sparkle
    serve`. Finished, failed and cancelled runs are left alone (use `sparkle resume` or
    `sparkle dlq replay`). Re-driving a run that was not stuck is harmless.
    """
    app = wiring.configure(runs_dir=runs_dir)
    if app.works_in_process:
        fail("embedded mode (no SPARKLE_REDIS_URL): messages live in the memory of the "
             "`sparkle serve` process, which re-drives its own runs; a separate "
             "`sparkle redrive` cannot see them")

    def body() -> None:
        found = app.reaper.run_once(dry_run=dry_run, older_than=older_than)
        if as_json:
            click.echo(json.dumps([r.as_dict() for r in found], indent=2))
            return
        if not found:
            click.echo("nothing stuck")
        for r in found:
            verb = "would re-drive" if dry_run else "re-drove"
            click.echo(f"{verb} {r.run_id} {r.stage} ({r.reason.value}, still for "
                       f"{r.idle_sec:.0f}s)")

    guard(body)


# -- dead letters ------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Dead-lettered stage messages: list, replay, purge (needs SPARKLE_REDIS_URL)."""


def _dead_letter_queue(runs_dir: Path | None) -> DeadLetterQueue:
    from sparkle.backends import DeadLettersUnavailable  # (redis: see module doc)

    app = wiring.configure(runs_dir=runs_dir)
    try:
        return app.dead_letters()
    except DeadLettersUnavailable as exc:
        fail(str(exc))


@dlq.command("list")
@click.option("--run", "run_id", help="Only this run.")
@stage_option
@json_option("Print a JSON array.")
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

    guard(body)


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
        fail("say what to replay: --all, or --run RUN and/or --stage STAGE")

    def body() -> None:
        queue = _dead_letter_queue(runs_dir)

        def report(item: Any) -> None:
            letter, result = item.letter, item.result.value
            notes = {"already_done": "stage already done; entry removed",
                     "cancelled": "run cancelled; kept (resume it first)",
                     "missing": "no such run folder; kept (`sparkle dlq purge` removes it)",
                     "busy": "a worker holds the run; kept (replay it later)"}
            text = notes.get(result, "sent again")
            click.echo(f"{result:<12} {letter.run_id or '?'} {letter.stage}: {text}")

        done = queue.replay(run_id, stage, rate=rate, report=report)
        replayed = sum(1 for item in done if item.result.value == "replayed")
        click.echo(f"replayed {replayed} of {len(done)} dead letter(s)" if done
                   else "nothing to replay")

    guard(body)


@dlq.command()
@click.option("--older-than", type=DURATION, required=True,
              help="Remove dead letters older than this, e.g. 7d or 12h.")
@runs_dir_option
def purge(older_than: float, runs_dir: Path | None) -> None:
    """Remove dead letters older than a duration (dramatiq drops them after 7 days)."""

    def body() -> None:
        removed = _dead_letter_queue(runs_dir).purge(older_than)
        click.echo(f"removed {removed} dead letter(s)")

    guard(body)


# -- cancel ------------------------------------------------------------------------------


@click.command()
@click.argument("run_id")
@runs_dir_option
def cancel(run_id: str, runs_dir: Path | None) -> None:
    """Cancel RUN_ID: a running stage finishes, no further stage starts.

    The status becomes `cancelled`; only `sparkle resume RUN_ID` continues the run.
    """
    wiring.configure(runs_dir=runs_dir)

    def body() -> None:
        # (pydantic models: see module doc)
        from sparkle.lifecycle import CancelResult, Leases, cancel_run
        from sparkle.notifications import flush

        run = wiring.app().store.run(run_id)
        done = cancel_run(run, Leases.of(wiring.app().dispatcher), settings=wiring.app().settings,
                          notify_in_background=False)
        if done.result is CancelResult.already_cancelled:
            click.echo(f"{run_id} is already cancelled; `sparkle resume {run_id}` continues it")
            return
        if done.result is CancelResult.already_succeeded:
            click.echo(f"{run_id} already succeeded; nothing to cancel")
            return
        flush(wiring.app().settings)
        running = _running_stage(run_id, done.stage or STAGES[-1])
        click.echo(f"cancelled {run_id}: {running}no further stage starts. "
                   f"Continue it with `sparkle resume {run_id}`")

    guard(body)


def _running_stage(run_id: str, stage: str) -> str:
    """"<stage> is running and finishes; " when a worker holds the run."""
    from sparkle.lease import holder  # (redis: see module doc)

    app = wiring.app()
    if app.works_in_process:
        return "a stage running in `sparkle run` or `sparkle serve` finishes; "
    if holder(app.backend.client, app.settings.namespace, run_id) is not None:
        return f"{stage} is running and finishes; "
    return ""


# -- timeline ----------------------------------------------------------------------------


@click.command()
@click.argument("run_id")
@json_option()
@runs_dir_option
def timeline(run_id: str, as_json: bool, runs_dir: Path | None) -> None:
    """Every event of RUN_ID in order: stage, attempt, status, duration, error, re-drives."""
    wiring.configure(runs_dir=runs_dir)

    def body() -> None:
        # (pydantic models: see module doc)
        from sparkle.timeline import render
        from sparkle.timeline import timeline as build

        run = wiring.app().store.run(run_id)
        entries = build(run)
        status = run.status().value
        if as_json:
            click.echo(json.dumps({"run_id": run_id, "status": status,
                                   "events": [e.as_dict() for e in entries]}, indent=2))
            return
        click.echo(render(run, entries, status))

    guard(body)


# -- prune -------------------------------------------------------------------------------


@click.command()
@click.option("--older-than", type=DURATION, default="30d", show_default=True,
              help="Only runs finished at least this long ago, e.g. 30d or 12h.")
@click.option("--status", "statuses", default="succeeded,failed,rejected,cancelled",
              show_default=True, help="Comma-separated finished statuses to prune.")
@click.option("--keep", type=click.Choice(["final"]), default=None,
              help="`final`: remove only intermediate media, keeping plan, history, "
                   "checkpoints, QA report and final/.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@json_option("Print the report as JSON.")
@runs_dir_option
def prune(older_than: float, statuses: str, keep: str | None, dry_run: bool, as_json: bool,
          runs_dir: Path | None) -> None:
    """Remove finished runs (or only their intermediate media) older than a duration.

    Never touches a run that is unfinished, awaiting review or held by a worker. Safe to
    run while workers run and while another prune runs. A run kept with --keep final no
    longer has the media its stages handed on: to render it again, `sparkle resume RUN
    --from script`.
    """
    wiring.configure(runs_dir=runs_dir)
    from sparkle.retention import prune as prune_runs  # (redis and pydantic models: see module doc)

    try:
        policy = RetentionPolicy(older_than_sec=older_than, statuses=parse_statuses(statuses),
                                 keep_final=parse_keep(keep))
    except RetentionError as exc:
        fail(f"--status/--keep: {exc}")

    def body() -> None:
        app = wiring.app()
        settings = app.settings
        client = app.backend.shared_client
        report = prune_runs(app.store, policy, client=client,
                            namespace=settings.namespace, dry_run=dry_run)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
            return
        for item in report.pruned:
            click.echo(f"{item.action.value:<18} {item.run_id} ({item.status}, finished "
                       f"{_when(item.finished_at)}, {_size(item.freed_bytes)})")
        for skipped in report.skipped:
            click.echo(f"{'skipped':<18} {skipped.run_id}: {skipped.reason}")
        verb = "would free" if dry_run else "freed"
        click.echo(f"{verb} {_size(report.freed_bytes)} in {report.runs} run(s)")

    guard(body)


# -- outbox ------------------------------------------------------------------------------


@click.command()
@click.option("--deliver", is_flag=True, help="Try every notification that is due, now.")
@json_option("Print a JSON array.")
@runs_dir_option
def outbox(deliver: bool, as_json: bool, runs_dir: Path | None) -> None:
    """Notifications not yet delivered (SPARKLE_WEBHOOK_URL, sparkle.notifiers plugins).

    Workers and the reaper deliver them by themselves, with backoff; --deliver tries the
    due ones at once (delivered ones show in `sparkle timeline RUN`).
    """
    wiring.configure(runs_dir=runs_dir)
    from sparkle.notifications import flush, pending_views  # (pydantic: see module doc)

    settings = wiring.app().settings
    if deliver:
        for item in flush(settings):
            note = f": {item.error}" if item.error else ""
            click.echo(f"{item.outcome:<9} {item.run_id} to {item.target} "
                       f"(attempt {item.attempts}){note}", err=as_json)
    views = pending_views(settings)
    if as_json:
        click.echo(json.dumps([view.as_dict() for view in views], indent=2))
        return
    if not views:
        click.echo("outbox empty: every notification was delivered")
        return
    for view in views:
        error = f"  last error: {view.last_error}" if view.last_error else ""
        click.echo(f"{view.event:<20} {view.run_id:<40} to {view.target}  attempts "
                   f"{view.attempts}, next {_when(view.next_at)}{error}")
    click.echo(f"{len(views)} pending")


#: The commands of this module, as the ``sparkle`` group adds them.
COMMANDS: list[click.Command] = [redrive, dlq, cancel, timeline, prune, outbox]

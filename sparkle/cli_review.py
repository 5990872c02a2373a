"""Review commands of the ``sparkle`` CLI: approve, redo, reject, takes.

Thin: each calls the service functions of :mod:`sparkle.review`. Embedded (no
``SPARKLE_REDIS_URL``), ``approve``, ``redo`` and ``takes --use`` carry the run on in the
foreground like ``sparkle resume``; with Redis they queue its next stage for the workers.
Registered on the main group by :mod:`sparkle.cli` from :data:`COMMANDS`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import click

#: Exit code of ``sparkle run`` (and of an embedded ``approve``, ``redo``, ``resume``) when
#: the run stopped at a review gate and waits for a person.
EXIT_AWAITING_REVIEW = 5

runs_dir_option = click.option("--runs-dir", type=click.Path(path_type=Path),
                               help="Runs folder (default ./runs).")
adapters_option = click.option("--adapters",
                               help="Adapter set (default: SPARKLE_ADAPTERS or 'media').")
threads_option = click.option("--threads", default=2, show_default=True,
                              help="In-process worker threads (embedded).")
note_option = click.option("--note", help="Why; kept in the run's manifest.")
who_option = click.option("--as", "who", help="Who decides (default: your OS user).")
review_option = click.option("--review", "review_id",
                             help="Apply only while this review (its id in `sparkle status "
                                  "--json`) is the one waiting.")


def command_for(verb: str, run_id: str, *extra: str) -> str:
    """A ``sparkle`` command on ``run_id`` as this one ran: the same runs folder and adapter
    set, quoted for the shell."""
    from sparkle.cli import _app
    from sparkle.settings import Settings

    settings = _app().settings
    parts = ["sparkle", verb, run_id, *extra]
    if settings.runs_dir != Path("runs"):
        parts += ["--runs-dir", str(settings.runs_dir)]
    if verb in ("approve", "redo", "takes") and \
            settings.adapters != Settings.model_fields["adapters"].default:
        parts += ["--adapters", settings.adapters]
    return shlex.join(parts)


def waiting_message(run: Any) -> str:
    """What ``sparkle run`` prints when the run stops at a review gate: what to look at,
    and the commands that decide."""
    from sparkle.review import review_files
    from sparkle.review_state import read_review

    waiting = read_review(str(run.dir))
    if waiting is None:
        return f"{run.run_id} is not waiting for a review"
    why = {"review_after": "review gate", "qa_escalate": "QA escalated",
           "qa_regenerate_limit": "QA re-rolled its limit"}[waiting.reason]
    lines = [f"waiting for review after {waiting.stage} ({why}; review {waiting.review_id}). "
             "Look at:"]
    lines += [f"  {run.dir / path}" for path in review_files(run, waiting.stage)]
    shots = [shot.id for shot in run.plan().shots]
    lines += [
        "Then decide:",
        f"  approve: {command_for('approve', run.run_id)} [--note TEXT]",
        f"  re-roll: {command_for('redo', run.run_id, '--shots', ','.join(shots[:2]))}"
        f" [--stage STAGE] [--note TEXT]",
        f"  takes:   {command_for('takes', run.run_id, '--shot', shots[0])} [--use N]",
        f"  reject:  {command_for('reject', run.run_id, '--note', 'TEXT')}",
    ]
    return "\n".join(lines)


def _decide(run_id: str, runs_dir: Path | None, adapters: str | None, threads: int,
            act: Any) -> None:
    """Configure, apply the decision ``act(engine, queue)``, then carry the run on: in the
    foreground when embedded, else by the queued message."""
    from sparkle.cli import _engine, _guard, _settings, _work

    app = _settings(runs_dir=runs_dir, adapters=adapters)

    def body() -> int:
        engine = _engine()
        embedded = app.works_in_process
        decision = act(engine, not embedded)
        click.echo(_describe(decision))
        if not decision.closed:
            return 0
        if embedded:
            return int(_work(engine.store.run(run_id), None, None, threads))
        click.echo(f"{run_id}: queued {decision.queued}" if decision.queued
                   else f"{run_id}: nothing to queue ({engine.store.run(run_id).status().value})")
        return 0

    _guard(body)


def _describe(decision: Any) -> str:
    shots = f" shots {', '.join(decision.shots)};" if decision.shots else ""
    reset = f" re-running {', '.join(decision.stages_reset)};" if decision.stages_reset else ""
    return (f"{decision.run_id}: {decision.kind} by {decision.by} after {decision.stage} "
            f"(waited {decision.waited_sec:.0f}s);{shots}{reset}".rstrip(";"))


@click.command()
@click.argument("run_id")
@note_option
@who_option
@review_option
@runs_dir_option
@adapters_option
@threads_option
def approve(run_id: str, note: str | None, who: str | None, review_id: str | None,
            runs_dir: Path | None, adapters: str | None, threads: int) -> None:
    """Approve RUN_ID, waiting for review: it continues with its next stage.

    Embedded, the run is worked here until it ends or reaches the next gate (exit 5 then);
    with Redis its next stage is queued. Refused (exit 1) unless the run awaits review.
    """
    from sparkle import review

    _decide(run_id, runs_dir, adapters, threads, lambda engine, queue: review.approve(
        engine, run_id, who=who, note=note, review_id=review_id, queue=queue))


@click.command()
@click.argument("run_id")
@click.option("--shots", required=True, help="Comma-separated shot ids to re-roll, e.g. s2,s5.")
@click.option("--stage", type=click.Choice(["images", "videos", "tts", "lipsync"]),
              help="The stage to re-roll (default: the one the run stopped after).")
@note_option
@who_option
@review_option
@runs_dir_option
@adapters_option
@threads_option
def redo(run_id: str, shots: str, stage: str | None, note: str | None, who: str | None,
         review_id: str | None, runs_dir: Path | None, adapters: str | None,
         threads: int) -> None:
    """Re-roll STAGE of RUN_ID for the named shots only, keeping every other shot's files.

    The stages reading those shots' output run again for them, `assemble` and `qa` whole.
    Each re-roll is a new take with its own seed; earlier takes are kept (`sparkle takes`).
    """
    from sparkle import review

    names = [part.strip() for part in shots.split(",") if part.strip()]
    _decide(run_id, runs_dir, adapters, threads, lambda engine, queue: review.redo(
        engine, run_id, names, stage=stage, who=who, note=note, review_id=review_id,
        queue=queue))


@click.command()
@click.argument("run_id")
@click.option("--note", required=True, help="Why the run is rejected; kept in the manifest.")
@who_option
@review_option
@runs_dir_option
def reject(run_id: str, note: str, who: str | None, review_id: str | None,
           runs_dir: Path | None) -> None:
    """Reject RUN_ID, waiting for review: it ends as `rejected` (not an error, never
    re-driven)."""
    from sparkle.cli import _engine, _guard, _settings

    _settings(runs_dir=runs_dir)

    def body() -> int:
        from sparkle import review

        engine = _engine()
        click.echo(_describe(review.reject(engine, run_id, note=note, who=who,
                                           review_id=review_id)))
        return 0

    _guard(body)


@click.command()
@click.argument("run_id")
@click.option("--shot", help="Only this shot.")
@click.option("--stage", type=click.Choice(["images", "videos", "tts", "lipsync"]),
              help="With --use: the stage whose take to use (default: the one the run "
                   "stopped after).")
@click.option("--use", "use", type=click.IntRange(min=1),
              help="Put take N of --shot back in place (the run must await review).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@note_option
@who_option
@runs_dir_option
@adapters_option
@threads_option
def takes(run_id: str, shot: str | None, stage: str | None, use: int | None, as_json: bool,
          note: str | None, who: str | None, runs_dir: Path | None, adapters: str | None,
          threads: int) -> None:
    """List the takes of RUN_ID's shots (kept files of every re-roll), or pick one.

    With --use N (and --shot), take N's files replace the shot's current ones; the stages
    reading them run again for that shot, as after `sparkle redo`.
    """
    from sparkle import review
    from sparkle.cli import _guard, _settings, fail

    if use is not None:
        if not shot:
            fail("--use needs --shot: the shot whose take to use")
        chosen: str = shot
        _decide(run_id, runs_dir, adapters, threads, lambda engine, queue: review.use_take(
            engine, run_id, chosen, use, stage=stage, who=who, note=note, queue=queue))
        return
    _settings(runs_dir=runs_dir)

    def body() -> int:
        from sparkle.cli import _app
        from sparkle.runstore import RunStore

        found = review.takes_of(RunStore(_app().settings.runs_dir), run_id, shot)
        if as_json:
            click.echo(json.dumps(found, indent=2))
            return 0
        for shot_id, stages in found.items():
            for stage_name, kept in stages.items():
                for take in kept:
                    mark = "*" if take["current"] else " "
                    seed = take["seed"] if take["seed"] is not None else "-"
                    click.echo(f"{shot_id:<12} {stage_name:<8} {mark} take {take['take']:<3} "
                               f"seed {seed!s:<20} {take['cause']:<9} "
                               f"{' '.join(take['files'])}")
        return 0

    _guard(body)


COMMANDS: list[click.Command] = [approve, redo, reject, takes]

"""Review commands: approve, redo, reject, takes.

Thin: each calls the service functions of :mod:`sparkle.review`. Embedded (no
``SPARKLE_REDIS_URL``), ``approve``, ``redo`` and ``takes --use`` carry the run on in the
foreground like ``sparkle resume``; with Redis they queue its next stage for the workers.
:mod:`sparkle.review` imports redis and the pydantic models, so each command imports it
when it runs, keeping ``sparkle --help`` fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sparkle.cli import wiring
from sparkle.cli.exits import fail, guard
from sparkle.cli.foreground import work
from sparkle.cli.options import (
    PER_SHOT_STAGE_CHOICE,
    adapters_option,
    json_option,
    runs_dir_option,
    threads_option,
)
from sparkle.exit_codes import EXIT_OK

if TYPE_CHECKING:
    from sparkle.engine import Engine
    from sparkle.review import Decision

note_option = click.option("--note", help="Why; kept in the run's manifest.")
who_option = click.option("--as", "who", help="Who decides (default: your OS user).")
review_option = click.option("--review", "review_id",
                             help="Apply only while this review (its id in `sparkle status "
                                  "--json`) is the one waiting.")


def _decide(run_id: str, runs_dir: Path | None, adapters: str | None, threads: int,
            act: Callable[[Engine, bool], Decision]) -> None:
    """Configure, apply the decision ``act(engine, queue)``, then carry the run on: in the
    foreground when embedded, else by the queued message."""
    app = wiring.configure(runs_dir=runs_dir, adapters=adapters)

    def body() -> int:
        engine = wiring.engine()
        embedded = app.works_in_process
        decision = act(engine, not embedded)
        click.echo(_describe(decision))
        if not decision.closed:
            return EXIT_OK
        if embedded:
            return work(engine.store.run(run_id), None, None, threads)
        click.echo(f"{run_id}: queued {decision.queued}" if decision.queued
                   else f"{run_id}: nothing to queue ({engine.store.run(run_id).status().value})")
        return EXIT_OK

    guard(body)


def _describe(decision: Decision) -> str:
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
@threads_option(embedded_only=True)
def approve(run_id: str, note: str | None, who: str | None, review_id: str | None,
            runs_dir: Path | None, adapters: str | None, threads: int) -> None:
    """Approve RUN_ID, waiting for review: it continues with its next stage.

    Embedded, the run is worked here until it ends or reaches the next gate (exit 5 then);
    with Redis its next stage is queued. Refused (exit 1) unless the run awaits review.
    """
    from sparkle import review  # (redis, pydantic models: see module doc)

    _decide(run_id, runs_dir, adapters, threads, lambda engine, queue: review.approve(
        engine, run_id, who=who, note=note, review_id=review_id, queue=queue))


@click.command()
@click.argument("run_id")
@click.option("--shots", required=True, help="Comma-separated shot ids to re-roll, e.g. s2,s5.")
@click.option("--stage", type=PER_SHOT_STAGE_CHOICE,
              help="The stage to re-roll (default: the one the run stopped after).")
@note_option
@who_option
@review_option
@runs_dir_option
@adapters_option
@threads_option(embedded_only=True)
def redo(run_id: str, shots: str, stage: str | None, note: str | None, who: str | None,
         review_id: str | None, runs_dir: Path | None, adapters: str | None,
         threads: int) -> None:
    """Re-roll STAGE of RUN_ID for the named shots only, keeping every other shot's files.

    The stages reading those shots' output run again for them, `assemble` and `qa` whole.
    Each re-roll is a new take with its own seed; earlier takes are kept (`sparkle takes`).
    """
    from sparkle import review  # (redis, pydantic models: see module doc)

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
    wiring.configure(runs_dir=runs_dir)

    def body() -> int:
        from sparkle import review  # (redis, pydantic models: see module doc)

        engine = wiring.engine()
        click.echo(_describe(review.reject(engine, run_id, note=note, who=who,
                                           review_id=review_id)))
        return EXIT_OK

    guard(body)


@click.command()
@click.argument("run_id")
@click.option("--shot", help="Only this shot.")
@click.option("--stage", type=PER_SHOT_STAGE_CHOICE,
              help="With --use: the stage whose take to use (default: the one the run "
                   "stopped after).")
@click.option("--use", "use", type=click.IntRange(min=1),
              help="Put take N of --shot back in place (the run must await review).")
@json_option()
@note_option
@who_option
@runs_dir_option
@adapters_option
@threads_option(embedded_only=True)
def takes(run_id: str, shot: str | None, stage: str | None, use: int | None, as_json: bool,
          note: str | None, who: str | None, runs_dir: Path | None, adapters: str | None,
          threads: int) -> None:
    """List the takes of RUN_ID's shots (kept files of every re-roll), or pick one.

    With --use N (and --shot), take N's files replace the shot's current ones; the stages
    reading them run again for that shot, as after `sparkle redo`.
    """
    from sparkle import review  # (redis, pydantic models: see module doc)

    if use is not None:
        if not shot:
            fail("--use needs --shot: the shot whose take to use")
        chosen: str = shot
        _decide(run_id, runs_dir, adapters, threads, lambda engine, queue: review.use_take(
            engine, run_id, chosen, use, stage=stage, who=who, note=note, queue=queue))
        return
    wiring.configure(runs_dir=runs_dir)

    def body() -> int:
        found = review.takes_of(wiring.app().store, run_id, shot)
        if as_json:
            click.echo(json.dumps(found, indent=2))
            return EXIT_OK
        for shot_id, stages in found.items():
            for stage_name, kept in stages.items():
                for take in kept:
                    mark = "*" if take["current"] else " "
                    seed = take["seed"] if take["seed"] is not None else "-"
                    click.echo(f"{shot_id:<12} {stage_name:<8} {mark} take {take['take']:<3} "
                               f"seed {seed!s:<20} {take['cause']:<9} "
                               f"{' '.join(take['files'])}")
        return EXIT_OK

    guard(body)


#: The commands of this module, as the ``sparkle`` group adds them.
COMMANDS: list[click.Command] = [approve, redo, reject, takes]

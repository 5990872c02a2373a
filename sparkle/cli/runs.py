"""Commands about plans and runs: validate, schema, run, submit, resume, status, runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from sparkle import statuscache
from sparkle.cli import wiring
from sparkle.cli.exits import guard
from sparkle.cli.foreground import work
from sparkle.cli.options import (
    STATUS_CHOICE,
    adapters_option,
    from_stage_option,
    json_option,
    only_stage_option,
    priority_option,
    runs_dir_option,
    threads_option,
)
from sparkle.errors import PlanError, RunConflictError, RunNotFoundError
from sparkle.exit_codes import EXIT_OK, EXIT_USAGE
from sparkle.priority import set_run_priority

# -- plans -------------------------------------------------------------------------------


@click.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(plans: tuple[Path, ...]) -> None:
    """Check plan files; print OK or every problem per file (exit 2 if any is invalid)."""
    from sparkle.plans import load_plan_file  # (pydantic models: imported when used)

    max_bytes = wiring.app().settings.max_plan_bytes
    bad = 0
    for path in plans:
        try:
            load_plan_file(path, max_bytes)
        except PlanError as exc:
            bad += 1
            click.echo(str(exc))
        else:
            click.echo(f"OK {path}")
    sys.exit(EXIT_USAGE if bad else EXIT_OK)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("schemas"),
              show_default=True, help="Folder to write the .schema.json files to.")
def schema(out: Path) -> None:
    """Write the JSON Schemas of MoviePlan, BaseImagePlan, AssetRefs, QAReport, Checkpoint,
    StageEvent and RunManifest."""
    # (pydantic models: imported when used; base_image_plan registers BaseImagePlan)
    import sparkle.base_image_plan  # noqa: F401
    from sparkle.schemas import EXPORTED_MODELS

    out.mkdir(parents=True, exist_ok=True)
    for name, model in EXPORTED_MODELS.items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {path}")


# -- running -----------------------------------------------------------------------------


@click.command()
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--run-id", help="Use this run id instead of the one derived from the plan.")
@from_stage_option
@only_stage_option
@adapters_option
@runs_dir_option
@threads_option()
@priority_option("The run's priority (default: the plan's metadata.priority, else normal).")
def run(plan: Path, run_id: str | None, from_stage: str | None, only: str | None,
        adapters: str | None, runs_dir: Path | None, threads: int, level: str | None) -> None:
    """Render PLAN in this process, showing progress, and print where the movie is.

    Uses the same actors and engine as the distributed mode, with an in-process worker
    (against Redis too when SPARKLE_REDIS_URL is set). Exit 0 on success, 1 when a stage
    failed (the command to resume is printed), 2 for an invalid plan, 3 when the storage
    failed (a full disk, a read-only folder: the path and the cause are printed, and the
    command to resume once it is fixed).

    Embedded, one process at a time works a run: when another one (a second `sparkle run`
    of the same plan, a `sparkle serve`) is working it, this one names it (pid, host,
    command) and follows the run's progress to its end, exiting as that run ended; if the
    other process dies first, the run is worked here from where it stands.
    """
    wiring.configure(adapters=adapters, runs_dir=runs_dir)

    def body() -> int:
        from sparkle.plans import load_plan_file  # (pydantic models: imported when used)

        movie_plan = load_plan_file(plan, wiring.app().settings.max_plan_bytes)
        engine = wiring.engine()
        the_run, created = engine.store.create(movie_plan, run_id)
        if level is not None:
            set_run_priority(the_run.dir, level)
        click.echo(f"run {the_run.run_id} ({'created' if created else 'existing'}) "
                   f"in {the_run.dir}", err=True)
        return work(the_run, from_stage, only, threads)

    guard(body)


@click.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(path_type=Path))
@priority_option("The runs' priority, ahead of (high) or behind (low) the normal backlog "
                 "(default: each plan's metadata.priority, else normal).")
def submit(plans: tuple[Path, ...], level: str | None) -> None:
    """Create runs for PLANS and queue them on Redis; print each run id.

    Without SPARKLE_REDIS_URL there is no queue to submit to: the plans are copied into
    the inbox, where a running `sparkle serve` picks them up (with --priority, the copy's
    metadata.priority says it).
    """

    def body() -> int:
        # (dramatiq, redis and pydantic models: imported when used)
        from sparkle.lifecycle import NotQueued, copy_into_inbox, create_run
        from sparkle.plans import load_plan_file

        settings = wiring.app().settings
        bad = 0
        if wiring.app().works_in_process:  # (no queue other processes read: the inbox is)
            for path in plans:
                try:
                    load_plan_file(path, settings.max_plan_bytes)
                except PlanError as exc:
                    click.echo(str(exc), err=True)
                    bad += 1
                    continue
                target = copy_into_inbox(path, settings.inbox_dir, level)
                click.echo(f"copied into {target} (no SPARKLE_REDIS_URL: a running "
                           f"`sparkle serve` takes it; or render it now with `sparkle run {path}`)")
            return EXIT_USAGE if bad else EXIT_OK
        engine = wiring.engine()
        for path in plans:
            try:
                done = create_run(engine.store, engine.dispatcher,
                                  load_plan_file(path, settings.max_plan_bytes), level=level)
            except (PlanError, RunConflictError) as exc:
                click.echo(str(exc), err=True)
                bad += 1
                continue
            except NotQueued as exc:
                click.echo(f"{exc.run.run_id} {'created' if exc.created else 'existing'}, NOT "
                           f"queued: `sparkle resume {exc.run.run_id}` queues it once Redis "
                           "answers (so does the reaper of a running worker); plans after it "
                           "were not submitted", err=True)
                raise
            the_run, stage = done.run, done.queued
            state = f"queued {stage}" if stage else f"nothing to queue ({the_run.status().value})"
            click.echo(f"{the_run.run_id} {'created' if done.created else 'existing'}, {state}")
        return EXIT_USAGE if bad else EXIT_OK

    guard(body)


@click.command()
@click.argument("run_id")
@from_stage_option
@only_stage_option
@runs_dir_option
@adapters_option
@threads_option(embedded_only=True)
def resume(run_id: str, from_stage: str | None, only: str | None, runs_dir: Path | None,
           adapters: str | None, threads: int) -> None:
    """Continue RUN_ID from its first stage without success.

    With Redis the stage is queued for the workers; embedded, the run is worked here in
    the foreground (while another process works it, that process is named and followed
    first, as `sparkle run` does). A cancelled run continues only through this command.
    """
    wiring.configure(runs_dir=runs_dir, adapters=adapters)

    def body() -> int:
        from sparkle.lifecycle import check_resumable, resume_run  # (dramatiq: when used)

        engine = wiring.engine()
        the_run = engine.store.run(run_id)
        check_resumable(the_run)
        if wiring.app().works_in_process:
            return work(the_run, from_stage, only, threads)
        resumed = resume_run(the_run, engine.dispatcher, from_stage, only)
        reset, stage = resumed.reset, resumed.queued
        if reset:
            click.echo(f"reset: {', '.join(reset)}")
        if resumed.handed_over:
            click.echo(f"{run_id}: handed to the worker holding it, which carries the "
                       "resume out when its stage ends and goes on")
            return EXIT_OK
        click.echo(f"{run_id}: queued {stage}" if stage
                   else f"{run_id}: nothing to queue ({the_run.status().value})")
        return EXIT_OK

    guard(body)


# -- looking -----------------------------------------------------------------------------


@click.command()
@click.argument("run_id")
@json_option()
@runs_dir_option
def status(run_id: str, as_json: bool, runs_dir: Path | None) -> None:
    """Per-stage status, attempts, duration and error of RUN_ID."""
    wiring.configure(runs_dir=runs_dir)

    def body() -> int:
        from sparkle.runstore import cached_entry  # (pydantic models: imported when used)

        # Through the run's summary cache, so this prints exactly what the fast path of
        # sparkle.entry prints from it, and leaves the cache fresh for that path.
        the_run = wiring.app().store.run(run_id)
        entry = cached_entry(the_run)
        if entry is None or entry.view is None:
            raise RunNotFoundError(f"no run {run_id!r} in {wiring.app().settings.runs_dir}")
        click.echo(statuscache.render_json(entry.view) if as_json
                   else statuscache.render_text(entry.view, str(the_run.dir)))
        return EXIT_OK

    guard(body)


@click.command()
@click.option("--status", "only_status", type=STATUS_CHOICE, help="Only runs with this status.")
@json_option("Print JSON lines.")
@runs_dir_option
def runs(only_status: str | None, as_json: bool, runs_dir: Path | None) -> None:
    """One line per run: id, status, QA decision, next stage (for a run awaiting review, the
    stage it stopped after and how long it has waited), age, time in stages, movie."""
    wiring.configure(runs_dir=runs_dir)
    # (redis and pydantic models: imported when used)
    from sparkle.listing import review_wait, run_rows
    from sparkle.runindex import listing

    store = wiring.app().store
    # listing() answers from each run's stat-validated summary cache (10,000 runs in about
    # 0.5 s instead of 2.3 s, docs/BENCHMARKS.md); queued or running runs on Redis come
    # from the unfinished-run index, without reading the finished ones.
    summaries = [summary for summary in listing(wiring.app(), only_status)
                 if not only_status or summary.status.value == only_status]
    if not as_json:
        for row in run_rows(store, summaries):
            click.echo(row)
        return
    for summary in summaries:
        record: dict[str, Any] = {"run_id": summary.run_id, "status": summary.status.value,
                                  "qa_decision": summary.qa_decision,
                                  "next_stage": summary.next_stage}
        waiting = review_wait(store.root / summary.run_id) \
            if summary.status.value == "awaiting_review" else None
        if waiting is not None:
            record.update(review_after=waiting[0], waiting_sec=round(waiting[1], 1))
        click.echo(json.dumps(record))


#: The commands of this module, as the ``sparkle`` group adds them.
COMMANDS: list[click.Command] = [validate, schema, run, submit, resume, status, runs]

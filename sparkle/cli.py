"""The ``sparkle`` command line.

Exit codes: 0 success; 1 a stage failed (the message says how to resume), or a review
decision was refused; 2 bad input or configuration (the message names the file, the field
and what to do); 3 an infrastructure failure: the storage under the runs folder or the
inbox failed (full, read-only, I/O error; the message names the path, the cause and the
file system, and how to go on); 5 the run stopped at a review gate and waits for a person
(the files to look at and the commands that decide are printed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from sparkle import __version__
from sparkle.app import App
from sparkle.errors import (
    ConfigError,
    PlanError,
    RunConflictError,
    RunNotFoundError,
    SparkleError,
    UnsafePathError,
)
from sparkle.priority import PRIORITIES, set_run_priority
from sparkle.schemas import EXPORTED_MODELS, STAGES

if TYPE_CHECKING:
    from sparkle.engine import Engine

log = logging.getLogger("sparkle")

#: Exit code of a run whose stage failed.
EXIT_FAILED = 1

#: Exit code of invalid input or configuration.
EXIT_USAGE = 2

#: Exit code of an infrastructure failure (:mod:`sparkle.infrastructure`): a full disk, a
#: read-only folder, an I/O error under Sparkle's own files. Nothing is wrong with the plan
#: or the stages; the run (if one was made) resumes once the cause is gone.
EXIT_INFRASTRUCTURE = 3


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _setup_logging(level: str, fmt: str) -> None:
    from sparkle.logs import configure_logging

    configure_logging(level, fmt)


#: Shown under ``sparkle --help``: one exit-code convention for every command.
EXIT_CODES_HELP = (
    "\b\nExit codes:\n"
    "  0  done\n"
    "  1  a stage failed, the run was cancelled, or a decision was refused\n"
    "  2  bad input or setting (the file, the field and what to do are named)\n"
    "  3  the storage failed (full, read-only, I/O error; the path is named)\n"
    "  5  the run stopped at a review gate and waits for a person"
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="sparkle")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity.")
@click.option("--log-format", default="text", show_default=True,
              type=click.Choice(["text", "json"]), help="Log line format.")
def main(log_level: str, log_format: str) -> None:
    """Sparkle Motion: MoviePlan JSON in, playable movie out.

    Without SPARKLE_REDIS_URL everything runs embedded, in one process; with it, stages
    are dramatiq messages on Redis worked by `sparkle worker` processes.
    """
    _setup_logging(log_level, log_format)


def _settings(**overrides: Any) -> App:
    """Build this command's App from the environment and ``overrides`` (its options)."""
    try:
        app = App.from_environment(**overrides)
    except ConfigError as exc:
        fail(str(exc))
    click.get_current_context().find_root().obj = app
    return app


def _app() -> App:
    """This command's App (built by :func:`_settings`, else from the environment)."""
    root = click.get_current_context().find_root()
    if not isinstance(root.obj, App):
        _settings()
    app: App = root.obj
    return app


def redis_unreachable(exc: Exception) -> str:
    """What to say when a command cannot reach Redis."""
    return f"Redis: {exc} (is SPARKLE_REDIS_URL right, and the server up?)"


def _guard(fn: Callable[[], int | None]) -> None:
    """Run a command body, turning Sparkle's errors (and a Redis that cannot be reached)
    into messages and exit codes."""
    import redis

    from sparkle.infrastructure import InfrastructureError, from_os_error, is_infrastructure

    try:
        code = fn()
    except redis.RedisError as exc:
        fail(redis_unreachable(exc), EXIT_FAILED)
    except InfrastructureError as exc:
        fail(f"{exc}; {exc.advice}", EXIT_INFRASTRUCTURE)
    except OSError as exc:
        if not is_infrastructure(exc):
            raise
        failure = from_os_error(exc)
        fail(f"{failure}; {failure.advice}", EXIT_INFRASTRUCTURE)
    except PlanError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    except (ConfigError, RunConflictError, RunNotFoundError, UnsafePathError) as exc:
        fail(str(exc))
    except SparkleError as exc:
        fail(str(exc), EXIT_FAILED)
    sys.exit(code or 0)


# -- plans -------------------------------------------------------------------------------


@main.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(plans: tuple[Path, ...]) -> None:
    """Check plan files; print OK or every problem per file (exit 2 if any is invalid)."""
    from sparkle.plans import load_plan_file

    max_bytes = _app().settings.max_plan_bytes
    bad = 0
    for path in plans:
        try:
            load_plan_file(path, max_bytes)
        except PlanError as exc:
            bad += 1
            click.echo(str(exc))
        else:
            click.echo(f"OK {path}")
    sys.exit(EXIT_USAGE if bad else 0)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("schemas"),
              show_default=True, help="Folder to write the .schema.json files to.")
def schema(out: Path) -> None:
    """Write the JSON Schemas of MoviePlan, BaseImagePlan, AssetRefs, QAReport, Checkpoint,
    StageEvent and RunManifest."""
    import sparkle.base_image_plan  # noqa: F401 (registers BaseImagePlan for export)

    out.mkdir(parents=True, exist_ok=True)
    for name, model in EXPORTED_MODELS.items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {path}")


# -- running -----------------------------------------------------------------------------

stage_choice = click.Choice(list(STAGES))
priority_choice = click.Choice(list(PRIORITIES))


@main.command()
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--run-id", help="Use this run id instead of the one derived from the plan.")
@click.option("--from", "from_stage", type=stage_choice,
              help="Re-run this stage and all after it.")
@click.option("--only", type=stage_choice,
              help="Re-run just this stage (earlier ones must be done).")
@click.option("--adapters", help="Adapter set (default: SPARKLE_ADAPTERS or 'media').")
@click.option("--runs-dir", type=click.Path(path_type=Path), help="Runs folder (default ./runs).")
@click.option("--threads", default=2, show_default=True, help="In-process worker threads.")
@click.option("--priority", "level", type=priority_choice,
              help="The run's priority (default: the plan's metadata.priority, else normal).")
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
    _settings(adapters=adapters, runs_dir=runs_dir)

    def body() -> int:
        from sparkle.plans import load_plan_file

        settings = _app().settings
        movie_plan = load_plan_file(plan, settings.max_plan_bytes)
        engine = _engine()
        the_run, created = engine.store.create(movie_plan, run_id)
        if level is not None:
            set_run_priority(the_run.dir, level)
        click.echo(f"run {the_run.run_id} ({'created' if created else 'existing'}) "
                   f"in {the_run.dir}", err=True)
        return _work(the_run, from_stage, only, threads)

    _guard(body)


def _engine() -> Engine:
    """This command's engine, with the stage actors declared on its broker."""
    app = _app()
    app.declare_actors()
    return app.engine


def _work(the_run: Any, from_stage: str | None, only: str | None, threads: int) -> int:
    from sparkle.runner import work_in_foreground

    app = _app()
    # (the stages are reset once this process holds the run: embedded, another process
    # working it is followed to its end first)
    result = work_in_foreground(the_run, app, threads, from_stage=from_stage, only=only)
    from sparkle.notifications import flush

    flush(app.settings)  # (the process ends next: deliver the run's notification now)
    if result.infrastructure is not None:
        failure = result.infrastructure
        click.echo(f"error: {failure}", err=True)
        click.echo(f"{failure.advice}, then resume with: {_resume_command(the_run.run_id)}",
                   err=True)
        return EXIT_INFRASTRUCTURE
    refs = the_run.asset_refs()
    if result.status.value == "succeeded":
        movie = refs.extras.get("final_movie")
        decision = the_run.qa_decision()
        click.echo(f"succeeded in {result.elapsed_sec:.1f}s: {the_run.dir}")
        if movie:
            click.echo(f"movie: {the_run.dir / movie}")
        if decision:
            click.echo(f"qa: {_decision_label(decision)}")
        return 0
    if result.status.value == "cancelled":
        if result.interrupted:
            left = (f"; {result.abandoned} was left unfinished and runs again on resume"
                    if result.abandoned else "")
            click.echo(f"stopped by Ctrl-C: run {the_run.run_id} is cancelled{left}. "
                       f"Resume with `{_resume_command(the_run.run_id)}`", err=True)
            return EXIT_FAILED
        click.echo(f"cancelled: resume with `{_resume_command(the_run.run_id)}`")
        return EXIT_FAILED
    if result.status.value == "awaiting_review":
        from sparkle.cli_review import EXIT_AWAITING_REVIEW, waiting_message

        click.echo(waiting_message(the_run))
        return EXIT_AWAITING_REVIEW
    if result.status.value == "rejected":
        click.echo(f"{the_run.run_id} was rejected at review; it does not continue "
                   f"(`sparkle timeline {the_run.run_id}` shows who and why)", err=True)
        return EXIT_FAILED
    for view in the_run.stage_views():
        if view.status == "failed":
            click.echo(f"stage {view.stage} failed (attempt {view.attempt}): {view.error}",
                       err=True)
    click.echo(f"fix the cause, then resume with: {_resume_command(the_run.run_id)}", err=True)
    return EXIT_FAILED


def _resume_command(run_id: str) -> str:
    """The command that resumes ``run_id`` as it ran (:func:`sparkle.runner.resume_command`)."""
    from sparkle.runner import resume_command

    return resume_command(run_id, _app().settings)


def _decision_label(decision: str) -> str:
    from sparkle.statuscache import decision_label

    return decision_label(decision)


@main.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--priority", "level", type=priority_choice,
              help="The runs' priority, ahead of (high) or behind (low) the normal backlog "
                   "(default: each plan's metadata.priority, else normal).")
def submit(plans: tuple[Path, ...], level: str | None) -> None:
    """Create runs for PLANS and queue them on Redis; print each run id.

    Without SPARKLE_REDIS_URL there is no queue to submit to: the plans are copied into
    the inbox, where a running `sparkle serve` picks them up (with --priority, the copy's
    metadata.priority says it).
    """

    def body() -> int:
        import redis

        from sparkle.plans import load_plan_file

        settings = _app().settings
        bad = 0
        if _app().works_in_process:  # (no queue other processes read: the inbox is)
            for path in plans:
                try:
                    load_plan_file(path, settings.max_plan_bytes)
                except PlanError as exc:
                    click.echo(str(exc), err=True)
                    bad += 1
                    continue
                target = _copy_into_inbox(path, settings.inbox_dir, level)
                click.echo(f"copied into {target} (no SPARKLE_REDIS_URL: a running "
                           f"`sparkle serve` takes it; or render it now with `sparkle run {path}`)")
            return EXIT_USAGE if bad else 0
        engine = _engine()
        for path in plans:
            try:
                movie_plan = load_plan_file(path, settings.max_plan_bytes)
                the_run, created = engine.store.create(movie_plan)
            except (PlanError, RunConflictError) as exc:
                click.echo(str(exc), err=True)
                bad += 1
                continue
            if level is not None:
                set_run_priority(the_run.dir, level)
            try:
                stage = engine.dispatcher.kick(the_run)
            except redis.RedisError:
                click.echo(f"{the_run.run_id} {'created' if created else 'existing'}, NOT "
                           f"queued: `sparkle resume {the_run.run_id}` queues it once Redis "
                           "answers (so does the reaper of a running worker); plans after it "
                           "were not submitted", err=True)
                raise
            state = f"queued {stage}" if stage else f"nothing to queue ({the_run.status().value})"
            click.echo(f"{the_run.run_id} {'created' if created else 'existing'}, {state}")
        return EXIT_USAGE if bad else 0

    _guard(body)


def _copy_into_inbox(path: Path, inbox: Path, level: str | None = None) -> Path:
    """Copy a plan into the inbox under a temporary name, then rename it into view (with
    ``level``, its ``metadata.priority`` set to it)."""
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / path.name
    counter = 1
    while target.exists():
        target = inbox / f"{path.stem}-{counter}{path.suffix}"
        counter += 1
    partial = target.with_name(target.name + ".part")
    if level is None:
        shutil.copyfile(path, partial)
    else:
        document = json.loads(path.read_bytes())
        document.setdefault("metadata", {})["priority"] = level
        partial.write_text(json.dumps(document, indent=2), encoding="utf-8")
    os.replace(partial, target)
    return target


@main.command()
@click.argument("run_id")
@click.option("--from", "from_stage", type=stage_choice,
              help="Re-run this stage and all after it.")
@click.option("--only", type=stage_choice,
              help="Re-run just this stage (earlier ones must be done).")
@click.option("--runs-dir", type=click.Path(path_type=Path), help="Runs folder (default ./runs).")
@click.option("--adapters", help="Adapter set (default: SPARKLE_ADAPTERS or 'media').")
@click.option("--threads", default=2, show_default=True,
              help="In-process worker threads (embedded).")
def resume(run_id: str, from_stage: str | None, only: str | None, runs_dir: Path | None,
           adapters: str | None, threads: int) -> None:
    """Continue RUN_ID from its first stage without success.

    With Redis the stage is queued for the workers; embedded, the run is worked here in
    the foreground (while another process works it, that process is named and followed
    first, as `sparkle run` does). A cancelled run continues only through this command.
    """
    _settings(runs_dir=runs_dir, adapters=adapters)

    def body() -> int:
        from sparkle.lifecycle import resume_run

        engine = _engine()
        the_run = engine.store.run(run_id)
        if the_run.status().value in ("awaiting_review", "rejected"):
            from sparkle.errors import ReviewError

            raise ReviewError(
                f"run {run_id} is {the_run.status().value}: resume does not decide for a "
                f"person; see `sparkle status {run_id}` (approve, redo or reject it)")
        if _app().works_in_process:
            return _work(the_run, from_stage, only, threads)
        resumed = resume_run(the_run, engine.dispatcher, from_stage, only)
        reset, stage = resumed.reset, resumed.queued
        if reset:
            click.echo(f"reset: {', '.join(reset)}")
        if resumed.handed_over:
            click.echo(f"{run_id}: handed to the worker holding it, which carries the "
                       "resume out when its stage ends and goes on")
            return 0
        click.echo(f"{run_id}: queued {stage}" if stage
                   else f"{run_id}: nothing to queue ({the_run.status().value})")
        return 0

    _guard(body)


# -- looking -----------------------------------------------------------------------------


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--runs-dir", type=click.Path(path_type=Path), help="Runs folder (default ./runs).")
def status(run_id: str, as_json: bool, runs_dir: Path | None) -> None:
    """Per-stage status, attempts, duration and error of RUN_ID."""
    _settings(runs_dir=runs_dir)

    def body() -> int:
        from sparkle import statuscache
        from sparkle.runstore import RunStore, cached_entry

        # Through the run's summary cache, so this prints exactly what the fast path of
        # sparkle.entry prints from it, and leaves the cache fresh for that path.
        the_run = RunStore(_app().settings.runs_dir).run(run_id)
        entry = cached_entry(the_run)
        if entry is None or entry.view is None:
            raise RunNotFoundError(f"no run {run_id!r} in {_app().settings.runs_dir}")
        click.echo(statuscache.render_json(entry.view) if as_json
                   else statuscache.render_text(entry.view, str(the_run.dir)))
        return 0

    _guard(body)


@main.command()
@click.option("--status", "only_status", type=click.Choice(
    ["queued", "running", "failed", "succeeded", "cancelled", "awaiting_review", "rejected"]),
    help="Only runs with this status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option("--runs-dir", type=click.Path(path_type=Path), help="Runs folder (default ./runs).")
def runs(only_status: str | None, as_json: bool, runs_dir: Path | None) -> None:
    """One line per run: id, status, QA decision, next stage (for a run awaiting review, the
    stage it stopped after and how long it has waited), age, time in stages, movie."""
    _settings(runs_dir=runs_dir)
    from sparkle.listing import review_wait, run_rows
    from sparkle.runindex import listing
    from sparkle.runstore import RunStore

    store = RunStore(_app().settings.runs_dir)
    # listing() answers from each run's stat-validated summary cache (10,000 runs in about
    # 0.5 s instead of 2.3 s, docs/BENCHMARKS.md); queued or running runs on Redis come
    # from the unfinished-run index, without reading the finished ones.
    summaries = [summary for summary in listing(store, only_status, _app().settings)
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


# -- services ----------------------------------------------------------------------------


@main.command()
@click.argument("inbox", required=False, type=click.Path(path_type=Path))
@click.option("--poll", is_flag=True, help="Poll the folder (network shares) instead of inotify.")
def watch(inbox: Path | None, poll: bool) -> None:
    """Ingest plans dropped into INBOX (default ./inbox) into the configured Redis.

    Valid plans become runs whose first stage is queued for `sparkle worker` processes;
    the file moves to inbox/processed/. Invalid ones go to inbox/rejected/ with a
    <name>.error.json. Stuck runs are re-driven periodically. Stop with Ctrl-C / SIGTERM.
    """
    from sparkle.service import serve as run_service

    if _app().works_in_process:
        fail("`sparkle watch` feeds workers through Redis and needs SPARKLE_REDIS_URL; "
             "without a server use `sparkle serve`, which also does the work")
    _guard(lambda: run_service(_app(), inbox, poll, threads=0, workers=False))


@main.command()
@click.argument("inbox", required=False, type=click.Path(path_type=Path))
@click.option("--poll", is_flag=True, help="Poll the folder (network shares) instead of inotify.")
@click.option("--threads", default=2, show_default=True, help="In-process worker threads.")
@click.option("--adapters", help="Adapter set (default: SPARKLE_ADAPTERS or 'media').")
@click.option("--runs-dir", type=click.Path(path_type=Path), help="Runs folder (default ./runs).")
@click.option("--ui", is_flag=True, help="Serve the dashboard too (http://127.0.0.1:8321; "
              "SPARKLE_UI_HOST, SPARKLE_UI_PORT, SPARKLE_UI_TOKEN).")
def serve(inbox: Path | None, poll: bool, threads: int, adapters: str | None,
          runs_dir: Path | None, ui: bool) -> None:
    """Watch INBOX (default ./inbox) and render every plan dropped there, in this process.

    Needs no server: without SPARKLE_REDIS_URL messages stay in memory and, on start,
    every unfinished run is queued again from its checkpoints. With Redis configured it
    works that Redis's queues instead. Stop with Ctrl-C / SIGTERM.
    """
    from sparkle.service import serve as run_service

    _settings(adapters=adapters, runs_dir=runs_dir)

    def body() -> None:
        from sparkle.web.config import UiConfig

        dashboard = UiConfig.from_environment() if ui else None
        run_service(_app(), inbox, poll, threads, workers=True, ui=dashboard)

    _guard(body)


@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1; any other needs "
              "SPARKLE_UI_TOKEN).")
@click.option("--port", type=int, help="Port (default 8321).")
@click.option("--read-only", is_flag=True, help="No actions: for wall displays.")
@click.option("--runs-dir", type=click.Path(path_type=Path), help="Runs folder (default ./runs).")
def ui(host: str | None, port: int | None, read_only: bool, runs_dir: Path | None) -> None:
    """Serve the dashboard: runs, live stage progress, assets, actions, operations.

    With SPARKLE_REDIS_URL it queues on Redis for the workers; without, it shows the runs
    folder and hands new plans to the inbox (use `sparkle serve --ui` to work them here).
    """
    _settings(runs_dir=runs_dir)

    def body() -> None:
        from sparkle.web.config import UiConfig
        from sparkle.web.server import run_foreground
        from sparkle.web.site import Site

        config = UiConfig.from_environment(host, port, read_only)
        run_foreground(Site.for_app(_app(), read_only), config)

    _guard(body)


# -- workers -----------------------------------------------------------------------------


@main.command()
@click.option("--processes", "-p", default=1, show_default=True, help="Worker processes.")
@click.option("--threads", "-t", default=4, show_default=True, help="Threads per process.")
@click.option("--queues", "-Q", multiple=True,
              help="Only these queues (e.g. -Q sparkle.videos or -Q videos: every priority "
                   "level of it; -Q sparkle.videos.high: that level only); default all.")
@click.option("--reaper/--no-reaper", default=True, show_default=True,
              help="Also re-drive stuck runs from this process (every "
                   "SPARKLE_REAPER_INTERVAL_SEC).")
@click.pass_context
def worker(ctx: click.Context, processes: int, threads: int, queues: tuple[str, ...],
           reaper: bool) -> None:
    """Run supervised worker processes for the stage actors, against SPARKLE_REDIS_URL.

    A worker process that dies is replaced (with backoff; the log says why). SIGTERM or
    Ctrl-C drains: running stages finish, prefetched messages go back to Redis; a second
    signal stops at once. Metrics of all processes on SPARKLE_METRICS_PORT when set.
    """
    from sparkle.keys import worker_queues
    from sparkle.supervisor import run_supervisor

    if _app().works_in_process:
        fail("`sparkle worker` needs SPARKLE_REDIS_URL (workers share runs through Redis); "
             "without a server use `sparkle serve` or `sparkle run PLAN`")
    if processes < 1 or threads < 1:
        fail("--processes and --threads must be at least 1")
    try:
        # (a stage's queue means every priority level of it: sparkle.priority)
        names = worker_queues(queues)
    except ValueError as exc:
        fail(str(exc))
    root = ctx.find_root().params
    try:
        code = run_supervisor(_app(), processes, threads, names, reaper=reaper,
                              log_level=root.get("log_level") or "warning",
                              log_format=root.get("log_format") or "text")
    except OSError as exc:  # e.g. the metrics port is taken
        fail(f"cannot start workers: {exc}")
    sys.exit(code)


def _register_commands() -> None:
    from sparkle.cli_ops import COMMANDS
    from sparkle.cli_review import COMMANDS as REVIEW_COMMANDS

    for command in [*COMMANDS, *REVIEW_COMMANDS]:
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()

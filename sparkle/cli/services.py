"""Long-running commands: watch, serve, ui, worker."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sparkle.cli import wiring
from sparkle.cli.exits import fail, guard
from sparkle.cli.options import adapters_option, runs_dir_option, threads_option
from sparkle.keys import worker_queues
from sparkle.web.config import UiConfig

poll_option = click.option("--poll", is_flag=True,
                           help="Poll the folder (network shares) instead of inotify.")


@click.command()
@click.argument("inbox", required=False, type=click.Path(path_type=Path))
@poll_option
def watch(inbox: Path | None, poll: bool) -> None:
    """Ingest plans dropped into INBOX (default ./inbox) into the configured Redis.

    Valid plans become runs whose first stage is queued for `sparkle worker` processes;
    the file moves to inbox/processed/. Invalid ones go to inbox/rejected/ with a
    <name>.error.json. Stuck runs are re-driven periodically. Stop with Ctrl-C / SIGTERM.
    """
    from sparkle.service import serve as run_service  # (dramatiq: imported when used)

    if wiring.app().works_in_process:
        fail("`sparkle watch` feeds workers through Redis and needs SPARKLE_REDIS_URL; "
             "without a server use `sparkle serve`, which also does the work")
    guard(lambda: run_service(wiring.app(), inbox, poll, threads=0, workers=False))


@click.command()
@click.argument("inbox", required=False, type=click.Path(path_type=Path))
@poll_option
@threads_option()
@adapters_option
@runs_dir_option
@click.option("--ui", is_flag=True, help="Serve the dashboard too (http://127.0.0.1:8321; "
              "SPARKLE_UI_HOST, SPARKLE_UI_PORT, SPARKLE_UI_TOKEN).")
def serve(inbox: Path | None, poll: bool, threads: int, adapters: str | None,
          runs_dir: Path | None, ui: bool) -> None:
    """Watch INBOX (default ./inbox) and render every plan dropped there, in this process.

    Needs no server: without SPARKLE_REDIS_URL messages stay in memory and, on start,
    every unfinished run is queued again from its checkpoints. With Redis configured it
    works that Redis's queues instead. Stop with Ctrl-C / SIGTERM.
    """
    from sparkle.service import serve as run_service  # (dramatiq: imported when used)

    wiring.configure(adapters=adapters, runs_dir=runs_dir)

    def body() -> None:
        dashboard = UiConfig.from_environment() if ui else None
        run_service(wiring.app(), inbox, poll, threads, workers=True, ui=dashboard)

    guard(body)


@click.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1; any other needs "
              "SPARKLE_UI_TOKEN).")
@click.option("--port", type=int, help="Port (default 8321).")
@click.option("--read-only", is_flag=True, help="No actions: for wall displays.")
@runs_dir_option
def ui(host: str | None, port: int | None, read_only: bool, runs_dir: Path | None) -> None:
    """Serve the dashboard: runs, live stage progress, assets, actions, operations.

    With SPARKLE_REDIS_URL it queues on Redis for the workers; without, it shows the runs
    folder and hands new plans to the inbox (use `sparkle serve --ui` to work them here).
    """
    wiring.configure(runs_dir=runs_dir)

    def body() -> None:
        # (starlette, uvicorn and dramatiq: imported when used)
        from sparkle.web.server import run_foreground
        from sparkle.web.site import Site

        config = UiConfig.from_environment(host, port, read_only)
        run_foreground(Site.for_app(wiring.app(), read_only), config)

    guard(body)


@click.command()
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
    from sparkle.supervisor import run_supervisor  # (pydantic settings: imported when used)

    if wiring.app().works_in_process:
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
        code = run_supervisor(wiring.app(), processes, threads, names, reaper=reaper,
                              log_level=root.get("log_level") or "warning",
                              log_format=root.get("log_format") or "text")
    except OSError as exc:  # e.g. the metrics port is taken
        fail(f"cannot start workers: {exc}")
    sys.exit(code)


#: The commands of this module, as the ``sparkle`` group adds them.
COMMANDS: list[click.Command] = [watch, serve, ui, worker]

"""The long-running processes: ``sparkle watch`` and ``sparkle serve``.

``watch`` ingests the inbox into the configured Redis and re-drives stuck runs; workers
elsewhere do the stages. ``serve`` is the one-process service: the same, plus in-process
dramatiq workers, so without any server a dropped plan becomes a finished movie.
Both stop cleanly on Ctrl-C or SIGTERM: the inbox finishes the file in hand, running
stages finish, leases are released.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from sparkle import metrics
from sparkle.announce import RunAnnouncer, describe_stats
from sparkle.app import App
from sparkle.engine import Engine
from sparkle.inbox import Inbox
from sparkle.infrastructure import bookkeeping
from sparkle.profiles import discover as discover_profiles
from sparkle.profiles import inbox_for as profile_inbox
from sparkle.runner import resume_command
from sparkle.runstore import Run, RunStatus
from sparkle.workqueue import build_worker

if TYPE_CHECKING:
    from sparkle.web.config import UiConfig

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(
    stop: threading.Event, on_second: Callable[[], None] | None = None
) -> Iterator[None]:
    """Set ``stop`` on SIGINT or SIGTERM while inside the block (main thread only); a
    second signal calls ``on_second`` (stop at once) when given."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and on_second is not None:
            on_second()
            return
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def requeue_unfinished(engine: Engine) -> list[Run]:
    """Queue the next stage of every run that is neither finished, failed nor cancelled;
    returns the runs queued.

    For a backend whose messages live in this process's memory: a restarted ``serve`` has
    none, the checkpoints on disk are the durable state, and this turns them back into
    messages. Runs another live process works (it holds their lock file,
    :mod:`sparkle.runlock`) are left to it.
    """
    sent: list[Run] = []
    others = 0
    backend = engine.dispatcher.backend
    # (the runs the unfinished-run index names: every folder when it is due a rebuild)
    for summary in backend.run_index(engine.store.root, engine.settings.namespace
                                     ).unfinished(engine.store):
        run = Run(engine.store.root, summary.run_id)
        if run.status() not in (RunStatus.queued, RunStatus.running):
            continue
        if backend.other_process(run.dir) is not None:
            others += 1
        elif engine.dispatcher.kick(run):
            sent.append(run)
    if others:
        log.warning("serve: left %d unfinished run(s) to the other process(es) working them",
                    others)
    return sent


def check_writable(folder: Path, what: str) -> None:
    """Make ``folder`` if missing and write and remove a file in it: a folder the service
    cannot write is one clear error at start, not a stream of failures later.

    Raises:
      InfrastructureError: naming the folder, the cause and its file system.
    """
    where = os.path.abspath(folder)
    with bookkeeping(f"cannot write {what}", where):
        os.makedirs(where, exist_ok=True)
        probe = os.path.join(where, f".sparkle-write-check-{os.getpid()}")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)


def _print(text: str) -> None:
    print(text, flush=True)


def serve(app: App, inbox_dir: Path | None, poll: bool, threads: int,
          stop: threading.Event | None = None, workers: bool = True,
          ui: UiConfig | None = None, say: Callable[[str], None] = _print) -> None:
    """Watch the inbox (and, with ``workers``, work the stages here) until stopped; with
    ``ui``, serve the dashboard from this process too.

    What it does is said through ``say`` (printed by default), whatever the log level:
    where it watches, each plan picked up, each of those runs ending, and its counts when
    it stops.

    Raises:
      InfrastructureError: the inbox or the runs folder cannot be written (a read-only
        file system, no permission, a failing disk); nothing was started. (A full disk is
        no reason not to start: runs wait for room, see :mod:`sparkle.infrastructure`.)
      ConfigError: an inbox profile's ``profile.toml`` is wrong (:mod:`sparkle.profiles`);
        nothing was started.
    """
    stop = stop or threading.Event()
    settings = app.settings
    if inbox_dir is not None:
        settings = settings.model_copy(update={"inbox_dir": inbox_dir})
    check_writable(settings.inbox_dir, "the inbox")
    check_writable(settings.runs_dir, "the runs folder")
    profiles = discover_profiles(settings.inbox_dir)
    broker = app.declare_actors()
    engine = app.engine
    worker = None
    if workers:
        worker = build_worker(broker, threads, 100)
        worker.start()
    name = "serve" if workers else "watch"
    announcer = RunAnnouncer(lambda run_id: resume_command(run_id, engine.settings), say)
    if app.works_in_process:
        resumed = requeue_unfinished(engine)
        if resumed:
            say(f"{name}: queued {len(resumed)} unfinished run(s) from {settings.runs_dir} "
                "again")
        for run in resumed:
            announcer.watch(run)
    inbox = Inbox.from_settings(engine.dispatcher.kick, app.store, settings, poll=poll)
    inbox.on_processed = announcer.picked_up
    profile_inboxes = [profile_inbox(profile, engine.dispatcher.kick, app.store, settings, poll)
                       for profile in profiles]
    for extra in profile_inboxes:
        extra.on_processed = announcer.picked_up
    reaper = app.reaper
    reaper.start()
    metrics_server = metrics.serve(app.settings, app.store, app.backend)
    dashboard = None
    if ui is not None:
        from sparkle.web.server import start_in_background
        from sparkle.web.site import Site

        site = Site.for_app(app, worker_threads=threads if workers else 0)
        try:
            dashboard = start_in_background(site, ui)
        except BaseException:
            reaper.stop()
            if worker is not None:
                worker.stop()
            raise
    mode = app.backend.describe()
    served = (f"; metrics on http://{metrics_server.host}:{metrics_server.port}/metrics"
              if metrics_server is not None else "")
    say(f"{name}: watching {settings.inbox_dir} for plans; runs in {settings.runs_dir}; "
        f"broker {mode}" + (f", {threads} worker thread(s)" if workers else "")
        + f"{served}. Ctrl-C stops")
    for profile in profiles:
        say(f"{name}: profile {profile.name}: {settings.inbox_dir / profile.name}")
    announcer.start()
    try:
        with stop_on_signals(stop):
            for extra in profile_inboxes:
                extra.start()
            inbox.run_forever(stop)
        say(f"{name}: stopping (the plan and stages in hand finish first)")
    finally:
        for extra in profile_inboxes:
            extra.stop()
        if dashboard is not None:
            dashboard.stop()
        reaper.stop()
        if metrics_server is not None:
            metrics_server.stop()
        if worker is not None:
            worker.stop()
        announcer.stop()
        announcer.look()  # (runs that ended while the workers stopped)
        say(f"{name}: stopped; {describe_stats(inbox.stats())}")

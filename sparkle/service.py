"""The long-running processes: ``sparkle watch`` and ``sparkle serve``.

``watch`` ingests the inbox into the configured Redis and re-drives stuck runs; workers
elsewhere do the stages. ``serve`` is the one-process service: the same, plus in-process
dramatiq workers, so without any server a dropped plan becomes a finished movie.
Both stop cleanly on Ctrl-C or SIGTERM: the inbox finishes the file in hand, running
stages finish, leases are released.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import dramatiq

from sparkle import metrics
from sparkle.announce import RunAnnouncer, describe_stats
from sparkle.broker import is_embedded, load_actors
from sparkle.engine import Engine, get_engine
from sparkle.inbox import Inbox
from sparkle.redrive import Reaper
from sparkle.runner import resume_command
from sparkle.runstore import Run, RunStatus
from sparkle.settings import Settings

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

    Embedded messages live in memory, so a restarted ``serve`` has none: the checkpoints
    on disk are the durable state, and this turns them back into messages.
    """
    return [run for run in engine.store.runs()
            if run.status() in (RunStatus.queued, RunStatus.running)
            and engine.dispatcher.kick(run)]


def _print(text: str) -> None:
    print(text, flush=True)


def serve(settings: Settings, inbox_dir: Path | None, poll: bool, threads: int,
          stop: threading.Event | None = None, workers: bool = True,
          say: Callable[[str], None] = _print) -> None:
    """Watch the inbox (and, with ``workers``, work the stages here) until stopped.

    What it does is said through ``say`` (printed by default), whatever the log level:
    where it watches, each plan picked up, each of those runs ending, and its counts when
    it stops.
    """
    stop = stop or threading.Event()
    broker = load_actors()
    engine = get_engine()
    if inbox_dir is not None:
        settings = settings.model_copy(update={"inbox_dir": inbox_dir})
    worker = None
    if workers:
        worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
        worker.start()
    name = "serve" if workers else "watch"
    announcer = RunAnnouncer(lambda run_id: resume_command(run_id, engine.settings), say)
    if is_embedded():
        resumed = requeue_unfinished(engine)
        if resumed:
            say(f"{name}: queued {len(resumed)} unfinished run(s) from {settings.runs_dir} "
                "again")
        for run in resumed:
            announcer.watch(run)
    inbox = Inbox.from_settings(engine.dispatcher.kick, settings=settings, poll=poll)
    inbox.on_processed = announcer.picked_up
    reaper = Reaper(engine.store, engine.dispatcher, engine.client, broker, engine.settings)
    reaper.start()
    metrics_server = metrics.serve(engine.settings, engine.store, broker, engine.client)
    mode = "embedded" if is_embedded() else settings.redacted_redis_url()
    served = (f"; metrics on http://{metrics_server.host}:{metrics_server.port}/metrics"
              if metrics_server is not None else "")
    say(f"{name}: watching {settings.inbox_dir} for plans; runs in {settings.runs_dir}; "
        f"broker {mode}" + (f", {threads} worker thread(s)" if workers else "")
        + f"{served}. Ctrl-C stops")
    announcer.start()
    try:
        with stop_on_signals(stop):
            inbox.run_forever(stop)
        say(f"{name}: stopping (the plan and stages in hand finish first)")
    finally:
        reaper.stop()
        if metrics_server is not None:
            metrics_server.stop()
        if worker is not None:
            worker.stop()
        announcer.stop()
        announcer.look()  # (runs that ended while the workers stopped)
        say(f"{name}: stopped; {describe_stats(inbox.stats())}")

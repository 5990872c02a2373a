"""Supervised worker processes: what ``sparkle worker`` runs.

The supervisor starts N independent worker processes (``python -m sparkle.supervisor``,
each one dramatiq Worker with T threads consuming the stage queues), and:

- replaces a worker process that dies, after a backoff that doubles with each death in a
  row (``SPARKLE_WORKER_RESTART_MIN_SEC`` … ``_MAX_SEC``), and logs why it died;
- runs the reaper (unless ``--no-reaper``), so a stage whose worker was killed runs again
  within one lease TTL plus one reaper interval, not dramatiq's minutes;
- serves the metrics of all its processes when ``SPARKLE_METRICS_PORT`` is set;
- on SIGTERM or Ctrl-C drains: each worker process stops taking messages, lets its running
  stages finish (up to ``SPARKLE_WORKER_SHUTDOWN_TIMEOUT_SEC``; their leases are released
  as each one ends), gives its prefetched messages back to Redis and exits. A second signal
  stops them at once; stages cut short are re-driven by the reaper.

dramatiq's own CLI master is not used: it exits with code 1 when one of its children dies
and never restarts it (notes/dramatiq.md), and its children cannot use Sparkle's log format.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from sparkle.app import App
from sparkle.exit_codes import EXIT_USAGE

if TYPE_CHECKING:
    import dramatiq

    from sparkle.settings import Settings

log = logging.getLogger("sparkle.supervisor")  # also when run as __main__

#: Exit code of a worker process whose configuration is wrong: restarting cannot help, so
#: the supervisor stops (EX_CONFIG of sysexits.h).
EXIT_CONFIG = 78

#: Exit code of a worker process stopped at once by a second SIGTERM.
EXIT_FORCED = 3

#: Exit code of a worker process that lost one of dramatiq's threads (an exception escaped
#: it): it drains and exits, and the supervisor starts a fresh one.
EXIT_THREAD_DIED = 4

#: Seconds a worker process must live before its deaths-in-a-row count starts again.
STABLE_SEC = 60.0

#: Seconds between looks at the worker processes.
POLL_SEC = 0.2

#: Seconds the supervisor waits past the drain timeout before it kills a worker process.
KILL_GRACE_SEC = 10.0


def describe_exit(returncode: int) -> str:
    """A returncode in words: ``killed by SIGKILL``, ``exited with code 1``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _cause_label(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal_{-returncode}"
    return f"exit_{returncode}"


@dataclass
class _Slot:
    """One worker process position: the process in it now, and its recent deaths."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    """Keeps ``processes`` copies of a command running until told to stop, then drains.

    Parameters:
      command: the argv of worker process ``index`` (0-based).
      processes: how many to keep running.
      min_backoff, max_backoff: seconds before a restart: ``min_backoff`` after one death,
        doubling with each death in a row, at most ``max_backoff``.
      shutdown_timeout: seconds each process gets to drain after SIGTERM.
      env: environment of the processes (default: this process's).
    """

    def __init__(self, command: Callable[[int], list[str]], processes: int, *,
                 min_backoff: float = 1.0, max_backoff: float = 30.0,
                 shutdown_timeout: float = 600.0, env: Mapping[str, str] | None = None,
                 on_death: Callable[[int, int], None] | None = None) -> None:
        if processes < 1:
            raise ValueError("at least one worker process")
        self.command = command
        self.slots = [_Slot(i) for i in range(processes)]
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.shutdown_timeout = shutdown_timeout
        self.env = dict(env) if env is not None else None
        self.on_death = on_death
        self.stopping = threading.Event()
        self.exit_code = 0

    def pids(self) -> list[int]:
        """Process ids of the worker processes alive now."""
        return [s.process.pid for s in self.slots
                if s.process is not None and s.process.poll() is None]

    def run(self, stop: threading.Event) -> int:
        """Start the processes and keep them running until ``stop`` is set; then drain.

        Returns 0, or :data:`EXIT_USAGE` when a process reported a configuration error.
        """
        for slot in self.slots:
            self._spawn(slot)
        while not stop.wait(POLL_SEC):
            for slot in self.slots:
                self._tend(slot)
            if self.exit_code:
                break
        self.stopping.set()
        self._drain()
        return self.exit_code

    def interrupt(self) -> None:
        """A second stop request: tell every process to stop at once."""
        log.warning("stopping worker processes now; stages cut short are left to the reaper")
        self._signal_all(signal.SIGTERM)

    # -- internals -----------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        argv = self.command(slot.index)
        slot.process = subprocess.Popen(argv, env=self.env)
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker %d: started pid %d", slot.index, slot.process.pid)

    def _tend(self, slot: _Slot) -> None:
        now = time.monotonic()
        process = slot.process
        if process is None:
            if slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot)
            return
        returncode = process.poll()
        if returncode is None:
            if slot.deaths and now - slot.started >= STABLE_SEC:
                slot.deaths = 0
            return
        slot.process = None
        lived = now - slot.started
        if self.on_death is not None:
            self.on_death(slot.index, returncode)
        if returncode == EXIT_CONFIG:
            log.error("worker %d (pid %d): configuration error (its log above says which); "
                      "not restarting. Fix it and start `sparkle worker` again",
                      slot.index, process.pid)
            self.exit_code = EXIT_USAGE
            return
        slot.deaths = slot.deaths + 1 if lived < STABLE_SEC else 1
        delay = min(self.max_backoff, self.min_backoff * 2 ** (slot.deaths - 1))
        slot.restart_at = now + delay
        log.error("worker %d (pid %d) %s after %.1f s; replacing it in %.1f s "
                  "(death %d in a row)", slot.index, process.pid, describe_exit(returncode),
                  lived, delay, slot.deaths)

    def _signal_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signum)

    def _drain(self) -> None:
        alive = [s.process for s in self.slots if s.process is not None]
        if alive:
            log.warning("draining %d worker process(es): running stages finish (up to %.0f s)",
                        len(alive), self.shutdown_timeout)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + KILL_GRACE_SEC
        for process in alive:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it (its stage is left "
                          "to the reaper)", process.pid)
                process.kill()
                process.wait()
        for slot in self.slots:
            slot.process = None


def worker_command(threads: int, queues: Sequence[str], log_level: str,
                   log_format: str) -> Callable[[int], list[str]]:
    """The argv of a supervised worker process."""
    argv = [sys.executable, "-m", "sparkle.supervisor", "--threads", str(threads),
            "--log-level", log_level, "--log-format", log_format]
    if queues:
        argv += ["--queues", *queues]
    return lambda index: list(argv)


def run_supervisor(app: App, processes: int, threads: int, queues: Sequence[str], *,
                   reaper: bool = True, log_level: str = "warning", log_format: str = "text"
                   ) -> int:
    """``sparkle worker``: supervise worker processes (and the reaper and metrics) until
    SIGTERM or Ctrl-C. Returns the exit code."""
    from sparkle import metrics
    from sparkle.service import stop_on_signals

    settings = app.settings
    metrics_dir: Path | None = None
    if settings.metrics_port is not None:
        # Before anything records a metric: every process then writes to this folder.
        metrics_dir = Path(tempfile.mkdtemp(prefix="sparkle-metrics-"))
        metrics.use_multiprocess_dir(metrics_dir)

    the_reaper = app.reaper if reaper else None
    supervisor = Supervisor(
        worker_command(threads, queues, log_level, log_format), processes,
        min_backoff=settings.worker_restart_min_sec,
        max_backoff=settings.worker_restart_max_sec,
        shutdown_timeout=settings.worker_shutdown_timeout_sec,
        on_death=lambda index, code: metrics.worker_restarted(_cause_label(code)),
    )
    server = None
    stop = threading.Event()
    try:
        server = metrics.serve(settings, app.store, app.backend)
        with stop_on_signals(stop, on_second=supervisor.interrupt):
            if the_reaper is not None:
                the_reaper.start()
            # (the service's own output, on stdout at any log level: not a warning)
            print(f"sparkle worker: {processes} process(es) x {threads} thread(s), queues "
                  f"{', '.join(queues) or 'all'}, reaper {'on' if the_reaper else 'off'}, "
                  f"broker {settings.redacted_redis_url()}", flush=True)
            return supervisor.run(stop)
    finally:
        if the_reaper is not None:
            the_reaper.stop()
        if server is not None:
            server.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


# -- one worker process --------------------------------------------------------------------


def build_worker(broker: dramatiq.Broker, settings: Settings, threads: int,
                 queues: Sequence[str]) -> dramatiq.Worker:
    """The dramatiq Worker of one worker process (not started), taking its messages
    highest priority first (:mod:`sparkle.workqueue`)."""
    from sparkle.workqueue import build_worker as build_priority_worker

    return build_priority_worker(broker, threads, settings.worker_poll_ms, queues)


def worker_process_main(argv: Sequence[str] | None = None) -> int:
    """One supervised worker process: the stage actors on a dramatiq Worker until SIGTERM.

    SIGINT is ignored (Ctrl-C reaches the whole process group; the supervisor decides).
    The process also drains when its supervisor disappears.
    """
    from pydantic import ValidationError

    from sparkle.errors import ConfigError
    from sparkle.logs import FORMATS, configure_logging
    from sparkle.workqueue import stop_worker

    parser = argparse.ArgumentParser(prog="python -m sparkle.supervisor",
                                     description="One worker process of `sparkle worker`.")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--queues", nargs="*", default=[])
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--log-format", default="text", choices=FORMATS)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)

    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("worker process %d: second SIGTERM; exiting now", os.getpid())
            os._exit(EXIT_FORCED)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    try:
        app = App.from_environment()
        settings = app.settings
        broker = app.declare_actors()
        _ = app.engine  # adapters load now: a bad SPARKLE_ADAPTER_* fails here, not per message
    except (ConfigError, ValidationError) as exc:
        log.error("worker process %d: configuration error: %s", os.getpid(), exc)
        return EXIT_CONFIG
    broker.emit_after("process_boot")
    worker = build_worker(broker, settings, args.threads, args.queues)
    worker.start()
    log.info("worker process %d ready: %d thread(s), queues %s", os.getpid(), args.threads,
             ", ".join(args.queues) or "all")
    code = watch(worker, stop, parent)
    log.info("worker process %d: draining (running stages finish, up to %.0f s)",
             os.getpid(), settings.worker_shutdown_timeout_sec)
    stop_worker(worker, int(settings.worker_shutdown_timeout_sec * 1000))
    broker.close()
    log.info("worker process %d: stopped", os.getpid())
    return code


def watch(worker: dramatiq.Worker, stop: threading.Event, parent: int,
          every_sec: float = 1.0) -> int:
    """Wait until the worker process should drain: told to (``stop``, returns 0), its
    supervisor ``parent`` gone (0), or one of dramatiq's threads dead (EXIT_THREAD_DIED,
    so that the supervisor replaces the process)."""
    while not stop.wait(every_sec):
        if os.getppid() != parent:
            log.warning("worker process %d: supervisor gone; draining", os.getpid())
            return 0
        dead = dead_threads(worker)
        if dead:
            # dramatiq catches Exception in its threads, not what a late time limit or
            # another BaseException raises there (dramatiq #445): the thread is gone, and
            # its consumer would go on prefetching messages that nothing runs.
            log.error("worker process %d: %s died; draining so that the supervisor starts "
                      "a fresh process", os.getpid(), ", ".join(dead))
            return EXIT_THREAD_DIED
    return 0


def dead_threads(worker: dramatiq.Worker) -> list[str]:
    """Names of the started worker's stage and consumer threads that are no longer alive."""
    threads = [*worker.workers, *worker.consumers.values()]
    return [thread.name for thread in threads if not thread.is_alive()]


if __name__ == "__main__":
    sys.exit(worker_process_main())

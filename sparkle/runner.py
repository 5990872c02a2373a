"""Working a run to its end in the foreground: ``sparkle run`` and embedded ``sparkle resume``.

The run goes through the real actors and engine: its first unfinished stage is sent on the
process's broker and an in-process dramatiq worker consumes the chain, exactly as separate
workers would. This module only starts that worker, shows progress, decides when the run
has come to rest, and stops it on Ctrl-C in a state ``sparkle resume`` continues.

Embedded, the process holds the run's lock file (:mod:`sparkle.runlock`) from before the
first stage is sent until the run rests, so no other process works the run meanwhile. When
another process holds it already (a second ``sparkle run`` of the same plan, a ``sparkle
serve`` working it), this one says which process and follows the run's progress until that
process lets go: a run that came to rest then is reported as it ended (exit code as usual);
one that did not (its process died, or a ``serve`` left it between two stages) is worked
here from where it stands.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sparkle import lease, lifecycle, runlock
from sparkle.app import App
from sparkle.dispatch import Dispatcher
from sparkle.infrastructure import InfrastructureError
from sparkle.runstore import Run, RunStatus
from sparkle.settings import Settings
from sparkle.workqueue import build_worker

#: Seconds between looks at the run folder while a run is worked.
POLL_SEC = 0.1

#: Statuses at which a run has come to rest.
RESTING = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled,
           RunStatus.awaiting_review, RunStatus.rejected)


def resume_command(run_id: str, settings: Settings) -> str:
    """The command that resumes ``run_id`` as it ran: same runs folder, same adapter set
    (without ``--adapters``, a run made with the test set would be finished by the media
    set), quoted for the shell."""
    parts = ["sparkle", "resume", run_id]
    if settings.runs_dir != Path("runs"):
        parts += ["--runs-dir", str(settings.runs_dir)]
    if settings.adapters != Settings.model_fields["adapters"].default:
        parts += ["--adapters", settings.adapters]
    return shlex.join(parts)


@dataclass
class RunResult:
    """How a foreground run ended."""

    status: RunStatus
    elapsed_sec: float
    #: The other process this one followed before it could work the run (None: none).
    followed: runlock.Holder | None = None
    #: Set when the run stopped because its storage failed (a full disk): the run is not
    #: at rest, it waits for the cause to go away and a resume.
    infrastructure: InfrastructureError | None = None
    #: Stopped by Ctrl-C (the run is cancelled, unless it had finished meanwhile).
    interrupted: bool = False
    #: The stage left running by a second Ctrl-C (its attempt runs again on resume).
    abandoned: str | None = None


class _Abandon(BaseException):
    """A second Ctrl-C: stop waiting for the running stage (a BaseException, as
    KeyboardInterrupt is, so that no ``except Exception`` on the way swallows it)."""


def is_at_rest(run: Run, dispatcher: Dispatcher, namespace: str) -> bool:
    """No message on its way, no worker holding the run, and a final status."""
    if dispatcher.pending(run.run_id) is not None:
        return False
    if lease.holder(dispatcher.client, namespace, run.run_id) is not None:
        return False
    return run.status() in RESTING


def work_in_foreground(
    run: Run,
    app: App,
    threads: int = 2,
    console: Console | None = None,
    from_stage: str | None = None,
    only: str | None = None,
    stop_on_infrastructure: bool = True,
) -> RunResult:
    """Send the run's first unfinished stage and work the chain here, on ``app``'s broker,
    until it rests, or (``stop_on_infrastructure``) until the engine reports an
    infrastructure failure of the run (its
    :attr:`~sparkle.engine.Engine.infrastructure_failures`): a full disk stops the run at
    once instead of leaving it retrying in silence.

    ``from_stage``/``only``: re-run those stages first (and lift a cancellation), holding
    the run's lease (:func:`sparkle.lifecycle.reset_for_resume`). Embedded, only once this
    process holds the run (see the module's docstring).

    Ctrl-C (SIGINT) cancels the run: the running stage finishes and no other starts; the
    run is then ``cancelled``, which ``sparkle resume`` continues. A second Ctrl-C stops
    waiting for that stage: its attempt is left unfinished (resume runs it again; with
    Redis, once its lease expired). Stage outcomes of this run are shown by the display,
    not logged as well, unless the log level is below WARNING.
    """
    console = console or Console(stderr=True)
    started = time.monotonic()
    broker = app.declare_actors()
    dispatcher, namespace = app.dispatcher, app.settings.namespace
    failures = app.engine.infrastructure_failures
    # (where the backend locks runs with their lock file, this process takes it first)
    locked = app.backend.lock_dir(run.dir) is not None
    followed = follow_until_free(run, console, started) if locked else None
    failure: InfrastructureError | None = None
    failures.pop(run.run_id, None)  # (one from before this run is no news)
    interrupted = threading.Event()
    abandoned = False
    left: str | None = None
    try:
        if followed is not None and from_stage is None and only is None \
                and run.status() in RESTING:
            return RunResult(run.status(), time.monotonic() - started, followed)
        leases = lifecycle.Leases.of(dispatcher)
        lifecycle.reset_for_resume(run, leases, from_stage, only)
        worker = build_worker(broker, threads, 100)
        worker.start()
        try:
            display = _Display(run, console, started)  # (what was done before: before the kick)
            with display, _quiet_stage_logs(run.run_id), _on_ctrl_c(interrupted):
                dispatcher.kick(run)
                # Two looks in a row at rest: the gap between a stage releasing the run
                # and sending its successor is shorter than one poll.
                rested = 0
                cancelled = False
                try:
                    while rested < 2:
                        time.sleep(POLL_SEC)
                        display.update()
                        if interrupted.is_set() and not cancelled:
                            cancelled = True
                            _stop_after_running_stage(run, display, leases)
                        failure = failures.get(run.run_id) if stop_on_infrastructure else None
                        if failure is not None:
                            break
                        rested = rested + 1 if is_at_rest(run, dispatcher, namespace) else 0
                except _Abandon:
                    abandoned, left = True, _running_stage(run)
                display.update()
        finally:
            if not abandoned:
                worker.stop()
            # (else its threads, daemons, end with the process; joining them would wait
            # for the very stage the user chose not to wait for)
    finally:
        if locked:
            runlock.release(run.dir)
    if interrupted.is_set() and run.next_stage() is None and run.cancelled:
        run.set_cancelled(False)  # every stage had succeeded by then: nothing was stopped
    return RunResult(run.status(), time.monotonic() - started, followed, failure,
                     interrupted.is_set(), left)


def follow_until_free(run: Run, console: Console, started: float) -> runlock.Holder | None:
    """Take the run's lock file for this process. While another process holds it, say
    which one and show the run's progress, until it lets go (finishes, dies, or leaves
    the run between two stages). Returns the process followed (None: the lock was free).
    """
    if runlock.acquire(run.dir):
        return None
    holder = runlock.other_holder(run.dir)
    if holder is None:  # let go just now
        holder = runlock.Holder(pid=0, host="?", command="", since=0.0)
    print(f"run {run.run_id} is being worked by another process: {holder.describe()}. "
          "Following its progress here until it ends (Ctrl-C stops following; the run "
          "goes on).", file=sys.stderr, flush=True)
    display = _Display(run, console, started)
    with display:
        while not runlock.acquire(run.dir):
            time.sleep(POLL_SEC)
            display.update()
        display.update()
    if run.status() not in RESTING:
        print(f"process {holder.pid} let go of run {run.run_id} before it ended; working it "
              "here from where it stands.", file=sys.stderr, flush=True)
    return holder


def _running_stage(run: Run) -> str | None:
    return next((v.stage for v in run.stage_views() if v.status == "begin"), None)


def _stop_after_running_stage(run: Run, display: _Display, leases: lifecycle.Leases) -> None:
    if run.next_stage() is None:
        return  # finished already
    # (not waiting: the stage's worker records the cancel when it ends, and the display
    # goes on meanwhile)
    lifecycle.cancel_run(run, by="Ctrl-C", leases=leases, wait_sec=0)
    running = _running_stage(run)
    display.say(f"Ctrl-C: stopping after {running} finishes (Ctrl-C again to stop at once)"
                if running else "Ctrl-C: stopping; no further stage starts")


@contextmanager
def _on_ctrl_c(interrupted: threading.Event) -> Iterator[None]:
    """SIGINT sets ``interrupted``; a second raises :class:`_Abandon` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if interrupted.is_set():
            raise _Abandon()
        interrupted.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _StageLogsOfRun(logging.Filter):
    """Drops the engine's records about one run's stages: the foreground display shows
    their outcome (and the command's last lines the error), once."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "sparkle.engine" and record.levelno < logging.CRITICAL
                    and getattr(record, "run_id", None) == self.run_id)


@contextmanager
def _quiet_stage_logs(run_id: str) -> Iterator[None]:
    root = logging.getLogger()
    if root.getEffectiveLevel() < logging.WARNING:  # asked for more: show everything
        yield
        return
    quiet = _StageLogsOfRun(run_id)
    handlers = list(root.handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


class _Display:
    """A live table on a terminal; one line per change otherwise (logs, CI)."""

    def __init__(self, run: Run, console: Console, started: float) -> None:
        self.run = run
        self.console = console
        self.started = started
        self.live: Live | None = None
        self.seen: dict[str, tuple[str, int]] = {}
        self.stage_started: dict[str, float] = {}
        #: Stages done before this display began (a re-run or a resume), and the attempt
        #: that did them: shown as ``(already done)`` while they stay so.
        self.done_before = {v.stage: v.attempt for v in run.stage_views()
                            if v.status == "success"}

    def _already_done(self, stage: str, status: str, attempt: int) -> bool:
        return status == "success" and self.done_before.get(stage) == attempt

    def say(self, text: str) -> None:
        """A line of its own, above the live table (or among the progress lines)."""
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def __enter__(self) -> _Display:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=8)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(None, None, None)

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self._table())
            return
        for view in self.run.stage_views():
            state = (view.status, view.attempt)
            if view.status != "pending" and self.seen.get(view.stage) != state:
                self.seen[view.stage] = state
                elapsed = time.monotonic() - self.started
                extra = f" in {view.duration_sec:.2f}s" if view.duration_sec else ""
                if self._already_done(view.stage, view.status, view.attempt):
                    extra += " (already done)"
                # (a failure's error is printed once, by the command, when the run rests)
                print(f"[{elapsed:6.1f}s] {view.stage:<8} {view.status} "
                      f"(attempt {view.attempt}){extra}", file=sys.stderr, flush=True)

    def _table(self) -> Table:
        table = Table(title=f"run {self.run.run_id}", title_justify="left")
        for column in ("stage", "status", "attempt", "time"):
            table.add_column(column)
        now = time.monotonic()
        for view in self.run.stage_views():
            if view.status == "begin":
                since = self.stage_started.setdefault(view.stage, now)
                shown = f"{now - since:.1f}s…"
                status = "[yellow]running[/]"
            elif self._already_done(view.stage, view.status, view.attempt):
                shown = f"{view.duration_sec:.2f}s" if view.duration_sec is not None else ""
                status = "[dim]success (already done)[/]"
            else:
                shown = f"{view.duration_sec:.2f}s" if view.duration_sec is not None else ""
                colour = {"success": "green", "failed": "red"}.get(view.status, "dim")
                status = f"[{colour}]{view.status}[/]"
            table.add_row(view.stage, status, str(view.attempt or ""), shown)
        return table

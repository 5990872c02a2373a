"""Working a run to its end in the foreground: ``sparkle run`` and embedded ``sparkle resume``.

The run goes through the real actors and engine: its first unfinished stage is sent on the
process's broker and an in-process dramatiq worker consumes the chain, exactly as separate
workers would. This module only starts that worker, shows progress, and decides when the
run has come to rest.

Embedded, the process holds the run's lock file (:mod:`sparkle.runlock`) from before the
first stage is sent until the run rests, so no other process works the run meanwhile. When
another process holds it already (a second ``sparkle run`` of the same plan, a ``sparkle
serve`` working it), this one says which process and follows the run's progress until that
process lets go: a run that came to rest then is reported as it ended (exit code as usual);
one that did not (its process died, or a ``serve`` left it between two stages) is worked
here from where it stands.
"""

from __future__ import annotations

import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

import dramatiq
from dramatiq.brokers.stub import StubBroker
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sparkle import lease, runlock
from sparkle.dispatch import Dispatcher
from sparkle.engine import reset_stages
from sparkle.errors import ConfigError
from sparkle.infrastructure import InfrastructureError
from sparkle.runstore import Run, RunStatus
from sparkle.schemas import STAGES
from sparkle.stages import check_stage
from sparkle.workqueue import build_worker

#: Seconds between looks at the run folder while a run is worked.
POLL_SEC = 0.1

#: Statuses at which a run has come to rest.
RESTING = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled,
           RunStatus.awaiting_review, RunStatus.rejected)


def force_rerun(run: Run, from_stage: str | None = None, only: str | None = None) -> list[str]:
    """Reset stages so they run again; returns the stages reset.

    ``from_stage``: that stage and every later one. ``only``: that one stage, refused when
    an earlier stage is not done (its inputs would be missing).
    """
    if from_stage and only:
        raise ConfigError("use --from or --only, not both")
    if only:
        check_stage(only)
        missing = [s for s in STAGES[: STAGES.index(only)] if not run.stage_done(s)]
        if missing:
            raise ConfigError(
                f"cannot re-run only {only!r} of run {run.run_id}: earlier stage(s) "
                f"{', '.join(missing)} not done; use --from {missing[0]} instead"
            )
        stages = [only]
    elif from_stage:
        check_stage(from_stage)
        stages = list(STAGES[STAGES.index(from_stage):])
    else:
        return []
    reset_stages(run, stages, reason="--only" if only else "--from")
    return stages


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


def is_at_rest(run: Run, dispatcher: Dispatcher, namespace: str) -> bool:
    """No message on its way, no worker holding the run, and a final status."""
    if dispatcher.pending(run.run_id) is not None:
        return False
    if lease.holder(dispatcher.client, namespace, run.run_id) is not None:
        return False
    return run.status() in RESTING


def work_in_foreground(
    run: Run,
    broker: dramatiq.Broker,
    dispatcher: Dispatcher,
    namespace: str,
    threads: int = 2,
    console: Console | None = None,
    from_stage: str | None = None,
    only: str | None = None,
    failures: MutableMapping[str, InfrastructureError] | None = None,
) -> RunResult:
    """Send the run's first unfinished stage and work the chain here until it rests, or
    until the engine reports an infrastructure failure of the run in ``failures`` (its
    :attr:`~sparkle.engine.Engine.infrastructure_failures`): a full disk stops the run at
    once instead of leaving it retrying in silence.

    ``from_stage``/``only``: re-run those stages first (:func:`force_rerun`). Embedded,
    only once this process holds the run (see the module's docstring).
    """
    console = console or Console(stderr=True)
    started = time.monotonic()
    embedded = isinstance(broker, StubBroker)
    followed = follow_until_free(run, console, started) if embedded else None
    failure: InfrastructureError | None = None
    if failures is not None:
        failures.pop(run.run_id, None)  # (one from before this run is no news)
    try:
        if followed is not None and from_stage is None and only is None \
                and run.status() in RESTING:
            return RunResult(run.status(), time.monotonic() - started, followed)
        force_rerun(run, from_stage, only)
        worker = build_worker(broker, threads, 100)
        worker.start()
        try:
            if run.cancelled:
                run.set_cancelled(False)
            dispatcher.kick(run)
            display = _Display(run, console, started)
            with display:
                # Two looks in a row at rest: the gap between a stage releasing the run
                # and sending its successor is shorter than one poll.
                rested = 0
                while rested < 2:
                    time.sleep(POLL_SEC)
                    display.update()
                    failure = failures.get(run.run_id) if failures is not None else None
                    if failure is not None:
                        break
                    rested = rested + 1 if is_at_rest(run, dispatcher, namespace) else 0
                display.update()
        finally:
            worker.stop()
    finally:
        if embedded:
            runlock.release(run.dir)
    return RunResult(run.status(), time.monotonic() - started, followed, failure)


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


class _Display:
    """A live table on a terminal; one line per change otherwise (logs, CI)."""

    def __init__(self, run: Run, console: Console, started: float) -> None:
        self.run = run
        self.console = console
        self.started = started
        self.live: Live | None = None
        self.seen: dict[str, tuple[str, int]] = {}
        self.stage_started: dict[str, float] = {}

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
                error = f": {view.error}" if view.error else ""
                print(f"[{elapsed:6.1f}s] {view.stage:<8} {view.status} "
                      f"(attempt {view.attempt}){extra}{error}", file=sys.stderr, flush=True)

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
            else:
                shown = f"{view.duration_sec:.2f}s" if view.duration_sec is not None else ""
                colour = {"success": "green", "failed": "red"}.get(view.status, "dim")
                status = f"[{colour}]{view.status}[/]"
            table.add_row(view.stage, status, str(view.attempt or ""), shown)
        return table

"""Taking turns at the engine's bookkeeping: one worker thread of a process at a time.

A hop's bookkeeping (the lease, reading the run, the ``begin`` and ``success`` records, the
next message) is about a hundred short system calls, and each one lets go of the
interpreter lock. With several worker threads at it together, every one of those calls
hands the interpreter to another thread and back, and the handing over costs more than the
calls: a ``sparkle worker`` of 8 threads made 366 hops/s where one of 1 thread made 637
(``scripts/bench_hops.py``, no-op adapters, tmpfs). Taking turns, the waiting threads sleep
on the turn's lock instead, and the thread whose turn it is makes its calls without handing
over.

What waits on something else is done :func:`away` from the turn, so that it overlaps with
the other threads' bookkeeping: the adapter, where a real stage spends its seconds or
minutes; a retry's backoff; an attempt's writes (its ``begin`` records, and its success
records, whose flushes wait on the disk); any other durable write or flush. A hand-over
costs about as much as a Redis round trip, so the round trips stay in the turn. Measured
with ``scripts/bench_hops_ab.py`` against the engine without a turn: x1.31-1.44 on tmpfs,
x1.04-1.08 on this machine's disk (where keeping the writes in the turn lost: x0.94).

The turn is for throughput, never for correctness: two writers of one run are kept apart
by its lease and its file locks. So a thread never waits for the turn longer than
:data:`WAIT_SEC`: then it starts a new one, since the old one is stuck (on a disk or a
Redis that stopped answering) or lost (dramatiq's time limit raises its exception into a
thread at any point, also between taking a lock and noting it). At worst, two threads
keep their books at once for a while.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: Longest wait for the turn, in seconds, before a thread starts a new one. A hop's
#: bookkeeping takes about a millisecond.
WAIT_SEC = 5.0

#: What this thread holds: ``turn`` (a :class:`Turn`) and ``lock`` (that turn's lock it
#: acquired), or neither.
_held = threading.local()


class Turn:
    """The turn of one engine's worker threads (one per process)."""

    def __init__(self, wait_sec: float = WAIT_SEC) -> None:
        self.wait_sec = wait_sec
        self._lock = threading.Lock()
        #: Turns started anew because a thread waited ``wait_sec`` for one.
        self.restarts = 0

    @contextlib.contextmanager
    def taken(self) -> Iterator[None]:
        """Hold the turn for the body (:func:`away` gives it to others for a while)."""
        _give()  # (one an exception left held in this thread, skipping its giving back)
        self._take()
        try:
            yield
        finally:
            _give()

    def _take(self) -> None:
        lock = self._lock
        while not lock.acquire(timeout=self.wait_sec):
            if self._lock is lock:  # (else a thread that waited with this one started it)
                self._lock = threading.Lock()
                self.restarts += 1
                log.info("a worker thread waited %.0f s for the bookkeeping turn; starting a "
                         "new one", self.wait_sec)
            lock = self._lock
        _held.lock, _held.turn = lock, self


def _give() -> None:
    lock = getattr(_held, "lock", None)
    if lock is None:
        return
    _held.lock = _held.turn = None
    lock.release()


@contextlib.contextmanager
def away() -> Iterator[None]:
    """Let other threads have the turn this thread holds while the body waits (on an
    adapter, a backoff, a disk), and take it back after. Nothing to give up in a thread
    holding no turn (the CLI, the dashboard)."""
    turn: Turn | None = getattr(_held, "turn", None)
    if turn is None:
        yield
        return
    _give()
    try:
        yield
    finally:
        turn._take()


def holding() -> bool:
    """Whether this thread holds a turn now."""
    return getattr(_held, "lock", None) is not None

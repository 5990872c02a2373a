"""A bound on how many threads of a process do the engine's bookkeeping at once.

A stage's bookkeeping (lease, history, checkpoints, asset refs, next message) is short
Python between short system calls, and every system call hands the GIL on. With eight
worker threads in it together, nearly every one of those hand-overs wakes another thread
and puts the caller to sleep until it gets the GIL back: most of the worker's time went to
switching threads. Letting two in at a time (one working while the other waits for Redis)
keeps the machine busy and removes most of the switches; the rest wait on a lock, asleep.
The adapters, the real work, run outside: they are never held back. So do waits on a disk
whose fsyncs are slow (:func:`waiting_on_disk`), which would otherwise keep a slot idle.

Measured with ``scripts/bench_hops.py`` (docs/BENCHMARKS.md): about +30% hops per second
with the runs on tmpfs, about +10% on this machine's disk.

Waiting for a slot is done in short steps, so dramatiq's time limit and shutdown, which
raise an exception in the waiting thread, still reach it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

#: Longest single wait for a slot, in seconds, before the waiting thread looks up again
#: (an exception raised in it by dramatiq is delivered between waits).
_STEP_SEC = 0.25

#: A wait on the disk longer than this on average (an fsync on a real disk, 0.2-1 ms) is
#: worth giving the slot up for; a shorter one (tmpfs, a battery-backed cache) is not: the
#: hand-over would cost more than the wait.
_SLOW_WAIT_NS = 50_000

_current = threading.local()
#: Recent waits on the disk, in nanoseconds: a moving average, shared by all threads.
_wait_ns = [_SLOW_WAIT_NS]


@contextlib.contextmanager
def waiting_on_disk() -> Iterator[None]:
    """For a wait on the disk (an fsync): while such waits are slow, the calling thread's
    slot, if it holds one, is given up meanwhile."""
    held: Slots | None = getattr(_current, "slots", None)
    if _wait_ns[0] < _SLOW_WAIT_NS:
        held = None  # quick waits: handing the slot over would cost more
    if held is not None:
        held._give()
    started = time.perf_counter_ns()
    try:
        yield
    finally:
        _wait_ns[0] += (time.perf_counter_ns() - started - _wait_ns[0]) // 8
        if held is not None:
            held._take()


class Slots:
    """``limit`` threads at a time inside :meth:`held`; :meth:`released` steps out.

    The holders are kept by thread, and giving a slot back is a no-op for a thread that
    holds none, so an exception raised in a thread at any point (dramatiq's time limit
    can arrive between two bytecodes) never loses a slot or frees another thread's.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"slots: the limit must be at least 1, not {limit}")
        self.limit = limit
        self._changed = threading.Condition(threading.Lock())
        self._holders: set[int] = set()

    def holding(self) -> bool:
        """Whether this thread holds a slot."""
        return threading.get_ident() in self._holders

    def _take(self) -> None:
        me = threading.get_ident()
        with self._changed:
            while len(self._holders) >= self.limit:
                self._changed.wait(_STEP_SEC)
            self._holders.add(me)
        _current.slots = self

    def _give(self) -> None:
        me = threading.get_ident()
        with self._changed:
            if me in self._holders:
                self._holders.remove(me)
                self._changed.notify()
        _current.slots = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold a slot for the block (at once, when this thread already holds one)."""
        if self.holding():
            yield
            return
        try:
            self._take()
            yield
        finally:
            self._give()

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Give this thread's slot up for the block, and take one again after it: for
        work that may take long (an adapter, a backoff). Does nothing outside held()."""
        if not self.holding():
            yield
            return
        self._give()
        try:
            yield
        finally:
            self._take()

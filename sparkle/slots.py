"""A bound on how many threads of a process do the engine's bookkeeping at once.

A stage's bookkeeping (lease, history, checkpoints, asset refs, next message) is short
Python between short system calls, and every system call hands the GIL on. With eight
worker threads in it together, nearly every one of those hand-overs wakes another thread
and puts the caller to sleep until it gets the GIL back: ``perf`` put about 40% of the
worker's samples in switching and waking threads. Letting two in at a time (one working
while the other waits for Redis) keeps the machine busy with far fewer threads to hand the
GIL to; the rest wait on a lock, asleep. The adapters, the real work, run outside: they
are never held back. So do waits on a disk whose fsyncs are slow (:func:`waiting_on_disk`),
which would otherwise keep a slot idle.

Nothing relies on the bound for correctness (the run's lease does that), so it is kept
best-effort, and no thread can ever be stuck behind it:

- a thread waits for a slot at most ``wait_sec``, then goes on without one (a holder stuck
  on a dead connection or a hung disk holds nobody up for longer);
- a slot whose lock was lost (an exception, such as dramatiq's time limit, raised into a
  thread between taking the lock and recording it) is taken over by the next thread that
  waits it out;
- only plain locks are used, taken in C with a timeout: no Python-level lock that an
  exception could leave held.

Measured with ``scripts/bench_hops.py``'s Sparkle trial, 8 against 2 threads in the same
run (docs/BENCHMARKS.md): +49% hops per second with the runs on tmpfs, +7% on this
machine's disk.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator

#: Longest wait for a slot, in seconds, before a thread goes on without one. Bookkeeping
#: takes milliseconds: a wait this long means a holder is stuck (or its slot was lost).
WAIT_SEC = 0.25

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
    slot, if it holds one, is given up meanwhile. (Not for a wait under a file lock: the
    thread would then hold the lock while it waits for a slot.)"""
    slots: Slots | None = getattr(_current, "slots", None)
    if _wait_ns[0] < _SLOW_WAIT_NS:
        slots = None  # quick waits: handing the slot over would cost more
    with slots.released() if slots is not None else contextlib.nullcontext():
        started = time.perf_counter_ns()
        try:
            yield
        finally:
            _wait_ns[0] += (time.perf_counter_ns() - started - _wait_ns[0]) // 8


class Slots:
    """``limit`` threads at a time inside :meth:`held` (best-effort, see the module);
    :meth:`released` steps out."""

    def __init__(self, limit: int, wait_sec: float = WAIT_SEC) -> None:
        if limit < 1:
            raise ValueError(f"slots: the limit must be at least 1, not {limit}")
        self.limit = limit
        self.wait_sec = wait_sec
        self._locks = [threading.Lock() for _ in range(limit)]
        #: Thread holding each slot; None while free, or lost (locked with no owner).
        self._owners: list[int | None] = [None] * limit
        self._local = threading.local()
        self._homes = itertools.count()

    def holding(self) -> bool:
        """Whether this thread holds a slot."""
        return getattr(self._local, "index", None) is not None

    # The order of the steps below matters: an exception raised into the thread between
    # any two of them leaves a slot either still to be given back by this thread (its
    # next held() does), or locked with no owner, which the next thread to wait it out
    # carries on. tests/unit/test_slots.py raises one at every bytecode to check.

    def _record(self, index: int) -> None:
        self._local.index = index
        _current.slots = self
        self._owners[index] = threading.get_ident()

    def _take(self) -> None:
        for index, lock in enumerate(self._locks):
            if lock.acquire(blocking=False):
                self._record(index)
                return
        # All taken: wait on this thread's own one (spread round-robin, so the waiters
        # of each slot are few), for a while.
        home = getattr(self._local, "home", None)
        if home is None:
            home = self._local.home = next(self._homes) % self.limit
        if self._locks[home].acquire(timeout=self.wait_sec):
            self._record(home)
        elif self._locks[home].locked() and self._owners[home] is None:
            self._record(home)  # lost by its last holder: this thread carries it on
        # else: its holder is stuck; go on without a slot rather than wait on it

    def _give(self) -> None:
        index = getattr(self._local, "index", None)
        if index is None:
            return
        if self._owners[index] == threading.get_ident():
            self._owners[index] = None
            # (RuntimeError: two threads carried a lost slot on, the other gave it back)
            with contextlib.suppress(RuntimeError):
                self._locks[index].release()
        self._local.index = None
        _current.slots = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold a slot for the block.

        It first gives back a slot an exception kept this thread from giving back before,
        so a thread never keeps one past its next message. (So a block inside another one
        of the same thread takes the slot over, and the outer one goes on without a slot
        after it: the engine does not nest them.)
        """
        try:
            self._give()
            self._take()
            yield
        finally:
            self._give()

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Give this thread's slot up for the block, and take one again after it: for
        work that may take long (an adapter, a backoff). Does nothing without a slot."""
        if not self.holding():
            yield
            return
        self._give()
        try:
            yield
        finally:
            self._take()

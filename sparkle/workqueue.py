"""The order in which a worker process runs the messages it has fetched: highest priority
first, without starving the lower levels.

A dramatiq Worker fetches from each of its queues in its own consumer thread (round-robin
over queues, in effect: each keeps up to ``prefetch`` messages) and puts what it fetched on
one in-memory work queue its worker threads take from. Sparkle's stage queues come in three
priority levels (:mod:`sparkle.priority`), so every level's consumer keeps fetching and the
choice happens here: :class:`PriorityWorkQueue` hands a free worker thread the oldest waiting
message of the highest level that has one. A high-priority message that arrives behind a
backlog therefore starts as soon as a thread is free, ahead of the normal messages this
process had already fetched.

Starvation: each time a message is taken while a lower level also waits, a streak is
counted; after :data:`STARVATION_LIMIT` in a row, the oldest waiting message of the lower
levels is taken instead and the streak starts again. Under a steady high-priority load the
lower levels still get one thread in ``STARVATION_LIMIT + 1`` takes (and since each level's
consumer keeps fetching regardless of the others, a lower level's messages are always among
those waiting here).
"""

from __future__ import annotations

import heapq
import queue
import threading
from collections.abc import Iterable
from typing import Any

import dramatiq

from sparkle.priority import PRIORITIES, priority_of_queue

#: Messages taken in a row past a waiting lower-level message before the oldest lower-level
#: one is taken instead.
STARVATION_LIMIT = 8


def _level(item: Any) -> int:
    """The priority index (0 = highest) of one of dramatiq's work queue items."""
    message = getattr(item, "message", None)
    name = getattr(message, "queue_name", "") or ""
    return PRIORITIES.index(priority_of_queue(str(name)))


def _queued_at(item: Any) -> int:
    return int(getattr(item, "_queued_time", 0))


class PriorityWorkQueue(queue.PriorityQueue):  # type: ignore[type-arg]
    """dramatiq's work queue, taking the highest priority level first (see the module).

    Within a level, items keep dramatiq's order (the actor's priority, then arrival).
    """

    def __init__(self, starvation_limit: int = STARVATION_LIMIT) -> None:
        if starvation_limit < 1:
            raise ValueError("starvation_limit must be at least 1")
        self.starvation_limit = starvation_limit
        #: Takes in a row that passed over a waiting lower-level message.
        self.streak = 0
        #: The thread stopping the worker, once it drains (see :meth:`drain`).
        self.drainer: int | None = None
        super().__init__()

    def drain(self) -> None:
        """From now on the worker's threads find no message here: the worker is stopping.

        dramatiq's worker thread checks whether it should stop only between two waits for
        a message, each up to the poll (``SPARKLE_WORKER_POLL_MS``), so a thread waiting
        when the drain began could still take a message fetched afterwards (the next
        stage of one that just finished) and start it. Only the calling thread still sees
        the messages: the one that then stops the Worker, which gives them back to their
        queues.
        """
        with self.mutex:
            self.drainer = threading.get_ident()
            self.not_empty.notify_all()

    # queue.Queue's hooks, called with its mutex held
    def _init(self, maxsize: int) -> None:
        self.queue: list[Any] = []  # (unused; kept for code that looks at it)
        self.levels: list[list[Any]] = [[] for _ in PRIORITIES]

    def _qsize(self) -> int:
        if self.drainer is not None and threading.get_ident() != self.drainer:
            return 0
        return sum(len(level) for level in self.levels)

    def _put(self, item: Any) -> None:
        heapq.heappush(self.levels[_level(item)], item)

    def _get(self) -> Any:
        waiting = [index for index, level in enumerate(self.levels) if level]
        top, lower = waiting[0], waiting[1:]
        if lower and self.streak >= self.starvation_limit:
            chosen = min(lower, key=lambda index: _queued_at(self.levels[index][0]))
            self.streak = 0
        else:
            chosen = top
            self.streak = self.streak + 1 if lower else 0
        return heapq.heappop(self.levels[chosen])


def stop_worker(worker: dramatiq.Worker, timeout_ms: int) -> None:
    """Stop ``worker`` (built by :func:`build_worker`): the stages running finish, none
    starts, and the messages fetched and not started go back to their queues."""
    if isinstance(worker.work_queue, PriorityWorkQueue):
        worker.work_queue.drain()
    worker.stop(timeout=timeout_ms)


def build_worker(broker: dramatiq.Broker, threads: int, timeout_ms: int,
                 queues: Iterable[str] | None = None) -> dramatiq.Worker:
    """A dramatiq Worker (not started) whose threads take messages by priority."""
    worker = dramatiq.Worker(broker, queues=set(queues or ()) or None, worker_threads=threads,
                             worker_timeout=timeout_ms)
    worker.work_queue = PriorityWorkQueue()
    return worker

"""Where stage messages and coordination live: one interface, two implementations.

- :class:`~sparkle.backends.redis.RedisBackend` (``SPARKLE_REDIS_URL`` set): dramatiq's
  RedisBroker with Sparkle's namespace, leases and pending marks on the same server, the
  unfinished-run index in a Redis set, dead letters in dramatiq's ``XQ`` sets.
- :class:`~sparkle.backends.embedded.EmbeddedBackend` (unset): dramatiq's StubBroker and an
  in-process fakeredis server, so nothing needs a server; other processes are kept off a
  run by its lock file (:mod:`sparkle.runlock`) and the index lives in the runs folder.

Callers ask the backend for what they need (a queue listing, a run index, the dead
letters, whether another process holds a run) instead of asking which mode they are in, as
dramatiq's own ``brokers/redis.py`` and ``brokers/stub.py`` stand behind one ``Broker``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import dramatiq
import redis

from sparkle.runlock import Holder

if TYPE_CHECKING:
    from sparkle.dispatch import Dispatcher
    from sparkle.dlq import DeadLetterQueue
    from sparkle.presence import Presence
    from sparkle.runindex import RunIndex
    from sparkle.runindex_folder import FolderRunIndex
    from sparkle.runstore import RunStore


class DeadLettersUnavailable(Exception):
    """This backend keeps no dead-letter queue that outlives a process."""


class Backend(ABC):
    """The broker and coordination client of one process, and what depends on where they
    live."""

    #: The dramatiq broker stage messages travel on.
    broker: dramatiq.Broker
    #: The coordination client: leases, pending marks, stage slots, the run index.
    client: redis.Redis
    #: The coordination client when other processes share it (None: it lives in this
    #: process only, and other processes are kept off a run by its lock file).
    shared_client: redis.Redis | None
    #: Whether :meth:`queued_stages` still lists a message a worker fetched and has not
    #: acknowledged.
    lists_fetched_messages: bool
    #: Whether stage messages exist only in this process, so its own worker threads must
    #: work them (``sparkle run``, ``serve``, ``resume`` work the chain in the foreground).
    works_in_process: bool

    @abstractmethod
    def describe(self) -> str:
        """Where messages live, for people (a Redis URL never shows its password)."""

    @abstractmethod
    def lock_dir(self, run_dir: Path) -> Path | None:
        """The folder whose lock file a lease on ``run_dir``'s run also holds, if any."""

    @abstractmethod
    def other_process(self, run_dir: Path) -> Holder | None:
        """Another process on this host that works ``run_dir``'s run outside any lease
        this backend can see, if one does."""

    @abstractmethod
    def run_index(self, runs_root: Path, namespace: str) -> RunIndex | FolderRunIndex:
        """The index of unfinished runs (:mod:`sparkle.runindex`)."""

    @abstractmethod
    def remember_unfinished(self, runs_root: Path, run_id: str) -> None:
        """Put ``run_id`` in the unfinished-run index before its first message is sent
        (where sending it does not already: :meth:`Dispatcher.mark`)."""

    @abstractmethod
    def queued_stages(self, namespace: str, heartbeat_timeout_ms: int,
                      held_since: dict[str, float] | None = None) -> Presence:
        """The stages of each run with a live message (see :func:`sparkle.redrive`)."""

    @abstractmethod
    def queue_depths(self, namespace: str, stage: str) -> dict[str, int]:
        """Messages of ``stage`` (all priority levels) by state: ``ready``, ``delayed``,
        ``dead`` and, where workers hold them apart, ``unacked``."""

    @abstractmethod
    def dead_letters(self, store: RunStore, namespace: str,
                     dispatcher: Dispatcher | None = None) -> DeadLetterQueue:
        """The dead-letter queue.

        Raises:
          DeadLettersUnavailable: this backend keeps none (the message says what to do).
        """

    def close(self) -> None:
        self.broker.close()

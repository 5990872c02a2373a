"""The embedded backend: no server at all. Stage messages live in this process's
StubBroker; leases and marks in an in-process fakeredis server; other processes on the same
runs folder are kept off a run by its lock file; the unfinished-run index is a folder."""

from __future__ import annotations

import itertools
from pathlib import Path

import fakeredis
from dramatiq.brokers.stub import StubBroker

from sparkle import keys, runlock
from sparkle.backends import Backend, DeadLettersUnavailable
from sparkle.broker import middleware
from sparkle.dispatch import Dispatcher
from sparkle.dlq import EMBEDDED_NOTICE, DeadLetterQueue
from sparkle.presence import Presence, collect, new_presence
from sparkle.priority import PRIORITIES
from sparkle.runindex_folder import FolderRunIndex
from sparkle.runlock import Holder
from sparkle.runstore import RunStore
from sparkle.schemas import STAGES


class EmbeddedBackend(Backend):
    works_in_process = True
    lists_fetched_messages = False
    shared_client = None

    def __init__(self, broker: StubBroker | None = None) -> None:
        self.broker: StubBroker = broker or StubBroker(middleware=middleware())
        self.client = fakeredis.FakeRedis(server=fakeredis.FakeServer())

    def describe(self) -> str:
        return "embedded"

    def lock_dir(self, run_dir: Path) -> Path | None:
        # Other processes cannot see this process's in-memory leases: the lease also takes
        # the run's lock file (sparkle.runlock).
        return run_dir

    def other_process(self, run_dir: Path) -> Holder | None:
        return runlock.other_holder(run_dir)

    def run_index(self, runs_root: Path, namespace: str) -> FolderRunIndex:
        return FolderRunIndex(runs_root)

    def remember_unfinished(self, runs_root: Path, run_id: str) -> None:
        FolderRunIndex(runs_root).add(run_id)

    def queued_stages(self, namespace: str, heartbeat_timeout_ms: int,
                      held_since: dict[str, float] | None = None) -> Presence:
        """Every message in the StubBroker's queues (all waiting: no other process can
        hold one)."""
        found = new_presence()
        for stage, level in itertools.product(STAGES, PRIORITIES):
            for name in (keys.queue_name(stage, level), keys.delayed_queue_name(stage, level)):
                queue = self.broker.queues.get(name)
                if queue is None:
                    continue
                with queue.mutex:
                    bodies = list(queue.queue)
                for body in bodies:
                    collect(found, stage, body, None)
        return found

    def queue_depths(self, namespace: str, stage: str) -> dict[str, int]:
        queues = self.broker.queues

        def size(name: str) -> int:
            return queues[name].qsize() if name in queues else 0

        return {
            "ready": sum(size(keys.queue_name(stage, level)) for level in PRIORITIES),
            "delayed": sum(size(keys.delayed_queue_name(stage, level)) for level in PRIORITIES),
            "dead": sum(len(self.broker.dead_letters_by_queue.get(
                keys.queue_name(stage, level), [])) for level in PRIORITIES),
        }

    def dead_letters(self, store: RunStore, namespace: str,
                     dispatcher: Dispatcher | None = None) -> DeadLetterQueue:
        raise DeadLettersUnavailable(EMBEDDED_NOTICE)

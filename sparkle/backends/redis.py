"""The Redis backend: dramatiq's RedisBroker (with Sparkle's doorbells and per-thread
connections, :mod:`sparkle.broker`) and the coordination client on the same server."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import dramatiq
import redis

from sparkle import keys
from sparkle.backends import Backend
from sparkle.broker import build_redis_broker
from sparkle.dispatch import Dispatcher
from sparkle.dlq import DeadLetterQueue
from sparkle.presence import Presence, collect, new_presence, text
from sparkle.priority import PRIORITIES
from sparkle.runindex import RunIndex
from sparkle.runlock import Holder
from sparkle.runstore import RunStore
from sparkle.schemas import STAGES
from sparkle.settings import Settings


class RedisBackend(Backend):
    works_in_process = False
    lists_fetched_messages = True

    def __init__(self, broker: dramatiq.Broker, client: redis.Redis, described: str) -> None:
        self.broker = broker
        self.client = client
        self.shared_client = client
        self._described = described

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None
                      ) -> RedisBackend:
        """The backend of ``settings.redis_url``; with ``client`` (tests: fakeredis), the
        broker and the coordination both use that client."""
        if client is None:
            return cls(build_redis_broker(settings), coordination_client(settings),
                       settings.redacted_redis_url())
        return cls(build_redis_broker(settings, client), client, settings.redacted_redis_url())

    def describe(self) -> str:
        return self._described

    def lock_dir(self, run_dir: Path) -> Path | None:
        return None  # leases on the shared server are seen by every process

    def other_process(self, run_dir: Path) -> Holder | None:
        return None

    def run_index(self, runs_root: Path, namespace: str) -> RunIndex:
        return RunIndex(self.client, namespace)

    def remember_unfinished(self, runs_root: Path, run_id: str) -> None:
        pass  # the pending mark sent with the message adds it (Dispatcher.mark)

    def queued_stages(self, namespace: str, heartbeat_timeout_ms: int,
                      held_since: dict[str, float] | None = None) -> Presence:
        """Every message stored for a stage queue or its delay queue (ready, delayed, or
        fetched and not yet acknowledged), except those fetched by a worker process whose
        dramatiq heartbeat is older than ``heartbeat_timeout_ms``: that process is dead,
        and dramatiq would give its messages back only at some later maintenance pass. A
        message a live worker process fetched is reported with the time it counts as held
        from, so that one it never runs can be told apart: ``held_since`` (message id →
        first seen held, kept by the caller between passes, updated here) says since when;
        without it, since now."""
        client = self.client
        found = new_presence()
        now = time.time()
        now_ms = int(now * 1000)
        seen: dict[str, float] = {}  # held message id -> first seen held
        beats = keys.heartbeats(namespace)
        dead = [text(b) for b in client.zrangebyscore(beats, 0, now_ms - heartbeat_timeout_ms)]
        live = [text(b) for b in client.zrangebyscore(beats, now_ms - heartbeat_timeout_ms + 1,
                                                      "+inf")]
        for stage, level in itertools.product(STAGES, PRIORITIES):
            for name, stored in ((keys.queue_name(stage, level),
                                  keys.dramatiq_messages(namespace, stage, level)),
                                 (keys.delayed_queue_name(stage, level),
                                  keys.delayed_messages(namespace, stage, level))):
                orphaned = self._members(namespace, dead, name)
                held = self._members(namespace, live, name)
                for message_id, body in client.hscan_iter(stored, count=500):
                    key = text(message_id)
                    if key in orphaned:
                        continue
                    since = None
                    if key in held:
                        since = seen[key] = (held_since or {}).get(key, now)
                    collect(found, stage, body, since)
        if held_since is not None:  # forget what is no longer held
            held_since.clear()
            held_since.update(seen)
        return found

    def _members(self, namespace: str, broker_ids: list[str], queue: str) -> set[str]:
        """Ids of the messages of ``queue`` fetched and not acknowledged by ``broker_ids``."""
        ids: set[str] = set()
        for broker_id in broker_ids:
            ids.update(text(m) for m in
                       self.client.smembers(keys.unacked(namespace, broker_id, queue)))
        return ids

    def queue_depths(self, namespace: str, stage: str) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for level in PRIORITIES:
            pipe.llen(keys.dramatiq_queue(namespace, stage, level))
            pipe.hlen(keys.dramatiq_messages(namespace, stage, level))
            pipe.hlen(keys.delayed_messages(namespace, stage, level))
            pipe.zcard(keys.dead_letters(namespace, stage, level))
        values = [int(v) for v in pipe.execute()]
        ready, stored, delayed, dead = (sum(values[i::4]) for i in range(4))
        return {"ready": ready, "unacked": max(0, stored - ready), "delayed": delayed,
                "dead": dead}

    def dead_letters(self, store: RunStore, namespace: str,
                     dispatcher: Dispatcher | None = None) -> DeadLetterQueue:
        return DeadLetterQueue(self.client, store, namespace, dispatcher)


def coordination_client(settings: Settings) -> redis.Redis:
    """The client of leases, marks, slots and the index: short timeouts, so a lost server
    is an error within seconds rather than a hang."""
    url = settings.redis_url_value()
    if url is None:
        raise ValueError("the Redis backend needs SPARKLE_REDIS_URL")
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

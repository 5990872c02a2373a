"""Cluster-wide limits per stage (GPU pools): ``SPARKLE_STAGE_CONCURRENCY=videos=2,lipsync=1``.

Never more than N executions of a limited stage run at once, across every worker process
on every machine sharing the Redis. Each limited stage has a **slot set** in Redis (a
sorted set: holder → expiry in ms, by Redis's own clock, so machines' clocks may differ).
Taking a slot first drops expired holders, then adds this one if fewer than N remain; all
in one Lua call, so two workers never both take the last slot. While its stage runs, a
holder's slot is renewed every third of its lease (``SPARKLE_LEASE_TTL_SEC``) by a thread
of the process, so the slot of a worker that died frees itself one lease TTL later.

A message that finds no free slot waits for one, for about
``SPARKLE_STAGE_CONCURRENCY_RETRY_MS``, looking every 20 ms, if no other thread of its
process is waiting for that stage already: a freed slot is taken again within
milliseconds, where a message sent back through dramatiq's delay queue and fetched again
would leave it unused for a few hundred (measured: total time 1.41 times the ideal schedule
with that alone, docs/BENCHMARKS.md). Otherwise, or when the wait ends without a slot, it is
sent again with that delay (±50 % at random) and acknowledged: neither failed nor counted as
a retry, and the worker thread goes on to other messages, so other stages keep flowing (a
process with one thread stalls its other stages for at most one wait: give the workers of a
limited stage two threads or more, or a pool of their own). Its pending mark
(:mod:`sparkle.dispatch`) still names the stage, and the reaper counts a delayed message as
on its way.

Why not dramatiq's ``ConcurrentRateLimiter``: its Redis backend counts holders in one
key whose expiry every acquisition pushes back, so the slot of a worker that died is freed
only after nobody took a slot for a whole TTL: under steady load, never. Per-holder expiry
frees exactly the dead worker's slot.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from sparkle import keys, unique
from sparkle.names import STAGES

log = logging.getLogger(__name__)

#: Seconds between two looks for a free slot by the thread waiting for one: also the
#: longest a freed slot stays unused while a message of its stage waits in that process.
WAIT_POLL_SEC = 0.02

#: How many times ``SPARKLE_STAGE_CONCURRENCY_RETRY_MS`` the waiting thread waits: longer
#: than the delay of the messages sent back, so that when it gives up, one of them is
#: usually back to take its place.
WAIT_FACTOR = 2

#: This host's name, in holder ids (so an operator can see who holds a slot).
_HOST = socket.gethostname()

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  return 1
end
return 0
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
  return 1
end
return 0
"""


def parse_limits(text: str | None) -> dict[str, int]:
    """``videos=2,lipsync=1`` as ``{"videos": 2, "lipsync": 1}`` (empty for None or "").

    Raises:
      ValueError: an unknown stage, a missing or non-positive number, a stage named twice.
    """
    limits: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        stage, sep, number = (piece.strip() for piece in part.partition("="))
        if stage not in STAGES:
            raise ValueError(f"{stage!r} is not a stage (stages: {', '.join(STAGES)}); "
                             "write e.g. videos=2,lipsync=1")
        if not sep or not number.isdigit() or int(number) < 1:
            raise ValueError(f"{part.strip()!r}: give the stage a whole number of at least 1, "
                             "e.g. videos=2")
        if stage in limits:
            raise ValueError(f"{stage!r} is named twice")
        limits[stage] = int(number)
    return limits


class StageLimits:
    """The slot sets of the limited stages, seen from one process.

    Parameters:
      client: the coordination Redis (shared by all workers).
      namespace: key prefix.
      limits: stage → most executions at once; stages not named are not limited.
      ttl_sec: seconds a holder's slot lives without renewal.
      retry_ms: about how long a message that found no slot waits before trying again.
    """

    def __init__(self, client: redis.Redis, namespace: str, limits: dict[str, int],
                 ttl_sec: float, retry_ms: int) -> None:
        self.client = client
        self.namespace = namespace
        self.limits = dict(limits)
        self.ttl_ms = max(1, int(ttl_sec * 1000))
        self.retry_ms = retry_ms
        #: Messages this process sent back because their stage had no free slot.
        self.throttled = 0
        self._held: dict[tuple[str, str], None] = {}
        #: Stages one of this process's threads is waiting for a slot of.
        self._waiting: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def limited(self, stage: str) -> bool:
        return stage in self.limits

    def try_acquire(self, stage: str) -> str | None:
        """Take a slot of ``stage``: the holder id, or None when all are taken."""
        holder = f"{_HOST}:{os.getpid()}:{unique.hex_token(64)}"
        key = keys.stage_slots(self.namespace, stage)
        if not self.client.eval(_ACQUIRE, 1, key, self.limits[stage], self.ttl_ms, holder):
            return None
        with self._lock:
            self._held[(stage, holder)] = None
            self._start_renewals()
        return holder

    def wait_for_slot(self, stage: str) -> str | None:
        """Take a slot of ``stage`` within :data:`WAIT_FACTOR` times ``retry_ms``, checking every
        :data:`WAIT_POLL_SEC`: the holder id, or None. Only one thread of the process waits
        per stage (the others get None at once and send their message back, delayed), so
        the process's other threads keep working other stages."""
        with self._lock:
            if stage in self._waiting:
                return None
            self._waiting.add(stage)
        try:
            deadline = time.monotonic() + WAIT_FACTOR * self.retry_ms / 1000
            while True:
                holder = self.try_acquire(stage)
                if holder is not None or time.monotonic() >= deadline:
                    return holder
                time.sleep(WAIT_POLL_SEC)
        finally:
            with self._lock:
                self._waiting.discard(stage)

    def release(self, stage: str, holder: str) -> None:
        """Give the slot back (a failure is logged: the slot then expires by itself)."""
        with self._lock:
            self._held.pop((stage, holder), None)
        try:
            self.client.zrem(keys.stage_slots(self.namespace, stage), holder)
        except redis.RedisError as exc:
            log.warning("stage %s: slot not given back (%s); it frees itself in %.0f s",
                        stage, exc, self.ttl_ms / 1000)

    @contextmanager
    def slot(self, stage: str, holder: str) -> Iterator[None]:
        """Hold the slot ``holder`` took for the block, then give it back."""
        try:
            yield
        finally:
            self.release(stage, holder)

    def retry_delay_ms(self) -> int:
        """How long a message that found no slot waits: the retry time, ±50 % at random
        (so waiting messages do not all come back at once)."""
        return max(1, int(self.retry_ms * (0.5 + random.random())))

    def holders(self, stage: str) -> int:
        """Slots of ``stage`` taken now (expired ones included until the next acquisition)."""
        return int(self.client.zcard(keys.stage_slots(self.namespace, stage)))

    # -- renewals --------------------------------------------------------------------------

    def _start_renewals(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._renew_forever,
                                            name="sparkle-stage-slots", daemon=True)
            self._thread.start()

    def _renew_forever(self) -> None:
        while True:
            with self._lock:
                self._wake.wait(self.ttl_ms / 3000)
                held = list(self._held)
                if not held:
                    self._thread = None  # (started again by the next acquisition)
                    return
            for stage, holder in held:
                try:
                    renewed = self.client.eval(_RENEW, 1, keys.stage_slots(self.namespace, stage),
                                               self.ttl_ms, holder)
                except redis.RedisError as exc:
                    log.warning("stage %s: slot renewal failed (%s); retrying", stage, exc)
                    continue
                if not renewed:
                    with self._lock:
                        still_held = (stage, holder) in self._held
                    if still_held:
                        log.error("stage %s: this worker's slot expired while the stage ran "
                                  "(process paused past SPARKLE_LEASE_TTL_SEC?); the limit "
                                  "may be exceeded until it ends", stage)

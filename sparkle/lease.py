"""The run lease: at most one worker executes a run's stages at any moment.

A lease is a Redis key set with ``SET NX PX`` to a random token. Its owner renews it from a
heartbeat thread while the stage runs; only the owner may renew or release it (compare
and set, in Lua). Before writing results the owner checks the token is still there
(fencing): a worker that was paused past the TTL finds the lease gone and writes nothing.

In embedded mode the same code runs against an in-process fakeredis server.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable

import redis
from redis.client import Pipeline

from sparkle import keys

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """One worker's claim on one run.

    Parameters:
      client: the coordination Redis client.
      namespace: key prefix.
      run_id: the run to lease.
      ttl_sec: seconds the lease lives without renewal.
    """

    def __init__(self, client: redis.Redis, namespace: str, run_id: str, ttl_sec: float) -> None:
        self.client = client
        self.key = keys.lease(namespace, run_id)
        self.run_id = run_id
        self.token = secrets.token_hex(16)
        self.ttl_ms = max(1, int(ttl_sec * 1000))
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, also: Callable[[Pipeline], object] | None = None) -> bool:
        """Take the lease if nobody holds it. Returns whether it is now ours.

        ``also`` may queue more commands on the same pipeline: one round trip instead of
        two on the hottest path (every stage message).
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key, self.token, nx=True, px=self.ttl_ms)
        if also is not None:
            also(pipe)
        return bool(pipe.execute()[0])

    def renew(self) -> bool:
        """Extend the lease if it is still ours. Returns whether it is."""
        ok = bool(self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        if not ok:
            self.lost.set()
        return ok

    def held(self) -> bool:
        """The fencing check: is the lease still ours right now?"""
        value = self.client.get(self.key)
        return value is not None and _text(value) == self.token

    def release(self) -> None:
        """Give the lease up if it is still ours (never someone else's)."""
        self.stop_heartbeat()
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:
            # The lease expires on its own; the next owner waits at most one TTL.
            log.warning("run %s: could not release lease (%s)", self.run_id, exc)

    def start_heartbeat(self) -> None:
        """Renew the lease every third of its TTL from a daemon thread."""
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{self.run_id}", daemon=True
        )
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _beat(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    log.error("run %s: lease lost to another worker", self.run_id)
                    return
            except redis.RedisError as exc:
                log.warning("run %s: lease renewal failed (%s); retrying", self.run_id, exc)


def holder(client: redis.Redis, namespace: str, run_id: str) -> str | None:
    """The token holding a run's lease, or None when it is free."""
    value = client.get(keys.lease(namespace, run_id))
    return None if value is None else _text(value)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

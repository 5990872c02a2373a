"""The run lease: at most one worker executes a run's stages at any moment.

A lease is a Redis key set with ``SET NX PX`` to a random token. While the stage runs, the
process's heartbeat thread renews it every third of its TTL; only the owner may renew or
release it (compare and set, in Lua). Before writing results the owner checks the token is
still there (fencing): a worker that was paused past the TTL finds the lease gone and
writes nothing.

One heartbeat thread schedules the renewals of every lease of the process, and a small
pool of threads sends them: starting and joining a thread per stage cost more than the
rest of a short stage's bookkeeping, and with the pool a renewal stuck on a bad connection
(up to the client's socket timeout) does not hold up the renewal of the other leases.

In embedded mode the same code runs against an in-process fakeredis server, which other
processes cannot see: there the lease also holds the run's lock file (:mod:`sparkle.runlock`),
taken after the in-process lease and given up before it, and checked by the fencing too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from sparkle import keys, roundtrip, runlock, unique
from sparkle.roundtrip import Command

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
      lock_dir: the run folder, in embedded mode: the lease then also holds its lock file,
        which keeps other processes out (the kernel frees it when this one dies).
    """

    def __init__(self, client: redis.Redis, namespace: str, run_id: str, ttl_sec: float,
                 lock_dir: Path | None = None) -> None:
        self.client = client
        self.lock_dir = lock_dir
        #: Whether this lease holds the run's lock file (embedded mode).
        self.file_locked = False
        self.key = keys.lease(namespace, run_id)
        self.run_id = run_id
        self.token = unique.hex_token(128)
        self.ttl_ms = max(1, int(ttl_sec * 1000))
        self.lost = threading.Event()

    def acquire(self, also: tuple[Command, ...] = ()) -> bool:
        """Take the lease if nobody holds it. Returns whether it is now ours.

        ``also`` are more commands for the same round trip: one instead of two on the
        hottest path (every stage message).
        """
        replies = roundtrip.execute(
            self.client, ("SET", self.key, self.token, "NX", "PX", self.ttl_ms), *also
        )
        if replies[0] is None:
            return False
        if self.lock_dir is not None:
            try:
                self.file_locked = runlock.acquire(self.lock_dir)
            except BaseException:
                self.client.eval(_RELEASE, 1, self.key, self.token)
                raise
            if not self.file_locked:  # another process works the run
                self.client.eval(_RELEASE, 1, self.key, self.token)
                return False
        return True

    def renew(self) -> bool:
        """Extend the lease if it is still ours. Returns whether it is."""
        ok = bool(self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        if not ok:
            self.lost.set()
        return ok

    def held(self) -> bool:
        """The fencing check: is the lease still ours right now?"""
        value = roundtrip.execute(self.client, ("GET", self.key), idempotent=True)[0]
        if value is None or _text(value) != self.token:
            return False
        return self.lock_dir is None or runlock.intact(self.lock_dir)

    def release(self, also: tuple[Command, ...] = ()) -> bool:
        """Give the lease up if it is still ours (never someone else's).

        ``also`` may queue more commands after the release, in the same round trip; like
        the release, they must be safe to run twice (the round trip is sent again when
        its connection fails after sending: a second release of a released lease deletes
        nothing, whoever holds it now).
        Returns whether the round trip went through; a failure is logged, not raised.
        """
        self.stop_heartbeat()
        if self.file_locked and self.lock_dir is not None:
            self.file_locked = False
            runlock.release(self.lock_dir)
        try:
            roundtrip.execute(self.client, ("EVAL", _RELEASE, 1, self.key, self.token), *also,
                              idempotent=True)
        except redis.RedisError as exc:
            # The lease expires on its own; the next owner waits at most one TTL.
            log.warning("run %s: could not release lease (%s)", self.run_id, exc)
            return False
        return True

    def start_heartbeat(self) -> None:
        """Have the process's heartbeat thread renew the lease every third of its TTL."""
        _heartbeat.add(self)

    def stop_heartbeat(self) -> None:
        """Stop renewing (the lease then lives at most one TTL unless released)."""
        _heartbeat.remove(self)


#: Threads sending renewals. More than one, so one hung call blocks only itself.
RENEWAL_THREADS = 4


class _Heartbeat:
    """The daemon thread that schedules the renewal of every active lease of the process.

    Each lease is due a third of its TTL after its last renewal; due renewals go to a small
    thread pool, one at a time per lease. A renewal that finds the lease gone marks it lost
    and drops it; a Redis error is logged and retried when the lease is next due.
    """

    def __init__(self) -> None:
        self._due: dict[Lease, float] = {}
        self._sending: set[Lease] = set()
        self._wake = threading.Condition()
        #: When the thread will next wake by itself (monotonic clock).
        self._wake_at = 0.0
        #: Times the thread woke up (for tests: it should sleep between renewals).
        self.wakeups = 0
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(RENEWAL_THREADS, thread_name_prefix="lease-renewal")

    def add(self, lease: Lease) -> None:
        with self._wake:
            due = self._due[lease] = time.monotonic() + lease.ttl_ms / 3000
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-heartbeat",
                                                daemon=True)
                self._thread.start()
            # Wake the thread only when this lease is due before it would wake anyway: a
            # wake-up per stage would cost every stage two thread switches.
            if due < self._wake_at:
                self._wake.notify()

    def remove(self, lease: Lease) -> None:
        with self._wake:
            self._due.pop(lease, None)

    def active(self) -> int:
        """Leases being renewed now."""
        with self._wake:
            return len(self._due)

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                due = [lease for lease, when in self._due.items()
                       if when <= now and lease not in self._sending]
                if not due:
                    # (a lease whose renewal is still on its way is not due again until it
                    # is back, and _renew then wakes the thread: its past due time must
                    # not make the wait below return at once, again and again)
                    self._wake_at = min((when for lease, when in self._due.items()
                                         if lease not in self._sending), default=now + 60)
                    self._wake.wait(self._wake_at - now)
                    self.wakeups += 1
                    self._wake_at = 0.0  # awake: whoever adds a lease now need not notify
                    continue
                for lease in due:
                    self._due[lease] = now + lease.ttl_ms / 3000
                    self._sending.add(lease)
            for lease in due:
                self._pool.submit(self._renew, lease)

    def _renew(self, lease: Lease) -> None:
        try:
            self._send(lease)
        finally:
            with self._wake:
                self._sending.discard(lease)
                if self._due.get(lease, self._wake_at) < self._wake_at:
                    self._wake.notify()  # due again before the thread would wake

    def _send(self, lease: Lease) -> None:
        try:
            if lease.renew():
                return
        except redis.RedisError as exc:
            log.warning("run %s: lease renewal failed (%s); retrying", lease.run_id, exc)
            return
        with self._wake:
            still_active = self._due.pop(lease, None) is not None
        if still_active:  # else it was released while this renewal was on its way
            log.error("run %s: lease lost to another worker", lease.run_id)


_heartbeat = _Heartbeat()


#: How long a lease taken for one short write (:func:`for_a_write`) lives at most, in
#: seconds, should its taker die before releasing it.
WRITE_LEASE_SEC = 30.0


@contextlib.contextmanager
def for_a_write(client: redis.Redis, namespace: str, run_id: str,
                lock_dir: Path | None = None) -> Iterator[Lease | None]:
    """Hold the run's lease around one short write to its files by someone who runs no
    stage (a reaper recording a re-drive, ``sparkle cancel``): yields the lease taken, or
    None when a worker holds the run. Write nothing then, so that two hosts never write one
    run's files at once; with the lease, check :meth:`Lease.held` (fencing) before writing.

    ``lock_dir``: the run folder, in embedded mode (the lease then also holds its lock
    file, which keeps other processes out, as a stage's does)."""
    taken = Lease(client, namespace, run_id, WRITE_LEASE_SEC, lock_dir=lock_dir)
    ours = taken.acquire()
    try:
        yield taken if ours else None
    finally:
        if ours:
            taken.release()


def holder(client: redis.Redis, namespace: str, run_id: str) -> str | None:
    """The token holding a run's lease, or None when it is free."""
    value = client.get(keys.lease(namespace, run_id))
    return None if value is None else _text(value)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

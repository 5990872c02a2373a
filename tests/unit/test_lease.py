"""The run lease: exclusive, renewed by the process's heartbeat thread, released only by its
owner, and marked lost when someone else has it."""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest

from sparkle import lease as lease_module
from sparkle.lease import Lease

TTL_SEC = 0.5  # short, yet several scheduling hiccups long on a loaded machine


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def test_only_one_owner_at_a_time(client: fakeredis.FakeRedis):
    """A second lease on the same run is refused while the first is held, and granted once
    the first is released."""
    first, second = Lease(client, "ns", "run-a", 30), Lease(client, "ns", "run-a", 30)
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()


def test_release_never_deletes_someone_elses_lease(client: fakeredis.FakeRedis):
    """An owner whose lease expired and was taken over releases nothing of the new owner's."""
    old = Lease(client, "ns", "run-a", TTL_SEC)
    assert old.acquire()
    client.delete(old.key)  # expired
    new = Lease(client, "ns", "run-a", 30)
    assert new.acquire()
    old.release()
    assert new.held()
    assert not old.held()


def test_heartbeat_keeps_the_lease_past_its_ttl(client: fakeredis.FakeRedis):
    """While the stage runs, the lease outlives its TTL several times over; once released
    it is gone."""
    held = Lease(client, "ns", "run-a", TTL_SEC)
    assert held.acquire()
    held.start_heartbeat()
    try:
        time.sleep(TTL_SEC * 4)
        assert held.held()
        assert not held.lost.is_set()
    finally:
        held.release()
    assert client.get(held.key) is None


def test_a_lease_not_renewed_expires(client: fakeredis.FakeRedis):
    """Without the heartbeat (a dead worker) the lease frees itself after its TTL."""
    held = Lease(client, "ns", "run-a", TTL_SEC)
    assert held.acquire()
    time.sleep(TTL_SEC * 3)
    assert not held.held()
    assert Lease(client, "ns", "run-a", 30).acquire()


def test_heartbeat_marks_a_lease_taken_by_another_owner_as_lost(client: fakeredis.FakeRedis):
    """When renewal finds another token in the key, the lease is marked lost (the engine then
    writes no results) and the other owner's lease is left alone."""
    held = Lease(client, "ns", "run-a", TTL_SEC)
    assert held.acquire()
    held.start_heartbeat()
    try:
        client.set(held.key, "someone-else")
        assert held.lost.wait(TTL_SEC * 5)
        assert client.get(held.key) == b"someone-else"
    finally:
        held.stop_heartbeat()


def test_fifty_leases_add_no_thread_per_lease(client: fakeredis.FakeRedis):
    """Fifty leases held at once add no thread per lease (one scheduler and a small pool of
    senders), and all of them outlive their TTL."""
    # (a longer TTL than the other tests: 50 renewals per third of it, on fakeredis, must
    # not be what the test measures on a loaded CI machine)
    ttl = 1.0
    leases = [Lease(client, "ns", f"run-{n}", ttl) for n in range(50)]
    for held in leases:
        assert held.acquire()
        held.start_heartbeat()
    try:
        time.sleep(ttl)  # let renewals go out
        names = [t.name for t in threading.enumerate() if t.name.startswith("lease")]
        assert "lease-heartbeat" in names
        assert len(names) <= 1 + lease_module.RENEWAL_THREADS
        time.sleep(ttl * 2)
        assert all(held.held() for held in leases)
        assert lease_module._heartbeat.active() >= 50
    finally:
        for held in leases:
            held.release()
    assert all(client.get(held.key) is None for held in leases)


class _HangingClient:
    """A Redis client whose calls hang, like one stuck on a dead connection."""

    def __init__(self, real: fakeredis.FakeRedis, seconds: float) -> None:
        self.real = real
        self.seconds = seconds

    def eval(self, *args: object) -> object:
        time.sleep(self.seconds)
        raise ConnectionError("hung call gave up")

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_a_hung_renewal_does_not_hold_up_the_other_leases(client: fakeredis.FakeRedis):
    """One lease whose renewal hangs (a dead connection, up to the socket timeout) must not
    make the other leases of the process expire behind it."""
    stuck = Lease(_HangingClient(client, TTL_SEC * 8), "ns", "stuck", TTL_SEC)  # type: ignore[arg-type]
    healthy = [Lease(client, "ns", f"run-{n}", TTL_SEC) for n in range(3)]
    assert stuck.acquire()
    stuck.start_heartbeat()
    for held in healthy:
        assert held.acquire()
        held.start_heartbeat()
    try:
        time.sleep(TTL_SEC * 4)
        assert all(held.held() and not held.lost.is_set() for held in healthy)
    finally:
        for held in [*healthy, stuck]:
            held.stop_heartbeat()


def test_release_can_carry_more_commands_in_the_same_round_trip(client: fakeredis.FakeRedis):
    """``release(also=...)`` runs the extra commands after the release; ``acquire(also=...)``
    likewise."""
    held = Lease(client, "ns", "run-a", 30)
    assert held.acquire(also=(("SET", "ns:before", "1"),))
    assert held.release(also=(("SET", "ns:after", "1"),))
    assert client.get("ns:before") == b"1"
    assert client.get("ns:after") == b"1"
    assert client.get(held.key) is None


def test_starting_a_lease_does_not_wake_the_heartbeat_thread(client: fakeredis.FakeRedis):
    """Leases that fall due after the thread's next wake-up leave it asleep: a wake-up per
    stage would cost every stage two thread switches under the GIL."""
    heartbeat = lease_module._Heartbeat()  # (not the process's: other tests' leases)
    first = Lease(client, "ns", "run-first", 30)
    assert first.acquire()
    heartbeat.add(first)
    time.sleep(0.2)  # the thread is now asleep until the first lease falls due
    before = heartbeat.wakeups
    later = [Lease(client, "ns", f"run-{n}", 30) for n in range(50)]
    try:
        for held in later:
            assert held.acquire()
            heartbeat.add(held)
            time.sleep(0.001)
        assert heartbeat.wakeups == before
    finally:
        for held in [first, *later]:
            heartbeat.remove(held)
            held.release()


class _SlowLease(Lease):
    """A lease whose renewals take longer than the time between them (TTL / 3), yet less
    than the time its last renewal has left (2 TTL / 3)."""

    def renew(self) -> bool:
        time.sleep(self.ttl_ms / 2000)
        return super().renew()


def test_a_renewal_still_on_its_way_does_not_make_the_heartbeat_spin(
        client: fakeredis.FakeRedis):
    """While a renewal is slower than the lease's renewal interval, the heartbeat thread
    sleeps until it is back instead of waking again and again for a lease already being
    renewed (that spin burned a core), and renews it again as soon as it is back (else
    the lease would expire one TTL after that renewal: 4.4 s here)."""
    heartbeat = lease_module._Heartbeat()
    slow = _SlowLease(client, "ns", "run-slow", 2.4)  # due every 0.8 s, renewed in 1.2 s
    assert slow.acquire()
    heartbeat.add(slow)
    try:
        time.sleep(5.0)
        assert heartbeat.wakeups < 20
        assert slow.held() and not slow.lost.is_set()
    finally:
        heartbeat.remove(slow)
        slow.release()


def test_seeding_the_global_random_does_not_repeat_lease_tokens(client: fakeredis.FakeRedis):
    """Adapters seed ``random`` for reproducible media; two workers that ran the same stage
    with the same seed must still draw different lease tokens, or a worker paused past its
    lease would pass the fencing check of the worker that took it over."""
    import random

    random.seed(42)
    first = Lease(client, "sparkle", "run-1", 10).token
    random.seed(42)
    second = Lease(client, "sparkle", "run-1", 10).token
    assert first != second
    assert len(first) == 32 and int(first, 16) >= 0


def test_a_forked_child_draws_other_lease_tokens_than_its_parent(client: fakeredis.FakeRedis):
    """Worker processes are forked: each must draw its own tokens, not its parent's next
    ones (the token generator is seeded again in every child)."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next token and leave at once
        os.write(write, Lease(client, "sparkle", "run-1", 10).token.encode())
        os._exit(0)
    os.close(write)
    child_token = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child_token) == 32
    assert child_token != Lease(client, "sparkle", "run-1", 10).token

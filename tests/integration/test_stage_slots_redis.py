"""The stage slot sets on a real Redis: at most N holders across processes, and the slot of
a worker process that died frees itself after one lease TTL while live holders keep theirs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from sparkle.stagelimits import StageLimits

pytestmark = pytest.mark.redis


def limits_on(server, ttl_sec: float = 15.0, limit: int = 2) -> StageLimits:
    return StageLimits(redis.Redis.from_url(server.url), "sparkle", {"videos": limit}, ttl_sec,
                       500)


def test_never_more_holders_than_the_limit(redis_server):
    # Given two workers' views of videos=2
    first, second = limits_on(redis_server), limits_on(redis_server)
    # When three executions ask for a slot
    taken = [first.try_acquire("videos"), second.try_acquire("videos"),
             second.try_acquire("videos")]
    # Then two get one and the third does not, until one is given back
    assert taken[0] and taken[1] and taken[2] is None
    first.release("videos", taken[0])
    assert second.try_acquire("videos") is not None
    assert first.holders("videos") == 2


def test_a_dead_workers_slot_frees_itself_and_a_live_one_is_kept(redis_server):
    # Given a worker process that took the only slot (ttl 1 s) and died
    code = (f"import redis; from sparkle.stagelimits import StageLimits; "
            f"s = StageLimits(redis.Redis.from_url({redis_server.url!r}), 'sparkle', "
            f"{{'videos': 1}}, 1.0, 500); assert s.try_acquire('videos'); import os; os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    here = limits_on(redis_server, ttl_sec=1.0, limit=1)
    assert here.try_acquire("videos") is None
    # When its lease runs out
    deadline = time.monotonic() + 30
    holder = None
    while holder is None:
        assert time.monotonic() < deadline, "the dead worker's slot never freed"
        time.sleep(0.1)
        holder = here.try_acquire("videos")
    # Then this live worker holds it, and keeps it past several TTLs (renewed)
    time.sleep(3.0)
    other = limits_on(redis_server, ttl_sec=1.0, limit=1)
    assert other.try_acquire("videos") is None
    here.release("videos", holder)
    last = other.try_acquire("videos")
    assert last is not None
    other.release("videos", last)

"""A second baseline of scripts/bench_hops.py: a bare chain of 7 dramatiq actors, each on its
own queue as Sparkle's stages are, each sending the next, on the Redis at BENCH_REDIS_URL.
Imported by ``dramatiq bench_hops_bare7``."""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["BENCH_REDIS_URL"]
dramatiq.set_broker(RedisBroker(url=URL, namespace="bare7"))
client = redis.Redis.from_url(URL)

HOPS = 7
ACTORS: list[Any] = []


def _declare(step: int) -> Any:
    def hop(chain: int) -> None:
        if step + 1 < HOPS:
            ACTORS[step + 1].send(chain)
        else:
            client.incr("bare7:done")

    return dramatiq.actor(hop, actor_name=f"hop{step}", queue_name=f"bare7.{step}",
                          max_retries=0)


ACTORS.extend(_declare(step) for step in range(HOPS))

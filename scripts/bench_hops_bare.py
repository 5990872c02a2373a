"""The baseline of scripts/bench_hops.py: a bare dramatiq chain of 7 actors, each sending
the next, on the Redis at BENCH_REDIS_URL. Imported by ``dramatiq bench_hops_bare``."""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["BENCH_REDIS_URL"]
dramatiq.set_broker(RedisBroker(url=URL, namespace="bare"))
client = redis.Redis.from_url(URL)

HOPS = 7


@dramatiq.actor(queue_name="bare", max_retries=0)
def hop(chain: int, step: int) -> None:
    if step + 1 < HOPS:
        hop.send(chain, step + 1)
    else:
        client.incr("bare:done")

"""Reference chains of scripts/bench_hops.py: 7 dramatiq actors, each on its own queue as
Sparkle's stages are, each sending the next, on the Redis at BENCH_REDIS_URL. Imported by
``dramatiq bench_hops_bare7``.

With BENCH_CHECKPOINT_DIR set, each hop first writes one durable JSON checkpoint there
with Sparkle's own atomic writer (temp file, fsync, rename, fsync of the folder): the
least a chain that survives a crash at every step must do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["BENCH_REDIS_URL"]
dramatiq.set_broker(RedisBroker(url=URL, namespace="bare7"))
client = redis.Redis.from_url(URL)
CHECKPOINTS = os.environ.get("BENCH_CHECKPOINT_DIR")

HOPS = 7
ACTORS: list[Any] = []


def _declare(step: int) -> Any:
    def hop(chain: int) -> None:
        if CHECKPOINTS:
            from sparkle import atomic

            atomic.write_json(Path(CHECKPOINTS) / str(chain) / f"{step}.json",
                              {"chain": chain, "step": step, "status": "success"})
        if step + 1 < HOPS:
            ACTORS[step + 1].send(chain)
        else:
            client.incr("bare7:done")

    return dramatiq.actor(hop, actor_name=f"hop{step}", queue_name=f"bare7.{step}",
                          max_retries=0)


ACTORS.extend(_declare(step) for step in range(HOPS))

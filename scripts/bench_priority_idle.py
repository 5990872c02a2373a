#!/usr/bin/env python
"""What the priority levels cost an idle worker process: Redis calls per second.

Starts a private redis-server and one worker process (``python -m sparkle.supervisor
--threads 1``) twice, each time idle for 10 s: consuming the seven normal-level stage queues
only (what a worker consumed before priorities), then every level (what ``sparkle worker``
consumes now: 21 queues, each with its delay queue). Prints Redis's own count of commands
per second (``INFO commandstats``) for each, and the ratio.

Usage::

    .venv/bin/python scripts/bench_priority_idle.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from redis_server import RedisServer  # noqa: E402

from sparkle.keys import queue_name, worker_queues  # noqa: E402
from sparkle.schemas import STAGES  # noqa: E402

#: Seconds measured, after a warm-up of WARM_SEC.
MEASURE_SEC = 10.0
WARM_SEC = 4.0


def calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(value["calls"]) for value in stats.values())


def main() -> None:
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-priority-idle-") as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        client = redis.Redis.from_url(server.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
        env.update(SPARKLE_REDIS_URL=server.url, SPARKLE_RUNS_DIR=f"{tmp}/runs",
                   SPARKLE_ADAPTERS="test")
        try:
            for label, queues in (("normal level only (before priorities)",
                                   [queue_name(stage) for stage in STAGES]),
                                  ("every level (now)", worker_queues(list(STAGES)))):
                worker = subprocess.Popen([sys.executable, "-m", "sparkle.supervisor",
                                           "--threads", "1", "--queues", *queues], env=env)
                try:
                    time.sleep(WARM_SEC)
                    before, start = calls(client), time.monotonic()
                    time.sleep(MEASURE_SEC)
                    rate = (calls(client) - before) / (time.monotonic() - start)
                finally:
                    worker.terminate()
                    worker.wait(60)
                rates.append(rate)
                print(f"{label}: {len(queues)} queues, {rate:.0f} Redis calls/s while idle")
        finally:
            server.stop()
    print(f"ratio every level / normal only: {rates[1] / rates[0]:.2f}")


if __name__ == "__main__":
    main()

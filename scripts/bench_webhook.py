#!/usr/bin/env python
"""A webhook receiver down for the first minute still gets every notification (issue 22).

Starts a private redis-server and ``sparkle worker -p 2 -t 2`` with the ``test`` adapters,
``SPARKLE_WEBHOOK_URL`` pointing at a local port where nothing listens yet, and the
default retry settings (5 s doubling to 300 s). Submits ``--runs`` plans (one in ten fails
at videos, so failures are notified too), starts the receiver ``--down-sec`` after the
submission, and waits until every run has ended and the outbox is empty. Reports the
notifications expected, received (unique by id), duplicates, lost, and how long after the
receiver came up the last one arrived; every request's signature is checked.

Usage::

    .venv/bin/python scripts/bench_webhook.py [--runs 20] [--down-sec 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from redis_server import RedisServer, free_port  # noqa: E402
from webhook_receiver import Receiver  # noqa: E402
from worker_group import BIN, WorkerGroup, wait_for  # noqa: E402

from sparkle import webhooks  # noqa: E402
from sparkle.notifications import OUTBOX_DIR  # noqa: E402
from sparkle.runstore import RunStore  # noqa: E402

PLAN = json.loads((REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text())

#: The receiver's shared secret.
SECRET = "bench-webhook-secret"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--down-sec", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        folder = Path(tmp)
        server = RedisServer(folder / "redis")
        server.start()
        receiver = Receiver(free_port(), fail_first=0)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
        env = {**clean, "SPARKLE_REDIS_URL": server.url, "SPARKLE_RUNS_DIR": str(folder / "runs"),
               "SPARKLE_ADAPTERS": "test", "SPARKLE_WEBHOOK_URL": receiver.url,
               "SPARKLE_WEBHOOK_SECRET": SECRET}
        workers = WorkerGroup(folder, env, folder / "workers.log")
        try:
            workers.start(processes=2, threads=2, wait_sec=60)
            paths = []
            for n in range(args.runs):
                plan = json.loads(json.dumps(PLAN))
                plan["title"] = f"Webhook bench {n}"
                if n % 10 == 9:
                    plan["metadata"]["fault_videos"] = "permanent"
                path = folder / f"plan-{n}.json"
                path.write_text(json.dumps(plan))
                paths.append(str(path))
            submitted = time.time()
            out = subprocess.run([str(BIN), "submit", *paths], env=env, cwd=folder, text=True,
                                 capture_output=True, timeout=120, check=True).stdout
            store = RunStore(folder / "runs")
            runs = [store.run(line.split()[0]) for line in out.splitlines()]
            wait_for(lambda: all(r.status().value in ("succeeded", "failed") for r in runs),
                     600, "every run to end")
            time.sleep(max(0.0, submitted + args.down_sec - time.time()))
            receiver.start()
            up = time.time()
            outbox = folder / "runs" / OUTBOX_DIR
            wait_for(lambda: not any(outbox.glob("*.json")), 900, "the outbox to empty")
            last = time.time()
        finally:
            if workers.process is not None:
                workers.stop(timeout=120)
            receiver.stop()
            server.stop()
        expected = {(r.run_id, r.status().value) for r in runs}
        ids = Counter(json.loads(body)["id"] for _, body in receiver.accepted)
        received = {(json.loads(body)["run_id"], json.loads(body)["status"])
                    for _, body in receiver.accepted}
        signed = all(webhooks.verify(SECRET, body, h["X-Sparkle-Timestamp"],
                                     h["X-Sparkle-Signature"], tolerance_sec=3600)
                     for h, body in receiver.accepted)
        result = {
            "runs": len(runs), "failed_runs": sum(1 for _, s in expected if s == "failed"),
            "expected": len(expected), "received_unique": len(ids),
            "duplicates": sum(ids.values()) - len(ids), "lost": len(expected - received),
            "unexpected": len(received - expected), "all_signatures_verify": signed,
            "receiver_down_sec": round(up - submitted, 1),
            "last_delivery_after_up_sec": round(last - up, 1),
        }
    print(f"{result['runs']} runs ({result['failed_runs']} failing), receiver down for the "
          f"first {result['receiver_down_sec']:.0f}s:")
    print(f"  expected {result['expected']}, received {result['received_unique']} unique, "
          f"{result['duplicates']} duplicate(s), {result['lost']} lost; signatures "
          f"{'all verify' if signed else 'DO NOT all verify'}")
    print(f"  all delivered {result['last_delivery_after_up_sec']:.1f}s after the receiver "
          "came up (default backoff: 5 s doubling to 300 s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

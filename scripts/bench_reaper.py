#!/usr/bin/env python
"""A reaper pass over a backlog of queued runs, on real Redis.

Starts a private redis-server, creates ``--runs`` runs and sends each one's first stage
(a backlog: every run queued, its message waiting in the broker), then times, median of
``--repeat``:

- the baseline: ``RunStore.summaries()``, the listing every pass starts from;
- a reaper pass: ``Reaper.run_once(dry_run=True, older_than=0)``, so every queued run
  counts as still for long enough to be looked at (the worst case for the pass).

Every ``sparkle worker`` and ``sparkle watch`` runs such a pass every
``SPARKLE_REAPER_INTERVAL_SEC``; this is what one costs while a backlog waits.

    .venv/bin/python scripts/bench_reaper.py [--runs 3000] [--repeat 5] [--dir PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from redis_server import RedisServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3000, help="queued runs in the backlog")
    parser.add_argument("--repeat", type=int, default=5, help="passes; the median is reported")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the runs folder (default: the system's temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            os.environ.update({"SPARKLE_REDIS_URL": server.url,
                               "SPARKLE_RUNS_DIR": str(Path(tmp) / "runs"),
                               "SPARKLE_LOG_LEVEL": "warning"})
            from sparkle import broker as broker_module
            from sparkle import engine as engine_module
            from sparkle.redrive import Reaper
            from sparkle.schemas import MoviePlan
            from sparkle.settings import configure

            configure()
            broker_module.reset()
            engine_module.set_engine(None)
            broker_module.load_actors()
            engine = engine_module.get_engine()
            plan = json.loads((ROOT / "tests/data/plans/rooftop.json").read_text())
            for index in range(args.runs):
                plan["title"] = f"backlog {index}"
                run, _ = engine.store.create(MoviePlan.model_validate(plan))
                engine.dispatcher.kick(run)
            reaper = Reaper(engine.store, engine.dispatcher, engine.client,
                            engine.dispatcher.broker, engine.settings)
            listing: list[float] = []
            passes: list[float] = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                engine.store.summaries()
                listing.append(time.perf_counter() - started)
                started = time.perf_counter()
                found = reaper.run_once(dry_run=True, older_than=0)
                passes.append(time.perf_counter() - started)
            if found:
                sys.exit(f"bench_reaper: {len(found)} runs of the backlog taken for stuck")
        finally:
            server.stop()
    baseline, reaping = statistics.median(listing), statistics.median(passes)
    print(f"| measurement, {args.runs} queued runs | seconds (median of {args.repeat}) "
          "| ratio to the listing |")
    print("|---|---:|---:|")
    print(f"| `RunStore.summaries()` (baseline) | {baseline:.3f} | 1.00 |")
    print(f"| reaper pass, dry run | {reaping:.3f} | {reaping / baseline:.2f} |")


if __name__ == "__main__":
    main()

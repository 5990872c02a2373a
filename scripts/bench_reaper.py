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
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

from bench_hops import engine_with_runs  # noqa: E402
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
            from sparkle.redrive import Reaper

            engine, runs = engine_with_runs(server, Path(tmp) / "runs", args.runs, "backlog")
            for run in runs:
                engine.dispatcher.kick(run)
            reaper = Reaper(engine.store, engine.dispatcher, engine.settings)
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

#!/usr/bin/env python
"""A high-priority run overtakes a queued backlog (issue 22, item 3).

Starts a private redis-server and ``sparkle worker -p 2 -t 1`` (two busy workers) with the
``test`` adapters, whose videos stage sleeps ``--stage-sec`` (``fault_videos=sleep:S``: the
heavy stage, the "stage-time"; the other stages take milliseconds). Submits ``--runs``
normal plans, waits until the workers are busy with them, then submits one plan with
``sparkle submit --priority high``, and waits for every run to succeed.

A run's **wait** is from its run folder's creation (``movie_plan.json`` written by
``submit``, just before its first message is sent) to the start of its first stage (the
adapters' own start record, ``trace.jsonl``). Printed: the high run's wait, in seconds and
in stage-times, against the median and longest wait of the normal runs submitted before it.

Usage::

    .venv/bin/python scripts/bench_priority.py [--runs 200] [--stage-sec 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from redis_server import RedisServer  # noqa: E402
from worker_group import BIN, WorkerGroup, wait_for  # noqa: E402

from sparkle.adapters.testing import read_trace  # noqa: E402
from sparkle.runstore import PLAN_FILE, Run, RunStore  # noqa: E402

PLAN = json.loads((REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text())


def write_plan(folder: Path, name: str, stage_sec: float) -> str:
    plan = json.loads(json.dumps(PLAN))
    plan["title"] = name
    plan["metadata"]["fault_videos"] = f"sleep:{stage_sec}"
    path = folder / f"{name}.json"
    path.write_text(json.dumps(plan))
    return str(path)


def submit(env: dict[str, str], folder: Path, paths: list[str], *options: str) -> list[Run]:
    out = subprocess.run([str(BIN), "submit", *options, *paths], env=env, cwd=folder,
                         text=True, capture_output=True, timeout=600, check=True).stdout
    store = RunStore(folder / "runs")
    return [store.run(line.split()[0]) for line in out.splitlines()]


def first_start(run: Run) -> float | None:
    starts = [t["start"] for t in read_trace(run.dir) if t["stage"] == "script"]
    return min(starts) if starts else None


def wait_of(run: Run) -> float:
    start = first_start(run)
    assert start is not None
    return start - os.stat(run.dir / PLAN_FILE).st_mtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--stage-sec", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-priority-") as tmp:
        folder = Path(tmp)
        server = RedisServer(folder / "redis")
        server.start()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
        env = {**clean, "SPARKLE_REDIS_URL": server.url, "SPARKLE_RUNS_DIR": str(folder / "runs"),
               "SPARKLE_ADAPTERS": "test"}
        workers = WorkerGroup(folder, env, folder / "workers.log")
        try:
            workers.start(processes=2, threads=1, wait_sec=60)
            paths = [write_plan(folder, f"normal-{n:03d}", args.stage_sec)
                     for n in range(args.runs)]
            normal = submit(env, folder, paths)
            # the workers are busy with the backlog before the rush job arrives
            wait_for(lambda: sum(first_start(r) is not None for r in normal) >= 4, 120,
                     "the workers to be busy")
            (high,) = submit(env, folder, [write_plan(folder, "rush", args.stage_sec)],
                             "--priority", "high")
            every = [*normal, high]
            wait_for(lambda: all(r.status().value == "succeeded" for r in every),
                     args.runs * (args.stage_sec + 0.5) + 300, "every run to succeed")
        finally:
            if workers.process is not None:
                workers.stop(timeout=120)
            server.stop()
        high_wait = wait_of(high)
        waits = [wait_of(r) for r in normal]
        high_start = first_start(high)
        assert high_start is not None
        overtaken = sum(1 for r in normal if (first_start(r) or 0) > high_start)
        done = {r.run_id: max(t["end"] for t in read_trace(r.dir)) for r in every}
        high_rank = sorted(done, key=done.__getitem__).index(high.run_id) + 1
        median = statistics.median(waits)
        result = {
            "runs": args.runs, "stage_sec": args.stage_sec,
            "high_wait_sec": round(high_wait, 3),
            "high_wait_stage_times": round(high_wait / args.stage_sec, 2),
            "normal_median_wait_sec": round(median, 3),
            "normal_max_wait_sec": round(max(waits), 3),
            "ratio_high_to_median": round(high_wait / median, 4),
            "normal_runs_overtaken": overtaken,
            "high_finished_rank": high_rank,
        }
        print(f"{args.runs} normal runs queued behind 2 busy workers (videos {args.stage_sec}s, "
              "the stage-time), then 1 high run:")
        print(f"  high run waited {high_wait:.3f}s = {result['high_wait_stage_times']} "
              f"stage-times (submit -> first stage starts)")
        print(f"  normal runs: median wait {median:.3f}s, longest {max(waits):.3f}s; "
              f"high/median = {result['ratio_high_to_median']}")
        print(f"  the high run started ahead of {overtaken} normal runs submitted before it "
              f"and finished {high_rank} of {len(every)}")
        print(json.dumps(result))


if __name__ == "__main__":
    main()

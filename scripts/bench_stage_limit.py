#!/usr/bin/env python
"""``SPARKLE_STAGE_CONCURRENCY=videos=1`` across three worker processes (issue 22, item 4).

Starts a private redis-server and ``sparkle worker -p 3 -t 2`` (three worker processes,
two threads each) with the ``test`` adapters, submits ``--runs`` plans whose videos stage
sleeps ``--videos-sec`` (``fault_videos=sleep:S``), and waits for all to succeed. Then,
from the adapters' own start/end records (each run's ``trace.jsonl``):

- the most ``videos`` executions observed at once (must be 1);
- the total time, submit → last run done, against the ideal schedule for one videos slot:
  the shortest lead-in (stages before videos, of any run) + every videos execution back to
  back + the shortest tail (stages after videos, of any run);
- the same run without a limit, for scale (``--no-baseline`` skips it).

Usage::

    .venv/bin/python scripts/bench_stage_limit.py [--runs 20] [--videos-sec 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from redis_server import RedisServer  # noqa: E402
from worker_group import BIN, WorkerGroup, wait_for  # noqa: E402

from sparkle.adapters.testing import read_trace  # noqa: E402
from sparkle.runstore import Run, RunStore  # noqa: E402
from sparkle.schemas import STAGES  # noqa: E402

PLAN = json.loads((REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text())


#: ``SPARKLE_STAGE_CONCURRENCY_RETRY_MS`` of the limited trial (``--retry-ms``).
RETRY_MS = 500


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end at the same instant as a start does
    not overlap it)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda p: (p[0], p[1]))
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def one_trial(folder: Path, runs: int, videos_sec: float, limit: str | None) -> dict[str, float]:
    server = RedisServer(folder / "redis")
    server.start()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    env = {**clean, "SPARKLE_REDIS_URL": server.url, "SPARKLE_RUNS_DIR": str(folder / "runs"),
           "SPARKLE_ADAPTERS": "test"}
    if limit:
        env["SPARKLE_STAGE_CONCURRENCY"] = limit
        env["SPARKLE_STAGE_CONCURRENCY_RETRY_MS"] = str(RETRY_MS)
    workers = WorkerGroup(folder, env, folder / "workers.log")
    try:
        workers.start(processes=3, threads=2, wait_sec=60)
        paths = []
        for n in range(runs):
            plan = json.loads(json.dumps(PLAN))
            plan["title"] = f"Limit bench {n}"
            plan["metadata"]["fault_videos"] = f"sleep:{videos_sec}"
            path = folder / f"plan-{n}.json"
            path.write_text(json.dumps(plan))
            paths.append(str(path))
        submitted = time.time()
        out = subprocess.run([str(BIN), "submit", *paths], env=env, cwd=folder, text=True,
                             capture_output=True, timeout=120, check=True).stdout
        store = RunStore(folder / "runs")
        the_runs = [store.run(line.split()[0]) for line in out.splitlines()]
        wait_for(lambda: all(r.status().value == "succeeded" for r in the_runs),
                 runs * videos_sec * 5 + 120, "every run to succeed")
        done = max(max(t["end"] for t in read_trace(r.dir)) for r in the_runs)
    finally:
        if workers.process is not None:
            workers.stop(timeout=120)
        server.stop()
    return measure(the_runs, submitted, done)


def measure(runs: list[Run], submitted: float, done: float) -> dict[str, float]:
    videos: list[tuple[float, float]] = []
    leads, tails = [], []
    # Engine records around each videos execution: (begin event, adapter start, adapter
    # end, success event), to split a gap between two executions into the engine's own
    # bookkeeping of each and the hand-over of the slot.
    spans: list[tuple[float, float, float, float]] = []
    before, after = set(STAGES[:STAGES.index("videos")]), set(STAGES[STAGES.index("videos") + 1:])
    for run in runs:
        trace = [t for t in read_trace(run.dir) if t.get("outcome") == "ok"]
        videos += [(t["start"], t["end"]) for t in trace if t["stage"] == "videos"]
        leads.append(sum(t["end"] - t["start"] for t in trace if t["stage"] in before))
        tails.append(sum(t["end"] - t["start"] for t in trace if t["stage"] in after))
        events = [e for e in run.events() if e.stage == "videos"]
        begin = next(e.timestamp for e in events if e.status == "begin")
        success = next(e.timestamp for e in events if e.status == "success")
        adapter = next(t for t in trace if t["stage"] == "videos")
        spans.append((begin, adapter["start"], adapter["end"], success))
    ordered = sorted(videos)
    busy = sum(end - start for start, end in videos)
    # Adapters only: the shortest lead-in and tail of any run, every videos back to back.
    ideal = min(leads) + busy + min(tails)
    # As measured: the first videos cannot start earlier, nor the last run end sooner after
    # its videos, whatever the limit (submit, hops, the other stages are in both).
    ideal_measured = (ordered[0][0] - submitted) + busy + (done - ordered[-1][1])
    total = done - submitted
    gaps = [max(0.0, nxt[0] - cur[1]) for cur, nxt in itertools.pairwise(ordered)]
    spans.sort(key=lambda span: span[1])
    handovers = [nxt[0] - cur[3] for cur, nxt in itertools.pairwise(spans)]
    return {"max_concurrent_videos": max_overlap(videos), "total_sec": round(total, 2),
            "ideal_sec": round(ideal, 2), "ratio": round(total / ideal, 3),
            "ideal_measured_sec": round(ideal_measured, 2),
            "ratio_measured": round(total / ideal_measured, 3),
            "videos_executions": len(videos),
            "first_videos_start_sec": round(ordered[0][0] - submitted, 3),
            "last_videos_end_to_done_sec": round(done - ordered[-1][1], 3),
            "median_gap_sec": round(statistics.median(gaps), 3) if gaps else 0.0,
            "max_gap_sec": round(max(gaps), 3) if gaps else 0.0,
            # engine bookkeeping before the adapter (begin event -> adapter start) and
            # after it (adapter end -> success event), and the hand-over of the slot
            # (one's success event -> the next one's begin event), medians
            "median_before_adapter_sec": round(statistics.median(
                s[1] - s[0] for s in spans), 3),
            "median_after_adapter_sec": round(statistics.median(s[3] - s[2] for s in spans), 3),
            "median_handover_sec": round(statistics.median(handovers), 3) if handovers else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--videos-sec", type=float, default=1.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--retry-ms", type=int, default=500,
                        help="SPARKLE_STAGE_CONCURRENCY_RETRY_MS of the limited trial")
    args = parser.parse_args()
    global RETRY_MS
    RETRY_MS = args.retry_ms
    with tempfile.TemporaryDirectory(prefix="bench-stage-limit-") as tmp:
        limited = one_trial(Path(tmp) / "limited", args.runs, args.videos_sec, "videos=1")
        print(f"videos=1, 3 worker processes x 2 threads, {args.runs} runs, videos "
              f"{args.videos_sec:.1f}s each:")
        print(f"  max concurrent videos executions: {limited['max_concurrent_videos']} "
              f"(of {limited['videos_executions']})")
        print(f"  total {limited['total_sec']:.2f}s; ideal schedule {limited['ideal_sec']:.2f}s "
              f"(adapter times only), ratio {limited['ratio']:.3f}; "
              f"{limited['ideal_measured_sec']:.2f}s (measured lead-in and tail), ratio "
              f"{limited['ratio_measured']:.3f}")
        print(f"  between two videos executions: median {limited['median_gap_sec']:.3f}s, "
              f"longest {limited['max_gap_sec']:.3f}s; of which (medians) engine bookkeeping "
              f"{limited['median_after_adapter_sec']:.3f}s after an adapter + "
              f"{limited['median_before_adapter_sec']:.3f}s before the next, slot hand-over "
              f"{limited['median_handover_sec']:.3f}s")
        if not args.no_baseline:
            free = one_trial(Path(tmp) / "free", args.runs, args.videos_sec, None)
            print(f"no limit (baseline): max concurrent videos {free['max_concurrent_videos']}, "
                  f"total {free['total_sec']:.2f}s")
        print(json.dumps({"limited": limited, **({} if args.no_baseline else {"free": free})}))


if __name__ == "__main__":
    main()

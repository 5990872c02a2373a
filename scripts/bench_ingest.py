#!/usr/bin/env python
"""Benchmark the hot folder: close-to-enqueue latency, and a burst of plans.

(a) Latency from a writer finishing a file (close, rename or move) to ``enqueue`` being
    called, p50/p95/max over ``--files`` plans dropped ``--interval`` seconds apart, for
    inotify (close-after-write, rename from ``.part``, moved in from another folder) and
    polling.
(b) A burst of ``--burst`` plans written as fast as possible: time until every run is
    enqueued, with the counts of lost and duplicated runs (both must be 0).

The baseline is the raw cost of ``load_plan_file`` + ``RunStore.create`` for the same
number of files in this process, with no watcher. Prints a markdown table.

Usage::

    .venv/bin/python scripts/bench_ingest.py [--files 200] [--burst 1000] [--stable 0.5]
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import watchdog.version

from sparkle.inbox import POLL_INTERVAL_SEC, Inbox
from sparkle.plans import load_plan_file
from sparkle.runstore import Run, RunStore, run_id_for
from sparkle.schemas import MoviePlan

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = json.loads((REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text())

#: Seconds to wait for every expected run to be enqueued before counting the rest as lost.
WAIT_LIMIT_SEC = 120.0


class EnqueueClock:
    """A thread-safe fake enqueue recording when each run id was enqueued."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = collections.defaultdict(list)

    def __call__(self, run: Run) -> None:
        now = time.monotonic()
        with self.lock:
            self.times[run.run_id].append(now)

    def seen(self, run_ids: list[str]) -> bool:
        with self.lock:
            return all(run_id in self.times for run_id in run_ids)


@dataclass
class Result:
    scenario: str
    files: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None
    total_s: float | None = None
    lost: int = 0
    duplicated: int = 0
    note: str = ""


def make_plans(count: int, prefix: str) -> list[tuple[bytes, str]]:
    """``count`` distinct plans as (file bytes, expected run id)."""
    plans = []
    for i in range(count):
        document = copy.deepcopy(EXAMPLE)
        document["title"] = f"{prefix} {i}"
        plans.append(
            (json.dumps(document).encode(), run_id_for(MoviePlan.model_validate(document)))
        )
    return plans


def wait_for(predicate: Callable[[], bool], limit: float = WAIT_LIMIT_SEC) -> None:
    deadline = time.monotonic() + limit
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)


def new_inbox(root: Path, clock: EnqueueClock, *, poll: bool, stable: float) -> Inbox:
    return Inbox(
        root / "inbox",
        RunStore(root / "runs"),
        clock,
        poll=poll,
        stable_seconds=stable,
        glob="*.json",
        max_plan_bytes=1 << 20,
    )


def drop(how: str, inbox_dir: Path, staging: Path, name: str, data: bytes) -> float:
    """Put one plan into the inbox the way ``how`` says; returns when the writer finished."""
    if how == "close":
        with open(inbox_dir / name, "wb") as handle:
            handle.write(data)
    elif how == "rename":
        part = inbox_dir / (name + ".part")
        part.write_bytes(data)
        os.rename(part, inbox_dir / name)
    else:  # moved in from another folder: a created event only
        (staging / name).write_bytes(data)
        os.rename(staging / name, inbox_dir / name)
    return time.monotonic()


def bench_latency(
    scenario: str, how: str, *, poll: bool, files: int, interval: float, stable: float
) -> Result:
    clock = EnqueueClock()
    plans = make_plans(files, f"Latency {scenario}")
    finished: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as tmp:
        root = Path(tmp)
        staging = root / "staging"
        staging.mkdir()
        inbox = new_inbox(root, clock, poll=poll, stable=stable)
        inbox.start()
        try:
            for i, (data, run_id) in enumerate(plans):
                finished[run_id] = drop(how, inbox.dir, staging, f"l{i:04d}.json", data)
                time.sleep(interval)
            wait_for(lambda: clock.seen(list(finished)))
            inbox.wait_idle(10)
        finally:
            inbox.stop()
    latencies = sorted(
        (clock.times[run_id][0] - t) * 1000
        for run_id, t in finished.items()
        if run_id in clock.times
    )
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return Result(
        scenario,
        files,
        p50_ms=statistics.median(latencies),
        p95_ms=q[94],
        max_ms=latencies[-1],
        lost=len(finished) - len(latencies),
        duplicated=sum(len(v) - 1 for v in clock.times.values()),
        note=f"one file every {interval * 1000:.0f} ms",
    )


def bench_burst(scenario: str, *, poll: bool, files: int, stable: float) -> Result:
    clock = EnqueueClock()
    plans = make_plans(files, f"Burst {scenario}")
    expected = [run_id for _, run_id in plans]
    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as tmp:
        root = Path(tmp)
        inbox = new_inbox(root, clock, poll=poll, stable=stable)
        inbox.start()
        try:
            started = time.monotonic()
            for i, (data, _) in enumerate(plans):
                (inbox.dir / f"b{i:04d}.json").write_bytes(data)
            written = time.monotonic() - started
            wait_for(lambda: clock.seen(expected))
            inbox.wait_idle(10)
            done = max((v[0] for v in clock.times.values()), default=started) - started
            left = [p for p in inbox.dir.iterdir() if p.is_file()]
            left += [p for p in inbox.claimed_dir.iterdir() if not p.name.startswith(".")]
            processed = len(list(inbox.processed_dir.iterdir()))
            runs = len(RunStore(root / "runs").runs())
        finally:
            inbox.stop()
    lost = sum(1 for run_id in expected if run_id not in clock.times)
    return Result(
        scenario,
        files,
        total_s=done,
        lost=lost,
        duplicated=sum(len(v) - 1 for v in clock.times.values()),
        note=(
            f"writer took {written:.2f} s; {processed} in processed/, {runs} runs, "
            f"{len(left)} left in the inbox"
        ),
    )


def bench_baseline(files: int) -> Result:
    """load_plan_file + RunStore.create for ``files`` plans, no watcher."""
    plans = make_plans(files, "Baseline")
    per_file: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as tmp:
        root = Path(tmp)
        paths = []
        for i, (data, _) in enumerate(plans):
            path = root / f"p{i:04d}.json"
            path.write_bytes(data)
            paths.append(path)
        store = RunStore(root / "runs")
        started = time.monotonic()
        for path in paths:
            t = time.monotonic()
            store.create(load_plan_file(path, 1 << 20))
            per_file.append((time.monotonic() - t) * 1000)
        total = time.monotonic() - started
    q = statistics.quantiles(per_file, n=100, method="inclusive")
    return Result(
        "baseline: load_plan_file + RunStore.create",
        files,
        p50_ms=statistics.median(per_file),
        p95_ms=q[94],
        max_ms=max(per_file),
        total_s=total,
        note="same process, no watcher",
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200, help="plans per latency run")
    parser.add_argument("--burst", type=int, default=1000, help="plans in the burst")
    parser.add_argument("--stable", type=float, default=0.5, help="stability wait, seconds")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between drops")
    args = parser.parse_args()

    latency_base = bench_baseline(args.files)
    burst_base = bench_baseline(args.burst)
    rows = [latency_base]
    for scenario, how, poll in (
        ("inotify, close-after-write", "close", False),
        ("inotify, rename from .part", "rename", False),
        ("inotify, moved in (stability wait)", "move", False),
        ("polling (stability wait)", "close", True),
    ):
        rows.append(
            bench_latency(
                scenario,
                how,
                poll=poll,
                files=args.files,
                interval=args.interval,
                stable=args.stable,
            )
        )
    rows.append(burst_base)
    for scenario, poll in (("burst, inotify", False), ("burst, polling", True)):
        rows.append(bench_burst(scenario, poll=poll, files=args.burst, stable=args.stable))

    print(
        f"Python {platform.python_version()}, watchdog {watchdog.version.VERSION_STRING}, "
        f"{os.cpu_count()} CPUs, stability wait {args.stable} s, "
        f"polling interval {POLL_INTERVAL_SEC} s\n"
    )
    print("| scenario | files | p50 ms | p95 ms | max ms | total s | lost | dup | ratio | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        ratio = ""
        if row.scenario.startswith("burst") and row.total_s and burst_base.total_s:
            ratio = f"{row.total_s / burst_base.total_s:.1f}x baseline"
        elif row.p50_ms is not None and not row.scenario.startswith("baseline"):
            ratio = f"{row.p50_ms / (latency_base.p50_ms or 1):.1f}x baseline p50"
        print(
            f"| {row.scenario} | {row.files} | {fmt(row.p50_ms)} | {fmt(row.p95_ms)} | "
            f"{fmt(row.max_ms)} | {fmt(row.total_s, 2)} | {row.lost} | {row.duplicated} | "
            f"{ratio} | {row.note} |"
        )
    failed = any(row.lost or row.duplicated for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

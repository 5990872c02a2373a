#!/usr/bin/env python
"""Soak: many runs through one worker process, with the worker's memory (RSS) recorded.

Issue 7 asks that 1,000 consecutive runs through one worker leave its RSS at run 1,000
within 10% of its RSS at run 100. Two ways to drive them, both with the ``test`` adapters:

- ``--mode redis`` (default): a private ``redis-server`` on a free loopback port and one
  ``dramatiq actors -p 1`` worker process (its master forks one child that runs the
  actors; the child's RSS is the one that counts). This process creates the runs and
  queues their first stage, as ``sparkle submit`` does.
- ``--mode embedded``: this process is the worker (StubBroker, one in-process dramatiq
  Worker, as ``sparkle serve``); its own RSS is recorded.

Runs are fed ``--in-flight`` at a time (default 1: strictly one after another; more keeps
every stage queue busy, which on Redis avoids the consumers' idle back-off of up to 1 s
between runs). RSS is sampled after every ``--every`` finished runs and at runs 1, 10,
100, 500 and 1,000; the curve goes to ``--csv``. Prints a markdown summary.

Usage::

    .venv/bin/python scripts/soak.py [--runs 1000] [--mode redis|embedded] [--in-flight 1]
        [--threads 2] [--every 10] [--csv soak.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = json.loads((REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text())
BIN = Path(sys.executable).parent

#: Runs at which RSS is always sampled (besides every ``--every``).
MILESTONES = (1, 10, 100, 200, 500, 1000)

#: Largest allowed RSS growth from run 100 to the last run, as a fraction (issue 7).
MAX_GROWTH = 0.10

#: Seconds a single run may take before the soak gives up on it.
RUN_LIMIT_SEC = 120.0


@dataclass
class Sample:
    run: int
    rss_bytes: int
    uss_bytes: int
    elapsed_sec: float


def plan_bytes(index: int) -> bytes:
    doc = json.loads(json.dumps(EXAMPLE))
    doc["title"] = f"Soak {index:05d}"
    return json.dumps(doc).encode()


def memory_of(process: psutil.Process) -> tuple[int, int]:
    info = process.memory_full_info()
    return int(info.rss), int(info.uss)


def worker_child(master: psutil.Process, timeout: float = 30.0) -> psutil.Process:
    """The process the dramatiq master forked to run the actors."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = master.children(recursive=True)
        if children:
            return max(children, key=lambda p: p.memory_info().rss)
        time.sleep(0.1)
    raise RuntimeError("the dramatiq master started no worker process")


def drive(
    total: int, in_flight: int, every: int, measure: Callable[[], tuple[int, int]], progress: bool
) -> tuple[list[Sample], int, float]:
    """Create and queue ``total`` runs, ``in_flight`` at a time; sample memory as they end.

    Returns the samples, the number of runs that did not succeed, and the wall time.
    """
    from sparkle.app import installed
    from sparkle.plans import parse_plan_bytes
    from sparkle.runstore import Run, RunStatus

    engine = installed().engine
    started = time.monotonic()
    samples: list[Sample] = []
    waiting: dict[str, tuple[Run, float]] = {}
    submitted = finished = failed = 0
    while finished < total:
        while submitted < total and len(waiting) < in_flight:
            run, _ = engine.store.create(parse_plan_bytes(plan_bytes(submitted), "soak"))
            engine.dispatcher.kick(run)
            waiting[run.run_id] = (run, time.monotonic())
            submitted += 1
        time.sleep(0.005)
        for run_id, (run, since) in list(waiting.items()):
            status = run.status()
            if status in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled):
                del waiting[run_id]
                finished += 1
                failed += status is not RunStatus.succeeded
                if finished % every == 0 or finished in MILESTONES or finished == total:
                    rss, uss = measure()
                    samples.append(Sample(finished, rss, uss, time.monotonic() - started))
                    if progress:
                        print(
                            f"run {finished:5d}: rss {rss / 2**20:7.1f} MiB  "
                            f"uss {uss / 2**20:7.1f} MiB",
                            file=sys.stderr,
                            flush=True,
                        )
            elif time.monotonic() - since > RUN_LIMIT_SEC:
                raise RuntimeError(
                    f"run {run_id} did not finish in {RUN_LIMIT_SEC:.0f}s (status {status.value})"
                )
    return samples, failed, time.monotonic() - started


def configure_env(folder: Path, redis_url: str | None) -> None:
    os.environ.update(
        {
            "SPARKLE_RUNS_DIR": str(folder / "runs"),
            "SPARKLE_INBOX_DIR": str(folder / "inbox"),
            "SPARKLE_ADAPTERS": "test",
        }
    )
    if redis_url is None:
        os.environ.pop("SPARKLE_REDIS_URL", None)
    else:
        os.environ["SPARKLE_REDIS_URL"] = redis_url


def soak_redis(folder: Path, args: argparse.Namespace) -> tuple[list[Sample], int, float, str]:
    server = RedisServer(folder / "redis")
    server.start()
    configure_env(folder, server.url)
    with (folder / "worker.log").open("wb") as log_file:
        worker = subprocess.Popen(
            [str(BIN / "dramatiq"), "actors", "-p", "1", "-t", str(args.threads)],
            cwd=folder,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        from sparkle.app import App

        App.from_environment().declare_actors()
        child = worker_child(psutil.Process(worker.pid))
        samples, failed, wall = drive(
            args.runs, args.in_flight, args.every, lambda: memory_of(child), args.progress
        )
        return samples, failed, wall, f"dramatiq actors -p 1 -t {args.threads} (pid {child.pid})"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        server.stop()


def soak_embedded(folder: Path, args: argparse.Namespace) -> tuple[list[Sample], int, float, str]:
    import dramatiq

    configure_env(folder, None)
    from sparkle.app import App

    broker = App.from_environment().declare_actors()
    worker = dramatiq.Worker(broker, worker_threads=args.threads, worker_timeout=100)
    worker.start()
    try:
        me = psutil.Process()
        samples, failed, wall = drive(
            args.runs, args.in_flight, args.every, lambda: memory_of(me), args.progress
        )
    finally:
        worker.stop()
    return samples, failed, wall, f"this process, StubBroker, {args.threads} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--mode", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--every", type=int, default=10, help="Sample RSS every N runs.")
    parser.add_argument("--csv", type=Path, help="Write the RSS curve here.")
    parser.add_argument("--progress", action="store_true", help="Print each sample.")
    parser.add_argument("--keep", action="store_true", help="Keep the runs folder.")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    soak = soak_redis if args.mode == "redis" else soak_embedded
    samples, failed, wall, worker = soak(folder, args)

    if args.csv:
        with args.csv.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["run", "rss_mib", "uss_mib", "elapsed_s"])
            for s in samples:
                out.writerow(
                    [
                        s.run,
                        f"{s.rss_bytes / 2**20:.2f}",
                        f"{s.uss_bytes / 2**20:.2f}",
                        f"{s.elapsed_sec:.1f}",
                    ]
                )
    by_run = {s.run: s for s in samples}
    last = samples[-1]
    base = by_run.get(100, samples[min(len(samples) - 1, len(samples) // 10)])
    growth = (last.rss_bytes - base.rss_bytes) / base.rss_bytes
    print(
        f"## Soak: {args.runs} runs through one worker ({args.mode}, {args.in_flight} in flight)\n"
    )
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"worker: {worker}; wall {wall:.0f}s ({args.runs / wall:.1f} runs/s); "
        f"runs not succeeded: {failed}\n"
    )
    print("| run | RSS MiB | USS MiB | elapsed s |")
    print("|---:|---:|---:|---:|")
    for run in sorted({*MILESTONES, last.run} & set(by_run)):
        s = by_run[run]
        print(
            f"| {run} | {s.rss_bytes / 2**20:.1f} | {s.uss_bytes / 2**20:.1f} | "
            f"{s.elapsed_sec:.0f} |"
        )
    later = [s.rss_bytes for s in samples if s.run >= base.run]
    print(
        f"\nRSS run {base.run} → run {last.run}: {growth * 100:+.1f}% "
        f"(limit ±{MAX_GROWTH * 100:.0f}%: {'met' if abs(growth) < MAX_GROWTH else 'MISSED'}); "
        f"from run {base.run} on: min {min(later) / 2**20:.1f}, "
        f"median {statistics.median(later) / 2**20:.1f}, max {max(later) / 2**20:.1f} MiB"
    )
    if args.keep:
        print(f"\nrun folders kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Measure recovery from worker and Redis faults with the DEFAULT settings.

Starts a private redis-server (no persistence) on a free port and ``sparkle worker -p 2
-t 1`` (two supervised worker processes; the reaper runs in the supervisor) with the
``test`` adapters and otherwise default settings (lease TTL 15 s, reaper interval 10 s,
dramatiq heartbeat timeout 30 s). Then, for each scenario and trial, injects one fault and
checks the outcome:

- ``kill-videos`` / ``kill-assemble``: SIGKILL the worker process running the stage
  (``fault_<stage>=sleep:S`` keeps it busy; killed 1 s in). Recovery = kill → the stage's
  next ``begin``. Bound: lease TTL + reaper interval = 25 s.
- ``redis-restart``: restart Redis while a batch of runs is under way (every queued
  message, lease and pending mark is lost). Recovery = restart → every run succeeded.
- ``lost-message``: delete a queued run's message from Redis while no worker runs, then
  start the workers. Recovery = workers started → the stage's ``begin``.
- ``crash-loop``: a stage that kills its worker every time (``fault_videos=crash``) must
  end ``failed`` after 3 attempts, and stay so while dramatiq redelivers the dead workers'
  messages later (watched for ``--crash-watch`` seconds). Time = submit → failed.
- ``dlq-replay``: permanently failing runs fill the dead-letter queue; workers restarted
  with the fixed adapter; ``sparkle dlq replay --all`` completes them; a second replay
  does nothing. Time = replay → all succeeded.
- ``sigterm``: SIGTERM the supervisor while a stage runs: the stage must finish (one
  attempt), the supervisor exit 0, the next message wait in Redis; started again, the run
  completes. Time = SIGTERM → supervisor exited.

For every run: lost = not in its expected final state; duplicated = a stage with more than
one ``success`` event. Both must be 0. ``--baseline`` adds ``kill-videos`` with the reaper
off (dramatiq's own redelivery only; takes minutes per trial).

Usage::

    .venv/bin/python scripts/bench_recovery.py [--trials 5] [--scenarios kill-videos,...]
        [--json-out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from sparkle import keys
from sparkle.runstore import Run, RunStore
from sparkle.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PLAN = json.loads((REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text())
sys.path.insert(0, str(REPO / "tests"))

from redis_server import RedisServer  # noqa: E402
from worker_group import BIN, WorkerGroup, wait_for  # noqa: E402

#: dramatiq alone, SIGKILL → message running again (notes/dramatiq.md, default settings).
DRAMATIQ_MEASURED_SEC = (221.0, 461.0)

#: Seconds a sleeping stage takes in the kill scenarios.
STAGE_SLEEP_SEC = 4.0

SCENARIOS = ("kill-videos", "kill-assemble", "redis-restart", "lost-message", "crash-loop",
             "dlq-replay", "sigterm")


class World:
    """A redis-server, a runs folder and `sparkle worker`, all private to the benchmark."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.redis = RedisServer(folder / "redis")
        self.runs = folder / "runs"
        self.store = RunStore(self.runs)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
        self.env = {**clean, "SPARKLE_REDIS_URL": self.redis.url,
                    "SPARKLE_RUNS_DIR": str(self.runs), "SPARKLE_ADAPTERS": "test"}
        self.workers = WorkerGroup(folder, self.env, folder / "workers.log")
        self.plans = 0

    # redis
    def start_redis(self) -> None:
        self.redis.start()

    def stop_redis(self) -> None:
        self.redis.stop()

    def client(self) -> redis.Redis:
        return self.redis.client()

    # workers
    def start_workers(self, *worker_options: str) -> None:
        self.workers.start(worker_options=worker_options, wait_sec=30)

    def worker_pids(self) -> list[int]:
        return self.workers.pids()

    def stop_workers(self) -> int:
        return self.workers.stop(timeout=120)

    def close(self) -> None:
        self.workers.close()
        self.stop_redis()

    # runs
    def sparkle(self, *args: str) -> str:
        done = subprocess.run([str(BIN), *args], env=self.env, cwd=self.folder, text=True,
                              capture_output=True, timeout=120, check=True)
        return done.stdout

    def submit(self, count: int = 1, **metadata: str) -> list[Run]:
        paths = []
        for _ in range(count):
            self.plans += 1
            plan = json.loads(json.dumps(PLAN))
            plan["title"] = f"Bench {self.plans}"
            plan["metadata"].update(metadata)
            path = self.folder / f"plan-{self.plans}.json"
            path.write_text(json.dumps(plan))
            paths.append(str(path))
        out = self.sparkle("submit", *paths)
        return [self.store.run(line.split()[0]) for line in out.splitlines()]


def begin(run: Run, stage: str, attempt: int = 1) -> float | None:
    for event in run.events():
        if (event.stage, event.status, event.attempt) == (stage, "begin", attempt):
            return event.timestamp
    return None


def duplicated(run: Run) -> bool:
    counts = Counter(e.stage for e in run.events() if e.status == "success")
    return any(n > 1 for n in counts.values())


def all_status(runs: list[Run], status: str) -> bool:
    return all(r.status().value == status for r in runs)


@dataclass
class Result:
    scenario: str
    trials: int = 0
    runs: int = 0
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    times: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        median = f"{statistics.median(self.times):.1f}" if self.times else "-"
        worst = f"{max(self.times):.1f}" if self.times else "-"
        return (f"| {self.scenario} | {self.trials} | {self.runs} | {self.completed} | "
                f"{self.lost} | {self.duplicated} | {median} | {worst} |")


def account(result: Result, runs: list[Run], expected: str) -> None:
    result.runs += len(runs)
    for run in runs:
        ok = run.status().value == expected
        result.completed += ok
        result.lost += not ok
        result.duplicated += duplicated(run)


# -- scenarios ---------------------------------------------------------------------------


def desync() -> None:
    """Sleep a random part of a reaper interval, so that trials do not fall into step with
    the reaper's passes (which would make every recovery time alike)."""
    time.sleep(random.uniform(0, Settings().reaper_interval_sec))


def kill_stage(world: World, result: Result, stage: str) -> None:
    desync()
    (run,) = world.submit(**{f"fault_{stage}": f"sleep:{STAGE_SLEEP_SEC:g}"})
    wait_for(lambda: begin(run, stage), 120, f"{stage} to begin")
    time.sleep(1.0)
    checkpoint = run.checkpoint(stage)
    assert checkpoint is not None and checkpoint.status == "begin"
    pid = int(checkpoint.metadata["worker"].split(":")[1])
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    again = wait_for(lambda: begin(run, stage, 2), 1200, f"{stage} to run again")
    result.times.append(round((begin(run, stage, 2) or again) - killed, 2))
    wait_for(lambda: run.status().value == "succeeded", 120, "the run to finish")
    account(result, [run], "succeeded")
    wait_for(lambda: len(world.worker_pids()) == 2, 60, "the replacement process")


def redis_restart(world: World, result: Result) -> None:
    desync()
    runs = world.submit(10, fault_videos="sleep:1")
    wait_for(lambda: sum(1 for r in runs if begin(r, "videos")) >= 3, 120, "the batch")
    world.stop_redis()
    world.start_redis()
    restarted = time.time()
    done = wait_for(lambda: all_status(runs, "succeeded"), 300, "all 10 runs")
    result.times.append(round(done - restarted, 2))
    account(result, runs, "succeeded")
    redriven = sum(1 for r in runs if any(e.status == "redrive" for e in r.events()))
    result.notes.append(f"{redriven}/10 runs re-driven")


def lost_message(world: World, result: Result) -> None:
    world.stop_workers()
    desync()
    (run,) = world.submit()
    world.client().delete(keys.dramatiq_queue("sparkle", "script"),
                          keys.dramatiq_messages("sparkle", "script"))
    started = time.time()
    world.start_workers()
    at = wait_for(lambda: begin(run, "script"), 300, "script to be re-driven")
    result.times.append(round(at - started, 2))
    wait_for(lambda: run.status().value == "succeeded", 120, "the run to finish")
    account(result, [run], "succeeded")


def crash_loop(world: World, result: Result, watch_sec: float) -> None:
    submitted = time.time()
    (run,) = world.submit(fault_videos="crash")
    failed = wait_for(lambda: run.status().value == "failed", 600, "the crash loop to fail")
    result.times.append(round(failed - submitted, 2))
    checkpoint = run.checkpoint("videos")
    assert checkpoint is not None and (checkpoint.error or "").startswith("crash loop")
    begins = sum(1 for e in run.events() if e.stage == "videos" and e.status == "begin")
    time.sleep(watch_sec)  # dramatiq redelivers the dead workers' copies meanwhile
    after = sum(1 for e in run.events() if e.stage == "videos" and e.status == "begin")
    log = (world.folder / "workers.log").read_text()
    stale = log.count(f"run {run.run_id} stage videos: this message was sent before")
    result.notes.append(f"{begins} attempts; {after - begins} more in the next "
                        f"{watch_sec:.0f}s; {stale} late redelivered copies refused")
    account(result, [run], "failed")
    wait_for(lambda: len(world.worker_pids()) == 2, 120, "replacement processes")


def dlq_replay(world: World, result: Result) -> None:
    world.sparkle("dlq", "purge", "--older-than", "0")  # earlier scenarios' dead letters
    runs = world.submit(3, fault_videos="permanent")
    wait_for(lambda: all_status(runs, "failed"), 120, "the runs to fail")
    letters = json.loads(world.sparkle("dlq", "list", "--json"))
    assert sorted(x["run_id"] for x in letters) == sorted(r.run_id for r in runs)
    world.stop_workers()
    world.start_workers(SPARKLE_ADAPTER_VIDEOS="sparkle.adapters.testing:fixed_videos")
    replayed = time.time()
    world.sparkle("dlq", "replay", "--all")
    done = wait_for(lambda: all_status(runs, "succeeded"), 120, "the replayed runs")
    result.times.append(round(done - replayed, 2))
    time.sleep(1)  # the last manifest events follow the checkpoints the status comes from
    events = [len(r.events()) for r in runs]
    second = world.sparkle("dlq", "replay", "--all")
    time.sleep(2)
    if "nothing to replay" not in second or [len(r.events()) for r in runs] != events:
        result.notes.append("second replay was not a no-op!")
    account(result, runs, "succeeded")
    world.stop_workers()
    world.start_workers()


def sigterm(world: World, result: Result) -> None:
    (run,) = world.submit(fault_videos=f"sleep:{STAGE_SLEEP_SEC:g}")
    wait_for(lambda: begin(run, "videos"), 120, "videos to begin")
    asked = time.time()
    code = world.stop_workers()
    result.times.append(round(time.time() - asked, 2))
    ok = (code == 0 and run.checkpoint("videos") is not None
          and run.checkpoint("videos").status == "success"  # type: ignore[union-attr]
          and world.client().hlen(keys.dramatiq_messages("sparkle", "tts")) == 1)
    if not ok:
        result.notes.append("drain did not finish the stage or lost the next message!")
    world.start_workers()
    wait_for(lambda: run.status().value == "succeeded", 120, "the run to finish")
    account(result, [run], "succeeded")
    attempts = sum(1 for e in run.events() if e.stage == "videos" and e.status == "begin")
    if attempts != 1:
        result.notes.append(f"videos ran {attempts} times")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5,
                        help="trials of each kill scenario (others run fewer)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--crash-watch", type=float, default=60.0,
                        help="seconds to watch a crash-looped run for late redeliveries")
    parser.add_argument("--baseline", action="store_true",
                        help="also measure kill-videos with the reaper off (slow)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    defaults = Settings()
    print(f"defaults: lease TTL {defaults.lease_ttl_sec:g}s, reaper interval "
          f"{defaults.reaper_interval_sec:g}s, heartbeat timeout "
          f"{defaults.heartbeat_timeout_ms / 1000:g}s, crash loop limit "
          f"{defaults.crash_loop_limit}; bound for a killed worker: "
          f"{defaults.lease_ttl_sec + defaults.reaper_interval_sec:g}s", flush=True)
    results: list[Result] = []
    folder = Path(tempfile.mkdtemp(prefix="sparkle-bench-recovery-"))
    world = World(folder)
    try:
        world.start_redis()
        world.start_workers()
        plan: list[tuple[str, int, Callable[[Result], None]]] = [
            ("kill-videos", args.trials, lambda r: kill_stage(world, r, "videos")),
            ("kill-assemble", args.trials, lambda r: kill_stage(world, r, "assemble")),
            ("redis-restart", max(1, args.trials // 2), lambda r: redis_restart(world, r)),
            ("lost-message", max(1, args.trials // 2), lambda r: lost_message(world, r)),
            ("crash-loop", max(1, args.trials // 3),
             lambda r: crash_loop(world, r, args.crash_watch)),
            ("dlq-replay", 1, lambda r: dlq_replay(world, r)),
            ("sigterm", max(1, args.trials // 2), lambda r: sigterm(world, r)),
        ]
        for name, trials, scenario in plan:
            if name not in chosen:
                continue
            result = Result(name)
            for trial in range(trials):
                started = time.monotonic()
                scenario(result)
                result.trials += 1
                print(f"{name} trial {trial + 1}/{trials}: {result.times[-1]:.1f}s "
                      f"({time.monotonic() - started:.0f}s)", flush=True)
            results.append(result)
        if args.baseline:
            world.stop_workers()
            world.start_workers("--no-reaper")
            result = Result("kill-videos, reaper off (dramatiq only)")
            for _ in range(max(1, args.trials // 2)):
                kill_stage(world, result, "videos")
                result.trials += 1
                print(f"baseline: {result.times[-1]:.1f}s", flush=True)
            results.append(result)
    finally:
        world.close()
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print("| scenario | trials | runs | completed as expected | lost | duplicated | "
          "recovery median (s) | max (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())
    low, high = DRAMATIQ_MEASURED_SEC
    print(f"| dramatiq alone, SIGKILL (notes/dramatiq.md) | 2 | - | - | - | - | "
          f"{(low + high) / 2:.0f} | {high:.0f} |")
    for result in results:
        for note in result.notes:
            print(f"- {result.scenario}: {note}")
    if args.json_out:
        args.json_out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    bad = sum(r.lost + r.duplicated for r in results)
    bad += sum(1 for r in results for n in r.notes if n.endswith("!"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

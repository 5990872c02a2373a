"""Chaos run: plans dropped into a watched inbox while workers are SIGKILLed and Redis restarts.

Starts a private redis-server, ``sparkle worker`` (supervised, several processes) and
``sparkle watch`` (inbox + reaper), all with the ``test`` adapters. Drops plans into the
inbox — some with injected transient failures, some that fail permanently, some slow —
then kills a random worker process every few seconds and restarts Redis (no persistence:
every queued message, lease and pending mark is lost) once. At the end it checks:

- every plan dropped was processed exactly once (none lost, none rejected, none left);
- every run succeeded or failed as its injected faults dictate;
- no two adapter calls of one run overlapped in time (the run lease held);
- no stage recorded two successes for one attempt, and no stage succeeded twice without
  a reset between (nothing done twice).

Prints a summary and exits 1 on any violation.

    python scripts/chaos.py --plans 300 [--kill-every 3] [--timeout 900]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from redis_server import RedisServer  # noqa: E402

from sparkle.adapters.testing import read_trace  # noqa: E402
from sparkle.runstore import RunStatus, RunStore  # noqa: E402
from sparkle.schemas import STAGES  # noqa: E402

BIN = Path(sys.executable).parent
PLAN = ROOT / "tests" / "data" / "plans" / "rooftop.json"


@dataclass
class Report:
    """What the chaos run found."""

    plans: int = 0
    kills: int = 0
    redis_restarts: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[tuple[str, str]] = field(default_factory=list)

    def violate(self, kind: str, message: str) -> None:
        """Record a violation of ``kind``: lost, duplicated, concurrent or outcome."""
        self.violations.append((kind, message))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.violations if k == kind)


def make_plans(inbox_stage: Path, count: int, seed: int) -> dict[str, str]:
    """Write ``count`` plans; return file name → expected final status."""
    rng = random.Random(seed)
    base = json.loads(PLAN.read_text())
    expected = {}
    for index in range(count):
        plan = json.loads(json.dumps(base))
        plan["title"] = f"Chaos {index}"
        # the first three plans guarantee one of each fault kind, however few plans
        roll = (0.0, 0.17, 0.25)[index] if index < 3 else rng.random()
        stage = rng.choice(STAGES)
        if roll < 0.15:
            plan["metadata"][f"fault_{stage}"] = f"transient:{rng.randint(1, 2)}"
            outcome = "succeeded"
        elif roll < 0.20:
            plan["metadata"][f"fault_{stage}"] = "permanent"
            outcome = "failed"
        elif roll < 0.35:
            plan["metadata"][f"fault_{stage}"] = f"sleep:{rng.uniform(0.2, 1.0):.2f}"
            outcome = "succeeded"
        else:
            outcome = "succeeded"
        name = f"chaos-{index:04d}.json"
        (inbox_stage / name).write_text(json.dumps(plan))
        expected[name] = outcome
    return expected


def worker_processes(supervisor: psutil.Process) -> list[psutil.Process]:
    """The worker processes `sparkle worker` supervises (its direct children)."""
    try:
        return supervisor.children()
    except psutil.NoSuchProcess:
        return []


def check(store: RunStore, expected_by_title: dict[str, str], report: Report) -> None:
    """Check outcomes, overlaps and double successes of every run."""
    runs = store.runs()
    titles = {}
    for run in runs:
        title = run.plan().title
        titles[title] = run
    for title, outcome in expected_by_title.items():
        run = titles.get(title)
        if run is None:
            report.violate("lost", f"{title}: no run was created")
            continue
        status = run.status()
        report.outcomes[status.value] += 1
        if status.value != outcome:
            report.violate("outcome", f"{run.run_id}: ended {status.value}, expected {outcome}")
        trace = sorted(read_trace(run.dir), key=lambda record: record["start"])
        for earlier, later in itertools.pairwise(trace):
            if later["start"] < earlier["end"]:
                report.violate("concurrent",
                               f"{run.run_id}: {earlier['stage']} (pid {earlier['pid']}) and "
                               f"{later['stage']} (pid {later['pid']}) overlapped")
        successes: collections.Counter[tuple[str, int]] = collections.Counter()
        since_reset: collections.Counter[str] = collections.Counter()
        for event in run.events():
            if event.status == "reset":
                since_reset[event.stage] = 0
            if event.status == "success":
                successes[(event.stage, event.attempt)] += 1
                since_reset[event.stage] += 1
        for (stage, attempt), count in successes.items():
            if count > 1:
                report.violate("duplicated",
                              f"{run.run_id}: {stage} attempt {attempt} succeeded {count}x")
        for stage, count in since_reset.items():
            if count > 1:
                report.violate("duplicated",
                              f"{run.run_id}: {stage} succeeded {count}x without a reset")
    if len(runs) != len(expected_by_title):
        report.violate("duplicated" if len(runs) > len(expected_by_title) else "lost",
                       f"{len(runs)} runs for {len(expected_by_title)} plans")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3, help="supervised worker processes")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--max-kills", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait in all")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    report = Report(plans=args.plans)
    folder = Path(tempfile.mkdtemp(prefix="sparkle-chaos-"))
    server = RedisServer(folder / "redis")
    server.start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")},
        "SPARKLE_REDIS_URL": server.url,
        "SPARKLE_RUNS_DIR": str(folder / "runs"),
        "SPARKLE_INBOX_DIR": str(folder / "inbox"),
        "SPARKLE_ADAPTERS": "test",
        "SPARKLE_LEASE_TTL_SEC": "5",
        "SPARKLE_REAPER_INTERVAL_SEC": "2",
        "SPARKLE_RETRY_BASE_SEC": "0.05",
        # A chaos kill can land on the same stage of the same run more than once.
        "SPARKLE_CRASH_LOOP_LIMIT": "10",
    }
    logs = folder / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, *argv: str) -> None:
        out = (logs / f"{name}.log").open("ab")
        procs[name] = subprocess.Popen([str(BIN / "sparkle"), "--log-level", "info", *argv],
                                       env=env, cwd=folder, stdout=out, stderr=out,
                                       start_new_session=True)

    spawn("worker", "worker", "--processes", str(args.workers), "--threads", "4")
    spawn("watch", "watch")
    staging = folder / "staging"
    staging.mkdir()
    expected_files = make_plans(staging, args.plans, args.seed)
    expected_titles = {f"Chaos {int(name[6:10])}": outcome
                       for name, outcome in expected_files.items()}
    store = RunStore(folder / "runs")
    started = time.monotonic()
    try:
        time.sleep(2)
        inbox = folder / "inbox"
        for name in expected_files:  # rename in: each file appears complete
            os.replace(staging / name, inbox / name)
        supervisor = psutil.Process(procs["worker"].pid)
        restarted = False
        next_kill = time.monotonic() + args.kill_every
        while time.monotonic() - started < args.timeout:
            time.sleep(0.5)
            finished = sum(1 for run in store.runs()
                           if run.status() in (RunStatus.succeeded, RunStatus.failed))
            if finished >= args.plans:
                break
            if not restarted and finished >= args.plans // 3:
                server.restart()
                report.redis_restarts += 1
                restarted = True
            if time.monotonic() >= next_kill and report.kills < args.max_kills:
                victims = worker_processes(supervisor)
                if victims:
                    rng.choice(victims).send_signal(signal.SIGKILL)
                    report.kills += 1
                next_kill = time.monotonic() + args.kill_every
        elapsed = time.monotonic() - started
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        server.stop()
    processed = {p.name for p in (folder / "inbox" / "processed").glob("*.json")}
    rejected = list((folder / "inbox" / "rejected").glob("*"))
    left = [p.name for p in (folder / "inbox").glob("*.json")]
    claimed = [p.name for p in (folder / "inbox" / ".claimed").glob("*.json")]
    lost = set(expected_files) - processed
    if lost:
        report.violate("lost", f"{len(lost)} inbox file(s) never processed: {sorted(lost)[:5]}")
    if rejected or left or claimed:
        report.violate("lost", f"inbox not clean: rejected {len(rejected)}, left {left[:5]}, "
                       f"claimed {claimed[:5]}")
    check(store, expected_titles, report)
    print(f"chaos: {report.plans} plans, {args.workers} workers, {report.kills} SIGKILLs, "
          f"{report.redis_restarts} Redis restart(s), {elapsed:.0f}s")
    print(f"runs: {dict(report.outcomes)}; inbox processed {len(processed)}, lost {len(lost)}, "
          f"rejected {len(rejected)}")
    print(f"violations: {len(report.violations)}: lost {report.count('lost')}, duplicated "
          f"{report.count('duplicated')}, concurrent {report.count('concurrent')}, "
          f"wrong outcome {report.count('outcome')}")
    for kind, message in report.violations[:50]:
        print(f"  - {kind}: {message}")
    if args.keep or report.violations:
        print(f"folder kept: {folder}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())

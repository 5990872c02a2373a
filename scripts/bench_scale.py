#!/usr/bin/env python
"""Benchmark the runs folder at scale: ``sparkle runs``, ``sparkle status RUN``, a reaper scan.

Fills a runs folder with ``--runs`` run folders (default 10,000) in a realistic mix of
states, then times, warm page cache, median of ``--repeat``:

- the baselines: a bare ``os.scandir`` of the runs folder (names only), and the same
  scan opening and reading one small file per run (the floor of any per-run summary);
- ``sparkle runs`` in this process (the click command, output captured) and as a child
  process (what an operator waits for, interpreter start-up included);
- ``sparkle status RUN`` in this process and as a child process, for runs in each state,
  both answered from a fresh summary cache (the fast path of ``sparkle.entry``) and right
  after a change (the full CLI derives the answer and refreshes the cache);
- ``sparkle --version`` as a child process: the CLI's start-up cost alone;
- a reaper pass: ``sparkle.redrive.Reaper.run_once(dry_run=True)`` when this build has it
  (embedded: StubBroker and an in-process fakeredis for leases), and the file-system work
  of a pass (list runs, skip finished ones, find the next stage of the rest and its
  checkpoint and crash-loop count) done over ``runs()`` and over ``summaries()``.

Each time is printed with its ratio to the bare scandir measured in the same run, so the
figures compare across machines. Folders are built once through the real ``RunStore``
API per state (templates), then copied byte for byte with the run id replaced.

Usage::

    .venv/bin/python scripts/bench_scale.py [--runs 10000] [--repeat 5] [--dir PATH] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from sparkle.plans import validate_plan  # noqa: E402
from sparkle.runlayout import checkpoint_file  # noqa: E402
from sparkle.runstore import (  # noqa: E402
    CHECKPOINTS_DIR,
    MANIFEST_FILE,
    SUMMARY_FILE,
    Run,
    RunStatus,
    RunStore,
)
from sparkle.schemas import STAGES, Checkpoint  # noqa: E402

EXAMPLE = json.loads((REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text())

#: The ``sparkle`` command of this virtualenv.
SPARKLE = str(Path(sys.executable).with_name("sparkle"))

#: Share of each state among the generated runs (the rest are succeeded).
MIX: dict[str, float] = {"failed": 0.08, "running": 0.10, "queued": 0.05, "cancelled": 0.02}

#: Targets from issue 7, in seconds.
TARGET_RUNS_SEC = 1.0
TARGET_STATUS_SEC = 0.1


# -- building the folder -------------------------------------------------------------------


def _checkpoint(stage: str, status: str, when: float, **fields: object) -> Checkpoint:
    return Checkpoint.model_validate(
        {"stage": stage, "status": status, "timestamp": when, "attempt": 1, **fields}
    )


def _success(run: Run, stage: str, when: float) -> None:
    meta = {"adapter": f"test:test_{stage}", "worker": "bench:1:Worker-1"}
    run.write_checkpoint(_checkpoint(stage, "begin", when, metadata=meta))
    run.append_event(stage, "begin", 1, metadata=meta)
    done = {
        "adapter": f"test:test_{stage}",
        "duration_sec": 0.012,
        "attempt": 1,
        "seed": 42,
        **({"decision": "approve", "issues_found": 0} if stage == "qa" else {}),
    }
    run.write_checkpoint(_checkpoint(stage, "success", when + 0.1, metadata=done))
    run.append_event(stage, "success", 1, metadata={"duration_sec": 0.012})


def build_template(store: RunStore, state: str, stop_at: int) -> Run:
    """A run folder in ``state`` made through the RunStore API; ``stop_at`` is the index
    of the stage that failed, is running or was cancelled."""
    doc = json.loads(json.dumps(EXAMPLE))
    doc["metadata"]["run_id"] = f"template-{state}-{stop_at}"
    run, _ = store.create(validate_plan(doc, "example"))
    when = 1_790_000_000.0
    if state == "queued":
        return run
    done = len(STAGES) if state == "succeeded" else stop_at
    for stage in STAGES[:done]:
        _success(run, stage, when)
    if state in ("failed", "running", "cancelled"):
        stage = STAGES[stop_at]
        run.write_checkpoint(_checkpoint(stage, "begin", when, metadata={"adapter": "test"}))
        run.append_event(stage, "begin", 1)
    if state == "failed":
        stage = STAGES[stop_at]
        error = "PermanentStageError: injected fault"
        run.append_event(stage, "fail", 1, error=error)
        run.write_checkpoint(_checkpoint(stage, "failed", when, error=error))
    if state == "cancelled":
        run.append_event(STAGES[stop_at], "cancel", 1)
        run.set_cancelled(True)
    return run


def _files_of(folder: Path) -> list[tuple[str, bytes]]:
    return [
        (str(path.relative_to(folder)), path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def populate(root: Path, count: int, seed: int = 7) -> dict[str, str]:
    """Fill ``root`` with ``count`` run folders; returns run id → intended state."""
    rng = random.Random(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="templates-", dir=root.parent))
    store = RunStore(scratch)
    templates: dict[tuple[str, int], tuple[str, list[tuple[str, bytes]]]] = {}
    for state in ("succeeded", "queued"):
        run = build_template(store, state, 0)
        templates[(state, 0)] = (run.run_id, _files_of(run.dir))
    for state in ("failed", "running", "cancelled"):
        for index in range(len(STAGES)):
            run = build_template(store, state, index)
            templates[(state, index)] = (run.run_id, _files_of(run.dir))
    shutil.rmtree(scratch)

    root.mkdir(parents=True, exist_ok=True)
    states: dict[str, str] = {}
    for number in range(count):
        roll, state = rng.random(), "succeeded"
        for name, share in MIX.items():
            if roll < share:
                state = name
                break
            roll -= share
        index = 0 if state in ("succeeded", "queued") else rng.randrange(len(STAGES))
        template_id, files = templates[(state, index)]
        run_id = f"movie-{number:05d}-{rng.getrandbits(40):010x}"
        folder = root / run_id
        (folder / CHECKPOINTS_DIR).mkdir(parents=True)
        for name, data in files:
            if name == MANIFEST_FILE:
                data = data.replace(template_id.encode(), run_id.encode())
            (folder / name).write_bytes(data)
        states[run_id] = state
    return states


# -- measuring -----------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` in seconds, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def bare_scandir(root: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root))


def scandir_read_one(root: Path, name: str) -> int:
    total = 0
    for entry in os.scandir(root):
        try:
            with open(os.path.join(entry.path, name), "rb") as handle:
                total += len(handle.read())
        except FileNotFoundError:
            pass
    return total


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([SPARKLE, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sparkle {' '.join(args)} failed: {result.stderr}")
    return result


def in_process(*args: str) -> str:
    from click.testing import CliRunner

    from sparkle.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"sparkle {' '.join(args)} exited {result.exit_code}: {result.output}")
    return result.output


#: ``sparkle runs`` on RunStore.summaries() (the change proposed for sparkle/cli/runs.py), run in
#: a child process that imports the CLI first so its start-up cost is the same.
SUMMARIES_LISTING = """
import sys
import click
import sparkle.cli
from pathlib import Path
from sparkle.runstore import RunStore
only = sys.argv[2] if len(sys.argv) > 2 else None
for summary in RunStore(Path(sys.argv[1])).summaries():
    state = summary.status.value
    if only and state != only:
        continue
    decision = summary.qa_decision
    qa = ("needs_review" if decision == "escalate" else decision) if decision else "-"
    click.echo(f"{summary.run_id:<56} {state:<10} {qa:<13} {summary.next_stage or 'done'}")
"""


def listing_by_summaries(root: Path) -> list[str]:
    return [
        f"{s.run_id} {s.status.value} {s.qa_decision} {s.next_stage}"
        for s in RunStore(root).summaries()
    ]


def clear_summaries(root: Path) -> None:
    for entry in os.scandir(root):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(entry.path, SUMMARY_FILE))


def touch_runs(root: Path, states: dict[str, str], count: int) -> int:
    """Rewrite one checkpoint of ``count`` runs (same content, new file) through the API."""
    touched = 0
    for run_id in list(states)[:: max(1, len(states) // count)][:count]:
        run = Run(root, run_id)
        for stage in STAGES:
            checkpoint = run.checkpoint(stage)
            if checkpoint is not None:
                run.write_checkpoint(checkpoint, durable=False)
                touched += 1
                break
    return touched


def reaper_scan(store: RunStore, summaries: bool) -> int:
    """The file-system side of one reaper pass (see the module docstring)."""
    suspects = 0
    if summaries:
        active = [
            Run(store.root, s.run_id)
            for s in store.summaries()
            if s.status in (RunStatus.queued, RunStatus.running)
        ]
    else:
        active = [r for r in store.runs() if r.status() in (RunStatus.queued, RunStatus.running)]
    for run in active:
        state = run.state()
        stage = state.next_stage()
        if stage is None:
            continue
        checkpoint = state.checkpoint(stage)
        if checkpoint is not None and checkpoint.status == "begin":
            state.crashed_begins(stage)
        suspects += 1
    return suspects


class ActiveRunStore(RunStore):
    """A RunStore whose runs() skips finished runs using summaries(): what a reaper built
    on the summary cache would walk."""

    def runs(self) -> list[Run]:
        active = (RunStatus.queued, RunStatus.running)
        return [Run(self.root, s.run_id) for s in self.summaries() if s.status in active]


def real_reaper(root: Path, store: RunStore) -> Callable[[], object] | None:
    """One dry-run pass of the project's reaper over ``root``, if this build has one."""
    try:
        from sparkle.redrive import Reaper
    except ImportError:
        return None
    from sparkle.backends.embedded import EmbeddedBackend
    from sparkle.dispatch import Dispatcher
    from sparkle.settings import Settings

    settings = Settings(runs_dir=root)
    reaper = Reaper(store, Dispatcher(EmbeddedBackend(), settings.namespace), settings)
    return lambda: reaper.run_once(dry_run=True)


@dataclass
class Row:
    name: str
    seconds: float
    target: float | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="Build the folder here (default: a temp dir).")
    parser.add_argument("--keep", action="store_true", help="Keep the folder afterwards.")
    args = parser.parse_args()

    base = args.dir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    root = base / "runs"
    started = time.perf_counter()
    states = populate(root, args.runs)
    built = time.perf_counter() - started
    os.environ["SPARKLE_RUNS_DIR"] = str(root)
    store = RunStore(root)

    rows: list[Row] = []
    scandir = timed(lambda: bare_scandir(root), args.repeat)
    rows.append(Row("baseline: bare os.scandir of the runs folder", scandir))
    rows.append(
        Row(
            "baseline: scandir + read one file per run",
            timed(lambda: scandir_read_one(root, checkpoint_file("qa")), args.repeat),
        )
    )
    output = in_process("runs", "--runs-dir", str(root))
    rows.append(
        Row(
            "`sparkle runs`, in process",
            timed(lambda: in_process("runs", "--runs-dir", str(root)), args.repeat),
            TARGET_RUNS_SEC,
        )
    )
    rows.append(
        Row(
            "`sparkle runs`, child process",
            timed(lambda: cli("runs", "--runs-dir", str(root)), args.repeat),
            TARGET_RUNS_SEC,
        )
    )
    rows.append(
        Row(
            "`sparkle runs --status failed`, child process",
            timed(lambda: cli("runs", "--status", "failed", "--runs-dir", str(root)), args.repeat),
            TARGET_RUNS_SEC,
        )
    )
    clear_summaries(root)
    started = time.perf_counter()
    listing_by_summaries(root)
    rows.append(
        Row("RunStore.summaries(), first call (every cache written)", time.perf_counter() - started)
    )
    rows.append(
        Row(
            "RunStore.summaries(), in process",
            timed(lambda: listing_by_summaries(root), args.repeat),
        )
    )
    touched = touch_runs(root, states, args.runs // 10)
    started = time.perf_counter()
    listing_by_summaries(root)
    rows.append(
        Row(f"RunStore.summaries() after {touched} runs changed", time.perf_counter() - started)
    )
    child = [sys.executable, "-c", SUMMARIES_LISTING, str(root)]
    rows.append(
        Row(
            "`sparkle runs` on summaries(), child process",
            timed(lambda: subprocess.run(child, check=True, capture_output=True), args.repeat),
            TARGET_RUNS_SEC,
        )
    )
    rows.append(
        Row(
            "`sparkle runs --status failed` on summaries(), child process",
            timed(
                lambda: subprocess.run([*child, "failed"], check=True, capture_output=True),
                args.repeat,
            ),
            TARGET_RUNS_SEC,
        )
    )
    rows.append(
        Row(
            "`sparkle --version`, child process (start-up only)",
            timed(lambda: cli("--version"), args.repeat),
        )
    )
    by_state: dict[str, str] = {}
    for run_id, state in states.items():
        by_state.setdefault(state, run_id)
    for state, run_id in sorted(by_state.items()):
        rows.append(
            Row(
                f"`sparkle status` ({state}), in process",
                timed(partial(in_process, "status", run_id, "--runs-dir", str(root)), args.repeat),
                TARGET_STATUS_SEC,
            )
        )
    some = by_state["succeeded"]
    rows.append(
        Row(
            "`sparkle status` (succeeded), child process, summary cache fresh (fast path)",
            timed(lambda: cli("status", some, "--runs-dir", str(root)), args.repeat),
            TARGET_STATUS_SEC,
        )
    )
    qa_checkpoint = root / some / CHECKPOINTS_DIR / "qa.json"

    def status_after_a_change() -> None:
        os.utime(qa_checkpoint)  # a new mtime: the cache is stale, the full CLI derives
        cli("status", some, "--runs-dir", str(root))

    rows.append(
        Row(
            "`sparkle status` (succeeded), child process, first call after a change",
            timed(status_after_a_change, args.repeat),
            TARGET_STATUS_SEC,
        )
    )
    pass_once = real_reaper(root, RunStore(root))
    if pass_once is not None:
        rows.append(Row("Reaper.run_once(dry_run=True), embedded", timed(pass_once, args.repeat)))
        on_summaries = real_reaper(root, ActiveRunStore(root))
        assert on_summaries is not None
        rows.append(
            Row(
                "Reaper.run_once(dry_run=True), runs() from summaries()",
                timed(on_summaries, args.repeat),
            )
        )
    rows.append(
        Row(
            "reaper scan, plain (runs() + status()), in process",
            timed(lambda: reaper_scan(store, summaries=False), args.repeat),
        )
    )
    rows.append(
        Row(
            "reaper scan on summaries(), in process",
            timed(lambda: reaper_scan(store, summaries=True), args.repeat),
        )
    )

    # The listing must agree with the states the folders were built in.
    listed = Counter(line.split()[1] for line in output.splitlines())
    expected = Counter(states.values())
    status = "ok" if listed == expected else f"MISMATCH listed {listed} expected {expected}"

    print(f"## Runs folder at scale ({args.runs} runs, median of {args.repeat}, warm cache)\n")
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"folder built in {built:.1f}s; states {dict(sorted(expected.items()))}; "
        f"listing check: {status}\n"
    )
    print("| measurement | median | x bare scandir | target |")
    print("|---|---:|---:|---|")
    for row in rows:
        target = (
            ""
            if row.target is None
            else (
                f"< {row.target * 1000:.0f} ms: {'met' if row.seconds < row.target else 'MISSED'}"
            )
        )
        print(
            f"| {row.name} | {row.seconds * 1000:.1f} ms | {row.seconds / scandir:.1f} | {target} |"
        )
    if args.keep:
        print(f"\nfolder kept: {root}")
    else:
        shutil.rmtree(root)
        if args.dir is None:
            shutil.rmtree(base)


if __name__ == "__main__":
    main()

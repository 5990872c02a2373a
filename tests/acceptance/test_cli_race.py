"""One executor per run in embedded mode, between real processes (issue 17, section 1).

Two `sparkle run` of one plan, two `sparkle serve` on one runs folder, a second `serve`
started mid-run: every stage of every run is worked once (one ``success`` event, one
adapter call), and every run ends intact. Embedded mode throughout (no SPARKLE_REDIS_URL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkle.schemas import STAGES

BIN = Path(sys.executable).parent / "sparkle"


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.Popen([str(BIN), *args], cwd=cwd, env={**clean, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    return finish(proc, 60)


def events(run_dir: Path, status: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for event in json.loads((run_dir / "manifest.json").read_text())["events"]:
        if event["status"] == status:
            counts[event["stage"]] += 1
    return counts


def adapter_calls(run_dir: Path) -> Counter[str]:
    from sparkle.adapters.testing import read_trace

    return Counter(record["stage"] for record in read_trace(run_dir))


def began(run_dir: Path, stage: str) -> bool:
    return (run_dir / "manifest.json").exists() and events(run_dir, "begin")[stage] > 0


def plan_with(plans_dir: Path, tmp_path: Path, name: str = "plan.json", **metadata: str) -> Path:
    plan = json.loads((plans_dir / "lighthouse.json").read_text())
    plan["metadata"].update(metadata)
    path = tmp_path / name
    path.write_text(json.dumps(plan))
    return path


def the_run(runs: Path) -> Path:
    [run_dir] = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


def assert_worked_once(run_dir: Path) -> None:
    assert events(run_dir, "success") == Counter(dict.fromkeys(STAGES, 1)), run_dir.name
    qa = json.loads((run_dir / "checkpoints" / "qa.json").read_text())
    assert qa["status"] == "success"


def test_two_runs_of_one_plan_at_once_work_it_once(tmp_path, plans_dir):
    """The issue's race: two `sparkle run` of the same plan started together. Both exit 0,
    each stage's success is recorded once, and the run is intact."""
    # Given two `sparkle run` of one plan started at once
    args = ["run", str(plans_dir / "lighthouse.json"), "--adapters", "test",
            "--runs-dir", "runs"]
    procs = [start(args, tmp_path), start(args, tmp_path)]
    # When both end
    outputs = [finish(proc) for proc in procs]
    # Then both succeeded and every stage was worked once
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    run_dir = the_run(tmp_path / "runs")
    assert_worked_once(run_dir)
    assert adapter_calls(run_dir) == Counter(dict.fromkeys(STAGES, 1))


def test_second_run_names_the_working_process_and_follows_it(tmp_path, plans_dir):
    """A second `sparkle run` on a run another process works says which process, follows
    its progress to the end, and exits as that run ended, working nothing itself."""
    # Given a `sparkle run` in its (slow) tts stage
    # (4 s: time enough for the second process to start on a loaded machine)
    plan = plan_with(plans_dir, tmp_path, fault_tts="sleep:4")
    args = ["run", str(plan), "--adapters", "test", "--runs-dir", "runs"]
    first = start(args, tmp_path)
    assert wait_for(lambda: (tmp_path / "runs").is_dir()
                    and any(began(p, "tts") for p in (tmp_path / "runs").iterdir()), 60)
    # When a second one is started on the same plan
    second = start(args, tmp_path)
    out_second, out_first = finish(second), finish(first)
    # Then it named the first process, showed the stages finishing, and succeeded too
    assert (first.returncode, second.returncode) == (0, 0), out_first + out_second
    assert f"is being worked by another process: pid {first.pid}" in out_second
    assert "sparkle run" in out_second and "qa       success" in out_second
    assert "succeeded in" in out_second
    assert_worked_once(the_run(tmp_path / "runs"))


def test_second_run_takes_over_at_once_when_the_first_dies(tmp_path, plans_dir):
    """The kernel frees a dead holder's lock: the follower works the run from where it
    stands, without waiting for any lease to expire."""
    # Given a `sparkle run` whose process will die in tts (after a slow images stage),
    # and a second one following it
    plan = plan_with(plans_dir, tmp_path, fault_images="sleep:5", fault_tts="crash:1")
    args = ["run", str(plan), "--adapters", "test", "--runs-dir", "runs"]
    first = start(args, tmp_path)
    assert wait_for(lambda: (tmp_path / "runs").is_dir()
                    and any(began(p, "images") for p in (tmp_path / "runs").iterdir()), 60)
    second = start(args, tmp_path)
    assert second.stdout is not None
    seen = ""
    while "being worked by another process" not in seen and second.poll() is None:
        seen += second.stdout.readline()
    # When the first process dies in tts
    finish(first)
    out = seen + finish(second)
    # Then the second took the run over and finished it: every stage succeeded once
    assert first.returncode == 137
    assert second.returncode == 0, out
    assert f"pid {first.pid}" in out and "working it here from where it stands" in out
    assert events(the_run(tmp_path / "runs"), "success") == Counter(dict.fromkeys(STAGES, 1))


@pytest.mark.slow
def test_two_runs_of_one_plan_at_once_with_the_media_set(tmp_path, plans_dir):
    """The race with real media: in the issue one trial in four lost tts' audio from
    asset_refs.json to the other process's videos refs, and lipsync failed."""
    args = ["run", str(plans_dir / "lighthouse.json"), "--runs-dir", "runs"]
    procs = [start(args, tmp_path), start(args, tmp_path)]
    outputs = [finish(proc, 300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    run_dir = the_run(tmp_path / "runs")
    assert_worked_once(run_dir)
    assert (run_dir / "final" / "movie.mp4").stat().st_size > 10_000


#: Serve settings that make a reaper quick to call a stage dead: without a lock between
#: processes, each serve's reaper re-drives the other's running stages within a second.
QUICK_REAPER = {"SPARKLE_LEASE_TTL_SEC": "0.5", "SPARKLE_REAPER_INTERVAL_SEC": "0.2",
                "SPARKLE_STABLE_SECONDS": "0.1"}


def drop_slow_plans(tmp_path: Path, plans_dir: Path, count: int, seconds: float = 2) -> None:
    for index in range(count):
        plan = json.loads((plans_dir / "lighthouse.json").read_text())
        plan["title"] = f"Lighthouse {index}"
        plan["metadata"]["fault_images"] = f"sleep:{seconds}"
        (tmp_path / "inbox" / f"p{index}.json").write_text(json.dumps(plan))


def all_succeeded(runs: Path, count: int) -> bool:
    done = [p for p in runs.glob("*/checkpoints/qa.json")
            if json.loads(p.read_text())["status"] == "success"]
    return len(done) == count


def test_two_serves_on_one_runs_folder_work_each_run_once(tmp_path, plans_dir):
    """Two `sparkle serve` on one inbox and runs folder, with slow stages and eager
    reapers: no run is worked twice (each adapter called once per stage)."""
    # Given two serves on one folder
    serves = [start(["serve", "--adapters", "test"], tmp_path, **QUICK_REAPER)
              for _ in range(2)]
    try:
        assert wait_for(lambda: (tmp_path / "inbox" / "processed").is_dir(), 30)
        # When three plans with a 2 s images stage are dropped
        drop_slow_plans(tmp_path, plans_dir, 3)
        assert wait_for(lambda: all_succeeded(tmp_path / "runs", 3), 90)
    finally:
        outputs = [stop(serve) for serve in serves]
    # Then each run's stages were worked once
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 3
    for run_dir in runs:
        assert adapter_calls(run_dir) == Counter(dict.fromkeys(STAGES, 1)), outputs
        assert_worked_once(run_dir)
    assert not any("worker_died" in out for out in outputs), outputs


def test_second_serve_started_mid_run_does_not_work_the_runs_again(tmp_path, plans_dir):
    """A `serve` started while another works runs leaves those runs to it."""
    # Given a serve in the middle of two runs' slow images stage
    first = start(["serve", "--adapters", "test"], tmp_path, **QUICK_REAPER)
    second = None
    try:
        assert wait_for(lambda: (tmp_path / "inbox" / "processed").is_dir(), 30)
        # (5 s: time enough for the second serve to start on a loaded machine)
        drop_slow_plans(tmp_path, plans_dir, 2, seconds=5)
        assert wait_for(lambda: (tmp_path / "runs").is_dir() and sum(
            began(p, "images") for p in (tmp_path / "runs").iterdir()) == 2, 60)
        # When a second serve starts on the same folder
        second = start(["serve", "--adapters", "test"], tmp_path, **QUICK_REAPER)
        assert wait_for(lambda: all_succeeded(tmp_path / "runs", 2), 90)
    finally:
        out_first = stop(first)
        out_second = stop(second) if second is not None else ""
    # Then it re-queued neither run, and each stage was worked once
    assert "re-queued" not in out_second, out_second
    assert "left 2 unfinished run(s) to the other process(es)" in out_second, out_second
    for run_dir in (p for p in (tmp_path / "runs").iterdir()
                    if p.is_dir() and not p.name.startswith(".")):
        assert adapter_calls(run_dir) == Counter(dict.fromkeys(STAGES, 1)), out_first
        assert_worked_once(run_dir)

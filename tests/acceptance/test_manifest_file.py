"""``runs/<run_id>/manifest.json`` is the seed contract's RunManifest while a run runs, and
after its worker is killed: always valid JSON that validates against schemas/."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from schema_check import committed, schema_errors

BIN = Path(sys.executable).parent / "sparkle"

#: How long the polling tests wait for a run at most (a safety net, not a measurement).
PATIENCE_SEC = 60


def start(*args: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.Popen([str(BIN), *args], cwd=cwd, env={**clean, **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def plan_with(tmp_path: Path, plans_dir: Path, **metadata: str) -> Path:
    plan = json.loads((plans_dir / "rooftop.json").read_text())
    plan["metadata"].update(metadata)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def read_manifest(path: Path) -> dict[str, Any] | None:
    """manifest.json parsed and checked against the committed schema; None before it exists."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    document: dict[str, Any] = json.loads(data)  # (raises on a torn or partial file)
    errors = schema_errors(document, committed("RunManifest"))
    assert errors == [], errors
    return document


def test_manifest_json_is_a_valid_run_manifest_after_every_stage_while_the_run_runs(
        tmp_path, plans_dir):
    """Polled while `sparkle run` works through the seven stages, manifest.json is a valid
    RunManifest at every read, and shows each stage's success as it happens."""
    # Given a plan whose every stage takes a moment (so the polling sees each one)
    plan = plan_with(tmp_path, plans_dir, **{f"fault_{stage}": "sleep:0.2" for stage in (
        "script", "images", "videos", "tts", "lipsync", "assemble", "qa")})
    # When it runs, with manifest.json read over and over meanwhile
    proc = start("run", str(plan), "--adapters", "test", cwd=tmp_path)
    successes_seen: set[int] = set()
    reads = 0
    deadline = time.monotonic() + PATIENCE_SEC
    while proc.poll() is None and time.monotonic() < deadline:
        for path in (tmp_path / "runs").glob("*/manifest.json"):
            document = read_manifest(path)
            if document is not None:
                reads += 1
                successes_seen.add(sum(e["status"] == "success" for e in document["events"]))
        time.sleep(0.01)
    _, err = proc.communicate(timeout=PATIENCE_SEC)
    # Then the run succeeded, every read was valid, and it was seen after each stage
    assert proc.returncode == 0, err
    (path,) = (tmp_path / "runs").glob("*/manifest.json")
    final = read_manifest(path)
    assert final is not None and final["run_id"] == path.parent.name
    assert sum(e["status"] == "success" for e in final["events"]) == 7
    assert reads > 7 and set(range(1, 7)) <= successes_seen


def test_manifest_json_is_valid_after_the_worker_is_killed_mid_stage_and_resume_reads_it(
        tmp_path, plans_dir):
    """SIGKILL while videos runs: manifest.json is still a valid RunManifest ending in the
    videos begin, and `sparkle resume` reads it, skips the done stages and finishes."""
    # Given a run stuck in its videos stage
    plan = plan_with(tmp_path, plans_dir, fault_videos="sleep:60")
    proc = start("run", str(plan), "--adapters", "test", cwd=tmp_path)
    deadline = time.monotonic() + PATIENCE_SEC
    document = None
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs").glob("*/manifest.json"))
        document = read_manifest(found[0]) if found else None
        if document and any(e["stage"] == "videos" for e in document["events"]):
            break
        time.sleep(0.02)
    # When its process is killed
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # Then manifest.json is intact and valid, its last event the videos begin
    (path,) = (tmp_path / "runs").glob("*/manifest.json")
    document = read_manifest(path)
    assert document is not None
    assert (document["events"][-1]["stage"], document["events"][-1]["status"]) == (
        "videos", "begin")
    # And resume (videos fixed) finishes it without running the done stages again
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    resumed = subprocess.run(
        [str(BIN), "resume", path.parent.name, "--adapters", "test"], cwd=tmp_path,
        env={**clean, "SPARKLE_ADAPTER_VIDEOS": "sparkle.adapters.testing:fixed_videos"},
        capture_output=True, text=True, timeout=PATIENCE_SEC)
    assert resumed.returncode == 0, resumed.stderr
    trace = [json.loads(line)["stage"]
             for line in (path.parent / "trace.jsonl").read_text().splitlines()]
    assert trace.count("script") == 1 and trace.count("images") == 1
    final = read_manifest(path)
    assert final is not None
    assert sum(e["status"] == "success" for e in final["events"]) == 7


def test_a_run_written_with_manifest_jsonl_resumes_and_keeps_its_history(tmp_path, plans_dir):
    """A run folder as earlier versions left it (history in manifest.jsonl, no
    manifest.json), failed at videos: `sparkle resume` reads that history (done stages are
    not run again) and finishes, its whole history now in a valid manifest.json."""
    # Given a run failed at videos, its history turned into the earlier layout
    plan = plan_with(tmp_path, plans_dir, fault_videos="permanent")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    failed = subprocess.run([str(BIN), "run", str(plan), "--adapters", "test"], cwd=tmp_path,
                            env=clean, capture_output=True, text=True, timeout=PATIENCE_SEC)
    assert failed.returncode == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    earlier = json.loads((run_dir / "manifest.json").read_bytes())["events"]
    (run_dir / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in earlier))
    (run_dir / "manifest.json").unlink()
    # When it is resumed with videos fixed
    resumed = subprocess.run(
        [str(BIN), "resume", run_dir.name, "--adapters", "test"], cwd=tmp_path,
        env={**clean, "SPARKLE_ADAPTER_VIDEOS": "sparkle.adapters.testing:fixed_videos"},
        capture_output=True, text=True, timeout=PATIENCE_SEC)
    # Then it finished without running script or images again, the history kept whole
    assert resumed.returncode == 0, resumed.stderr
    trace = [json.loads(line)["stage"]
             for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    assert trace.count("script") == 1 and trace.count("images") == 1
    assert not (run_dir / "manifest.jsonl").exists()
    final = read_manifest(run_dir / "manifest.json")
    assert final is not None and final["events"][:len(earlier)] == earlier
    assert sum(e["status"] == "success" for e in final["events"]) == 7

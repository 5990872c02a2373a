"""The operator commands as a user types them (embedded mode: no Redis configured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "sparkle"


def sparkle(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.run([str(BIN), *args], cwd=tmp_path, text=True, capture_output=True,
                          env={**clean, "SPARKLE_ADAPTERS": "test", **env}, timeout=120)


def test_cancel_then_timeline_then_resume(tmp_path, plans_dir):
    """A queued run is cancelled (status and history say so), cancelling again says it
    already is, the timeline shows the cancel, and `sparkle resume` finishes the run."""
    from sparkle.plans import load_plan_file
    from sparkle.runstore import RunStore

    run, _ = RunStore(tmp_path / "runs").create(load_plan_file(plans_dir / "rooftop.json",
                                                               1 << 20))
    done = sparkle(tmp_path, "cancel", run.run_id)
    assert done.returncode == 0, done.stderr
    assert f"cancelled {run.run_id}" in done.stdout and "sparkle resume" in done.stdout
    assert run.status().value == "cancelled"
    assert "already cancelled" in sparkle(tmp_path, "cancel", run.run_id).stdout
    timeline = json.loads(sparkle(tmp_path, "timeline", run.run_id, "--json").stdout)
    assert timeline["status"] == "cancelled"
    assert [(e["stage"], e["status"]) for e in timeline["events"]] == [("script", "cancel")]
    assert sparkle(tmp_path, "resume", run.run_id).returncode == 0
    assert run.status().value == "succeeded"
    text = sparkle(tmp_path, "timeline", run.run_id).stdout
    assert text.splitlines()[0].startswith(f"{run.run_id}  succeeded")
    assert "qa" in text.splitlines()[-1]
    assert "already succeeded" in sparkle(tmp_path, "cancel", run.run_id).stdout


def test_unknown_run_is_a_usage_error(tmp_path):
    for command in ("cancel", "timeline"):
        done = sparkle(tmp_path, command, "no-such-run")
        assert done.returncode == 2 and "no run 'no-such-run'" in done.stderr


def test_redis_only_commands_say_why_in_embedded_mode(tmp_path):
    dlq = sparkle(tmp_path, "dlq", "list")
    assert dlq.returncode == 2 and "no persistent dead-letter queue" in dlq.stderr
    redrive = sparkle(tmp_path, "redrive", "--dry-run")
    assert redrive.returncode == 2 and "embedded mode" in redrive.stderr
    worker = sparkle(tmp_path, "worker")
    assert worker.returncode == 2 and "needs SPARKLE_REDIS_URL" in worker.stderr


def test_worker_refuses_an_unknown_queue(tmp_path):
    done = sparkle(tmp_path, "worker", "-Q", "sparkle.vidoes",
                   SPARKLE_REDIS_URL="redis://127.0.0.1:1/0")
    assert done.returncode == 2 and "unknown queue(s) sparkle.vidoes" in done.stderr


def test_replay_needs_to_be_told_what(tmp_path):
    done = sparkle(tmp_path, "dlq", "replay")
    assert done.returncode == 2 and "--all" in done.stderr


def test_bad_duration_is_refused(tmp_path):
    done = sparkle(tmp_path, "dlq", "purge", "--older-than", "soon")
    assert done.returncode == 2 and "not a duration" in done.stderr

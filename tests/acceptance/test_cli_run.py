"""`sparkle run` and `sparkle resume` through the real console script, embedded mode."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "sparkle"


def sparkle(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.run([str(BIN), *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_run_succeeds_with_seven_checkpoints(tmp_path, plans_dir):
    """A plan runs to its end: exit 0, the movie is printed, seven success checkpoints."""
    done = sparkle("run", str(plans_dir / "lighthouse.json"), "--adapters", "test", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "movie: runs/the-lighthouse-keeper-98a32d5a21/final/movie.gif" in done.stdout
    checkpoints = sorted((tmp_path / "runs").glob("*/checkpoints/*.json"))
    assert len(checkpoints) == 7
    assert all(json.loads(p.read_text())["status"] == "success" for p in checkpoints)


def test_failed_stage_exits_1_and_the_printed_resume_finishes_the_run(tmp_path, plans_dir):
    """A permanent failure: exit 1, the error and the exact resume command are printed;
    after fixing the adapter, that command finishes the run without redoing early stages.
    (The README's walk-through, with its plan.)"""
    plan = plans_dir / "fails-at-videos.json"
    failed = sparkle("run", str(plan), "--adapters", "test", cwd=tmp_path)
    assert failed.returncode == 1
    assert "stage videos failed (attempt 1): PermanentStageError" in failed.stderr
    resume_line = next(line for line in failed.stderr.splitlines() if "resume with:" in line)
    command = shlex.split(resume_line.split("resume with: ", 1)[1])
    # (the command names the run's adapter set: without it the media set would finish it)
    assert command[:2] == ["sparkle", "resume"] and command[-2:] == ["--adapters", "test"]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"`{shlex.join(command)}`" in readme  # the README shows this very command
    # When the adapter is fixed and the printed command run, exactly as printed
    resumed = sparkle(*command[1:], cwd=tmp_path,
                      SPARKLE_ADAPTER_VIDEOS="sparkle.adapters.testing:fixed_videos")
    assert resumed.returncode == 0, resumed.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    lines = (run_dir / "trace.jsonl").read_text().splitlines()
    trace = [json.loads(line)["stage"] for line in lines]
    assert trace.count("script") == 1 and trace.count("images") == 1
    assert trace.count("videos") == 2 and trace.count("qa") == 1
    status = json.loads(sparkle("status", run_dir.name, "--json", cwd=tmp_path).stdout)
    assert status["status"] == "succeeded"


def test_invalid_plan_exits_2_naming_the_field(tmp_path, plans_dir):
    """An invalid plan is refused before any run is created."""
    plan = json.loads((plans_dir / "lighthouse.json").read_text())
    plan["shots"][0]["duration_sec"] = 0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(plan))
    result = sparkle("run", str(path), "--adapters", "test", cwd=tmp_path)
    assert result.returncode == 2
    assert "shots[0].duration_sec" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_adapter_set_is_a_clear_error(tmp_path, plans_dir):
    """A typo in --adapters names the set and lists the real ones."""
    result = sparkle("run", str(plans_dir / "rooftop.json"), "--adapters", "nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown adapter set 'nope'" in result.stderr and "media" in result.stderr


def test_submit_without_redis_hands_the_plan_to_the_inbox(tmp_path, plans_dir):
    """Without SPARKLE_REDIS_URL, submit copies the plan into the inbox and says so."""
    result = sparkle("submit", str(plans_dir / "rooftop.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "inbox" / "rooftop.json").read_bytes() == (
        plans_dir / "rooftop.json").read_bytes()
    assert "sparkle serve" in result.stdout


def test_submit_to_a_redis_that_does_not_answer_says_so_and_how_to_queue_later(
        tmp_path, plans_dir):
    """SPARKLE_REDIS_URL names a server that is down: exit 1 with one line naming Redis
    and one naming the run that was created but not queued, and how to queue it; no
    traceback."""
    from redis_server import free_port

    url = f"redis://127.0.0.1:{free_port()}"
    result = sparkle("submit", str(plans_dir / "rooftop.json"), cwd=tmp_path,
                     SPARKLE_REDIS_URL=url)
    assert result.returncode == 3  # (infrastructure unreachable)
    assert "Traceback" not in result.stderr
    run_id = next((tmp_path / "runs").iterdir()).name
    assert f"{run_id} created, NOT queued: `sparkle resume {run_id}`" in result.stderr
    assert "error: Redis: " in result.stderr and "server up?" in result.stderr


def test_a_bad_setting_is_named_by_its_environment_variable(tmp_path):
    """A setting that fails validation is reported as the variable the user set, with
    the value given, in one line, whichever command read it first: not as a pydantic
    field with a link to its docs, a traceback (`worker`) or nothing at all (`status`)."""
    for command in (["runs"], ["status", "some-run"], ["worker"]):
        result = sparkle(*command, cwd=tmp_path, SPARKLE_LEASE_TTL_SEC="abc")
        assert result.returncode == 2, command
        assert result.stderr.startswith(
            "error: invalid setting: SPARKLE_LEASE_TTL_SEC: must be a number (got 'abc')")
        assert "pydantic.dev" not in result.stderr and len(result.stderr.splitlines()) == 1
    # (a JSON setting that does not parse fails earlier, in pydantic-settings)
    result = sparkle("runs", cwd=tmp_path, SPARKLE_STAGE_TIME_LIMITS="{bad")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: invalid setting: SPARKLE_STAGE_TIME_LIMITS: not valid JSON (")
    assert len(result.stderr.splitlines()) == 1

"""The terminal as a person meets it: Ctrl-C during `sparkle run`, what `sparkle serve`
says, replayed progress, one error per failure, and what `runs` and `status` show. Real
console script, real signals, embedded mode with the test adapters."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent / "sparkle"

#: How long a test waits for something the CLI is about to do (a failure bound, not a
#: measurement).
WAIT_SEC = 60


def _env(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return {**clean, **env}


def sparkle(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=120)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN), *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SEC
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def checkpoint(run_dir: Path, stage: str) -> str | None:
    try:
        return str(json.loads((run_dir / "checkpoints" / f"{stage}.json").read_text())["status"])
    except (OSError, ValueError):
        return None


def slow_plan(tmp_path: Path, plans_dir: Path, sleep_sec: int) -> Path:
    """The rooftop plan whose tts stage sleeps ``sleep_sec`` before working."""
    plan = json.loads((plans_dir / "rooftop.json").read_text())
    plan["metadata"]["fault_tts"] = f"sleep:{sleep_sec}"
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(plan))
    return path


def only_run(tmp_path: Path) -> Path:
    [run_dir] = (tmp_path / "runs").iterdir()
    return run_dir


def test_ctrl_c_during_run_finishes_the_stage_and_prints_the_resume_command(tmp_path,
                                                                            plans_dir):
    # Given `sparkle run` in the middle of its tts stage
    proc = start("run", str(slow_plan(tmp_path, plans_dir, 3)), "--adapters", "test",
                 cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "runs").is_dir() and any(
            checkpoint(d, "tts") == "begin" for d in (tmp_path / "runs").iterdir()))
        # When the user presses Ctrl-C once
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=WAIT_SEC)
    finally:
        proc.kill()
    # Then tts finishes, nothing after it starts, and the run is cancelled, not running
    assert proc.returncode == 1, output
    assert "Aborted!" not in output and "Traceback" not in output
    run_dir = only_run(tmp_path)
    assert checkpoint(run_dir, "tts") == "success"
    assert checkpoint(run_dir, "lipsync") is None
    status = json.loads(sparkle("status", run_dir.name, "--json", cwd=tmp_path).stdout)
    assert status["status"] == "cancelled"
    # and the printed command resumes it to the end
    assert f"stopped by Ctrl-C: run {run_dir.name} is cancelled" in output
    command = shlex.split(output.split("Resume with `", 1)[1].split("`", 1)[0])
    assert command[:3] == ["sparkle", "resume", run_dir.name]
    resumed = sparkle(*command[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint(run_dir, "qa") == "success"


def test_a_second_ctrl_c_stops_at_once_and_leaves_the_run_resumable(tmp_path, plans_dir):
    # Given `sparkle run` in a stage that takes two minutes, already told to stop once
    proc = start("run", str(slow_plan(tmp_path, plans_dir, 120)), "--adapters", "test",
                 cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "runs").is_dir() and any(
            checkpoint(d, "tts") == "begin" for d in (tmp_path / "runs").iterdir()))
        proc.send_signal(signal.SIGINT)
        run_dir = only_run(tmp_path)
        wait_for(lambda: (run_dir / "cancelled").exists())
        # When the user presses Ctrl-C again
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=WAIT_SEC)
    finally:
        proc.kill()
    # Then it stops without waiting for the stage, says what was left, and the run is
    # cancelled (not running), which resume continues from that stage
    assert proc.returncode == 1, output
    assert "tts was left unfinished and runs again on resume" in output
    assert f"sparkle resume {run_dir.name} --adapters test" in output
    listed = sparkle("runs", cwd=tmp_path).stdout.splitlines()
    assert listed[1].split()[:2] == [run_dir.name, "cancelled"]
    assert listed[1].split()[3] == "tts"


def test_a_rerun_marks_replayed_progress_and_a_failure_prints_its_error_once(tmp_path,
                                                                            plans_dir):
    # Given a run that finished
    plan = str(plans_dir / "rooftop.json")
    assert sparkle("run", plan, "--adapters", "test", cwd=tmp_path).returncode == 0
    # When it is run again
    again = sparkle("run", plan, "--adapters", "test", cwd=tmp_path)
    # Then each stage's progress line says it was already done
    progress = [line for line in again.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 7 and all(line.endswith("(already done)") for line in progress)
    # And when a stage fails for good, its error is printed once
    failed = sparkle("run", str(plans_dir / "fails-at-videos.json"), "--adapters", "test",
                     cwd=tmp_path)
    assert failed.returncode == 1
    output = failed.stdout + failed.stderr
    assert output.count("injected permanent fault in videos") == 1, output
    assert "resume with: sparkle resume" in output


def test_runs_and_status_show_age_duration_and_the_movie(tmp_path, plans_dir):
    # Given a finished run and a failed one
    sparkle("run", str(plans_dir / "rooftop.json"), "--adapters", "test", cwd=tmp_path)
    sparkle("run", str(plans_dir / "fails-at-videos.json"), "--adapters", "test", cwd=tmp_path)
    done = next(d.name for d in (tmp_path / "runs").iterdir()
                if "fails" not in d.name and not d.name.startswith("."))
    movie = f"runs/{done}/final/movie.gif"
    # When I list the runs
    listed = sparkle("runs", cwd=tmp_path).stdout.splitlines()
    # Then a header names the columns, and the finished run shows its age, time and movie
    assert listed[0].split() == ["RUN", "STATUS", "QA", "NEXT", "AGE", "DURATION", "MOVIE"]
    row = next(line.split() for line in listed[1:] if line.startswith(done))
    assert row[1:4] == ["succeeded", "approve", "done"]
    assert row[4].endswith("s") and row[5].endswith("s") and row[6] == movie
    assert (tmp_path / movie).is_file()
    failed = next(line.split() for line in listed[1:] if "fails" in line)
    assert failed[1] == "failed" and failed[3] == "videos" and failed[6] == "-"
    # And status shows the total time and the movie
    shown = sparkle("status", done, cwd=tmp_path).stdout.splitlines()
    assert shown[-2].split()[0] == "total" and shown[-2].split()[1].endswith("s")
    assert shown[-1] == f"movie: {movie}"


def test_serve_says_what_it_picks_up_and_how_each_run_ends(tmp_path, plans_dir):
    # Given `sparkle serve` at the default log level
    serve = start("serve", "--adapters", "test", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "inbox" / "processed").is_dir())
        # When a plan that renders and one that fails are dropped into the inbox
        shutil.copy(plans_dir / "rooftop.json", tmp_path / "inbox" / "good.json")
        shutil.copy(plans_dir / "fails-at-videos.json", tmp_path / "inbox" / "bad.json")
        wait_for(lambda: len(list((tmp_path / "inbox" / "processed").iterdir())) == 2
                 and len(list((tmp_path / "runs").glob("*/checkpoints/*.json"))) == 7 + 3)
        time.sleep(1)  # (two looks of the announcer: its lines are out)
    finally:
        serve.send_signal(signal.SIGINT)
        output, _ = serve.communicate(timeout=WAIT_SEC)
    assert serve.returncode == 0, output
    runs = {d.name for d in (tmp_path / "runs").iterdir() if not d.name.startswith(".")}
    good = next(r for r in runs if "fails" not in r)
    bad = next(r for r in runs if "fails" in r)
    # Then it said where it watches, not as a warning
    first = output.splitlines()[0]
    assert first.startswith("serve: watching inbox") and "WARNING" not in first
    # a line per plan picked up (file -> run id)
    assert f"picked up good.json -> run {good}" in output
    assert f"picked up bad.json -> run {bad}" in output
    # a line per run that ended: the movie, or the error and the resume command
    assert f"run {good} succeeded: movie runs/{good}/final/movie.gif" in output
    assert (f"run {bad} failed at videos: PermanentStageError: injected permanent fault in "
            f"videos; fix the cause, then `sparkle resume {bad} --adapters test`") in output
    # and its counts in words when it stopped, no Python repr
    assert "serve: stopped; 2 plan(s) taken (2 new run(s), 0 existing), 0 rejected" in output
    assert "InboxStats(" not in output

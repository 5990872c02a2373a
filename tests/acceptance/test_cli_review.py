"""Review gates through the real console script, embedded: `sparkle run` stops at the gate
(exit 5) and says what to look at and how to decide; `redo`, `takes`, `approve`, `reject`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "sparkle"


def sparkle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.run([str(BIN), *args], cwd=cwd, env=clean, capture_output=True,
                          text=True, timeout=120)


def gated_plan(tmp_path: Path, plans_dir: Path) -> Path:
    plan = json.loads((plans_dir / "lighthouse.json").read_text())
    plan["metadata"]["review_after"] = ["images"]
    path = tmp_path / "gated.json"
    path.write_text(json.dumps(plan))
    return path


def printed(output: str, label: str) -> list[str]:
    """The command printed after ``label:``, without its optional [...] parts."""
    line = next(line for line in output.splitlines() if line.strip().startswith(label + ":"))
    return shlex.split(line.split(":", 1)[1].split("[", 1)[0])


def test_run_stops_at_the_gate_and_the_printed_commands_finish_it(tmp_path, plans_dir):
    """exit 5 with the keyframes listed; the printed redo re-rolls s2 (exit 5 again, two
    takes of s2); an unknown shot is refused (exit 1); the printed approve finishes the
    movie (exit 0); a second approve is refused; the timeline tells the story."""
    # When a gated plan is run
    stopped = sparkle("run", str(gated_plan(tmp_path, plans_dir)), "--adapters", "test",
                      cwd=tmp_path)
    # Then it stops at the gate with exit 5, listing the keyframes to look at
    assert stopped.returncode == 5, stopped.stderr
    assert "waiting for review after images" in stopped.stdout
    frames = [line.strip() for line in stopped.stdout.splitlines()
              if line.strip().endswith(".png")]
    assert len(frames) == 6 and all((tmp_path / frame).is_file() for frame in frames)
    run_id = next((tmp_path / "runs").iterdir()).name
    # When the printed re-roll command is run for s2
    redo = printed(stopped.stdout, "re-roll")
    redo[redo.index("--shots") + 1] = "s2"
    rerolled = sparkle(*redo[1:], "--note", "too dark", cwd=tmp_path)
    # Then s2 is drawn again and the run waits at the gate again, with two takes of s2
    assert rerolled.returncode == 5, rerolled.stderr
    assert f"{run_id}: redo by" in rerolled.stdout and "shots s2" in rerolled.stdout
    takes = json.loads(sparkle("takes", run_id, "--shot", "s2", "--json", cwd=tmp_path).stdout)
    assert [t["take"] for t in takes["s2"]["images"]] == [1, 2]
    # And a shot the plan does not have is refused, naming the shots it has
    unknown = sparkle("redo", run_id, "--shots", "s9", "--adapters", "test", cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no shot s9 in its plan; its shots are s1, s2, s3" in unknown.stderr
    # When the printed approve command is run
    approved = sparkle(*printed(rerolled.stdout, "approve")[1:], "--note", "good", cwd=tmp_path)
    # Then the movie is finished, and approving again is refused
    assert approved.returncode == 0, approved.stderr
    assert "movie: runs/" in approved.stdout
    again = sparkle("approve", run_id, cwd=tmp_path)
    assert again.returncode == 1
    assert "is not waiting for a review (status succeeded)" in again.stderr
    timeline = json.loads(sparkle("timeline", run_id, "--json", cwd=tmp_path).stdout)
    story = [e["status"] for e in timeline["events"] if e["status"] not in ("begin", "success")]
    assert story == ["review_requested", "redo", "reset", "review_requested", "approved"]


def test_reject_ends_the_run_and_run_says_so(tmp_path, plans_dir):
    """reject needs a note; afterwards the run is `rejected` and `sparkle run` of the same
    plan does not continue it (exit 1)."""
    plan = gated_plan(tmp_path, plans_dir)
    assert sparkle("run", str(plan), "--adapters", "test", cwd=tmp_path).returncode == 5
    run_id = next((tmp_path / "runs").iterdir()).name
    assert sparkle("reject", run_id, cwd=tmp_path).returncode == 2  # --note is required
    rejected = sparkle("reject", run_id, "--note", "wrong story", "--as", "carol", cwd=tmp_path)
    assert rejected.returncode == 0, rejected.stderr
    status = json.loads(sparkle("status", run_id, "--json", cwd=tmp_path).stdout)
    assert status["status"] == "rejected" and status["review"]["decided_by"] == "carol"
    rerun = sparkle("run", str(plan), "--adapters", "test", cwd=tmp_path)
    assert rerun.returncode == 1 and "was rejected at review" in rerun.stderr

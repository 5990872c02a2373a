"""Two `sparkle run` of one plan at once, on one runs folder, again and again (issue 17).

Each trial starts two real `sparkle run` processes (embedded mode) on the same plan and a
fresh runs folder, waits for both, then counts from the run folder:

- duplicated successes: stages whose ``success`` event the manifest holds more than once
  (the same plan is the same run: one process must work it, the other follow it);
- broken runs: the run did not end ``succeeded``, or a process exited non-zero, or a
  stage's refs are missing from ``asset_refs.json`` (a shot with dialogue and no audio,
  a shot without its final clip, no final movie);
- followed: trials where one process said another was working the run (the expected way).

Usage::

    .venv/bin/python scripts/race_runs.py --trials 20 --adapters test
    .venv/bin/python scripts/race_runs.py --trials 4 --adapters media

Exits 1 when any trial duplicated a success or broke the run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sparkle.runlayout import ASSET_REFS_FILE, MANIFEST_FILE, PLAN_FILE, checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "sparkle"

#: Seconds one trial may take before it counts as broken (a hang).
TRIAL_TIMEOUT_SEC = 300


@dataclass
class Trial:
    """What one race left behind."""

    #: Stages whose success the manifest records more than once.
    duplicated: list[str]
    #: Why the run is not intact (empty: it is).
    problems: list[str]
    #: Processes that said the other one was working the run.
    followed: int
    #: What each process printed.
    outputs: list[str]


def trial(plan: Path, adapters: str, workdir: Path) -> Trial:
    """One race; returns what it found."""
    runs = workdir / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    command = [str(BIN), "run", str(plan), "--adapters", adapters, "--runs-dir", str(runs)]
    procs = [subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs, codes = [], []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=TRIAL_TIMEOUT_SEC)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        outputs.append(out)
        codes.append(proc.returncode)
    [run_dir] = [p for p in runs.iterdir() if p.is_dir()]
    successes: collections.Counter[str] = collections.Counter()
    for event in json.loads((run_dir / MANIFEST_FILE).read_text())["events"]:
        if event.get("status") == "success":
            successes[event["stage"]] += 1
    problems = [f"exit {code}" for code in codes if code != 0]
    qa = json.loads((run_dir / checkpoint_file("qa")).read_text()) \
        if (run_dir / checkpoint_file("qa")).exists() else {}
    if qa.get("status") != "success":
        problems.append("qa not succeeded")
    problems += _missing_refs(run_dir)
    return Trial(
        duplicated=sorted(stage for stage, n in successes.items() if n > 1),
        problems=problems,
        followed=sum("being worked by another process" in out for out in outputs),
        outputs=outputs,
    )


def _missing_refs(run_dir: Path) -> list[str]:
    plan = json.loads((run_dir / PLAN_FILE).read_text())
    refs = json.loads((run_dir / ASSET_REFS_FILE).read_text())
    missing = []
    for shot in plan["shots"]:
        got = refs["shots"].get(shot["id"], {})
        if shot.get("dialogue") and len(got.get("dialogue_audio", [])) < len(shot["dialogue"]):
            missing.append(f"shot {shot['id']}: dialogue audio missing from asset_refs.json")
        if not got.get("final_video_clip"):
            missing.append(f"shot {shot['id']}: final clip missing from asset_refs.json")
    if "final_movie" not in refs.get("extras", {}):
        missing.append("final movie missing from asset_refs.json")
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--adapters", default="test")
    parser.add_argument("--plan", type=Path,
                        default=ROOT / "tests" / "data" / "plans" / "lighthouse.json")
    args = parser.parse_args()
    duplicated = broken = followed = 0
    started = time.monotonic()
    for number in range(1, args.trials + 1):
        with tempfile.TemporaryDirectory(prefix="race-") as tmp:
            found = trial(args.plan.resolve(), args.adapters, Path(tmp))
        duplicated += bool(found.duplicated)
        broken += bool(found.problems)
        followed += found.followed
        verdict = ("ok" if not found.duplicated and not found.problems
                   else f"duplicated {found.duplicated} problems {found.problems}")
        print(f"trial {number:3d}: {verdict}", flush=True)
        if found.problems:
            for out in found.outputs:
                print("    | " + out.strip().replace("\n", "\n    | "))
    print(f"{args.trials} trials ({args.adapters} adapters, {args.plan.name}) in "
          f"{time.monotonic() - started:.0f} s: {duplicated} with a duplicated success, "
          f"{broken} broken runs, {followed} times a process followed the other")
    return 1 if duplicated or broken else 0


if __name__ == "__main__":
    sys.exit(main())

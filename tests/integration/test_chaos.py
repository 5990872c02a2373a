"""The chaos run, small: scripts/chaos.py with 30 plans while workers are SIGKILLed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.redis
@pytest.mark.slow
def test_small_chaos_run_loses_nothing_and_does_nothing_twice():
    """60 plans through 3 supervised workers and the watcher, a worker SIGKILLed every
    2 s (8 times at most, then the system is left to recover) and Redis restarted once:
    every plan processed once, every run ends as its faults dictate, no two stages of a
    run overlap, no stage succeeds twice. (Enough plans that several kills land mid-run
    however fast the machine works them. Unbounded kills never let a slow machine finish:
    each death in a row doubles the supervisor's restart delay, up to 30 s, and then every
    fresh worker process was killed within 2 s of starting, in 1 run of 5 here.)"""
    # chaos.py's own timeout (plus up to 2 minutes of stopping what it started) ends it
    # before this call's or pytest's (300 s) would: killed from outside, it cannot stop
    # the worker, watcher and redis-server it started, which then keep polling (found
    # alive 50 minutes after such a run)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--plans", "60",
         "--kill-every", "2", "--max-kills", "8", "--timeout", "150"],
        capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "violations: 0:" in result.stdout
    assert "1 Redis restart(s)" in result.stdout
    kills = int(result.stdout.split(" SIGKILLs")[0].rsplit(" ", 1)[1])
    assert kills >= 2, result.stdout
    failed = int(re.search(r"'failed': (\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert failed >= 1, result.stdout  # the plans with a permanent fault (as dictated)

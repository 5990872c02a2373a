"""The chaos run, small: scripts/chaos.py with 30 plans while workers are SIGKILLed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.redis
@pytest.mark.slow
def test_small_chaos_run_loses_nothing_and_does_nothing_twice():
    """30 plans through 3 supervised workers and the watcher, a worker SIGKILLed every
    2 s and Redis restarted once: every plan processed once, every run ends as its faults
    dictate, no two stages of a run overlap, no stage succeeds twice."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--plans", "30",
         "--kill-every", "2", "--timeout", "240"],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "violations: 0:" in result.stdout
    assert "1 Redis restart(s)" in result.stdout
    kills = int(result.stdout.split(" SIGKILLs")[0].rsplit(" ", 1)[1])
    assert kills >= 2, result.stdout
    assert "'failed': 1" in result.stdout  # the plan with a permanent fault

"""`--priority` on `sparkle submit` and `sparkle run`, through the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "sparkle"


def sparkle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.run([str(BIN), *args], cwd=cwd, env=clean, capture_output=True,
                          text=True, timeout=120)


def test_embedded_submit_hands_the_inbox_a_plan_with_the_priority(tmp_path, plans_dir):
    # Given no Redis: `submit` copies plans into the inbox
    # When
    done = sparkle("submit", "--priority", "high", str(plans_dir / "lighthouse.json"),
                   cwd=tmp_path)
    # Then: the copy says the priority; the original is untouched
    assert done.returncode == 0, done.stderr
    copy = json.loads((tmp_path / "inbox" / "lighthouse.json").read_text())
    assert copy["metadata"]["priority"] == "high"
    assert "priority" not in json.loads((plans_dir / "lighthouse.json").read_text())["metadata"]


def test_an_unknown_priority_is_refused_with_the_choices(tmp_path, plans_dir):
    # When
    done = sparkle("submit", "--priority", "urgent", str(plans_dir / "lighthouse.json"),
                   cwd=tmp_path)
    # Then
    assert done.returncode == 2
    assert "'urgent' is not one of 'high', 'normal', 'low'" in done.stderr


def test_run_with_a_priority_records_it_beside_the_plan(tmp_path, plans_dir):
    # When
    done = sparkle("run", "--priority", "low", "--adapters", "test",
                   str(plans_dir / "lighthouse.json"), cwd=tmp_path)
    # Then: the run succeeded, its level is recorded, its plan (and id) unchanged
    assert done.returncode == 0, done.stderr
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert (run_dir / "priority.txt").read_text().strip() == "low"
    assert "priority" not in json.loads((run_dir / "movie_plan.json").read_text())["metadata"]

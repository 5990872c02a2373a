"""``sparkle prune`` as a user types it (embedded mode: no Redis configured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "sparkle"


def sparkle(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.run([str(BIN), *args], cwd=tmp_path, text=True, capture_output=True,
                          env={**clean, "SPARKLE_ADAPTERS": "test"}, timeout=120)


def test_prune_dry_run_then_prune(tmp_path, plans_dir):
    """A dry run lists the old cancelled run and removes nothing; the prune removes it and
    says how much it freed; the run cancelled today stays."""
    # Given a run cancelled 40 days ago and one cancelled now
    from sparkle.plans import load_plan_file
    from sparkle.runstore import RunStore

    store = RunStore(tmp_path / "runs")
    plan = load_plan_file(plans_dir / "rooftop.json", 1 << 20)
    old, _ = store.create(plan, "old-run")
    new, _ = store.create(plan, "new-run")
    for run in (old, new):
        run.set_cancelled(True)
    long_ago = time.time() - 40 * 86400
    for path in old.dir.rglob("*"):
        os.utime(path, (long_ago, long_ago))
    # When I ask for a dry run
    dry = sparkle(tmp_path, "prune", "--dry-run", "--json")
    # Then it names the old run only, and removes nothing
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert [p["run_id"] for p in report["pruned"]] == ["old-run"]
    assert report["dry_run"] and report["freed_bytes"] > 0 and old.exists()
    # When I prune for real
    done = sparkle(tmp_path, "prune", "--older-than", "30d")
    # Then the old run is gone and the new one stays
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout and "freed" in done.stdout and "in 1 run(s)" in done.stdout
    assert not old.dir.exists() and new.exists()


def test_prune_refuses_unfinished_statuses(tmp_path):
    done = sparkle(tmp_path, "prune", "--status", "running")
    assert done.returncode == 2
    assert "cannot prune runs in status running" in done.stderr

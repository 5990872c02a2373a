"""A run waiting for review on a real Redis, with real `sparkle worker` processes: it waits
through a restart of the workers, nobody re-drives it, and `sparkle approve` queues it on."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter

import pytest
from worker_group import BIN, WorkerGroup, wait_for

from sparkle.adapters.testing import read_trace
from sparkle.runstore import RunStore
from sparkle.schemas import STAGES

pytestmark = pytest.mark.redis

#: Lease TTL and reaper interval used here, in seconds.
LEASE_TTL = 2.0
REAPER_INTERVAL = 0.5


def test_waiting_run_survives_a_worker_restart_and_is_never_redriven(redis_server, tmp_path,
                                                                       plans_dir):
    """Gated after images: the run waits; the workers are stopped and started again; the
    reapers (in the workers, and a one-shot `sparkle redrive --older-than 0`) leave it
    alone; `sparkle redo --shots s2` has the workers draw s2 alone; `sparkle approve`
    queues videos and the run completes."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    env = {**clean, "SPARKLE_REDIS_URL": redis_server.url,
           "SPARKLE_RUNS_DIR": str(tmp_path / "runs"), "SPARKLE_ADAPTERS": "test",
           "SPARKLE_LEASE_TTL_SEC": str(LEASE_TTL),
           "SPARKLE_REAPER_INTERVAL_SEC": str(REAPER_INTERVAL)}

    def sparkle(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(BIN), *args], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    plan = json.loads((plans_dir / "lighthouse.json").read_text())
    plan["metadata"]["review_after"] = ["images"]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    workers = WorkerGroup(tmp_path, env, tmp_path / "workers.log")
    store = RunStore(tmp_path / "runs")
    try:
        # Given a gated run submitted to workers, stopped at its gate
        workers.start(processes=2, threads=1)
        run_id = sparkle("submit", str(tmp_path / "plan.json")).stdout.split()[0]
        run = store.run(run_id)
        wait_for(lambda: run.status().value == "awaiting_review", 30, "the review gate")
        # When the workers are restarted while it waits, and time passes (several lease
        # TTLs and reaper passes), and an operator re-drives stuck runs by hand
        assert workers.stop() == 0
        workers.start(processes=2, threads=1)
        time.sleep(2 * LEASE_TTL + 4 * REAPER_INTERVAL)
        redriven = json.loads(sparkle("redrive", "--older-than", "0", "--json").stdout)
        # Then nothing touched it: still waiting, nothing after images began, no re-drive
        assert redriven == []
        assert run.status().value == "awaiting_review"
        statuses = [(e.stage, e.status) for e in run.events()]
        assert ("videos", "begin") not in statuses
        assert not any(status == "redrive" for _, status in statuses)
        listed = json.loads(sparkle("runs", "--json").stdout)
        assert listed["status"] == "awaiting_review" and listed["review_after"] == "images"
        # When a person re-rolls s2, the workers draw s2 alone and the run waits again
        assert f"{run_id}: queued images" in sparkle("redo", run_id, "--shots", "s2").stdout
        wait_for(lambda: run.status().value == "awaiting_review" and sum(
            1 for r in read_trace(run.dir) if r["stage"] == "images") == 2, 30, "the re-roll")
        assert [r["shots"] for r in read_trace(run.dir) if r["stage"] == "images"] == [
            ["s1", "s2", "s3"], ["s2"]]
        # When a person approves it
        out = sparkle("approve", run_id, "--note", "keyframes fine").stdout
        # Then videos is queued for the workers and the run completes, every stage once
        assert f"{run_id}: queued videos" in out
        wait_for(lambda: run.status().value == "succeeded", 60, "the run to finish")
    finally:
        workers.close()
    assert Counter(r["stage"] for r in read_trace(run.dir)) == Counter(STAGES) + Counter(
        ["images"])
    approved = [e for e in run.events() if e.status == "approved"]
    assert [e.metadata["note"] for e in approved] == ["keyframes fine"]

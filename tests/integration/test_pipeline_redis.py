"""The stage chain through dramatiq's RedisBroker: on fakeredis, and on a real redis-server
with separate worker processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkle import keys
from sparkle.adapters.testing import read_trace
from sparkle.runstore import RunStore
from sparkle.schemas import STAGES

BIN = Path(sys.executable).parent


def test_chain_succeeds_on_redis_broker(fake_redis_pipeline, plans_dir):
    """The same seven-stage chain works through RedisBroker's Lua scripts."""
    pipeline = fake_redis_pipeline
    run = pipeline.create(plans_dir / "lighthouse.json")
    assert pipeline.work(run).status.value == "succeeded"
    assert all(run.checkpoint(s).status == "success" for s in STAGES)
    # and nothing is left queued or pending in Redis
    client = pipeline.engine.client
    assert client.get(keys.pending("sparkle", run.run_id)) is None
    assert client.get(keys.lease("sparkle", run.run_id)) is None
    for stage in STAGES:
        assert client.llen(keys.dramatiq_queue("sparkle", stage)) == 0


def test_permanent_failure_is_dead_lettered_in_redis(fake_redis_pipeline, plans_dir):
    """A permanently failed stage's message lands in its queue's dead-letter set (.XQ)."""
    pipeline = fake_redis_pipeline
    run = pipeline.create(plans_dir / "rooftop.json", fault_videos="permanent")
    assert pipeline.work(run).status.value == "failed"
    client = pipeline.engine.client
    dead = client.zrange(keys.dead_letters("sparkle", "videos"), 0, -1)
    assert len(dead) == 1
    body = json.loads(client.hget(keys.dead_letter_messages("sparkle", "videos"), dead[0]))
    assert body["args"] == [run.run_id]


def _plan(plans_dir: Path, folder: Path, index: int) -> Path:
    plan = json.loads((plans_dir / "lighthouse.json").read_text())
    plan["title"] = f"Lighthouse {index}"
    path = folder / f"plan-{index:02d}.json"
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.redis
def test_two_worker_processes_never_overlap_stages_of_one_run(redis_server, tmp_path, plans_dir):
    """20 runs worked by two `dramatiq actors` processes on a real Redis all succeed, and
    no two stages of one run ever executed at the same time (the run lease)."""
    env = {
        **os.environ,
        "SPARKLE_REDIS_URL": redis_server.url,
        "SPARKLE_RUNS_DIR": str(tmp_path / "runs"),
        "SPARKLE_ADAPTERS": "test",
    }
    workers = [
        subprocess.Popen([str(BIN / "dramatiq"), "actors", "-p", "1", "-t", "4"], env=env,
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        for _ in range(2)
    ]
    try:
        plans = [_plan(plans_dir, tmp_path, i) for i in range(20)]
        submitted = subprocess.run([str(BIN / "sparkle"), "submit", *map(str, plans)],
                                   env=env, cwd=tmp_path, capture_output=True, text=True,
                                   timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.count("created, queued script") == 20
        store = RunStore(tmp_path / "runs")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            statuses = [run.status().value for run in store.runs()]
            if statuses.count("succeeded") == 20 or "failed" in statuses:
                break
            time.sleep(0.25)
        assert [run.status().value for run in store.runs()] == ["succeeded"] * 20
    finally:
        for proc in workers:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in workers:
            proc.wait(30)
    pids = set()
    for run in store.runs():
        trace = sorted(read_trace(run.dir), key=lambda r: r["start"])
        assert [r["stage"] for r in trace] == list(STAGES)
        for earlier, later in itertools.pairwise(trace):
            assert earlier["end"] <= later["start"], (run.run_id, earlier, later)
        pids.update(r["pid"] for r in trace)
    # both worker processes took part, so the no-overlap check meant something
    assert len(pids) >= 2

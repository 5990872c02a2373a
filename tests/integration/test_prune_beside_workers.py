"""`sparkle prune` beside live workers on a real Redis: two prunes take succeeded runs as
soon as they finish, while workers are still running the others; each run is removed once,
only after it succeeded and its worker let go of it, and nothing is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
import redis
from worker_group import BIN, WorkerGroup

from sparkle.retention import TRASH_PREFIX, prune
from sparkle.retention_policy import RetentionPolicy
from sparkle.runstore import RunStore

pytestmark = pytest.mark.redis


def test_two_prunes_beside_workers_take_each_finished_run_once(redis_server, tmp_path,
                                                               plans_dir):
    # Given two worker processes working eight runs
    runs_dir = tmp_path / "runs"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    env = {**clean, "SPARKLE_REDIS_URL": redis_server.url, "SPARKLE_RUNS_DIR": str(runs_dir),
           "SPARKLE_ADAPTERS": "test"}
    workers = WorkerGroup(tmp_path, env, tmp_path / "workers.log")
    workers.start(processes=2, threads=2, wait_sec=60)
    try:
        plan = json.loads((plans_dir / "rooftop.json").read_text())
        paths = []
        for n in range(8):
            plan["title"] = f"Prune beside workers {n}"
            plan["metadata"]["fault_videos"] = f"sleep:{0.1 * n:.1f}"
            path = tmp_path / f"plan-{n}.json"
            path.write_text(json.dumps(plan))
            paths.append(str(path))
        out = subprocess.run([str(BIN), "submit", *paths], env=env, cwd=tmp_path, text=True,
                             capture_output=True, timeout=120, check=True).stdout
        expected = {line.split()[0] for line in out.splitlines()}
        # When two prunes run over and over meanwhile, taking every succeeded run at once
        store = RunStore(runs_dir)
        client = redis.Redis.from_url(redis_server.url)
        policy = RetentionPolicy(older_than_sec=0, statuses=frozenset({"succeeded"}))
        pruned: list[tuple[str, str]] = []
        deadline = time.monotonic() + 120

        def pruner() -> None:
            while len(pruned) < len(expected) and time.monotonic() < deadline:
                report = prune(store, policy, client=client)
                pruned.extend((p.run_id, p.status) for p in report.pruned)
                time.sleep(0.02)

        threads = [threading.Thread(target=pruner) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        workers.stop(timeout=60)
    # Then every run was pruned exactly once, after it succeeded
    assert sorted(run_id for run_id, _ in pruned) == sorted(expected)
    assert {status for _, status in pruned} == {"succeeded"}
    # And no run folder, trash or empty folder is left, and no worker met a pruned run
    # half-way (no traceback in the workers' log)
    assert [p.name for p in runs_dir.iterdir() if not p.name.startswith(".")] == []
    assert not [p for p in runs_dir.iterdir() if p.name.startswith(TRASH_PREFIX)]
    assert "Traceback" not in (tmp_path / "workers.log").read_text()

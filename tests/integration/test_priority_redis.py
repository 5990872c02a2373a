"""Run priorities on a real redis-server (issue 22, item 3): a high-priority run overtakes a
backlog of normal runs already queued (and already fetched by the worker), the reaper sees
messages waiting on every level, and a dead letter of a high run is replayed onto the high
queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkle import keys, lease
from sparkle.adapters.testing import read_trace
from sparkle.dlq import DeadLetterQueue
from sparkle.runner import is_at_rest
from sparkle.workqueue import PriorityWorkQueue, build_worker

pytestmark = [pytest.mark.redis]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


@pytest.fixture
def redis_pipeline(redis_server, tmp_path, monkeypatch):
    import redis
    from conftest import _teardown_pipeline, make_pipeline

    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    client = redis.Redis.from_url(redis_server.url)
    broker = build_redis_broker(Settings(redis_url=redis_server.url), client=client)
    yield make_pipeline(tmp_path, monkeypatch, broker=broker, client=client,
                        SPARKLE_REDIS_URL=redis_server.url)
    _teardown_pipeline()


def _plan(plans_dir: Path, folder: Path, title: str, **metadata: str) -> Path:
    plan = json.loads((plans_dir / "lighthouse.json").read_text())
    plan["title"] = title
    plan.setdefault("metadata", {}).update(metadata)
    path = folder / f"{title}.json"
    path.write_text(json.dumps(plan))
    return path


def test_a_high_run_overtakes_normal_runs_queued_before_it(redis_pipeline, plans_dir, tmp_path):
    pipeline = redis_pipeline
    dispatcher, client = pipeline.engine.dispatcher, pipeline.engine.client
    # Given: four normal runs queued (the first one's script stage slow), one worker thread
    normal = [pipeline.create(_plan(plans_dir, tmp_path, f"normal-{i}",
                                    **({"fault_script": "sleep:1.5"} if i == 0 else {})))
              for i in range(4)]
    for run in normal:
        dispatcher.kick(run)
    worker = build_worker(pipeline.broker, 1, 50)
    worker.start()
    try:
        wait_until(lambda: lease.holder(client, "sparkle", normal[0].run_id) is not None)
        # When: a high run is submitted while the first normal run works
        high = pipeline.create(_plan(plans_dir, tmp_path, "rush", priority="high"))
        assert dispatcher.kick(high) == "script"
        # (the reaper's view of the queues covers every level)
        waiting = pipeline.app.backend.queued_stages("sparkle", 60_000)
        assert "script" in waiting[high.run_id]
        work = worker.work_queue
        assert isinstance(work, PriorityWorkQueue)
        wait_until(lambda: bool(work.levels[0]))
        wait_until(lambda: all(is_at_rest(r, dispatcher, "sparkle") for r in [*normal, high])
                   and all(r.status().value == "succeeded" for r in [*normal, high]), 120)
    finally:
        worker.stop()
    # Then: its script ran right after the one in progress, before every other normal run's
    starts = {run.run_id: next(t["start"] for t in read_trace(run.dir) if t["stage"] == "script")
              for run in [*normal, high]}
    order = sorted(starts, key=starts.__getitem__)
    assert order[:2] == [normal[0].run_id, high.run_id]


def test_a_dead_letter_of_a_high_run_is_replayed_on_the_high_queue(redis_pipeline, plans_dir,
                                                                  tmp_path):
    pipeline = redis_pipeline
    engine, client = pipeline.engine, pipeline.engine.client
    # Given: a high run whose videos stage fails for good
    run = pipeline.create(_plan(plans_dir, tmp_path, "doomed", priority="high",
                                fault_videos="permanent"))
    engine.dispatcher.kick(run)
    worker = build_worker(pipeline.broker, 1, 50)
    worker.start()
    try:
        wait_until(lambda: client.zcard(keys.dead_letters("sparkle", "videos", "high")) == 1
                   and is_at_rest(run, engine.dispatcher, "sparkle"))
    finally:
        worker.stop()
    dlq = DeadLetterQueue(client, engine.store, "sparkle", engine.dispatcher)
    (letter,) = dlq.letters()
    assert (letter.run_id, letter.stage, letter.level) == (run.run_id, "videos", "high")
    # When
    (replay,) = dlq.replay()
    # Then: sent again on the high queue, and the entry is gone
    assert replay.result.value == "replayed"
    assert client.llen(keys.dramatiq_queue("sparkle", "videos", "high")) == 1
    assert client.llen(keys.dramatiq_queue("sparkle", "videos")) == 0
    assert client.zcard(keys.dead_letters("sparkle", "videos", "high")) == 0

"""Cluster-wide stage limits in the engine: a message that finds every slot of its stage
taken goes back delayed, is neither failed nor a retry, and runs once a slot frees.
(The semaphore's behaviour on a real Redis: tests/integration/test_stage_slots_redis.py.)"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import _teardown_pipeline, make_pipeline

from sparkle.stagelimits import parse_limits


@pytest.fixture
def limited(tmp_path, monkeypatch):
    yield make_pipeline(tmp_path, monkeypatch, SPARKLE_STAGE_CONCURRENCY="videos=1",
                        SPARKLE_STAGE_CONCURRENCY_RETRY_MS="20")
    _teardown_pipeline()


def test_a_stage_without_a_free_slot_waits_without_failing_or_retrying(limited, plans_dir):
    # Given the only videos slot held elsewhere (another machine's worker)
    limits = limited.engine.stage_limits
    elsewhere = limits.try_acquire("videos")
    assert elsewhere is not None and limits.try_acquire("videos") is None
    run = limited.create(plans_dir / "rooftop.json")
    # When the run is worked, and the slot is given back only after its videos message
    # was sent back several times
    results = []
    worker = threading.Thread(target=lambda: results.append(limited.work(run)))
    worker.start()
    deadline = time.monotonic() + 60
    while limits.throttled < 3:
        assert time.monotonic() < deadline, "videos was never throttled"
        time.sleep(0.01)
    # (meanwhile the stages before it ran: they are not limited)
    assert run.stage_done("images") and not run.stage_done("videos")
    limits.release("videos", elsewhere)
    worker.join(60)
    # Then the run succeeded, and videos ran once, as its first attempt, never failing
    assert results[0].status.value == "succeeded"
    videos = [(e.status, e.attempt) for e in run.events() if e.stage == "videos"]
    assert videos == [("begin", 1), ("success", 1)]
    # And the slot was given back
    assert limits.holders("videos") == 0


def test_limits_are_checked_at_start():
    assert parse_limits("videos=2, lipsync=1") == {"videos": 2, "lipsync": 1}
    assert parse_limits(None) == {} and parse_limits("") == {}
    for bad in ("vidoes=1", "videos", "videos=0", "videos=x", "videos=1,videos=2"):
        with pytest.raises(ValueError):
            parse_limits(bad)
    from sparkle.errors import ConfigError
    from sparkle.settings import load_settings as _read

    with pytest.raises(ConfigError, match="SPARKLE_STAGE_CONCURRENCY"):
        _read(stage_concurrency="gpu=1")

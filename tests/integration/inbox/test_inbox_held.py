"""Broker outages: files wait in ``.claimed/`` while the broker cannot take them and flow
in order when it returns; nothing is rejected for an infrastructure problem. A recorder
stands for the broker, except in the test that stops and restarts a real redis-server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from sparkle.inbox import Inbox
from sparkle.runstore import Run, RunStore

from .inbox_support import Recorder, names, plan_bytes, wait_until


def test_files_wait_in_claimed_while_the_broker_is_down_and_flow_when_it_returns(
    make_inbox: Callable[..., Inbox],
    inbox_dir: Path,
    store: RunStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Protects: a broker outage never rejects a file; other files keep flowing; catch-up.
    # Given a running inbox whose enqueue raises ConnectionError
    caplog.set_level(logging.INFO, logger="sparkle.inbox")
    recorder = Recorder()
    recorder.down.set()
    inbox = make_inbox(recorder)

    # When three plans are dropped
    for i in range(3):
        (inbox_dir / f"wait-{i}.json").write_bytes(plan_bytes(f"Waiting {i}"))
    wait_until(lambda: inbox.stats().held == 3, what="three held files")
    time.sleep(0.5)  # several backoff rounds

    # Then they stay claimed, their runs exist, nothing is rejected or processed
    assert len(names(inbox.claimed_dir)) == 3
    assert len(store.runs()) == 3
    assert names(inbox.rejected_dir) == []
    assert names(inbox.processed_dir) == []
    assert inbox.retried > 3

    # When a bad plan is dropped meanwhile, then it is rejected at once
    (inbox_dir / "bad.json").write_text("{")
    wait_until(lambda: inbox.rejected == 1)

    # When the broker returns, then the held files are finished, each enqueued once
    recorder.down.clear()
    wait_until(lambda: inbox.processed == 3, what="catch-up after the broker returns")
    assert inbox.wait_idle(5)
    assert sorted(recorder.run_ids) == sorted(run.run_id for run in store.runs())
    assert names(inbox.claimed_dir) == []
    # And the log says they were created (by this watcher, on the first attempt)
    assert caplog.text.count("(created)") == 3


def test_an_unexpected_error_leaves_the_file_claimed_and_the_watcher_running(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Protects: one file's problem never kills the watcher or stalls the files behind it.
    # Given an enqueue with a bug for one plan
    recorder = Recorder()

    def enqueue(run: Run) -> None:
        if run.plan().title == "Buggy":
            raise ValueError("a bug")
        recorder(run)

    inbox = make_inbox(enqueue)

    # When that plan and then a good one are dropped
    (inbox_dir / "buggy.json").write_bytes(plan_bytes("Buggy"))
    (inbox_dir / "good.json").write_bytes(plan_bytes("Good"))
    wait_until(lambda: inbox.processed == 1 and inbox.failed == 1)

    # Then the good one is processed, the buggy one stays claimed (not lost), and the
    # traceback is logged
    assert names(inbox.processed_dir) == ["good.json"]
    assert [name.split("_", 1)[1] for name in names(inbox.claimed_dir)] == ["buggy.json"]
    assert "ValueError: a bug" in caplog.text


@pytest.mark.redis
def test_plans_dropped_while_redis_is_down_are_processed_when_it_returns(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore, redis_server: Any
) -> None:
    # Protects: the same, against a real redis-server that is stopped and started again.
    # Given a running inbox whose enqueue pushes the run id onto a Redis list
    client = redis.Redis.from_url(
        redis_server.url, socket_connect_timeout=1, socket_timeout=1, decode_responses=True
    )
    key = "sparkle:test:inbox"

    def enqueue(run: Run) -> None:
        client.rpush(key, run.run_id)

    inbox = make_inbox(enqueue)
    (inbox_dir / "before.json").write_bytes(plan_bytes("Before"))
    wait_until(lambda: inbox.processed == 1)

    try:
        # When Redis stops and four plans are dropped
        redis_server.stop()
        for i in range(4):
            (inbox_dir / f"down-{i}.json").write_bytes(plan_bytes(f"Down {i}"))
        wait_until(lambda: inbox.stats().held == 4, what="four held files")
        time.sleep(0.3)

        # Then they wait in .claimed/ and none is rejected
        assert len(names(inbox.claimed_dir)) == 4
        assert inbox.rejected == 0

        # When Redis starts again, then all four are processed and pushed once each
        redis_server.start()
        wait_until(lambda: inbox.processed == 5, timeout=15, what="catch-up")
        pushed = [str(value) for value in client.lrange(key, 0, -1)]
        titles = sorted(store.run(run_id).plan().title for run_id in pushed)
        assert titles == [f"Down {i}" for i in range(4)]
        assert names(inbox.claimed_dir) == []
        assert inbox.rejected == 0
    finally:
        client.close()


def test_a_redis_reply_error_holds_the_file_until_the_broker_takes_it(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: a replica answering READONLY during a failover (a reply error, not a
    # connection error) once left the file stranded in .claimed/ until a restart.
    recorder = Recorder()
    failing = threading.Event()
    failing.set()

    def enqueue(run: Run) -> None:
        if failing.is_set():
            raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
        recorder(run)

    inbox = make_inbox(enqueue)
    (inbox_dir / "failover.json").write_bytes(plan_bytes("During Failover"))
    wait_until(lambda: inbox.stats().held == 1, what="the file held")
    assert inbox.failed == 0 and inbox.rejected == 0
    failing.clear()
    wait_until(lambda: inbox.processed == 1, what="the file processed after the failover")
    assert names(inbox.claimed_dir) == []


def test_a_permanent_redis_reply_fails_its_file_without_holding_the_others(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: a reply that waiting will not change (WRONGTYPE, NOPERM) is not taken for
    # an outage: holding that file forever would hold every plan behind it.
    recorder = Recorder()

    def enqueue(run: Run) -> None:
        if run.plan().title == "Clashing Key":
            raise redis.exceptions.ResponseError(
                "WRONGTYPE Operation against a key holding the wrong kind of value")
        recorder(run)

    inbox = make_inbox(enqueue)
    (inbox_dir / "clash.json").write_bytes(plan_bytes("Clashing Key"))
    wait_until(lambda: inbox.failed == 1, what="the failed file")
    (inbox_dir / "next.json").write_bytes(plan_bytes("Next In Line"))
    wait_until(lambda: inbox.processed == 1, what="the next plan processed")
    assert inbox.stats().held == 0
    assert [n.split("_", 1)[1] for n in names(inbox.claimed_dir)] == ["clash.json"]


def test_every_attempt_held_back_is_counted_in_the_metric_as_in_the_stats(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: sparkle_inbox_plans_total{outcome="retried"} agrees with InboxStats.retried
    # (each failed attempt counts), the first hold of a file included.
    def retried_metric() -> float:
        return REGISTRY.get_sample_value("sparkle_inbox_plans_total", {"outcome": "retried"}) or 0.0

    # Given a running inbox whose broker is down, and the metric's value before
    recorder = Recorder()
    recorder.down.set()
    inbox = make_inbox(recorder)
    before = retried_metric()

    # When a plan is held and retried a few times, and the inbox stops
    (inbox_dir / "held.json").write_bytes(plan_bytes("Held"))
    wait_until(lambda: inbox.retried >= 3, what="three held-back attempts")
    inbox.stop()

    # Then the metric grew by exactly the attempts the stats count
    assert retried_metric() - before == inbox.retried

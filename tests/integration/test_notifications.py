"""Notifications: every finished run reaches a real local HTTP receiver exactly once after
deduplication by id, signed, even when the receiver is down at first; deliveries show in the
timeline; in-process notifiers from the ``sparkle.notifiers`` entry point group."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
import time
import types
from pathlib import Path

import pytest
from conftest import _teardown_pipeline, make_pipeline
from redis_server import free_port
from webhook_receiver import Receiver

from sparkle import notifications, webhooks
from sparkle.notifications import OUTBOX_DIR, Outbox, build, run_ended
from sparkle.timeline import timeline

SECRET = "receiver-shared-secret"


@pytest.fixture
def receiver():
    found = Receiver(free_port(), fail_first=2)
    yield found
    found.stop()


@pytest.fixture
def hooked(tmp_path, monkeypatch, receiver):
    """An embedded pipeline whose runs notify the receiver, retrying quickly."""
    yield make_pipeline(tmp_path, monkeypatch, SPARKLE_WEBHOOK_URL=receiver.url,
                        SPARKLE_WEBHOOK_SECRET=SECRET, SPARKLE_WEBHOOK_RETRY_BASE_SEC="0.02",
                        SPARKLE_WEBHOOK_RETRY_MAX_SEC="0.1", SPARKLE_WEBHOOK_TIMEOUT_SEC="5")
    _teardown_pipeline()


def outbox_of(pipeline) -> Outbox:
    return Outbox(pipeline.runs_dir / OUTBOX_DIR, pipeline.engine.settings)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def attempts_so_far(outbox: Outbox) -> int:
    total = 0
    for path in outbox.pending():
        with contextlib.suppress(FileNotFoundError, ValueError):
            total += json.loads(path.read_bytes())["attempts"]
    return total


def test_every_finished_run_reaches_a_receiver_that_was_down(hooked, receiver, plans_dir):
    # Given a receiver that is down (connection refused), and runs that succeed, fail
    # and are cancelled
    succeeded = hooked.create(plans_dir / "rooftop.json")
    hooked.work(succeeded)
    failed = hooked.create(plans_dir / "rooftop.json", run_id="broken", fault_videos="permanent")
    hooked.work(failed)
    cancelled = hooked.create(plans_dir / "lighthouse.json")
    cancelled.set_cancelled(True)
    cancelled.append_event("script", "cancel", 1)
    run_ended(cancelled, hooked.engine.settings, "cancelled")
    outbox = outbox_of(hooked)
    # When delivery has failed a few times, and the receiver comes up answering 503 twice
    wait_until(lambda: attempts_so_far(outbox) >= 6)
    receiver.start()
    wait_until(lambda: not outbox.pending())
    # Then after deduplication by id it got each run's notification exactly once
    by_id: dict[str, dict] = {}
    for headers, body in receiver.accepted:
        payload = json.loads(body)
        assert headers["X-Sparkle-Id"] == payload["id"]
        by_id.setdefault(payload["id"], payload)
    assert sorted((p["run_id"], p["status"]) for p in by_id.values()) == sorted([
        (succeeded.run_id, "succeeded"), ("broken", "failed"), (cancelled.run_id, "cancelled")])
    assert len(receiver.requests) >= len(by_id) + 2  # the two 503s were tried again
    # And every request is signed: the signature verifies with the shared secret
    for headers, body in receiver.requests:
        assert webhooks.verify(SECRET, body, headers["X-Sparkle-Timestamp"],
                               headers["X-Sparkle-Signature"])
        assert not webhooks.verify("wrong secret", body, headers["X-Sparkle-Timestamp"],
                                   headers["X-Sparkle-Signature"])
    # And the payloads say what happened: the movie, the error, the timings
    done = next(p for p in by_id.values() if p["status"] == "succeeded")
    assert Path(done["movie"]).is_file() and done["qa_decision"]
    assert set(done["timings"]["stages"]) == {"script", "images", "videos", "tts", "lipsync",
                                             "assemble", "qa"}
    assert done["timings"]["duration_sec"] >= 0
    broken = next(p for p in by_id.values() if p["status"] == "failed")
    assert broken["error"].startswith("videos: ") and "permanent" in broken["error"]
    # And the timeline shows the delivery, after the retries it took
    notified = [e for e in timeline(succeeded) if e.stage == "notify"]
    assert len(notified) == 1 and notified[0].status == "delivered"
    assert notified[0].attempt > 1 and "run.succeeded" in notified[0].detail
    assert str(receiver.port) in notified[0].detail and "/hooks" not in notified[0].detail


def test_the_same_outcome_gives_the_same_id(pipeline, plans_dir):
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.work(run)
    assert build(run, "succeeded").id == build(run, "succeeded").id
    assert build(run, "succeeded").id != build(run, "failed").id


def test_a_notification_is_given_up_after_its_time_and_recorded(tmp_path, monkeypatch,
                                                                 plans_dir):
    # Given a webhook nobody listens on and a give-up time already past
    pipeline = make_pipeline(tmp_path, monkeypatch,
                             SPARKLE_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/x",
                             SPARKLE_WEBHOOK_GIVE_UP_SEC="0.001")
    try:
        run = pipeline.create(plans_dir / "rooftop.json")
        run.set_cancelled(True)
        run.append_event("script", "cancel", 1)
        run_ended(run, pipeline.engine.settings, "cancelled", background=False)
        outbox = outbox_of(pipeline)
        time.sleep(0.01)
        # When it is tried
        results = outbox.deliver_due()
        # Then it is given up, recorded in the timeline, and the outbox is empty
        assert [r.outcome for r in results] == ["gave_up"]
        assert not outbox.pending()
        entry = next(e for e in timeline(run) if e.stage == "notify")
        assert entry.status == "gave_up" and "Connection refused" in (entry.error or "")
    finally:
        _teardown_pipeline()


def test_in_process_notifiers_come_from_the_entry_point_group(tmp_path, plans_dir,
                                                              monkeypatch):
    # Given an installed notifier (entry point group sparkle.notifiers) failing once
    received: list[dict] = []
    calls = []

    def notify(notification: dict) -> None:
        calls.append(notification["id"])
        if len(calls) == 1:
            raise ConnectionError("chat service busy")
        received.append(notification)

    module = types.ModuleType("sparkle_test_notifier")
    module.notify = notify  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sparkle_test_notifier", module)
    entry = importlib.metadata.EntryPoint(name="chat", value="sparkle_test_notifier:notify",
                                          group=notifications.ENTRY_POINT_GROUP)
    monkeypatch.setattr(notifications, "_notifiers", lambda: {"chat": entry})
    pipeline = make_pipeline(tmp_path, monkeypatch, SPARKLE_WEBHOOK_RETRY_BASE_SEC="0.01")
    try:
        # When a run succeeds
        run = pipeline.create(plans_dir / "rooftop.json")
        pipeline.work(run)
        wait_until(lambda: not outbox_of(pipeline).pending())
        # Then the notifier got it, after its failure was retried
        assert [n["status"] for n in received] == ["succeeded"]
        assert calls == [received[0]["id"]] * 2
        assert [e.status for e in timeline(run) if e.stage == "notify"] == ["delivered"]
    finally:
        _teardown_pipeline()


def test_webhook_urls_are_checked_at_start():
    from sparkle.errors import ConfigError
    from sparkle.settings import load_settings as _read

    with pytest.raises(ConfigError, match="SPARKLE_WEBHOOK_URL"):
        _read(webhook_url="https://ok.example/hook, file:///etc/passwd")
    assert webhooks.webhook_urls("https://a.example/x, http://b.example:8080/y") == [
        "https://a.example/x", "http://b.example:8080/y"]


def test_signature_refuses_old_or_tampered_requests():
    body = b'{"id":"x"}'
    stamp = str(int(time.time()))
    signature = webhooks.sign(SECRET, stamp, body)
    assert webhooks.verify(SECRET, body, stamp, signature)
    assert not webhooks.verify(SECRET, body + b" ", stamp, signature)
    assert not webhooks.verify(SECRET, body, stamp, signature, now=time.time() + 3600)

"""Webhook notifications as a user meets them: `sparkle run` and `sparkle cancel` with
SPARKLE_WEBHOOK_URL set tell a real local receiver, signed, and `sparkle timeline` shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import free_port
from webhook_receiver import Receiver

from sparkle import webhooks

BIN = Path(sys.executable).parent / "sparkle"

SECRET = "acceptance-secret"


@pytest.fixture
def receiver():
    found = Receiver(free_port(), fail_first=0)
    found.start()
    yield found
    found.stop()


def sparkle(tmp_path: Path, receiver: Receiver, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    env = {**clean, "SPARKLE_ADAPTERS": "test", "SPARKLE_WEBHOOK_URL": receiver.url,
           "SPARKLE_WEBHOOK_SECRET": SECRET}
    return subprocess.run([str(BIN), *args], cwd=tmp_path, text=True, capture_output=True,
                          env=env, timeout=120)


def test_run_and_cancel_notify_the_receiver(tmp_path, plans_dir, receiver):
    # When I render a plan in the foreground
    done = sparkle(tmp_path, receiver, "run", str(plans_dir / "rooftop.json"))
    # Then before the command ends the receiver has a signed run.succeeded with the movie
    assert done.returncode == 0, done.stderr
    assert len(receiver.accepted) == 1
    headers, body = receiver.accepted[0]
    payload = json.loads(body)
    assert payload["event"] == "run.succeeded" and Path(payload["movie"]).is_file()
    assert webhooks.verify(SECRET, body, headers["X-Sparkle-Timestamp"],
                           headers["X-Sparkle-Signature"])
    # And the timeline shows the delivery
    timeline = sparkle(tmp_path, receiver, "timeline", payload["run_id"]).stdout
    assert "notify" in timeline and "delivered" in timeline
    # When I cancel a queued run
    from sparkle.plans import load_plan_file
    from sparkle.runstore import RunStore

    queued, _ = RunStore(tmp_path / "runs").create(
        load_plan_file(plans_dir / "lighthouse.json", 1 << 20))
    assert sparkle(tmp_path, receiver, "cancel", queued.run_id).returncode == 0
    # Then the receiver has a run.cancelled for it
    last = json.loads(receiver.accepted[-1][1])
    assert (last["run_id"], last["status"]) == (queued.run_id, "cancelled")


def test_outbox_lists_what_waits_and_delivers_it(tmp_path, plans_dir):
    # Given a receiver that is down when a run is cancelled
    from sparkle.plans import load_plan_file
    from sparkle.runstore import RunStore

    down = Receiver(free_port(), fail_first=0)
    run, _ = RunStore(tmp_path / "runs").create(
        load_plan_file(plans_dir / "rooftop.json", 1 << 20))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    env = {**clean, "SPARKLE_WEBHOOK_URL": down.url, "SPARKLE_WEBHOOK_RETRY_BASE_SEC": "0.01"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *args], cwd=tmp_path, text=True, capture_output=True,
                              env=env, timeout=120)

    assert cli("cancel", run.run_id).returncode == 0
    # When I look at the outbox
    pending = json.loads(cli("outbox", "--json").stdout)
    # Then the cancellation waits there, with why its first try failed
    assert [(p["run_id"], p["event"], p["attempts"]) for p in pending] == [
        (run.run_id, "run.cancelled", 1)]
    assert "refused" in pending[0]["last_error"] and "/hooks" not in pending[0]["target"]
    # When the receiver is up and I deliver
    down.start()
    try:
        done = cli("outbox", "--deliver")
    finally:
        down.stop()
    # Then it is delivered and the outbox is empty
    assert done.returncode == 0, done.stderr
    assert "delivered" in done.stdout and "outbox empty" in done.stdout
    assert [json.loads(body)["status"] for _, body in down.accepted] == ["cancelled"]

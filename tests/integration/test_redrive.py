"""The reaper: which runs it re-drives, which it leaves alone, and that re-driving is harmless.

Most tests use the embedded pipeline (StubBroker, in-process fakeredis leases); the ones
about what Redis holds (a deleted message, a dead worker's unacknowledged message) use a
real redis-server.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import pytest
import redis
from conftest import _teardown_pipeline, make_pipeline

from sparkle import keys
from sparkle.adapters.testing import read_trace
from sparkle.broker import build_redis_broker
from sparkle.lease import Lease
from sparkle.redrive import MAX_REDRIVES_WITHOUT_PROGRESS, Reaper, RedriveReason
from sparkle.schemas import STAGES
from sparkle.settings import Settings


def reaper_for(pipeline, **overrides):
    engine = pipeline.engine
    settings = engine.settings.model_copy(update=overrides) if overrides else engine.settings
    return Reaper(engine.store, engine.dispatcher, settings)


def lose_messages(pipeline, run):
    """What an embedded process stopping does: queued messages and pending marks vanish."""
    pipeline.broker.flush_all()
    pipeline.engine.client.delete(keys.pending("sparkle", run.run_id))


def redrives(run):
    return [(e.stage, e.metadata["reason"]) for e in run.events() if e.status == "redrive"]


def queued(pipeline, stage):
    return pipeline.broker.queues[keys.queue_name(stage)].qsize()


def test_queued_run_with_its_message_is_left_alone(pipeline, plans_dir):
    """A run whose next stage has a message on its way is not stuck, however old it is."""
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.dispatcher.kick(run)
    assert reaper_for(pipeline).run_once(older_than=0) == []
    assert redrives(run) == []
    assert queued(pipeline, "script") == 1


def test_lost_message_is_redriven_once(pipeline, plans_dir):
    """A run whose message vanished gets its next stage sent again, with a redrive event;
    the next pass finds the message and does nothing more."""
    # Given a queued run whose message was lost
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.dispatcher.kick(run)
    lose_messages(pipeline, run)
    # When the reaper passes
    found = reaper_for(pipeline).run_once(older_than=0)
    # Then it re-drove script because the message was lost
    assert [(r.run_id, r.stage, r.reason, r.sent) for r in found] == [
        (run.run_id, "script", RedriveReason.message_lost, True)]
    assert redrives(run) == [("script", "message_lost")]
    assert queued(pipeline, "script") == 1
    # And a second pass leaves it alone
    assert reaper_for(pipeline).run_once(older_than=0) == []
    # And the run then completes, each stage once
    assert pipeline.work(run).status.value == "succeeded"
    assert Counter(r["stage"] for r in read_trace(run.dir)) == Counter(STAGES)


def test_stage_whose_worker_died_is_redriven_even_while_its_message_exists(
        pipeline, plans_dir):
    """A begin with no outcome and a free lease means the worker died. Its message may
    still sit unacknowledged in the broker (dramatiq gives it back only much later), so
    the reaper re-drives without waiting for the message to disappear."""
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.dispatcher.kick(run)  # the dead worker's message, still there
    time.sleep(0.01)
    run.append_event("script", "begin", 1, metadata={"worker": "gone:1:t"})
    found = reaper_for(pipeline).run_once(older_than=0)
    assert [(r.stage, r.reason) for r in found] == [("script", RedriveReason.worker_died)]
    assert queued(pipeline, "script") == 2
    # The re-drive is recorded after the dead begin; a second pass does not repeat it
    assert [e.status for e in run.events()] == ["begin", "redrive"]
    assert reaper_for(pipeline).run_once(older_than=0) == []
    # Two messages, one execution: the duplicate dies out on the skip rule
    assert pipeline.work(run).status.value == "succeeded"
    assert Counter(r["stage"] for r in read_trace(run.dir))["script"] == 1
    assert [e.status for e in run.events() if e.stage == "script"].count("success") == 1


def test_recent_begin_waits_for_the_lease_ttl(pipeline, plans_dir):
    """By default a run must have been still for a lease TTL before it counts as stuck."""
    run = pipeline.create(plans_dir / "rooftop.json")
    run.append_event("script", "begin", 1)
    assert reaper_for(pipeline, lease_ttl_sec=30).run_once() == []
    assert [r.stage for r in reaper_for(pipeline).run_once(older_than=0)] == ["script"]


def test_a_run_that_moved_lately_costs_no_round_trip(pipeline, plans_dir, monkeypatch):
    """Runs in flight are the many: one whose last event is younger than the lease TTL is
    passed over before the reaper asks Redis for its lease or its pending mark."""
    import sparkle.redrive as redrive_module

    asked: list[str] = []
    monkeypatch.setattr(redrive_module.lease, "holder",
                        lambda client, namespace, run_id: asked.append(run_id))
    monkeypatch.setattr(pipeline.engine.dispatcher, "pending",
                        lambda run_id: asked.append(run_id))
    moving = pipeline.create(plans_dir / "rooftop.json")
    moving.append_event("script", "begin", 1)
    redriven = pipeline.create(plans_dir / "lighthouse.json")
    redriven.append_event("script", "begin", 1)
    redriven.append_event("script", "redrive", 1)
    assert reaper_for(pipeline, lease_ttl_sec=30).run_once() == []
    assert asked == []
    # (and once still for long enough, both are looked at as before)
    assert len(reaper_for(pipeline).run_once(older_than=0)) == 2
    assert sorted(asked) == sorted([moving.run_id, moving.run_id, redriven.run_id,
                                    redriven.run_id])


def test_a_queued_run_whose_message_is_in_the_broker_costs_no_round_trip(
        pipeline, plans_dir, monkeypatch):
    """A backlog of queued runs, still for longer than the lease TTL, each with its message
    waiting: the reaper passes over them without asking Redis for a lease or a pending
    mark, since only a lost message could make such a run stuck. A run whose message is
    lost among them is still re-driven, and an open begin still has its lease looked at."""
    import sparkle.redrive as redrive_module

    waiting = [pipeline.create(plans_dir / name) for name in ("rooftop.json",
                                                                "lighthouse.json")]
    for run in waiting:
        pipeline.engine.dispatcher.kick(run)
    waiting[1].append_event("script", "begin", 1)
    waiting[1].append_event("script", "redrive", 1)  # re-driven: its message is the redrive
    pipeline.engine.dispatcher.send(waiting[1].run_id, "script")
    lost = pipeline.create(plans_dir / "rooftop.json", run_id="lost-one")
    began = pipeline.create(plans_dir / "rooftop.json", run_id="began-one")
    pipeline.engine.dispatcher.kick(began)
    began.append_event("script", "begin", 1)  # its worker may have died: lease is looked at
    asked: list[str] = []
    holder, pending = redrive_module.lease.holder, pipeline.engine.dispatcher.pending
    monkeypatch.setattr(redrive_module.lease, "holder",
                        lambda client, namespace, run_id: asked.append(run_id)
                        or holder(client, namespace, run_id))
    monkeypatch.setattr(pipeline.engine.dispatcher, "pending",
                        lambda run_id: asked.append(run_id) or pending(run_id))
    found = reaper_for(pipeline).run_once(older_than=0, dry_run=True)
    assert sorted((r.run_id, r.reason) for r in found) == [
        (began.run_id, RedriveReason.worker_died), (lost.run_id, RedriveReason.message_lost)]
    assert sorted(set(asked)) == sorted([began.run_id, lost.run_id])


def test_finished_failed_and_cancelled_runs_are_never_touched(pipeline, plans_dir, tmp_path):
    """Succeeded, failed and cancelled runs have no message and no lease, and stay so."""
    done = pipeline.create(plans_dir / "rooftop.json")
    assert pipeline.work(done).status.value == "succeeded"
    failed = pipeline.create(plans_dir / "lighthouse.json", fault_images="permanent")
    assert pipeline.work(failed).status.value == "failed"
    cancelled = pipeline.create(plans_dir / "lighthouse.json", run_id="cancelled-run")
    cancelled.append_event("script", "begin", 1)
    cancelled.set_cancelled(True)
    pipeline.broker.flush_all()
    assert reaper_for(pipeline).run_once(older_than=0) == []
    assert redrives(done) == redrives(failed) == redrives(cancelled) == []


def test_run_held_by_a_live_worker_is_left_alone(pipeline, plans_dir):
    """An open begin while another worker holds (and renews) the lease is a running stage."""
    run = pipeline.create(plans_dir / "rooftop.json")
    run.append_event("script", "begin", 1)
    holder = Lease(pipeline.engine.client, "sparkle", run.run_id, 30)
    assert holder.acquire()
    assert reaper_for(pipeline).run_once(older_than=0) == []
    holder.release()
    assert len(reaper_for(pipeline).run_once(older_than=0)) == 1


def test_dry_run_reports_and_changes_nothing(pipeline, plans_dir):
    run = pipeline.create(plans_dir / "rooftop.json")
    found = reaper_for(pipeline).run_once(dry_run=True, older_than=0)
    assert [(r.stage, r.reason, r.sent) for r in found] == [
        ("script", RedriveReason.message_lost, False)]
    assert redrives(run) == [] and queued(pipeline, "script") == 0


def test_two_reapers_at_once_redrive_a_run_once(pipeline, plans_dir):
    """A reaper in `sparkle watch` and one in `sparkle worker` do not both re-drive a run."""
    run = pipeline.create(plans_dir / "rooftop.json")
    first = reaper_for(pipeline).run_once(older_than=0)
    lose_messages(pipeline, run)
    second = reaper_for(pipeline).run_once(older_than=0)
    assert len(first) == 1 and second == []
    assert len(redrives(run)) == 1


def test_reaper_gives_up_on_a_run_redriven_too_often_without_progress(
        pipeline, plans_dir, caplog):
    """Something that fails before a stage can even begin is not re-driven forever."""
    run = pipeline.create(plans_dir / "rooftop.json")
    for _ in range(MAX_REDRIVES_WITHOUT_PROGRESS):
        run.append_event("script", "redrive", 1, metadata={"reason": "message_lost"})
    with caplog.at_level(logging.ERROR, logger="sparkle.redrive"):
        assert reaper_for(pipeline).run_once(older_than=0) == []
    assert "without any stage finishing" in caplog.text


def test_background_reaper_redrives_within_its_interval(pipeline, plans_dir):
    """start() runs passes every reaper_interval_sec until stop()."""
    run = pipeline.create(plans_dir / "rooftop.json")
    reaper = reaper_for(pipeline, reaper_interval_sec=0.05, lease_ttl_sec=0.01)
    reaper.start()
    try:
        deadline = time.monotonic() + 5
        while not redrives(run) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        reaper.stop()
    assert redrives(run) == [("script", "message_lost")]


# -- real Redis --------------------------------------------------------------------------


@pytest.fixture
def redis_pipeline(tmp_path, monkeypatch, redis_server):
    """A pipeline on a RedisBroker against a private redis-server (no worker running)."""
    settings = Settings(redis_url=redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    pipeline = make_pipeline(tmp_path, monkeypatch, broker=build_redis_broker(settings),
                             client=client, SPARKLE_REDIS_URL=redis_server.url)
    yield pipeline
    _teardown_pipeline()
    client.close()


@pytest.mark.redis
def test_deleted_message_is_redriven_on_redis(redis_pipeline, plans_dir):
    """Deleting a run's queued message from Redis (a flush, a restart without persistence):
    the reaper finds no message for the run's next stage and sends it again."""
    pipeline = redis_pipeline
    client = pipeline.engine.client
    run = pipeline.create(plans_dir / "rooftop.json")
    assert pipeline.engine.dispatcher.kick(run) == "script"
    stored = keys.dramatiq_messages("sparkle", "script")
    # While the message is there, nothing is re-driven
    assert reaper_for(pipeline).run_once(older_than=0) == []
    # When I delete it (the pending mark stays, as it would after a queue flush)
    client.delete(keys.dramatiq_queue("sparkle", "script"), stored)
    found = reaper_for(pipeline).run_once(older_than=0)
    # Then it is sent again
    assert [(r.stage, r.reason) for r in found] == [("script", RedriveReason.message_lost)]
    assert client.hlen(stored) == 1 and client.llen(keys.dramatiq_queue("sparkle", "script")) == 1
    body = json.loads(next(iter(client.hvals(stored))))
    assert body["args"] == [run.run_id] and body["actor_name"] == "sparkle_script"
    assert reaper_for(pipeline).run_once(older_than=0) == []


@pytest.mark.redis
def test_message_held_by_a_dead_worker_does_not_count_as_queued(redis_pipeline, plans_dir):
    """A message fetched by a worker process whose dramatiq heartbeat is older than the
    heartbeat timeout is as good as lost until some later maintenance pass: re-drive."""
    pipeline = redis_pipeline
    client = pipeline.engine.client
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.dispatcher.kick(run)
    # Given a worker process that fetched the message and then died long ago
    message_id = client.lpop(keys.dramatiq_queue("sparkle", "script")).decode()
    client.sadd(keys.unacked("sparkle", "dead-broker", "sparkle.script"), message_id)
    stale_ms = int(time.time() * 1000) - pipeline.engine.settings.heartbeat_timeout_ms - 1000
    client.zadd(keys.heartbeats("sparkle"), {"dead-broker": stale_ms})
    # When the reaper passes, Then it re-drives the run
    found = reaper_for(pipeline).run_once(older_than=0)
    assert [(r.stage, r.reason) for r in found] == [("script", RedriveReason.message_lost)]
    # But the same message held by a live worker counts as on its way
    run2 = pipeline.create(plans_dir / "lighthouse.json")
    pipeline.engine.dispatcher.kick(run2)
    message_id = client.lpop(keys.dramatiq_queue("sparkle", "script")).decode()
    client.sadd(keys.unacked("sparkle", "live-broker", "sparkle.script"), message_id)
    client.zadd(keys.heartbeats("sparkle"), {"live-broker": int(time.time() * 1000)})
    assert [r.run_id for r in reaper_for(pipeline).run_once(older_than=0)] == []


@pytest.mark.redis
def test_a_message_a_live_worker_holds_but_never_runs_is_redriven_in_the_end(
        redis_pipeline, plans_dir):
    """dramatiq can leave a message in a live worker process's ack set with nothing in
    that process to run it: a fetch whose reply was lost (dramatiq #894), a delayed retry
    forgotten when its consumer reconnected (#527). Once the reaper has seen it held for
    longer than twice the longest stage time limit (counted from its eta, if delayed), it
    no longer counts as on its way. How long it waited in the queue before it was fetched
    does not count (a backlog is not a stranding)."""
    pipeline = redis_pipeline
    client = pipeline.engine.client

    def held_by_live_worker(run, eta_in_sec=None):
        """The run's script message, sent an hour ago and fetched just now by a live
        worker (with ``eta_in_sec``: a delayed retry, in the delay queue instead)."""
        client.zadd(keys.heartbeats("sparkle"), {"live-broker": int(time.time() * 1000)})
        pipeline.engine.dispatcher.kick(run)
        queue, stored = "sparkle.script", keys.dramatiq_messages("sparkle", "script")
        message_id = client.lpop(keys.dramatiq_queue("sparkle", "script")).decode()
        body = json.loads(client.hget(stored, message_id))
        body["message_timestamp"] = int((time.time() - 3600) * 1000)
        if eta_in_sec is not None:
            client.hdel(stored, message_id)
            queue, stored = "sparkle.script.DQ", keys.delayed_messages("sparkle", "script")
            body["options"]["eta"] = int((time.time() + eta_in_sec) * 1000)
        client.hset(stored, message_id, json.dumps(body))
        client.sadd(keys.unacked("sparkle", "live-broker", queue), message_id)

    stranded = pipeline.create(plans_dir / "rooftop.json")
    held_by_live_worker(stranded)
    delayed = pipeline.create(plans_dir / "rooftop.json", run_id="delayed-retry")
    held_by_live_worker(delayed, eta_in_sec=5)
    # Stage time limits of 0.2 s: "stranded" means seen held for over 0.4 s
    reaper = reaper_for(pipeline, stage_time_limit_sec=0.2)
    patient = reaper_for(pipeline, stage_time_limit_sec=0.2, stage_time_limits={"videos": 60.0})
    # The first sight of a message sent an hour ago is not a stranding
    assert reaper.run_once(older_than=0) == [] and patient.run_once(older_than=0) == []
    time.sleep(0.5)
    recent = pipeline.create(plans_dir / "lighthouse.json")
    held_by_live_worker(recent)  # fetched only now
    # One stage allowed 60 s: held for 0.5 s is not stranded
    assert patient.run_once(older_than=0) == []
    found = reaper.run_once(older_than=0)
    assert [(r.run_id, r.reason) for r in found] == [
        (stranded.run_id, RedriveReason.message_stranded)]
    assert redrives(stranded) == [("script", "message_stranded")]
    # The re-drive is a new message waiting in the queue: the next pass leaves it alone
    assert reaper.run_once(older_than=0) == []


def test_a_resend_after_the_dead_attempt_counts_as_its_redrive(pipeline, plans_dir):
    """`sparkle resume` (or a restarted `serve` re-queueing its runs) already sent the
    stage again after the dead attempt began: no second re-drive while that message is
    on its way, but one if it is lost too."""
    run = pipeline.create(plans_dir / "rooftop.json")
    run.append_event("script", "begin", 1)
    time.sleep(0.01)
    assert pipeline.engine.dispatcher.kick(run) == "script"
    assert reaper_for(pipeline).run_once(older_than=0) == []
    pipeline.broker.flush_all()
    pipeline.engine.client.delete(keys.pending("sparkle", run.run_id))
    found = reaper_for(pipeline).run_once(older_than=0)
    assert [(r.stage, r.reason) for r in found] == [("script", RedriveReason.worker_died)]


def test_a_run_taken_by_a_worker_after_the_check_is_not_written_to(
        pipeline, plans_dir, monkeypatch):
    """The reaper writes its redrive event holding the run's lease: a run that a worker
    (on another host) took between the reaper's look and its write gets no event and no
    message from it."""
    # Given a run whose message was lost, taken by a worker just after the reaper looked
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.dispatcher.kick(run)
    lose_messages(pipeline, run)
    taken = Lease(pipeline.engine.client, "sparkle", run.run_id, 30)
    assert taken.acquire()
    monkeypatch.setattr("sparkle.redrive.lease.holder", lambda *args: None)  # (looked free)
    # When the reaper passes
    assert all(not r.sent for r in reaper_for(pipeline).run_once(older_than=0))
    # Then nothing was recorded or sent
    assert redrives(run) == [] and queued(pipeline, "script") == 0
    # And once the worker let go, the next pass re-drives it
    taken.release()
    pipeline.engine.client.delete(keys.redrive_guard("sparkle", run.run_id))
    reaper_for(pipeline).run_once(older_than=0)
    assert redrives(run) == [("script", "message_lost")] and queued(pipeline, "script") == 1

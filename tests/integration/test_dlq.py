"""Dead letters: listing with the failure's error, replay (retries reset, entries removed,
done stages a no-op), purge, and redelivered copies of a failed stage's message.

On a RedisBroker over fakeredis: fast, and the Lua scripts and key layout are dramatiq's
own. The same flow against real workers and a real Redis is in tests/integration/test_ops.py.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq

from sparkle import keys
from sparkle.adapters.testing import FIXED, read_trace
from sparkle.dlq import DeadLetterQueue, ReplayResult
from sparkle.lease import Lease
from sparkle.runner import is_at_rest
from sparkle.stages import Adapter


def settle(pipeline, *runs, timeout: float = 20.0) -> None:
    """Work the queues with an in-process worker until every run has come to rest."""
    worker = dramatiq.Worker(pipeline.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        rested = 0
        while rested < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            at_rest = all(is_at_rest(r, pipeline.engine.dispatcher, "sparkle") for r in runs)
            rested = rested + 1 if at_rest else 0
    finally:
        worker.stop()


def dlq_of(pipeline) -> DeadLetterQueue:
    engine = pipeline.engine
    return DeadLetterQueue(engine.client, engine.store, "sparkle", engine.dispatcher)


def failed_runs(pipeline, plans_dir, count: int):
    runs = [pipeline.create(plans_dir / "lighthouse.json", fault_videos="permanent",
                            run_id=f"broken-{i}") for i in range(count)]
    for run in runs:
        pipeline.engine.dispatcher.kick(run)
    settle(pipeline, *runs)
    assert [r.status().value for r in runs] == ["failed"] * count
    return runs


def failed_run_and_its_dead_message(pipeline, plans_dir) -> tuple[Any, bytes]:
    """A run whose videos stage failed for good, and the body of its dead-lettered message."""
    (run,) = failed_runs(pipeline, plans_dir, 1)
    client = pipeline.engine.client
    (entry,) = client.zrange(keys.dead_letters("sparkle", "videos"), 0, -1)
    return run, client.hget(keys.dead_letter_messages("sparkle", "videos"), entry)


def fix_videos(pipeline) -> None:
    pipeline.engine.adapters["videos"] = Adapter("videos", "fixed", FIXED["videos"], ())


def test_list_shows_run_stage_time_and_the_checkpoint_error(fake_redis_pipeline, plans_dir):
    pipeline = fake_redis_pipeline
    before = time.time()
    runs = failed_runs(pipeline, plans_dir, 2)
    letters = dlq_of(pipeline).letters()
    assert sorted(letter.run_id for letter in letters) == [r.run_id for r in runs]
    for letter in letters:
        assert letter.stage == "videos"
        assert before - 1 <= letter.failed_at <= time.time() + 1
        assert letter.error == "PermanentStageError: injected permanent fault in videos"
        assert letter.as_dict()["failed_at_iso"].endswith("Z")
    assert [x.run_id for x in dlq_of(pipeline).letters(run_id="broken-1")] == ["broken-1"]
    assert dlq_of(pipeline).letters(stage="tts") == []


def test_replay_after_the_fix_completes_the_runs_and_a_second_replay_does_nothing(
        fake_redis_pipeline, plans_dir):
    """Replay sends each dead stage again with retries reset and removes its entry; once
    the adapter is fixed the runs complete; replaying again finds nothing to do."""
    pipeline = fake_redis_pipeline
    runs = failed_runs(pipeline, plans_dir, 2)
    fix_videos(pipeline)
    replayed = dlq_of(pipeline).replay()
    assert [item.result for item in replayed] == [ReplayResult.replayed] * 2
    client = pipeline.engine.client
    assert client.zcard(keys.dead_letters("sparkle", "videos")) == 0
    assert client.hlen(keys.dead_letter_messages("sparkle", "videos")) == 0
    settle(pipeline, *runs)
    assert [r.status().value for r in runs] == ["succeeded"] * 2
    for run in runs:
        assert [e.metadata.get("reason") for e in run.events() if e.status == "redrive"] == [
            "dlq_replay"]
    assert dlq_of(pipeline).replay() == []


def test_replaying_a_stage_that_is_already_done_sends_nothing(fake_redis_pipeline, plans_dir):
    """A dead letter whose stage has since succeeded (say, after `sparkle resume`) is
    removed without sending anything."""
    pipeline = fake_redis_pipeline
    (run,) = failed_runs(pipeline, plans_dir, 1)
    fix_videos(pipeline)
    pipeline.engine.dispatcher.send(run.run_id, "videos")  # what `sparkle resume` sends
    settle(pipeline, run)
    assert run.status().value == "succeeded"
    calls = len(read_trace(run.dir))
    result = dlq_of(pipeline).replay(run_id=run.run_id)
    assert [item.result for item in result] == [ReplayResult.already_done]
    assert dlq_of(pipeline).letters() == []
    settle(pipeline, run)
    assert len(read_trace(run.dir)) == calls
    assert pipeline.broker.client.llen(keys.dramatiq_queue("sparkle", "videos")) == 0


def test_cancelled_runs_are_kept_until_resumed(fake_redis_pipeline, plans_dir):
    pipeline = fake_redis_pipeline
    (run,) = failed_runs(pipeline, plans_dir, 1)
    run.set_cancelled(True)
    result = dlq_of(pipeline).replay(stage="videos")
    assert [item.result for item in result] == [ReplayResult.cancelled]
    assert len(dlq_of(pipeline).letters()) == 1


def test_purge_removes_only_old_entries(fake_redis_pipeline, plans_dir):
    pipeline = fake_redis_pipeline
    failed_runs(pipeline, plans_dir, 2)
    client = pipeline.engine.client
    xq = keys.dead_letters("sparkle", "videos")
    oldest = client.zrange(xq, 0, 0)[0]
    client.zadd(xq, {oldest: (time.time() - 8 * 86400) * 1000})
    assert dlq_of(pipeline).purge(7 * 86400) == 1
    assert len(dlq_of(pipeline).letters()) == 1
    assert client.hlen(keys.dead_letter_messages("sparkle", "videos")) == 1


def test_rate_limits_replays(fake_redis_pipeline, plans_dir):
    pipeline = fake_redis_pipeline
    failed_runs(pipeline, plans_dir, 3)
    started = time.monotonic()
    assert len(dlq_of(pipeline).replay(rate=10)) == 3
    assert time.monotonic() - started >= 0.25


def test_redelivered_copy_of_a_failed_stage_message_runs_nothing(
        fake_redis_pipeline, plans_dir):
    """A copy of a message sent before the stage failed (dramatiq gives a dead worker's
    message back late, and crash redeliveries are not counted) must not restart a stage
    that failed for good; a new message (resume, replay) still does."""
    pipeline = fake_redis_pipeline
    run, old_body = failed_run_and_its_dead_message(pipeline, plans_dir)
    fix_videos(pipeline)
    # When the old message comes back
    pipeline.broker.enqueue(dramatiq.Message.decode(old_body))
    settle(pipeline, run)
    # Then nothing ran and the run is still failed
    assert run.status().value == "failed"
    assert sum(1 for r in read_trace(run.dir) if r["stage"] == "videos") == 1
    # But a replay (a new message) runs it
    dlq_of(pipeline).replay()
    settle(pipeline, run)
    assert run.status().value == "succeeded"


def test_a_redelivered_copy_runs_nothing_also_after_a_later_event_of_its_stage(
        fake_redis_pipeline, plans_dir):
    """The failed stage's history may go on after its fail (a replay's redrive event, a
    cancel): the copy of a message sent before the failure still runs nothing."""
    pipeline = fake_redis_pipeline
    run, old_body = failed_run_and_its_dead_message(pipeline, plans_dir)
    fix_videos(pipeline)
    run.append_event("videos", "redrive", 1, metadata={"reason": "test"})
    pipeline.broker.enqueue(dramatiq.Message.decode(old_body))
    settle(pipeline, run)
    assert run.status().value == "failed"
    assert sum(1 for r in read_trace(run.dir) if r["stage"] == "videos") == 1


def test_a_resume_dropped_as_busy_is_carried_on_by_the_lease_holder(
        fake_redis_pipeline, plans_dir):
    """A resume's message for the failed stage that finds the run's lease held (here by
    a duplicate of an earlier stage's message) is dropped, and its pending mark with it;
    the holder, finding its own stage done, sends the failed stage again, so the resume
    is not lost. (The other side of it: a replayed earlier message restarts a failed
    stage without a resume.)"""
    from sparkle.outcomes import Outcome

    pipeline = fake_redis_pipeline
    (run,) = failed_runs(pipeline, plans_dir, 1)
    fix_videos(pipeline)
    engine = pipeline.engine
    lease_key = keys.lease("sparkle", run.run_id)
    engine.client.set(lease_key, "the duplicate images message")  # it holds the run
    engine.dispatcher.mark(run.run_id, "videos")  # `sparkle resume` sent videos
    assert engine.execute("videos", run.run_id) is Outcome.busy
    assert engine.dispatcher.pending(run.run_id) is None
    engine.client.delete(lease_key)
    assert engine.execute("images", run.run_id) is Outcome.skipped  # the duplicate
    assert engine.dispatcher.pending(run.run_id)[0] == "videos"
    settle(pipeline, run)
    assert run.status().value == "succeeded"


def test_dead_letters_are_kept_as_long_as_the_setting_says():
    """dramatiq deletes dead letters after 7 days: a failure during a fortnight away would
    vanish from `sparkle dlq list`. The broker keeps them SPARKLE_DEAD_LETTER_DAYS."""
    import fakeredis

    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    assert build_redis_broker(Settings(), client=client).dead_message_ttl == 30 * 86_400_000
    broker = build_redis_broker(Settings(dead_letter_days=2.5), client=client)  # type: ignore[call-arg]
    assert broker.dead_message_ttl == 2.5 * 86_400_000


def test_a_run_held_by_a_worker_is_not_written_to_and_its_letter_kept(
        fake_redis_pipeline, plans_dir):
    """Replay writes its redrive event holding the run's lease (only the lease holder
    writes a run's files): while a worker holds the run nothing is written or sent, the
    entry is kept (busy), and a later replay does it."""
    pipeline = fake_redis_pipeline
    (run,) = failed_runs(pipeline, plans_dir, 1)
    events_before = len(run.events())
    held = Lease(pipeline.engine.client, "sparkle", run.run_id, 30)
    assert held.acquire()
    result = dlq_of(pipeline).replay(stage="videos")
    assert [item.result for item in result] == [ReplayResult.busy]
    assert len(run.events()) == events_before and len(dlq_of(pipeline).letters()) == 1
    held.release()
    result = dlq_of(pipeline).replay(stage="videos")
    assert [item.result for item in result] == [ReplayResult.replayed]
    assert run.events()[-1].status == "redrive"

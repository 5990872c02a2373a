"""Run priorities (issue 22, item 3): the queue of each level, the order in which a worker
takes waiting messages (highest level first, lower levels never starved), the plan's
``metadata.priority`` check, and a whole chain staying on its run's level.

No redis-server here: the worker ordering runs on dramatiq's StubBroker with real worker
threads; the same on a real Redis is in tests/integration/test_priority_redis.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from dramatiq.worker import _WorkQueueItem

from sparkle import keys, priority
from sparkle.errors import PlanError
from sparkle.plans import parse_plan_bytes
from sparkle.schemas import STAGES
from sparkle.workqueue import PriorityWorkQueue, build_worker, stop_worker


def _item(queue_name: str, tag: str) -> Any:
    message = dramatiq.Message(queue_name=queue_name, actor_name="a", args=(tag,), kwargs={},
                               options={})
    return _WorkQueueItem(0, message)


def _drain(work: PriorityWorkQueue) -> list[str]:
    return [work.get_nowait().message.args[0] for _ in range(work.qsize())]


def test_queue_names_keep_normal_as_it_was_and_add_a_twin_per_level():
    # Given / When / Then: normal keeps the name of earlier versions (messages already in
    # Redis stay valid); each level's delay and dead-letter queues follow dramatiq's names
    assert keys.queue_name("videos") == "sparkle.videos"
    assert keys.stage_queue_names("videos") == [
        "sparkle.videos.high", "sparkle.videos", "sparkle.videos.low"]
    assert keys.dead_letters("ns", "videos", "high") == "ns:sparkle.videos.high.XQ"
    for name, level in [("sparkle.videos.high.DQ", "high"), ("sparkle.videos.XQ", "normal"),
                        ("sparkle.videos.low", "low"), ("sparkle.videos", "normal")]:
        assert priority.priority_of_queue(name) == level


def test_waiting_messages_are_taken_highest_level_first_and_in_order_within_a_level():
    # Given: normal and low messages waiting, then a high one arriving last
    work = PriorityWorkQueue()
    for item in (_item("sparkle.videos", "n1"), _item("sparkle.videos.low", "l1"),
                 _item("sparkle.videos", "n2"), _item("sparkle.images.high", "h1")):
        work.put(item)
    # When / Then: the late high one first; normal ones in arrival order; low last
    assert _drain(work) == ["h1", "n1", "n2", "l1"]


def test_a_steady_high_load_still_lets_a_low_message_through():
    # Given: a low message waiting under a flood of high ones
    work = PriorityWorkQueue(starvation_limit=3)
    work.put(_item("sparkle.videos.low", "low"))
    for index in range(10):
        work.put(_item("sparkle.videos.high", f"h{index}"))
    # When
    order = _drain(work)
    # Then: after three high ones taken past it, the low one goes next
    assert order.index("low") == 3
    assert order[:3] == ["h0", "h1", "h2"]


def test_the_oldest_lower_message_is_taken_when_the_streak_runs_out():
    # Given: under high load, a normal message arrives after a low one
    work = PriorityWorkQueue(starvation_limit=2)
    work.put(_item("sparkle.videos.low", "old-low"))
    work.put(_item("sparkle.videos", "young-normal"))
    for index in range(6):
        work.put(_item("sparkle.videos.high", f"h{index}"))
    # When
    order = _drain(work)
    # Then: the starved turn goes to the message waiting longest, whatever its level
    assert order == ["h0", "h1", "old-low", "h2", "h3", "young-normal", "h4", "h5"]


class _Recorder(Middleware):
    """Records the queue of every message a worker processes."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.seen.append((message.actor_name, message.queue_name))


def test_a_high_message_overtakes_a_backlog_the_worker_already_fetched():
    # Given: one worker thread busy with the first of five normal messages, the other four
    # already fetched into the worker's memory
    broker = StubBroker()
    broker.emit_after("process_boot")
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    @dramatiq.actor(broker=broker, queue_name="t", actor_name="record", max_retries=0)
    def record(tag: str) -> None:
        order.append(tag)
        started.set()
        release.wait(10)

    broker.declare_queue("t.high")
    for index in range(5):
        record.send(f"n{index}")
    worker = build_worker(broker, 1, 20)
    worker.start()
    try:
        assert started.wait(10)
        # When: a high message is sent, and is waiting in the worker beside the backlog
        broker.enqueue(dramatiq.Message(queue_name="t.high", actor_name="record",
                                        args=("high",), kwargs={}, options={}))
        while broker.queues["t.high"].qsize():  # (until the worker has fetched it)
            threading.Event().wait(0.01)
        release.set()
        broker.join("t")
        broker.join("t.high")
        worker.join()
    finally:
        release.set()
        worker.stop()
    # Then: it runs as soon as the busy thread is free, before the other four
    assert order == ["n0", "high", "n1", "n2", "n3", "n4"]


def test_a_run_keeps_its_priority_from_first_stage_to_last(pipeline, plans_dir):
    # Given: a high-priority run (metadata.priority) and a worker recording queues
    recorder = _Recorder()
    pipeline.broker.add_middleware(recorder)
    run = pipeline.create(plans_dir / "lighthouse.json", priority="high")
    # When
    assert pipeline.work(run).status.value == "succeeded"
    # Then: every stage's message went through the stage's high queue
    assert [queue for _, queue in recorder.seen] == [
        keys.queue_name(stage, "high") for stage in STAGES]


def test_priority_given_on_the_command_line_wins_over_the_plan(pipeline, plans_dir):
    # Given: a low run (plan) raised to high for this run only (the run file)
    recorder = _Recorder()
    pipeline.broker.add_middleware(recorder)
    run = pipeline.create(plans_dir / "lighthouse.json", priority="low")
    priority.set_run_priority(run.dir, "high")
    # When
    assert pipeline.work(run).status.value == "succeeded"
    # Then
    assert {queue for _, queue in recorder.seen} == {
        keys.queue_name(stage, "high") for stage in STAGES}
    assert priority.of_run_dir(run.dir, "movie_plan.json") == "high"


@pytest.mark.parametrize("value", ["urgent", "HIGH", ""])
def test_a_plan_with_an_unknown_priority_is_refused_naming_the_field(plans_dir, value):
    # Given
    document = json.loads(Path(plans_dir / "lighthouse.json").read_text())
    document.setdefault("metadata", {})["priority"] = value
    # When
    with pytest.raises(PlanError) as caught:
        parse_plan_bytes(json.dumps(document).encode(), "plan.json")
    # Then: the error names the field and the accepted values
    text = str(caught.value)
    assert "metadata.priority" in text and "high, normal, low" in text


def test_a_plan_webhook_must_be_an_http_url(plans_dir):
    # Given
    document = json.loads(Path(plans_dir / "lighthouse.json").read_text())
    document.setdefault("metadata", {})["webhook"] = "file:///etc/passwd"
    # When / Then
    with pytest.raises(PlanError, match=r"metadata\.webhook"):
        parse_plan_bytes(json.dumps(document).encode(), "plan.json")


def test_a_worker_given_a_stage_queue_consumes_every_level_of_it():
    # Given / When / Then: `sparkle worker -Q sparkle.videos` (or -Q videos) keeps meaning
    # the whole stage; one level can still be named alone
    assert keys.worker_queues(["sparkle.videos", "tts"]) == [
        "sparkle.videos.high", "sparkle.videos", "sparkle.videos.low",
        "sparkle.tts.high", "sparkle.tts", "sparkle.tts.low"]
    assert keys.worker_queues(["sparkle.videos.high"]) == ["sparkle.videos.high"]
    with pytest.raises(ValueError, match="unknown queue"):
        keys.worker_queues(["sparkle.vidoes"])


# -- a stopping worker starts nothing new ----------------------------------------------------


def test_a_draining_work_queue_gives_a_waiting_thread_nothing_and_the_stopper_everything():
    """A worker thread already waiting for a message when the worker began to drain does
    not get one fetched afterwards; the thread that stops the worker (and gives waiting
    messages back to their queues) still does."""
    work = PriorityWorkQueue()
    got: list[Any] = []

    def waiting_thread() -> None:
        try:
            got.append(work.get(timeout=2.0))
        except Exception as exc:  # (what it raised is the assertion)
            got.append(exc)

    thread = threading.Thread(target=waiting_thread)
    thread.start()
    work.drain()
    work.put(_item("sparkle.tts", "next stage"))
    thread.join(10)
    assert len(got) == 1 and type(got[0]).__name__ == "Empty", got
    assert _drain(work) == ["next stage"]


def test_a_stopping_worker_does_not_start_the_next_stage_of_one_that_finishes():
    """SIGTERM's drain: the running message finishes and the message it sends is given
    back to its queue, not started by an idle thread that was still waiting (each waits up
    to the poll, here 3 s, before it looks whether to stop)."""
    broker = StubBroker()
    broker.emit_after("process_boot")
    started, ran = threading.Event(), []

    @dramatiq.actor(broker=broker, queue_name="first", max_retries=0)
    def first() -> None:
        started.set()
        threading.Event().wait(0.5)
        ran.append("first")
        second.send()

    @dramatiq.actor(broker=broker, queue_name="second", max_retries=0)
    def second() -> None:
        ran.append("second")

    worker = build_worker(broker, threads=2, timeout_ms=3000)
    worker.start()
    try:
        first.send()
        assert started.wait(10)
    finally:
        stop_worker(worker, timeout_ms=30_000)
    # (and given back to its queue: dramatiq's StubBroker forgets what it fetched, so
    # that half is test_ops.py's, on Redis)
    assert ran == ["first"]
    broker.close()

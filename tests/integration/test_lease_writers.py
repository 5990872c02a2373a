"""Only the holder of a run's lease writes its state, on a real Redis: `sparkle cancel` and
`sparkle resume --from` issued from another host while a stage holds the run write none of
the run's files (manifest, checkpoints, refs) themselves; the worker holding the run
records them before it lets go, the cancel takes effect, and manifest.json stays valid.

Every write to a run's state is observed with the lease's value in Redis at that moment,
and the tokens each thread took: a write is the holder's when the lease's value then is a
token its own thread took."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from schema_check import committed, schema_errors

from sparkle import keys, lifecycle
from sparkle.adapters.testing import read_trace
from sparkle.lease import Lease
from sparkle.runstore import Run
from sparkle.schemas import STAGES
from sparkle.stages import Adapter

pytestmark = pytest.mark.redis

#: The run's state: what only the lease holder may write.
WRITERS = ("append_event", "write_checkpoint", "remove_checkpoint", "merge_asset_refs",
           "save_asset_refs")


@dataclass
class Write:
    thread: str
    method: str
    #: What the write was about (the event's kind, the checkpoint's stage).
    what: str
    holder: bool


@dataclass
class Writes:
    """Every write to a run's state, and whether its thread held the run's lease then."""

    client: redis.Redis
    taken: dict[int, set[str]] = field(default_factory=dict)
    seen: list[Write] = field(default_factory=list)

    def by_others(self) -> list[Write]:
        return [w for w in self.seen if not w.holder]


@pytest.fixture
def redis_pipeline(redis_server, tmp_path, monkeypatch) -> Iterator[Any]:
    from conftest import _teardown_pipeline, make_pipeline

    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    client = redis.Redis.from_url(redis_server.url)
    monkeypatch.setenv("SPARKLE_REDIS_URL", redis_server.url)
    broker = build_redis_broker(Settings(), client=client)
    yield make_pipeline(tmp_path, monkeypatch, broker=broker, client=client)
    _teardown_pipeline()


@pytest.fixture
def writes(redis_pipeline, monkeypatch) -> Writes:
    observed = Writes(redis_pipeline.engine.client)
    real_acquire = Lease.acquire

    def acquire(self: Lease, also: Any = ()) -> bool:
        ours = real_acquire(self, also)
        if ours:
            observed.taken.setdefault(threading.get_ident(), set()).add(self.token)
        return ours

    monkeypatch.setattr(Lease, "acquire", acquire)
    for name in WRITERS:
        real = getattr(Run, name)

        def write(self: Run, *args: Any, _real: Callable[..., Any] = real, _name: str = name,
                  **kwargs: Any) -> Any:
            value = observed.client.get(keys.lease("sparkle", self.run_id))
            mine = observed.taken.get(threading.get_ident(), set())
            what = str(kwargs.get("status", args[1] if len(args) > 1 else "")
                       if _name == "append_event" else
                       getattr(args[0], "stage", args[0]) if args else "")
            observed.seen.append(Write(threading.current_thread().name, _name, what,
                                       value is not None and value.decode() in mine))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Run, name, write)
    return observed


class Held:
    """``stage`` of a run executed in a thread of its own (the worker on host A), its
    adapter held until :meth:`finish`."""

    def __init__(self, pipeline: Any, run: Run, stage: str) -> None:
        self.started, self.go = threading.Event(), threading.Event()
        adapter = pipeline.engine.adapters[stage]

        def held(plan: Any, refs: Any, run_dir: Any) -> Any:
            self.started.set()
            assert self.go.wait(30)
            return adapter.fn(plan, refs, run_dir)

        pipeline.engine.adapters[stage] = Adapter(stage, "held", held, ())
        self.outcome: list[Any] = []
        self.thread = threading.Thread(
            target=lambda: self.outcome.append(pipeline.engine.execute(stage, run.run_id)),
            name="worker-on-host-a")
        self.thread.start()
        assert self.started.wait(30), f"{stage} never started"
        self.adapter, self.pipeline, self.stage = adapter, pipeline, stage

    def finish(self) -> Any:
        self.go.set()
        self.thread.join(30)
        self.pipeline.engine.adapters[self.stage] = self.adapter
        return self.outcome[0]


def other_host(redis_server: Any, run: Run) -> tuple[Run, lifecycle.Leases]:
    """The run as a command on host B sees it: its own Run object and Redis connection."""
    client = redis.Redis.from_url(redis_server.url)
    return Run(run.dir.parent, run.run_id), lifecycle.Leases(client, "sparkle", False)


def valid_manifest(run: Run) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((run.dir / "manifest.json").read_bytes())
    assert schema_errors(document, committed("RunManifest")) == []
    return document


def work_up_to(pipeline: Any, run: Run, stage: str) -> None:
    for earlier in STAGES[:STAGES.index(stage)]:
        assert pipeline.engine.execute(earlier, run.run_id).value == "succeeded"


def work_to_the_end(pipeline: Any, run: Run) -> None:
    for _ in range(3 * len(STAGES)):
        stage = run.next_stage()
        if stage is None:
            return
        pipeline.engine.execute(stage, run.run_id)
    raise AssertionError("the run did not finish")


def test_cancel_from_another_host_while_a_stage_runs_is_recorded_by_the_stage_s_worker(
        redis_pipeline, writes, redis_server, plans_dir):
    pipeline = redis_pipeline
    run = pipeline.create(plans_dir / "rooftop.json")
    work_up_to(pipeline, run, "videos")
    # Given videos running on host A, holding the run's lease
    videos = Held(pipeline, run, "videos")
    before = len(writes.seen)
    # When `sparkle cancel` runs on host B
    there, leases = other_host(redis_server, run)
    done = lifecycle.cancel_run(there, by="ops@host-b", leases=leases, wait_sec=0.2)
    # Then B wrote none of the run's state, and the run is cancelled at once: the event
    # waits for the holder
    assert writes.seen[before:] == []
    assert done.result is lifecycle.CancelResult.cancelled and not done.recorded
    assert there.status().value == "cancelled"
    assert not any(e.status == "cancel" for e in there.events())
    # When videos ends
    assert videos.finish().value == "succeeded"
    # Then its worker recorded the cancel, before videos' success (as it happened), naming
    # who asked and the status before; no later stage was queued or began, and every
    # write was the lease holder's
    cancel = [e for e in run.events() if e.status == "cancel"]
    assert len(cancel) == 1
    assert (cancel[0].stage, cancel[0].metadata["by"], cancel[0].metadata["previous_status"]
            ) == ("videos", "ops@host-b", "running")
    assert [e.status for e in run.events() if e.stage == "videos"] == [
        "begin", "cancel", "success"]
    assert ("worker-on-host-a", "cancel") in [(w.thread, w.what) for w in writes.seen[before:]]
    assert writes.by_others() == []
    assert run.status().value == "cancelled"
    assert pipeline.engine.dispatcher.pending(run.run_id) is None
    assert pipeline.engine.execute("tts", run.run_id).value == "cancelled"
    assert not any(e.stage == "tts" and e.status == "begin" for e in run.events())
    assert [e["status"] for e in valid_manifest(run)["events"]].count("cancel") == 1


def test_resume_from_another_host_while_a_stage_runs_is_carried_out_by_its_worker(
        redis_pipeline, writes, redis_server, plans_dir):
    pipeline = redis_pipeline
    run = pipeline.create(plans_dir / "rooftop.json")
    work_up_to(pipeline, run, "tts")
    # Given tts running on host A
    tts = Held(pipeline, run, "tts")
    before = len(writes.seen)
    # When `sparkle resume --from images` runs on host B
    there, _ = other_host(redis_server, run)
    done = lifecycle.resume_run(there, pipeline.engine.dispatcher, from_stage="images",
                                wait_sec=0.2)
    # Then B wrote none of the run's state: the resume is handed to the worker
    assert writes.seen[before:] == []
    assert done.handed_over and done.queued is None
    assert done.reset == list(STAGES[STAGES.index("images"):])
    assert run.checkpoint("images").status == "success"
    # When tts ends
    assert tts.finish().value == "succeeded"
    # Then its worker reset images and every later stage, and queued images
    resets = [(w.thread, w.what) for w in writes.seen[before:] if w.what == "reset"]
    assert resets == [("worker-on-host-a", "reset")] * len(done.reset)
    assert run.checkpoint("images") is None
    assert pipeline.engine.dispatcher.pending(run.run_id)[0] == "images"
    # and the run, worked on, draws images again and finishes
    work_to_the_end(pipeline, run)
    assert run.status().value == "succeeded"
    counts = Counter(record["stage"] for record in read_trace(run.dir))
    assert [counts[s] for s in STAGES] == [1, 2, 2, 2, 1, 1, 1]  # (tts ran before too)
    assert writes.by_others() == []
    valid_manifest(run)


def test_cancel_then_resume_while_held_leave_the_history_in_order(
        redis_pipeline, writes, redis_server, plans_dir):
    """Cancel, then resume, both from host B while images runs: the holder records the
    cancel, then lifts it, and the run goes on."""
    pipeline = redis_pipeline
    run = pipeline.create(plans_dir / "rooftop.json")
    work_up_to(pipeline, run, "images")
    images = Held(pipeline, run, "images")
    there, leases = other_host(redis_server, run)
    cancelled = lifecycle.cancel_run(there, by="b", leases=leases, wait_sec=0)
    resumed = lifecycle.resume_run(there, pipeline.engine.dispatcher, wait_sec=0)
    assert writes.by_others() == []
    assert not cancelled.recorded and resumed.handed_over
    assert there.cancelled  # (lifted by the holder, not by B)
    assert images.finish().value == "succeeded"
    assert not run.cancelled
    assert [e.status for e in run.events()][-2:] == ["cancel", "success"]
    assert pipeline.engine.dispatcher.pending(run.run_id)[0] == "videos"
    assert writes.by_others() == []
    work_to_the_end(pipeline, run)
    assert run.status().value == "succeeded"


def test_a_resume_asked_after_a_cancel_does_not_lift_a_cancel_asked_after_it(
        redis_pipeline, redis_server, plans_dir):
    """Resume, then cancel, both from host B while script runs: the later cancel stands."""
    pipeline = redis_pipeline
    run = pipeline.create(plans_dir / "rooftop.json")
    script = Held(pipeline, run, "script")
    there, leases = other_host(redis_server, run)
    lifecycle.cancel_run(there, by="first", leases=leases, wait_sec=0)
    lifecycle.resume_run(there, pipeline.engine.dispatcher, wait_sec=0)
    lifecycle.cancel_run(there, by="second", leases=leases, wait_sec=0)
    assert script.finish().value == "succeeded"
    assert run.status().value == "cancelled"
    assert [e.metadata["by"] for e in run.events() if e.status == "cancel"] == ["first",
                                                                                  "second"]
    assert pipeline.engine.dispatcher.pending(run.run_id) is None


def test_commands_wait_briefly_for_the_holder_and_record_on_a_free_run_themselves(
        redis_pipeline, writes, redis_server, plans_dir):
    """With a moment to wait, `sparkle cancel` reports the cancel recorded once the stage's
    worker recorded it; on a run nobody holds it takes the lease and writes itself."""
    pipeline = redis_pipeline
    run = pipeline.create(plans_dir / "rooftop.json")
    script = Held(pipeline, run, "script")
    there, leases = other_host(redis_server, run)
    threading.Timer(0.3, script.go.set).start()
    started = time.monotonic()
    done = lifecycle.cancel_run(there, by="b", leases=leases, wait_sec=20)
    assert done.recorded and time.monotonic() - started < 10
    assert script.finish().value == "succeeded"
    # Free now: resume --from script resets and queues script, holding the lease
    resumed = lifecycle.resume_run(there, pipeline.engine.dispatcher, from_stage="script",
                                   wait_sec=0)
    assert not resumed.handed_over and resumed.queued == "script"
    assert not there.cancelled
    assert [w.thread for w in writes.seen if w.what in ("reset", "cancel")] == [
        "worker-on-host-a"] + ["MainThread"] * len(STAGES)
    assert writes.by_others() == []
    valid_manifest(run)

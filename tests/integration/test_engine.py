"""The engine's execution of one stage message, through the real actors and the embedded
pipeline (StubBroker, in-process leases; an in-process dramatiq worker where the chain is
worked): the skip rule for done, out-of-order and busy stages, retries inside a message,
checkpoints recorded only after their files are on disk, fencing by the run's lease,
crash loops, infrastructure failures held back instead of failed, and runs side by side.

The chain as a whole, resume and review are in test_pipeline_embedded.py and
test_review.py; a worker process on Redis meeting a full disk in test_full_disk.py.
"""

from __future__ import annotations

import io
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sparkle.adapters.testing import read_trace
from sparkle.lease import holder as lease_holder
from sparkle.outcomes import Outcome
from sparkle.runner import work_in_foreground
from sparkle.runstore import Run
from sparkle.schemas import STAGES
from sparkle.stages import Adapter


def calls(run: object) -> Counter[str]:
    """How many times each stage's adapter was called for a run."""
    return Counter(record["stage"] for record in read_trace(run.dir))  # type: ignore[attr-defined]


# -- the skip rule: what a message runs ------------------------------------------------------


def test_duplicate_message_for_done_stage_runs_nothing_and_sends_nothing(pipeline, plans_dir):
    """A replayed message of a finished stage executes nothing and enqueues nothing."""
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.work(run)
    before = calls(run)
    # When the images message is delivered again, directly to the engine
    outcome = pipeline.engine.execute("images", run.run_id)
    # Then nothing ran and no message was sent to any queue
    assert outcome is Outcome.skipped
    assert calls(run) == before
    queued = {q: pipeline.broker.queues[q].qsize() for q in pipeline.broker.queues}
    assert sum(queued.values()) == 0, queued


@pytest.mark.parametrize("stage", ["script", "lipsync"])
def test_message_for_a_removed_run_folder_runs_nothing_and_leaves_nothing(
        pipeline, plans_dir, stage):
    """A message whose run folder was removed meanwhile (first stage or later) is dropped:
    no adapter runs, no file or folder is made again, nothing is queued and the run's
    lease is left free."""
    run = pipeline.create(plans_dir / "rooftop.json")
    if stage != "script":
        for earlier in STAGES[:STAGES.index(stage)]:
            assert pipeline.engine.execute(earlier, run.run_id) is Outcome.succeeded
        pipeline.broker.flush_all()
    shutil.rmtree(run.dir)
    assert pipeline.engine.execute(stage, run.run_id) is Outcome.missing
    assert not run.dir.exists()
    assert sum(q.qsize() for q in pipeline.broker.queues.values()) == 0
    assert lease_holder(pipeline.engine.client, "sparkle", run.run_id) is None


def test_duplicate_message_mid_run_does_not_start_a_second_chain(pipeline, plans_dir):
    """While the next stage has a message on its way, a replay of the previous stage does
    not send another one, so a run never has two chains."""
    run = pipeline.create(plans_dir / "rooftop.json")
    # Given script ran by hand and its successor (images) is queued, not yet consumed
    assert pipeline.engine.execute("script", run.run_id) is Outcome.succeeded
    assert pipeline.broker.queues["sparkle.images"].qsize() == 1
    # When the script message is replayed twice
    pipeline.engine.execute("script", run.run_id)
    pipeline.engine.execute("script", run.run_id)
    # Then there is still exactly one images message
    assert pipeline.broker.queues["sparkle.images"].qsize() == 1
    assert calls(run)["script"] == 1


def test_out_of_order_message_queues_the_missing_stage_instead(pipeline, plans_dir):
    """A message for qa on a run whose script is not done runs nothing and queues script."""
    run = pipeline.create(plans_dir / "rooftop.json")
    assert pipeline.engine.execute("qa", run.run_id) is Outcome.out_of_order
    assert pipeline.broker.queues["sparkle.script"].qsize() == 1
    assert sum(calls(run).values()) == 0


def test_busy_run_is_left_to_its_lease_holder(pipeline, plans_dir):
    """When another worker holds the run's lease, a message for it runs nothing."""
    from sparkle.lease import Lease

    run = pipeline.create(plans_dir / "rooftop.json")
    other = Lease(pipeline.engine.client, "sparkle", run.run_id, 30)
    assert other.acquire()
    assert pipeline.engine.execute("script", run.run_id) is Outcome.busy
    assert sum(calls(run).values()) == 0
    other.release()
    assert pipeline.engine.execute("script", run.run_id) is Outcome.succeeded


def test_crash_loop_is_failed_instead_of_redelivered_forever(pipeline, plans_dir):
    """Three begins without an outcome (the worker died each time) fail the stage."""
    run = pipeline.create(plans_dir / "rooftop.json")
    for attempt in (1, 2, 3):
        run.append_event("script", "begin", attempt)
    from sparkle.outcomes import StageFailed

    with pytest.raises(StageFailed, match="crash loop"):
        pipeline.engine.execute("script", run.run_id)
    assert run.checkpoint("script").status == "failed"
    assert calls(run)["script"] == 0


def test_a_plain_run_never_needs_the_full_look_after_a_success(pipeline, plans_dir,
                                                              monkeypatch):
    """With nobody else touching the run, the look after each success re-reads only the
    later stages: the full look (every checkpoint and the whole history again) is never
    taken by the worker. (A look taken in the wrong order would always fall back to it.)"""
    run = pipeline.create(plans_dir / "rooftop.json")
    full_looks: list[str] = []
    real_next_stage = Run.next_stage

    def next_stage(self: Run) -> str | None:
        if threading.current_thread().name != "MainThread":
            full_looks.append(threading.current_thread().name)
        return real_next_stage(self)

    monkeypatch.setattr(Run, "next_stage", next_stage)
    assert pipeline.work(run).status.value == "succeeded"
    assert full_looks == []


# -- retries inside a message ----------------------------------------------------------------


def test_transient_failure_is_retried_with_each_attempt_recorded(pipeline, plans_dir):
    """Two transient failures then success: attempts 1-3 recorded, next stage runs once."""
    run = pipeline.create(plans_dir / "lighthouse.json", fault_images="transient:2")
    result = pipeline.work(run)
    assert result.status.value == "succeeded"
    images = [(e.status, e.attempt) for e in run.events() if e.stage == "images"]
    assert images == [
        ("begin", 1),
        ("fail", 1),
        ("begin", 2),
        ("fail", 2),
        ("begin", 3),
        ("success", 3),
    ]
    assert run.checkpoint("images").attempt == 3
    assert calls(run)["images"] == 3
    assert calls(run)["videos"] == 1


def test_exhausted_transient_failures_fail_the_stage(pipeline, plans_dir):
    """A stage that fails transiently more often than the attempt budget fails for good."""
    run = pipeline.create(plans_dir / "lighthouse.json", fault_tts="transient:10")
    result = pipeline.work(run)
    assert result.status.value == "failed"
    checkpoint = run.checkpoint("tts")
    assert checkpoint.status == "failed"
    assert "gave up after 3 attempt(s)" in checkpoint.error
    assert calls(run)["lipsync"] == 0


# -- checkpoints and the files they name -----------------------------------------------------


def test_adapter_writing_outside_the_run_folder_fails_permanently(pipeline, plans_dir):
    """Asset paths that resolve outside the run folder are refused, not recorded."""

    def escaping(plan, refs, run_dir):
        refs.extras["evil"] = "../../etc/passwd"
        return refs

    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.adapters["script"] = Adapter("script", "evil", escaping, ())
    assert pipeline.work(run).status.value == "failed"
    assert "outside run folder" in run.checkpoint("script").error
    assert "evil" not in run.asset_refs().extras


def fsyncs_and_refs_saved(monkeypatch: pytest.MonkeyPatch, extra: str) -> list[str]:
    """From now on, in order: each path fsynced, and "asset_refs naming <extra>" when
    asset_refs.json is saved naming the extra ``extra``."""
    import os

    seen: list[str] = []
    fsync, save_asset_refs = os.fsync, Run.save_asset_refs

    def recorded_fsync(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    def recorded_save(self: Run, refs: Any) -> None:
        if extra in refs.extras:
            seen.append(f"asset_refs naming {extra}")
        save_asset_refs(self, refs)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(Run, "save_asset_refs", recorded_save)
    return seen


def test_a_success_is_recorded_only_after_the_files_it_names_are_on_disk(
        pipeline, plans_dir, monkeypatch):
    """Before asset_refs.json (and so the success) names a file an attempt wrote, the file
    and every new folder on its way are fsynced: a record that survives a power cut must
    not vouch for media that did not."""

    script = pipeline.engine.adapters["script"]

    def with_outline(plan: Any, refs: Any, run_dir: Path) -> Any:
        seen.append("adapter began")
        refs, metadata = script.fn(plan, refs, run_dir)
        (run_dir / "notes" / "deep").mkdir(parents=True)
        (run_dir / "notes" / "deep" / "outline.txt").write_text("beats")
        refs.extras["outline"] = "notes/deep/outline.txt"
        return refs, metadata

    pipeline.engine.adapters["script"] = Adapter("script", "outline", with_outline, ())
    seen = fsyncs_and_refs_saved(monkeypatch, "outline")
    run = pipeline.create(plans_dir / "rooftop.json")
    assert pipeline.work(run).status.value == "succeeded"
    named = seen.index("asset_refs naming outline")
    # (from the adapter's start: the run's creation fsynced its folder already)
    stage = seen.index("adapter began")
    root = str(run.dir.resolve())
    for path in (f"{root}/notes/deep/outline.txt", f"{root}/notes/deep", f"{root}/notes",
                 root):
        assert path in seen[stage:named], f"{path} was not fsynced before the refs named it"
    # (deepest first: a new folder's entry in its parent is flushed after its contents)
    assert seen.index(f"{root}/notes/deep") < seen.index(f"{root}/notes")


def test_a_retry_that_reuses_a_failed_attempts_file_flushes_it_first(
        pipeline, plans_dir, monkeypatch):
    """An attempt that fails flushes nothing; the retry that reuses its file (a paid call
    not made twice) must flush it before its success names it."""

    from sparkle.errors import TransientStageError

    script = pipeline.engine.adapters["script"]
    attempts: list[int] = []

    def render_once(plan: Any, refs: Any, run_dir: Path) -> Any:
        attempts.append(1)
        refs, metadata = script.fn(plan, refs, run_dir)
        costly = run_dir / "cache" / "costly.bin"
        if not costly.exists():
            costly.parent.mkdir(exist_ok=True)
            costly.write_bytes(b"paid for once")
            raise TransientStageError("the service hung up after sending the file")
        refs.extras["costly"] = "cache/costly.bin"
        return refs, metadata

    pipeline.engine.adapters["script"] = Adapter(
        "script", "render-once", render_once, (TransientStageError,))
    # (no file counts as changed since the refs' save: only being new to them can flush it)
    monkeypatch.setattr("sparkle.atomic.CLOCK_SLACK_SEC", -3600.0)
    seen = fsyncs_and_refs_saved(monkeypatch, "costly")
    run = pipeline.create(plans_dir / "rooftop.json")
    assert pipeline.work(run).status.value == "succeeded"
    assert len(attempts) == 2
    named = seen.index("asset_refs naming costly")
    assert str(run.dir.resolve() / "cache" / "costly.bin") in seen[:named]


# -- fencing: a worker that lost the run's lease ---------------------------------------------


def test_a_worker_that_lost_its_lease_records_no_failure(pipeline, plans_dir):
    """A worker paused past its lease (another worker took the run over meanwhile) whose
    adapter then fails must record nothing: a fail event or a failed checkpoint written
    over the new owner's work would stop a run that is going fine."""
    from sparkle import keys

    run = pipeline.create(plans_dir / "rooftop.json")
    for stage in STAGES[:2]:
        assert pipeline.engine.execute(stage, run.run_id) is Outcome.succeeded
    pipeline.broker.flush_all()

    def taken_over_then_failing(plan: Any, refs: Any, run_dir: Path) -> Any:
        pipeline.engine.client.set(keys.lease("sparkle", run.run_id), "the new owner")
        raise ValueError("broken input")

    pipeline.engine.adapters["videos"] = Adapter("videos", "taken-over",
                                                 taken_over_then_failing, ())
    assert pipeline.engine.execute("videos", run.run_id) is Outcome.lease_lost
    assert [e.status for e in run.events() if e.stage == "videos"] == ["begin"]
    checkpoint = run.checkpoint("videos")
    assert checkpoint is not None and checkpoint.status == "begin"


def test_a_lease_that_expired_with_nobody_taking_over_sends_the_stage_again(
        pipeline, plans_dir):
    """A worker suspended past its lease's TTL (a laptop asleep during `sparkle run`)
    records nothing when it wakes; when nobody took the run over meanwhile, nobody else
    would continue it either, so the stage is queued again and the run goes on."""
    from sparkle import keys

    run = pipeline.create(plans_dir / "rooftop.json")
    for stage in STAGES[:2]:
        assert pipeline.engine.execute(stage, run.run_id) is Outcome.succeeded
    pipeline.broker.flush_all()
    calls_made: list[int] = []

    def expired_then_fine(plan: Any, refs: Any, run_dir: Path) -> Any:
        calls_made.append(1)
        if len(calls_made) == 1:
            pipeline.engine.client.delete(keys.lease("sparkle", run.run_id))  # expired
            raise ValueError("failed while the lease was gone")
        return refs

    pipeline.engine.adapters["videos"] = Adapter("videos", "expires", expired_then_fine, ())
    assert pipeline.engine.execute("videos", run.run_id) is Outcome.lease_lost
    assert pipeline.broker.queues["sparkle.videos"].qsize() == 1
    assert [e.status for e in run.events() if e.stage == "videos"] == ["begin"]
    assert pipeline.engine.execute("videos", run.run_id) is Outcome.succeeded
    assert [e.status for e in run.events() if e.stage == "videos"] == [
        "begin", "begin", "success"]


def test_a_lease_lost_after_the_fail_event_writes_no_failed_checkpoint(
        pipeline, plans_dir, monkeypatch):
    """The failed checkpoint is fenced on its own: a lease lost between an attempt's fail
    event and the checkpoint leaves the new owner's checkpoint alone."""
    from sparkle import keys

    run = pipeline.create(plans_dir / "rooftop.json")
    for stage in STAGES[:2]:
        assert pipeline.engine.execute(stage, run.run_id) is Outcome.succeeded
    pipeline.broker.flush_all()

    def failing(plan: Any, refs: Any, run_dir: Path) -> Any:
        raise ValueError("broken input")

    pipeline.engine.adapters["videos"] = Adapter("videos", "failing", failing, ())
    real_append = Run.append_event

    def append_then_lose_the_lease(self: Run, stage: str, status: str, *args: Any,
                                   **kwargs: Any) -> Any:
        event = real_append(self, stage, status, *args, **kwargs)
        if stage == "videos" and status == "fail":
            pipeline.engine.client.set(keys.lease("sparkle", run.run_id), "the new owner")
        return event

    monkeypatch.setattr(Run, "append_event", append_then_lose_the_lease)
    assert pipeline.engine.execute("videos", run.run_id) is Outcome.lease_lost
    checkpoint = run.checkpoint("videos")
    assert checkpoint is not None and checkpoint.status == "begin"


# -- infrastructure failures -----------------------------------------------------------------


def _disk_full_once(run_dir_of_call: list[Path]):  # type: ignore[no-untyped-def]
    """An images adapter whose first call meets a full disk inside the run folder (wrapped in
    its own error, as the media adapters do), then works."""
    from sparkle.adapters.testing import FIXED
    from sparkle.errors import TransientStageError

    def images(plan, refs, run_dir):  # type: ignore[no-untyped-def]
        run_dir_of_call.append(run_dir)
        if len(run_dir_of_call) == 1:
            cause = OSError(28, "No space left on device", str(run_dir / "frames" / "s1.png"))
            raise TransientStageError(f"cannot write: {cause}") from cause
        return FIXED["images"](plan, refs, run_dir)

    return images


def test_an_adapter_meeting_a_full_run_folder_is_held_back_not_failed(
        pipeline, plans_dir, monkeypatch):
    """An adapter's own ENOSPC on a file of the run folder is an infrastructure failure: the
    stage is sent again after a backoff with no attempt spent on retries, and (worked as
    `serve` does, without stopping on it) the run finishes."""
    from sparkle import engine as engine_module
    from sparkle.stages import Adapter

    monkeypatch.setattr(engine_module, "INFRA_RETRY_MIN_SEC", 0.05)
    calls: list[Path] = []
    pipeline.engine.adapters["images"] = Adapter("images", "full-once", _disk_full_once(calls),
                                                 ())
    run = pipeline.create(plans_dir / "lighthouse.json")
    # When the run is worked to its end, as serve works it (not stopping on the failure)
    result = work_in_foreground(run, pipeline.app, 2, Console(file=io.StringIO()),
                                stop_on_infrastructure=False)
    # Then it succeeded; images ran twice, and its first attempt is a fail marked as the disk's
    assert result.status.value == "succeeded"
    assert len(calls) == 2
    images = [(e.status, e.attempt, e.metadata.get("infrastructure")) for e in run.events()
              if e.stage == "images"]
    assert images == [("begin", 1, None), ("fail", 1, True), ("begin", 2, None),
                      ("success", 2, None)]


def test_the_foreground_run_stops_on_an_infrastructure_failure(pipeline, plans_dir):
    """`sparkle run`'s loop returns the failure at once instead of waiting on the retries."""
    from sparkle.stages import Adapter

    calls: list[Path] = []
    pipeline.engine.adapters["images"] = Adapter("images", "full-once", _disk_full_once(calls),
                                                 ())
    run = pipeline.create(plans_dir / "lighthouse.json")
    # When it is worked in the foreground, watching for infrastructure failures
    result = pipeline.work(run)
    # Then it stopped on the first one, naming the file and the cause
    assert result.infrastructure is not None
    assert "frames/s1.png: No space left on device (ENOSPC)" in str(result.infrastructure)
    assert result.status.value == "running" and len(calls) == 1


# -- runs side by side -----------------------------------------------------------------------


def test_two_runs_adapters_run_at_the_same_time(pipeline, plans_dir):
    """Two runs' adapters run at the same time (they meet at a barrier): nothing in the
    engine makes one stage wait for another run's."""
    engine = pipeline.engine
    script = engine.adapters["script"]
    both_inside = threading.Barrier(2, timeout=20)

    def meeting(plan: Any, refs: Any, run_dir: Path) -> Any:
        both_inside.wait()  # broken (and the stage failed) if the other cannot get here
        return script.fn(plan, refs, run_dir)

    engine.adapters["script"] = Adapter("script", "meeting", meeting, ())
    # (the adapters run away from the bookkeeping turn, sparkle.turn: its own way out, a
    # new turn after wait_sec, must not be what lets them meet)
    engine.turn.wait_sec = 60
    first = pipeline.create(plans_dir / "lighthouse.json")
    second = pipeline.create(plans_dir / "rooftop.json")
    engine.dispatcher.kick(second)
    assert pipeline.work(first).status.value == "succeeded"
    assert pipeline.work(second).status.value == "succeeded"

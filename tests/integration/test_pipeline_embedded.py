"""The stage chain through the real actors, engine and an in-process dramatiq worker."""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sparkle.adapters.testing import FIXED, read_trace
from sparkle.errors import ConfigError
from sparkle.handover import force_rerun
from sparkle.lease import holder as lease_holder
from sparkle.outcomes import Outcome
from sparkle.runstore import Run
from sparkle.schemas import STAGES, Checkpoint
from sparkle.stages import Adapter

SCHEMAS = Path(__file__).parents[2] / "schemas"


def calls(run: object) -> Counter[str]:
    """How many times each stage's adapter was called for a run."""
    return Counter(record["stage"] for record in read_trace(run.dir))  # type: ignore[attr-defined]


def work_in_background(pipeline: Any, run: Any) -> list[Any]:
    """Work the run's chain in a thread named "foreground", for at most 60 s: if nothing
    continues the chain, the worker would wait forever. Returns its result, or nothing."""
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(pipeline.work(run)), daemon=True,
                              name="foreground")
    worker.start()
    worker.join(60)
    return results


def in_worker() -> bool:
    """Whether the calling thread is one of the pipeline's worker threads."""
    return threading.current_thread().name not in ("foreground", "MainThread")


def qa_failed_then_fixed(pipeline: Any, plans_dir: Path) -> Any:
    """A run whose qa failed for good, with qa's adapter fixed since: resuming it runs qa."""
    run = pipeline.create(plans_dir / "rooftop.json", fault_qa="permanent")
    assert pipeline.work(run).status.value == "failed"
    pipeline.engine.adapters["qa"] = Adapter("qa", "fixed", FIXED["qa"], ())
    return run


def test_chain_runs_all_seven_stages_in_order(pipeline, plans_dir):
    """A run ends with seven success checkpoints and a manifest of begin/success pairs."""
    # Given a new run of the lighthouse plan
    run = pipeline.create(plans_dir / "lighthouse.json")
    # When I work it to its end
    result = pipeline.work(run)
    # Then it succeeded, every stage once, in order
    assert result.status.value == "succeeded"
    schema = json.loads((SCHEMAS / "Checkpoint.schema.json").read_text())
    for stage in STAGES:
        raw = json.loads((run.dir / "checkpoints" / f"{stage}.json").read_text())
        assert set(raw) <= set(schema["properties"]) and set(schema["required"]) <= set(raw)
        checkpoint = Checkpoint.model_validate(raw)
        assert (checkpoint.status, checkpoint.attempt) == ("success", 1)
        assert checkpoint.metadata["adapter"].startswith("test:")
        assert checkpoint.metadata["duration_sec"] >= 0
    events = [(e.stage, e.status, e.attempt) for e in run.events()]
    assert events == [(s, status, 1) for s in STAGES for status in ("begin", "success")]
    assert calls(run) == Counter({stage: 1 for stage in STAGES})
    # And the movie the test set makes exists
    assert (run.dir / run.asset_refs().extras["final_movie"]).stat().st_size > 0


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


def test_permanent_failure_stops_the_run_and_dead_letters(pipeline, plans_dir):
    """A permanent failure in videos: failed checkpoint, no tts, message dead-lettered;
    after the adapter is fixed, resuming finishes without re-running earlier stages."""
    run = pipeline.create(plans_dir / "lighthouse.json", fault_videos="permanent")
    result = pipeline.work(run)
    # Then the run failed at videos, with the adapter's error
    assert result.status.value == "failed"
    checkpoint = run.checkpoint("videos")
    assert checkpoint.status == "failed"
    assert "injected permanent fault in videos" in checkpoint.error
    assert calls(run)["tts"] == 0
    assert calls(run)["videos"] == 1  # permanent: no second attempt
    dead = [m.actor_name for m in pipeline.broker.dead_letters]
    assert dead == ["sparkle_videos"]
    # When the adapter is fixed and the run resumed
    pipeline.engine.adapters["videos"] = Adapter("videos", "fixed", FIXED["videos"], ())
    result = pipeline.work(run)
    # Then it finishes without calling script or images again
    assert result.status.value == "succeeded"
    assert calls(run)["script"] == 1 and calls(run)["images"] == 1
    assert calls(run)["videos"] == 2 and calls(run)["qa"] == 1
    assert run.checkpoint("videos").attempt == 2  # attempts keep counting across resumes


def test_resume_from_reruns_that_stage_and_all_later(pipeline, plans_dir):
    """--from lipsync re-runs lipsync, assemble and qa; earlier stages stay done."""
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.work(run)
    reset = force_rerun(run, from_stage="lipsync")
    assert reset == ["lipsync", "assemble", "qa"]
    assert [e.stage for e in run.events() if e.status == "reset"] == reset
    assert pipeline.work(run).status.value == "succeeded"
    counts = calls(run)
    assert [counts[s] for s in STAGES] == [1, 1, 1, 1, 2, 2, 2]
    assert run.checkpoint("qa").attempt == 2


def test_resume_only_reruns_one_stage(pipeline, plans_dir):
    """--only images re-runs images alone."""
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.work(run)
    force_rerun(run, only="images")
    assert pipeline.work(run).status.value == "succeeded"
    counts = calls(run)
    assert [counts[s] for s in STAGES] == [1, 2, 1, 1, 1, 1, 1]


def test_a_reset_made_while_a_stage_runs_is_continued_by_that_stage(pipeline, plans_dir):
    """`sparkle resume --from videos` issued while `images` runs (re-run with --only) queues
    nothing itself, because a worker holds the run: that worker must continue the chain
    from videos after images, from a fresh look at the run, not from what it read before
    its adapter ran."""
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.work(run)
    force_rerun(run, only="images")

    def images_while_someone_resets(plan, refs, run_dir):
        result = FIXED["images"](plan, refs, run_dir)
        assert force_rerun(run, from_stage="videos") == ["videos", "tts", "lipsync",
                                                          "assemble", "qa"]
        return result

    pipeline.engine.adapters["images"] = Adapter("images", "resetting",
                                                 images_while_someone_resets, ())
    results = work_in_background(pipeline, run)
    assert results, "nothing continued the chain after images: videos was never queued"
    assert results[0].status.value == "succeeded"
    counts = calls(run)
    assert [counts[s] for s in STAGES] == [1, 2, 2, 2, 2, 2, 2]


def test_a_reset_made_while_the_worker_reads_the_run_is_not_missed(
        pipeline, plans_dir, monkeypatch):
    """`sparkle resume --only images` made just after a worker, handling the qa message of
    an earlier resume, read the run's history (which says images is done): resume's kick
    leaves the chain to the lease holder, so after qa the worker must still go back to
    images. (Its cheap look after the success trusts its first look only while nobody
    else appended to the history.)"""
    run = qa_failed_then_fixed(pipeline, plans_dir)
    real_events = Run._events
    fired = threading.Event()

    def events(self: Run) -> Any:
        value = real_events(self)
        if not fired.is_set() and in_worker():
            fired.set()
            other = Run(self.dir.parent, self.run_id)  # another process: `sparkle resume`
            assert force_rerun(other, only="images") == ["images"]
            assert pipeline.engine.dispatcher.kick(other) is None  # the lease is held
        return value

    monkeypatch.setattr(Run, "_events", events)
    results = work_in_background(pipeline, run)
    assert fired.is_set()
    assert results, "the chain stopped: images was reset but never re-run"
    assert results[0].status.value == "succeeded"
    assert calls(run)["images"] == 2


def test_a_reset_appended_before_the_history_read_is_not_missed_either(
        pipeline, plans_dir, monkeypatch):
    """The other order: `sparkle resume --only images` appends its reset event just before
    the worker reads the history, and removes images' checkpoint just after the worker
    read it. The look holds the reset event but saw the checkpoint: the worker must not
    trust it, and must go back to images after qa."""
    run = qa_failed_then_fixed(pipeline, plans_dir)
    real_events, real_checkpoint = Run._events, Run.checkpoint
    other = Run(run.dir.parent, run.run_id)  # `sparkle resume --only images`
    attempt = max(1, other.attempts("images"))
    appended, removed = threading.Event(), threading.Event()

    def events(self: Run) -> Any:
        if in_worker() and not appended.is_set():
            appended.set()  # reset_stages, first the event
            other.append_event("images", "reset", attempt, metadata={"reason": "--only"})
        return real_events(self)

    def checkpoint(self: Run, stage: str) -> Checkpoint | None:
        value = real_checkpoint(self, stage)
        if stage == "images" and in_worker() and appended.is_set() and not removed.is_set():
            removed.set()  # then the checkpoint, after the worker read it
            other.remove_checkpoint("images")
            assert pipeline.engine.dispatcher.kick(other) is None  # the lease is held
        return value

    monkeypatch.setattr(Run, "_events", events)
    monkeypatch.setattr(Run, "checkpoint", checkpoint)
    results = work_in_background(pipeline, run)
    assert appended.is_set() and removed.is_set()
    assert results, "the chain stopped: images was reset but never re-run"
    assert results[0].status.value == "succeeded"
    assert calls(run)["images"] == 2


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


def test_resume_only_refuses_when_an_earlier_stage_is_not_done(pipeline, plans_dir):
    """--only tts is refused while videos has failed: its inputs would be missing."""
    run = pipeline.create(plans_dir / "rooftop.json", fault_videos="permanent")
    pipeline.work(run)
    with pytest.raises(ConfigError, match="videos not done; use --from videos"):
        force_rerun(run, only="tts")
    assert not any(e.status == "reset" for e in run.events())


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
    first = pipeline.create(plans_dir / "lighthouse.json")
    second = pipeline.create(plans_dir / "rooftop.json")
    engine.dispatcher.kick(second)
    assert pipeline.work(first).status.value == "succeeded"
    assert pipeline.work(second).status.value == "succeeded"

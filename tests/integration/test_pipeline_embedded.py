"""The stage chain through the real actors, engine and an in-process dramatiq worker: the
whole chain, dead letters, resume. The engine's handling of one stage message is tested in
test_engine.py."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sparkle.adapters.testing import FIXED, read_trace
from sparkle.errors import ConfigError
from sparkle.handover import force_rerun
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


def test_resume_only_refuses_when_an_earlier_stage_is_not_done(pipeline, plans_dir):
    """--only tts is refused while videos has failed: its inputs would be missing."""
    run = pipeline.create(plans_dir / "rooftop.json", fault_videos="permanent")
    pipeline.work(run)
    with pytest.raises(ConfigError, match="videos not done; use --from videos"):
        force_rerun(run, only="tts")
    assert not any(e.status == "reset" for e in run.events())

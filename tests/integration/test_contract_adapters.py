"""What the seed contract lets an adapter do, through the real engine and actors."""

from __future__ import annotations

import time

from sparkle.schemas import Checkpoint
from sparkle.stages import Adapter


def test_paths_absolute_inside_the_run_folder_are_stored_relative_and_uris_kept(
        pipeline, plans_dir):
    """An adapter may store absolute paths inside run_dir (the contract's example does) and
    URIs: the refs keep the first relative to the run folder and the second as given."""

    def absolute(plan, refs, run_dir):
        (run_dir / "notes").mkdir(exist_ok=True)
        (run_dir / "notes" / "a.txt").write_text("a")
        refs["extras"]["notes"] = str(run_dir / "notes" / "a.txt")
        refs["extras"]["remote"] = "s3://bucket/key.png"
        return refs

    # Given a script adapter storing an absolute path and a URI
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.adapters["script"] = Adapter("script", "absolute", absolute, ())
    # When the run is worked
    pipeline.work(run)
    # Then they were stored relative and unchanged
    extras = run.asset_refs().extras
    assert extras["notes"] == "notes/a.txt"
    assert extras["remote"] == "s3://bucket/key.png"


def test_an_absolute_path_outside_the_run_folder_is_a_permanent_error_naming_stage_and_path(
        pipeline, plans_dir, tmp_path):
    """A path outside run_dir fails the stage for good, saying which stage stored which path."""
    outside = str(tmp_path / "elsewhere.png")

    def escaping(plan, refs, run_dir):
        refs["shots"]["shot_001"]["start_frame"] = outside
        return refs

    # Given a script adapter storing a path outside the run folder
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.adapters["script"] = Adapter("script", "escaping", escaping, ())
    # When the run is worked
    assert pipeline.work(run).status.value == "failed"
    # Then the stage failed once, the error naming the stage and the path
    checkpoint = run.checkpoint("script")
    assert checkpoint.status == "failed" and checkpoint.attempt == 1
    assert "stage script" in checkpoint.error and outside in checkpoint.error
    assert "shot_001" not in run.asset_refs().shots


def test_an_adapters_own_success_checkpoint_does_not_outlive_its_failed_attempt(
        pipeline, plans_dir):
    """The contract's example writes its own success checkpoint: when that attempt then
    fails, the stage is not done; the retry runs and the engine's record stands."""
    calls = []

    def writes_then_fails(plan, refs, run_dir):
        calls.append(1)
        checkpoint = Checkpoint(stage="script", status="success", timestamp=time.time())
        (run_dir / "checkpoints" / "script.json").write_text(checkpoint.json())
        if len(calls) == 1:
            raise TimeoutError("model server timed out")
        return refs

    # Given a script adapter that writes its own success checkpoint, then fails once
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.engine.adapters["script"] = Adapter("script", "own", writes_then_fails,
                                                 (TimeoutError,))
    # When the run is worked
    assert pipeline.work(run).status.value == "succeeded"
    # Then the stage ran again after the failure, and its checkpoint is the engine's
    assert len(calls) == 2
    checkpoint = run.checkpoint("script")
    assert checkpoint.attempt == 2 and checkpoint.metadata["adapter"] == "own"


def test_a_success_checkpoint_the_engine_never_recorded_is_not_done(pipeline, plans_dir):
    """A worker killed after its adapter wrote its own success checkpoint (nothing recorded
    after the begin but a re-drive): the stage is not done, so resume runs it again. The
    engine's own crash window (success checkpoint written, event not yet) still counts."""
    # Given a run whose script attempt 1 began, wrote an adapter-made success, then died
    run = pipeline.create(plans_dir / "rooftop.json")
    run.append_event("script", "begin", 1)
    run.write_checkpoint(Checkpoint(stage="script", status="success", timestamp=time.time()))
    run.append_event("script", "redrive", 1, metadata={"reason": "stuck"})
    # Then the stage is not done
    assert not run.stage_done("script")
    # And given instead the engine's own success checkpoint for that attempt
    run.write_checkpoint(Checkpoint(stage="script", status="success", timestamp=time.time(),
                                    attempt=1, metadata={"adapter": "x", "attempt": 1}))
    # Then it is
    assert run.stage_done("script")

"""A person in the loop: review gates, approve / redo / reject, takes kept (embedded pipeline).

Through the real actors, engine and an in-process dramatiq worker, with the test adapters
(whose trace records the shots of every call).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sparkle import review, review_gates
from sparkle.adapters.testing import read_trace
from sparkle.errors import DecisionConflictError, ReviewError
from sparkle.review_state import read_review
from sparkle.runstore import RunStatus, cached_entry
from sparkle.schemas import STAGES


def shot_calls(run: Any, stage: str) -> Counter[str]:
    """How many adapter calls of ``stage`` each shot was part of."""
    return Counter(shot for record in read_trace(run.dir) if record["stage"] == stage
                   for shot in record["shots"])


def stage_calls(run: Any) -> Counter[str]:
    return Counter(record["stage"] for record in read_trace(run.dir))


def files(run: Any, folder: str) -> dict[str, bytes]:
    """Every file under ``folder`` of the run, by path relative to it."""
    root = run.dir / folder
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def kinds(run: Any) -> list[tuple[str, str]]:
    """The run's history without attempts' begin events: (stage, status)."""
    return [(e.stage, e.status) for e in run.events() if e.status != "begin"]


def gated_run(pipeline: Any, plans_dir: Path, after: str = "images", **metadata: str) -> Any:
    """A lighthouse run (shots s1, s2, s3) worked until it stops at its gate."""
    run = pipeline.create(plans_dir / "lighthouse.json", review_after=after, **metadata)
    result = pipeline.work(run)
    assert result.status is RunStatus.awaiting_review
    return run


def test_gate_after_images_stops_the_run_and_approve_finishes_it(pipeline, plans_dir):
    """review_after images: the run rests at awaiting_review with nothing after images run
    or queued; approve continues it to the end, and the manifest says who approved."""
    # Given a plan gated after images, worked until it rests
    run = gated_run(pipeline, plans_dir)
    # Then images ran and nothing after it
    assert stage_calls(run) == Counter({"script": 1, "images": 1})
    assert pipeline.engine.dispatcher.pending(run.run_id) is None
    waiting = read_review(str(run.dir))
    assert waiting is not None and (waiting.stage, waiting.reason) == ("images", "review_after")
    assert kinds(run)[-1] == ("images", "review_requested")
    entry = cached_entry(run)
    assert entry is not None and entry.view is not None
    assert entry.view["status"] == "awaiting_review"
    assert entry.view["review"]["stage"] == "images"
    # When a person approves it, with a note
    decision = review.approve(pipeline.engine, run.run_id, who="alice", note="frames ok",
                              queue=False)
    result = pipeline.work(run)
    # Then every stage ran once and the run succeeded
    assert result.status is RunStatus.succeeded
    assert stage_calls(run) == Counter({stage: 1 for stage in STAGES})
    approved = [e for e in run.events() if e.status == "approved"]
    assert len(approved) == 1
    assert approved[0].metadata["by"] == "alice" and approved[0].metadata["note"] == "frames ok"
    assert approved[0].metadata["review_id"] == waiting.review_id == decision.review_id
    assert read_review(str(run.dir)) is None


def test_redo_one_shot_rerolls_only_that_shot_and_keeps_the_old_take(pipeline, plans_dir):
    """At the images gate, redo --shots s2: only s2's keyframes are drawn again (new seed),
    s1 and s3 stay byte for byte; the old take is kept beside the new; the run stops at the
    gate again to show the new take; approve finishes the movie."""
    # Given a run stopped after images
    run = gated_run(pipeline, plans_dir)
    before = files(run, "frames")
    # When a person re-rolls shot s2
    decision = review.redo(pipeline.engine, run.run_id, ["s2"], who="bob", note="too dark",
                           queue=False)
    assert decision.stages_reset == ["images"]  # nothing after images has run yet
    result = pipeline.work(run)
    # Then images ran once more, for s2 alone, and the run waits again (images is gated)
    assert result.status is RunStatus.awaiting_review
    assert shot_calls(run, "images") == Counter({"s1": 1, "s2": 2, "s3": 1})
    after = files(run, "frames")
    for name in ("s1_start.png", "s1_end.png", "s3_start.png", "s3_end.png"):
        assert after[name] == before[name]
    assert after["s2_start.png"] != before["s2_start.png"]
    # And both takes of s2 are kept and listed, take 2 in use
    kept = review.takes_of(pipeline.engine.store, run.run_id, "s2")["s2"]["images"]
    assert [(t["take"], t["current"], t["cause"]) for t in kept] == [
        (1, False, "original"), (2, True, "redo")]
    assert (run.dir / kept[0]["files"][0]).read_bytes() == before["s2_start.png"]
    assert (run.dir / kept[1]["files"][0]).read_bytes() == after["s2_start.png"]
    # When they approve the new take
    review.approve(pipeline.engine, run.run_id, who="bob", queue=False)
    # Then the movie is finished from every shot, once each
    assert pipeline.work(run).status is RunStatus.succeeded
    assert shot_calls(run, "videos") == Counter({"s1": 1, "s2": 1, "s3": 1})


def test_redo_after_the_movie_reruns_the_dependent_stages_for_that_shot(pipeline, plans_dir):
    """Gated after images and qa: at the qa gate, re-rolling s2's images re-runs images for
    s2 (stopping at the images gate again), then videos and lipsync for s2 only, tts not at
    all, assemble and qa whole; other shots' clips stay byte for byte."""
    # Given a run stopped after qa (approved at the images gate)
    run = gated_run(pipeline, plans_dir, after="images,qa")
    review.approve(pipeline.engine, run.run_id, queue=False)
    assert pipeline.work(run).status is RunStatus.awaiting_review
    clips_before, synced_before = files(run, "clips"), files(run, "lipsync")
    # When s2's keyframes are re-rolled from the qa gate
    decision = review.redo(pipeline.engine, run.run_id, ["s2"], stage="images", queue=False)
    assert decision.stages_reset == ["images", "videos", "lipsync", "assemble", "qa"]
    assert pipeline.work(run).status is RunStatus.awaiting_review  # images gate again
    review.approve(pipeline.engine, run.run_id, queue=False)
    result = pipeline.work(run)
    # Then it stopped at the qa gate again, with s2 re-run through the stages reading it
    assert result.status is RunStatus.awaiting_review
    assert shot_calls(run, "videos") == Counter({"s1": 1, "s2": 2, "s3": 1})
    assert shot_calls(run, "lipsync") == Counter({"s1": 1, "s2": 2, "s3": 1})
    assert shot_calls(run, "tts") == Counter({"s1": 1, "s2": 1, "s3": 1})
    assert stage_calls(run)["assemble"] == 2 and stage_calls(run)["qa"] == 2
    clips_after, synced_after = files(run, "clips"), files(run, "lipsync")
    assert clips_after["s1.gif"] == clips_before["s1.gif"]
    assert clips_after["s3.gif"] == clips_before["s3.gif"]
    assert clips_after["s2.gif"] != clips_before["s2.gif"]
    assert synced_after["s1.gif"] == synced_before["s1.gif"]
    # And the merged refs still name every shot's files
    refs = run.asset_refs()
    assert sorted(refs.shots) == ["s1", "s2", "s3"]
    assert all(refs.shots[s].final_video_clip for s in ("s1", "s2", "s3"))
    # When approved at the qa gate, the run is done
    review.approve(pipeline.engine, run.run_id, queue=False)
    assert pipeline.work(run).status is RunStatus.succeeded


def test_reject_ends_the_run_for_good(pipeline, plans_dir):
    """reject: status rejected, with who and the note; nothing runs after, and further
    decisions are refused."""
    # Given a run waiting after images
    run = gated_run(pipeline, plans_dir)
    # When it is rejected
    review.reject(pipeline.engine, run.run_id, note="wrong story", who="carol")
    # Then it is rejected, and working it again runs nothing
    assert run.status() is RunStatus.rejected
    assert pipeline.work(run).status is RunStatus.rejected
    assert stage_calls(run) == Counter({"script": 1, "images": 1})
    assert kinds(run)[-1] == ("images", "rejected")
    with pytest.raises(ReviewError, match="rejected by carol: wrong story"):
        review.approve(pipeline.engine, run.run_id)


def test_qa_escalate_waits_for_a_person(pipeline, plans_dir, monkeypatch):
    """QA deciding escalate puts the run in awaiting_review, after qa."""
    # Given a QA adapter that escalates
    from sparkle.adapters import testing
    from sparkle.stages import Adapter

    def escalating_qa(plan: Any, refs: Any, run_dir: Path) -> Any:
        refs, _ = testing.FIXED["qa"](plan, refs, run_dir)
        return refs, {"decision": "escalate", "rule": "test"}

    pipeline.engine.adapters["qa"] = Adapter("qa", "escalating", escalating_qa, ())
    run = pipeline.create(plans_dir / "lighthouse.json")
    # When the run is worked
    result = pipeline.work(run)
    # Then it waits after qa for a person, and approve makes it succeeded
    assert result.status is RunStatus.awaiting_review
    waiting = read_review(str(run.dir))
    assert waiting is not None and (waiting.stage, waiting.reason) == ("qa", "qa_escalate")
    review.approve(pipeline.engine, run.run_id)
    assert run.status() is RunStatus.succeeded


def test_decisions_are_refused_when_they_cannot_apply(pipeline, plans_dir):
    """Not waiting, unknown shot, a stage not reached, a whole-movie stage: refused, and
    the run is unchanged."""
    # Given a run without gates, finished
    done = pipeline.create(plans_dir / "rooftop.json")
    assert pipeline.work(done).status is RunStatus.succeeded
    # Then a decision on it is refused, saying its status
    with pytest.raises(ReviewError, match="not waiting for a review \\(status succeeded\\)"):
        review.approve(pipeline.engine, done.run_id)
    # Given a run waiting after images
    run = gated_run(pipeline, plans_dir)
    history = run.events()
    with pytest.raises(ReviewError, match="no shot s9 in its plan; its shots are s1, s2, s3"):
        review.redo(pipeline.engine, run.run_id, ["s9"])
    with pytest.raises(ReviewError, match="has not reached videos yet"):
        review.redo(pipeline.engine, run.run_id, ["s2"], stage="videos")
    with pytest.raises(ReviewError, match="assemble works on the whole movie"):
        review.redo(pipeline.engine, run.run_id, ["s2"], stage="assemble")
    with pytest.raises(ReviewError, match="needs a note"):
        review.reject(pipeline.engine, run.run_id, note=" ")
    assert run.events() == history
    assert run.status() is RunStatus.awaiting_review


def test_two_people_deciding_at_once_exactly_one_wins(pipeline, plans_dir):
    """Two threads answer the same review at once (approve and redo): exactly one decision
    applies; the other is refused with who won."""
    # Given a run waiting after images, seen by two people
    run = gated_run(pipeline, plans_dir)
    waiting = read_review(str(run.dir))
    assert waiting is not None
    start = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def decide(name: str, act: Any) -> None:
        start.wait()
        try:
            outcomes[name] = act()
        except DecisionConflictError as exc:
            outcomes[name] = exc

    # When both decide at the same moment, on the review they saw
    people = [
        threading.Thread(target=decide, args=("alice", lambda: review.approve(
            pipeline.engine, run.run_id, who="alice", review_id=waiting.review_id,
            queue=False))),
        threading.Thread(target=decide, args=("bob", lambda: review.redo(
            pipeline.engine, run.run_id, ["s1"], who="bob", review_id=waiting.review_id,
            queue=False))),
    ]
    for person in people:
        person.start()
    for person in people:
        person.join(30)
    # Then exactly one won and the other was told who did
    won = [name for name, result in outcomes.items() if isinstance(result, review.Decision)]
    lost = [result for result in outcomes.values() if isinstance(result, DecisionConflictError)]
    assert len(won) == 1 and len(lost) == 1
    assert f"by {won[0]}" in str(lost[0])
    decisions = [e for e in run.events() if e.status in ("approved", "redo", "rejected")]
    assert [e.metadata["by"] for e in decisions] == won


def test_an_earlier_take_can_be_put_back(pipeline, plans_dir):
    """After a re-roll of s2, `takes --use 1` puts the original keyframes back byte for
    byte; at the images gate nothing else has to re-run, so the review stays open."""
    # Given s2 re-rolled once at the images gate
    run = gated_run(pipeline, plans_dir)
    original = files(run, "frames")
    review.redo(pipeline.engine, run.run_id, ["s2"], queue=False)
    assert pipeline.work(run).status is RunStatus.awaiting_review
    assert files(run, "frames")["s2_start.png"] != original["s2_start.png"]
    # When the person picks take 1 again
    decision = review.use_take(pipeline.engine, run.run_id, "s2", 1, who="dana", queue=False)
    # Then the original files are back, the review is still open, and take 1 is current
    assert files(run, "frames") == original
    assert not decision.closed and decision.stages_reset == []
    assert run.status() is RunStatus.awaiting_review
    kept = review.takes_of(pipeline.engine.store, run.run_id, "s2")["s2"]["images"]
    assert [t["current"] for t in kept] == [True, False]
    assert kinds(run)[-1] == ("images", "take")
    with pytest.raises(ReviewError, match="no take 7 of images; takes: 1, 2"):
        review.use_take(pipeline.engine, run.run_id, "s2", 7)
    # And approving makes the movie from the original keyframes
    review.approve(pipeline.engine, run.run_id, queue=False)
    assert pipeline.work(run).status is RunStatus.succeeded


def test_qa_regenerate_naming_shots_rerolls_them_then_escalates(pipeline, plans_dir):
    """QA (auto-regenerate on) keeps flagging s3: its videos are re-rolled for s3 alone,
    SPARKLE_QA_REGENERATE_LIMIT (2) times, each with a new seed; then the run waits for a
    person instead of looping."""
    # Given a QA that always asks to regenerate s3's videos, and auto-regenerate on
    from sparkle.adapters import testing
    from sparkle.stages import Adapter

    def picky_qa(plan: Any, refs: Any, run_dir: Path) -> Any:
        refs, _ = testing.FIXED["qa"](plan, refs, run_dir)
        return refs, {"decision": "regenerate", "rule": "picky", "flagged_shots": {
            "s3": ["black_frames"]}, "regenerate_stages": ["videos", "lipsync", "assemble"]}

    pipeline.engine.adapters["qa"] = Adapter("qa", "picky", picky_qa, ())
    pipeline.engine.settings = pipeline.engine.settings.model_copy(
        update={"qa_auto_regenerate": True, "qa_regenerate_limit": 2})
    run = pipeline.create(plans_dir / "lighthouse.json")
    # When the run is worked
    result = pipeline.work(run)
    # Then s3 alone was re-rolled twice from videos, and the run then waited for a person
    assert result.status is RunStatus.awaiting_review
    assert shot_calls(run, "videos") == Counter({"s1": 1, "s2": 1, "s3": 3})
    assert shot_calls(run, "images") == Counter({"s1": 1, "s2": 1, "s3": 1})
    assert stage_calls(run)["qa"] == 3
    seeds = [r["seed"] for r in read_trace(run.dir) if r["stage"] == "videos"]
    assert len(set(seeds)) == 3  # the plan's, then one per take
    waiting = read_review(str(run.dir))
    assert waiting is not None and waiting.reason == "qa_regenerate_limit"
    qa_rerolls = [e for e in run.events() if e.status == "redo"]
    assert [e.metadata["by"] for e in qa_rerolls] == ["qa-policy", "qa-policy"]


def test_review_view_shows_what_waits_and_the_decision_history(pipeline, plans_dir):
    """For a page: the review waiting, the keyframes to look at, and every request and
    decision so far with who and the note."""
    run = gated_run(pipeline, plans_dir)
    review.redo(pipeline.engine, run.run_id, ["s3"], who="erin", note="sky", queue=False)
    assert pipeline.work(run).status is RunStatus.awaiting_review
    view = review.review_view(pipeline.engine.store, run.run_id)
    assert view["status"] == "awaiting_review"
    assert view["review"]["stage"] == "images" and view["review"]["waiting_sec"] >= 0
    assert "frames/s3_start.png" in view["review"]["files"]
    assert [(h["kind"], h.get("by"), h.get("note")) for h in view["history"]] == [
        ("review_requested", None, None), ("redo", "erin", "sky"),
        ("review_requested", None, None)]


def test_sparkle_review_after_gates_plans_that_say_nothing(pipeline, plans_dir):
    """SPARKLE_REVIEW_AFTER=videos stops a plan without metadata.review_after after videos;
    a plan saying review_after "" (no gates) is not stopped."""
    pipeline.engine.settings = pipeline.engine.settings.model_copy(
        update={"review_after": "videos"})
    silent = pipeline.create(plans_dir / "lighthouse.json")
    assert pipeline.work(silent).status is RunStatus.awaiting_review
    assert stage_calls(silent) == Counter({"script": 1, "images": 1, "videos": 1})
    ungated = pipeline.create(plans_dir / "rooftop.json", review_after="")
    assert pipeline.work(ungated).status is RunStatus.succeeded


def test_a_worker_dying_between_success_and_gate_still_stops_the_run(pipeline, plans_dir,
                                                                    monkeypatch):
    """images succeeded but its worker died before opening the review: the next stage's
    message (a re-drive) opens it instead of running videos."""
    # Given a gated run whose images succeeded without its review being opened
    run = pipeline.create(plans_dir / "lighthouse.json", review_after="images")
    with monkeypatch.context() as patch:
        patch.setattr(review_gates, "after_success", lambda *args: (False, None))
        pipeline.engine.execute("script", run.run_id)
        pipeline.engine.execute("images", run.run_id)
    assert read_review(str(run.dir)) is None
    # When the videos message arrives (as the reaper would send it)
    outcome = pipeline.engine.execute("videos", run.run_id)
    # Then videos did not run, and the run waits for its review after images
    assert outcome.value == "awaiting_review"
    assert "videos" not in stage_calls(run)
    waiting = read_review(str(run.dir))
    assert waiting is not None and waiting.stage == "images"
    assert kinds(run)[-1] == ("images", "review_requested")

"""Review gates without a worker: the plan field, the setting, and how a waiting run shows."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkle import statuscache
from sparkle.cli import main as cli
from sparkle.errors import ConfigError, PlanError
from sparkle.plans import parse_plan_bytes
from sparkle.review_state import ReviewState, write_review
from sparkle.runstore import Run, RunStatus, RunStore, cached_entry, run_id_for
from sparkle.settings import Settings, load_settings
from sparkle.timeline import timeline

PLANS = Path(__file__).parents[1] / "data" / "plans"


def plan_bytes(review_after: object) -> bytes:
    doc = json.loads((PLANS / "lighthouse.json").read_text())
    doc["metadata"]["review_after"] = review_after
    return json.dumps(doc).encode()


def test_review_after_is_a_list_or_a_comma_separated_string_and_both_are_one_plan():
    """["images", "qa"] and "images, qa" give the same plan (and run id), gated after
    images and qa; a plan without the key leaves it to SPARKLE_REVIEW_AFTER."""
    as_list = parse_plan_bytes(plan_bytes(["qa", "images"]), "a.json")
    as_text = parse_plan_bytes(plan_bytes("images, qa"), "b.json")
    assert as_list.review_after == as_text.review_after == ("images", "qa")
    assert run_id_for(as_list) == run_id_for(as_text)
    assert parse_plan_bytes((PLANS / "lighthouse.json").read_bytes(), "c.json").review_after \
        is None
    assert parse_plan_bytes(plan_bytes(""), "d.json").review_after == ()


def test_review_after_naming_no_stage_is_refused_with_the_field():
    """A misspelt stage: the plan is invalid, the error names metadata.review_after."""
    with pytest.raises(PlanError, match=r"metadata\.review_after: names no stage: 'imgaes'"):
        parse_plan_bytes(plan_bytes(["imgaes"]), "plan.json")


def test_the_default_gates_come_from_sparkle_review_after(monkeypatch: pytest.MonkeyPatch):
    """SPARKLE_REVIEW_AFTER: stages in pipeline order; a wrong name is a ConfigError naming
    the variable."""
    assert Settings(review_after="qa,images").review_after_stages == ("images", "qa")
    monkeypatch.setenv("SPARKLE_REVIEW_AFTER", "images,sound")
    with pytest.raises(ConfigError, match="SPARKLE_REVIEW_AFTER names no stage: sound"):
        load_settings()


def waiting_run(tmp_path: Path, waited_sec: float, status: str = "awaiting_review") -> Run:
    run, _ = RunStore(tmp_path / "runs").create(
        parse_plan_bytes(plan_bytes(["images"]), "plan.json"))
    write_review(str(run.dir), ReviewState(
        status=status, review_id="r-1", stage="images", reason="review_after",  # type: ignore[arg-type]
        requested_at=time.time() - waited_sec,
        decided_by="carol" if status == "rejected" else None,
        note="wrong story" if status == "rejected" else None))
    run.append_event("images", "review_requested", 1,
                     metadata={"review_id": "r-1", "reason": "review_after"})
    return run


def test_a_waiting_run_shows_its_gate_and_how_long_it_has_waited(tmp_path: Path):
    """status (text and JSON) and runs say awaiting_review, after which stage, and for how
    long; the summary cache does not freeze the waiting time."""
    run = waiting_run(tmp_path, waited_sec=125)
    entry = cached_entry(run)
    assert entry is not None and entry.view is not None
    assert entry.status is RunStatus.awaiting_review
    text = statuscache.render_text(entry.view, str(run.dir))
    assert "waiting for review after images (review_after) for 2m0" in text
    assert json.loads(statuscache.render_json(entry.view))["waiting_sec"] >= 125
    runs = CliRunner().invoke(cli, ["runs", "--runs-dir", str(tmp_path / "runs"),
                                    "--status", "awaiting_review", "--json"])
    assert runs.exit_code == 0, runs.output
    record = json.loads(runs.output)
    assert record["review_after"] == "images" and record["waiting_sec"] >= 125


def test_a_rejected_run_says_who_rejected_it_and_why(tmp_path: Path):
    """Status rejected, with the decider and the note in `sparkle status`."""
    run = waiting_run(tmp_path, waited_sec=1, status="rejected")
    entry = cached_entry(run)
    assert entry is not None and entry.view is not None
    assert entry.status is RunStatus.rejected
    text = statuscache.render_text(entry.view, str(run.dir))
    assert "rejected after images by carol: wrong story" in text


def test_the_timeline_tells_a_decision_with_who_what_and_the_note(tmp_path: Path):
    """A redo event shows its decider, stage, shots, wait and note in `sparkle timeline`."""
    run = waiting_run(tmp_path, waited_sec=1)
    run.append_event("images", "redo", 1, metadata={
        "review_id": "r-1", "by": "bob", "note": "too dark", "shots": ["s2"],
        "redo_stage": "images", "waited_sec": 61.0})
    details = [entry.detail for entry in timeline(run)]
    assert details == ["review_after, review r-1",
                       "by bob, images of shots s2, after 61s: too dark"]

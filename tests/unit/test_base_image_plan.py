"""The base-image plan format (the script agent's): its own rules, every problem named,
gaps accepted with a warning on the run, and what it becomes inside Sparkle."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sparkle.errors import PlanError
from sparkle.plans import validate_plan
from sparkle.runstore import RunStore, run_id_for, slugify
from sparkle.timeline import timeline

PLAN = Path(__file__).parents[1] / "data" / "plans" / "harbour-base-images.json"
SPARKLE = Path(sys.executable).parent / "sparkle"


def harbour() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(PLAN.read_text())
    return document


def problems_of(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(PlanError) as caught:
        validate_plan(document, "plan.json")
    return {p.path: p.message for p in caught.value.problems}


def test_the_plan_becomes_sparkles_with_shared_keyframes_and_timed_dialogue():
    """Shot i's frame prompts are base images i and i+1, its keyframes are named by them
    (shared with its neighbours), and each line sits in the shot containing its start, at
    its time within that shot; max_fps caps the rate and model_id reaches the adapters."""
    plan = validate_plan(harbour(), "harbour.json")
    first, second, third = plan.shots
    assert first.start_frame_prompt.startswith("A quiet harbour")
    assert first.end_frame_prompt == second.start_frame_prompt
    assert [plan.keyframe_names(s) for s in plan.shots] == [
        ("frame_000", "frame_001"), ("frame_001", "frame_002"), ("frame_002", "frame_003")]
    assert [(d.character_id, d.start_time_sec) for d in first.dialogue] == [("ada", 0.5)]
    assert [(d.character_id, d.start_time_sec) for d in second.dialogue] == [("bo", 0.8)]
    assert [round(d.start_time_sec or 0, 6) for d in third.dialogue] == [0.6]
    assert plan.fps == 10 and plan.metadata["video_model_id"] == "wan-2.1"
    assert plan.seed == 7
    assert plan.character("ada").voice_profile == {"voice": "en-us+f3", "rate": "165",
                                                  "style": "dry"}
    assert plan.warnings == []


def test_the_run_keeps_the_plan_as_received_and_its_id_follows_the_usual_rule(tmp_path):
    """movie_plan.json is the received plan (its own format); the run id is the title's
    slug and the hash of that plan, and reading the run gives Sparkle's plan back."""
    plan = validate_plan(harbour(), "harbour.json")
    run, created = RunStore(tmp_path / "runs").create(plan)
    assert created and run.run_id == run_id_for(plan)
    assert run.run_id.startswith(slugify("The Harbour at Dusk") + "-")
    assert json.loads((run.dir / "movie_plan.json").read_text()) == harbour()
    assert run.plan() == plan
    assert [plan.keyframe_names(s) for s in run.plan().shots][1] == ("frame_001", "frame_002")
    # the same plan again finds the same run
    assert RunStore(tmp_path / "runs").create(validate_plan(harbour(), "again.json"))[1] is False


def test_every_broken_rule_is_named_in_one_pass():
    """Duplicate and blank base images, a wrong count, broken continuity, an unknown
    speaker, entries out of order, overlapping and past the end, totals that disagree."""
    document = harbour()
    document["base_images"][2]["id"] = "frame_001"  # duplicate
    document["base_images"][3]["prompt"] = "  "  # blank
    document["base_images"].append({"id": "frame_004", "prompt": "extra"})  # 5 for 3 shots
    document["shots"][2]["start_base_image_id"] = "frame_000"  # continuity broken
    timeline = document["dialogue_timeline"]
    timeline[3]["character_id"] = "zed"  # unknown speaker
    timeline[5]["start_time_sec"] = 5.0  # before the silence at 5.2 s listed ahead of it
    timeline.append({"type": "dialogue", "character_id": "bo", "text": "Late.",
                     "start_time_sec": 8.5, "duration_sec": 2.0})  # overlaps, past the end
    problems = problems_of(document)
    assert "duplicate base image id 'frame_001'" in problems["base_images[2].id"]
    assert "must not be blank" in problems["base_images[3].prompt"]
    assert "5 base images for 3 shots" in problems["base_images"]
    assert "must start at base_images[2]" in problems["shots[2].start_base_image_id"]
    assert "'zed' names no character" in problems["dialogue_timeline[3].character_id"]
    assert "in order of start_time_sec" in problems["dialogue_timeline[5].start_time_sec"]
    assert "after the movie's end at 9 s" in problems["dialogue_timeline[7]"]
    assert "the totals must agree" in problems["dialogue_timeline"]


def test_field_errors_and_the_formats_own_rules_are_reported_together():
    """A wrong field does not hide the plan-wide problems (pydantic skips those checks once
    a field is wrong; they are run on the raw JSON instead)."""
    document = harbour()
    document["shots"][0]["duration_sec"] = "three"
    document["base_images"][1]["id"] = "frame_000"
    problems = problems_of(document)
    assert "shots[0].duration_sec" in problems
    assert "duplicate base image id" in problems["base_images[1].id"]


def test_overlapping_lines_are_refused_naming_both():
    document = harbour()
    document["dialogue_timeline"][2]["start_time_sec"] = 1.5  # silence starts inside line 1
    problems = problems_of(document)
    assert "overlaps dialogue_timeline[1]" in problems["dialogue_timeline[2]"]


def test_a_timeline_with_gaps_is_accepted_and_the_run_records_a_warning(tmp_path):
    """A real agent plan starts its first line at 8.4 s with nothing before it: accepted,
    the gap being silence, and a warning event is recorded on the run (timeline shows it)."""
    document = harbour()
    document["dialogue_timeline"] = [e for e in document["dialogue_timeline"]
                                     if e["type"] == "dialogue"]
    plan = validate_plan(document, "gappy.json")
    assert plan.warnings[0] == "dialogue_timeline has a gap from 0 s to 0.5 s; treated as silence"
    assert len(plan.warnings) == 4
    run, _ = RunStore(tmp_path / "runs").create(plan)
    (event,) = run.events()
    assert (event.stage, event.status) == ("script", "warning")
    assert event.metadata["warnings"] == plan.warnings
    assert "gap from 0 s to 0.5 s" in timeline(run)[0].detail


def test_sparkle_validate_accepts_the_format_and_lists_its_problems(tmp_path):
    """`sparkle validate` on both: OK for the harbour plan, every problem for a broken one."""
    ok = subprocess.run([str(SPARKLE), "validate", str(PLAN)], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    broken = copy.deepcopy(harbour())
    broken["shots"][1]["end_base_image_id"] = "frame_009"
    broken["render_profile"]["video"]["model_id"] = ""
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    refused = subprocess.run([str(SPARKLE), "validate", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0
    assert "shots[1].end_base_image_id" in refused.stderr + refused.stdout
    assert "render_profile.video.model_id" in refused.stderr + refused.stdout

"""The data model's validation rules, one test per rule.

Every refusal must say where (a JSON path such as ``shots[2].id``), which rule was broken
and, where there is one, the offending value, so a person can fix the plan without
reading the source.
"""

from __future__ import annotations

import copy
import json
from typing import Any, get_args

import pytest

from sparkle.errors import PlanError, Problem
from sparkle.names import REVIEW_EVENTS, STAGES, CheckpointStatus, EventKind, StageName
from sparkle.plans import shorten, validate_plan
from sparkle.schemas import (
    AssetRefs,
    Checkpoint,
    MoviePlan,
    QAReport,
    StageEvent,
    check_id,
)

#: Ids that must never become a folder or file name.
UNSAFE_IDS = [
    pytest.param("..", id="dotdot"),
    pytest.param("../x", id="parent-escape"),
    pytest.param("a/../../x", id="embedded-escape"),
    pytest.param("/abs", id="absolute"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("", id="empty"),
    pytest.param("a" * 65, id="65-chars"),
    pytest.param("-a", id="leading-dash"),
    pytest.param(".a", id="leading-dot"),
    pytest.param("_a", id="leading-underscore"),
    pytest.param("a..b", id="inner-dotdot"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\n", id="trailing-newline"),
    pytest.param("a b", id="space"),
    pytest.param("\uff53\uff11", id="fullwidth-letters"),
    pytest.param("sh\u043et", id="cyrillic-o"),
    pytest.param("\u0430", id="cyrillic-a"),
    pytest.param("caf\u00e9", id="latin-accent"),
]

#: Ids at the edges of what is allowed.
SAFE_IDS = ["a" * 64, "a.b-c_d", "S1", "0", "shot.01", "9-lives"]


def plan_doc() -> dict[str, Any]:
    """A small valid plan as parsed JSON: two characters, two shots, one dialogue line."""
    return {
        "title": "Test Movie",
        "characters": [
            {"id": "hero", "name": "Hero", "voice_profile": {"voice": "en"}},
            {"id": "sidekick", "name": "Sidekick"},
        ],
        "shots": [
            {
                "id": "s1",
                "duration_sec": 2,
                "visual_description": "a street",
                "start_frame_prompt": "a street at dawn",
                "end_frame_prompt": "a street at noon",
                "dialogue": [{"character_id": "hero", "text": "Hello.", "start_time_sec": 0.5}],
            },
            {
                "id": "s2",
                "duration_sec": 3,
                "visual_description": "a field",
                "start_frame_prompt": "a field",
                "end_frame_prompt": "a field at night",
            },
        ],
        "metadata": {"seed": "7"},
    }


def problems_of(doc: Any) -> list[Problem]:
    """The problems validate_plan reports for ``doc`` (it must refuse it)."""
    with pytest.raises(PlanError) as info:
        validate_plan(doc, "plan.json")
    assert info.value.problems, "a PlanError must list at least one problem"
    return info.value.problems


def only_problem(doc: Any) -> Problem:
    """The single problem reported for ``doc``."""
    problems = problems_of(doc)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def accepts(doc: Any) -> MoviePlan:
    return validate_plan(doc, "plan.json")


def test_the_reference_plan_is_valid():
    """The plan the other tests mutate is itself valid, so each refusal is the mutation's."""
    plan = accepts(plan_doc())
    assert [shot.id for shot in plan.shots] == ["s1", "s2"]


# -- path-safe ids -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", UNSAFE_IDS)
def test_unsafe_shot_id_is_refused(bad: str):
    """A shot id that is not path-safe is refused at shots[i].id, showing the value."""
    # Given a plan whose second shot has an unsafe id
    doc = plan_doc()
    doc["shots"][1]["id"] = bad
    # When it is validated
    problem = only_problem(doc)
    # Then the problem is located at the id and shows what was given
    assert problem.path == "shots[1].id"
    assert "must" in problem.message
    assert shorten(bad) in problem.message


@pytest.mark.parametrize("bad", UNSAFE_IDS)
def test_unsafe_character_id_is_refused(bad: str):
    """A character id that is not path-safe is refused at characters[i].id."""
    doc = plan_doc()
    doc["characters"][1]["id"] = bad
    problem = only_problem(doc)
    assert problem.path == "characters[1].id"
    assert shorten(bad) in problem.message


@pytest.mark.parametrize("bad", UNSAFE_IDS)
def test_unsafe_run_id_is_refused(bad: str):
    """metadata.run_id becomes the run folder's name, so an unsafe one is refused."""
    doc = plan_doc()
    doc["metadata"]["run_id"] = bad
    problem = only_problem(doc)
    assert problem.path.startswith("metadata")


@pytest.mark.parametrize("bad", UNSAFE_IDS)
def test_check_id_refuses_unsafe_ids(bad: str):
    """The id rule itself (shared by shots, characters, runs and events) refuses each case."""
    with pytest.raises(ValueError):
        check_id(bad)


def test_dotdot_inside_an_id_is_named_as_the_reason():
    """An id with '..' inside is refused with a message saying '..' is the problem."""
    doc = plan_doc()
    doc["shots"][0]["id"] = "a..b"
    problem = only_problem(doc)
    assert problem.path == "shots[0].id"
    assert "'..'" in problem.message


@pytest.mark.parametrize("good", SAFE_IDS)
def test_safe_ids_are_accepted_everywhere(good: str):
    """64 characters, and letters, digits, '.', '-', '_' after the first, are accepted."""
    # Given a plan using the id for a shot, a character (and its line) and the run
    doc = plan_doc()
    doc["shots"][0]["id"] = good
    doc["characters"][0]["id"] = good
    doc["shots"][0]["dialogue"][0]["character_id"] = good
    doc["metadata"]["run_id"] = good
    # Then it is valid and the ids are kept as given
    plan = accepts(doc)
    assert plan.shots[0].id == good
    assert plan.characters[0].id == good
    assert plan.metadata["run_id"] == good


def test_unsafe_run_id_in_a_stage_event_is_refused():
    """A manifest event cannot carry a run id that is not path-safe."""
    with pytest.raises(ValueError):
        StageEvent(run_id="../x", stage="script", status="begin", timestamp=1.0, attempt=1)


# -- uniqueness and references -------------------------------------------------------------


def test_duplicate_shot_id_is_refused_naming_both_places():
    """Two shots with one id are refused at the second, pointing back to the first."""
    doc = plan_doc()
    doc["shots"][1]["id"] = "s1"
    problem = only_problem(doc)
    assert problem.path == "shots[1].id"
    assert "duplicate shot id 's1'" in problem.message
    assert "shots[0].id" in problem.message


def test_duplicate_character_id_is_refused_naming_both_places():
    """Two characters with one id are refused at the second, pointing back to the first."""
    doc = plan_doc()
    doc["characters"][1]["id"] = "hero"
    problem = only_problem(doc)
    assert problem.path == "characters[1].id"
    assert "duplicate character id 'hero'" in problem.message
    assert "characters[0].id" in problem.message


def test_dialogue_naming_an_unknown_character_is_refused():
    """A dialogue line's character_id must name a character; the message lists the known ones."""
    doc = plan_doc()
    doc["shots"][0]["dialogue"][0]["character_id"] = "villain"
    problem = only_problem(doc)
    assert problem.path == "shots[0].dialogue[0].character_id"
    assert "'villain'" in problem.message
    assert "hero" in problem.message and "sidekick" in problem.message


def test_dialogue_without_any_characters_is_refused():
    """With no characters at all, any dialogue line names an unknown character."""
    doc = plan_doc()
    doc["characters"] = []
    problem = only_problem(doc)
    assert problem.path == "shots[0].dialogue[0].character_id"
    assert "none" in problem.message


def test_every_reference_problem_is_reported_at_once():
    """Duplicate ids and unknown speakers are all listed, not just the first one found."""
    doc = plan_doc()
    doc["shots"][1]["id"] = "s1"
    doc["characters"][1]["id"] = "hero"
    doc["shots"][0]["dialogue"].append({"character_id": "ghost", "text": "Boo."})
    paths = {p.path for p in problems_of(doc)}
    assert paths == {"shots[1].id", "characters[1].id", "shots[0].dialogue[1].character_id"}


# -- shots -----------------------------------------------------------------------------------


def test_a_plan_needs_at_least_one_shot():
    """An empty shot list is refused at 'shots'."""
    doc = plan_doc()
    doc["shots"] = []
    problem = only_problem(doc)
    assert problem.path == "shots"
    assert "at least 1" in problem.message


def test_a_plan_without_shots_field_is_refused():
    """A plan with no 'shots' key is refused as a missing required field."""
    doc = plan_doc()
    del doc["shots"]
    problem = only_problem(doc)
    assert problem.path == "shots"
    assert "required" in problem.message


@pytest.mark.parametrize("duration", [0, -1, 600.001, 10_000])
def test_duration_out_of_range_is_refused(duration: float):
    """duration_sec must be above 0 and at most 600; the message shows the value."""
    doc = plan_doc()
    doc["shots"][1]["duration_sec"] = duration
    problem = only_problem(doc)
    assert problem.path == "shots[1].duration_sec"
    assert f"(got {shorten(duration)})" in problem.message


@pytest.mark.parametrize("duration", [0.001, 1, 600])
def test_duration_in_range_is_accepted(duration: float):
    """The smallest positive and the 600 s maximum durations are valid."""
    doc = plan_doc()
    doc["shots"][1]["duration_sec"] = duration
    assert accepts(doc).shots[1].duration_sec == duration


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_duration_must_be_finite(value: float):
    """NaN and infinite durations are refused."""
    doc = plan_doc()
    doc["shots"][1]["duration_sec"] = value
    assert only_problem(doc).path == "shots[1].duration_sec"


def test_negative_start_time_is_refused():
    """A dialogue line cannot start before its shot."""
    doc = plan_doc()
    doc["shots"][0]["dialogue"][0]["start_time_sec"] = -0.1
    problem = only_problem(doc)
    assert problem.path == "shots[0].dialogue[0].start_time_sec"
    assert "(got -0.1)" in problem.message


@pytest.mark.parametrize("value", [0, 1.5, None])
def test_start_time_zero_positive_or_unset_is_accepted(value: float | None):
    """start_time_sec may be 0, positive, or absent (right after the previous line)."""
    doc = plan_doc()
    doc["shots"][0]["dialogue"][0]["start_time_sec"] = value
    assert accepts(doc).shots[0].dialogue[0].start_time_sec == value


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_start_time_must_be_finite(value: float):
    """A dialogue line starting at NaN or infinity seconds is refused (JSON's 1e999 is inf)."""
    doc = plan_doc()
    doc["shots"][0]["dialogue"][0]["start_time_sec"] = value
    assert only_problem(doc).path == "shots[0].dialogue[0].start_time_sec"


# -- title -----------------------------------------------------------------------------------


def test_empty_title_is_refused():
    """The title may not be empty."""
    doc = plan_doc()
    doc["title"] = ""
    problem = only_problem(doc)
    assert problem.path == "title"
    assert "at least 1 character" in problem.message


def test_missing_title_is_refused():
    """A plan without a title is refused as a missing required field."""
    doc = plan_doc()
    del doc["title"]
    problem = only_problem(doc)
    assert problem.path == "title"
    assert "required field is missing" in problem.message


# -- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [42, 4.5, True, None, ["a"], {"a": "b"}])
def test_metadata_values_must_be_strings(value: Any):
    """metadata is {str: str}; other JSON types are refused at metadata.<key>."""
    doc = plan_doc()
    doc["metadata"]["note"] = value
    problem = only_problem(doc)
    assert problem.path == "metadata.note"
    assert "must be text" in problem.message


def test_type_errors_are_worded_as_sparkles_own_messages():
    """A plan's wrong types and ranges read like the hand-written rules ("must be ..."), not
    in pydantic's words ("Input should be a valid string")."""
    doc = plan_doc()
    doc["title"] = 3
    doc["shots"][0]["duration_sec"] = "long"
    doc["shots"][1]["duration_sec"] = -1
    doc["shots"][0]["dialogue"] = "hello"
    doc["characters"][0]["name"] = ["x"]
    with pytest.raises(PlanError) as caught:
        validate_plan(doc, "plan.json")
    messages = {p.path: p.message for p in caught.value.problems}
    assert messages["title"].startswith("must be text")
    assert messages["shots[0].duration_sec"].startswith("must be a number")
    assert messages["shots[1].duration_sec"].startswith("must be more than 0")
    assert messages["shots[0].dialogue"].startswith("must be a list")
    assert messages["characters[0].name"].startswith("must be text")
    assert not any("should" in m or "Input" in m for m in messages.values()), messages


@pytest.mark.parametrize("seed", ["0", "42", "-3", "123456789"])
def test_integer_seed_is_accepted(seed: str):
    """metadata.seed holds an integer written as a string."""
    doc = plan_doc()
    doc["metadata"]["seed"] = seed
    assert accepts(doc).seed == int(seed)


@pytest.mark.parametrize("seed", ["", "x", "4.2", "1e3", "0x10"])
def test_non_integer_seed_is_refused(seed: str):
    """A seed that is not an integer is refused, naming metadata.seed."""
    doc = plan_doc()
    doc["metadata"]["seed"] = seed
    assert "metadata.seed" in str(only_problem(doc))


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param("1_000", id="underscore"),
        pytest.param("\uff14\uff12", id="fullwidth-digits"),
        pytest.param("\u0664\u0662", id="arabic-indic-digits"),
    ],
)
def test_seed_must_be_plain_ascii_digits(seed: str):
    """Python-only integer spellings (underscores, non-ASCII digits) are not integers in a plan."""
    doc = plan_doc()
    doc["metadata"]["seed"] = seed
    assert "metadata.seed" in str(only_problem(doc))


@pytest.mark.parametrize("fps", ["1", "24", "29.97", "120"])
def test_fps_in_range_is_accepted(fps: str):
    """metadata.fps from 1 to 120 (fractions allowed) is valid."""
    doc = plan_doc()
    doc["metadata"]["fps"] = fps
    assert accepts(doc).fps == float(fps)


@pytest.mark.parametrize("fps", ["0", "0.5", "120.5", "121", "-24", "abc", "", "nan", "inf"])
def test_fps_out_of_range_is_refused(fps: str):
    """metadata.fps outside 1..120, or not a number, is refused naming metadata.fps."""
    doc = plan_doc()
    doc["metadata"]["fps"] = fps
    assert "metadata.fps" in str(only_problem(doc))


@pytest.mark.parametrize("resolution", ["16x16", "1280x720", "7680x4320", "720x1280"])
def test_even_resolution_in_range_is_accepted(resolution: str):
    """metadata.resolution WIDTHxHEIGHT with even sides from 16 to 7680 is valid."""
    doc = plan_doc()
    doc["metadata"]["resolution"] = resolution
    width, height = resolution.split("x")
    assert accepts(doc).resolution == (int(width), int(height))


@pytest.mark.parametrize(
    "fps",
    [
        pytest.param("2_4", id="underscore"),
        pytest.param("\uff12\uff14", id="fullwidth-digits"),
    ],
)
def test_fps_must_be_plain_ascii_number(fps: str):
    """Python-only number spellings (underscores, non-ASCII digits) are not an fps in a plan."""
    doc = plan_doc()
    doc["metadata"]["fps"] = fps
    assert "metadata.fps" in str(only_problem(doc))


@pytest.mark.parametrize(
    "resolution",
    [
        pytest.param("1280x721", id="odd-height"),
        pytest.param("1281x720", id="odd-width"),
        pytest.param("14x14", id="too-small"),
        pytest.param("7682x720", id="too-wide"),
        pytest.param("1280*720", id="wrong-separator"),
        pytest.param("1280X720", id="capital-x"),
        pytest.param("1280x", id="no-height"),
        pytest.param("x720", id="no-width"),
        pytest.param(" 1280x720", id="leading-space"),
        pytest.param("1280x720x3", id="three-sides"),
        pytest.param("-1280x720", id="negative"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_resolution_is_refused(resolution: str):
    """A resolution that is not WIDTHxHEIGHT with even sides 16..7680 is refused."""
    doc = plan_doc()
    doc["metadata"]["resolution"] = resolution
    assert "metadata.resolution" in str(only_problem(doc))


def test_resolution_must_use_ascii_digits():
    """Fullwidth digits (U+FF11 ...) are not a resolution, though Python's \\d matches them."""
    doc = plan_doc()
    doc["metadata"]["resolution"] = "\uff11\uff12\uff18\uff10x720"
    assert "metadata.resolution" in str(only_problem(doc))


@pytest.mark.parametrize(
    ("key", "value"),
    [("seed", "x"), ("fps", "0"), ("resolution", "1280x721"), ("run_id", "../x")],
)
def test_metadata_problem_is_located_at_its_key(key: str, value: str):
    """A bad metadata value is reported at metadata.<key>, showing that value, not the dict."""
    # Given metadata with several unrelated keys before the bad one
    doc = plan_doc()
    doc["metadata"] = {"note": "n" * 80, "other": "o" * 80, key: value}
    # When it is validated
    problem = only_problem(doc)
    # Then the problem points at the key and shows the offending value
    assert problem.path == f"metadata.{key}"
    assert shorten(value) in problem.message


def test_every_metadata_problem_is_reported():
    """A bad seed and a bad fps are both listed, not only the first found."""
    doc = plan_doc()
    doc["metadata"] = {"seed": "x", "fps": "0", "resolution": "1x1"}
    text = "\n".join(str(p) for p in problems_of(doc))
    assert "metadata.seed" in text
    assert "metadata.fps" in text
    assert "metadata.resolution" in text


# -- unknown fields and wrong types ------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (lambda d: d, "titel"),
        (lambda d: d["shots"][1], "shots[1].titel"),
        (lambda d: d["characters"][0], "characters[0].titel"),
        (lambda d: d["shots"][0]["dialogue"][0], "shots[0].dialogue[0].titel"),
    ],
    ids=["plan", "shot", "character", "dialogue"],
)
def test_unknown_field_is_refused(where: Any, path: str):
    """A misspelt or unknown key is an error at its path, not a silently ignored field."""
    doc = plan_doc()
    where(doc)["titel"] = "typo"
    problem = only_problem(doc)
    assert problem.path == path
    assert "unknown field" in problem.message


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.update(title=5), "title"),
        (lambda d: d.update(shots="s1"), "shots"),
        (lambda d: d.update(characters={}), "characters"),
        (lambda d: d.update(metadata=["seed"]), "metadata"),
        (lambda d: d["shots"][0].update(duration_sec="five"), "shots[0].duration_sec"),
        (lambda d: d["shots"][0].update(dialogue="Hello."), "shots[0].dialogue"),
        (lambda d: d["characters"][0].update(voice_profile="en"), "characters[0].voice_profile"),
    ],
    ids=["title", "shots", "characters", "metadata", "duration", "dialogue", "voice_profile"],
)
def test_wrong_type_is_refused_at_its_path(mutate: Any, path: str):
    """A value of the wrong JSON type is refused at its path, showing the value."""
    doc = plan_doc()
    mutate(doc)
    problem = only_problem(doc)
    assert problem.path == path
    assert "(got " in problem.message


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["shots"][0].update(duration_sec=True), "shots[0].duration_sec"),
        (lambda d: d["shots"][0].update(duration_sec="4"), "shots[0].duration_sec"),
        (lambda d: d["shots"][0].update(is_talking_closeup="yes"), "shots[0].is_talking_closeup"),
        (lambda d: d["shots"][0].update(is_talking_closeup=1), "shots[0].is_talking_closeup"),
    ],
    ids=["bool-as-duration", "string-as-duration", "string-as-bool", "number-as-bool"],
)
def test_plan_values_are_not_coerced_from_other_json_types(mutate: Any, path: str):
    """A plan is a wire format: `true` is not a duration and "yes" is not a boolean."""
    doc = plan_doc()
    mutate(doc)
    assert only_problem(doc).path == path


def test_independent_problems_are_all_reported():
    """Problems in different parts of a plan are listed together, each with its path."""
    doc = plan_doc()
    del doc["title"]
    doc["shots"][1]["duration_sec"] = 0
    doc["characters"][0]["colour"] = "red"
    paths = {p.path for p in problems_of(doc)}
    assert paths == {"title", "shots[1].duration_sec", "characters[0].colour"}


def test_problem_text_starts_with_its_path():
    """A Problem prints as '<path>: <message>' so the path is the first thing read."""
    assert str(Problem("shots[2].id", "bad")) == "shots[2].id: bad"
    assert str(Problem("", "the file is empty")) == "the file is empty"


def test_plan_error_names_the_source_and_every_problem():
    """PlanError's text names the file and lists each problem on its own line."""
    error = PlanError("inbox/p.json", [Problem("title", "missing"), Problem("shots", "empty")])
    text = str(error)
    assert text.startswith("inbox/p.json: invalid plan (2 problem(s))")
    assert "  - title: missing" in text
    assert "  - shots: empty" in text


def test_validation_does_not_change_the_document():
    """Validating a parsed document leaves it as it was (callers may reuse it)."""
    doc = plan_doc()
    before = copy.deepcopy(doc)
    accepts(doc)
    assert doc == before


# -- the other wire models -------------------------------------------------------------------


def checkpoint_doc() -> dict[str, Any]:
    return {
        "stage": "images",
        "status": "success",
        "timestamp": 1.5,
        "attempt": 1,
        "error": None,
        "metadata": {"adapter": "test"},
    }


def test_checkpoint_has_exactly_the_documented_keys():
    """A checkpoint has stage, status, timestamp, attempt, error, metadata and no other key."""
    assert set(Checkpoint.model_validate(checkpoint_doc()).model_dump()) == {
        "stage",
        "status",
        "timestamp",
        "attempt",
        "error",
        "metadata",
    }
    doc = checkpoint_doc() | {"extra": 1}
    with pytest.raises(ValueError, match="extra"):
        Checkpoint.model_validate(doc)


@pytest.mark.parametrize(
    ("key", "value"),
    [("status", "fail"), ("status", "done"), ("stage", "render"), ("attempt", 0)],
)
def test_checkpoint_refuses_unknown_status_stage_or_attempt_below_one(key: str, value: Any):
    """Checkpoint status is begin|success|failed, stage one of the seven, attempt >= 1."""
    with pytest.raises(ValueError, match=key):
        Checkpoint.model_validate(checkpoint_doc() | {key: value})


@pytest.mark.parametrize("status", ["begin", "success", "fail", "reset"])
def test_stage_event_accepts_the_documented_statuses(status: str):
    """Manifest events are begin, success, fail, and reset for forced re-runs."""
    event = StageEvent(run_id="r1", stage="qa", status=status, timestamp=2.0, attempt=1)
    assert event.status == status


def test_stage_event_refuses_checkpoint_only_status():
    """'failed' is a checkpoint status; the event is 'fail'."""
    with pytest.raises(ValueError, match="status"):
        StageEvent(run_id="r1", stage="qa", status="failed", timestamp=2.0, attempt=1)


def test_asset_refs_and_qa_report_refuse_unknown_fields():
    """AssetRefs and QAReport are wire formats too: unknown keys are refused."""
    with pytest.raises(ValueError, match="extra"):
        AssetRefs.model_validate({"shots": {}, "extra": {}, "typo": 1})
    with pytest.raises(ValueError, match="typo"):
        AssetRefs.model_validate({"shots": {"s1": {"raw_clip": "c.mp4", "typo": 1}}})
    with pytest.raises(ValueError, match="typo"):
        QAReport.model_validate({"decision": "approve", "issues_found": 0, "typo": 1})


@pytest.mark.parametrize(("key", "value"), [("decision", "ship-it"), ("issues_found", -1)])
def test_qa_report_refuses_unknown_decision_or_negative_issue_count(key: str, value: Any):
    """QA decisions are approve|regenerate|escalate, and issues_found is never negative."""
    doc = {"decision": "approve", "issues_found": 0} | {key: value}
    with pytest.raises(ValueError, match=key):
        QAReport.model_validate(doc)


def test_checkpoint_status_and_event_kind_are_read_as_enums_and_written_as_strings():
    """A status read from a file is a member of its enum (compared and matched by type, not
    by spelling); written back, the file holds the same string it did."""
    checkpoint = Checkpoint.model_validate_json(json.dumps(checkpoint_doc()))
    assert checkpoint.status is CheckpointStatus.success
    event = StageEvent.model_validate_json(json.dumps(
        {"run_id": "r1", "stage": "qa", "status": "review_requested", "timestamp": 2.0,
         "attempt": 1}))
    assert event.status is EventKind.review_requested
    assert event.status in REVIEW_EVENTS
    assert json.loads(checkpoint.model_dump_json())["status"] == "success"
    assert json.loads(event.model_dump_json())["status"] == "review_requested"


def test_the_stage_list_is_the_stage_name_type_itself():
    """STAGES is read from the StageName type, not written out a second time."""
    assert STAGES is get_args(StageName)
    assert Checkpoint.model_fields["stage"].annotation == StageName

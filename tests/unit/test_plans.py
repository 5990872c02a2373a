"""Loading plan files: any file in, a MoviePlan or a PlanError out, never anything else.

The hot folder hands whatever lands in the inbox to ``load_plan_file``; these tests drop
real bad files into ``tmp_path`` and check each is refused with a PlanError that names
the file and the problem (a JSON path, or a line and column for broken JSON).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkle.errors import PlanError
from sparkle.plans import load_plan_file, parse_plan_bytes, validate_plan
from sparkle.schemas import MoviePlan

PLANS = Path(__file__).parents[1] / "data" / "plans"
EXAMPLES = sorted(PLANS.glob("*.json"))

#: The limit the tests load with (the default setting, 1 MiB).
MAX_BYTES = 1 << 20


def example_doc() -> dict[str, Any]:
    """The lighthouse example plan, parsed."""
    doc: dict[str, Any] = json.loads((PLANS / "lighthouse.json").read_text("utf-8"))
    return doc


def with_change(change: Callable[[dict[str, Any]], object]) -> bytes:
    """The lighthouse plan with ``change`` applied, as file bytes."""
    doc = example_doc()
    change(doc)
    return json.dumps(doc, indent=2).encode("utf-8")


def load_error(path: Path, max_bytes: int = MAX_BYTES) -> PlanError:
    """The PlanError loading ``path`` raises (it must raise one)."""
    with pytest.raises(PlanError) as info:
        load_plan_file(path, max_bytes)
    return info.value


def write(tmp_path: Path, data: bytes, name: str = "plan.json") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_plans_load(example: Path):
    """Every example plan shipped with the tests is valid."""
    plan = load_plan_file(example, MAX_BYTES)
    assert isinstance(plan, MoviePlan)
    assert plan.shots


#: Bad plans that parse as JSON, and the JSON path their problem must be reported at.
BAD_FIELDS: list[Any] = [
    pytest.param(lambda d: d["shots"][1].update(id="../x"), "shots[1].id", id="dotdot-shot-id"),
    pytest.param(lambda d: d["shots"][1].update(id="/etc/x"), "shots[1].id", id="absolute-shot-id"),
    pytest.param(lambda d: d["shots"][2].update(id="s1"), "shots[2].id", id="duplicate-shot-id"),
    pytest.param(
        lambda d: d["shots"][1]["dialogue"][0].update(character_id="ghost"),
        "shots[1].dialogue[0].character_id",
        id="unknown-character",
    ),
    pytest.param(
        lambda d: d["shots"][0].update(duration_sec=0), "shots[0].duration_sec", id="zero-duration"
    ),
    pytest.param(lambda d: d.update(shots=[]), "shots", id="no-shots"),
    pytest.param(lambda d: d.pop("title"), "title", id="missing-title"),
    pytest.param(lambda d: d.update(title=["The", "Lighthouse"]), "title", id="wrong-type"),
    pytest.param(
        lambda d: d["shots"][0].update(colour="red"), "shots[0].colour", id="unknown-field"
    ),
]


@pytest.mark.parametrize(("change", "path"), BAD_FIELDS)
def test_bad_field_is_refused_naming_the_field(tmp_path: Path, change: Any, path: str):
    """A plan file breaking a field rule is refused with a problem at that field's JSON path."""
    # Given a plan file with one bad field
    plan_file = write(tmp_path, with_change(change))
    # When I load it
    error = load_error(plan_file)
    # Then the error names the file and the field
    assert [p.path for p in error.problems] == [path]
    assert str(error).startswith(str(plan_file))
    assert path in str(error)


def test_truncated_file_reports_line_and_column(tmp_path: Path):
    """A file cut off mid-write is refused as invalid JSON at its line and column."""
    # Given the first 200 bytes of an indented plan (inside the first shot)
    data = with_change(lambda d: None)[:200]
    plan_file = write(tmp_path, data)
    # When I load it
    error = load_error(plan_file)
    # Then the one problem says where the JSON broke
    (problem,) = error.problems
    match = re.search(r"invalid JSON at line (\d+) column (\d+)", problem.message)
    assert match, problem.message
    assert int(match.group(1)) == data.count(b"\n") + 1


def test_syntax_error_reports_its_line_and_column(tmp_path: Path):
    """A missing comma is located at the line and column where it is missing."""
    plan_file = write(tmp_path, b'{\n  "title": "x"\n  "shots": []\n}\n')
    (problem,) = load_error(plan_file).problems
    assert problem.path == ""
    assert "invalid JSON at line 3 column 3" in problem.message


def test_non_utf8_bytes_are_refused_with_their_offset(tmp_path: Path):
    """A Latin-1 file is refused as not UTF-8, naming the bad byte and its offset."""
    data = '{"title": "Caf\u00e9"}'.encode("latin-1")
    (problem,) = load_error(write(tmp_path, data)).problems
    assert problem.message == "not UTF-8 text: byte 0xe9 at offset 14"


@pytest.mark.parametrize("opener", [b"[", b'{"a":', b'{"title": "x", "shots": ['])
def test_200000_nested_brackets_are_refused(tmp_path: Path, opener: bytes):
    """Deeply nested JSON is a PlanError, not a RecursionError or a crash."""
    plan_file = write(tmp_path, opener + b"[" * 200_000 + b"]" * 200_000)
    (problem,) = load_error(plan_file).problems
    assert "nested too deeply" in problem.message


def test_nesting_just_under_the_parser_limit_is_refused_as_a_plan_problem(tmp_path: Path):
    """Nesting the JSON parser accepts still fails validation cleanly at its field."""
    nested = "[" * 900 + "]" * 900
    plan_file = write(tmp_path, with_change(lambda d: None).replace(b'"42"', nested.encode()))
    (problem,) = load_error(plan_file).problems
    assert problem.path == "metadata.seed"


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n"], ids=["empty", "whitespace"])
def test_empty_file_is_refused(tmp_path: Path, data: bytes):
    """An empty (or whitespace-only) file is refused as empty, not as broken JSON."""
    (problem,) = load_error(write(tmp_path, data)).problems
    assert "empty" in problem.message


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"[]", "array"),
        (b'["title"]', "array"),
        (b'"plan"', "string"),
        (b"42", "number"),
        (b"null", "null"),
        (b"true", "bool"),
    ],
)
def test_top_level_must_be_an_object(tmp_path: Path, data: bytes, kind: str):
    """A JSON array (or any non-object) at the top level is refused, naming what it is."""
    (problem,) = load_error(write(tmp_path, data)).problems
    assert f"top level is a JSON {kind}" in problem.message
    assert "expected an object" in problem.message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_literals_are_refused(tmp_path: Path, literal: str):
    """NaN and Infinity are not JSON (RFC 8259); Python's parser accepts them, plans must not."""
    data = with_change(lambda d: None).replace(b"0.3", literal.encode())
    assert literal.encode() in data
    load_error(write(tmp_path, data))


def test_utf8_bom_is_refused_as_invalid_json(tmp_path: Path):
    """A byte-order mark before the JSON is reported as a PlanError."""
    plan_file = write(tmp_path, b"\xef\xbb\xbf" + with_change(lambda d: None))
    (problem,) = load_error(plan_file).problems
    assert "BOM" in problem.message


def test_file_over_max_bytes_is_refused_before_reading(tmp_path: Path):
    """A file larger than max_bytes is refused with its size and the limit."""
    data = with_change(lambda d: None)
    plan_file = write(tmp_path, data)
    (problem,) = load_error(plan_file, max_bytes=len(data) - 1).problems
    assert f"is {len(data)} bytes, over the {len(data) - 1}-byte limit" in problem.message
    assert "SPARKLE_MAX_PLAN_BYTES" in problem.message


def test_file_of_exactly_max_bytes_loads(tmp_path: Path):
    """The limit is inclusive: a file of exactly max_bytes is read."""
    data = with_change(lambda d: None)
    assert load_plan_file(write(tmp_path, data), max_bytes=len(data)).title


def test_symlink_is_refused_and_never_followed(tmp_path: Path):
    """A symlink to a valid plan is refused; its target is neither read into a plan nor changed."""
    # Given a valid plan outside the inbox and a symlink to it inside
    target = write(tmp_path, with_change(lambda d: None), "outside.json")
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    link = inbox / "plan.json"
    link.symlink_to(target)
    # When I load the link
    (problem,) = load_error(link).problems
    # Then it is refused as a link (not loaded as the valid plan it points to)
    assert "symbolic link" in problem.message
    # And the target and the link are untouched
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before
    assert link.is_symlink()


def test_symlink_to_a_fifo_is_refused_without_blocking(tmp_path: Path):
    """Following a link to a FIFO would hang the watcher; the link is refused at once."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "plan.json"
    link.symlink_to(fifo)
    assert "symbolic link" in load_error(link).problems[0].message


def test_dangling_symlink_is_refused_as_a_link(tmp_path: Path):
    """A symlink to nothing is reported as a link, not as a missing file."""
    link = tmp_path / "plan.json"
    link.symlink_to(tmp_path / "nowhere.json")
    assert "symbolic link" in load_error(link).problems[0].message


def test_directory_is_refused(tmp_path: Path):
    """A folder named like a plan is refused as not a regular file."""
    folder = tmp_path / "plan.json"
    folder.mkdir()
    assert load_error(folder).problems[0].message == "is not a regular file"


@pytest.mark.timeout(10)
def test_fifo_is_refused_without_blocking(tmp_path: Path):
    """A named pipe with no writer is refused at once instead of blocking the reader."""
    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)
    assert load_error(fifo).problems[0].message == "is not a regular file"


def test_missing_file_is_refused(tmp_path: Path):
    """A path that does not exist is a PlanError saying so."""
    assert load_error(tmp_path / "gone.json").problems[0].message == "does not exist"


def test_path_with_nul_byte_is_a_plan_error(tmp_path: Path):
    """Even a path the OS cannot represent gives a PlanError, never a ValueError."""
    load_error(tmp_path / "plan\x00.json")


def test_over_long_file_name_is_a_plan_error(tmp_path: Path):
    """A file name longer than the file system allows gives a PlanError."""
    assert "cannot be opened" in load_error(tmp_path / ("p" * 300 + ".json")).problems[0].message


def test_every_problem_of_a_file_is_listed(tmp_path: Path):
    """A file with several bad fields lists each, one per line of the error text."""

    def break_three(d: dict[str, Any]) -> None:
        d.pop("title")
        d["shots"][0]["duration_sec"] = -1
        d["shots"][1]["id"] = "../up"

    error = load_error(write(tmp_path, with_change(break_three)))
    assert {p.path for p in error.problems} == {"title", "shots[0].duration_sec", "shots[1].id"}
    assert "(3 problem(s))" in str(error)


# -- nothing but PlanError, whatever the input -----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location (as a tuple of keys and indexes) inside a parsed JSON value."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_in(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_in(child, (*prefix, index))
    return found


EXAMPLE_PATHS = [p for p in paths_in(example_doc()) if p]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_give_a_plan_or_a_plan_error(data: bytes):
    """Random bytes never raise anything but PlanError."""
    try:
        parse_plan_bytes(data, "fuzz.json")
    except PlanError as exc:
        assert exc.problems


@settings(max_examples=300, deadline=None)
@given(where=st.sampled_from(EXAMPLE_PATHS), value=json_values)
def test_any_value_anywhere_gives_a_plan_or_a_plan_error(where: tuple[Any, ...], value: Any):
    """Replacing any part of a valid plan with any JSON value never escapes as another error."""
    # Given the example plan with one location replaced by an arbitrary value
    doc = example_doc()
    parent: Any = doc
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    # When it is validated, then it is a plan or a PlanError whose problems all have messages
    try:
        validate_plan(doc, "fuzz.json")
    except PlanError as exc:
        assert exc.problems
        assert all(problem.message for problem in exc.problems)


def test_a_wrong_field_does_not_hide_wrong_references(tmp_path: Path):
    """pydantic skips the plan-wide checks once a field is wrong; `validate` still lists
    every problem in one pass: the field, and the unknown speaker and duplicate shot id."""

    def change(doc: dict[str, Any]) -> None:
        doc["metadata"]["resolution"] = "1281x720"
        doc["shots"][0]["dialogue"] = [{"character_id": "nobody", "text": "hi"}]
        doc["shots"][1]["id"] = doc["shots"][0]["id"]

    error = load_error(write(tmp_path, with_change(change)))
    paths = [problem.path for problem in error.problems]
    assert paths == ["metadata.resolution", "shots[0].dialogue[0].character_id", "shots[1].id"]


def test_references_are_not_guessed_from_unreadable_characters(tmp_path: Path):
    """A character without a readable id could be the one a line names: no line is
    reported as naming nobody then; the missing id is."""

    def change(doc: dict[str, Any]) -> None:
        del doc["characters"][0]["id"]

    error = load_error(write(tmp_path, with_change(change)))
    assert [problem.path for problem in error.problems] == ["characters[0].id"]


def test_a_blank_text_is_reported_in_words_not_as_a_pattern(tmp_path: Path):
    """A title of spaces: "must not be blank", not pydantic's "should match pattern"."""

    def change(doc: dict[str, Any]) -> None:
        doc["title"] = "   "

    error = load_error(write(tmp_path, with_change(change)))
    assert [str(problem) for problem in error.problems] == ["title: must not be blank"]


def test_a_plan_made_of_mistakes_is_reported_in_bounded_space():
    """4,000 characters and 4,000 lines naming none of them (a 350 KB file): each line's
    message listed every known id, 140 million characters in all, and the inbox writes
    them into an error record. Now at most 100 reference problems are listed, each
    naming 10 known ids, and the rest are counted."""
    from sparkle.schemas import KNOWN_IDS_SHOWN, MAX_REFERENCE_PROBLEMS

    count = 4000
    doc = example_doc()
    doc["title"] = 1  # a field error too: the references are checked on the raw JSON
    doc["characters"] = [{"id": f"c{i}", "name": "n", "voice_profile": {}}
                         for i in range(count)]
    for shot in doc["shots"]:
        shot["dialogue"] = []
    doc["shots"][0]["dialogue"] = [{"character_id": "x", "text": "t"}] * count
    with pytest.raises(PlanError) as info:
        parse_plan_bytes(json.dumps(doc).encode(), "many.json")
    problems = info.value.problems
    assert len(problems) == 1 + MAX_REFERENCE_PROBLEMS + 1
    assert problems[-1].message == f"{count - MAX_REFERENCE_PROBLEMS} more problems like " \
                                  "these, not listed"
    assert problems[1].message.endswith(f"and {count - KNOWN_IDS_SHOWN} more")
    assert len(str(info.value)) < 50_000

"""Fuzzing plan loading: generated plans, near-valid plans, structured junk, hostile ids.

The hot folder hands whatever lands in the inbox to ``load_plan_file``. Whatever a file
holds, loading returns a valid MoviePlan or raises PlanError (never anything else), a plan
that loads only ever leads to files inside its own run folder, and ids that could name a
path outside it (``..``, absolute paths, NUL, very long, Unicode look-alikes) are refused.

``test_plans.py`` already fuzzes short random bytes and single-value replacements in the
example plan; the tests here generate whole plans from the schema's rules, mutate them a
few ways at once (in the document and in its bytes), and attack the id rule directly.
"""

from __future__ import annotations

import copy
import json
import os
import string
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkle.errors import PlanError, UnsafePathError
from sparkle.plans import load_plan_file, validate_plan
from sparkle.runstore import Run, RunStore, run_id_for
from sparkle.schemas import ID_RE, MoviePlan, check_id

#: The loading limit the tests use (the default setting, 1 MiB).
MAX_BYTES = 1 << 20

#: Characters an id may contain after its first.
ID_CHARS = string.ascii_letters + string.digits + "_.-"

# -- generating valid plans ----------------------------------------------------------------

safe_ids = st.from_regex(ID_RE, fullmatch=True).filter(lambda s: ".." not in s)

#: Any text a person might write, including non-ASCII and control characters.
prose = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)

#: Text with at least one non-space character (a title).
titles = prose.filter(lambda t: not t.isspace())

#: Finite numbers in (0, 600]: shot durations.
durations = st.floats(min_value=0, max_value=600, exclude_min=True, allow_nan=False)

even_sides = st.integers(8, 3840).map(lambda n: n * 2)

valid_metadata = st.fixed_dictionaries(
    {},
    optional={
        "seed": st.integers(-(10**18), 10**18).map(str),
        "fps": st.one_of(
            st.integers(1, 120).map(str),
            st.decimals(1, 119, places=3, allow_nan=False).map(str),
        ),
        "resolution": st.tuples(even_sides, even_sides).map(lambda wh: f"{wh[0]}x{wh[1]}"),
        "run_id": safe_ids,
        "note": prose,
    },
)


@st.composite
def plan_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A plan document that follows every rule in DESIGN.md's data model."""
    character_ids = draw(st.lists(safe_ids, max_size=3, unique=True))
    characters = [
        {
            "id": cid,
            "name": draw(prose),
            **({"description": draw(prose)} if draw(st.booleans()) else {}),
            "voice_profile": draw(st.dictionaries(prose, prose, max_size=2)),
        }
        for cid in character_ids
    ]
    shots = []
    for sid in draw(st.lists(safe_ids, min_size=1, max_size=3, unique=True)):
        lines = []
        if character_ids:
            for _ in range(draw(st.integers(0, 2))):
                line: dict[str, Any] = {
                    "character_id": draw(st.sampled_from(character_ids)),
                    "text": draw(prose),
                }
                if draw(st.booleans()):
                    line["start_time_sec"] = draw(st.floats(0, 600, allow_nan=False))
                lines.append(line)
        shots.append(
            {
                "id": sid,
                "duration_sec": draw(durations),
                "visual_description": draw(prose),
                "start_frame_prompt": draw(prose),
                "end_frame_prompt": draw(prose),
                **({"setting": draw(prose)} if draw(st.booleans()) else {}),
                **({"motion_prompt": draw(prose)} if draw(st.booleans()) else {}),
                "is_talking_closeup": draw(st.booleans()),
                "dialogue": lines,
            }
        )
    return {
        "title": draw(titles),
        "characters": characters,
        "shots": shots,
        "metadata": draw(valid_metadata),
    }


@pytest.fixture
def folder() -> Iterator[Path]:
    """A scratch folder usable across hypothesis examples (tmp_path is per test)."""
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def write_plan(folder: Path, data: bytes) -> Path:
    path = folder / "plan.json"
    path.write_bytes(data)
    return path


def files_under(root: Path) -> dict[str, int]:
    """Every file below ``root`` (relative path → size)."""
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = path.lstat().st_size
    return found


def load_or_plan_error(path: Path, max_bytes: int = MAX_BYTES) -> MoviePlan | None:
    """Load ``path``; None when it is refused with a PlanError that names a problem.

    Any other exception escapes and fails the test: that is the property under test.
    """
    try:
        plan = load_plan_file(path, max_bytes)
    except PlanError as exc:
        assert exc.problems, "a PlanError must say what is wrong"
        assert all(problem.message for problem in exc.problems)
        assert str(exc).startswith(str(path))
        return None
    assert isinstance(plan, MoviePlan)
    return plan


def assert_created_inside_runs(plan: MoviePlan) -> None:
    """Creating the plan's run (in a fresh folder) writes files only in ``runs/<run_id>/``."""
    with tempfile.TemporaryDirectory() as name:
        base = Path(name)
        (base / "elsewhere").mkdir()
        run, created = RunStore(base / "runs").create(plan)
        assert created
        assert list((base / "elsewhere").iterdir()) == []
        assert sorted(p.name for p in base.iterdir()) == ["elsewhere", "runs"]
        assert [p.name for p in (base / "runs").iterdir()] == [run.run_id]
        inside = (base / "runs" / run.run_id).resolve()
        assert all((run.dir / f).resolve().is_relative_to(inside) for f in files_under(run.dir))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(doc=plan_documents())
def test_every_generated_valid_plan_loads_and_its_run_stays_in_the_runs_folder(
    doc: dict[str, Any], folder: Path
):
    """A plan following every rule loads from a file, keeps its values, gets a path-safe
    run id, and creating its run writes nothing outside runs/<run_id>/."""
    # Given a generated plan written to a file
    path = write_plan(folder, json.dumps(doc).encode("utf-8"))
    # When it is loaded
    plan = load_plan_file(path, MAX_BYTES)
    # Then it is the plan that was written, value for value
    assert plan.model_dump(mode="json", exclude_none=True) == doc
    # And its run id is path-safe, and its run is created inside the runs folder only
    assert check_id(run_id_for(plan)) == run_id_for(plan)
    assert_created_inside_runs(plan)


# -- near-valid plans -----------------------------------------------------------------------

#: Values that break a rule wherever they land, or probe the parser and the models.
hostile_values = st.sampled_from(
    [
        None,
        True,
        0,
        -1,
        1e308,
        -1e-320,
        2**63,
        2**64 + 1,
        "",
        " ",
        "\x00",
        "..",
        "../x",
        "/etc/passwd",
        "a" * 65,
        "a" * 5000,
        "\u2025",
        "\uff0e\uff0e",
        "s\u0131",
        "\u212a",
        "\ufeff",
        "\u202eevil",
        [],
        {},
        [[[]]],
        {"": ""},
        {"title": "x"},
        "NaN",
        "1e999",
    ]
).map(copy.deepcopy)  # later mutations must not change the shared list and dict values

#: Ids that must never name a shot, a character or a run.
hostile_ids = st.one_of(
    st.sampled_from(
        [
            "..",
            "../x",
            "a/../../b",
            "/abs",
            "a/b",
            "a\\b",
            "a\x00b",
            "",
            "-a",
            ".a",
            "_a",
            "a..b",
            "a\n",
            "a b",
            "C:\\x",
            "con\x00",
            "a" * 65,
        ]
    ),
    st.text(ID_CHARS, min_size=65, max_size=500),
    st.builds(
        lambda a, b: f"{a}..{b}", st.text(ID_CHARS, max_size=5), st.text(ID_CHARS, max_size=5)
    ),
    st.builds(lambda a: f"/{a}", st.text(ID_CHARS, max_size=20)),
    st.builds(
        lambda a, b: f"{a}\x00{b}", st.text(ID_CHARS, max_size=5), st.text(ID_CHARS, max_size=5)
    ),
)


def _locations(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _locations(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _locations(child, (*prefix, index))
    return found


@st.composite
def near_valid_documents(draw: st.DrawFn) -> Any:
    """A valid plan with one to four mutations: keys dropped, added, retyped; ids replaced
    by hostile ones, duplicated or left dangling; values swapped for hostile ones."""
    doc = draw(plan_documents())
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from([p for p in _locations(doc) if p]))
        parent: Any = doc
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        kind = draw(
            st.sampled_from(["drop", "hostile", "hostile-id", "wrap", "add-key", "copy-sibling"])
        )
        if kind == "drop" and isinstance(parent, dict):
            del parent[last]
        elif kind == "drop" and isinstance(parent, list):
            parent.pop(last)
        elif kind == "hostile":
            parent[last] = draw(hostile_values)
        elif kind == "hostile-id":
            parent[last] = draw(hostile_ids)
        elif kind == "wrap":
            parent[last] = [parent[last]]
        elif kind == "add-key" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["colour", "Title", "id ", "__proto__", ""]))] = 1
        elif kind == "copy-sibling" and isinstance(parent, list) and parent:
            parent.append(copy.deepcopy(parent[0]))
    return doc


def _byte_mutations(data: bytes, draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["none", "truncate", "flip", "insert", "bom", "dup-key", "trailing", "utf16"]
        )
    )
    if not data or kind == "none":
        return data
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "dup-key":
        return data.replace(b'"title"', b'"title": "again", "title"', 1)
    if kind == "trailing":
        return data + draw(st.sampled_from([b"}", b"\x00", b" // c", b",", b"\n{}"]))
    return data.decode("utf-8").encode("utf-16")


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_near_valid_plans_give_a_plan_or_a_plan_error(data: st.DataObject, folder: Path):
    """A valid plan mutated in its document and then in its bytes loads as a plan or is
    refused with a PlanError; one that loads has only path-safe ids and stays in runs/."""
    # Given a near-valid plan, serialized, with a byte-level mutation on top
    doc = data.draw(near_valid_documents())
    raw = json.dumps(doc, ensure_ascii=data.draw(st.booleans())).encode("utf-8")
    path = write_plan(folder, _byte_mutations(raw, data.draw))
    # When it is loaded, Then it is a plan or a PlanError (anything else fails the test)
    plan = load_or_plan_error(path)
    if plan is not None:
        # And whatever got through has path-safe ids and creates its run inside runs/
        for some_id in [s.id for s in plan.shots] + [c.id for c in plan.characters]:
            assert check_id(some_id) == some_id
        assert_created_inside_runs(plan)


# -- structured junk and arbitrary bytes ----------------------------------------------------

json_tokens = st.sampled_from(
    [
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b'"title"',
        b'"shots"',
        b'"id"',
        b'"metadata"',
        b'"run_id"',
        b'"../x"',
        b'"\\u0000"',
        b'"\\ud800"',
        b'"\\udfff\\ud800"',
        b"1e999",
        b"-1e999",
        b"NaN",
        b"Infinity",
        b"-0",
        b"0.1",
        b"1" * 400,
        b"true",
        b"null",
        b" ",
        b"\n",
        b'"a"',
        b'"\\"',
        b"\xc3",
        b"\xff",
        b"\x00",
        b"/*",
        b"'x'",
    ]
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(tokens=st.lists(json_tokens, max_size=60))
def test_json_token_soup_gives_a_plan_error(tokens: list[bytes], folder: Path):
    """Random sequences of JSON tokens (reaching deeper parser states than random bytes)
    are refused with a PlanError, never another exception."""
    load_or_plan_error(write_plan(folder, b"".join(tokens)))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=8192), limit=st.integers(1, 10_000))
def test_arbitrary_file_contents_under_any_size_limit(data: bytes, limit: int, folder: Path):
    """Any bytes in a file, under any size limit, give a plan or a PlanError; a file over
    the limit is refused whatever it holds."""
    path = write_plan(folder, data)
    plan = load_or_plan_error(path, max_bytes=limit)
    if len(data) > limit:
        assert plan is None


@pytest.mark.parametrize(
    "number", [b"1" * 4301, b"-" + b"9" * 10_000], ids=["4301-digits", "negative-10000-digits"]
)
def test_an_integer_longer_than_python_parses_is_a_plan_error(tmp_path: Path, number: bytes):
    """Python refuses to parse integers of more than 4300 digits (a ValueError that is not
    a JSONDecodeError); a plan holding one is refused as a PlanError like any bad JSON,
    so the inbox rejects it instead of leaving it claimed as an unexpected failure."""
    # Given a plan whose duration is a 4301-digit integer (found by the token soup test)
    path = write_plan(tmp_path, b'{"title": "t", "shots": [{"duration_sec": ' + number + b"}]}")
    # When it is loaded, Then it is a PlanError naming the problem
    with pytest.raises(PlanError) as info:
        load_plan_file(path, MAX_BYTES)
    assert info.value.problems


# -- adversarial ids ------------------------------------------------------------------------

#: Characters that look like, or normalize to, ASCII letters, digits, dots and slashes.
LOOK_ALIKES = (
    "\uff41\uff3a\uff10\uff0e\uff0f\uff3f\uff0d"  # fullwidth a Z 0 . / _ -
    "\u0430\u0435\u043e\u0440\u0441\u0445\u0456"  # Cyrillic a e o p c x i
    "\u03bf\u03b1\u0391"  # Greek omicron, alpha, Alpha
    "\u0131\u017f\u212a\u212b\ufb01"  # dotless i, long s, Kelvin, Angstrom, fi ligature
    "\u2024\u2025\u2026\u2044\u2215\u29f8"  # one/two dot leaders, ellipsis, slashes
    "\u00b9\u2070\u2460\U0001d41a\U0001d7ce"  # superscripts, circled 1, math bold a and 0
    "\u200b\u200d\u202e\u2060\ufeff\u00a0\u0307\u0338"  # invisible, bidi, combining
)

look_alike_ids = st.text(st.sampled_from(ID_CHARS + LOOK_ALIKES), min_size=1, max_size=64).filter(
    lambda s: any(c in LOOK_ALIKES for c in s)
)


@settings(max_examples=500, deadline=None)
@given(
    value=st.one_of(
        st.text(), st.text(ID_CHARS + "/\\\x00 \n", max_size=80), hostile_ids, look_alike_ids
    )
)
def test_an_accepted_id_is_a_plain_child_name(value: str):
    """Whatever string is offered, check_id accepts it only if it is 1-64 ASCII characters,
    unchanged by Unicode normalization, with no separator, NUL or '..', and it names a
    direct child of any folder it is joined to."""
    try:
        check_id(value)
    except ValueError:
        return
    assert value.isascii() and 1 <= len(value) <= 64
    assert unicodedata.normalize("NFKC", value) == value
    assert "/" not in value and "\\" not in value and "\x00" not in value
    assert ".." not in value and value[0] not in ".-_"
    root = Path("/srv/runs")
    assert os.path.normpath(root / value) == str(root / value)
    assert (root / value).parent == root


@settings(max_examples=300, deadline=None)
@given(bad=st.one_of(hostile_ids, look_alike_ids))
def test_adversarial_ids_are_refused_everywhere_an_id_goes(bad: str):
    """A hostile or look-alike id is refused as a shot id, a character id and a run id
    (with the problem at that field), and as the name of a Run folder."""
    # Given the same hostile id as a shot id, a character id (and its line), and a run id
    as_shot = _small_plan()
    as_shot["shots"][0]["id"] = bad
    as_character = _small_plan()
    as_character["characters"][0]["id"] = bad
    as_character["shots"][0]["dialogue"][0]["character_id"] = bad
    as_run = _small_plan()
    as_run["metadata"]["run_id"] = bad
    # When each is validated, Then each is refused at that field
    for doc, field in [
        (as_shot, "shots[0].id"),
        (as_character, "characters[0].id"),
        (as_run, "metadata.run_id"),
    ]:
        with pytest.raises(PlanError) as info:
            validate_plan(doc, "plan.json")
        assert field in [problem.path for problem in info.value.problems]
    # And no run folder can be opened under that name
    with pytest.raises(UnsafePathError):
        Run(Path("/srv/runs"), bad)


def _small_plan() -> dict[str, Any]:
    return {
        "title": "t",
        "characters": [{"id": "c1", "name": "C"}],
        "shots": [
            {
                "id": "s1",
                "duration_sec": 1,
                "visual_description": "v",
                "start_frame_prompt": "a",
                "end_frame_prompt": "b",
                "dialogue": [{"character_id": "c1", "text": "hi"}],
            }
        ],
        "metadata": {},
    }


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(
        st.one_of(hostile_ids, look_alike_ids, st.sampled_from(["..", ".", "a", "/"])),
        min_size=1,
        max_size=4,
    )
)
def test_a_run_path_never_resolves_outside_its_folder(parts: list[str], folder: Path):
    """Run.path() joins adapter-given parts; the result is inside the run folder or the
    call is refused with UnsafePathError (or ValueError for a NUL byte, which no path holds)."""
    run = Run(folder / "runs", "r1")
    run.dir.mkdir(parents=True, exist_ok=True)
    try:
        resolved = run.path(*parts)
    except UnsafePathError:
        return
    except ValueError:
        assert any("\x00" in p for p in parts)
        return
    assert resolved == run.dir.resolve() or resolved.is_relative_to(run.dir.resolve())


def test_a_symlink_inside_the_run_folder_cannot_lead_outside(tmp_path: Path):
    """A link planted in a run folder pointing outside is refused by Run.path()."""
    run = Run(tmp_path / "runs", "r1")
    run.dir.mkdir(parents=True)
    (run.dir / "frames").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        run.path("frames", "s1_start.png")


# -- through the whole chain ----------------------------------------------------------------


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(doc=plan_documents())
def test_rendering_a_generated_plan_writes_only_inside_its_run_folder(
    doc: dict[str, Any], pipeline: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Every stage of the test adapter set, fed a generated plan (ids at the edges of the
    rule), writes its files inside runs/<run_id>/ and nowhere else."""
    # Given a generated plan, and a working directory that must stay empty
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    doc["metadata"].pop("run_id", None)
    for shot in doc["shots"]:  # the test adapters' clips grow with duration: keep them short
        shot["duration_sec"] = min(shot["duration_sec"], 3.0)
        for line in shot["dialogue"]:
            line.pop("start_time_sec", None)
    path = tmp_path / "plans" / "plan.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc))
    outside_before = {
        k: v for k, v in files_under(tmp_path).items() if not k.startswith("runs" + os.sep)
    }
    # When it is rendered to the end
    run = pipeline.create(path)
    result = pipeline.work(run)
    # Then it succeeded (or, when the test set's QA escalated, as it does when identical
    # keyframes make a GIF shorter, waits for review), and every file it made is inside
    # its run folder
    assert result.status.value == "succeeded" or (
        result.status.value == "awaiting_review" and run.qa_decision() == "escalate")
    outside_after = {
        k: v for k, v in files_under(tmp_path).items() if not k.startswith("runs" + os.sep)
    }
    assert outside_after == outside_before
    assert list(cwd.iterdir()) == []
    runs = (tmp_path / "runs").resolve()
    for name in files_under(run.dir):
        assert (run.dir / name).resolve().is_relative_to(runs / run.run_id)

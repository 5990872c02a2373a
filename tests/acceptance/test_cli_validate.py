"""`sparkle validate`, `sparkle schema` and `sparkle --version` through the real console script.

Each test runs the installed ``sparkle`` executable in a subprocess, in an empty working
folder with no ``SPARKLE_*`` variables, and checks its exit code and what it prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sparkle import __version__
from sparkle.schemas import EXPORTED_MODELS

PLANS = Path(__file__).parents[1] / "data" / "plans"
EXAMPLES = sorted(PLANS.glob("*.json"))


def sparkle_executable() -> str:
    """The console script installed beside this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).parent / "sparkle"
    if beside.exists():
        return str(beside)
    found = shutil.which("sparkle")
    assert found, "the sparkle console script is not installed: pip install -e ."
    return found


def sparkle(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `sparkle ARGS` in ``cwd``; stdout and stderr are kept apart."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.run(
        [sparkle_executable(), *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def example_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((PLANS / "lighthouse.json").read_text("utf-8"))
    return doc


def changed(change: Callable[[dict[str, Any]], object]) -> bytes:
    doc = example_doc()
    change(doc)
    return json.dumps(doc, indent=2).encode("utf-8")


#: Each bad plan: how to make its bytes, and what the output must name.
BAD_PLANS: dict[str, tuple[Callable[[], bytes], str]] = {
    "dotdot-shot-id": (
        lambda: changed(lambda d: d["shots"][0].update(id="../evil")),
        "shots[0].id",
    ),
    "absolute-shot-id": (
        lambda: changed(lambda d: d["shots"][1].update(id="/etc/passwd")),
        "shots[1].id",
    ),
    "duplicate-shot-id": (
        lambda: changed(lambda d: d["shots"][2].update(id="s1")),
        "shots[2].id: duplicate shot id 's1'",
    ),
    "unknown-character": (
        lambda: changed(lambda d: d["shots"][1]["dialogue"][1].update(character_id="ghost")),
        "shots[1].dialogue[1].character_id: 'ghost' names no character",
    ),
    "zero-duration": (
        lambda: changed(lambda d: d["shots"][2].update(duration_sec=0)),
        "shots[2].duration_sec",
    ),
    "no-shots": (lambda: changed(lambda d: d.update(shots=[])), "shots:"),
    "missing-title": (
        lambda: changed(lambda d: d.pop("title")),
        "title: required field is missing",
    ),
    "wrong-type": (
        lambda: changed(lambda d: d["shots"][0].update(duration_sec="four")),
        "shots[0].duration_sec",
    ),
    "truncated": (lambda: changed(lambda d: None)[:150], "invalid JSON at line"),
    "non-utf8": (
        lambda: changed(lambda d: None).replace(b"Keeper", "K\u00e9\u00e9per".encode("latin-1")),
        "not UTF-8 text: byte 0xe9",
    ),
    "nested-brackets": (lambda: b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    "empty": (lambda: b"", "empty"),
    "top-level-array": (lambda: b"[" + changed(lambda d: None) + b"]", "top level is a JSON array"),
}


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_validate_accepts_example_plan(tmp_path: Path, example: Path):
    """Each example plan validates: exit 0 and `OK <file>`."""
    result = sparkle("validate", str(example), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"OK {example}\n"


def test_validate_accepts_all_example_plans_at_once(tmp_path: Path):
    """Several valid plans in one call: exit 0 and one OK line per file, in order."""
    result = sparkle("validate", *map(str, EXAMPLES), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"OK {p}" for p in EXAMPLES]


@pytest.mark.parametrize("kind", sorted(BAD_PLANS))
def test_validate_rejects_bad_plan_naming_the_problem(tmp_path: Path, kind: str):
    """A bad plan exits 2 and the output names the file and the field or fault."""
    # Given a bad plan file
    make, expected = BAD_PLANS[kind]
    plan_file = tmp_path / f"{kind}.json"
    plan_file.write_bytes(make())
    # When I validate it
    result = sparkle("validate", str(plan_file), cwd=tmp_path)
    # Then the command fails with exit 2 and says what is wrong where
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"{plan_file}: invalid plan" in output
    assert expected in output
    assert "Traceback" not in output
    assert "OK " not in output


def test_validate_rejects_a_symlink(tmp_path: Path):
    """A symlink to a valid plan is refused (exit 2) because links are never followed."""
    link = tmp_path / "link.json"
    link.symlink_to(EXAMPLES[0])
    result = sparkle("validate", str(link), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{link}: invalid plan" in result.stdout
    assert "symbolic link" in result.stdout


@pytest.mark.parametrize(
    "make",
    [lambda p: p.mkdir(), lambda p: os.mkfifo(p), lambda p: None],
    ids=["directory", "fifo", "missing"],
)
def test_validate_rejects_what_is_not_a_plan_file(tmp_path: Path, make: Any):
    """A directory, a FIFO or a missing path is reported (exit 2) without hanging."""
    path = tmp_path / "plan.json"
    make(path)
    result = sparkle("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{path}: invalid plan" in result.stdout


def test_validate_reports_every_file_and_fails_if_any_is_bad(tmp_path: Path):
    """Valid and invalid files together: every file is reported, and the exit code is 2."""
    # Given a good plan between two bad ones
    bad_title = tmp_path / "bad-title.json"
    bad_title.write_bytes(changed(lambda d: d.update(title="")))
    bad_shot = tmp_path / "bad-shot.json"
    bad_shot.write_bytes(changed(lambda d: d["shots"][1].update(id="..")))
    good = EXAMPLES[0]
    # When I validate them in one call
    result = sparkle("validate", str(bad_title), str(good), str(bad_shot), cwd=tmp_path)
    # Then each file gets its verdict and the command fails
    assert result.returncode == 2
    out = result.stdout
    assert f"{bad_title}: invalid plan" in out and "title:" in out
    assert f"OK {good}" in out
    assert f"{bad_shot}: invalid plan" in out and "shots[1].id" in out
    assert out.index(str(bad_title)) < out.index(f"OK {good}") < out.index(str(bad_shot))


def test_validate_lists_every_problem_of_one_file(tmp_path: Path):
    """A plan with several faults gets every fault listed, each with its JSON path."""

    def break_three(d: dict[str, Any]) -> None:
        d.pop("title")
        d["shots"][0]["duration_sec"] = -2
        d["shots"][2]["id"] = "/abs"

    plan_file = tmp_path / "three.json"
    plan_file.write_bytes(changed(break_three))
    result = sparkle("validate", str(plan_file), cwd=tmp_path)
    assert result.returncode == 2
    assert "(3 problem(s))" in result.stdout
    for path in ("title:", "shots[0].duration_sec:", "shots[2].id:"):
        assert f"  - {path}" in result.stdout


def test_validate_honours_the_plan_size_limit(tmp_path: Path):
    """SPARKLE_MAX_PLAN_BYTES refuses larger plans, naming the setting."""
    size = EXAMPLES[0].stat().st_size
    result = sparkle(
        "validate", str(EXAMPLES[0]), cwd=tmp_path, env={"SPARKLE_MAX_PLAN_BYTES": str(size - 1)}
    )
    assert result.returncode == 2
    assert "SPARKLE_MAX_PLAN_BYTES" in result.stdout


def test_validate_needs_at_least_one_file(tmp_path: Path):
    """`sparkle validate` with no file is a usage error (exit 2)."""
    result = sparkle("validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "PLANS" in result.stderr


def test_version_prints_the_package_version(tmp_path: Path):
    """`sparkle --version` prints the installed version and exits 0."""
    result = sparkle("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"sparkle, version {__version__}"


def test_schema_writes_the_seven_schema_files(tmp_path: Path):
    """`sparkle schema --out DIR` writes one valid JSON Schema per exported model."""
    out = tmp_path / "nested" / "schemas"
    result = sparkle("schema", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"{name}.schema.json"
        for name in ("MoviePlan", "AssetRefs", "QAReport", "Checkpoint", "StageEvent",
                     "RunManifest", "BaseImagePlan")
    )
    for name in EXPORTED_MODELS:
        schema = json.loads((out / f"{name}.schema.json").read_text("utf-8"))
        assert schema["title"] == name
        assert schema["type"] == "object"
        assert f"wrote {out / f'{name}.schema.json'}" in result.stdout

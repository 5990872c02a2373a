"""The run folder's layout: its file names are written in one module, and the run store
writes exactly those files."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from sparkle import runlayout
from sparkle.runlayout import (
    ASSET_REFS_FILE,
    CHECKPOINTS_DIR,
    LOCK_FILE,
    MANIFEST_FILE,
    MANIFEST_LOCK_FILE,
    PLAN_FILE,
    checkpoint_file,
)
from sparkle.runstore import RunStore
from sparkle.schemas import Checkpoint, MoviePlan

ROOT = Path(__file__).parents[2]
PLANS = ROOT / "tests" / "data" / "plans"

#: The file names of the layout. (Not ``cancelled``: the word is a run status as well.)
FILE_NAMES = {
    value for name, value in vars(runlayout).items()
    if name.isupper() and isinstance(value, str) and value != runlayout.CANCELLED_FILE
}


def spelled_out(source: str) -> list[tuple[int, str]]:
    """The string literals of ``source`` that spell out a run-folder file name: the name
    itself, or a path made with it (``"checkpoints/qa.json"``, ``f"{run}/manifest.json"``)."""
    found = []
    nodes = list(ast.walk(ast.parse(source)))
    # (the literal parts of an f-string are judged with the f-string, not alone)
    in_fstrings = {id(part) for node in nodes if isinstance(node, ast.JoinedStr)
                   for part in node.values}
    for node in nodes:
        if isinstance(node, ast.JoinedStr):
            parts = [part.value for part in node.values
                     if isinstance(part, ast.Constant) and isinstance(part.value, str)]
            if any(f"/{name}" in part for part in parts for name in FILE_NAMES):
                found.append((node.lineno, "".join(parts)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in in_fstrings:
            text = node.value
            if any(text == name or text.startswith(f"{name}/") or text.endswith(f"/{name}")
                   for name in FILE_NAMES):
                found.append((node.lineno, text))
    return found


def test_run_folder_file_names_are_spelled_out_only_in_runlayout():
    """Every module names a run folder's files through sparkle.runlayout, so a file can be
    renamed in one place."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for package in ("sparkle", "actors")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "runlayout.py"
        for line, text in spelled_out(path.read_text("utf-8"))
    ]
    assert offenders == [], "use the names of sparkle.runlayout:\n" + "\n".join(offenders)


def test_the_check_finds_names_spelled_out():
    """The check above is not vacuous: each form it looks for is found."""
    source = (
        'a = "movie_plan.json"\n'
        'b = "checkpoints/qa.json"\n'
        'c = f"{run}/manifest.json"\n'
        'd = f".owner-{x}.lock"\n'  # another folder's lock file, not a run's
    )
    assert [line for line, _ in spelled_out(source)] == [1, 2, 3]


def test_a_run_folder_holds_the_files_of_the_layout(tmp_path: Path):
    """A new run is its plan, refs, manifest and checkpoints folder; a checkpoint, an
    event and the run's lock land under the layout's names."""
    store = RunStore(tmp_path / "runs")
    run, _ = store.create(MoviePlan.model_validate_json((PLANS / "lighthouse.json").read_bytes()))
    assert sorted(os.listdir(run.dir)) == sorted(
        [PLAN_FILE, ASSET_REFS_FILE, MANIFEST_FILE, CHECKPOINTS_DIR])
    run.write_checkpoint(Checkpoint(stage="images", status="begin", timestamp=1.0))
    assert (run.dir / checkpoint_file("images")).is_file()
    assert run.checkpoint_path("images") == (run.dir / checkpoint_file("images")).resolve()
    run.append_event("images", "begin", 1)
    with run.locked():
        pass
    assert {LOCK_FILE, MANIFEST_LOCK_FILE} <= set(os.listdir(run.dir))

"""`sparkle runs --status queued|running` answered by sparkle.entry from the unfinished-run
index and the summary caches of the runs it names (issue 22: under 300 ms with 100,000
finished runs): the same output as the full CLI, no finished run's folder looked at, no
pydantic or click imported, and it steps aside whenever it cannot vouch for the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sparkle.cli import main as cli
from sparkle.entry import fast_runs
from sparkle.runindex_fast import INDEX_DIR, REBUILD_INTERVAL_SEC, REBUILT_FILE
from sparkle.runindex_folder import FolderRunIndex
from sparkle.runstore import Run, RunStore
from sparkle.schemas import STAGES, Checkpoint, MoviePlan

PLANS = Path(__file__).parents[1] / "data" / "plans"

#: Run id → how many stages succeeded (7: succeeded; -1: cancelled before any).
STATES = {"a-queued": 0, "b-running": 2, "c-done": 7, "d-queued": 0, "e-running": 5,
          "f-cancelled": -1, "g-done-long-ago": 7, "h-cancelled-long-ago": -1}
#: Finished since the index was last read: it still names them.
JUST_FINISHED = ("c-done", "f-cancelled")
UNFINISHED = ("a-queued", "b-running", "d-queued", "e-running")


def make_run(store: RunStore, run_id: str, done: int) -> Run:
    doc = json.loads((PLANS / "lighthouse.json").read_text("utf-8"))
    doc["metadata"]["run_id"] = run_id
    run, _ = store.create(MoviePlan.model_validate(doc))
    for number, stage in enumerate(STAGES[:max(done, 0)]):
        run.write_checkpoint(Checkpoint.model_validate(
            {"stage": stage, "status": "success", "timestamp": 1.0, "attempt": 1,
             "metadata": {"duration_sec": 0.5 * number}}), durable=False)
        run.append_event(stage, "success", 1, durable=False)
    if 0 < done < len(STAGES):
        run.write_checkpoint(Checkpoint.model_validate(
            {"stage": STAGES[done], "status": "begin", "timestamp": 2.0, "attempt": 1}),
            durable=False)
    if done < 0:
        run.set_cancelled(True)
    return run


def full_cli(root: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["runs", *args, "--runs-dir", str(root)])
    assert result.exit_code == 0, result.output
    return result.output


def fast(root: Path, *args: str, environ: dict[str, str] | None = None,
         cwd: Path | None = None) -> str | None:
    shown = fast_runs([*args, "--runs-dir", str(root)], environ or {}, str(cwd or root.parent))
    return None if shown is None else shown + "\n" if shown else ""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    """A runs folder with runs in every state, its index built, every cache fresh."""
    store = RunStore(tmp_path / "runs")
    for run_id, done in STATES.items():
        make_run(store, run_id, done)
    FolderRunIndex(store.root).rebuild(store)
    # (the index names finished runs too, as it does when they finished since it was read)
    for run_id in JUST_FINISHED:
        (store.root / INDEX_DIR / run_id).touch()
        os.utime(store.root / INDEX_DIR / run_id, (1.0, 1.0))
    store.summaries()
    yield store


@pytest.mark.parametrize("status", ["queued", "running"])
@pytest.mark.parametrize("as_json", [False, True])
def test_fast_path_prints_exactly_what_the_full_cli_prints(store: RunStore, status: str,
                                                           as_json: bool):
    args = ["--status", status, *(["--json"] if as_json else [])]
    shown = fast(store.root, *args)
    assert shown is not None
    assert shown == full_cli(store.root, *args)
    assert ("b-running" in shown) == (status == "running")


def test_no_finished_run_folder_is_looked_at(store: RunStore,
                                             monkeypatch: pytest.MonkeyPatch):
    # Given: every path the fast path opens, stats or lists is recorded
    seen: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        real = getattr(os, name)

        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(path))
            return real(path, *args, **kwargs)
        return call

    for name in ("open", "stat", "lstat", "scandir", "listdir"):
        monkeypatch.setattr(os, name, spy(name))

    def looked_at() -> set[str]:
        found = {Path(path).relative_to(store.root).parts[0] for path in seen
                 if Path(path).is_relative_to(store.root) and Path(path) != store.root}
        seen.clear()
        return found

    # When
    shown = fast(store.root, "--status", "running")
    # Then: it answered from the index and the folders of the runs it names only; the
    # runs found finished are dropped from the index
    assert shown is not None and "e-running" in shown
    assert looked_at() == {INDEX_DIR, *UNFINISHED, *JUST_FINISHED}
    assert sorted(p.name for p in (store.root / INDEX_DIR).iterdir()) == [
        REBUILT_FILE, *UNFINISHED]
    # and the next time, not even theirs
    assert fast(store.root, "--status", "running") == shown
    assert looked_at() == {INDEX_DIR, *UNFINISHED}


def test_a_stale_cache_or_a_due_rebuild_sends_it_to_the_full_cli(store: RunStore):
    assert fast(store.root, "--status", "queued") is not None
    # a stage began since the cache was written: the full CLI derives the summary
    run = Run(store.root, "a-queued")
    run.write_checkpoint(Checkpoint.model_validate(
        {"stage": "script", "status": "begin", "timestamp": 3.0, "attempt": 1}))
    assert fast(store.root, "--status", "queued") is None
    full_cli(store.root, "--status", "queued")  # (refreshes it)
    assert fast(store.root, "--status", "queued") is not None
    # the index is due for its rebuild
    old = os.stat(store.root / INDEX_DIR / REBUILT_FILE).st_mtime - REBUILD_INTERVAL_SEC
    os.utime(store.root / INDEX_DIR / REBUILT_FILE, (old, old))
    assert fast(store.root, "--status", "queued") is None


def test_fast_path_steps_aside_for_anything_it_does_not_handle(store: RunStore,
                                                               tmp_path: Path):
    assert fast(store.root, "--status", "succeeded") is None
    assert fast(store.root) is None
    assert fast(store.root, "--status", "queued", "--help") is None
    assert fast(store.root, "--status", "queued", "--status", "running") is None
    # settings it would have to read from a .env file, or ambiguous ones
    (tmp_path / ".env").write_text("SPARKLE_REDIS_URL=redis://127.0.0.1:1/0\n")
    assert fast(store.root, "--status", "queued", cwd=tmp_path) is None
    assert fast(store.root, "--status", "queued",
                environ={"SPARKLE_NAMESPACE": "a", "sparkle_namespace": "b"}) is None
    # a Redis that cannot be reached (the full CLI warns and lists every folder)
    assert fast(store.root, "--status", "queued",
                environ={"SPARKLE_REDIS_URL": "redis://127.0.0.1:1/0"}) is None


def test_runs_fast_path_imports_neither_pydantic_nor_click(store: RunStore):
    """What makes it fast: a fresh `sparkle runs --status running` process answers without
    importing pydantic or click (embedded, without redis either)."""
    expected = full_cli(store.root, "--status", "running")
    code = (
        "import sys\n"
        "from sparkle.entry import main\n"
        "sys.argv = ['sparkle', 'runs', '--status', 'running', '--runs-dir', sys.argv[1]]\n"
        "import atexit\n"
        "atexit.register(lambda: sys.stderr.write(repr(sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('pydantic', 'click', 'pydantic_settings', 'redis')))))\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SPARKLE_")}
    result = subprocess.run([sys.executable, "-c", code, str(store.root)],
                            capture_output=True, text=True, check=False, cwd=store.root,
                            env={**env, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert result.stderr == "[]"

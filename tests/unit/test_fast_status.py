"""`sparkle status RUN` answered by sparkle.entry from the run's summary cache, without
importing pydantic or click: same output as the full CLI, and it steps aside whenever it
cannot vouch for the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkle import statuscache
from sparkle.cli import main as cli
from sparkle.entry import fast_status
from sparkle.runstore import Run, RunStore
from sparkle.schemas import STAGES, AssetRefs, Checkpoint, MoviePlan

PLANS = Path(__file__).parents[1] / "data" / "plans"


def make_run(store: RunStore, run_id: str, state: str) -> Run:
    doc = json.loads((PLANS / "lighthouse.json").read_text("utf-8"))
    doc["metadata"]["run_id"] = run_id
    run, _ = store.create(MoviePlan.model_validate(doc))
    done = {"succeeded": 7, "failed": 3, "running": 2, "cancelled": 2, "queued": 0}[state]
    for number, stage in enumerate(STAGES[:done]):
        run.append_event(stage, "begin", 1, durable=False)
        run.write_checkpoint(Checkpoint(stage=stage, status="success", timestamp=1.0,  # type: ignore[arg-type]
                                        attempt=1, metadata={"duration_sec": 0.25 * number,
                                                             "decision": "escalate"}),
                             durable=False)
        run.append_event(stage, "success", 1, durable=False)
    if state == "succeeded":
        refs = AssetRefs(extras={"final_movie": "final/movie.mp4"})
        run.save_asset_refs(refs)
    if state == "failed":
        run.append_event(STAGES[done], "begin", 2, durable=False)
        run.write_checkpoint(Checkpoint(stage=STAGES[done], status="failed", timestamp=2.0,  # type: ignore[arg-type]
                                        attempt=2, error="RuntimeError: the encoder broke"),
                             durable=False)
    if state in ("running", "cancelled"):
        run.write_checkpoint(Checkpoint(stage=STAGES[done], status="begin", timestamp=2.0,  # type: ignore[arg-type]
                                        attempt=1), durable=False)
    if state == "cancelled":
        run.set_cancelled(True)
    return run


def full_cli(root: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["status", *args, "--runs-dir", str(root)])
    assert result.exit_code == 0, result.output
    return result.output


def fast(root: Path, *args: str, environ: dict[str, str] | None = None,
         cwd: Path | None = None) -> str | None:
    return fast_status([*args, "--runs-dir", str(root)], environ or {}, str(cwd or root))


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


@pytest.mark.parametrize("state", ["succeeded", "failed", "running", "cancelled", "queued"])
@pytest.mark.parametrize("as_json", [False, True])
def test_fast_path_prints_exactly_what_the_full_cli_prints(store: RunStore, state: str,
                                                           as_json: bool):
    """For a run in any state, text or JSON, the fast answer is byte for byte the full one."""
    run = make_run(store, f"run-{state}", state)
    flags = ["--json"] if as_json else []
    # Before any full look there is no cache: the fast path steps aside
    assert fast(store.root, run.run_id, *flags) is None
    expected = full_cli(store.root, run.run_id, *flags)
    # The full CLI left the cache fresh: now the fast path answers, identically
    assert fast(store.root, run.run_id, *flags) + "\n" == expected  # type: ignore[operator]
    if as_json:
        record = json.loads(expected)
        assert record["status"] == state
        assert [s["stage"] for s in record["stages"]] == list(STAGES)


def test_a_change_to_any_source_file_sends_status_back_to_the_full_cli(store: RunStore):
    """After a checkpoint, the manifest, the asset refs or the cancel marker changes, the
    cached answer is not trusted until the full CLI has looked again."""
    run = make_run(store, "r1", "running")
    changes = [
        lambda: run.write_checkpoint(Checkpoint(stage="videos", status="success",  # type: ignore[arg-type]
                                                timestamp=3.0, attempt=1), durable=False),
        lambda: run.append_event("tts", "begin", 1, durable=False),
        lambda: run.save_asset_refs(AssetRefs(extras={"final_movie": "x.mp4"})),
        lambda: run.set_cancelled(True),
        lambda: run.set_cancelled(False),
        lambda: run.remove_checkpoint("videos"),
    ]
    for change in changes:
        full_cli(store.root, run.run_id)
        assert fast(store.root, run.run_id) is not None
        change()
        assert fast(store.root, run.run_id) is None
        assert fast(store.root, run.run_id) is None  # and it does not cache on its own


def test_fast_path_steps_aside_for_anything_it_does_not_handle(store: RunStore, tmp_path: Path):
    """Other options, help, unsafe ids, a missing run, a .env file or an ambiguous variable
    all go to the full CLI, which knows how to answer or to explain."""
    run = make_run(store, "r1", "succeeded")
    full_cli(store.root, run.run_id)
    assert fast(store.root, run.run_id) is not None
    for args in (["--help"], [run.run_id, "--verbose"], [run.run_id, "--json", "--json"],
                 [run.run_id, "other"], ["../r1"], ["missing-run"], []):
        assert fast_status([*args, "--runs-dir", str(store.root)], {}, str(tmp_path)) is None
    # The runs folder from the environment, in any case, as pydantic-settings reads it
    assert fast_status([run.run_id], {"sparkle_runs_dir": str(store.root)}, str(tmp_path))
    assert fast_status([run.run_id], {"SPARKLE_RUNS_DIR": str(store.root),
                                      "Sparkle_Runs_Dir": "elsewhere"}, str(tmp_path)) is None
    # A .env file might name another runs folder: not parsed here
    (tmp_path / ".env").write_text(f"SPARKLE_RUNS_DIR={store.root}\n")
    assert fast_status([run.run_id], {}, str(tmp_path)) is None


def test_damaged_or_forged_caches_are_not_believed(store: RunStore):
    """A cache that is truncated, of another shape, or a symlink is not used."""
    run = make_run(store, "r1", "failed")
    full_cli(store.root, run.run_id)
    cache = run.dir / statuscache.SUMMARY_FILE
    good = cache.read_bytes()
    summary, view = (json.loads(line) for line in good.splitlines())
    view["stages"][0][2] = True  # an attempt that is not a number
    forged = (json.dumps(summary) + "\n" + json.dumps(view)).encode()
    for content in (good[:-5], b"[]", good.splitlines()[0], forged):
        cache.write_bytes(content)
        assert fast(store.root, run.run_id) is None
    cache.unlink()
    outside = store.root.parent / "outside.json"
    outside.write_bytes(good)
    cache.symlink_to(outside)
    assert fast(store.root, run.run_id) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.builds(lambda v: json.dumps(v).encode(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=6),
    max_leaves=20)))
def test_reading_any_bytes_as_a_cache_never_raises(tmp_path_factory: Any, data: bytes):
    """Whatever a .summary.json holds, reading it gives an entry or None, never an error."""
    path = tmp_path_factory.mktemp("cache") / "c.json"
    path.write_bytes(data)
    for with_view in (False, True):
        entry = statuscache.read(str(path), with_view)
        assert entry is None or isinstance(entry, statuscache.Entry)


def test_status_fast_path_imports_neither_pydantic_nor_click(store: RunStore):
    """What makes the fast path fast: a fresh `sparkle status` process answers without
    importing pydantic or click (they are most of the full command's start-up)."""
    run = make_run(store, "r1", "succeeded")
    expected = full_cli(store.root, run.run_id)
    code = (
        "import sys\n"
        "from sparkle.entry import main\n"
        "sys.argv = ['sparkle', 'status', sys.argv[1], '--runs-dir', sys.argv[2]]\n"
        "import atexit\n"
        "atexit.register(lambda: sys.stderr.write(repr(sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('pydantic', 'click', 'pydantic_settings')))))\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, run.run_id, str(store.root)],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert result.stderr == "[]"


@pytest.mark.parametrize("error", ["RuntimeError: the encoder \u00e9 broke",
                                   "RuntimeError: \x1b[31mred\x1b[0m"])
def test_text_click_would_print_differently_goes_to_the_full_cli(store: RunStore, error: str):
    """click.echo strips escape sequences when stdout is not a terminal and re-encodes for
    the terminal's encoding: such a view is left to the full CLI, so output never differs."""
    run = make_run(store, "r1", "failed")
    run.write_checkpoint(Checkpoint(stage="tts", status="failed", timestamp=2.0,  # type: ignore[arg-type]
                                    attempt=2, error=error), durable=False)
    full_cli(store.root, run.run_id)
    assert fast(store.root, run.run_id) is None
    assert fast(store.root, run.run_id, "--json") is not None  # JSON escapes both


@pytest.mark.parametrize("content", [b"[" * 100_000, b"{}" + b" " * (70 * 1024)],
                         ids=["deeply-nested", "oversized"])
def test_a_hostile_cache_is_a_miss_not_a_crash(store: RunStore, content: bytes):
    """A .summary.json of deeply nested brackets, or far larger than a real one, is not
    believed and does not crash a listing, the fast path or the full CLI."""
    run = make_run(store, "r1", "succeeded")
    (run.dir / statuscache.SUMMARY_FILE).write_bytes(content)
    assert fast(store.root, run.run_id) is None
    assert [s.run_id for s in store.summaries()] == ["r1"]
    assert "succeeded" in full_cli(store.root, run.run_id)


def test_a_renamed_run_folder_shows_its_new_id(store: RunStore):
    """Renaming a run folder keeps every file's identity; the cached view names the old id,
    so it is not used for the new one."""
    run = make_run(store, "old-name", "succeeded")
    full_cli(store.root, run.run_id)
    (store.root / "old-name").rename(store.root / "new-name")
    assert fast(store.root, "new-name") is None
    assert full_cli(store.root, "new-name").startswith("new-name  succeeded")


def test_status_works_when_the_working_folder_was_removed(store: RunStore, tmp_path: Path):
    """`sparkle status RUN --runs-dir ABS` from a folder that no longer exists answers like
    the full CLI instead of failing on os.getcwd()."""
    run = make_run(store, "r1", "succeeded")
    expected = full_cli(store.root, run.run_id)
    gone = tmp_path / "gone"
    gone.mkdir()
    code = (
        "import os, sys\n"
        "os.chdir(sys.argv[3]); os.rmdir(sys.argv[3])\n"
        "sys.argv = ['sparkle', 'status', sys.argv[1], '--runs-dir', sys.argv[2]]\n"
        "from sparkle.entry import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, run.run_id, str(store.root),
                             str(gone)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected

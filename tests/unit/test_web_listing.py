"""The dashboard's runs index: a snapshot of the summary caches that never shows a stale row."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from sparkle.plans import load_plan_file
from sparkle.runindex_fast import INDEX_DIR, REBUILT_FILE
from sparkle.runindex_folder import FolderRunIndex
from sparkle.runstore import RunStore
from sparkle.schemas import AssetRefs, Checkpoint
from sparkle.settings import Settings
from sparkle.web.listing import RunListing, _identity, row, unfinished_reader
from sparkle.web.site import Mode, Site


@pytest.fixture
def store(tmp_path: Path, plans_dir: Path) -> RunStore:
    store = RunStore(tmp_path / "runs")
    plan = load_plan_file(plans_dir / "lighthouse.json", 1 << 20)
    for number in range(3):
        plan.metadata["run_id"] = f"run-{number}"
        store.create(plan)
    return store


def _success(stage: str) -> Checkpoint:
    return Checkpoint(stage=stage, status="success", timestamp=time.time(), attempt=1)


@pytest.mark.parametrize("change", ["checkpoint", "uncheckpoint", "cancel", "uncancel",
                                    "asset_refs", "event"])
def test_every_change_to_a_summary_source_changes_the_run_identity(store, change):
    """The index trusts a cached summary while the run's identity (three stats) is unchanged:
    each kind of write the status depends on must change it."""
    run = store.run("run-0")
    run.write_checkpoint(_success("script"))
    run.set_cancelled(True)
    before = _identity(str(run.dir))
    # When one source changes
    {"checkpoint": lambda: run.write_checkpoint(_success("images")),
     "uncheckpoint": lambda: run.remove_checkpoint("script"),
     "cancel": lambda: (run.set_cancelled(False), run.set_cancelled(True)),
     "uncancel": lambda: run.set_cancelled(False),
     "asset_refs": lambda: run.save_asset_refs(AssetRefs(extras={"x": "y"})),
     "event": lambda: run.append_event("script", "redrive", 1)}[change]()
    # Then the identity differs
    assert _identity(str(run.dir)) != before


def test_a_shown_row_is_checked_again_and_new_or_removed_runs_show_at_once(store, plans_dir):
    index = RunListing(store, refresh_sec=3600)  # (no background pass during the test)
    index.refresh()
    assert index.counts() == {"queued": 3}
    # When a run starts and another is removed, after the snapshot was taken
    store.run("run-1").write_checkpoint(_success("script"))
    shutil.rmtree(store.root / "run-2")
    plan = load_plan_file(plans_dir / "rooftop.json", 1 << 20)
    added, _ = store.create(plan)
    # Then a page showing them shows the new status, the new run, not the removed one
    shown, total = index.query(limit=10)
    statuses = {run_id: known.summary.status.value for run_id, known in shown}
    assert statuses == {"run-0": "queued", "run-1": "running", added.run_id: "queued"}
    assert total == 3
    assert shown[0][0] == added.run_id  # newest first
    # and the status filter follows once the snapshot is checked through
    index.refresh()
    assert [run_id for run_id, _ in index.query(status="running")[0]] == ["run-1"]


def test_search_matches_the_title_or_the_id_in_any_case(store):
    index = RunListing(store, refresh_sec=3600)
    assert index.query(q="LIGHTHOUSE keeper")[1] == 3
    assert [r for r, _ in index.query(q="RUN-1")[0]] == ["run-1"]
    assert index.query(q="nothing like it")[1] == 0


def test_a_row_counts_stages_and_finds_the_thumbnail(store):
    run = store.run("run-0")
    for stage in ("script", "images"):
        run.write_checkpoint(_success(stage))
    refs = AssetRefs()
    refs.shot("s1").start_frame = "frames/s1_start.png"
    run.save_asset_refs(refs)
    index = RunListing(store, refresh_sec=3600)
    ((run_id, known),) = index.query(q="run-0")[0]
    line = row(index, run_id, known)
    assert (line["status"], line["stages_done"], line["current_stage"]) == ("running", 2,
                                                                             "videos")
    assert line["thumbnail"] == "frames/s1_start.png"
    assert line["title"] == "The Lighthouse Keeper"


def _finished_and_in_flight(store: RunStore, plans_dir: Path) -> None:
    """run-0 stays queued, run-1 runs; run-2 and five more are finished."""
    plan = load_plan_file(plans_dir / "lighthouse.json", 1 << 20)
    for number in range(3, 8):
        plan.metadata["run_id"] = f"run-{number}"
        store.create(plan)
    store.run("run-1").write_checkpoint(_success("script"))
    for number in range(2, 8):
        store.run(f"run-{number}").set_cancelled(True)


def test_runs_in_flight_are_listed_from_the_index_without_reading_finished_runs(
        store, plans_dir, monkeypatch):
    """Issue 22: with months of finished runs, the dashboard's queued and running lists cost
    what the work in flight costs: only the runs the unfinished-run index names are read."""
    _finished_and_in_flight(store, plans_dir)
    FolderRunIndex(store.root).rebuild(store)
    site = Site(Settings(runs_dir=store.root), store, Mode.standalone)
    index = RunListing(store, refresh_sec=3600, unfinished=unfinished_reader(site))
    # Given: every path opened, stat-ed or listed is recorded
    seen: list[str] = []
    for name in ("open", "stat", "lstat", "scandir", "listdir"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda path, *a, _real=real, **k: (
            seen.append(str(path)), _real(path, *a, **k))[1])
    # When: the dashboard lists the running, then the queued runs
    running, total = index.query(status="running")
    queued, _ = index.query(status="queued")
    # Then: the right runs, and no finished run's folder was looked at
    assert [run_id for run_id, _ in running] == ["run-1"] and total == 1
    assert [run_id for run_id, _ in queued] == ["run-0"]
    looked_at = {Path(p).relative_to(store.root).parts[0] for p in seen
                 if Path(p).is_relative_to(store.root) and Path(p) != store.root}
    assert looked_at == {".unfinished", "run-0", "run-1"}
    # while the unfiltered listing still reads every folder (the snapshot)
    assert index.query(limit=100)[1] == 8


def test_an_index_due_for_its_rebuild_lists_from_the_snapshot_and_is_rebuilt(store,
                                                                            plans_dir):
    _finished_and_in_flight(store, plans_dir)
    reader = unfinished_reader(Site(Settings(runs_dir=store.root), store, Mode.standalone))
    index = RunListing(store, refresh_sec=3600, unfinished=reader)
    # When: there is no index yet
    assert reader() is None
    # Then: the same answer, from every folder, and the index is built in the background
    assert [run_id for run_id, _ in index.query(status="running")[0]] == ["run-1"]
    deadline = time.monotonic() + 30
    while not (store.root / INDEX_DIR / REBUILT_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader() == ["run-0", "run-1"]

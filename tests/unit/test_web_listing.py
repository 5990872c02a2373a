"""The dashboard's runs index: a snapshot of the summary caches that never shows a stale row."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from sparkle.plans import load_plan_file
from sparkle.runstore import RunStore
from sparkle.schemas import AssetRefs, Checkpoint
from sparkle.web.listing import RunListing, _identity, row


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

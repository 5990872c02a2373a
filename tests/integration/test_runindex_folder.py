"""The embedded unfinished-run index in the runs folder (issue 22, item 1, embedded part):
it outlives the process, names the runs in flight so their readers skip the finished ones,
drops runs found finished, and is rebuilt from the folders when missing."""

from __future__ import annotations

import shutil

from sparkle.app import installed
from sparkle.runindex import listing
from sparkle.runindex_folder import INDEX_DIR, FolderRunIndex
from sparkle.service import requeue_unfinished


def test_a_queued_run_is_in_the_index_and_leaves_it_once_found_finished(pipeline, plans_dir):
    # Given: an index built while there was no run, then a run queued through the
    # dispatcher (embedded)
    FolderRunIndex(pipeline.runs_dir).rebuild(pipeline.engine.store)
    run = pipeline.create(plans_dir / "lighthouse.json")
    assert pipeline.engine.dispatcher.kick(run) == "script"
    # Then: a new index object on the folder (another process) names it as queued
    index = FolderRunIndex(pipeline.runs_dir)
    assert index.members() == {run.run_id}
    assert [s.run_id for s in index.unfinished(pipeline.engine.store)] == [run.run_id]
    # When: it finishes, and the index is read again
    assert pipeline.work(run).status.value == "succeeded"
    # Then: it is dropped from the index
    assert index.unfinished(pipeline.engine.store) == []
    assert index.members() == set()


def test_readers_look_only_at_the_runs_the_index_names(pipeline, plans_dir):
    # Given: a fresh index naming one queued run, and another unfinished run that was
    # never queued (so never added)
    store = pipeline.engine.store
    named = pipeline.create(plans_dir / "lighthouse.json")
    FolderRunIndex(pipeline.runs_dir).rebuild(store)
    unnamed = pipeline.create(plans_dir / "rooftop.json")
    # When: `sparkle runs --status queued` (embedded) and a serve start list them
    listed = [s.run_id for s in listing(installed(), "queued")]
    requeued = requeue_unfinished(pipeline.engine)
    # Then: only the named run was read and re-queued; every status still reads all folders
    assert listed == [named.run_id]
    assert [run.run_id for run in requeued] == [named.run_id]
    assert {s.run_id for s in listing(installed(), None)} == {
        named.run_id, unnamed.run_id}


def test_a_missing_index_is_rebuilt_from_the_run_folders(pipeline, plans_dir):
    # Given: two unfinished runs and no index folder (a new installation, or it was removed)
    first = pipeline.create(plans_dir / "lighthouse.json")
    second = pipeline.create(plans_dir / "rooftop.json")
    shutil.rmtree(pipeline.runs_dir / INDEX_DIR, ignore_errors=True)
    # When
    found = FolderRunIndex(pipeline.runs_dir).unfinished(pipeline.engine.store)
    # Then
    assert sorted(s.run_id for s in found) == sorted([first.run_id, second.run_id])
    assert (pipeline.runs_dir / INDEX_DIR / first.run_id).is_file()

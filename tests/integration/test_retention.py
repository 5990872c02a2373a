"""Retention (``sparkle prune``): which runs go, what stays, and that it is safe beside workers
and other prunes. Real run folders rendered by the test adapters."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import fakeredis
import pytest

from sparkle import keys
from sparkle.backends.redis import RedisBackend
from sparkle.retention import (
    PRUNED_FILE,
    TRASH_PREFIX,
    PruneAction,
    apply_retention,
    prune,
    sweep_trash,
)
from sparkle.retention_policy import RetentionError, RetentionPolicy, parse_policy, parse_statuses
from sparkle.runindex_folder import INDEX_DIR
from sparkle.runstore import Run, RunStore
from sparkle.settings import Settings

#: Far enough in the future that every run made by a test counts as old.
LATER = time.time() + 400 * 86400.0


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def names(root: Path) -> list[str]:
    # (not the embedded unfinished-run index beside the runs, sparkle.runindex_folder)
    return sorted(p.name for p in root.iterdir() if p.name != INDEX_DIR)


@pytest.fixture
def finished(pipeline, plans_dir):
    """A succeeded, a failed, a cancelled and a queued run."""
    succeeded = pipeline.create(plans_dir / "rooftop.json")
    pipeline.work(succeeded)
    failed = pipeline.create(plans_dir / "rooftop.json", run_id="fails", fault_videos="permanent")
    pipeline.work(failed)
    cancelled = pipeline.create(plans_dir / "lighthouse.json")
    cancelled.set_cancelled(True)
    queued = pipeline.create(plans_dir / "rooftop.json", run_id="queued")
    assert [r.status().value for r in (succeeded, failed, cancelled, queued)] == [
        "succeeded", "failed", "cancelled", "queued"]
    pipeline.engine.store.summaries()  # (writes each run's summary cache, as a listing does)
    return succeeded, failed, cancelled, queued


def test_prune_removes_old_finished_runs_whole_and_reports_bytes(pipeline, finished):
    # Given finished runs of every kind and an unfinished one
    succeeded, failed, cancelled, queued = finished
    expected = sum(folder_bytes(r.dir) for r in (succeeded, failed, cancelled))
    # When I prune everything finished long ago
    report = prune(pipeline.engine.store, RetentionPolicy(), now=LATER)
    # Then the finished runs are gone, the queued one is untouched, and the bytes add up
    assert {p.run_id for p in report.pruned} == {succeeded.run_id, failed.run_id,
                                                 cancelled.run_id}
    assert all(p.action is PruneAction.removed for p in report.pruned)
    assert report.runs == 3 and report.freed_bytes == expected
    assert names(pipeline.runs_dir) == ["queued"]
    assert queued.status().value == "queued"


def test_runs_younger_than_the_limit_stay(pipeline, finished):
    # Given runs that finished just now
    # When I prune runs older than a day
    report = prune(pipeline.engine.store, RetentionPolicy(older_than_sec=86400.0))
    # Then nothing is removed
    assert report.runs == 0 and len(names(pipeline.runs_dir)) == 4


def test_status_filter_prunes_only_those_statuses(pipeline, finished):
    succeeded, failed, cancelled, _ = finished
    report = prune(pipeline.engine.store,
                   RetentionPolicy(statuses=parse_statuses("failed,cancelled")), now=LATER)
    assert {p.run_id for p in report.pruned} == {failed.run_id, cancelled.run_id}
    assert succeeded.exists()


def test_dry_run_removes_nothing_and_reports_the_same(pipeline, finished):
    before = {r: folder_bytes(r.dir) for r in finished}
    dry = prune(pipeline.engine.store, RetentionPolicy(), dry_run=True, now=LATER)
    assert {p.action for p in dry.pruned} == {PruneAction.would_remove}
    assert {r: folder_bytes(r.dir) for r in finished} == before
    real = prune(pipeline.engine.store, RetentionPolicy(), now=LATER)
    assert (dry.runs, dry.freed_bytes) == (real.runs, real.freed_bytes)


def test_keep_final_removes_only_intermediate_media(pipeline, finished):
    # Given a succeeded run with frames, clips, audio and a final movie
    succeeded = finished[0]
    assert (succeeded.dir / "frames").is_dir() and (succeeded.dir / "final").is_dir()
    kept_before = {p: p.read_bytes() for p in (succeeded.dir / "final").rglob("*") if p.is_file()}
    # When I prune with --keep final
    report = prune(pipeline.engine.store,
                   RetentionPolicy(keep_final=True, statuses=frozenset({"succeeded"})), now=LATER)
    # Then the media folders are gone; plan, history, checkpoints, QA report, final stay
    assert [p.action for p in report.pruned] == [PruneAction.media_removed]
    left = names(succeeded.dir)
    for gone in ("frames", "clips", "audio", "lipsync", "script"):
        assert gone not in left
    for kept in ("movie_plan.json", "manifest.json", "checkpoints", "qa_report.json",
                 "asset_refs.json", "final", PRUNED_FILE):
        assert kept in left
    assert {p: p.read_bytes() for p in (succeeded.dir / "final").rglob("*")
            if p.is_file()} == kept_before
    assert succeeded.status().value == "succeeded"
    assert report.freed_bytes > 0
    # And no trash is left behind; a second prune finds nothing more to free
    assert not [n for n in names(pipeline.runs_dir) if n.startswith(TRASH_PREFIX)]
    again = prune(pipeline.engine.store, RetentionPolicy(keep_final=True), now=LATER)
    assert succeeded.run_id not in {p.run_id for p in again.pruned}


def test_a_leased_or_queued_run_is_left_alone():
    """Redis says a worker holds the run, or a message for it is on its way: not pruned."""
    client = fakeredis.FakeRedis()
    # (a real folder; its status is derived as usual)
    import tempfile

    from sparkle.plans import load_plan_file

    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs")
        plan = load_plan_file(Path(__file__).parents[1] / "data/plans/rooftop.json", 1 << 20)
        leased, _ = store.create(plan, "leased")
        pending, _ = store.create(plan, "pending")
        stale, _ = store.create(plan, "stale")
        for run in (leased, pending, stale):
            run.set_cancelled(True)
        client.set(keys.lease("sparkle", "leased"), "token")
        client.set(keys.pending("sparkle", "pending"), f"images {LATER - 60:.3f}")
        # (a mark older than the retention age is of a message lost long ago)
        client.set(keys.pending("sparkle", "stale"), f"images {LATER - 40 * 86400:.3f}")
        report = prune(store, RetentionPolicy(), client=client, now=LATER)
        assert [p.run_id for p in report.pruned] == ["stale"]
        assert {(s.run_id, s.reason) for s in report.skipped} == {
            ("leased", "leased by a worker"), ("pending", "a stage message is on its way")}
        assert leased.exists() and pending.exists() and not stale.dir.exists()
        assert client.get(keys.pending("sparkle", "stale")) is None


def test_status_is_checked_again_under_the_run_lock(pipeline, finished):
    """A run resumed while prune waits for its lock is seen as it is then: not pruned."""
    # Given a failed run whose lock a worker holds
    failed = finished[1]
    started = threading.Event()
    results = []

    def run_prune():
        started.set()
        results.append(prune(pipeline.engine.store,
                             RetentionPolicy(statuses=frozenset({"failed"})), now=LATER))

    with failed.locked():
        thread = threading.Thread(target=run_prune)
        thread.start()
        started.wait()
        time.sleep(0.3)  # let the prune reach the lock (the outcome is the same if not)
        # When the worker resumes the run before letting go
        failed.remove_checkpoint("videos")
        failed.append_event("videos", "reset", 1)
    thread.join()
    # Then the run is still there, and not failed any more
    assert results[0].runs == 0
    assert failed.exists() and failed.status().value == "running"


def test_two_prunes_at_once_remove_each_run_once(pipeline, plans_dir):
    # Given twelve finished runs
    store = pipeline.engine.store
    for n in range(12):
        run = pipeline.create(plans_dir / "rooftop.json", run_id=f"run-{n:02d}")
        run.set_cancelled(True)
        (run.dir / "clips").mkdir()
        (run.dir / "clips" / "x.bin").write_bytes(b"x" * 1000)
    barrier = threading.Barrier(3)
    reports = []

    def one_prune():
        barrier.wait()
        reports.append(prune(store, RetentionPolicy(), now=LATER))

    # When three prunes start together
    threads = [threading.Thread(target=one_prune) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every run was removed by exactly one of them, and nothing is left behind
    removed = [p.run_id for report in reports for p in report.pruned]
    assert sorted(removed) == [f"run-{n:02d}" for n in range(12)]
    assert names(pipeline.runs_dir) == []


def test_trash_left_by_a_prune_that_died_is_swept(tmp_path):
    root = tmp_path / "runs"
    trash = root / f"{TRASH_PREFIX}old-1234"
    (trash / "frames").mkdir(parents=True)
    (trash / "frames" / "a.png").write_bytes(b"png")
    fresh = root / f"{TRASH_PREFIX}new-5678"
    fresh.mkdir()
    sweep_trash(root, grace_sec=3600)
    assert trash.exists() and fresh.exists()  # another prune may still be deleting them
    old = time.time() - 7200
    os.utime(trash, (old, old))  # (ctime cannot be set: use a negative grace instead)
    sweep_trash(root, grace_sec=-1)
    assert not trash.exists() and not fresh.exists()


def test_statuses_that_are_not_finished_are_refused():
    for text in ("running", "awaiting_review", "queued", ""):
        with pytest.raises(RetentionError):
            parse_statuses(text)
    assert parse_statuses("Failed, rejected") == {"failed", "rejected"}


def test_retention_setting_is_checked_at_start():
    assert parse_policy("30d") == RetentionPolicy(older_than_sec=30 * 86400.0)
    assert parse_policy("12h:final") == RetentionPolicy(older_than_sec=43200.0, keep_final=True)
    for bad in ("30x", "30d:all", "0d", ":final"):
        with pytest.raises(RetentionError):
            parse_policy(bad)
    from sparkle.errors import ConfigError
    from sparkle.settings import load_settings as _read

    with pytest.raises(ConfigError, match="SPARKLE_RETENTION"):
        _read(retention="30d:everything")
    assert Settings(retention="7d:final").retention == "7d:final"


def test_reapers_apply_retention_at_most_once_an_hour(pipeline, finished):
    # Given two reapers sharing one Redis and runs finished long ago (mtimes moved back)
    old = time.time() - 31 * 86400
    for run in finished[:3]:
        for path in run.dir.rglob("*"):
            os.utime(path, (old, old), follow_symlinks=False)
    client = fakeredis.FakeRedis()
    backend = RedisBackend(pipeline.broker, client, "shared (fakeredis)")
    store = pipeline.engine.store
    # When both apply SPARKLE_RETENTION=30d
    first = apply_retention(store, backend, "sparkle", "30d")
    second = apply_retention(store, backend, "sparkle", "30d")
    # Then the first prunes the three finished runs and the second does not run at all
    assert first is not None and first.runs == 3
    assert second is None
    assert names(pipeline.runs_dir) == ["queued"]
    assert Run(store.root, "queued").exists()


def test_the_reaper_applies_sparkle_retention(pipeline, finished):
    """SPARKLE_RETENTION set: the reaper's background pass prunes; unfinished runs stay."""
    from sparkle.redrive import Reaper

    # Given finished runs older than the retention and a reaper configured with it
    old = time.time() - 3 * 86400
    for run in finished[:3]:
        for path in run.dir.rglob("*"):
            os.utime(path, (old, old), follow_symlinks=False)
    engine = pipeline.engine
    settings = engine.settings.model_copy(update={"retention": "2d", "reaper_interval_sec": 0.05})
    reaper = Reaper(engine.store, engine.dispatcher, settings)
    # When it runs in the background
    reaper.start()
    try:
        deadline = time.monotonic() + 30
        while len(names(pipeline.runs_dir)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reaper.stop()
    # Then only the unfinished run is left
    assert names(pipeline.runs_dir) == ["queued"]

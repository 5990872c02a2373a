"""Listing many runs: ``RunStore.summaries()`` and its per-run ``.summary.json`` cache.

A listing of thousands of runs reads each run's cached summary instead of its eight state
files. These tests protect what makes that safe: the cache is trusted only while every file
it was derived from is unchanged, so a listing always says what a fresh look at the
checkpoints says, whatever happened to the folder (writes through the API, edits by hand,
damaged or forged caches, a folder the cache cannot be written to, a writer racing the
listing). Timing is measured by ``scripts/bench_scale.py``, not asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkle import runstore, runsummary
from sparkle.review_state import ReviewState, write_review
from sparkle.runstore import (
    SUMMARY_FILE,
    Run,
    RunStatus,
    RunStore,
    RunSummary,
)
from sparkle.schemas import STAGES, Checkpoint, MoviePlan

PLANS = Path(__file__).parents[1] / "data" / "plans"

#: Run folders in the large listing test (the benchmark uses 10,000).
MANY_RUNS = 2_000


def plan(run_id: str) -> MoviePlan:
    doc = json.loads((PLANS / "lighthouse.json").read_text("utf-8"))
    doc["metadata"]["run_id"] = run_id
    return MoviePlan.model_validate(doc)


def checkpoint(stage: str, status: str, **metadata: Any) -> Checkpoint:
    return Checkpoint.model_validate(
        {"stage": stage, "status": status, "timestamp": 1.0, "attempt": 1, "metadata": metadata}
    )


def fresh(store: RunStore) -> list[RunSummary]:
    """What a look at every run's files, without any cache, says."""
    return [run.summary() for run in store.runs()]


def make_run(store: RunStore, run_id: str, state: str, stop_at: int = 0) -> Run:
    """A run in ``state`` (queued, running, failed, succeeded, cancelled, awaiting_review,
    rejected) via the API."""
    run, _ = store.create(plan(run_id))
    if state in ("awaiting_review", "rejected"):
        for stage in STAGES[:stop_at + 1]:
            run.write_checkpoint(checkpoint(stage, "success"), durable=False)
            run.append_event(stage, "success", 1, durable=False)
        write_review(str(run.dir), ReviewState(
            status=state, review_id="r-1", stage=STAGES[stop_at], reason="review_after",  # type: ignore[arg-type]
            requested_at=1.0))
        return run
    done = len(STAGES) if state == "succeeded" else (0 if state == "queued" else stop_at)
    for stage in STAGES[:done]:
        run.write_checkpoint(checkpoint(stage, "success", decision="approve"), durable=False)
        run.append_event(stage, "success", 1, durable=False)
    if state in ("running", "failed", "cancelled"):
        status = "failed" if state == "failed" else "begin"
        run.write_checkpoint(checkpoint(STAGES[stop_at], status), durable=False)
    if state == "cancelled":
        run.set_cancelled(True)
    return run


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


@pytest.fixture
def count_derivations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts the runs whose summary was derived from their files (cache misses)."""
    derived: Counter[str] = Counter()
    original = runsummary._derive

    def counting(run: Run, sources: list[Any]) -> Any:
        derived[run.run_id] += 1
        return original(run, sources)

    monkeypatch.setattr(runsummary, "_derive", counting)
    yield derived


def copy_run(template: Run, root: Path, run_id: str) -> None:
    """A byte-for-byte copy of a run folder under another id (fast, for many runs)."""
    target = root / run_id
    shutil.copytree(template.dir, target, ignore=shutil.ignore_patterns(SUMMARY_FILE))
    manifest = target / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(template.run_id.encode(), run_id.encode()))


def test_listing_2000_runs_matches_a_fresh_look_and_reads_caches_the_second_time(
    tmp_path: Path, count_derivations: Counter[str]
):
    """summaries() of thousands of runs in every state equals a fresh look at each run,
    and a second listing of an unchanged folder derives nothing."""
    # Given 2,000 runs in every state, with clutter beside them
    templates = RunStore(tmp_path / "templates")
    kinds = [("queued", 0), ("succeeded", 0)] + [
        (state, index) for state in ("running", "failed", "cancelled") for index in (0, 3, 6)
    ] + [("awaiting_review", 1), ("awaiting_review", 6), ("rejected", 1)]
    made = [make_run(templates, f"t-{state}-{i}", state, i) for state, i in kinds]
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    for number in range(MANY_RUNS):
        copy_run(made[number % len(made)], store.root, f"run-{number:05d}")
    (store.root / "no-plan").mkdir()
    (store.root / "stray.json").write_text("{}")
    # When I list them twice
    first = store.summaries()
    derived_first = sum(count_derivations.values())
    second = store.summaries()
    derived_second = sum(count_derivations.values()) - derived_first
    # Then both listings say what a fresh look says, run by run, in id order
    expected = fresh(store)
    assert first == second == expected
    assert [s.run_id for s in first] == [r.run_id for r in store.runs()]
    assert len(first) == MANY_RUNS
    assert {s.status for s in first} == set(RunStatus)
    # And the first listing derived every run once, the second none
    assert derived_first == MANY_RUNS
    assert derived_second == 0


def _fail(run: Run) -> None:
    run.write_checkpoint(checkpoint("images", "failed"), durable=False)


def _begin_again(run: Run) -> None:
    run.write_checkpoint(checkpoint("qa", "begin"), durable=False)


def _truncate_in_place(run: Run) -> None:
    (run.dir / "checkpoints" / "qa.json").write_bytes(b"{")


def _edit_in_place(run: Run) -> None:
    path = run.dir / "checkpoints" / "qa.json"
    path.write_text(path.read_text().replace('"success"', '"failed"'))


def _delete_checkpoint(run: Run) -> None:
    (run.dir / "checkpoints" / "qa.json").unlink()


def _cancel(run: Run) -> None:
    run.set_cancelled(True)


def _manifest_only_success(run: Run) -> None:
    run.append_event("script", "success", 1, durable=False)


def _open_review(run: Run) -> None:
    from sparkle.review_gates import open_review

    open_review(run, "qa", "qa_escalate")


def _review_file_only(run: Run) -> None:
    """A review opened by a worker that died before appending its event: only the file."""
    write_review(str(run.dir), ReviewState(status="awaiting_review", review_id="r-1",  # type: ignore[arg-type]
                                           stage="qa", reason="qa_escalate", requested_at=1.0))


CHANGES: list[Any] = [
    pytest.param("succeeded", _fail, id="stage-failed-through-the-api"),
    pytest.param("succeeded", _begin_again, id="stage-restarted-through-the-api"),
    pytest.param("succeeded", _truncate_in_place, id="checkpoint-truncated-in-place"),
    pytest.param("succeeded", _edit_in_place, id="checkpoint-edited-in-place"),
    pytest.param("succeeded", _delete_checkpoint, id="checkpoint-deleted-by-hand"),
    pytest.param("succeeded", _cancel, id="cancelled"),
    pytest.param("queued", _manifest_only_success, id="success-in-the-manifest-only"),
    pytest.param("succeeded", _open_review, id="review-opened"),
    pytest.param("succeeded", _review_file_only, id="review-file-without-its-event"),
]


@pytest.mark.parametrize(("state", "change"), CHANGES)
def test_a_cached_summary_is_never_trusted_after_its_run_changed(
    store: RunStore, state: str, change: Callable[[Run], None]
):
    """Whatever changes a run's state, by the API or by hand, the next listing shows it."""
    # Given a run that has been listed (its cache written)
    run = make_run(store, "r1", state)
    before = store.summaries()
    assert (run.dir / SUMMARY_FILE).is_file()
    # When its state changes
    change(run)
    # Then the listing says what a fresh look says, and no longer what it said before
    after = store.summaries()
    assert after == [run.summary()]
    assert after != before


def test_cleared_cancel_marker_shows_the_derived_status_again(store: RunStore):
    """Removing the cancel marker after a listing restores the status the checkpoints give."""
    run = make_run(store, "r1", "cancelled", stop_at=2)
    assert store.summaries()[0].status is RunStatus.cancelled
    run.set_cancelled(False)
    assert store.summaries()[0].status is RunStatus.running


def test_a_run_whose_plan_is_removed_leaves_the_listing(store: RunStore):
    """A folder whose plan is gone is no run, even with a cached summary in it."""
    run = make_run(store, "r1", "succeeded")
    assert len(store.summaries()) == 1
    (run.dir / "movie_plan.json").unlink()
    assert store.summaries() == []


DAMAGED: list[Any] = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"\xff\xfe garbage", id="not-utf8"),
    pytest.param(b'{"version": 2}', id="other-version"),
    pytest.param(b'{"version": 3}\n{}', id="fields-missing"),
    pytest.param(b"[]", id="not-an-object"),
]


@pytest.mark.parametrize("content", DAMAGED)
def test_a_damaged_cache_is_ignored_and_replaced(store: RunStore, content: bytes):
    """A cache that is not a valid summary record is derived again and rewritten."""
    # Given a listed run whose cache was then damaged
    run = make_run(store, "r1", "failed", stop_at=4)
    store.summaries()
    (run.dir / SUMMARY_FILE).write_bytes(content)
    # When I list it, Then the listing is right and the cache is valid again
    assert store.summaries() == [run.summary()]
    assert json.loads((run.dir / SUMMARY_FILE).read_text().splitlines()[0])["status"] == "failed"


def test_a_forged_cache_with_stale_sources_is_not_believed(store: RunStore):
    """A cache claiming success is ignored unless it names the files that are there now."""
    # Given a queued run and a cache, written by hand, that says it succeeded
    run = make_run(store, "r1", "queued")
    store.summaries()
    summary_line, view_line = (run.dir / SUMMARY_FILE).read_text().splitlines()
    record = json.loads(summary_line)
    forged = {**record, "status": "succeeded", "next_stage": None}
    forged["sources"][-1] = [1, 2, 3, 4]  # a qa checkpoint that is not there
    (run.dir / SUMMARY_FILE).write_text(json.dumps(forged) + "\n" + view_line)
    # When I list it, Then it is still queued
    assert store.summaries()[0].status is RunStatus.queued


def test_a_cache_symlink_is_not_followed(store: RunStore, tmp_path: Path):
    """A .summary.json that is a symlink is neither read through nor written through."""
    # Given a link in place of the cache, pointing at a file outside the runs folder
    run = make_run(store, "r1", "succeeded")
    outside = tmp_path / "outside.json"
    outside.write_text("keep me")
    (run.dir / SUMMARY_FILE).symlink_to(outside)
    # When I list it
    assert store.summaries() == [run.summary()]
    # Then the outside file is untouched and the link was replaced by a real cache
    assert outside.read_text() == "keep me"
    assert not (run.dir / SUMMARY_FILE).is_symlink()


def test_listing_works_when_the_cache_cannot_be_written(store: RunStore):
    """A cache that cannot be written (here: a folder in its place) costs speed, not answers."""
    run = make_run(store, "r1", "running", stop_at=3)
    (run.dir / SUMMARY_FILE).mkdir()
    assert store.summaries() == [run.summary()]
    assert store.summaries() == [run.summary()]
    assert not [p for p in run.dir.iterdir() if p.name.endswith(".tmp")]


def test_listing_while_a_worker_writes_checkpoints(store: RunStore):
    """Listings racing a writer never fail, and once it stops they agree with a fresh look."""
    # Given three runs and a thread driving them through every stage
    runs = [make_run(store, f"r{i}", "queued") for i in range(3)]
    stop = threading.Event()
    seen: list[list[RunSummary]] = []

    def work() -> None:
        for stage in STAGES:
            for run in runs:
                run.write_checkpoint(checkpoint(stage, "begin"), durable=False)
                run.append_event(stage, "begin", 1, durable=False)
                run.write_checkpoint(checkpoint(stage, "success"), durable=False)
                run.append_event(stage, "success", 1, durable=False)
        stop.set()

    writer = threading.Thread(target=work)
    writer.start()
    # When I list them while it writes
    while not stop.is_set():
        seen.append(store.summaries())
    writer.join()
    # Then every listing had all three runs, and the last agrees with their files
    assert all(len(listing) == 3 for listing in seen)
    assert store.summaries() == fresh(store)
    assert {s.status for s in store.summaries()} == {RunStatus.succeeded}


# -- any sequence of changes ------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[Run, str], None]] = {
    "begin": lambda run, stage: run.write_checkpoint(checkpoint(stage, "begin"), durable=False),
    "success": lambda run, stage: run.write_checkpoint(
        checkpoint(stage, "success", decision="approve"), durable=False
    ),
    "failed": lambda run, stage: run.write_checkpoint(checkpoint(stage, "failed"), durable=False),
    "remove": lambda run, stage: run.remove_checkpoint(stage),
    "event-success": lambda run, stage: run.append_event(stage, "success", 1, durable=False),
    "event-reset": lambda run, stage: run.append_event(stage, "reset", 1, durable=False),
    "cancel": lambda run, stage: run.set_cancelled(True),
    "uncancel": lambda run, stage: run.set_cancelled(False),
    "damage": lambda run, stage: (run.dir / "checkpoints" / f"{stage}.json").write_bytes(b"{"),
    "damage-manifest": lambda run, stage: (run.dir / "manifest.json").write_bytes(b"["),
    "drop-cache": lambda run, stage: (run.dir / SUMMARY_FILE).unlink(missing_ok=True),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(sorted(OPERATIONS)), st.sampled_from(STAGES), st.booleans()),
        max_size=25,
    )
)
def test_after_any_sequence_of_changes_the_listing_matches_a_fresh_look(
    steps: list[tuple[str, str, bool]],
):
    """Property: interleave any writes, removals, damage and listings; each listing equals
    a fresh derivation from the files at that moment."""
    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(Path(folder) / "runs")
        run, _ = store.create(plan("prop"))
        for name, stage, list_now in steps:
            OPERATIONS[name](run, stage)
            if list_now:
                assert store.summaries() == [run.summary()], (name, stage)
        assert store.summaries() == [run.summary()]


def test_cache_entries_cover_every_state_file():
    """The cache's source list names the plan, the cancel marker, the manifest, the asset refs
    and every stage's checkpoint: the files a summary and a status view are derived from."""
    assert set(runstore.SUMMARY_SOURCES) == {
        "movie_plan.json",
        "cancelled",
        "manifest.json",
        "manifest.jsonl",
        "asset_refs.json",
        *(f"checkpoints/{stage}.json" for stage in STAGES),
        "review.json",
    }


def test_sparkle_runs_lists_what_summaries_say(store: RunStore):
    """`sparkle runs --json` prints, per run, the status, QA decision and next stage that
    summaries() gives."""
    # Given runs in several states
    for run_id, state in [("a", "succeeded"), ("b", "failed"), ("c", "queued")]:
        make_run(store, run_id, state, stop_at=2)
    # When I list them with the CLI
    from sparkle.cli import main

    result = CliRunner().invoke(main, ["runs", "--json", "--runs-dir", str(store.root)])
    # Then each line matches the summary
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.output.splitlines()]
    assert printed == [
        {
            "run_id": s.run_id,
            "status": s.status.value,
            "qa_decision": s.qa_decision,
            "next_stage": s.next_stage,
        }
        for s in store.summaries()
    ]
    assert os.path.isdir(store.root)

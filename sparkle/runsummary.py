"""A run's summary and status view, answered from its ``.summary.json`` while none of the
files they were derived from changed (:mod:`sparkle.statuscache`).

Listing thousands of runs (``sparkle runs``, the reaper) or showing one (``sparkle
status``) would otherwise read and validate every checkpoint and the history of each run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sparkle import atomic, statuscache
from sparkle.run import Run
from sparkle.runlayout import ASSET_REFS_FILE, SUMMARY_FILE
from sparkle.runstate import RunState, RunSummary
from sparkle.takes import take_counts

log = logging.getLogger(__name__)


def status_view(run: Run, state: RunState) -> dict[str, Any]:
    """What ``sparkle status --json`` prints for the run (rendered by
    :mod:`sparkle.statuscache`)."""
    review = state.review()
    return {
        "run_id": run.run_id,
        "status": state.status().value,
        "qa_decision": state.qa_decision(),
        "final_movie": _final_movie(run),
        "stages": [
            {"stage": v.stage, "status": v.status, "attempt": v.attempt,
             "duration_sec": v.duration_sec, "error": v.error}
            for v in state.stage_views()
        ],
        "review": None if review is None else {
            "review_id": review.review_id, "stage": review.stage, "reason": review.reason,
            "requested_at": float(review.requested_at), "decided_by": review.decided_by,
            "note": review.note,
        },
        "takes": take_counts(run.dir),
    }


def _final_movie(run: Run) -> str | None:
    try:
        return run.asset_refs().extras.get("final_movie")
    except (OSError, ValidationError) as exc:
        log.warning("run %s: %s unreadable (%s); final movie not shown", run.run_id,
                    ASSET_REFS_FILE, type(exc).__name__)
        return None


def _derive(run: Run, sources: list[statuscache.FileIdentity]) -> statuscache.Entry:
    state = run.state()
    summary = state.summary()
    return statuscache.Entry(sources, summary.status, summary.qa_decision, summary.next_stage,
                             status_view(run, state))


def cached_entry(run: Run, with_view: bool = True) -> statuscache.Entry | None:
    """The run's summary and status view, from ``.summary.json`` while its sources are
    unchanged (without ``with_view`` the cached view is not checked and may be None).

    Returns None when the folder holds no plan (no run). On a miss both are derived from the
    run's files, and the cache is rewritten only when no source changed meanwhile. A cache
    that cannot be written (read-only folder, full disk) is skipped: the answer is still
    derived, just not remembered.
    """
    run_dir = str(run.dir)
    cache_path = f"{run_dir}/{SUMMARY_FILE}"
    record = statuscache.read(cache_path, with_view)
    try:
        before = statuscache.identities(run_dir)
    except statuscache.Unidentifiable:
        return _derive(run, []) if run.exists() else None
    if before[0] is None:
        return None
    # (the view names the run: a folder renamed since keeps its files' identities)
    if record is not None and record.sources == before and (
            record.view is None or record.view["run_id"] == run.run_id):
        return record
    entry = _derive(run, before)
    try:
        if statuscache.identities(run_dir) != before:
            return entry  # changed while it was read: right for now, not worth caching
        atomic.write_bytes(Path(cache_path), statuscache.encode(entry), durable=False)
    except (statuscache.Unidentifiable, OSError) as exc:
        log.debug("run %s: summary cache not written (%s)", run.run_id, exc)
    return entry


def cached_summary(run: Run) -> RunSummary | None:
    """``run.summary()``, answered from ``.summary.json`` while its sources are unchanged
    (see :func:`cached_entry`). None when the folder holds no run."""
    entry = cached_entry(run, with_view=False)
    if entry is None:
        return None
    return RunSummary(run.run_id, entry.status, entry.qa_decision, entry.next_stage)

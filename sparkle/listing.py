"""``sparkle runs`` as a table (:mod:`sparkle.runs_table`) through the full CLI.

Each row comes from the run's summary cache (:func:`sparkle.runstore.cached_entry`, with its
status view), derived again only for runs that changed since it was written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from sparkle.review_state import read_review
from sparkle.runs_table import entry_row, header_row
from sparkle.runstore import Run, RunStore, RunSummary, cached_entry


def review_wait(run_dir: Path) -> tuple[str, float] | None:
    """For a run awaiting review: the stage it stopped after and the seconds it has waited
    (None when it does not wait)."""
    review = read_review(str(run_dir))
    if review is None or review.status != "awaiting_review":
        return None
    return review.stage, max(0.0, time.time() - review.requested_at)


def run_rows(store: RunStore, summaries: Iterable[RunSummary],
             now: float | None = None) -> Iterator[str]:
    """The header, then a row per run of ``summaries`` (see
    :func:`sparkle.runs_table.entry_row`); a run awaiting review shows, for its next stage,
    the stage it stopped after and how long it has waited."""
    now = time.time() if now is None else now
    yield header_row()
    for summary in summaries:
        run = Run(store.root, summary.run_id)
        entry = cached_entry(run)
        if entry is None or entry.view is None:
            continue
        waiting = review_wait(run.dir) if entry.status.value == "awaiting_review" else None
        yield entry_row(run.run_id, run.dir, entry, now, waiting)

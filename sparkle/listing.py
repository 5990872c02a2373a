"""``sparkle runs`` as a table: a header row, then one row per run with its status, QA
decision, next stage, age, time spent in stages and movie path.

Each row comes from the run's summary cache (:func:`sparkle.runstore.cached_entry`, with its
status view), derived again only for runs that changed since it was written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from sparkle.review_state import read_review
from sparkle.runstore import Run, RunStore, RunSummary, cached_entry
from sparkle.statuscache import decision_label

#: Column headers, and the width of every column but the last.
HEADER = ("RUN", "STATUS", "QA", "NEXT", "AGE", "DURATION", "MOVIE")
WIDTHS = (56, 10, 13, 9, 6, 9)


def age_text(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: the largest whole unit."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def _row(cells: tuple[str, ...]) -> str:
    return " ".join(f"{cell:<{width}}" for cell, width in zip(cells, WIDTHS, strict=False)) \
        + " " + cells[-1]


def review_wait(run_dir: Path) -> tuple[str, float] | None:
    """For a run awaiting review: the stage it stopped after and the seconds it has waited
    (None when it does not wait)."""
    review = read_review(str(run_dir))
    if review is None or review.status != "awaiting_review":
        return None
    return review.stage, max(0.0, time.time() - review.requested_at)


def run_rows(store: RunStore, summaries: Iterable[RunSummary],
             now: float | None = None) -> Iterator[str]:
    """The header, then a row per run of ``summaries``.

    Age counts from when the run's plan was written (its creation); the time is the sum of
    its stages' last durations; the movie is shown once there is one. A run awaiting review
    shows, for its next stage, the stage it stopped after and how long it has waited.
    """
    now = time.time() if now is None else now
    yield _row(HEADER).rstrip()
    for summary in summaries:
        run = Run(store.root, summary.run_id)
        entry = cached_entry(run)
        if entry is None or entry.view is None:
            continue
        view = entry.view
        plan = entry.sources[0] if entry.sources else None
        age = age_text(now - plan[2] / 1e9) if plan else "-"
        seconds = sum(s["duration_sec"] or 0.0 for s in view["stages"])
        movie = str(run.dir / view["final_movie"]) if view["final_movie"] else "-"
        qa = decision_label(entry.qa_decision) if entry.qa_decision else "-"
        waiting = review_wait(run.dir) if entry.status.value == "awaiting_review" else None
        where = (f"after {waiting[0]}, waiting {age_text(waiting[1])}" if waiting is not None
                 else entry.next_stage or "done")
        yield _row((run.run_id, entry.status.value, qa, where, age, f"{seconds:.1f}s", movie))

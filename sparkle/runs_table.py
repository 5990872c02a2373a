"""The table ``sparkle runs`` prints: a header row, then one row per run with its status,
QA decision, next stage, age, time spent in stages and movie path.

Each row is rendered from the run's summary cache entry (:mod:`sparkle.statuscache`) with
the standard library only, so the fast path of ``sparkle runs --status queued|running``
(:mod:`sparkle.runindex_fast`) prints exactly what the full CLI prints
(:mod:`sparkle.listing`).
"""

from __future__ import annotations

from pathlib import PurePath

from sparkle.statuscache import Entry, decision_label

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


def header_row() -> str:
    return _row(HEADER).rstrip()


def entry_row(run_id: str, run_dir: PurePath, entry: Entry, now: float,
              waiting: tuple[str, float] | None = None) -> str:
    """The row of the run in ``run_dir`` from its cache ``entry`` (read with its view).

    Age counts from when the run's plan was written (its creation); the time is the sum of
    its stages' last durations; the movie is shown once there is one. A run ``waiting`` for
    review (the stage it stopped after, the seconds it has waited) shows that for its next
    stage.
    """
    view = entry.view
    if view is None:
        raise ValueError("a row is rendered from an entry read with its view")
    plan = entry.sources[0] if entry.sources else None
    age = age_text(now - plan[2] / 1e9) if plan else "-"
    seconds = sum(s["duration_sec"] or 0.0 for s in view["stages"])
    movie = str(run_dir / view["final_movie"]) if view["final_movie"] else "-"
    qa = decision_label(entry.qa_decision) if entry.qa_decision else "-"
    where = (f"after {waiting[0]}, waiting {age_text(waiting[1])}" if waiting is not None
             else entry.next_stage or "done")
    return _row((run_id, entry.status.value, qa, where, age, f"{seconds:.1f}s", movie))

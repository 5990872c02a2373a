"""The runs listing of the dashboard: every run's summary, filtered, searched and paged.

The status of each run comes from its summary cache (:func:`sparkle.runstore.cached_summary`,
``.summary.json``), which costs a read and eleven ``lstat`` calls per run: about 0.5 s for
10,000 runs, too slow for a page that refreshes. This process keeps the summaries it read
in memory with a cheaper identity of the run: the ``stat`` of the run folder, of its
``checkpoints/`` folder and of its manifest. Every change to a summary's sources changes one
of them: checkpoints, ``asset_refs.json`` and the cancel marker are written by atomic
rename or unlink inside those folders (which changes the folder's mtime and ctime), and
the manifest only grows. A changed identity sends the run back to its summary cache.
Titles (for search) are read once per run: a run's plan never changes.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from sparkle.errors import SparkleError
from sparkle.names import STAGES, is_safe_id
from sparkle.runstore import Run, RunStore, RunSummary, cached_entry, cached_summary
from sparkle.statuscache import CHECKPOINTS_DIR, MANIFEST_FILE, PLAN_FILE

#: Rows per page unless the request says otherwise.
DEFAULT_LIMIT = 50

#: Most rows one request may ask for.
MAX_LIMIT = 500

#: A run's identity as the index checks it (see the module docstring).
Identity = tuple[int, ...]


@dataclass(frozen=True)
class Known:
    """One run folder as the index last saw it."""

    identity: Identity
    #: None: the folder holds no run (yet).
    summary: RunSummary | None
    #: When the run was created (its plan's mtime), seconds since the epoch.
    created: float


def _identity(run_dir: str) -> Identity | None:
    try:
        folder = os.stat(run_dir)
        checkpoints = os.stat(f"{run_dir}/{CHECKPOINTS_DIR}")
        manifest = os.stat(f"{run_dir}/{MANIFEST_FILE}")
    except OSError:
        return None
    return (folder.st_ino, folder.st_mtime_ns, folder.st_ctime_ns, checkpoints.st_ino,
            checkpoints.st_mtime_ns, checkpoints.st_ctime_ns, manifest.st_ino,
            manifest.st_size, manifest.st_mtime_ns)


class RunIndex:
    """Summaries of every run in a runs folder, kept in memory and re-checked per call."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._known: dict[str, Known] = {}
        self._titles: dict[str, str] = {}
        self._lock = threading.Lock()

    def folders(self) -> list[str]:
        """Names of the folders that may hold a run."""
        try:
            with os.scandir(self.store.root) as entries:
                return [entry.name for entry in entries
                        if is_safe_id(entry.name) and entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []

    def known(self) -> list[tuple[str, Known]]:
        """``(run_id, Known)`` of every run, newest first."""
        root = str(self.store.root)
        found: list[tuple[str, Known]] = []
        names = self.folders()
        with self._lock:
            cached = dict(self._known)
        fresh: dict[str, Known] = {}
        for name in names:
            identity = _identity(f"{root}/{name}")
            entry = cached.get(name)
            if identity is None or entry is None or entry.identity != identity:
                entry = self._read(name, identity)
            fresh[name] = entry
            if entry.summary is not None:
                found.append((name, entry))
        with self._lock:
            self._known = fresh  # (runs removed since are forgotten)
        found.sort(key=lambda item: (-item[1].created, item[0]))
        return found

    def _read(self, name: str, identity: Identity | None) -> Known:
        run = Run(self.store.root, name)
        summary = cached_summary(run)
        try:
            created = os.stat(f"{run.dir}/{PLAN_FILE}").st_mtime
        except OSError:
            created = 0.0
        # (no identity: a folder being created; checked again next time)
        return Known(identity or (), summary, created)

    def title(self, run_id: str) -> str:
        """The run's title, read from its plan once."""
        with self._lock:
            if run_id in self._titles:
                return self._titles[run_id]
        try:
            title = Run(self.store.root, run_id).plan().title
        except (SparkleError, OSError, ValueError):  # a damaged plan still lists, by its id
            title = ""
        with self._lock:
            self._titles[run_id] = title
        return title

    def query(self, status: str | None = None, q: str | None = None,
              limit: int = DEFAULT_LIMIT, offset: int = 0) -> tuple[list[tuple[str, Known]], int]:
        """The runs matching ``status`` and ``q`` (in id or title, any case), newest first:
        ``limit`` of them from ``offset``, and how many match in all."""
        rows = self.known()
        if status:
            rows = [row for row in rows if row[1].summary is not None
                    and row[1].summary.status.value == status]
        if q:
            needle = q.lower()
            rows = [row for row in rows if needle in row[0].lower()
                    or needle in self.title(row[0]).lower()]
        return rows[offset:offset + limit], len(rows)

    def counts(self) -> dict[str, int]:
        """Runs per status."""
        counts: dict[str, int] = {}
        for _, known in self.known():
            assert known.summary is not None
            counts[known.summary.status.value] = counts.get(known.summary.status.value, 0) + 1
        return counts


def row(index: RunIndex, run_id: str, known: Known, now: float | None = None) -> dict[str, Any]:
    """One line of the runs listing (``GET /api/runs``): the summary ``sparkle runs --json``
    prints, and what the page shows beside it."""
    assert known.summary is not None
    summary = known.summary
    run = Run(index.store.root, run_id)
    entry = cached_entry(run)
    stages = entry.view["stages"] if entry is not None and entry.view is not None else []
    done = sum(1 for item in stages if item["status"] == "success")
    running = next((item["stage"] for item in stages if item["status"] == "begin"), None)
    durations = [item["duration_sec"] for item in stages if item["duration_sec"] is not None]
    error = next((item["error"] for item in stages if item["error"]), None)
    now = time.time() if now is None else now
    return {
        "run_id": run_id,
        "status": summary.status.value,
        "qa_decision": summary.qa_decision,
        "next_stage": summary.next_stage,
        "title": index.title(run_id),
        "current_stage": running or summary.next_stage,
        "stages_done": done,
        "stages_total": len(STAGES),
        "created_at": known.created,
        "age_sec": round(max(0.0, now - known.created), 1),
        "duration_sec": round(sum(durations), 3) if durations else None,
        "error": error,
        "thumbnail": _thumbnail(run),
    }


def _thumbnail(run: Run) -> str | None:
    """The run's first keyframe, relative to its folder."""
    try:
        refs = run.asset_refs()
    except (OSError, ValueError):  # a damaged asset_refs.json: no thumbnail
        return None
    for shot in refs.shots.values():
        if shot.start_frame:
            return shot.start_frame
    return None

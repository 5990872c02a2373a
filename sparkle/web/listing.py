"""The runs listing of the dashboard: every run's summary, filtered, searched and paged.

The status of each run comes from its summary cache (:func:`sparkle.runstore.cached_summary`,
``.summary.json``), which costs a read and eleven ``lstat`` calls per run: about 0.5 s for
10,000 runs on an idle machine, too slow for a page that refreshes. So this process keeps a
**snapshot** of every run's summary in memory, with a cheaper identity of the run: the
``stat`` of the run folder, of its ``checkpoints/`` folder and of its manifest. Every change
to a summary's sources changes one of them: checkpoints, ``asset_refs.json`` and the cancel
marker are written by atomic rename or unlink inside those folders (which changes the
folder's mtime and ctime), and the manifest only grows. A changed identity sends the run
back to its summary cache.

A request answers from the snapshot, after three cheap steps: a run folder added or removed
since (the runs folder's own mtime changed) is read or dropped at once; the rows it shows
are checked again one by one (so a shown row is never stale); and a snapshot older than
:data:`REFRESH_SEC` (or ten times the last pass) is checked through again on a background
thread (so a run that changed status while not shown moves between status filters within
a few seconds; for 10,000 runs, some ten). Titles (for
search) are read once per run: a run's plan never changes.

The runs in flight (``status=queued`` or ``running``) come from the unfinished-run index
instead (:mod:`sparkle.runindex` on Redis, :mod:`sparkle.runindex_folder` otherwise), each
checked as a shown row is: such a request reads the runs the index names, never the
snapshot of every folder, so with months of finished runs it costs what the work in flight
costs. (The other filters, the counts per status and the operations page still use the
snapshot.) An index that cannot be read (Redis down) falls back to the snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from sparkle import keys
from sparkle.errors import SparkleError
from sparkle.names import STAGES, is_safe_id
from sparkle.runindex_fast import INDEX_DIR, UNFINISHED, folder_members, folder_rebuild_due
from sparkle.runindex_folder import FolderRunIndex
from sparkle.runlayout import CHECKPOINTS_DIR, MANIFEST_FILE, PLAN_FILE
from sparkle.runstore import Run, RunStore, RunSummary, cached_entry, cached_summary
from sparkle.web.site import Mode, Site

log = logging.getLogger(__name__)

#: Rows per page unless the request says otherwise.
DEFAULT_LIMIT = 50

#: Most rows one request may ask for.
MAX_LIMIT = 500

#: Seconds after which a request has the snapshot checked through again (in the background).
REFRESH_SEC = 3.0

#: ... but at least this many times as long as the last pass took, so that checking a very
#: large runs folder never takes more than a tenth of a core.
REFRESH_DUTY = 10.0

#: A run's identity as the index checks it (see the module docstring).
Identity = tuple[int, ...]

#: The ids of the runs that may be queued or running (the unfinished-run index), or None
#: when it cannot be read.
UnfinishedReader = Callable[[], list[str] | None]

#: The statuses listed from the unfinished-run index.
FROM_INDEX = frozenset(status.value for status in UNFINISHED)


def unfinished_reader(site: Site) -> UnfinishedReader:
    """How the dashboard of ``site`` reads the unfinished-run index: the Redis SET when it
    queues on Redis, else the runs folder's own index. It only reads: it leaves dropping
    finished runs to the reapers, and an index due for its rebuild (None) to the reapers
    on Redis, to a background thread otherwise (a dashboard without a reaper beside it)."""
    store = site.store
    if site.mode is Mode.redis and site.dispatcher is not None:
        client, namespace = site.dispatcher.client, site.settings.namespace

        def from_redis() -> list[str] | None:
            try:
                if not client.exists(keys.unfinished_runs_fresh(namespace)):
                    return None
                return [m.decode() if isinstance(m, bytes) else str(m)
                        for m in client.smembers(keys.unfinished_runs(namespace))]
            except redis.RedisError as exc:
                log.warning("run index unavailable (%s); listing from every run folder", exc)
                return None
        return from_redis
    index_dir = str(store.root / INDEX_DIR)
    rebuilding = threading.Lock()

    def rebuild() -> None:
        try:
            with contextlib.suppress(OSError):
                FolderRunIndex(store.root).rebuild(store)
        finally:
            rebuilding.release()

    def from_folder() -> list[str] | None:
        if folder_rebuild_due(index_dir):
            if rebuilding.acquire(blocking=False):  # (one rebuild at a time)
                threading.Thread(target=rebuild, name="sparkle-ui-run-index",
                                 daemon=True).start()
            return None
        return sorted(folder_members(index_dir))
    return from_folder


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


def _folder_stamp(root: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(root)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_ctime_ns


class RunListing:
    """Summaries of every run in a runs folder, kept in memory (see the module docstring)."""

    def __init__(self, store: RunStore, refresh_sec: float = REFRESH_SEC,
                 unfinished: UnfinishedReader | None = None) -> None:
        self.store = store
        self.refresh_sec = refresh_sec
        self._unfinished = unfinished
        self._root = str(store.root)
        #: The snapshot, replaced whole (never changed in place): readers need no lock.
        self._known: dict[str, Known] | None = None
        self._sorted: list[tuple[str, Known]] | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        self._pass_sec = 0.0
        self._titles: dict[str, str] = {}
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()

    def warm(self) -> None:
        """Take the first snapshot on a background thread (a dashboard just started)."""
        threading.Thread(target=self._refresh_quietly, name="sparkle-ui-index",
                         daemon=True).start()

    def folders(self) -> list[str]:
        """Names of the folders that may hold a run."""
        try:
            with os.scandir(self._root) as entries:
                return [entry.name for entry in entries
                        if is_safe_id(entry.name) and entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []

    def _check(self, name: str, entry: Known | None) -> Known:
        """``entry`` if the run is unchanged since, else the run read again."""
        identity = _identity(f"{self._root}/{name}")
        if identity is not None and entry is not None and entry.identity == identity:
            return entry
        run = Run(self.store.root, name)
        summary = cached_summary(run)
        created = entry.created if entry is not None and entry.created else 0.0
        if not created:
            try:
                created = os.stat(f"{run.dir}/{PLAN_FILE}").st_mtime
            except OSError:
                created = 0.0
        # (no identity: a folder being created; read again next time)
        return Known(identity or (), summary, created)

    def refresh(self) -> None:
        """Check every run folder (new snapshot)."""
        with self._refreshing:
            begun = time.monotonic()
            stamp = _folder_stamp(self._root)
            old = self._known or {}
            fresh = {name: self._check(name, old.get(name)) for name in self.folders()}
            with self._lock:
                self._known, self._sorted, self._stamp = fresh, None, stamp
                self._checked_at = begun
                self._pass_sec = time.monotonic() - begun

    def _refresh_quietly(self) -> None:
        # (the runs folder vanished meanwhile: the next request says so)
        with contextlib.suppress(OSError):
            self.refresh()

    def _snapshot(self) -> dict[str, Known]:
        """The snapshot, with folders added or removed since taken into account."""
        if self._known is None:
            self.refresh()
        elif time.monotonic() - self._checked_at > max(self.refresh_sec,
                                                      REFRESH_DUTY * self._pass_sec) \
                and not self._refreshing.locked():
            self._checked_at = time.monotonic()  # (one background pass at a time)
            threading.Thread(target=self._refresh_quietly, name="sparkle-ui-index",
                             daemon=True).start()
        stamp = _folder_stamp(self._root)
        with self._lock:
            known = self._known or {}
            if stamp == self._stamp:
                return known
        names = set(self.folders())
        added = {name: self._check(name, None) for name in names - set(known)}
        with self._lock:
            current = self._known or {}
            merged = {name: entry for name, entry in current.items() if name in names}
            merged.update({k: v for k, v in added.items() if k not in merged})
            self._known, self._sorted, self._stamp = merged, None, stamp
            return merged

    def known(self) -> list[tuple[str, Known]]:
        """``(run_id, Known)`` of every run, newest first (from the snapshot)."""
        snapshot = self._snapshot()
        with self._lock:
            if self._sorted is not None and self._known is snapshot:
                return self._sorted
        found = [(name, entry) for name, entry in snapshot.items() if entry.summary is not None]
        found.sort(key=lambda item: (-item[1].created, item[0]))
        with self._lock:
            if self._known is snapshot:
                self._sorted = found
        return found

    def fresh(self, run_id: str, entry: Known | None) -> Known:
        """``entry`` checked again now (for a row about to be shown; None: not seen yet)."""
        checked = self._check(run_id, entry)
        if checked is not entry:
            with self._lock:
                if self._known is not None and run_id in self._known:
                    self._known = {**self._known, run_id: checked}
                    self._sorted = None
        return checked

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
        ``limit`` of them from ``offset`` (each checked again now), and how many match."""
        rows = self._in_flight() if status in FROM_INDEX else None
        if rows is None:
            rows = self.known()
        if status:
            rows = [row for row in rows if row[1].summary is not None
                    and row[1].summary.status.value == status]
        if q:
            needle = q.lower()
            rows = [row for row in rows if needle in row[0].lower()
                    or needle in self.title(row[0]).lower()]
        shown = [(run_id, self.fresh(run_id, entry)) for run_id, entry in
                 rows[offset:offset + limit]]
        return [(run_id, entry) for run_id, entry in shown if entry.summary is not None], len(rows)

    def _in_flight(self) -> list[tuple[str, Known]] | None:
        """The runs the unfinished-run index names, each checked now, newest first; None
        without an index that can be read."""
        ids = self._unfinished() if self._unfinished is not None else None
        if ids is None:
            return None
        known = self._known or {}
        found = [(run_id, checked) for run_id in ids if is_safe_id(run_id)
                 and (checked := self.fresh(run_id, known.get(run_id))).summary is not None]
        found.sort(key=lambda item: (-item[1].created, item[0]))
        return found

    def counts(self) -> dict[str, int]:
        """Runs per status (from the snapshot)."""
        counts: dict[str, int] = {}
        for _, known in self.known():
            assert known.summary is not None
            counts[known.summary.status.value] = counts.get(known.summary.status.value, 0) + 1
        return counts


def row(index: RunListing, run_id: str, known: Known, now: float | None = None) -> dict[str, Any]:
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

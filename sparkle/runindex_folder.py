"""The index of unfinished runs in embedded mode: a folder beside the runs, not Redis.

Embedded mode has no Redis; its leases live on an in-process fakeredis that is gone when the
process ends, so an index kept there is rebuilt from every run folder by each new process
(every ``sparkle serve`` start, every ``sparkle runs --status running``). This index is kept
in the runs folder instead, ``runs/.unfinished/``: one empty file per run that may be
unfinished, named by the run id (a dotfolder, never listed as a run). So the reaper of
``serve``, its start-up re-queue and ``sparkle runs --status queued|running`` read only the
runs in flight, across restarts and processes. The same rules as :mod:`sparkle.runindex`:

- a run joins when a stage message is sent for it other than as the next hop of a chain
  (:meth:`sparkle.dispatch.Dispatcher.kick`: a new run, a resume, a review decision), once
  the index exists (its first reader builds it: a lone ``sparkle run`` makes none);
- whoever reads the index drops a run it finds finished or gone, unless its file was
  touched since it looked (a resume just then);
- the whole index is rebuilt from the run folders when the folder is missing and every
  :data:`sparkle.runindex_fast.REBUILD_INTERVAL_SEC` anyway (``.rebuilt``'s age says when), which
  also catches a run whose first message was never sent (a crash between creating the run
  and queueing it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from sparkle.errors import UnsafePathError
from sparkle.runindex_fast import INDEX_DIR as INDEX_DIR
from sparkle.runindex_fast import (
    REBUILT_FILE,
    UNFINISHED,
    folder_discard_if_quiet,
    folder_members,
    folder_rebuild_due,
)
from sparkle.runstore import Run, RunStore, RunSummary, cached_summary

log = logging.getLogger(__name__)


class FolderRunIndex:
    """The unfinished-run index of the runs folder ``root`` (embedded mode)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / INDEX_DIR

    def add(self, run_id: str) -> None:
        """Put ``run_id`` in the index (its file's time says when, for :meth:`unfinished`).
        Nothing to do while there is no index: its first reader builds it from the run
        folders (so a lone ``sparkle run`` never makes one). Never raises: the periodic
        rebuild catches a run that could not be added."""
        if not self.dir.is_dir():
            return
        try:
            path = self.dir / run_id
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            os.close(fd)
            os.utime(path)
        except OSError as exc:
            log.warning("run index: cannot add %s in %s (%s); the next rebuild will",
                        run_id, self.dir, exc)

    def unfinished(self, store: RunStore) -> list[RunSummary]:
        """The summaries of the runs that are queued or running, sorted by id: from the
        runs the index names, dropping those found finished or gone; from every run folder
        when a rebuild is due."""
        if folder_rebuild_due(str(self.dir)):
            return self.rebuild(store)
        found = []
        for run_id in sorted(self.members()):
            looked_at = time.time()
            try:
                summary = cached_summary(Run(store.root, run_id))
            except UnsafePathError:
                summary = None
            if summary is not None and summary.status in UNFINISHED:
                found.append(summary)
                continue
            folder_discard_if_quiet(str(self.dir), run_id, looked_at)
        return found

    def rebuild(self, store: RunStore) -> list[RunSummary]:
        """Add every unfinished run of ``store`` to the index, from the run folders, and
        note the time. Returns them."""
        found = [s for s in store.summaries() if s.status in UNFINISHED]
        with contextlib.suppress(OSError):
            self.dir.mkdir(parents=True, exist_ok=True)
        for summary in found:
            self.add(summary.run_id)
        with contextlib.suppress(OSError):
            (self.dir / REBUILT_FILE).touch()
        log.debug("run index rebuilt in %s: %d unfinished run(s)", self.dir, len(found))
        return found

    def members(self) -> set[str]:
        """The run ids the index names."""
        return folder_members(str(self.dir))

"""The runs folder: creates runs and finds them.

A run is a folder ``runs/<run_id>/`` (:mod:`sparkle.runlayout`). Its parts live by concept:
:mod:`sparkle.run` reads and writes one run's files, :mod:`sparkle.runstate` derives what
they say, :mod:`sparkle.runsummary` caches that for listings, :mod:`sparkle.runids` names a
plan's run. This module creates and lists runs, and gathers the names most of Sparkle
imports from those modules.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sparkle import atomic, unique
from sparkle import manifest as manifest_file
from sparkle.errors import RunConflictError, RunNotFoundError
from sparkle.infrastructure import bookkeeping
from sparkle.names import ID_RE, EventKind
from sparkle.names import RunStatus as RunStatus
from sparkle.run import Run as Run
from sparkle.runids import canonical_plan_json as canonical_plan_json
from sparkle.runids import plan_digest as plan_digest
from sparkle.runids import run_id_for as run_id_for
from sparkle.runids import slugify as slugify
from sparkle.runlayout import ASSET_REFS_FILE as ASSET_REFS_FILE
from sparkle.runlayout import CANCELLED_FILE as CANCELLED_FILE
from sparkle.runlayout import CHECKPOINTS_DIR as CHECKPOINTS_DIR
from sparkle.runlayout import LEGACY_LOG_FILE as LEGACY_LOG_FILE
from sparkle.runlayout import LOCK_FILE as LOCK_FILE
from sparkle.runlayout import MANIFEST_FILE as MANIFEST_FILE
from sparkle.runlayout import MANIFEST_LOCK_FILE as MANIFEST_LOCK_FILE
from sparkle.runlayout import PLAN_FILE as PLAN_FILE
from sparkle.runlayout import SUMMARY_FILE as SUMMARY_FILE
from sparkle.runstate import RunState as RunState
from sparkle.runstate import RunSummary as RunSummary
from sparkle.runstate import StageView as StageView
from sparkle.runsummary import cached_entry as cached_entry
from sparkle.runsummary import cached_summary as cached_summary
from sparkle.runsummary import status_view as status_view
from sparkle.schemas import AssetRefs, MoviePlan
from sparkle.statuscache import SUMMARY_SOURCES as SUMMARY_SOURCES

#: Prefix of the hidden folder a new run is built in before it is renamed into place.
BUILDING_PREFIX = ".new-"


class RunStore:
    """The runs folder: creates runs and finds them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, run_id: str) -> Run:
        """The run with ``run_id``. Raises RunNotFoundError when it does not exist."""
        run = Run(self.root, run_id)
        if not run.exists():
            raise RunNotFoundError(
                f"no run {run_id!r} in {self.root} (list them with `sparkle runs`)"
            )
        return run

    def create(self, plan: MoviePlan, run_id: str | None = None) -> tuple[Run, bool]:
        """Create the run for ``plan``, or find it when the same plan was submitted before.

        Returns the run and whether it was created now. The folder is built under a hidden
        temporary name beside it and renamed into place whole, so a crash or a full disk
        never leaves a half-made run (one without its plan, which ``sparkle runs`` could
        not list).

        Raises:
          RunConflictError: a different plan already owns the run id.
          InfrastructureError: the runs folder cannot be written (full, read-only, ...);
            nothing was created.
        """
        run = Run(self.root, run_id or run_id_for(plan))
        canonical = canonical_plan_json(plan)
        with bookkeeping("cannot create run folder", run.dir):
            # (a run's plan never changes once it exists: compared without a lock)
            if run.exists():
                self._check_same_plan(run, canonical)
                return run, False
            if self._publish_new(run, plan):
                self._record_warnings(run, plan)
                return run, True
            # Found, lost a race to another creator, or a folder without a plan (left by a
            # crash of a version that built runs in place): settled under the run's lock.
            with run.locked():
                if run.exists():
                    self._check_same_plan(run, canonical)
                    return run, False
                (run.dir / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
                run.save_asset_refs(AssetRefs())
                if not (run.dir / MANIFEST_FILE).exists():
                    atomic.write_bytes(run.dir / MANIFEST_FILE, manifest_file.empty(run.run_id))
                # The plan is written last: its presence is what makes the run exist.
                atomic.write_json(run.dir / PLAN_FILE, _as_received(plan))
            self._record_warnings(run, plan)
            return run, True

    @staticmethod
    def _record_warnings(run: Run, plan: MoviePlan) -> None:
        """What was accepted in the plan but is worth knowing, as an event of the new run."""
        if plan.warnings:
            run.append_event("script", EventKind.warning, 1, metadata={"warnings": plan.warnings})

    def _publish_new(self, run: Run, plan: MoviePlan) -> bool:
        """Build ``run``'s folder under a temporary name and rename it into place. False
        when a folder of that name exists already (nothing is changed then)."""
        self.root.mkdir(parents=True, exist_ok=True)
        # (a dotfile: never listed as a run, whatever happens to it)
        building = self.root / f"{BUILDING_PREFIX}{run.run_id}-{unique.hex_token(32)}"
        try:
            (building / CHECKPOINTS_DIR).mkdir(parents=True)
            atomic.write_json(building / ASSET_REFS_FILE, AssetRefs())
            atomic.write_bytes(building / MANIFEST_FILE, manifest_file.empty(run.run_id))
            atomic.write_json(building / PLAN_FILE, _as_received(plan))
            os.rename(building, run.dir)
        except OSError as exc:
            shutil.rmtree(building, ignore_errors=True)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise
        atomic.fsync_dir(self.root)  # the new folder's name must survive a power loss
        return True

    @staticmethod
    def _check_same_plan(run: Run, canonical: str) -> None:
        try:
            existing = canonical_plan_json(run.plan())
        except ValidationError:
            raise RunConflictError(
                f"run {run.run_id!r} exists but its {PLAN_FILE} is damaged; "
                f"inspect or remove {run.dir}"
            ) from None
        if existing != canonical:
            raise RunConflictError(
                f"run {run.run_id!r} already exists with a different plan; "
                "change metadata.run_id (or the title) to start a new run, "
                f"or remove {run.dir} to replace it"
            )

    def summaries(self) -> list[RunSummary]:
        """The summary of every run, sorted by id: what ``sparkle runs`` lists.

        Each comes from the run's ``.summary.json`` when none of the files it was derived
        from changed since, else from the checkpoints (see :func:`cached_summary`).
        """
        found = []
        for run_id in self._run_folders():
            summary = cached_summary(Run(self.root, run_id))
            if summary is not None:
                found.append(summary)
        return found

    def _run_folders(self) -> list[str]:
        """Names of the folders that may hold a run (path-safe ids), sorted."""
        if not self.root.is_dir():
            return []
        with os.scandir(self.root) as entries:
            return sorted(
                entry.name
                for entry in entries
                if entry.is_dir() and ID_RE.fullmatch(entry.name) and ".." not in entry.name
            )

    def runs(self) -> list[Run]:
        """Every run in the folder, sorted by id. Folders without a plan are skipped."""
        found = []
        for run_id in self._run_folders():
            run = Run(self.root, run_id)
            if run.exists():
                found.append(run)
        return found


def _as_received(plan: MoviePlan) -> MoviePlan | dict[str, Any]:
    """What ``movie_plan.json`` keeps: the plan as it was received (a plan in the
    base-image format stays in that format)."""
    return plan if plan.as_received() is plan else plan.received_json()

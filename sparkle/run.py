"""One run folder's files, read and written safely: the plan, the asset references, the
checkpoints (the state), the manifest (the history) and the cancel marker.

Every JSON file is written atomically (:mod:`sparkle.atomic`), the manifest too: each event
rewrites it whole under the run's lock, one event per line so that nothing already there
is parsed again (:mod:`sparkle.manifest`, :mod:`sparkle.history_cache`). Run folders
written before ``manifest.json`` keep their history in ``manifest.jsonl`` (one event per
line, appended); it is still read, and moved into ``manifest.json`` by the next event. The
file names are those of :mod:`sparkle.runlayout`; what the files say about the run is
derived by :mod:`sparkle.runstate`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sparkle import atomic, base_image_plan, refmerge, statuscache
from sparkle import manifest as manifest_file
from sparkle.errors import RunNotFoundError, UnsafePathError
from sparkle.history_cache import histories
from sparkle.names import ID_RE, STAGES, RunStatus
from sparkle.runlayout import (
    ASSET_REFS_FILE,
    CANCELLED_FILE,
    LEGACY_LOG_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MANIFEST_LOCK_FILE,
    PLAN_FILE,
    checkpoint_file,
)
from sparkle.runstate import RunState, RunSummary, StageView
from sparkle.schemas import AssetRefs, Checkpoint, MoviePlan, StageEvent

log = logging.getLogger(__name__)


class Run:
    """One run folder. Cheap to create; reads the disk on every call. (Only the parsing of
    a history read before is reused, while the bytes read begin with the same ones.)"""

    def __init__(self, root: Path, run_id: str) -> None:
        if not ID_RE.fullmatch(run_id) or ".." in run_id:
            raise UnsafePathError(f"run id {run_id!r} is not a path-safe id")
        self.run_id = run_id
        self.dir = root / run_id
        #: (end of the manifest before, end after) of each event this object appended.
        self.appended: list[tuple[int, int]] = []

    def __repr__(self) -> str:
        return f"Run({self.run_id!r})"

    # -- paths ---------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        """Resolve ``parts`` under the run folder; refuse anything that lands outside it."""
        if any("\0" in part for part in parts):
            raise UnsafePathError(f"{'/'.join(parts)!r} contains a NUL byte")
        base = self.dir.resolve()
        candidate = base.joinpath(*parts).resolve()
        if candidate != base and base not in candidate.parents:
            raise UnsafePathError(
                f"{'/'.join(parts)!r} resolves outside run folder {str(self.dir)!r}"
            )
        return candidate

    def exists(self) -> bool:
        return os.path.isfile(f"{self.dir}/{PLAN_FILE}")

    @contextlib.contextmanager
    def locked(self, name: str = LOCK_FILE) -> Iterator[None]:
        """Hold the run folder's file lock (exclusive, across processes; across hosts too
        on NFS, where Linux implements ``flock`` with NFS locks). ``name``: another lock
        file of the run, for a lock of one file only (the manifest's)."""
        path = f"{self.dir}/{name}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- plan and asset refs -------------------------------------------------------------

    def plan(self) -> MoviePlan:
        """The run's plan. Raises RunNotFoundError when the folder holds none."""
        try:
            data = _read(f"{self.dir}/{PLAN_FILE}")
            # (the plan as received: in the base-image format, made into Sparkle's here)
            if b'"base_images"' in data:
                return base_image_plan.load_json(data)
            return MoviePlan.model_validate_json(data)
        except FileNotFoundError:
            raise RunNotFoundError(f"no run {self.run_id!r} in {self.dir.parent}") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise UnsafePathError(
                f"{self.dir / PLAN_FILE} is a symbolic link; a run's files must be regular "
                "files inside its folder"
            ) from None

    def asset_refs(self) -> AssetRefs:
        """The asset references so far (empty before the first stage)."""
        try:
            return AssetRefs.model_validate_json(_read(f"{self.dir}/{ASSET_REFS_FILE}"))
        except FileNotFoundError:
            return AssetRefs()

    def asset_refs_saved_at(self) -> float:
        """When ``asset_refs.json`` was last saved (its ``ctime``); 0 when it is missing."""
        try:
            return os.stat(f"{self.dir}/{ASSET_REFS_FILE}").st_ctime
        except FileNotFoundError:
            return 0.0

    def save_asset_refs(self, refs: AssetRefs) -> None:
        atomic.write_json(f"{self.dir}/{ASSET_REFS_FILE}", refs)

    def asset_refs_as_read(self) -> tuple[AssetRefs, bytes]:
        """The asset references, and the bytes they were read from (empty when missing):
        pass those to :meth:`merge_asset_refs` when saving a stage's result."""
        try:
            data = _read(f"{self.dir}/{ASSET_REFS_FILE}")
        except FileNotFoundError:
            return AssetRefs(), b""
        return AssetRefs.model_validate_json(data), data

    def merge_asset_refs(self, base: bytes, refs: AssetRefs) -> AssetRefs:
        """Save a stage's refs as a merge (:mod:`sparkle.refmerge`): the file as it is
        now plus what changed from ``base`` (the bytes of the refs the stage was given,
        from :meth:`asset_refs_as_read`) to ``refs``, under the run folder's file lock,
        atomically. A concurrent writer's refs are never lost. Returns what was saved."""
        with self.locked():
            try:
                current = _read(f"{self.dir}/{ASSET_REFS_FILE}")
            except FileNotFoundError:
                current = b""
            if current != base:  # (else nobody wrote since: nothing to merge)
                refs = refmerge.merge(_refs_from(base), refs, _refs_from(current))
            self.save_asset_refs(refs)
        return refs

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint_path(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        return self.dir / checkpoint_file(stage)

    def checkpoint(self, stage: str) -> Checkpoint | None:
        """The stage's checkpoint, or None when missing or unreadable.

        A missing, empty, truncated or invalid checkpoint means "not done": the stage runs
        again. An unreadable one is reported in the log, never raised.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        path = f"{self.dir}/{checkpoint_file(stage)}"
        try:
            data = _read(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("run %s: checkpoint %s unreadable (%s); treating as not done",
                        self.run_id, path, exc.strerror)
            return None
        try:
            return Checkpoint.model_validate_json(data)
        except ValidationError as exc:
            log.warning("run %s: checkpoint %s is invalid (%d problem(s): %s); "
                        "treating as not done", self.run_id, path, exc.error_count(),
                        exc.errors(include_url=False)[0]["msg"])
            return None

    def write_checkpoint(self, checkpoint: Checkpoint, durable: bool = True) -> None:
        # (a string path: pathlib's joins cost more than the write's Python code here)
        atomic.write_json(f"{self.dir}/{checkpoint_file(checkpoint.stage)}", checkpoint,
                          durable)

    def remove_checkpoint(self, stage: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.checkpoint_path(stage).unlink()

    # -- manifest ------------------------------------------------------------------------

    def events(self) -> list[StageEvent]:
        """The run's history, oldest first. Entries that are not events are reported and
        skipped.

        A run folder written before ``manifest.json`` keeps (the rest of) its history in
        ``manifest.jsonl``; it is read after ``manifest.json``. The events are shared with
        later reads of the same history: do not change them.
        """
        return self._events()[0]

    def _events(self) -> tuple[list[StageEvent], int | None]:
        """:meth:`events`, and how many bytes of ``manifest.json`` they were read from (None
        when it could not be read)."""
        path = f"{self.dir}/{MANIFEST_FILE}"
        size: int | None = 0
        events: list[StageEvent] = []
        try:
            data = _read(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("run %s: manifest %s unreadable (%s); reading it as empty",
                        self.run_id, path, exc.strerror)
            size = None
        else:
            size = len(data)
            events = self._manifest_events(path, data)
        logged = self._log_events()
        # (a log whose events end manifest.json already was moved into it by a writer
        # that died before it could remove the log)
        if logged and events[len(events) - len(logged):] != logged:
            events = events + logged
        return events, size

    def _manifest_events(self, path: str, data: bytes) -> list[StageEvent]:
        lines = manifest_file.as_lines(data, self.run_id)
        if lines is not None:
            return histories.parse(self.run_id, path, lines)
        raw = manifest_file.raw_events(data)
        if raw is None:
            log.warning("run %s: manifest %s is not a RunManifest (JSON object with an "
                        "events list); reading it as empty", self.run_id, path)
            return []
        events = []
        for index, item in enumerate(raw):
            try:
                events.append(StageEvent.model_validate(item))
            except ValidationError as exc:
                log.warning("run %s: %s events[%d] is not a stage event (%s); skipping it",
                            self.run_id, path, index, exc.errors(include_url=False)[0]["msg"])
        return events

    def _log_events(self) -> list[StageEvent]:
        path = f"{self.dir}/{LEGACY_LOG_FILE}"
        try:
            data = _read(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("run %s: %s unreadable (%s); its events are skipped", self.run_id, path,
                        exc.strerror)
            return []
        return histories.parse(self.run_id, path, data)

    def append_event(
        self,
        stage: str,
        status: str,
        attempt: int,
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
        durable: bool = True,
    ) -> StageEvent:
        """Add one event to ``manifest.json``: the file is written anew with the event
        added and renamed into place, under the run folder's lock.

        The lock (``flock`` on the run's ``.manifest.lock``) orders the writers of one host; writers
        on several hosts are ordered by the run's lease (see docs/RELIABILITY.md, "Who
        writes a run's files"). Only the new event is encoded: the events already there are
        spliced as bytes (:mod:`sparkle.manifest`). A run written before ``manifest.json``
        has its ``manifest.jsonl`` moved into it first.
        """
        event = StageEvent.model_validate(
            {
                "run_id": self.run_id,
                "stage": stage,
                "status": status,
                "timestamp": time.time(),
                "attempt": attempt,
                "error": error,
                "metadata": metadata or {},
            }
        )
        record = event.model_dump_json().encode("utf-8")
        path = f"{self.dir}/{MANIFEST_FILE}"
        with self.locked(MANIFEST_LOCK_FILE):
            try:
                data: bytes | None = _read(path)
            except FileNotFoundError:
                data = None
            before = len(data) if data is not None else 0
            logged = os.path.lexists(f"{self.dir}/{LEGACY_LOG_FILE}")
            if data is None and not logged:
                data = manifest_file.empty(self.run_id)
            elif logged or data is None or manifest_file.as_lines(data, self.run_id) is None:
                data = self._rewrite_manifest(data)
            new = manifest_file.append(data, record)
            atomic.write_bytes(path, new, durable)
            self.appended.append((before, len(new)))
        return event

    def _rewrite_manifest(self, data: bytes | None) -> bytes:
        """Put the history into ``manifest.json`` in Sparkle's layout (under the lock): from
        ``manifest.json`` in another layout, and from a ``manifest.jsonl`` left by an older
        Sparkle, which is then removed. Returns the new bytes. Every event is kept as it
        was, also one this version cannot read (written by a newer one)."""
        path = f"{self.dir}/{MANIFEST_FILE}"
        records: list[bytes] = []
        if data is not None:
            raw = manifest_file.raw_events(data)
            if raw is None:
                aside = f"{path}.damaged-{time.time_ns()}"
                os.replace(path, aside)
                log.error("run %s: %s is not a RunManifest; moved it to %s and started a new "
                          "one", self.run_id, path, aside)
            else:
                records = [manifest_file.record(item) for item in raw]
        log_path = f"{self.dir}/{LEGACY_LOG_FILE}"
        try:
            logged = _read(log_path)
        except FileNotFoundError:
            logged = None
        if logged is not None:
            lines = []
            for line in logged.split(b"\n"):
                with contextlib.suppress(ValueError):
                    lines.append(manifest_file.record(json.loads(line)))  # (torn: skipped)
            if records[len(records) - len(lines):] != lines:  # (not moved already)
                records += lines
        new = manifest_file.encode(self.run_id, records)
        atomic.write_bytes(path, new, durable=True)
        if logged is not None:
            os.unlink(log_path)
        return new

    # -- derived state -------------------------------------------------------------------

    def state(self, history_first: bool = False) -> RunState:
        """A fresh look at the run's checkpoints and history (each file read once, when
        first needed; with ``history_first``, the history now)."""
        state = RunState(self)
        if history_first:
            state.events  # noqa: B018 (read for its effect)
        return state

    def stage_done(self, stage: str) -> bool:
        return self.state().stage_done(stage)

    def next_stage(self) -> str | None:
        return self.state().next_stage()

    def attempts(self, stage: str) -> int:
        return self.state().attempts(stage)

    @property
    def cancelled(self) -> bool:
        return os.path.exists(f"{self.dir}/{CANCELLED_FILE}")

    def set_cancelled(self, cancelled: bool) -> None:
        marker = self.dir / CANCELLED_FILE
        if cancelled:
            atomic.write_bytes(marker, b"")
        else:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    def status(self) -> RunStatus:
        """Derive the run's status from its checkpoints (and the cancel marker)."""
        return self.state().status()

    def qa_decision(self) -> str | None:
        """The QA decision when QA has run, shown beside the status."""
        return self.state().qa_decision()

    def stage_views(self) -> list[StageView]:
        """Per-stage status, attempts, duration and error for displays."""
        return self.state().stage_views()

    def summary(self) -> RunSummary:
        """Status, QA decision and next stage from one fresh look (no cache)."""
        return self.state().summary()


def _refs_from(data: bytes) -> AssetRefs:
    return AssetRefs.model_validate_json(data) if data else AssetRefs()


def _read(path: str) -> bytes:
    """A state file's bytes. A symbolic link in place of the file is refused (``ELOOP``):
    state files are never links, and following one could read outside the run folder.
    (Only the file itself: a folder on the way, such as ``checkpoints``, may be a link.)"""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return statuscache.read_all(fd)
    finally:
        os.close(fd)

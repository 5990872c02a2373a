"""The run folder: plan, asset references, checkpoints, manifest and derived status.

Layout of ``runs/<run_id>/``::

    movie_plan.json            the validated plan (source of truth for the run)
    asset_refs.json            AssetRefs, replaced atomically after each stage
    manifest.json              RunManifest {"run_id", "events": [StageEvent...]}: the history
    checkpoints/<stage>.json   Checkpoint: the state
    cancelled                  present while the run is cancelled
    .summary.json              a cache of the derived summary, for listing many runs

Checkpoints are the state; the manifest is the history. Every JSON file is written
atomically (:mod:`sparkle.atomic`), the manifest too: each event rewrites it whole under
the run's lock, one event per line so that nothing already there is parsed again
(:mod:`sparkle.manifest`). Run folders written before ``manifest.json`` keep their history
in ``manifest.jsonl`` (one event per line, appended); it is still read, and moved into
``manifest.json`` by the next event.

Listing thousands of runs (``sparkle runs``, the reaper) or showing one (``sparkle status``)
is answered from each run's ``.summary.json`` while none of the files it was derived from
changed (:mod:`sparkle.statuscache`).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from sparkle import atomic, base_image_plan, contract, refmerge, statuscache, unique
from sparkle import manifest as manifest_file
from sparkle.contract import ATTEMPT_EVENTS
from sparkle.errors import RunConflictError, RunNotFoundError, UnsafePathError
from sparkle.infrastructure import bookkeeping
from sparkle.names import RunStatus as RunStatus
from sparkle.review_state import ReviewState, read_review
from sparkle.schemas import (
    ID_RE,
    STAGES,
    AssetRefs,
    Checkpoint,
    MoviePlan,
    StageEvent,
)
from sparkle.statuscache import ASSET_REFS_FILE as ASSET_REFS_FILE
from sparkle.statuscache import CANCELLED_FILE as CANCELLED_FILE
from sparkle.statuscache import CHECKPOINTS_DIR as CHECKPOINTS_DIR
from sparkle.statuscache import LEGACY_LOG as LEGACY_LOG
from sparkle.statuscache import MANIFEST_FILE as MANIFEST_FILE
from sparkle.statuscache import PLAN_FILE as PLAN_FILE
from sparkle.statuscache import SUMMARY_FILE as SUMMARY_FILE
from sparkle.statuscache import SUMMARY_SOURCES as SUMMARY_SOURCES
from sparkle.takes import take_counts

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"

#: The lock of the manifest alone (not ``.lock``: a writer may add an event while it
#: holds the run folder's lock for something else).
MANIFEST_LOCK_FILE = ".manifest.lock"

#: The manifest as Sparkle wrote it before ``manifest.json``: one event per line, appended.
#: Still read (after ``manifest.json``, whose events come first); the next event moves its
#: events into ``manifest.json`` and removes it.
LEGACY_LOG_FILE = LEGACY_LOG

#: Length of the title slug in a derived run id.
SLUG_CHARS = 40

#: Hex digits of the plan hash in a derived run id.
HASH_CHARS = 10


def canonical_plan_json(plan: MoviePlan) -> str:
    """The plan as received (in whichever format), as JSON with sorted keys and no
    whitespace: equal plans give equal text."""
    return json.dumps(plan.received_json(), sort_keys=True, separators=(",", ":"))


def plan_digest(plan: MoviePlan) -> str:
    """SHA-256 (hex) of the canonical plan JSON."""
    return hashlib.sha256(canonical_plan_json(plan).encode("utf-8")).hexdigest()


def slugify(title: str) -> str:
    """A path-safe, lower-case slug of ``title`` (``"run"`` when nothing is left)."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:SLUG_CHARS].strip("-")
    return slug or "run"


def run_id_for(plan: MoviePlan) -> str:
    """``metadata.run_id`` when given, else ``<slug of title>-<10 hex of the plan hash>``."""
    if "run_id" in plan.metadata:
        return plan.metadata["run_id"]
    return f"{slugify(plan.title)}-{plan_digest(plan)[:HASH_CHARS]}"


@dataclass(frozen=True)
class StageView:
    """What the run folder says about one stage, for status displays."""

    stage: str
    status: str
    attempt: int
    duration_sec: float | None
    error: str | None


@dataclass(frozen=True)
class RunSummary:
    """One run as a listing shows it: status, QA decision and the next stage to run."""

    run_id: str
    status: RunStatus
    qa_decision: str | None
    next_stage: str | None


#: Validates a list of events in one call (see :func:`_parse_lines`).
_EVENT_LIST = TypeAdapter(list[StageEvent])

#: Manifests whose parsed events :class:`_Histories` keeps, per process.
HISTORY_CACHE_RUNS = 1024


def _parse_lines(run_id: str, path: str, data: bytes, start: int, end: int
                 ) -> tuple[list[StageEvent], bool]:
    """The events in ``data[start:end]`` (whole lines of the manifest at ``path``), and
    whether every line was one. Lines that are not events are reported and skipped."""
    lines = data[start:end].split(b"\n")[:-1]
    records = [line for line in lines if line.strip()]
    if not records:
        return [], True
    try:
        # All lines in one call, as one JSON array: a call per line costs more than its
        # parsing. A bad line fails the whole array, and then each line is read on its own
        # to skip only that one. (Joined records cannot parse as a different number of
        # events: a torn record leaves a bracket or a string open.)
        parsed = _EVENT_LIST.validate_json(b"[" + b",".join(records) + b"]")
        if len(parsed) == len(records):
            return parsed, True
    except ValidationError:
        pass
    events, clean = [], True
    for number, line in enumerate(lines, data.count(b"\n", 0, start) + 1):
        if not line.strip():
            continue
        try:
            events.append(StageEvent.model_validate_json(line))
        except ValidationError as exc:
            clean = False
            log.warning("run %s: %s line %d is not a stage event (%s); skipping it",
                        run_id, path, number, exc.errors(include_url=False)[0]["msg"])
    return events, clean


class _Histories:
    """The events parsed from recently read manifests, by path, so that reading a run's
    history again parses only the lines appended since.

    A manifest only grows, by whole lines. The bytes a cached history was parsed from are
    compared with the new read (in memory: no system call), never assumed: a manifest
    rewritten or replaced by hand is parsed afresh. Only histories whose every line was an
    event are kept, so a damaged line is still reported on every read.
    """

    def __init__(self, capacity: int) -> None:
        self._entries: collections.OrderedDict[str, tuple[bytes, tuple[StageEvent, ...]]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self._capacity = capacity

    def parse(self, run_id: str, path: str, data: bytes) -> list[StageEvent]:
        """The events of ``data``, the manifest at ``path`` as just read. The events are
        shared with later reads: callers must not change them."""
        # Without a final newline the last line is an append still being written (or one a
        # power loss cut short, which the next append leaves on its own line): not yet news.
        end = data.rfind(b"\n") + 1
        with self._lock:
            cached = self._entries.get(path)
        start = 0
        known: tuple[StageEvent, ...] = ()
        if cached is not None and data.startswith(cached[0]):
            start, known = len(cached[0]), cached[1]
        new, clean = _parse_lines(run_id, path, data, start, end)
        events = [*known, *new]
        if clean:
            with self._lock:
                self._entries[path] = (data[:end], tuple(events))
                self._entries.move_to_end(path)
                if len(self._entries) > self._capacity:
                    self._entries.popitem(last=False)
        return events


_histories = _Histories(HISTORY_CACHE_RUNS)


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
        return self.dir / CHECKPOINTS_DIR / f"{stage}.json"

    def checkpoint(self, stage: str) -> Checkpoint | None:
        """The stage's checkpoint, or None when missing or unreadable.

        A missing, empty, truncated or invalid checkpoint means "not done": the stage runs
        again. An unreadable one is reported in the log, never raised.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        path = f"{self.dir}/{CHECKPOINTS_DIR}/{stage}.json"
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
        atomic.write_json(f"{self.dir}/{CHECKPOINTS_DIR}/{checkpoint.stage}.json", checkpoint,
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
            return _histories.parse(self.run_id, path, lines)
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
        return _histories.parse(self.run_id, path, data)

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


class RunState:
    """One look at a run's checkpoints and history, each file read at most once.

    The engine decides skip / next stage / attempt number / crash loop from one RunState
    instead of re-reading the manifest for every question.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self._checkpoints: dict[str, Checkpoint | None] = {}
        self._events: list[StageEvent] | None = None
        self._manifest_size: int | None = None
        self._appended_before = len(run.appended)
        self._checkpoint_before_history = False
        self._review: ReviewState | None = None
        self._review_read = False

    def checkpoint(self, stage: str) -> Checkpoint | None:
        if stage not in self._checkpoints:
            self._checkpoints[stage] = self.run.checkpoint(stage)
            if self._events is None:
                self._checkpoint_before_history = True
        return self._checkpoints[stage]

    @property
    def events(self) -> list[StageEvent]:
        if self._events is None:
            self._events, self._manifest_size = self.run._events()
        return self._events

    def appended_only_by_us(self) -> bool:
        """Whether every event added to the manifest since this look was read came from
        this process's :class:`Run` object (checked by file offsets and the manifest's
        size now, without reading it).

        Every change to a run's stages by someone else (``sparkle resume --from/--only``,
        another worker's attempt) appends to the manifest before it touches a checkpoint,
        so while this holds, the stages this look found done are still done, provided
        the history was read before any checkpoint (``Run.state(history_first=True)``):
        else a reset could have appended before the history was read but removed a
        checkpoint after this look had read it. Without that order this says False.
        """
        if self._events is None or self._manifest_size is None \
                or self._checkpoint_before_history:
            return False
        expected = self._manifest_size
        for before, after in self.run.appended[self._appended_before:]:
            if before != expected:
                return False
            expected = after
        try:
            # open + fstat, not stat: over NFS only an open revalidates a cached size.
            fd = os.open(f"{self.run.dir}/{MANIFEST_FILE}", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            return os.fstat(fd).st_size == expected
        finally:
            os.close(fd)

    def last_event(self, stage: str, kinds: tuple[str, ...] | None = None) -> StageEvent | None:
        """The stage's last event (of ``kinds`` when given), None when it has none."""
        for event in reversed(self.events):
            if event.stage == stage and (kinds is None or event.status in kinds):
                return event
        return None

    def stage_done(self, stage: str) -> bool:
        """A stage is done when its checkpoint says success, or the manifest's last
        event for it is a success (the seed contract's resume rule: either one).

        The history is asked first: it is one file read once per look, where each
        checkpoint is a file of its own, so deciding that the stages before a run's
        current one are done reads no checkpoint. The two agree whenever the engine wrote
        them: a success event follows its success checkpoint; a reset appends its event
        before it removes the checkpoint, a failure before it writes its own; an attempt
        starts only on a stage that is not done; and a worker that lost the run's lease
        records no outcome (the engine fences failures as well as successes).
        """
        last = self.last_event(stage)
        if last is not None and last.status == "success":
            return True
        checkpoint = self.checkpoint(stage)
        if checkpoint is None or checkpoint.status != "success":
            return False
        # (a success the adapter wrote itself, as the seed contract's example stage does,
        # counts only once the engine recorded it)
        if not contract.engine_recorded(checkpoint, self.last_event(stage, ATTEMPT_EVENTS)):
            log.warning("run %s: checkpoint of %s says success, but the engine recorded no "
                        "success for that attempt (written by the adapter?); not done",
                        self.run.run_id, stage)
            return False
        return True

    def next_stage(self) -> str | None:
        """The first stage that is not done, or None when every stage is."""
        for stage in STAGES:
            if not self.stage_done(stage):
                return stage
        return None

    def next_stage_after(self, stage: str) -> str | None:
        """The first unfinished stage now that ``stage``, this look's next stage, succeeded.

        A fresh look at the run, made cheap: while only this process appended to the
        manifest since this look was read (:meth:`appended_only_by_us`), the stages before
        ``stage`` are still done, so only the later ones are read again.
        """
        # A stage before this one whose last event is a reset is being reset now: its
        # event came before the history was read but its checkpoint may have been removed
        # only after this look read it (a reset appends, then removes, stage by stage).
        if any((last := self.last_event(earlier)) is not None and last.status == "reset"
               for earlier in STAGES[:STAGES.index(stage)]):
            return self.run.next_stage()
        found = None
        for later in STAGES[STAGES.index(stage) + 1:]:
            self._checkpoints.pop(later, None)  # read it afresh
            if not self.stage_done(later):
                found = later
                break
        # (checked after those reads, and the history was read before any checkpoint
        # (Run.state(history_first=True)): a reset appends its event before it removes
        # checkpoints, so a reset that the check misses had not removed any yet)
        return found if self.appended_only_by_us() else self.run.next_stage()

    def attempts(self, stage: str) -> int:
        """Attempts started for ``stage`` so far (the highest attempt number recorded)."""
        checkpoint = self.checkpoint(stage)
        highest = checkpoint.attempt if checkpoint is not None else 0
        for event in self.events:
            if event.stage == stage and event.status in ("begin", "success", "fail"):
                highest = max(highest, event.attempt)
        return highest

    def crashed_begins(self, stage: str) -> int:
        """``begin`` events of ``stage`` at the end of its history with no outcome after
        them: each is an attempt whose worker died before it could record one."""
        count = 0
        for event in reversed(self.events):
            if event.stage != stage:
                continue
            if event.status == "begin":
                count += 1
            elif event.status in ("success", "fail", "reset"):
                break
        return count

    def review(self) -> ReviewState | None:
        """The run's ``review.json``: present while it waits for a person, or once rejected."""
        if not self._review_read:
            self._review = read_review(str(self.run.dir))
            self._review_read = True
        return self._review

    def status(self) -> RunStatus:
        """The run's status: rejected or awaiting_review (``review.json``), cancelled (marker
        present), else failed (a failed checkpoint), succeeded (every stage's checkpoint
        says success), running (any checkpoint), queued (none). The manifest is not read."""
        review = self.review()
        if review is not None:
            return RunStatus(review.status)
        if self.run.cancelled:
            return RunStatus.cancelled
        checkpoints = [self.checkpoint(stage) for stage in STAGES]
        if any(c is not None and c.status == "failed" for c in checkpoints):
            return RunStatus.failed
        if all(c is not None and c.status == "success" for c in checkpoints):
            return RunStatus.succeeded
        if any(c is not None for c in checkpoints):
            return RunStatus.running
        return RunStatus.queued

    def qa_decision(self) -> str | None:
        """The QA decision when QA has succeeded, else None."""
        checkpoint = self.checkpoint("qa")
        if checkpoint is None or checkpoint.status != "success":
            return None
        decision = checkpoint.metadata.get("decision")
        return str(decision) if decision is not None else None

    def stage_views(self) -> list[StageView]:
        """Per-stage status, attempts, duration and error."""
        views = []
        for stage in STAGES:
            checkpoint = self.checkpoint(stage)
            if checkpoint is None:
                views.append(StageView(stage, "pending", self.attempts(stage), None, None))
                continue
            duration = checkpoint.metadata.get("duration_sec")
            views.append(
                StageView(
                    stage,
                    checkpoint.status,
                    max(checkpoint.attempt, self.attempts(stage)),
                    float(duration) if isinstance(duration, int | float) else None,
                    checkpoint.error,
                )
            )
        return views

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.run.run_id,
            status=self.status(),
            qa_decision=self.qa_decision(),
            next_stage=self.next_stage(),
        )


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
            run.append_event("script", "warning", 1, metadata={"warnings": plan.warnings})

    def _publish_new(self, run: Run, plan: MoviePlan) -> bool:
        """Build ``run``'s folder under a temporary name and rename it into place. False
        when a folder of that name exists already (nothing is changed then)."""
        self.root.mkdir(parents=True, exist_ok=True)
        # (a dotfile: never listed as a run, whatever happens to it)
        building = self.root / f".new-{run.run_id}-{unique.hex_token(32)}"
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

"""Retention: removing finished runs (or only their intermediate media) after a while.

``sparkle prune`` and, with ``SPARKLE_RETENTION``, the reaper (at most once an hour across
all reapers) call :func:`prune`. What it never touches:

- a run whose status is not one of the finished ones asked for (``succeeded``, ``failed``,
  ``rejected``, ``cancelled``): unfinished runs, runs awaiting review and any status a later
  version adds are left alone;
- a run whose lease is held (a worker is executing a stage of it) or that has a stage
  message on its way (a resume or a dead-letter replay sent it since ``older_than``);
- a run that finished less than ``older_than`` ago (by its state files' modification time).

Every decision is taken again under the run folder's lock (:meth:`Run.locked`) right before
anything is removed, so a run that a worker or ``sparkle resume`` changed meanwhile is seen
as it is now. A run is removed by renaming it, under that lock, to a hidden trash name in
the runs folder (``.trash-<run>-<token>``; one ``rename``, atomic: no reader ever sees half a
run) and deleting the trash afterwards. Two prunes at once cannot both take a run: the
second finds the folder gone when it gets the lock. Trash left by a prune that died is
swept by the next one.

With ``keep_final`` only the intermediate media go (frames, clips, audio, lipsync, script
drafts); the plan, history, checkpoints, asset references, QA report, ``final/`` and every
other top-level JSON or hidden file stay, and ``pruned.json`` records what was removed.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from sparkle import atomic, keys, unique
from sparkle.backends import Backend
from sparkle.retention_policy import (
    KEEP_FINAL,
    RetentionPolicy,
    parse_policy,
)
from sparkle.runstore import (
    ASSET_REFS_FILE,
    CANCELLED_FILE,
    CHECKPOINTS_DIR,
    LEGACY_LOG_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    SUMMARY_SOURCES,
    Run,
    RunStore,
)

log = logging.getLogger(__name__)

#: Prefix of the hidden folders removed runs and media are renamed to before deletion.
TRASH_PREFIX = ".trash-"

#: Seconds after which trash a prune left behind (it died mid-delete) is swept.
TRASH_GRACE_SEC = 600.0

#: Written into a run whose intermediate media were pruned: when, and what was removed.
PRUNED_FILE = "pruned.json"

#: Top-level names of a run folder kept by ``--keep final`` (besides any top-level
#: ``*.json``/``*.jsonl`` file and hidden file: small state other features may add).
KEPT_NAMES = frozenset({
    PLAN_FILE, ASSET_REFS_FILE, MANIFEST_FILE, LEGACY_LOG_FILE, CHECKPOINTS_DIR,
    CANCELLED_FILE, "qa_report.json", "final", PRUNED_FILE,
})

#: Seconds between two retention passes of the reapers (all of them together).
RETENTION_INTERVAL_SEC = 3600.0


class PruneAction(enum.StrEnum):
    """What happened to a run a prune chose."""

    #: The whole run folder was removed.
    removed = "removed"
    #: Its intermediate media were removed; plan, history and final movie kept.
    media_removed = "media_removed"
    #: A dry run: the whole folder would be removed.
    would_remove = "would_remove"
    #: A dry run: its intermediate media would be removed.
    would_remove_media = "would_remove_media"


@dataclass(frozen=True)
class PrunedRun:
    """One run a prune removed (or, in a dry run, would remove)."""

    run_id: str
    status: str
    #: When the run last changed (seconds since the epoch).
    finished_at: float
    action: PruneAction
    #: Bytes of the files removed (or that would be).
    freed_bytes: int


@dataclass(frozen=True)
class SkippedRun:
    """A run that matched when listed but was left alone when looked at under its lock."""

    run_id: str
    #: Why, in words: ``leased``, ``message on its way``, ``now running``...
    reason: str


@dataclass
class PruneReport:
    """What one prune did."""

    dry_run: bool
    pruned: list[PrunedRun] = field(default_factory=list)
    skipped: list[SkippedRun] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.pruned)

    @property
    def freed_bytes(self) -> int:
        return sum(item.freed_bytes for item in self.pruned)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "runs": self.runs,
            "freed_bytes": self.freed_bytes,
            "pruned": [{**asdict(item), "action": item.action.value} for item in self.pruned],
            "skipped": [asdict(item) for item in self.skipped],
        }


def prune(store: RunStore, policy: RetentionPolicy, *, client: redis.Redis | None = None,
          namespace: str = "sparkle", dry_run: bool = False, now: float | None = None
          ) -> PruneReport:
    """Prune the finished runs of ``store`` that ``policy`` selects.

    Parameters:
      store: the runs folder.
      policy: age, statuses, and whether to keep final results.
      client: the coordination Redis: runs it leases, or that have a stage message on its
        way, are left alone. (None: no such check, as in embedded mode, where the run
        folder's lock is what a worker holds.)
      namespace: Sparkle's Redis key prefix.
      dry_run: report what would be removed; remove nothing.
      now: the current time (seconds since the epoch), for tests.

    Returns:
      The runs removed (or that would be), the bytes freed, and the runs skipped.
    """
    now = time.time() if now is None else now
    report = PruneReport(dry_run=dry_run)
    if not dry_run:
        sweep_trash(store.root)
    for summary in store.summaries():
        if summary.status.value not in policy.statuses:
            continue
        run = Run(store.root, summary.run_id)
        finished_at = last_change(run)
        if finished_at is None or now - finished_at < policy.older_than_sec:
            continue
        try:
            outcome = _prune_one(run, policy, client, namespace, dry_run, now)
        except OSError as exc:
            log.error("prune: run %s not pruned: %s", run.run_id, exc)
            report.skipped.append(SkippedRun(run.run_id, f"error: {exc}"))
            continue
        if isinstance(outcome, SkippedRun):
            report.skipped.append(outcome)
        elif outcome is not None:
            report.pruned.append(outcome)
    return report


def last_change(run: Run) -> float | None:
    """When the run's state last changed: the newest modification time of its state files
    (plan, history, checkpoints, asset references, cancel marker). None without a plan."""
    newest: float | None = None
    for name in SUMMARY_SOURCES:
        try:
            mtime = os.stat(f"{run.dir}/{name}", follow_symlinks=False).st_mtime
        except FileNotFoundError:
            if name == PLAN_FILE:
                return None
            continue
        newest = mtime if newest is None else max(newest, mtime)
    return newest


def _prune_one(run: Run, policy: RetentionPolicy, client: redis.Redis | None, namespace: str,
               dry_run: bool, now: float) -> PrunedRun | SkippedRun | None:
    """Prune ``run`` if it still qualifies, deciding under its lock."""
    if not run.dir.is_dir():
        return None  # another prune took it
    trash: Path | None = None
    with run.locked():
        if not run.exists():
            _drop_if_only_lock(run)
            return None
        status = run.state().status().value
        if status not in policy.statuses:
            return SkippedRun(run.run_id, f"now {status}")
        finished_at = last_change(run)
        if finished_at is None or now - finished_at < policy.older_than_sec:
            return SkippedRun(run.run_id, "changed lately")
        busy = _busy(run.run_id, client, namespace, now - policy.older_than_sec)
        if busy is not None:
            return SkippedRun(run.run_id, busy)
        if policy.keep_final:
            media = removable_media(run.dir)
            if not media:
                return None  # nothing left to remove (pruned before)
            freed = sum(_tree_bytes(path) for path in media)
            if dry_run:
                return PrunedRun(run.run_id, status, finished_at,
                                 PruneAction.would_remove_media, freed)
            trash = _trash_media(run, media, now, freed)
            action = PruneAction.media_removed
        else:
            freed = _tree_bytes(run.dir)
            if dry_run:
                return PrunedRun(run.run_id, status, finished_at, PruneAction.would_remove, freed)
            trash = _trash_path(run.dir.parent, run.run_id)
            # The lock's file goes with the folder; whoever waits on it finds no run after.
            os.rename(run.dir, trash)
            atomic.fsync_dir(run.dir.parent)
            if client is not None:  # (a stale pending mark, if any, goes with the run)
                client.delete(keys.pending(namespace, run.run_id))
            action = PruneAction.removed
    _delete(trash)
    log.info("prune: run %s (%s) %s, %d bytes freed", run.run_id, status, action.value, freed)
    return PrunedRun(run.run_id, status, finished_at, action, freed)


def _busy(run_id: str, client: redis.Redis | None, namespace: str, stale_before: float
          ) -> str | None:
    """Why Redis says the run is in use: its lease is held, or a stage message was sent
    for it since ``stale_before`` (an older pending mark is of a message long lost, as of a
    run cancelled before its message was taken, then the message flushed)."""
    if client is None:
        return None
    leased, pending = client.mget([keys.lease(namespace, run_id), keys.pending(namespace, run_id)])
    if leased is not None:
        return "leased by a worker"
    if pending is not None:
        text = pending.decode() if isinstance(pending, bytes) else str(pending)
        try:
            sent = float(text.partition(" ")[2] or 0)
        except ValueError:
            sent = 0.0
        if sent >= stale_before:
            return "a stage message is on its way"
    return None


def removable_media(run_dir: Path) -> list[Path]:
    """The top-level entries of a run folder that ``--keep final`` removes: everything but
    :data:`KEPT_NAMES`, top-level JSON files and hidden files."""
    found = []
    with os.scandir(run_dir) as entries:
        for entry in entries:
            name = entry.name
            if name in KEPT_NAMES or name.startswith("."):
                continue
            if not entry.is_dir(follow_symlinks=False) and name.endswith((".json", ".jsonl")):
                continue
            found.append(Path(entry.path))
    return sorted(found)


def _trash_media(run: Run, media: Iterable[Path], now: float, freed: int) -> Path:
    """Move ``media`` into a new trash folder (renames: same file system) and record it."""
    trash = _trash_path(run.dir.parent, run.run_id)
    trash.mkdir()
    names = []
    for path in media:
        os.rename(path, trash / path.name)
        names.append(path.name)
    atomic.write_json(run.dir / PRUNED_FILE, {
        "pruned_at": now, "kept": KEEP_FINAL, "removed": names, "freed_bytes": freed,
    })
    return trash


def _trash_path(root: Path, run_id: str) -> Path:
    return root / f"{TRASH_PREFIX}{run_id}-{unique.hex_token(32)}"


def _drop_if_only_lock(run: Run) -> None:
    """Taking the lock of a run another prune removed meanwhile re-creates an empty folder
    holding only the lock file: remove it again (under that lock: nobody creates a run
    there meanwhile)."""
    with contextlib.suppress(OSError), os.scandir(run.dir) as entries:
        if [entry.name for entry in entries] == [LOCK_FILE]:
            trash = _trash_path(run.dir.parent, run.run_id)
            os.rename(run.dir, trash)
            _delete(trash)


def _tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symbolic links not followed)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return info.st_size if os.path.isfile(path) and not os.path.islink(path) else 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                file_info = os.lstat(os.path.join(folder, name))
                if not os.path.islink(os.path.join(folder, name)):
                    total += file_info.st_size
    return total


def _delete(path: Path) -> None:
    """Delete a trash folder; what another prune deleted meanwhile is no error."""

    def on_error(function: Any, name: str, info: Any) -> None:
        exc = info[1] if isinstance(info, tuple) else info
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            return
        log.warning("prune: could not delete %s (%s); the next prune tries again", name, exc)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=on_error)
    else:
        shutil.rmtree(path, onerror=on_error)


def sweep_trash(root: Path, grace_sec: float = TRASH_GRACE_SEC) -> None:
    """Delete trash folders older than ``grace_sec`` that a prune left (it died mid-way)."""
    if not root.is_dir():
        return
    now = time.time()
    with os.scandir(root) as entries:
        leftovers = [Path(entry.path) for entry in entries
                     if entry.name.startswith(TRASH_PREFIX)
                     and entry.is_dir(follow_symlinks=False)
                     and now - entry.stat(follow_symlinks=False).st_ctime > grace_sec]
    for path in leftovers:
        log.warning("prune: deleting %s, left by a prune that stopped", path.name)
        _delete(path)


def apply_retention(store: RunStore, backend: Backend, namespace: str, setting: str
                    ) -> PruneReport | None:
    """The reaper's retention pass: prune by ``SPARKLE_RETENTION`` (``setting``) unless any
    reaper did within :data:`RETENTION_INTERVAL_SEC`. Returns the report, or None when it
    was not this reaper's turn."""
    policy = parse_policy(setting)
    if not backend.client.set(keys.retention_guard(namespace), str(time.time()), nx=True,
                              px=int(RETENTION_INTERVAL_SEC * 1000)):
        return None
    report = prune(store, policy, client=backend.shared_client, namespace=namespace)
    if report.runs:
        log.warning("retention (SPARKLE_RETENTION=%s): pruned %d run(s), %d bytes freed",
                    setting, report.runs, report.freed_bytes)
    return report

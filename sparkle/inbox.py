"""The hot folder: plan files dropped into the inbox become runs.

A file is taken only when complete: at once on a close-after-write or a rename into the
folder; otherwise (polling, files moved in from elsewhere, writers that keep files open)
once its size and mtime have not changed for ``stable_seconds``. It is then claimed by an
atomic rename into ``.claimed/``, so two watchers on one folder never both take it; loaded
and validated; turned into a run (the same plan finds the same run); its first unfinished
stage is enqueued; and it is moved to ``processed/``. Invalid plans go to ``rejected/``
beside ``<name>.error.json``. While the broker is down a file stays claimed and is retried
with backoff: nothing is rejected for an infrastructure problem.

Layout::

    inbox/
      plan.json                          dropped by a user
      .claimed/<owner>-<n>_plan.json     being processed by the watcher <owner>
      .claimed/.owner-<owner>.lock       flock held while the watcher <owner> is alive
      processed/plan.json                became a run (plan-1.json, ... on a name collision)
      rejected/plan.json                 invalid; beside plan.json.error.json

Every step can be repeated (:meth:`RunStore.create` finds the run of a plan it has seen;
enqueueing twice is harmless), so a crash at any point loses nothing: on start the watcher
takes over claims whose owner's lock is free, then scans the inbox, oldest first.

Threads: the watchdog observer turns events into notices; ``inbox-stability`` checks files
waiting to be stable, rescans and restarts a dead observer; ``inbox-worker`` claims and
processes files in order; ``inbox-retry`` retries held files with backoff.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import fnmatch
import functools
import hashlib
import itertools
import json
import logging
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import dramatiq.errors
import redis.exceptions
import tenacity
from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from sparkle import atomic, metrics
from sparkle.errors import PlanError, Problem, RunConflictError
from sparkle.infrastructure import InfrastructureError
from sparkle.logs import printable
from sparkle.plans import load_plan_file
from sparkle.runstore import Run, RunStore
from sparkle.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Sub-folder holding files being processed (a dotfile, so it never looks like a plan).
CLAIMED_DIR: Final = ".claimed"
#: Sub-folder receiving plans that became runs.
PROCESSED_DIR: Final = "processed"
#: Sub-folder receiving invalid plans and their error records.
REJECTED_DIR: Final = "rejected"
#: A profile's settings file (:mod:`sparkle.profiles`): never a plan, and a sub-folder
#: holding one is a hot folder of its own, never taken as a file of this one.
PROFILE_FILE: Final = "profile.toml"
#: Appended to a rejected file's name to name its error record.
ERROR_SUFFIX: Final = ".error.json"

#: Name endings of files still being written (downloads, rsync, editors); taken once renamed.
TEMP_SUFFIXES: Final = (".part", ".tmp", ".crdownload")
#: Name beginnings of temporary files (office lock files); taken once renamed.
TEMP_PREFIXES: Final = ("~$",)

#: Seconds between directory snapshots in polling mode (``poll=True``).
POLL_INTERVAL_SEC: Final = 0.1
#: Seconds between full rescans of the inbox and ``.claimed/``: the safety net for lost
#: events, and how the claims of a watcher that died are taken over while this one runs.
RESCAN_INTERVAL_SEC: Final = 30.0
#: Seconds between checks that the folder observer is still alive.
HEALTH_CHECK_SEC: Final = 1.0
#: Seconds before the first retry of a file held by a broker outage (then doubling, jittered).
RETRY_INITIAL_SEC: Final = 0.5
#: Longest wait between retries of a held file, in seconds: the catch-up delay once the
#: broker is back.
RETRY_MAX_SEC: Final = 5.0
#: Seconds :meth:`Inbox.stop` waits for each thread.
JOIN_TIMEOUT_SEC: Final = 10.0

#: Errors of ``enqueue`` meaning "the broker cannot take it now": the file is held and
#: retried, never rejected. Besides a broker out of reach, the replies of one that will
#: take it later (:data:`PASSING_REPLIES`).
BROKER_ERRORS: Final[tuple[type[BaseException], ...]] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica, during a failover
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.OutOfMemoryError,
    dramatiq.errors.BrokerConnectionError,  # dramatiq < 2.2 called it ConnectionError
    OSError,
)

#: Error replies of a Redis that will take the message later, by their first word: busy
#: with a script, full (maxmemory), refusing writes after a failed save, no replicas yet.
#: Other replies (WRONGTYPE, NOPERM, ...) will not pass by waiting: such a file fails
#: (logged with its traceback) and stays claimed until the next start.
PASSING_REPLIES: Final = frozenset(
    {"BUSY", "OOM", "MISCONF", "NOREPLICAS", "LOADING", "TRYAGAIN", "MASTERDOWN", "READONLY",
     "CLUSTERDOWN"}
)

#: An empty file is never taken: a shell's ``generate > inbox/plan.json`` creates the file
#: at once and fills it when the generator is done, however long that takes. One still
#: empty after this many seconds is reported once in the log and left in the inbox.
EMPTY_WARN_SEC: Final = 60.0

#: Longest file name, in bytes, kept as it is when claimed. A longer one is shortened
#: (its start, ``~``, 8 hex digits of its hash, its extension) so that the claim, its
#: place in processed/ or rejected/ with a ``-N`` suffix, and the error record's temporary
#: name all stay within the 255 bytes a file name may have.
MAX_KEPT_NAME_BYTES: Final = 160

#: ``os.link`` errors meaning "no hard link here" (a folder, a filesystem without links).
_LINK_UNSUPPORTED: Final = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS}
)

#: Watchdog events the inbox reacts to (opened, closed-without-write and folder
#: modifications are dropped before they reach the handler).
_EVENT_TYPES: Final = [
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]

_CLAIM_RE: Final = re.compile(r"(?P<owner>[0-9a-f]{12})-(?P<seq>[0-9]+)_(?P<name>.+)", re.S)
_OWNER_LOCK_RE: Final = re.compile(r"\.owner-(?P<owner>[0-9a-f]{12})\.lock(\.tmp)?")

#: Receives each new or found run and enqueues its first unfinished stage.
Enqueue = Callable[[Run], object]

#: How a file came to the inbox's attention: a close or rename (complete now), a write or a
#: creation (complete once stable), or a scan (complete once stable; an existing wait is
#: not restarted).
_Notice = Literal["closed", "changed", "found"]


# -- names ---------------------------------------------------------------------------------


def is_plan_name(name: str, glob: str = "*.json") -> bool:
    """Whether a file named ``name`` in the inbox is a plan to take.

    Dotfiles, temporary names (``*.part``, ``*.tmp``, ``*.crdownload``, ``~$*``) and the
    inbox's own sub-folders are never taken; other names must match ``glob``, ignoring case.
    """
    if not name or name.startswith(".") or name.startswith(TEMP_PREFIXES):
        return False
    lower = name.lower()
    if lower.endswith(TEMP_SUFFIXES) or name in (PROCESSED_DIR, REJECTED_DIR, PROFILE_FILE):
        return False
    return fnmatch.fnmatchcase(lower, glob.lower())


def fitted_name(name: str) -> str:
    """``name``, or a shorter name standing for it when it is longer than
    :data:`MAX_KEPT_NAME_BYTES` (see there); the extension is kept."""
    raw = os.fsencode(name)
    if len(raw) <= MAX_KEPT_NAME_BYTES:
        return name
    dot = raw.rfind(b".")
    suffix = raw[dot:] if dot > 0 and len(raw) - dot <= 16 else b""
    digest = hashlib.sha256(raw).hexdigest()[:8]
    room = MAX_KEPT_NAME_BYTES - len(suffix) - len(digest) - 1
    # (whole characters only, and never a dotfile, which the inbox's folders hide)
    stem = raw[:room].decode("utf-8", "ignore").lstrip(".")
    return f"{stem}~{digest}{os.fsdecode(suffix)}"


def claim_name(owner: str, seq: int, name: str) -> str:
    """The name of ``name`` once claimed by watcher ``owner`` (``seq`` keeps it unique)."""
    return f"{owner}-{seq}_{name}"


def parse_claim_name(claimed: str) -> tuple[str | None, str]:
    """``(owner, original name)`` of a file in ``.claimed/``; owner is None when unknown."""
    match = _CLAIM_RE.fullmatch(claimed)
    if match is None:
        return None, claimed
    return match["owner"], match["name"]


def candidate_names(name: str) -> Iterator[str]:
    """``name``, then ``stem-1.ext``, ``stem-2.ext``, ...: names to try on a collision."""
    yield name
    dot = name.rfind(".")
    stem, suffix = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    for n in itertools.count(1):
        yield f"{stem}-{n}{suffix}"


#: What may stand at the end of JSON cut short, after the position its parser stopped at: a
#: literal or a number begun and not finished (nothing at all, when it stopped at the end).
_PARTIAL_TOKEN: Final = re.compile(r"t(r(ue?)?)?|f(a(l(se?)?)?)?|n(u(ll?)?)?|[-+.0-9eE]*")


def json_ends_early(path: Path, max_bytes: int) -> bool:
    """Whether the file at ``path`` holds the beginning of a JSON text that stops before its
    end (a writer still at work), rather than complete or broken JSON.

    False for anything that is not a regular file of at most ``max_bytes`` that can be read:
    those are taken and judged as they are.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= max_bytes:
            return False
        data = os.read(fd, max_bytes + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            return False
        text = data[: exc.start].decode("utf-8")  # (a character cut in two at the end)
    if not text.strip():
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unterminated string"):
            return True
        return _PARTIAL_TOKEN.fullmatch(text[exc.pos:].strip()) is not None
    except (RecursionError, ValueError):
        return False
    return False


# -- state ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InboxStats:
    """Counters since the inbox was created, for metrics and tests."""

    #: Files that became a run (or found theirs) and were moved to ``processed/``.
    processed: int = 0
    #: Of ``processed``: runs created by this inbox.
    created: int = 0
    #: Of ``processed``: runs that existed already (same plan dropped again, or a restart).
    resumed: int = 0
    #: Files moved to ``rejected/``.
    rejected: int = 0
    #: Times a file was held back by an infrastructure error (each failed attempt counts).
    retried: int = 0
    #: Unexpected errors; such a file stays in ``.claimed/`` until the next start.
    failed: int = 0
    #: Files in ``.claimed/`` now, waiting for the broker.
    held: int = 0
    #: Files noticed and not finished: waiting to be stable, queued or being processed.
    pending: int = 0


@dataclasses.dataclass
class _Candidate:
    """A file waiting to be stable: its last seen size and mtime, since when (monotonic)."""

    since: float
    due: float
    size: int = -1
    mtime_ns: int = -1
    #: Empty for longer than EMPTY_WARN_SEC: waits for a write, not for work.
    parked: bool = False
    #: Reported as empty in the log (once per file).
    warned: bool = False


@dataclasses.dataclass
class _Held:
    """A claimed file waiting for the broker. ``created``: this inbox created its run."""

    claimed: Path
    created: bool


class _InfraError(Exception):
    """Processing stopped for an infrastructure problem; the file stays claimed."""

    def __init__(self, cause: BaseException | None, created: bool) -> None:
        super().__init__(
            f"{type(cause).__name__}: {cause}" if cause else "waiting behind held files"
        )
        self.cause = cause
        self.created = created


class _Stopping(Exception):
    """Raised out of a backoff sleep when the inbox stops."""


class _EventHandler(FileSystemEventHandler):
    """Hands watchdog events to the inbox; an exception never reaches the observer."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__()
        self._inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._inbox.handle_event(event)
        except Exception:
            log.exception("inbox: could not handle %r; the next scan picks the file up", event)


# -- the inbox -----------------------------------------------------------------------------


class Inbox:
    """Watches a hot folder and turns the plan files dropped into it into runs.

    Parameters:
      inbox_dir: the folder to watch; it and its sub-folders are created when missing.
      store: where runs are created (:meth:`RunStore.create` finds the run of a known plan).
      enqueue: called with each new or found run to enqueue its first unfinished stage
        (``sparkle.engine.kick`` in production); it may be called from two threads at once.
        Raising one of :data:`BROKER_ERRORS` holds the file and retries it with backoff.
      poll: watch with watchdog's ``PollingObserver`` (network shares) instead of inotify.
      stable_seconds: a file without a close or rename event is taken once its size and
        mtime are unchanged this long (default ``SPARKLE_STABLE_SECONDS``).
      glob: names to take, ignoring case (default ``SPARKLE_INBOX_GLOB``, ``*.json``).
      max_plan_bytes: larger files are rejected unread (default ``SPARKLE_MAX_PLAN_BYTES``).
      poll_interval, rescan_interval, retry_initial, retry_max: seconds; see the constants
        ``POLL_INTERVAL_SEC``, ``RESCAN_INTERVAL_SEC``, ``RETRY_INITIAL_SEC``, ``RETRY_MAX_SEC``.
      metadata_defaults: metadata each plan gets where it sets none of its own (the folder
        is an inbox profile's, :mod:`sparkle.profiles`).

    Run it with :meth:`start` and :meth:`stop` (or :meth:`run_forever`), or process the
    folder once in the calling thread with :meth:`scan` then :meth:`process_pending`.
    """

    #: Called with the file's name, its run and whether the run was created, once a file
    #: became a run and moved to ``processed/`` (``sparkle serve`` prints a line).
    on_processed: Callable[[str, Run, bool], object] | None = None

    def __init__(
        self,
        inbox_dir: Path,
        store: RunStore,
        enqueue: Enqueue,
        *,
        poll: bool = False,
        stable_seconds: float | None = None,
        glob: str | None = None,
        max_plan_bytes: int | None = None,
        poll_interval: float = POLL_INTERVAL_SEC,
        rescan_interval: float = RESCAN_INTERVAL_SEC,
        retry_initial: float = RETRY_INITIAL_SEC,
        retry_max: float = RETRY_MAX_SEC,
        metadata_defaults: Mapping[str, str] | None = None,
    ) -> None:
        if stable_seconds is None or glob is None or max_plan_bytes is None:
            settings = load_settings()
            stable_seconds = settings.stable_seconds if stable_seconds is None else stable_seconds
            glob = settings.inbox_glob if glob is None else glob
            max_plan_bytes = settings.max_plan_bytes if max_plan_bytes is None else max_plan_bytes
        if stable_seconds < 0 or max_plan_bytes <= 0 or not glob:
            raise ValueError("stable_seconds must be >= 0, max_plan_bytes > 0, glob non-empty")
        self.dir = Path(os.path.realpath(inbox_dir))
        self.claimed_dir = self.dir / CLAIMED_DIR
        self.processed_dir = self.dir / PROCESSED_DIR
        self.rejected_dir = self.dir / REJECTED_DIR
        self.store = store
        self.enqueue = enqueue
        self.poll = poll
        self.stable_seconds = float(stable_seconds)
        self.glob = glob
        self.max_plan_bytes = max_plan_bytes
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        #: Metadata given to each plan where it sets none (an inbox profile's settings).
        self.metadata_defaults = dict(metadata_defaults or {})

        # One condition guards all the state below and wakes every thread on a change.
        self._cond = threading.Condition()
        self._watching: dict[str, _Candidate] = {}
        self._watch_changed = False
        self._ready: collections.deque[Path] = collections.deque()
        self._queued: set[str] = set()
        #: Names queued by the stability check: still for ``stable_seconds`` when queued.
        self._settled: set[str] = set()
        self._active = 0
        self._held: collections.deque[_Held] = collections.deque()
        self._counts: collections.Counter[str] = collections.Counter()

        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._observer: BaseObserver | None = None
        self._observer_guard = threading.Lock()
        self._watched_id: tuple[int, int] | None = None
        self._owner: str | None = None
        self._owner_fd: int | None = None
        self._owner_guard = threading.Lock()
        self._seq = itertools.count(1)

    @classmethod
    def from_settings(
        cls, enqueue: Enqueue, *, settings: Settings | None = None, poll: bool = False
    ) -> Inbox:
        """An inbox on ``settings.inbox_dir`` creating runs in ``settings.runs_dir``."""
        s = settings or load_settings()
        return cls(
            s.inbox_dir,
            RunStore(s.runs_dir),
            enqueue,
            poll=poll,
            stable_seconds=s.stable_seconds,
            glob=s.inbox_glob,
            max_plan_bytes=s.max_plan_bytes,
        )

    def __repr__(self) -> str:
        return f"Inbox({str(self.dir)!r}, poll={self.poll})"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Recreate the sub-folders, start watching, take over claims left by a crash, scan
        the inbox (oldest first) and start the stability, worker and retry threads."""
        if self._threads:
            raise RuntimeError(f"{self!r} is already running")
        self._stopping.clear()
        self._prepare()
        # The observer starts before the scan so a file arriving during the scan is seen;
        # a file both scanned and notified is claimed once (the second rename finds nothing).
        with self._observer_guard:
            self._observer = self._start_observer()
        self.scan()
        for name, loop in (
            ("stability", self._stability_loop),
            ("worker", self._worker_loop),
            ("retry", self._retry_loop),
        ):
            thread = threading.Thread(target=loop, name=f"inbox-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "inbox: watching %s (%s; %s files taken when closed, renamed, or stable for %.2f s)",
            self.dir,
            "polling" if self.poll else "inotify",
            self.glob,
            self.stable_seconds,
        )

    def stop(self, timeout: float = JOIN_TIMEOUT_SEC) -> None:
        """Stop watching and join the threads; the file in work is finished first.

        Files not finished stay in the inbox or in ``.claimed/``; the next start (or another
        watcher's rescan) takes them. Safe to call when not started, and more than once.
        """
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        with self._observer_guard:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout)
        for thread in self._threads:
            thread.join(timeout)
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        self._threads = []
        if stuck:
            # Keep the owner lock: releasing it would let another watcher take over a claim
            # this process is still working on.
            log.warning("inbox: threads still busy after %.0f s: %s", timeout, ", ".join(stuck))
            return
        with self._cond:
            self._watching.clear()
            self._ready.clear()
            self._queued.clear()
            self._held.clear()
            self._cond.notify_all()
        self._release_owner()

    def run_forever(self, stop_event: threading.Event) -> None:
        """Start, block until ``stop_event`` is set (by a signal handler, say), then stop."""
        self.start()
        try:
            while not stop_event.wait(HEALTH_CHECK_SEC):
                pass
        finally:
            self.stop()

    # -- synchronous use and tests -------------------------------------------------------

    def scan(self) -> int:
        """Queue the claims of watchers that are gone, then put every plan file in the inbox
        under the stability watch, oldest first. Returns how many files were found."""
        self._prepare()
        found = self._take_over_orphans()
        entries: list[tuple[int, str]] = []
        with os.scandir(self.dir) as listing:
            for entry in listing:
                if is_plan_name(entry.name, self.glob):
                    with contextlib.suppress(FileNotFoundError):
                        mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                        entries.append((mtime, entry.name))
        for _, name in sorted(entries):
            self._notice(name, "found")
        return found + len(entries)

    def process_pending(self, timeout: float | None = None) -> bool:
        """Process every file noticed so far.

        While the threads run this only waits until idle. Otherwise the work is done in the
        calling thread: wait for files to be stable, process them, try held files once.

        Returns:
          True when nothing is left (no file waiting or held for the broker; an empty file
          left waiting for its writer does not count).
        """
        if self._threads:
            return self.wait_idle(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_watching()
            while True:
                with self._cond:
                    if not self._ready:
                        break
                    path = self._take_ready_locked()
                self._run_job(path)
            self._retry_held_once()
            with self._cond:
                next_due = min((c.due for c in self._waiting_locked()), default=None)
                if next_due is None:
                    return not self._held
            if deadline is not None and time.monotonic() >= deadline:
                return False
            wake = next_due if deadline is None else min(next_due, deadline)
            time.sleep(max(0.0, wake - time.monotonic()))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no file is waiting, queued, in work or held. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._idle_locked():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def stats(self) -> InboxStats:
        """A snapshot of the counters."""
        with self._cond:
            pending = len(self._waiting_locked()) + len(self._ready) + self._active
            return InboxStats(
                **{
                    f.name: self._counts[f.name]
                    for f in dataclasses.fields(InboxStats)
                    if f.name not in ("held", "pending")
                },
                held=len(self._held),
                pending=pending,
            )

    @property
    def processed(self) -> int:
        return self.stats().processed

    @property
    def rejected(self) -> int:
        return self.stats().rejected

    @property
    def retried(self) -> int:
        return self.stats().retried

    @property
    def failed(self) -> int:
        return self.stats().failed

    # -- events and the stability watch --------------------------------------------------

    def handle_event(self, event: FileSystemEvent) -> None:
        """React to one watchdog event (called on the observer's thread)."""
        folder, name = os.path.split(os.fsdecode(event.src_path))
        in_inbox = folder == str(self.dir)
        if event.event_type == EVENT_TYPE_MOVED:
            if in_inbox:
                self._forget(name)
            dest_folder, dest_name = os.path.split(os.fsdecode(event.dest_path))
            if dest_folder == str(self.dir):
                # A rename into the folder publishes a complete file (x.part -> x.json).
                self._notice(dest_name, "closed")
        elif not in_inbox:
            return
        elif event.event_type == EVENT_TYPE_CLOSED:
            self._notice(name, "closed")
        elif event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED):
            self._notice(name, "changed")
        elif event.event_type == EVENT_TYPE_DELETED:
            self._forget(name)

    def _notice(self, name: str, how: _Notice) -> None:
        if not is_plan_name(name, self.glob):
            return
        if how == "closed":
            with contextlib.suppress(OSError):
                info = os.lstat(self.dir / name)
                if stat.S_ISREG(info.st_mode) and info.st_size == 0:
                    how = "changed"  # closed empty: touched before being written, probably
        with self._cond:
            if name in self._queued:
                return
            now = time.monotonic()
            candidate = self._watching.get(name)
            if how == "closed":
                self._watching.pop(name, None)
                self._push_ready_locked(self.dir / name)
            elif candidate is None:
                self._watching[name] = _Candidate(since=now, due=now)
                self._watch_changed = True
            elif how == "changed":
                candidate.since = now  # a write: the stability window starts again
                # (and is checked after it, not later: an empty file waited longer)
                candidate.due = min(candidate.due, now + self.stable_seconds)
                candidate.parked = False
            elif candidate.parked:
                candidate.due = now  # found again (a rescan): look at it now
                self._watch_changed = True
            self._cond.notify_all()

    def _forget(self, name: str) -> None:
        with self._cond:
            self._settled.discard(name)
            if self._watching.pop(name, None) is not None:
                self._cond.notify_all()

    def _push_ready_locked(self, path: Path) -> None:
        if path.parent == self.dir:
            self._queued.add(path.name)
        self._ready.append(path)

    def _take_ready_locked(self) -> Path:
        path = self._ready.popleft()
        if path.parent == self.dir:
            self._queued.discard(path.name)
        self._active += 1
        return path

    def _check_watching(self) -> float | None:
        """Stat the files due for a check and queue the stable ones.

        Returns:
          When the next check is due (``time.monotonic()``), or None when none is waiting.
        """
        now = time.monotonic()
        with self._cond:
            self._watch_changed = False
            due = [(name, c) for name, c in self._watching.items() if c.due <= now]
        seen: list[tuple[str, _Candidate, os.stat_result | None]] = []
        for name, candidate in due:
            try:
                info: os.stat_result | None = os.lstat(self.dir / name)
            except FileNotFoundError:
                info = None  # removed, or renamed (the rename has its own event)
            except OSError as exc:
                log.warning("inbox: cannot stat %s (%s); the next scan retries", printable(name),
                            exc)
                info = None
            seen.append((name, candidate, info))
        now = time.monotonic()
        still_empty: list[str] = []
        with self._cond:
            for name, candidate, info in seen:
                if self._watching.get(name) is not candidate:
                    continue  # taken or replaced while we looked
                if info is None or (stat.S_ISDIR(info.st_mode)
                                    and os.path.isfile(self.dir / name / PROFILE_FILE)):
                    del self._watching[name]  # (gone, or an inbox profile's folder)
                    continue
                signature = (info.st_size, info.st_mtime_ns)
                if not stat.S_ISREG(info.st_mode):
                    stable = True  # links, folders, FIFOs never complete: reject them now
                elif signature != (candidate.size, candidate.mtime_ns):
                    candidate.size, candidate.mtime_ns = signature
                    candidate.since = now
                    candidate.parked = False
                    stable = self.stable_seconds <= 0
                else:
                    stable = now - candidate.since >= self.stable_seconds
                if stable and info.st_size == 0 and stat.S_ISREG(info.st_mode):
                    # Never taken: its writer may not have begun (see EMPTY_WARN_SEC).
                    if not candidate.parked and now - candidate.since >= EMPTY_WARN_SEC:
                        candidate.parked = True
                        if not candidate.warned:
                            candidate.warned = True
                            still_empty.append(name)
                    candidate.due = (now + self.rescan_interval if candidate.parked
                                     else candidate.since + EMPTY_WARN_SEC)
                    continue
                if stable:
                    del self._watching[name]
                    self._settled.add(name)
                    self._push_ready_locked(self.dir / name)
                else:
                    candidate.due = candidate.since + self.stable_seconds
            if seen:
                self._cond.notify_all()
            next_due = min((c.due for c in self._watching.values()), default=None)
        for name in still_empty:
            log.warning("inbox: %s is still empty after %.0f s; it stays in the inbox until "
                        "something is written to it (remove it if it was dropped by mistake)",
                        printable(name), EMPTY_WARN_SEC)
        return next_due

    def _waiting_locked(self) -> list[_Candidate]:
        """The files waiting to be stable (not those parked empty: they wait for a write)."""
        return [c for c in self._watching.values() if not c.parked]

    def _idle_locked(self) -> bool:
        return not (self._waiting_locked() or self._ready or self._active or self._held)

    # -- threads -------------------------------------------------------------------------

    def _stability_loop(self) -> None:
        next_rescan = time.monotonic() + self.rescan_interval
        next_health = time.monotonic() + HEALTH_CHECK_SEC
        while not self._stopping.is_set():
            next_due: float | None = None
            try:
                next_due = self._check_watching()
                now = time.monotonic()
                if now >= next_health:
                    next_health = now + HEALTH_CHECK_SEC
                    self._check_observer()
                if now >= next_rescan:
                    next_rescan = now + self.rescan_interval
                    self.scan()
            except Exception:
                log.exception("inbox: stability check or rescan failed; continuing")
            wake = min(t for t in (next_due, next_rescan, next_health) if t is not None)
            with self._cond:
                if not self._watch_changed and not self._stopping.is_set():
                    self._cond.wait(max(0.0, wake - time.monotonic()))

    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stopping.is_set():
                    self._cond.wait()
                if self._stopping.is_set():
                    return
                path = self._take_ready_locked()
            self._run_job(path)

    def _retry_loop(self) -> None:
        while True:
            with self._cond:
                while not self._held and not self._stopping.is_set():
                    self._cond.wait()
                if self._stopping.is_set():
                    return
                item = self._held[0]
            try:
                self._retry_until_done(item)
            except _Stopping:
                return
            except Exception:
                self._count("failed")
                log.exception(
                    "inbox: %s failed unexpectedly; it stays in %s for the next start",
                    printable(parse_claim_name(item.claimed.name)[1]),
                    self.claimed_dir,
                )
            with self._cond:
                self._held.popleft()
                self._cond.notify_all()

    def _start_observer(self) -> BaseObserver:
        observer: BaseObserver = (
            PollingObserver(timeout=self.poll_interval) if self.poll else Observer()
        )
        # With inotify the watch is recursive so that a claim (a rename into .claimed/) is
        # a paired move: an unpaired IN_MOVED_FROM makes watchdog hold back every later
        # event by 0.5 s. Events from sub-folders are ignored. Polling stays flat, so the
        # snapshots never list processed/.
        observer.schedule(
            _EventHandler(self), str(self.dir), recursive=not self.poll, event_filter=_EVENT_TYPES
        )
        observer.start()
        self._watched_id = _folder_id(self.dir)
        return observer

    def _check_observer(self) -> None:
        """Restart the observer when it died (the folder was removed, say), then rescan."""
        with self._observer_guard:
            observer = self._observer
            if observer is None or self._stopping.is_set():
                return
            # Our open owner lock pins the folder, so its removal sends no IN_DELETE_SELF and
            # the emitter lives on, watching nothing: compare the folder's identity too.
            if (
                observer.is_alive()
                and all(e.is_alive() for e in list(observer.emitters))
                and _folder_id(self.dir) == self._watched_id
            ):
                return
            log.error(
                "inbox: the watch on %s stopped; recreating the folder and restarting", self.dir
            )
            observer.stop()
            observer.join(JOIN_TIMEOUT_SEC)
            self._prepare()
            self._observer = self._start_observer()
        self.scan()

    # -- one file ------------------------------------------------------------------------

    def _run_job(self, path: Path) -> None:
        try:
            self._handle(path)
        except Exception:
            # (the inbox worker thread must outlive any file: it stays where it is, in the
            # inbox or claimed, for the next scan or start)
            self._count("failed")
            log.exception("inbox: %s could not be taken; it stays in place",
                          printable(path.name))
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def _handle(self, path: Path) -> None:
        """Claim ``path`` (unless it is a claim already) and process it. Never raises.

        A file closed with JSON that ends early is watched instead, until it has been still
        for ``stable_seconds``: a writer that reopens the file for each chunk (``>>`` in a
        loop) closes it between chunks, and taking it then would cut the plan into pieces.
        """
        if path.parent == self.dir:
            with self._cond:
                settled = path.name in self._settled
                self._settled.discard(path.name)
            if not settled and json_ends_early(path, self.max_plan_bytes):
                log.debug("inbox: %s ends early; waiting until it is still for %.2f s",
                          printable(path.name), self.stable_seconds)
                self._notice(path.name, "changed")
                return
        claimed = path if path.parent == self.claimed_dir else self._claim(path)
        if claimed is None:
            return
        with self._cond:
            behind_held = bool(self._held)
        try:
            # While files are held for the broker, later files are validated and get their
            # run, then queue up behind them: order is kept and the broker is not hammered.
            self._process(claimed, created_before=False, skip_enqueue=behind_held)
        except _InfraError as exc:
            self._hold(claimed, exc)
        except Exception:
            self._count("failed")
            log.exception(
                "inbox: %s failed unexpectedly; it stays in %s for the next start",
                printable(parse_claim_name(claimed.name)[1]),
                self.claimed_dir,
            )

    def _claim(self, path: Path) -> Path | None:
        """Rename ``path`` into ``.claimed/``; None when another watcher took it first."""
        kept = fitted_name(path.name)
        if kept != path.name:
            log.warning("inbox: %s: the name is longer than %d bytes; it is kept as %s",
                        printable(path.name), MAX_KEPT_NAME_BYTES, printable(kept))
        target = self.claimed_dir / claim_name(self._owner_id, next(self._seq), kept)
        for _ in range(2):
            try:
                os.rename(path, target)
                return target
            except FileNotFoundError:
                if not os.path.lexists(path):
                    return None  # taken by another watcher, or removed
                self._prepare()  # .claimed/ itself was removed
            except OSError as exc:
                log.warning(
                    "inbox: cannot claim %s (%s); it stays in the inbox until the next scan",
                    printable(path.name),
                    exc,
                )
                return None
        return None

    def _process(self, claimed: Path, *, created_before: bool, skip_enqueue: bool) -> None:
        """Load, create or find the run, enqueue, move to processed/ (or reject).

        Raises:
          _InfraError: the broker or the disk failed; the file stays claimed.
        """
        name = parse_claim_name(claimed.name)[1]
        received_at = _received_at(claimed)
        try:
            plan = load_plan_file(claimed, self.max_plan_bytes, self.metadata_defaults)
        except PlanError as exc:
            self._reject(claimed, name, exc.problems, received_at)
            return
        try:
            run, created = self.store.create(plan)
        except RunConflictError as exc:
            where = "metadata.run_id" if "run_id" in plan.metadata else ""
            self._reject(claimed, name, [Problem(where, str(exc))], received_at)
            return
        except (OSError, InfrastructureError) as exc:  # (a full or read-only runs folder)
            raise _InfraError(exc, created_before) from exc
        created = created or created_before
        if skip_enqueue:
            raise _InfraError(None, created)
        try:
            self.enqueue(run)
        except BROKER_ERRORS as exc:
            raise _InfraError(exc, created) from exc
        except redis.exceptions.ResponseError as exc:
            if str(exc).split(" ", 1)[0] not in PASSING_REPLIES:
                raise
            raise _InfraError(exc, created) from exc
        try:
            self._place(claimed, self.processed_dir, name)
        except OSError as exc:
            raise _InfraError(exc, created) from exc
        self._count("processed", "created" if created else "resumed")
        log.info("inbox: %s -> run %s (%s)", printable(name), run.run_id,
                 "created" if created else "resumed")
        if self.on_processed is not None:
            self.on_processed(name, run, created)

    def _reject(self, claimed: Path, name: str, problems: list[Problem], received_at: str) -> None:
        record = {
            "file": name,
            "received_at": received_at,
            "errors": [{"path": p.path, "message": p.message} for p in problems],
        }

        def write_record(dest: Path) -> None:
            atomic.write_json(dest.with_name(dest.name + ERROR_SUFFIX), record)

        try:
            dest = self._place(claimed, self.rejected_dir, name, before_release=write_record,
                               record_suffix=ERROR_SUFFIX)
        except OSError as exc:
            raise _InfraError(exc, created=False) from exc
        self._count("rejected")
        first = str(problems[0]) if problems else "invalid plan"
        more = f" (+{len(problems) - 1} more in {dest.name}{ERROR_SUFFIX})" if problems[1:] else ""
        log.warning("inbox: %s rejected: %s%s", printable(name), printable(first),
                    printable(more))

    def _place(
        self,
        claimed: Path,
        folder: Path,
        name: str,
        before_release: Callable[[Path], None] | None = None,
        record_suffix: str | None = None,
    ) -> Path:
        """Move ``claimed`` into ``folder`` as ``name`` (``name-1``, ... when taken).

        A hard link reserves the name without ever replacing a file, then the claim is
        removed; ``before_release`` runs in between. A link to the same file found there is
        ours from before a crash and is reused, so a retry never makes a second copy. A
        symlink is moved as itself (never followed). Where hard links cannot be made (a
        folder, a filesystem without them, another user's file under
        ``protected_hardlinks``), a placeholder created with ``O_EXCL`` reserves the name
        instead and the claim is renamed over it. With ``record_suffix``, a name is taken
        only if the name with that suffix (its error record's) is free as well.
        """
        folder.mkdir(parents=True, exist_ok=True)
        names = candidate_names(name)
        while True:
            dest = folder / next(names)
            if record_suffix is not None and os.path.lexists(
                    dest.with_name(dest.name + record_suffix)) and not os.path.lexists(dest):
                continue  # (the record's name is another file's: never write over it)
            try:
                os.link(claimed, dest, follow_symlinks=False)
            except FileExistsError:
                if not _same_file(claimed, dest):
                    continue
            except OSError as exc:
                if exc.errno not in _LINK_UNSUPPORTED:
                    raise
                if not _reserve(claimed, dest):
                    continue
                if before_release is not None:
                    before_release(dest)
                os.rename(claimed, dest)
                return dest
            if before_release is not None:
                before_release(dest)
            os.unlink(claimed)
            return dest

    def _hold(self, claimed: Path, exc: _InfraError) -> None:
        with self._cond:
            self._held.append(_Held(claimed, exc.created))
            self._counts["retried"] += 1
            self._cond.notify_all()
        name = parse_claim_name(claimed.name)[1]
        if exc.cause is None:
            log.info("inbox: %s held behind files waiting for the broker", printable(name))
        else:
            log.warning("inbox: %s held in %s (%s); retrying with backoff", printable(name),
                        CLAIMED_DIR, exc)

    def _retry_until_done(self, item: _Held) -> None:
        """Process a held file, retrying infrastructure errors with backoff until it is done.

        Raises:
          _Stopping: the inbox stops; the file stays claimed.
        """
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_InfraError),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.retry_initial, max=self.retry_max, jitter=self.retry_initial
            ),
            sleep=self._backoff_sleep,
            before_sleep=functools.partial(self._log_retry, item),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    self._process(item.claimed, created_before=item.created, skip_enqueue=False)
                except _InfraError as exc:
                    item.created = exc.created
                    raise

    def _retry_held_once(self) -> None:
        """Without threads: try each held file once, stopping at the first that fails."""
        with self._cond:
            items = list(self._held)
        for item in items:
            try:
                self._process(item.claimed, created_before=item.created, skip_enqueue=False)
            except _InfraError as exc:
                item.created = exc.created
                self._count("retried")
                return
            except Exception:
                self._count("failed")
                log.exception(
                    "inbox: %s failed unexpectedly; it stays in %s",
                    printable(parse_claim_name(item.claimed.name)[1]),
                    self.claimed_dir,
                )
            with self._cond:
                self._held.remove(item)
                self._cond.notify_all()

    def _backoff_sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stopping

    def _log_retry(self, item: _Held, state: tenacity.RetryCallState) -> None:
        self._count("retried")
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "inbox: %s still held (attempt %d: %s); next try in %.1f s",
            printable(parse_claim_name(item.claimed.name)[1]),
            state.attempt_number,
            error,
            wait,
        )

    def _count(self, *names: str) -> None:
        with self._cond:
            for name in names:
                self._counts[name] += 1
        for name in names:
            metrics.inbox_outcome(name)

    # -- claims and owners ---------------------------------------------------------------

    @property
    def _owner_id(self) -> str:
        if self._owner is None:
            self._prepare()
        assert self._owner is not None
        return self._owner

    def _owner_lock_path(self, owner: str) -> Path:
        return self.claimed_dir / f".owner-{owner}.lock"

    def _prepare(self) -> None:
        """Create missing sub-folders and hold this watcher's owner lock."""
        for folder in (self.dir, self.claimed_dir, self.processed_dir, self.rejected_dir):
            folder.mkdir(parents=True, exist_ok=True)
        with self._owner_guard:
            if self._owner is None:
                self._owner = uuid.uuid4().hex[:12]
            path = self._owner_lock_path(self._owner)
            if self._owner_fd is not None:
                if os.path.exists(path):
                    return
                os.close(self._owner_fd)  # our lock file was removed: make a new one
            # Locked under a temporary name and then renamed, so no one ever sees it unlocked
            # (which would mean "dead" and let them take over our claims).
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, path)
            self._owner_fd = fd

    def _release_owner(self) -> None:
        with self._owner_guard:
            if self._owner_fd is not None and self._owner is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._owner_lock_path(self._owner))
                os.close(self._owner_fd)
            self._owner_fd = None
            self._owner = None

    def _owner_alive(self, owner: str) -> bool:
        """Whether watcher ``owner`` holds its lock (a missing lock file means gone)."""
        path = self._owner_lock_path(owner)
        try:
            fd = _open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return False
        except _NotALock:
            log.warning("inbox: %s is not a lock file (a link or other); watcher %s is taken "
                        "for gone", path, owner)
            return False
        except BlockingIOError:
            return True
        except OSError as exc:
            log.warning("inbox: cannot check watcher %s's lock %s (%s); taking it for alive",
                        owner, path, exc)
            return True
        return False

    def _take_over_orphans(self) -> int:
        """Queue claims whose watcher is gone, oldest first, renaming each to our owner id
        (an atomic rename again: of two watchers taking over, one wins)."""
        me = self._owner_id
        orphans: list[tuple[int, str, str | None, str]] = []
        with os.scandir(self.claimed_dir) as listing:
            for entry in listing:
                if entry.name.startswith("."):
                    continue
                owner, name = parse_claim_name(entry.name)
                if owner == me:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                    orphans.append((mtime, entry.name, owner, name))
        alive: dict[str, bool] = {}
        taken = 0
        for _, claimed, owner, name in sorted(orphans):
            if owner is not None:
                if owner not in alive:
                    alive[owner] = self._owner_alive(owner)
                if alive[owner]:
                    continue
            # (fitted: a claim left by an older version may bear a name too long to place)
            target = self.claimed_dir / claim_name(me, next(self._seq), fitted_name(name))
            try:
                os.rename(self.claimed_dir / claimed, target)
            except FileNotFoundError:
                continue  # another watcher took it over first
            except OSError as exc:
                log.warning("inbox: cannot take over the claim %s (%s); the next scan retries",
                            printable(str(claimed)), exc)
                continue
            log.info(
                "inbox: %s: finishing a claim left by %s",
                printable(name),
                f"watcher {owner}" if owner else "an unknown process",
            )
            with self._cond:
                self._ready.append(target)
                self._cond.notify_all()
            taken += 1
        self._remove_dead_owner_locks(me)
        return taken

    def _remove_dead_owner_locks(self, me: str) -> None:
        with os.scandir(self.claimed_dir) as listing:
            locks = [e.name for e in listing if _OWNER_LOCK_RE.fullmatch(e.name)]
        for lock_name in locks:
            match = _OWNER_LOCK_RE.fullmatch(lock_name)
            if match is None or match["owner"] == me:
                continue
            path = self.claimed_dir / lock_name
            try:
                fd = _open_lock(path)
            except (OSError, _NotALock):
                continue  # gone, not a lock, or not ours to check: left alone
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink(missing_ok=True)  # unlinked while we hold it: no one sees it free
            except OSError:
                pass  # alive (BlockingIOError), or not ours to remove
            finally:
                os.close(fd)


def _folder_id(folder: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of ``folder``, None when it is missing."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class _NotALock(Exception):
    """An owner-lock name that holds no lock file (a link, a FIFO, a folder)."""


def _open_lock(path: Path) -> int:
    """Open another watcher's lock file to test its lock: read-write where allowed (over
    NFS an exclusive lock needs a file open for writing), else read-only (a lock file of
    another user, 0644 under the usual umask: a local ``flock`` needs no write access).

    Raises:
      _NotALock: the name holds something else (never followed, never blocked on).
      OSError: it could not be opened.
    """
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, os.O_RDWR | flags)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            fd = os.open(path, os.O_RDONLY | flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise _NotALock(path) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _NotALock(path)
    return fd


def _reserve(claimed: Path, dest: Path) -> bool:
    """Reserve ``dest`` for ``claimed`` without a hard link; False when it is taken.

    A regular placeholder naming the claim is created with ``O_EXCL`` (a placeholder of
    ours left by a crash is reused). A claimed folder, which cannot be renamed over a file,
    takes a free name as it is: renaming a folder never replaces a file.
    """
    if stat.S_ISDIR(os.lstat(claimed).st_mode):
        return not os.path.lexists(dest)
    marker = f"sparkle inbox: reserved for {claimed.name}\n".encode()
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        try:
            fd = os.open(dest, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            return os.read(fd, len(marker) + 1) == marker
        finally:
            os.close(fd)
    try:
        atomic.write_all(fd, marker)
    finally:
        os.close(fd)
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _received_at(claimed: Path) -> str:
    """When the file was claimed (its ctime: the claim rename sets it), ISO 8601 UTC."""
    try:
        when = os.lstat(claimed).st_ctime
    except OSError:
        when = time.time()
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")

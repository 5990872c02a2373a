"""The hot folder: plan files dropped into the inbox become runs.

A file is taken once complete (:mod:`sparkle.inbox_stability`); it is then claimed by an
atomic rename into ``.claimed/``, so two watchers on one folder never both take it
(:mod:`sparkle.inbox_claims`); loaded, validated and turned into a run whose first
unfinished stage is enqueued (:mod:`sparkle.inbox_intake`); and moved to ``processed/``,
or to ``rejected/`` beside ``<name>.error.json`` (:mod:`sparkle.inbox_settle`). The
folder's layout and names are in :mod:`sparkle.inbox_names`, its watchdog observer in
:mod:`sparkle.inbox_observer`. While the broker is down a file stays claimed and is
retried with backoff: nothing is rejected for an infrastructure problem.

Every step can be repeated, so a crash at any point loses nothing: on start the watcher
takes over claims whose owner's lock is free, then scans the inbox, oldest first.

Threads: the watchdog observer turns events into notices; ``inbox-stability`` checks files
waiting to be stable, rescans and restarts a dead observer; ``inbox-worker`` claims and
processes files in order; ``inbox-retry`` retries held files with backoff.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from sparkle.inbox_claims import Claims
from sparkle.inbox_held import HeldFiles
from sparkle.inbox_intake import Enqueue, InfraError, Intake
from sparkle.inbox_names import (
    CLAIMED_DIR,
    PROCESSED_DIR,
    REJECTED_DIR,
    is_plan_name,
    parse_claim_name,
)
from sparkle.inbox_observer import FolderObserver
from sparkle.inbox_stability import (
    Notice,
    StabilityWatch,
    closed_empty,
    json_ends_early,
    report_still_empty,
)
from sparkle.inbox_stats import InboxCounts, InboxStats
from sparkle.logs import printable
from sparkle.runstore import Run, RunStore
from sparkle.settings import Settings

#: The hot folder's modules log as one logger, so its log is configured in one place.
log = logging.getLogger("sparkle.inbox")

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


class Inbox:
    """Watches a hot folder and turns the plan files dropped into it into runs.

    Parameters:
      inbox_dir: the folder to watch; it and its sub-folders are created when missing.
      store: where runs are created (:meth:`RunStore.create` finds the run of a known plan).
      enqueue: called with each new or found run to enqueue its first unfinished stage
        (``sparkle.engine.kick`` in production); it may be called from two threads at once.
        Raising one of :data:`~sparkle.inbox_intake.BROKER_ERRORS` holds the file and
        retries it with backoff.
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
        # (unset: the settings' defaults, as `sparkle serve` has them with nothing configured)
        default = Settings.model_fields
        stable_seconds = default["stable_seconds"].default if stable_seconds is None \
            else stable_seconds
        glob = default["inbox_glob"].default if glob is None else glob
        max_plan_bytes = default["max_plan_bytes"].default if max_plan_bytes is None \
            else max_plan_bytes
        assert stable_seconds is not None and glob is not None and max_plan_bytes is not None
        if stable_seconds < 0 or max_plan_bytes <= 0 or not glob:
            raise ValueError("stable_seconds must be >= 0, max_plan_bytes > 0, glob non-empty")
        self.dir = Path(os.path.realpath(inbox_dir))
        self.claimed_dir = self.dir / CLAIMED_DIR
        self.processed_dir = self.dir / PROCESSED_DIR
        self.rejected_dir = self.dir / REJECTED_DIR
        self.claims = Claims(self.dir)
        self.intake = Intake(store, enqueue, self.processed_dir, self.rejected_dir,
                             max_plan_bytes, metadata_defaults)
        self.poll = poll
        self.stable_seconds = float(stable_seconds)
        self.glob = glob
        self.max_plan_bytes = max_plan_bytes
        self.rescan_interval = rescan_interval

        # One condition guards all the state below and wakes every thread on a change.
        self._cond = threading.Condition()
        self._watch = StabilityWatch(self.dir, self.stable_seconds, rescan_interval)
        self._ready: collections.deque[Path] = collections.deque()
        #: Names in the inbox (not claims) among ``_ready``.
        self._queued: set[str] = set()
        self._active = 0
        self._counts = InboxCounts()

        self._stopping = threading.Event()
        self._held = HeldFiles(self._cond, self._stopping, self._retry, self._counts.count,
                               retry_initial=retry_initial, retry_max=retry_max)
        self._threads: list[threading.Thread] = []
        self._observer = FolderObserver(self.dir, self._notice, self._forget, poll=poll,
                                        poll_interval=poll_interval, stopping=self._stopping)

    @classmethod
    def from_settings(
        cls, enqueue: Enqueue, store: RunStore, settings: Settings, *, poll: bool = False
    ) -> Inbox:
        """An inbox on ``settings.inbox_dir`` creating runs in ``store`` (the App's)."""
        s = settings
        return cls(
            s.inbox_dir,
            store,
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
        self.claims.prepare()
        # The observer starts before the scan so a file arriving during the scan is seen;
        # a file both scanned and notified is claimed once (the second rename finds nothing).
        self._observer.start()
        self.scan()
        for name, loop in (
            ("stability", self._stability_loop),
            ("worker", self._worker_loop),
            ("retry", self._held.run),
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
        self._observer.stop(timeout)
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
            self._watch.clear()
            self._ready.clear()
            self._queued.clear()
            self._held.clear_locked()
            self._cond.notify_all()
        self.claims.release()

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
        self.claims.prepare()
        found = self.claims.take_over_orphans(self._push_ready)
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
            self._held.retry_once()
            with self._cond:
                next_due = min((c.due for c in self._watch.waiting()), default=None)
                if next_due is None:
                    return not self._held.count_locked()
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
            pending = len(self._watch.waiting()) + len(self._ready) + self._active
            return self._counts.snapshot(held=self._held.count_locked(), pending=pending)

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

    # -- notices and the queue of files to take ------------------------------------------

    def _notice(self, name: str, how: Notice) -> None:
        if not is_plan_name(name, self.glob):
            return
        if how == "closed" and closed_empty(self.dir / name):
            how = "changed"
        with self._cond:
            if name in self._queued:
                return
            if self._watch.notice(name, how, time.monotonic()):
                self._push_ready_locked(self.dir / name)
            self._cond.notify_all()

    def _forget(self, name: str) -> None:
        with self._cond:
            if self._watch.forget(name):
                self._cond.notify_all()

    def _push_ready(self, path: Path) -> None:
        with self._cond:
            self._push_ready_locked(path)
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
        with self._cond:
            due = self._watch.due(time.monotonic())
        seen = self._watch.look(due)
        with self._cond:
            stable, still_empty = self._watch.judge(seen, time.monotonic())
            for name in stable:
                self._push_ready_locked(self.dir / name)
            if seen:
                self._cond.notify_all()
            next_due = self._watch.next_due()
        report_still_empty(still_empty)
        return next_due

    def _idle_locked(self) -> bool:
        return not (self._watch.waiting() or self._ready or self._active
                    or self._held.count_locked())

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
                    if self._observer.restart_if_dead(self.claims.prepare, JOIN_TIMEOUT_SEC):
                        self.scan()
                if now >= next_rescan:
                    next_rescan = now + self.rescan_interval
                    self.scan()
            except Exception:
                log.exception("inbox: stability check or rescan failed; continuing")
            wake = min(t for t in (next_due, next_rescan, next_health) if t is not None)
            with self._cond:
                if not self._watch.changed and not self._stopping.is_set():
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

    # -- one file ------------------------------------------------------------------------

    def _run_job(self, path: Path) -> None:
        try:
            self._handle(path)
        except Exception:
            # (the inbox worker thread must outlive any file: it stays where it is, in the
            # inbox or claimed, for the next scan or start)
            self._counts.count("failed")
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
                settled = self._watch.take_settled(path.name)
            if not settled and json_ends_early(path, self.max_plan_bytes):
                log.debug("inbox: %s ends early; waiting until it is still for %.2f s",
                          printable(path.name), self.stable_seconds)
                self._notice(path.name, "changed")
                return
        claimed = path if path.parent == self.claimed_dir else self.claims.claim(path)
        if claimed is None:
            return
        with self._cond:
            behind_held = self._held.count_locked() > 0
        try:
            # While files are held for the broker, later files are validated and get their
            # run, then queue up behind them: order is kept and the broker is not hammered.
            self._process(claimed, created_before=False, skip_enqueue=behind_held)
        except InfraError as exc:
            self._held.hold(claimed, exc)
        except Exception:
            self._counts.count("failed")
            log.exception(
                "inbox: %s failed unexpectedly; it stays in %s for the next start",
                printable(parse_claim_name(claimed.name)[1]),
                self.claimed_dir,
            )

    def _process(self, claimed: Path, *, created_before: bool, skip_enqueue: bool) -> None:
        """Process ``claimed`` (:meth:`Intake.process`), count the outcome and announce it.

        Raises:
          InfraError: the broker or the disk failed; the file stays claimed.
        """
        outcome = self.intake.process(claimed, created_before=created_before,
                                      skip_enqueue=skip_enqueue)
        if outcome.run is None:
            self._counts.count("rejected")
            return
        self._counts.count("processed", "created" if outcome.created else "resumed")
        if self.on_processed is not None:
            self.on_processed(outcome.name, outcome.run, outcome.created)

    def _retry(self, claimed: Path, created_before: bool) -> None:
        """Process a held file again (see :class:`HeldFiles`)."""
        self._process(claimed, created_before=created_before, skip_enqueue=False)

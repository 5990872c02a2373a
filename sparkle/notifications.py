"""Notifications: telling someone a run ended, at least once, without ever holding up a stage.

When a run succeeds, fails, is cancelled, awaits review or is rejected, :func:`run_ended`
builds a :class:`Notification` and writes it, once per target, into the **outbox**
(``<runs>/.outbox/``, one small JSON file each, written atomically and durably). Targets are
the webhook URLs of ``SPARKLE_WEBHOOK_URL`` (comma-separated), the run's own
``metadata.webhook`` (a plan's, or its inbox profile's) and the in-process notifiers that
installed packages register in the entry point group ``sparkle.notifiers``.

Delivery is separate: a daemon thread of the process that wrote the notification tries it
at once, and every reaper pass (in ``sparkle worker``, ``watch`` and ``serve``) delivers what
is due, so a notification written by a process that died is still sent. A failed attempt is
tried again with exponential backoff (``SPARKLE_WEBHOOK_RETRY_BASE_SEC`` doubling up to
``SPARKLE_WEBHOOK_RETRY_MAX_SEC``) until it succeeds or ``SPARKLE_WEBHOOK_GIVE_UP_SEC`` has
passed: a receiver down for an hour gets its notifications when it is back. Several
deliverers may run at once: each outbox file is delivered under an ``flock`` of it.

Delivered at least once: a deliverer that dies between the receiver's answer and removing
the outbox file sends it again. Every notification has a stable ``id`` (the same on every
attempt, and for the same outcome recorded twice) by which receivers deduplicate.

Each delivery (or giving up) is recorded in the run's ``notifications.jsonl``, which
``sparkle timeline`` shows beside the stage events.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from sparkle import atomic, webhooks
from sparkle.runstore import PLAN_FILE, Run
from sparkle.settings import Settings
from sparkle.webhooks import webhook_urls

log = logging.getLogger(__name__)

#: Run statuses that are notified.
NOTIFIED_STATUSES: tuple[str, ...] = (
    "succeeded", "failed", "awaiting_review", "rejected", "cancelled")

#: Entry point group of in-process notifiers: each names a callable taking the
#: notification as a dict (the webhook's JSON body); raising means "try again later".
ENTRY_POINT_GROUP = "sparkle.notifiers"

#: Folder, inside the runs folder, holding notifications not yet delivered.
OUTBOX_DIR = ".outbox"

#: File in a run folder recording each delivery of the run's notifications.
DELIVERIES_FILE = "notifications.jsonl"

#: Prefix of an in-process notifier's target (``notifier:<entry point name>``).
NOTIFIER_PREFIX = "notifier:"

#: Longest sleep, in seconds, of a process's delivery thread before it looks again.
DELIVERY_POLL_MAX_SEC = 60.0


@dataclass(frozen=True)
class Notification:
    """What a target is told: the webhook's JSON body."""

    #: Stable id: the same on every attempt; deduplicate by it.
    id: str
    #: ``run.<status>``.
    event: str
    run_id: str
    #: ``succeeded``, ``failed``, ``cancelled``, ``awaiting_review`` or ``rejected``.
    status: str
    #: The QA decision when QA ran (``accept``, ``regenerate``...).
    qa_decision: str | None
    #: Absolute path of the final movie, when there is one.
    movie: str | None
    #: Why the run failed (failed runs), else None.
    error: str | None
    #: ``started_at``, ``ended_at`` (seconds since the epoch), ``duration_sec``, and
    #: ``stages``: stage → seconds of its successful attempt.
    timings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def body(self) -> bytes:
        """The JSON body: the same bytes on every attempt."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8")


class _Pending(BaseModel):
    """One outbox file: a notification still to be delivered to one target."""

    model_config = ConfigDict(extra="forbid")

    notification: dict[str, Any]
    target: str
    created_at: float
    attempts: int = 0
    next_at: float
    last_error: str | None = None


@dataclass(frozen=True)
class Delivery:
    """The outcome of one delivery attempt."""

    notification_id: str
    run_id: str
    target: str
    #: ``delivered``, ``retrying`` or ``gave_up``.
    outcome: str
    attempts: int
    error: str | None


def targets(settings: Settings) -> list[str]:
    """The configured targets: webhook URLs, then ``notifier:<name>`` per entry point."""
    return [*webhook_urls(settings.webhook_url),
            *(NOTIFIER_PREFIX + name for name in sorted(_notifiers()))]


def run_targets(run: Run) -> list[str]:
    """The run's own webhook: its plan's ``metadata.webhook`` (set in the plan or by the
    inbox profile it was dropped into), notified besides ``SPARKLE_WEBHOOK_URL``."""
    try:
        document = json.loads(run.path(PLAN_FILE).read_bytes())
        url = document.get("metadata", {}).get("webhook")
        return [webhooks.check_url(url)] if isinstance(url, str) else []
    except (OSError, ValueError, AttributeError):
        return []


@functools.cache
def _notifiers() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def build(run: Run, status: str, error: str | None = None) -> Notification:
    """The notification of ``run`` ending in ``status``, from its folder as it is now."""
    events = run.events()
    started = events[0].timestamp if events else None
    ended = events[-1].timestamp if events else time.time()
    stages = {view.stage: view.duration_sec for view in run.stage_views()
              if view.status == "success" and view.duration_sec is not None}
    movie = None
    with contextlib.suppress(OSError, ValidationError):
        final = run.asset_refs().extras.get("final_movie")
        if final and "://" not in final:
            movie = str(run.path(final))
    qa_decision = None
    with contextlib.suppress(OSError, ValidationError):
        qa_decision = run.qa_decision()
    # Stable: the same outcome (run, status, the event that recorded it) gives the same id.
    digest = hashlib.sha256(f"{run.run_id}\0{status}\0{ended:.6f}".encode()).hexdigest()[:16]
    return Notification(
        id=f"{run.run_id}.{status}.{digest}",
        event=f"run.{status}",
        run_id=run.run_id,
        status=status,
        qa_decision=qa_decision,
        movie=movie,
        error=error,
        timings={
            "started_at": started,
            "ended_at": ended,
            "duration_sec": round(ended - started, 3) if started is not None else None,
            "stages": stages,
        },
    )


def run_ended(run: Run, settings: Settings, status: str, error: str | None = None,
              background: bool = True) -> None:
    """The hook the engine (and ``sparkle cancel``, review decisions...) calls when ``run``
    reaches ``status``: write its notification to the outbox and, with ``background``,
    start delivering it from this process's delivery thread (a short-lived command passes
    False and calls :func:`flush`). Never raises; does nothing when no target is
    configured."""
    try:
        wanted = list(dict.fromkeys([*targets(settings), *run_targets(run)]))
        if not wanted or status not in NOTIFIED_STATUSES:
            return
        outbox = Outbox(settings.runs_dir / OUTBOX_DIR, settings)
        outbox.put(build(run, status, error), wanted)
        if background:
            kick(outbox)
    except Exception:
        # A notification must never fail the stage that finished the run.
        log.exception("run %s: notification of %s not written", run.run_id, status)


def flush(settings: Settings) -> list[Delivery]:
    """Try every due notification once, now, in this thread (for short-lived commands:
    what fails stays in the outbox for the reapers). A delivery this process's thread is
    making is waited for, so that leaving the process right after does not cut it short."""
    return Outbox(settings.runs_dir / OUTBOX_DIR, settings).deliver_due(wait=True)


def resume_delivery(settings: Settings) -> None:
    """Start delivering what the outbox holds, in the background (the reaper calls this
    every pass: notifications written by a process that died are sent too)."""
    outbox = Outbox(settings.runs_dir / OUTBOX_DIR, settings)
    if outbox.pending():
        kick(outbox)


class Outbox:
    """The notifications not yet delivered (one file per notification and target)."""

    def __init__(self, folder: Path, settings: Settings) -> None:
        self.folder = folder
        self.settings = settings

    def put(self, notification: Notification, to: list[str]) -> None:
        """Write ``notification`` for each target in ``to`` (durably; a second put of the
        same notification replaces the first, attempts reset)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for target in to:
            record = _Pending(notification=notification.as_dict(), target=target,
                              created_at=now, next_at=now)
            atomic.write_json(self.folder / _file_name(notification.id, target), record)

    def pending(self) -> list[Path]:
        """Outbox files, oldest name first."""
        try:
            with os.scandir(self.folder) as entries:
                return sorted(Path(e.path) for e in entries
                              if e.name.endswith(".json") and not e.name.startswith("."))
        except FileNotFoundError:
            return []

    def next_due(self) -> float | None:
        """When the earliest pending notification is due (None when none is pending)."""
        due = [record.next_at for path in self.pending()
               if (record := _read(path)) is not None]
        return min(due, default=None)

    def deliver_due(self, now: float | None = None, wait: bool = False) -> list[Delivery]:
        """Try every pending notification that is due and not being delivered elsewhere
        (with ``wait``, wait for a delivery elsewhere to end, then try what it left)."""
        results = []
        for path in self.pending():
            result = self._deliver(path, time.time() if now is None else now, wait)
            if result is not None:
                results.append(result)
        return results

    def _deliver(self, path: Path, now: float, wait: bool) -> Delivery | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None  # delivered by another process meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another deliverer has it
            # (replaced after a failed attempt, or removed after a delivery, since opened)
            try:
                if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                    return None
            except FileNotFoundError:
                return None
            record = _read(path)
            if record is None:
                log.error("notification outbox: %s is damaged; moving it aside", path)
                os.replace(path, path.with_name(f".damaged-{path.name}"))
                return None
            if record.next_at > now:
                return None
            return self._attempt(path, record, now)
        finally:
            os.close(fd)

    def _attempt(self, path: Path, record: _Pending, now: float) -> Delivery:
        notification = record.notification
        attempts = record.attempts + 1
        error = self._send(record)
        run_id = str(notification.get("run_id", "?"))
        notification_id = str(notification.get("id", "?"))
        shown = _shown_target(record.target)
        if error is None:
            self._record(run_id, notification, record.target, "delivered", attempts, None)
            path.unlink()
            log.info("run %s: %s delivered to %s (attempt %d)", run_id,
                     notification.get("event"), shown, attempts)
            return Delivery(notification_id, run_id, shown, "delivered", attempts, None)
        if now - record.created_at >= self.settings.webhook_give_up_sec:
            self._record(run_id, notification, record.target, "gave_up", attempts, error)
            path.unlink()
            log.error("run %s: gave up delivering %s to %s after %d attempts (%s)", run_id,
                      notification.get("event"), shown, attempts, error)
            return Delivery(notification_id, run_id, shown, "gave_up", attempts, error)
        delay = backoff(attempts, self.settings.webhook_retry_base_sec,
                        self.settings.webhook_retry_max_sec)
        atomic.write_json(path, record.model_copy(update={
            "attempts": attempts, "next_at": now + delay, "last_error": error}))
        log.warning("run %s: %s to %s failed (attempt %d: %s); next try in %.0f s", run_id,
                    notification.get("event"), shown, attempts, error, delay)
        return Delivery(notification_id, run_id, shown, "retrying", attempts, error)

    def _send(self, record: _Pending) -> str | None:
        """Deliver once; the error, or None when delivered."""
        data = record.notification
        if record.target.startswith(NOTIFIER_PREFIX):
            name = record.target.removeprefix(NOTIFIER_PREFIX)
            entry = _notifiers().get(name)
            if entry is None:
                return f"notifier {name!r} is no longer installed ({ENTRY_POINT_GROUP})"
            try:
                entry.load()(dict(data))
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
            return None
        secret = self.settings.webhook_secret
        answer = webhooks.post(
            record.target,
            json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8"),
            str(data.get("id", "")), str(data.get("event", "")),
            secret.get_secret_value() if secret else None,
            self.settings.webhook_timeout_sec,
        )
        return None if answer.ok else answer.error

    def _record(self, run_id: str, notification: dict[str, Any], target: str, outcome: str,
                attempts: int, error: str | None) -> None:
        """Append the delivery to the run's ``notifications.jsonl`` (for the timeline)."""
        line = json.dumps({
            "timestamp": time.time(), "id": notification.get("id"),
            "event": notification.get("event"), "target": _shown_target(target),
            "outcome": outcome, "attempts": attempts, "error": error,
        }, sort_keys=True).encode("utf-8") + b"\n"
        try:
            fd = os.open(self.settings.runs_dir / run_id / DELIVERIES_FILE,
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:  # the run was pruned meanwhile, say
            log.info("run %s: delivery not recorded (%s)", run_id, exc)
            return
        try:
            atomic.write_all(fd, line)
        finally:
            os.close(fd)


def deliveries(run: Run) -> list[dict[str, Any]]:
    """The run's recorded deliveries, oldest first (unreadable lines skipped)."""
    try:
        data = (run.dir / DELIVERIES_FILE).read_bytes()
    except FileNotFoundError:
        return []
    found = []
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("timestamp"), int | float):
                found.append(record)
    return found


@dataclass(frozen=True)
class PendingView:
    """A notification waiting in the outbox, as ``sparkle outbox`` shows it."""

    id: str
    event: str
    run_id: str
    #: Scheme, host and port of a webhook, or ``notifier:<name>``.
    target: str
    attempts: int
    #: When it was written and when it is next tried (seconds since the epoch).
    created_at: float
    next_at: float
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pending_views(settings: Settings) -> list[PendingView]:
    """The notifications not yet delivered, oldest first."""
    views = []
    for path in Outbox(settings.runs_dir / OUTBOX_DIR, settings).pending():
        record = _read(path)
        if record is None:
            continue
        data = record.notification
        views.append(PendingView(str(data.get("id", "?")), str(data.get("event", "?")),
                                 str(data.get("run_id", "?")), _shown_target(record.target),
                                 record.attempts, record.created_at, record.next_at,
                                 record.last_error))
    return sorted(views, key=lambda view: view.created_at)


def backoff(attempts: int, base_sec: float, max_sec: float) -> float:
    """Seconds before the attempt after ``attempts`` failed ones: ``base_sec`` doubling,
    at most ``max_sec``, minus up to a tenth at random (so retries do not stampede)."""
    delay = min(max_sec, base_sec * 2.0 ** min(attempts - 1, 30))
    return delay * (1 - random.random() / 10)


def _file_name(notification_id: str, target: str) -> str:
    return f"{notification_id}--{hashlib.sha256(target.encode()).hexdigest()[:12]}.json"


def _shown_target(target: str) -> str:
    return target if target.startswith(NOTIFIER_PREFIX) else webhooks.shown_url(target)


def _read(path: Path) -> _Pending | None:
    try:
        return _Pending.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError):
        return None


# -- the background delivery thread of a process ---------------------------------------

_thread: threading.Thread | None = None
_thread_lock = threading.Lock()
_wake = threading.Event()
#: The outboxes the thread delivers, by folder (one per runs folder the process uses).
_outboxes: dict[Path, Outbox] = {}


def kick(outbox: Outbox) -> None:
    """Have this process's delivery thread deliver ``outbox`` (start it if needed)."""
    global _thread
    with _thread_lock:
        _outboxes[outbox.folder] = outbox
        _wake.set()
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_deliver_until_empty, name="sparkle-notify",
                                       daemon=True)
            _thread.start()


def _deliver_until_empty() -> None:
    """Deliver what is due, sleep until the next is, until every outbox is empty."""
    global _thread
    while True:
        _wake.clear()
        with _thread_lock:
            outboxes = list(_outboxes.values())
        due: list[float] = []
        for outbox in outboxes:
            try:
                outbox.deliver_due()
                next_due = outbox.next_due()
            except OSError as exc:
                log.warning("notification outbox %s: %s; the reaper tries again",
                            outbox.folder, exc)
                next_due = None
            if next_due is None:
                with _thread_lock:
                    if not _wake.is_set():
                        _outboxes.pop(outbox.folder, None)
            else:
                due.append(next_due)
        if not due:
            with _thread_lock:
                if not _wake.is_set() and not _outboxes:
                    _thread = None
                    return
            continue
        _wake.wait(min(DELIVERY_POLL_MAX_SEC, max(0.0, min(due) - time.time())))

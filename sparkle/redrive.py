"""The reaper: finds runs that stopped moving and sends their next stage again.

A run gets stuck in one of two ways (DESIGN.md, "Resume, re-drive, replay"):

- **worker died**: the run's next stage has a ``begin`` with no outcome after it, the run's
  lease is free (its TTL ran out without a heartbeat; embedded, no process holds the run's
  lock file, :mod:`sparkle.runlock`) and nothing re-drove the stage since.
  dramatiq alone redelivers such a message only after its heartbeat timeout *and* a random
  maintenance pass (221 s and 461 s measured); the reaper sends it again within one lease
  TTL plus one reaper interval.
- **message lost**: the run is unfinished, nobody holds it, and its next stage has no
  message in the broker: none ready, delayed, or fetched by a worker that is still alive.
  Redis restarted without persistence, a queue was flushed, an embedded process stopped.
- **message stranded**: as above, except that the stage's message sits in the ack set of
  a live worker process, and has for longer than twice the longest stage time limit (as
  this reaper has watched it; if delayed, counted from its due time), and nothing runs
  it. dramatiq leaves messages there when a fetch's reply is lost (dramatiq #894) or a
  consumer reconnects and forgets its delayed messages (#527); the process would give
  them back only when it stops.

Either way the reaper appends a ``redrive`` event to the run's history, then sends the
stage. Sending too much is harmless: a message whose stage is done, or whose run another
worker holds, runs nothing (the engine's skip rule). Finished, failed and cancelled runs
are never touched; ``sparkle resume`` and ``sparkle dlq replay`` continue those when asked.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from sparkle import keys, lease, metrics, notifications
from sparkle.dispatch import Dispatcher, run_level
from sparkle.presence import Presence
from sparkle.retention import apply_retention
from sparkle.runstore import PLAN_FILE, Run, RunStatus, RunStore
from sparkle.schemas import StageEvent
from sparkle.settings import Settings

log = logging.getLogger(__name__)

#: Re-drives of a run in a row without any stage finishing, after which the reaper leaves
#: the run alone and says so: something fails before a stage can even begin.
MAX_REDRIVES_WITHOUT_PROGRESS = 10

#: Resolution of the time in a pending mark, in seconds (written with 3 decimals).
PENDING_TIME_RESOLUTION_SEC = 0.001

#: Event statuses that end a stretch of re-drives (something happened to the run).
_PROGRESS = ("success", "fail", "reset", "cancel")


class RedriveReason(enum.StrEnum):
    """Why a run was re-driven."""

    #: The stage began, and its worker died (no outcome, lease free).
    worker_died = "worker_died"
    #: The run's next stage has no message in the broker.
    message_lost = "message_lost"
    #: The run's only message for its next stage is held by a live worker that has not run
    #: it for far longer than any stage may take.
    message_stranded = "message_stranded"


@dataclass(frozen=True)
class Redrive:
    """A stuck run the reaper found (and, unless a dry run, sent again)."""

    run_id: str
    stage: str
    reason: RedriveReason
    #: Seconds since the run last moved (its stage began, or its last event).
    idle_sec: float
    #: Whether the stage was sent (False in a dry run).
    sent: bool

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["reason"] = self.reason.value
        return record


class Reaper:
    """Re-drives stuck runs, once (:meth:`run_once`) or every ``reaper_interval_sec``
    from a background thread (:meth:`start` / :meth:`stop`).

    Several reapers may run at once (in ``sparkle watch`` and in each ``sparkle worker``):
    a short-lived Redis key per re-driven run keeps them from re-driving it twice.
    """

    def __init__(self, store: RunStore, dispatcher: Dispatcher, settings: Settings) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.backend = dispatcher.backend
        self.client = dispatcher.client
        self.settings = settings
        self.namespace = settings.namespace
        #: Who re-drove, as recorded in the ``redrive`` event.
        self.name = f"reaper {socket.gethostname()}:{os.getpid()}"
        self._pass_lock = threading.Lock()
        #: Message id → when this reaper first saw a live worker hold it (Redis does not
        #: record when a message was fetched).
        self._held_since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ------------------------------------------------------------------------

    def run_once(self, dry_run: bool = False, older_than: float | None = None) -> list[Redrive]:
        """Find stuck runs and, unless ``dry_run``, re-drive them. Returns what was found.

        Parameters:
          dry_run: report only; send nothing and record nothing.
          older_than: seconds a run must have been still before it counts as stuck
            (default: the lease TTL, so a stage between two events is never taken for dead).

        Raises:
          redis.RedisError: Redis cannot be reached (nothing was re-driven after the error).
        """
        older = self.settings.lease_ttl_sec if older_than is None else max(0.0, older_than)
        limits = [self.settings.stage_time_limit_sec, *self.settings.stage_time_limits.values()]
        stranded_after = 2 * max(limits)
        with self._pass_lock:
            present = self.backend.queued_stages(self.namespace,
                                                 self.settings.heartbeat_timeout_ms,
                                                 self._held_since)
            found: list[Redrive] = []
            # Only the runs the unfinished-run index names (all of them when it is
            # rebuilt); _inspect looks again, fresh, at the few that may be stuck.
            index = self.backend.run_index(self.store.root, self.namespace)
            for summary in index.unfinished(self.store):
                if summary.status not in (RunStatus.queued, RunStatus.running):
                    continue
                run = Run(self.store.root, summary.run_id)
                stuck = self._inspect(run, present, time.time(), older, stranded_after)
                if stuck is None:
                    continue
                if dry_run:
                    found.append(stuck)
                elif self._redrive(run, stuck):
                    found.append(Redrive(stuck.run_id, stuck.stage, stuck.reason,
                                         stuck.idle_sec, sent=True))
            return found

    def _inspect(self, run: Run, present: Presence, now: float, older_than: float,
                 stranded_after: float) -> Redrive | None:
        state = run.state()
        if state.status() not in (RunStatus.queued, RunStatus.running):
            return None
        stage = state.next_stage()
        if stage is None:
            return None
        events = state.events
        begin, redriven = _open_begin(events, stage)
        # A run that moved lately is not stuck, whatever Redis says: its idle time below
        # can only be shorter than this (a message sent or a later event only shortens
        # it). Most runs in flight end here, without two round trips each.
        latest = begin if begin is not None and not redriven else events[-1] if events else None
        if latest is not None and now - latest.timestamp < older_than:
            return None
        # No attempt of the stage that can have died unseen, and its message is in the
        # broker: only a lost message could make it stuck, and it is not lost. (A backlog
        # of queued runs is the common case: it costs no round trip.)
        message = _message_state(present, run.run_id, stage, now, stranded_after)
        if (begin is None or redriven) and message == _WAITING:
            return None
        if lease.holder(self.client, self.namespace, run.run_id) is not None:
            return None  # a live worker renews it: the run is moving
        if self.backend.other_process(run.dir) is not None:
            return None  # another live process works it (its messages are in its memory)
        pending = self.dispatcher.pending(run.run_id)
        # A message sent after the dead attempt began (resume, a restarted `serve`) is the
        # re-drive already: then only a lost message matters.
        resent = (begin is not None and pending is not None and pending[0] == stage
                  and pending[1] > begin.timestamp + PENDING_TIME_RESOLUTION_SEC)
        if begin is not None and not redriven and not resent:
            reason = RedriveReason.worker_died
            idle = now - begin.timestamp
        else:
            if message == _WAITING:
                return None
            if (not self.backend.lists_fetched_messages and pending is not None
                    and pending[0] == stage):
                return None  # fetched by a worker, out of the listing, not run yet
            reason = (RedriveReason.message_stranded if message == _STRANDED
                      else RedriveReason.message_lost)
            idle = now - _last_activity(run, events, pending)
        if idle < older_than:
            return None
        streak = _redrives_without_progress(events)
        if streak >= MAX_REDRIVES_WITHOUT_PROGRESS:
            log.error("run %s stage %s: re-driven %d times without any stage finishing; "
                      "leaving it alone. Look at `sparkle timeline %s` and the worker logs, "
                      "then `sparkle resume %s`", run.run_id, stage, streak, run.run_id,
                      run.run_id)
            return None
        return Redrive(run.run_id, stage, reason, round(idle, 1), sent=False)

    def _redrive(self, run: Run, stuck: Redrive) -> bool:
        guard_ms = max(1, int(self.settings.lease_ttl_sec * 1000))
        if not self.client.set(keys.redrive_guard(self.namespace, run.run_id), self.name,
                               nx=True, px=guard_ms):
            log.debug("run %s: re-driven moments ago by another reaper", run.run_id)
            return False
        # The event goes first: the stage's next ``begin`` must come after it, so that a
        # worker dying again is seen as a new death (see _open_begin). It is written
        # holding the run's lease, as every write to a run's files is: a worker that took
        # the run meanwhile (on another host) is left to it.
        with lease.for_a_write(self.client, self.namespace, run.run_id,
                               lock_dir=self.backend.lock_dir(run.dir)) as ours:
            if not ours:
                log.debug("run %s: taken by a worker meanwhile; not re-driven", run.run_id)
                return False
            run.append_event(stuck.stage, "redrive", max(1, run.attempts(stuck.stage)),
                             metadata={"reason": stuck.reason.value,
                                       "idle_sec": stuck.idle_sec, "by": self.name})
        try:
            self.dispatcher.send(run.run_id, stuck.stage, level=run_level(run))
        except redis.RedisError as exc:
            log.error("run %s stage %s: re-drive not sent (%s); the next pass tries again",
                      run.run_id, stuck.stage, exc)
            return False
        metrics.redriven(stuck.stage, stuck.reason.value)
        log.warning("run %s stage %s: re-driven (%s, still for %.0f s)", run.run_id,
                    stuck.stage, stuck.reason.value, stuck.idle_sec)
        return True

    # -- in the background ---------------------------------------------------------------

    def start(self) -> None:
        """Run a pass every ``reaper_interval_sec`` from a daemon thread (first after one
        interval, so processes starting together settle first)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sparkle-reaper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background thread after its current pass."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        interval = self.settings.reaper_interval_sec
        while not self._stop.wait(interval):
            try:
                self.run_once()
            except (redis.RedisError, OSError) as exc:
                log.warning("reaper: pass failed (%s); next one in %.0f s", exc, interval)
            except Exception:
                log.exception("reaper: unexpected error; next pass in %.0f s", interval)
            self._housekeeping()

    def _housekeeping(self) -> None:
        """After each pass: deliver notifications left in the outbox, and apply
        ``SPARKLE_RETENTION`` (at most once an hour across all reapers). Neither depends on
        the pass having gone through."""
        try:
            notifications.resume_delivery(self.settings)
            if self.settings.retention:
                apply_retention(self.store, self.backend, self.namespace,
                                self.settings.retention)
        except (redis.RedisError, OSError) as exc:
            log.warning("reaper: housekeeping failed (%s); next pass tries again", exc)
        except Exception:
            log.exception("reaper: unexpected error in housekeeping")


def _open_begin(events: list[StageEvent], stage: str) -> tuple[StageEvent | None, bool]:
    """The latest ``begin`` of ``stage`` with no outcome after it (None if there is none),
    and whether a ``redrive`` of the stage came after that begin."""
    redriven = False
    for event in reversed(events):
        if event.stage != stage:
            continue
        if event.status == "redrive":
            redriven = True
        elif event.status == "begin":
            return event, redriven
        elif event.status in ("success", "fail", "reset"):
            return None, redriven
    return None, redriven


def _last_activity(run: Run, events: list[StageEvent], pending: tuple[str, float] | None) -> float:
    """When the run last moved: its last event, its last message sent, or its creation."""
    moments = [event.timestamp for event in events[-1:]]
    if pending is not None:
        moments.append(pending[1])
    with contextlib.suppress(FileNotFoundError):
        moments.append((run.dir / PLAN_FILE).stat().st_mtime)
    return max(moments, default=0.0)


def _redrives_without_progress(events: list[StageEvent]) -> int:
    count = 0
    for event in reversed(events):
        if event.status == "redrive":
            count += 1
        elif event.status in _PROGRESS:
            break
    return count


# -- what the broker holds ---------------------------------------------------------------



_WAITING, _STRANDED, _NONE = "waiting", "stranded", "none"


def _message_state(present: Presence, run_id: str, stage: str, now: float,
                   stranded_after: float) -> str:
    """Whether ``stage`` of ``run_id`` has a message on its way (_WAITING), only ones held
    by live workers for longer than ``stranded_after`` (_STRANDED), or none (_NONE)."""
    stages = present.get(run_id)
    if stages is None or stage not in stages:
        return _NONE
    held_since = stages[stage]
    if held_since is None or now - held_since < stranded_after:
        return _WAITING
    return _STRANDED

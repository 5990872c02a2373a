"""Run lifecycle actions shared by the CLI and the dashboard: create, resume, cancel.

Each is a plain function on the run store and the dispatcher, so ``sparkle submit``,
``sparkle resume``, ``sparkle cancel`` and the dashboard's buttons and ``/api`` routes
change runs in exactly one way. Callers print or render the result.

Resume and cancel write the run's state holding its lease, as every writer does; when a
worker holds it they hand the change to that worker (:mod:`sparkle.handover`).
"""

from __future__ import annotations

import contextlib
import enum
import getpass
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import redis

from sparkle import handover, lease, notifications
from sparkle.dispatch import Dispatcher
from sparkle.errors import LeaseLostError, ReviewError
from sparkle.priority import set_run_priority
from sparkle.runstore import Run, RunStatus, RunStore
from sparkle.schemas import STAGES, MoviePlan
from sparkle.settings import Settings


@dataclass(frozen=True)
class Created:
    """A plan turned into a run."""

    run: Run
    #: False when the same plan had made this run before (it is continued, not duplicated).
    created: bool
    #: The stage queued now, None when nothing was (done, cancelled, already queued).
    queued: str | None


class NotQueued(redis.ConnectionError):
    """The run was created (or found) but its first stage could not be queued: Redis did
    not answer. ``sparkle resume``, or the reaper of a running worker, queues it later."""

    def __init__(self, run: Run, created: bool, cause: redis.RedisError) -> None:
        super().__init__(str(cause))
        self.run = run
        self.created = created


def create_run(store: RunStore, dispatcher: Dispatcher, plan: MoviePlan,
               run_id: str | None = None, level: str | None = None) -> Created:
    """Create the run of ``plan`` (or find it) and queue its first unfinished stage, at
    priority ``level`` when given (else the plan's ``metadata.priority``).

    Raises:
      RunConflictError: a different plan already owns the run id.
      NotQueued: the run exists but its stage could not be queued (a redis.RedisError).
    """
    run, created = store.create(plan, run_id)
    if level is not None:
        set_run_priority(run.dir, level)
    try:
        return Created(run, created, dispatcher.kick(run))
    except redis.RedisError as exc:
        raise NotQueued(run, created, exc) from exc


@dataclass(frozen=True)
class Leases:
    """Where the runs' leases are, for a command that writes a run's files: every write to
    a run's state comes from the holder of its lease (:mod:`sparkle.handover`)."""

    #: The coordination client (Redis; embedded, this process's in-memory one).
    client: redis.Redis
    namespace: str
    #: The leases are this process's own (no Redis): the run's lock file keeps other
    #: processes out (:mod:`sparkle.runlock`).
    embedded: bool

    @classmethod
    def of(cls, dispatcher: Dispatcher) -> Leases:
        """The leases the dispatcher's workers take."""
        return cls(dispatcher.client, dispatcher.namespace,
                   dispatcher.backend.shared_client is None)

    @classmethod
    def without_redis(cls, namespace: str) -> Leases:
        """No lease store reachable (``sparkle ui`` without Redis): the runs are worked, if
        at all, by embedded processes, which hold a run's lock file while they work it."""
        return cls(fakeredis.FakeRedis(server=fakeredis.FakeServer()), namespace, True)

    @contextlib.contextmanager
    def holding(self, run: Run) -> Iterator[lease.Lease | None]:
        """Hold ``run``'s lease for a short write (None: a worker holds it), having first
        done what earlier commands left for the holder (:func:`sparkle.handover.carry_out`).

        Raises LeaseLostError when the lease taken is lost before the write (fencing)."""
        with lease.for_a_write(self.client, self.namespace, run.run_id,
                               lock_dir=run.dir if self.embedded else None) as held:
            if held is not None:
                fence(run, held)
                handover.carry_out(run)
            yield held


def fence(run: Run, held: lease.Lease) -> None:
    """Raise LeaseLostError unless ``held`` is still the run's lease."""
    if not held.held():
        raise LeaseLostError(f"lease of run {run.run_id} lost before writing; nothing written")


#: Seconds ``sparkle resume`` waits, by default, for the worker holding a run to carry out
#: the resume (or to let go of the run, so the command does it and queues the next stage).
HANDOVER_WAIT_SEC = 2.0

#: Seconds between two looks while waiting.
HANDOVER_POLL_SEC = 0.05


@dataclass(frozen=True)
class Resumed:
    """A run sent on again."""

    run: Run
    #: Stages whose checkpoints were removed so they run again (``--from``/``--only``);
    #: handed over: the stages the worker holding the run resets.
    reset: list[str]
    #: The stage queued now, None when nothing was (done, or already on its way).
    queued: str | None
    #: A worker held the run: it carries out the resume (resets, lifting the cancellation)
    #: and continues the chain when its stage ends (False: done here).
    handed_over: bool = False


def resume_run(run: Run, dispatcher: Dispatcher, from_stage: str | None = None,
               only: str | None = None, wait_sec: float = HANDOVER_WAIT_SEC) -> Resumed:
    """Reset the stages asked for, lift a cancellation and queue the first unfinished
    stage (for workers of the dispatcher's broker), as :func:`reset_for_resume` says.

    Raises:
      ReviewError: the run waits for a review decision or was rejected (a person decides).
      ConfigError: both ``from_stage`` and ``only``, an unknown stage, or ``only`` with
        earlier stages undone.
    """
    check_resumable(run)
    stages, here = reset_for_resume(run, Leases.of(dispatcher), from_stage, only, wait_sec)
    # (after the lease's release: Dispatcher.kick leaves a held run to its holder)
    return Resumed(run, stages, dispatcher.kick(run), handed_over=not here)


def check_resumable(run: Run) -> None:
    """Raise ReviewError when ``run`` waits for a review decision or was rejected: resuming
    it would decide for a person (``sparkle approve``/``redo``/``reject`` do)."""
    status = run.status()
    if status in (RunStatus.awaiting_review, RunStatus.rejected):
        raise ReviewError(
            f"run {run.run_id} is {status.value}: resume does not decide for a person; see "
            f"`sparkle status {run.run_id}` (approve, redo or reject it)")


def reset_for_resume(run: Run, leases: Leases, from_stage: str | None = None,
                     only: str | None = None, wait_sec: float = HANDOVER_WAIT_SEC
                     ) -> tuple[list[str], bool]:
    """Reset the stages ``--from``/``--only`` name and lift a cancellation, holding the
    run's lease. When a worker holds it, the resume is handed to that worker, which carries
    it out before it lets go of the run (and continues the chain); this waits up to
    ``wait_sec`` for that, or for the run to be free and does it then.

    Returns the stages reset (or handed over) and whether it was done here.
    """
    stages, reason = handover.stages_to_reset(run, from_stage, only)
    with leases.holding(run) as held:
        marker = handover.cancel_request(run)
        if held is not None:
            handover.resume_here(run, stages, reason, marker)
            return stages, True
        if not stages and marker is None:  # (nothing to change: the holder goes on)
            return [], False
        name = handover.request_resume(run, stages, reason, marker)
    deadline = time.monotonic() + wait_sec
    while handover.resume_pending(run, name) and time.monotonic() < deadline:
        time.sleep(HANDOVER_POLL_SEC)
        with leases.holding(run) as held:  # (carries the request out when the run is free)
            if held is not None:
                return stages, True
    return stages, False


class CancelResult(enum.StrEnum):
    """What :func:`cancel_run` did."""

    #: The run is now cancelled.
    cancelled = "cancelled"
    #: It was cancelled before; nothing changed.
    already_cancelled = "already_cancelled"
    #: It had succeeded; there is nothing left to stop.
    already_succeeded = "already_succeeded"


@dataclass(frozen=True)
class Cancelled:
    """The outcome of a cancel request."""

    result: CancelResult
    #: The stage running or next when the run was cancelled.
    stage: str | None
    #: Whether its ``cancel`` event is recorded (False: the worker holding the run records
    #: it before it lets go of the run; the run is cancelled all the same).
    recorded: bool = True


def cancel_run(run: Run, leases: Leases, by: str | None = None,
               settings: Settings | None = None,
               notify_in_background: bool = True, wait_sec: float = 0.0) -> Cancelled:
    """Cancel ``run``: a running stage finishes, no further stage starts; only a resume
    continues it. Records a ``cancel`` event naming who asked (``by``, default user@host)
    and, given ``settings``, writes the run's ``cancelled`` notification to the outbox
    (delivered from this process's thread unless ``notify_in_background`` is False: a
    short-lived command then calls :func:`sparkle.notifications.flush`).

    The event is written holding the run's lease (``leases``: where the leases are).
    When a worker holds it, the cancel marker alone is written (it stops the run) and the
    worker records the event when its stage ends (``recorded`` False: the caller says the
    stage is running and finishes); given ``wait_sec``, this waits up to that long for
    the event, or for the run to be free and records it then.
    """
    state = run.state()
    status = state.status()
    marker = handover.cancel_request(run)
    if status is RunStatus.cancelled and not (
            marker is not None and handover.lifted_by_a_resume(run, marker)):
        return Cancelled(CancelResult.already_cancelled, None)
    if status is RunStatus.succeeded:
        return Cancelled(CancelResult.already_succeeded, None)
    stage = state.next_stage() or STAGES[-1]
    who = by or f"{getpass.getuser()}@{socket.gethostname()}"
    with leases.holding(run) as held:
        request = handover.request_cancel(run, who, status.value, stage)
        if held is not None:
            handover.record_cancel(run, request)
    recorded = held is not None
    deadline = time.monotonic() + wait_sec
    while not recorded and time.monotonic() < deadline:
        time.sleep(HANDOVER_POLL_SEC)
        recorded = handover.cancel_recorded(run, request.request)
        if not recorded:
            with leases.holding(run) as held:  # (records it when the run is free)
                recorded = held is not None
    if settings is not None:
        notifications.run_ended(run, settings, "cancelled", background=notify_in_background)
    return Cancelled(CancelResult.cancelled, stage, recorded)


def hand_to_inbox(inbox: Path, data: bytes) -> str:
    """Write plan bytes into the inbox under a fresh name (a temporary dot-name first, so
    the watcher never takes half a file): how a process without a queue (the dashboard
    without Redis) submits a plan to a running ``sparkle serve``. Returns the name."""
    inbox.mkdir(parents=True, exist_ok=True)
    name = f"ui-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}.json"
    fd, temp = tempfile.mkstemp(dir=inbox, prefix=".ui-", suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temp, inbox / name)
    return name


def copy_into_inbox(path: Path, inbox: Path, level: str | None = None) -> Path:
    """Copy the plan file ``path`` into the inbox (``level``: with its ``metadata.priority``
    set to it), keeping its name or adding ``-1``, ``-2``... when taken; written under a
    ``.part`` name first, which the watcher skips. How ``sparkle submit`` without Redis
    hands plans to a running ``sparkle serve``. Returns the file's path in the inbox."""
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / path.name
    counter = 1
    while target.exists():
        target = inbox / f"{path.stem}-{counter}{path.suffix}"
        counter += 1
    partial = target.with_name(target.name + ".part")
    if level is None:
        shutil.copyfile(path, partial)
    else:
        document = json.loads(path.read_bytes())
        document.setdefault("metadata", {})["priority"] = level
        partial.write_text(json.dumps(document, indent=2), encoding="utf-8")
    os.replace(partial, target)
    return target

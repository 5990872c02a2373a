"""Run lifecycle actions shared by the CLI and the dashboard: create, resume, cancel.

Each is a plain function on the run store and the dispatcher, so ``sparkle submit``,
``sparkle resume``, ``sparkle cancel`` and the dashboard's buttons and ``/api`` routes
change runs in exactly one way. Callers print or render the result.
"""

from __future__ import annotations

import enum
import getpass
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sparkle.dispatch import Dispatcher
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


def create_run(store: RunStore, dispatcher: Dispatcher, plan: MoviePlan,
               run_id: str | None = None) -> Created:
    """Create the run of ``plan`` (or find it) and queue its first unfinished stage.

    Raises:
      RunConflictError: a different plan already owns the run id.
      redis.RedisError: the run was created but its stage could not be queued.
    """
    run, created = store.create(plan, run_id)
    return Created(run, created, dispatcher.kick(run))


@dataclass(frozen=True)
class Resumed:
    """A run sent on again."""

    run: Run
    #: Stages whose checkpoints were removed so they run again (``--from``/``--only``).
    reset: list[str]
    #: The stage queued now, None when nothing was (done, or already on its way).
    queued: str | None


def resume_run(run: Run, dispatcher: Dispatcher, from_stage: str | None = None,
               only: str | None = None) -> Resumed:
    """Reset the stages asked for, lift a cancellation and queue the first unfinished
    stage (for workers of the dispatcher's broker).

    Raises:
      ConfigError: both ``from_stage`` and ``only``, or ``only`` with earlier stages undone.
      ValueError: an unknown stage.
    """
    from sparkle.runner import force_rerun

    reset = force_rerun(run, from_stage, only)
    if run.cancelled:
        run.set_cancelled(False)
    return Resumed(run, reset, dispatcher.kick(run))


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


def cancel_run(run: Run, by: str | None = None, settings: Settings | None = None,
               notify_in_background: bool = True) -> Cancelled:
    """Cancel ``run``: a running stage finishes, no further stage starts; only a resume
    continues it. Records a ``cancel`` event naming who asked (``by``, default user@host)
    and, given ``settings``, writes the run's ``cancelled`` notification to the outbox
    (delivered from this process's thread unless ``notify_in_background`` is False: a
    short-lived command then calls :func:`sparkle.notifications.flush`)."""
    state = run.state()
    status = state.status()
    if status is RunStatus.cancelled:
        return Cancelled(CancelResult.already_cancelled, None)
    if status is RunStatus.succeeded:
        return Cancelled(CancelResult.already_succeeded, None)
    stage = state.next_stage() or STAGES[-1]
    run.set_cancelled(True)
    run.append_event(stage, "cancel", max(1, state.attempts(stage)),
                     metadata={"by": by or f"{getpass.getuser()}@{socket.gethostname()}",
                               "previous_status": status.value})
    if settings is not None:
        from sparkle.notifications import run_ended

        run_ended(run, settings, "cancelled", background=notify_in_background)
    return Cancelled(CancelResult.cancelled, stage)


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

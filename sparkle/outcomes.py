"""What a stage message and an attempt come to: the outcomes the engine reports, the
errors it raises and records, and the worker that ran it."""

from __future__ import annotations

import enum
import os
import socket
import threading

from sparkle.errors import SparkleError

#: Error texts stored in checkpoints and events are cut to this many characters.
MAX_ERROR_CHARS = 2000


class StageFailed(SparkleError):
    """A stage failed permanently. Raised out of the actor so the message is dead-lettered."""


class Outcome(enum.StrEnum):
    """What one stage message came to."""

    #: The adapter ran and succeeded.
    succeeded = "succeeded"
    #: The stage was already done; nothing ran.
    skipped = "skipped"
    #: Another worker holds the run; nothing ran.
    busy = "busy"
    #: An earlier stage is not done; that one was queued instead.
    out_of_order = "out_of_order"
    #: The run is cancelled; nothing ran.
    cancelled = "cancelled"
    #: The lease was lost mid-stage; results were not written.
    lease_lost = "lease_lost"
    #: The run folder does not exist.
    missing = "missing"
    #: A copy of a message sent before the stage failed (a crashed worker's message that
    #: dramatiq redelivered late); nothing ran.
    stale = "stale"
    #: Every cluster-wide slot of the stage was taken (``SPARKLE_STAGE_CONCURRENCY``); the
    #: message was sent again with a delay.
    throttled = "throttled"
    #: The storage under the run's bookkeeping failed (full, read-only, I/O error): the
    #: stage is sent again after a backoff, no attempt counted (:mod:`sparkle.infrastructure`).
    infrastructure = "infrastructure"
    #: The run waits for a person's review decision (or was rejected); nothing ran.
    awaiting_review = "awaiting_review"


class Transient(Exception):
    """Wraps an adapter error worth another attempt (tenacity retries on this type)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Permanent(Exception):
    """Wraps an adapter error that no retry can fix."""

    def __init__(self, cause: BaseException, recorded: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.recorded = recorded


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


#: The host's name, read once: the system call would cost every stage a switch of threads.
HOSTNAME = socket.gethostname()


def worker_id() -> str:
    return f"{HOSTNAME}:{os.getpid()}:{threading.current_thread().name}"

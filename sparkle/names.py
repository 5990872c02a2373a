"""The names everything else agrees on: stages, the id alphabet, the statuses of runs and
checkpoints, the kinds of history events.

Standard library only, so the fast path of ``sparkle status`` can use them without
importing pydantic (see :mod:`sparkle.entry`).
"""

from __future__ import annotations

import enum
import re
from typing import Literal, get_args

#: A stage's name, as a type: the seven stages of a run, in the order they execute.
StageName = Literal["script", "images", "videos", "tts", "lipsync", "assemble", "qa"]

#: The seven stages of a run, in the order they execute (the names of :data:`StageName`).
STAGES: tuple[StageName, ...] = get_args(StageName)

#: Ids (shot, character, run) become folder and file names, so they are restricted to a
#: portable, path-safe alphabet: 1-64 characters, first a letter or digit, never "..".
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def is_safe_id(value: str) -> bool:
    """Whether ``value`` may name a run, shot or character folder."""
    return ID_RE.fullmatch(value) is not None and ".." not in value


class RunStatus(enum.StrEnum):
    """A run's status, derived from its checkpoints."""

    #: No stage has started.
    queued = "queued"
    #: Some stage started or finished and the run is not at its end.
    running = "running"
    #: A stage failed permanently; ``sparkle resume`` continues it.
    failed = "failed"
    #: Every stage succeeded.
    succeeded = "succeeded"
    #: Stopped by ``sparkle cancel``; only ``sparkle resume`` continues it.
    cancelled = "cancelled"
    #: Stopped at a review gate (or by QA's ``escalate``) until a person approves, re-rolls
    #: shots or rejects it (:mod:`sparkle.review`). Never re-driven while it waits.
    awaiting_review = "awaiting_review"
    #: A person rejected it at a review gate: finished, not an error, never re-driven.
    rejected = "rejected"


class CheckpointStatus(enum.StrEnum):
    """Where one stage stands, as its checkpoint (``checkpoints/<stage>.json``) says."""

    #: An attempt started and has not recorded its outcome.
    begin = "begin"
    #: The stage is done.
    success = "success"
    #: The last attempt failed for good.
    failed = "failed"


class EventKind(enum.StrEnum):
    """The kind of an event in a run's history (``status`` of a manifest event)."""

    #: An attempt of the stage started.
    begin = "begin"
    #: The attempt succeeded.
    success = "success"
    #: The attempt failed.
    fail = "fail"
    #: A forced re-run: the stage's checkpoint is being removed.
    reset = "reset"
    #: A re-enqueue by the reaper or an operator.
    redrive = "redrive"
    #: A cancellation request.
    cancel = "cancel"
    #: A failed (or finally successful) attempt of a call inside an adapter
    #: (:mod:`sparkle.retrying`).
    retry = "retry"
    #: Something accepted in the plan but worth knowing (recorded when the run is created).
    warning = "warning"
    #: The run stopped after the stage for a person's review (:mod:`sparkle.review`).
    review_requested = "review_requested"
    #: The person approved the stage's output.
    approved = "approved"
    #: The person had shots re-rolled.
    redo = "redo"
    #: The person rejected the run.
    rejected = "rejected"
    #: An earlier take put back in place (:mod:`sparkle.takes`).
    take = "take"


#: The event kinds that record a review: its request and the decisions answering it.
REVIEW_EVENTS: tuple[EventKind, ...] = (
    EventKind.review_requested, EventKind.approved, EventKind.redo, EventKind.rejected,
    EventKind.take,
)

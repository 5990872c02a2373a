"""The review state of a run: ``review.json``, present while a person has to decide.

A run that stopped at a review gate (``metadata.review_after``, ``SPARKLE_REVIEW_AFTER``) or
whose QA escalated holds a ``review.json`` saying which stage it stopped after, why, since
when, and the review's id; a decision removes it (approve, redo) or turns it into the
run's end (reject). Like a checkpoint it is state, written atomically; the manifest keeps
the history (``review_requested``, ``approved``, ``redo``, ``rejected`` events).

Its presence alone makes the run's status ``awaiting_review`` (or ``rejected``): the reaper
and a restarted ``sparkle serve`` leave such runs alone, and the engine runs no stage of
them, so a run can wait for as long as it takes, through any number of worker restarts.
"""

from __future__ import annotations

import contextlib
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparkle import atomic
from sparkle.runlayout import REVIEW_FILE
from sparkle.schemas import StageName

ReviewStatus = Literal["awaiting_review", "rejected"]

#: Why a run waits for a person.
ReviewReason = Literal["review_after", "qa_escalate", "qa_regenerate_limit"]


class ReviewState(BaseModel):
    """``runs/<run_id>/review.json``."""

    model_config = ConfigDict(extra="forbid")

    status: ReviewStatus
    #: Names this request; a decision may say which request it answers (compare and set).
    review_id: str = Field(min_length=1, max_length=64)
    #: The stage the run stopped after.
    stage: StageName
    reason: ReviewReason
    #: Seconds since the epoch.
    requested_at: float
    #: For ``rejected``: who decided, when, and their note.
    decided_by: str | None = None
    decided_at: float | None = None
    note: str | None = None


def read_review(run_dir: str) -> ReviewState | None:
    """The run's review state, or None when it waits for nobody.

    A damaged file still counts as a review waiting (after the stage its name cannot tell,
    so ``qa``): a run must not move on because its review file was cut short.
    """
    path = f"{run_dir}/{REVIEW_FILE}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    try:
        return ReviewState.model_validate_json(data)
    except ValidationError:
        return ReviewState(status="awaiting_review", review_id="damaged", stage="qa",
                           reason="review_after", requested_at=os.stat(path).st_mtime)


def write_review(run_dir: str, state: ReviewState) -> None:
    atomic.write_json(f"{run_dir}/{REVIEW_FILE}", state)


def clear_review(run_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{run_dir}/{REVIEW_FILE}")
        atomic.fsync_dir(run_dir)

"""What a run's files say: which stages are done, the next one, attempts, the run's status.

A :class:`RunState` is one look at a run folder (:class:`sparkle.run.Run`): each checkpoint
and the history are read at most once, when first needed, and every question is answered
from them. Checkpoints are the state; the manifest is the history; a stage is done when
either says it succeeded (the seed contract's resume rule).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sparkle import contract
from sparkle.contract import ATTEMPT_EVENTS
from sparkle.names import STAGES, CheckpointStatus, EventKind, RunStatus
from sparkle.review_state import ReviewState, read_review
from sparkle.runlayout import MANIFEST_FILE
from sparkle.schemas import Checkpoint, StageEvent

log = logging.getLogger(__name__)

#: The event kinds that show an attempt was started: its begin and its outcomes.
STARTED_ATTEMPT_EVENTS = (EventKind.begin, EventKind.success, EventKind.fail)


@dataclass(frozen=True)
class StageView:
    """What the run folder says about one stage, for status displays."""

    stage: str
    status: str
    attempt: int
    duration_sec: float | None
    error: str | None


@dataclass(frozen=True)
class RunSummary:
    """One run as a listing shows it: status, QA decision and the next stage to run."""

    run_id: str
    status: RunStatus
    qa_decision: str | None
    next_stage: str | None


class RunFiles(Protocol):
    """What a look reads of a run folder. :class:`sparkle.run.Run` is the one
    implementation; it builds its looks (:meth:`sparkle.run.Run.state`), so it is
    described here rather than imported."""

    @property
    def run_id(self) -> str: ...

    @property
    def dir(self) -> Path: ...

    @property
    def appended(self) -> list[tuple[int, int]]:
        """(end of the manifest before, end after) of each event this object appended."""

    @property
    def cancelled(self) -> bool: ...

    def checkpoint(self, stage: str) -> Checkpoint | None: ...

    def _events(self) -> tuple[list[StageEvent], int | None]:
        """The history, and how many bytes of ``manifest.json`` it was read from (None
        when it could not be read)."""

    def next_stage(self) -> str | None:
        """The next stage as a fresh look finds it."""


class RunState:
    """One look at a run's checkpoints and history, each file read at most once.

    The engine decides skip / next stage / attempt number / crash loop from one RunState
    instead of re-reading the manifest for every question.
    """

    def __init__(self, run: RunFiles) -> None:
        self.run = run
        self._checkpoints: dict[str, Checkpoint | None] = {}
        self._events: list[StageEvent] | None = None
        self._manifest_size: int | None = None
        self._appended_before = len(run.appended)
        self._checkpoint_before_history = False
        self._review: ReviewState | None = None
        self._review_read = False

    def checkpoint(self, stage: str) -> Checkpoint | None:
        if stage not in self._checkpoints:
            self._checkpoints[stage] = self.run.checkpoint(stage)
            if self._events is None:
                self._checkpoint_before_history = True
        return self._checkpoints[stage]

    @property
    def events(self) -> list[StageEvent]:
        if self._events is None:
            self._events, self._manifest_size = self.run._events()
        return self._events

    def appended_only_by_us(self) -> bool:
        """Whether every event added to the manifest since this look was read came from
        this process's :class:`sparkle.run.Run` object (checked by file offsets and the manifest's
        size now, without reading it).

        Every change to a run's stages by someone else (``sparkle resume --from/--only``,
        another worker's attempt) appends to the manifest before it touches a checkpoint,
        so while this holds, the stages this look found done are still done, provided
        the history was read before any checkpoint (``Run.state(history_first=True)``):
        else a reset could have appended before the history was read but removed a
        checkpoint after this look had read it. Without that order this says False.
        """
        if self._events is None or self._manifest_size is None \
                or self._checkpoint_before_history:
            return False
        expected = self._manifest_size
        for before, after in self.run.appended[self._appended_before:]:
            if before != expected:
                return False
            expected = after
        try:
            # open + fstat, not stat: over NFS only an open revalidates a cached size.
            fd = os.open(f"{self.run.dir}/{MANIFEST_FILE}", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            return os.fstat(fd).st_size == expected
        finally:
            os.close(fd)

    def last_event(self, stage: str, kinds: tuple[str, ...] | None = None) -> StageEvent | None:
        """The stage's last event (of ``kinds`` when given), None when it has none."""
        for event in reversed(self.events):
            if event.stage == stage and (kinds is None or event.status in kinds):
                return event
        return None

    def stage_done(self, stage: str) -> bool:
        """A stage is done when its checkpoint says success, or the manifest's last
        event for it is a success (the seed contract's resume rule: either one).

        The history is asked first: it is one file read once per look, where each
        checkpoint is a file of its own, so deciding that the stages before a run's
        current one are done reads no checkpoint. The two agree whenever the engine wrote
        them: a success event follows its success checkpoint; a reset appends its event
        before it removes the checkpoint, a failure before it writes its own; an attempt
        starts only on a stage that is not done; and a worker that lost the run's lease
        records no outcome (the engine fences failures as well as successes).
        """
        last = self.last_event(stage)
        if last is not None and last.status == EventKind.success:
            return True
        checkpoint = self.checkpoint(stage)
        if checkpoint is None or checkpoint.status != CheckpointStatus.success:
            return False
        # (a success the adapter wrote itself, as the seed contract's example stage does,
        # counts only once the engine recorded it)
        if not contract.engine_recorded(checkpoint, self.last_event(stage, ATTEMPT_EVENTS)):
            log.warning("run %s: checkpoint of %s says success, but the engine recorded no "
                        "success for that attempt (written by the adapter?); not done",
                        self.run.run_id, stage)
            return False
        return True

    def next_stage(self) -> str | None:
        """The first stage that is not done, or None when every stage is."""
        for stage in STAGES:
            if not self.stage_done(stage):
                return stage
        return None

    def next_stage_after(self, stage: str) -> str | None:
        """The first unfinished stage now that ``stage``, this look's next stage, succeeded.

        A fresh look at the run, made cheap: while only this process appended to the
        manifest since this look was read (:meth:`appended_only_by_us`), the stages before
        ``stage`` are still done, so only the later ones are read again.
        """
        # A stage before this one whose last event is a reset is being reset now: its
        # event came before the history was read but its checkpoint may have been removed
        # only after this look read it (a reset appends, then removes, stage by stage).
        if any((last := self.last_event(earlier)) is not None and last.status == EventKind.reset
               for earlier in STAGES[:STAGES.index(stage)]):
            return self.run.next_stage()
        found = None
        for later in STAGES[STAGES.index(stage) + 1:]:
            self._checkpoints.pop(later, None)  # read it afresh
            if not self.stage_done(later):
                found = later
                break
        # (checked after those reads, and the history was read before any checkpoint
        # (Run.state(history_first=True)): a reset appends its event before it removes
        # checkpoints, so a reset that the check misses had not removed any yet)
        return found if self.appended_only_by_us() else self.run.next_stage()

    def attempts(self, stage: str) -> int:
        """Attempts started for ``stage`` so far (the highest attempt number recorded)."""
        checkpoint = self.checkpoint(stage)
        highest = checkpoint.attempt if checkpoint is not None else 0
        for event in self.events:
            if event.stage == stage and event.status in STARTED_ATTEMPT_EVENTS:
                highest = max(highest, event.attempt)
        return highest

    def crashed_begins(self, stage: str) -> int:
        """``begin`` events of ``stage`` at the end of its history with no outcome after
        them: each is an attempt whose worker died before it could record one."""
        count = 0
        for event in reversed(self.events):
            if event.stage != stage:
                continue
            if event.status == EventKind.begin:
                count += 1
            elif event.status in (EventKind.success, EventKind.fail, EventKind.reset):
                break
        return count

    def review(self) -> ReviewState | None:
        """The run's ``review.json``: present while it waits for a person, or once rejected."""
        if not self._review_read:
            self._review = read_review(str(self.run.dir))
            self._review_read = True
        return self._review

    def status(self) -> RunStatus:
        """The run's status: rejected or awaiting_review (``review.json``), cancelled (marker
        present), else failed (a failed checkpoint), succeeded (every stage's checkpoint
        says success), running (any checkpoint), queued (none). The manifest is not read."""
        review = self.review()
        if review is not None:
            return RunStatus(review.status)
        if self.run.cancelled:
            return RunStatus.cancelled
        checkpoints = [self.checkpoint(stage) for stage in STAGES]
        if any(c is not None and c.status == CheckpointStatus.failed for c in checkpoints):
            return RunStatus.failed
        if all(c is not None and c.status == CheckpointStatus.success for c in checkpoints):
            return RunStatus.succeeded
        if any(c is not None for c in checkpoints):
            return RunStatus.running
        return RunStatus.queued

    def qa_decision(self) -> str | None:
        """The QA decision when QA has succeeded, else None."""
        checkpoint = self.checkpoint("qa")
        if checkpoint is None or checkpoint.status != CheckpointStatus.success:
            return None
        decision = checkpoint.metadata.get("decision")
        return str(decision) if decision is not None else None

    def stage_views(self) -> list[StageView]:
        """Per-stage status, attempts, duration and error."""
        views = []
        for stage in STAGES:
            checkpoint = self.checkpoint(stage)
            if checkpoint is None:
                views.append(StageView(stage, "pending", self.attempts(stage), None, None))
                continue
            duration = checkpoint.metadata.get("duration_sec")
            views.append(
                StageView(
                    stage,
                    checkpoint.status,
                    max(checkpoint.attempt, self.attempts(stage)),
                    float(duration) if isinstance(duration, int | float) else None,
                    checkpoint.error,
                )
            )
        return views

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.run.run_id,
            status=self.status(),
            qa_decision=self.qa_decision(),
            next_stage=self.next_stage(),
        )

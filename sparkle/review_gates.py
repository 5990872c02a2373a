"""Review gates: where a run stops for a person, asked by the engine around every stage.

A run stops for a person after the stages its plan names in ``metadata.review_after``
(``["images", "qa"]`` or ``"images,qa"``), or, when the plan says nothing, those in
``SPARKLE_REVIEW_AFTER``. When such a stage succeeds, the engine asks
:func:`after_success`, which opens a review instead of letting the next stage be queued:
``review.json`` is written (the run's status becomes ``awaiting_review``) and a
``review_requested`` event appended. QA's ``escalate`` does the same after ``qa``, and so
does QA's ``regenerate`` once it has re-rolled the shots it names
``SPARKLE_QA_REGENERATE_LIMIT`` times. A waiting run has no message anywhere and its status
keeps the reaper and a restarted ``sparkle serve`` away, so it waits as long as it takes.
Before a stage the engine asks :func:`holds`. The decisions that answer a review are in
:mod:`sparkle.review`.

Both questions are asked inside the run's lease.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from sparkle import unique
from sparkle.resets import apply_redo
from sparkle.review_state import ReviewReason, ReviewState, read_review, write_review
from sparkle.runstore import PLAN_FILE, Run, RunState
from sparkle.schemas import STAGES
from sparkle.settings import Settings
from sparkle.takes import PER_SHOT_STAGES

log = logging.getLogger(__name__)

#: Who QA's own re-rolls are recorded as.
QA_DECIDER = "qa-policy"


class _GateCache:
    """The gated stages of each run, by plan file identity: the plan never changes for a
    run, and the engine asks after every stage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple[int, int], tuple[str, ...], str]] = {}

    def get(self, run: Run, settings: Settings) -> tuple[str, ...]:
        info = os.stat(f"{run.dir}/{PLAN_FILE}")
        identity = (info.st_ino, info.st_mtime_ns)
        key = str(run.dir)
        with self._lock:
            cached = self._entries.get(key)
        if cached is not None and cached[0] == identity and cached[2] == settings.review_after:
            return cached[1]
        named = run.plan().review_after
        gated = settings.review_after_stages if named is None else named
        with self._lock:
            if len(self._entries) > 4096:
                self._entries.clear()
            self._entries[key] = (identity, gated, settings.review_after)
        return gated


_gates = _GateCache()


def gated_stages(run: Run, settings: Settings) -> tuple[str, ...]:
    """The stages after which ``run`` stops for a review."""
    return _gates.get(run, settings)


def open_review(run: Run, stage: str, reason: ReviewReason,
                metadata: dict[str, Any] | None = None) -> ReviewState:
    """Stop the run for a person after ``stage`` (nothing happens when it already waits).

    The state file comes first, then the event: a crash in between leaves a waiting run
    whose history lacks the request, never a history saying it waits while it does not.
    """
    existing = read_review(str(run.dir))
    if existing is not None:
        return existing
    state = ReviewState(status="awaiting_review", review_id=f"r-{unique.hex_token(32)}",
                        stage=stage, reason=reason, requested_at=time.time())  # type: ignore[arg-type]
    write_review(str(run.dir), state)
    run.append_event(stage, "review_requested", max(1, run.attempts(stage)),
                     metadata={"review_id": state.review_id, "reason": reason,
                               **(metadata or {})})
    log.info("run %s: waiting for review after %s (%s); `sparkle approve %s`", run.run_id,
             stage, reason, run.run_id)
    return state


def holds(run: Run, state: RunState, stage: str, settings: Settings) -> bool:
    """Whether ``stage``, the run's next, must not run now: the run waits for a person, or
    the gated stage before it succeeded without its review being opened (the worker died
    in between), in which case the review is opened now."""
    if state.review() is not None:
        return True
    index = STAGES.index(stage)
    if index == 0:
        return False
    before = STAGES[index - 1]
    for event in reversed(state.events):
        if event.stage != before:
            continue
        if event.status == "review_requested":
            return False
        if event.status == "success":
            if before not in gated_stages(run, settings):
                return False
            open_review(run, before, "review_after")
            return True
    return False


def after_success(run: Run, stage: str, settings: Settings) -> tuple[bool, str | None]:
    """The engine's question after ``stage`` succeeded: is the next stage this module's
    business? Returns (handled, next stage to queue): (True, None) when the run now waits
    for a person, (True, stage) after QA re-rolled the shots it names, (False, None) to
    carry on as usual."""
    if stage == "qa":
        handled = _after_qa(run, settings)
        if handled is not None:
            return handled
    if stage in gated_stages(run, settings):
        open_review(run, stage, "review_after")
        return True, None
    return False, None


def _after_qa(run: Run, settings: Settings) -> tuple[bool, str | None] | None:
    checkpoint = run.checkpoint("qa")
    metadata = checkpoint.metadata if checkpoint is not None else {}
    decision = metadata.get("decision")
    if decision == "escalate":
        open_review(run, "qa", "qa_escalate", {"rule": metadata.get("rule")})
        return True, None
    if decision != "regenerate" or not settings.qa_auto_regenerate:
        return None
    flagged = metadata.get("flagged_shots")
    named = [str(s) for s in metadata.get("regenerate_stages", []) if s in PER_SHOT_STAGES]
    if not isinstance(flagged, dict) or not flagged or not named:
        return None  # the engine's whole-run regenerate
    plan_shots = [shot.id for shot in run.plan().shots]
    shots = [shot for shot in plan_shots if shot in flagged]
    if not shots:
        return None
    done = sum(1 for e in run.events()
               if e.status == "redo" and e.metadata.get("by") == QA_DECIDER)
    if done >= settings.qa_regenerate_limit:
        open_review(run, "qa", "qa_regenerate_limit",
                    {"rerolls": done, "shots": shots, "rule": metadata.get("rule")})
        return True, None
    stage = min(named, key=STAGES.index)
    review_id = f"r-qa-{done + 1}"
    state = run.state(history_first=True)
    with run.locked():
        run.append_event("qa", "redo", max(1, state.attempts("qa")), metadata={
            "review_id": review_id, "by": QA_DECIDER, "shots": shots, "redo_stage": stage,
            "note": f"QA rule {metadata.get('rule')}: {', '.join(shots)}"})
        apply_redo(run, state, stage, shots, review_id, "qa")
    log.warning("run %s: QA decided regenerate; re-rolling %s of %s (%d of %d)", run.run_id,
                stage, ", ".join(shots), done + 1, settings.qa_regenerate_limit)
    return True, run.next_stage()

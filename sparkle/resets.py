"""Re-running a stage for some shots: the ``reset`` events that say which stages run
again, and for which shots.

A re-roll resets the named per-shot stage for the chosen shots, the per-shot stages that
read its output for those shots (:func:`sparkle.takes.dependent_stages`), and the stages
that work on the whole movie, whole; each reset is a ``reset`` event with the reason
:data:`sparkle.takes.SHOTS_RESET` and the removal of the stage's checkpoint. The engine
then runs each reset stage on a plan narrowed to those shots
(:func:`sparkle.takes.narrowed_shots`). Used by a person's decisions
(:mod:`sparkle.review`) and by QA's own re-rolls (:mod:`sparkle.review_gates`).
"""

from __future__ import annotations

from typing import Any

from sparkle.runstore import Run, RunState
from sparkle.takes import SHOTS_RESET, WHOLE_MOVIE_STAGES, dependent_stages, narrowed_shots


def apply_redo(run: Run, state: RunState, stage: str, shots: list[str], review_id: str,
               cause: str) -> list[str]:
    """Reset ``stage`` for ``shots`` and what depends on it; returns the stages reset."""
    reset_stage(run, stage, shots, review_id, cause)
    return [stage, *reset_after(run, state, stage, shots, review_id, cause)]


def reset_after(run: Run, state: RunState, stage: str, shots: list[str], review_id: str,
                cause: str = "redo") -> list[str]:
    """Reset what reads ``stage``'s output of ``shots``: the per-shot stages that depend on
    it, for those shots, and the whole-movie stages; only those that ran (a stage that has
    not run yet will run for every shot anyway)."""
    reset: list[str] = []
    for later in dependent_stages(stage):
        if state.stage_done(later):
            reset_stage(run, later, shots, review_id, cause)
            reset.append(later)
            continue
        pending = narrowed_shots(state.events, later)
        if pending is not None:  # already to re-run for other shots: for these too
            plan_ids = [s.id for s in run.plan().shots]
            wanted = [s for s in plan_ids if s in pending or s in shots]
            reset_stage(run, later, wanted, review_id, cause)
            reset.append(later)
    for whole in WHOLE_MOVIE_STAGES:
        if state.stage_done(whole):
            reset_stage(run, whole, None, review_id, cause)
            reset.append(whole)
    return reset


def reset_stage(run: Run, stage: str, shots: list[str] | None, review_id: str,
                cause: str) -> None:
    """Append ``stage``'s ``reset`` event (for ``shots``, or whole when None) and remove its
    checkpoint, so that the engine runs it again."""
    metadata: dict[str, Any] = {"reason": SHOTS_RESET, "review_id": review_id, "cause": cause}
    if shots is not None:
        metadata["shots"] = shots
    run.append_event(stage, "reset", max(1, run.attempts(stage)), metadata=metadata)
    run.remove_checkpoint(stage)

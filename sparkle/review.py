"""A person's decisions on a run waiting for review, and what a page shows of it.

A run waits after a review gate (:mod:`sparkle.review_gates`) until a person decides.
The decisions are service functions under the CLI and the dashboard, each appended to the
manifest with who, when, the note and the review id:

- :func:`approve`: the run continues with its next stage;
- :func:`redo`: a per-shot stage (``images``, ``videos``, ``tts``, ``lipsync``) runs again
  for the named shots only, then the stages that depend on them (:mod:`sparkle.resets`,
  :mod:`sparkle.takes`);
- :func:`reject`: the run ends as ``rejected`` (not an error; never re-driven);
- :func:`use_take`: an earlier take of a shot is put back in place;

and for pages: :func:`review_view` (what waits, since when, the files, the history) and
:func:`takes_of` (every take of every shot).

**Safety.** A decision holds the run's lease (so no worker is inside the run: the one that
opened the review may not have let go of it yet) and the run folder's file lock (so two
deciders in different processes, or on different hosts of a shared runs folder, take
turns), and applies only while ``review.json`` names the review it answers: of two people
deciding at once exactly one wins, and the other is told who did.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import redis

from sparkle import notifications
from sparkle.dispatch import Dispatcher
from sparkle.errors import DecisionConflictError, ReviewError, RunBusyError
from sparkle.lease import Lease
from sparkle.resets import apply_redo, reset_after
from sparkle.review_state import ReviewState, clear_review, read_review, write_review
from sparkle.runstore import Run, RunStore
from sparkle.schemas import REVIEW_EVENTS, AssetRefs
from sparkle.settings import Settings
from sparkle.takes import PER_SHOT_STAGES, SHOT_FIELDS, list_takes, restore_take

log = logging.getLogger(__name__)


#: Seconds between attempts to take the run's lease while a worker holds it.
LEASE_POLL_SEC = 0.05

#: Longest note kept with a decision, in characters.
MAX_NOTE_CHARS = 2000


class Services(Protocol):
    """What a decision needs: a run store, a dispatcher, the Redis client holding leases,
    and the settings (the engine has them all, and so has the dashboard's site)."""

    store: RunStore
    dispatcher: Dispatcher
    client: redis.Redis
    settings: Settings


@dataclass(frozen=True)
class Decision:
    """A decision that was applied."""

    run_id: str
    #: ``approved``, ``redo``, ``rejected`` or ``take``.
    kind: str
    #: The review it answered.
    review_id: str
    #: The stage the run had stopped after.
    stage: str
    by: str
    note: str | None
    #: Seconds since the epoch.
    at: float
    #: Seconds the run had waited for it.
    waited_sec: float
    #: For ``redo`` and ``take``: the shots, and the stages reset to run again.
    shots: list[str] = field(default_factory=list)
    stages_reset: list[str] = field(default_factory=list)
    #: Whether the review is closed (a ``take`` that re-runs nothing leaves it open).
    closed: bool = True
    #: The stage sent to the workers (None: nothing queued, or left to the caller).
    queued: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_who() -> str:
    """The OS user deciding from this terminal."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def approve(services: Services, run_id: str, who: str | None = None, note: str | None = None,
            review_id: str | None = None, queue: bool = True) -> Decision:
    """Let the waiting run continue with its next stage.

    Parameters:
      who: who decided (default: the OS user).
      note: why, kept in the manifest.
      review_id: the review being answered; when given, the decision applies only while
        that review is still the one waiting (what a page shown some time ago should send).
      queue: send the next stage to the workers (False: the caller works the run itself).

    Raises:
      ReviewError: the run is not waiting for a review.
      DecisionConflictError: someone else answered that review first.
    """
    run = services.store.run(run_id)
    with _deciding(services, run, review_id) as review:
        decision = _record(run, review, "approved", who, note)
        clear_review(str(run.dir))
    return _queued(services, run, decision, queue)


def reject(services: Services, run_id: str, note: str, who: str | None = None,
           review_id: str | None = None) -> Decision:
    """End the waiting run as ``rejected``: not an error, never re-driven or resumed.

    Raises:
      ReviewError: the run is not waiting for a review, or no note was given.
      DecisionConflictError: someone else answered that review first.
    """
    if not note or not note.strip():
        raise ReviewError("a rejection needs a note saying why (--note TEXT)")
    run = services.store.run(run_id)
    with _deciding(services, run, review_id) as review:
        decision = _record(run, review, "rejected", who, note)
        write_review(str(run.dir), review.model_copy(update={
            "status": "rejected", "decided_by": decision.by, "decided_at": decision.at,
            "note": decision.note}))
    notifications.run_ended(run, services.settings, "rejected", error=note)
    return decision


def redo(services: Services, run_id: str, shots: list[str], stage: str | None = None,
         who: str | None = None, note: str | None = None, review_id: str | None = None,
         queue: bool = True) -> Decision:
    """Re-roll ``stage`` (default: the stage the run stopped after) for ``shots`` only.

    Every other shot keeps its files. The stage runs on a plan narrowed to those shots
    with a new seed per take; the per-shot stages that read its output run again for them;
    ``assemble`` and ``qa`` run again whole, when they had run. Earlier takes are kept.

    Raises:
      ReviewError: the run is not waiting; a shot id is not in the plan; the stage is not a
        per-shot stage, or the run has not reached it.
      DecisionConflictError: someone else answered that review first.
    """
    run = services.store.run(run_id)
    wanted = _check_shots(run, shots)
    with _deciding(services, run, review_id) as review:
        stage = _check_stage(run, review, stage)
        decision = _record(run, review, "redo", who, note, shots=wanted,
                           extra={"redo_stage": stage})
        reset = apply_redo(run, run.state(history_first=True), stage, wanted,
                           review.review_id, "redo")
        clear_review(str(run.dir))
    decision = _with(decision, stages_reset=reset)
    return _queued(services, run, decision, queue)


def use_take(services: Services, run_id: str, shot: str, take: int, stage: str | None = None,
             who: str | None = None, note: str | None = None, review_id: str | None = None,
             queue: bool = True) -> Decision:
    """Put take ``take`` of ``shot``'s ``stage`` (default: the stage the run stopped after)
    back in place while the run waits.

    The stages that read it are reset for that shot, as by :func:`redo`; when there are
    none yet (the run stopped right after the stage) the review stays open, so the person
    can still compare, re-roll or approve.

    Raises:
      ReviewError: the run is not waiting, the shot or the take does not exist.
      DecisionConflictError: someone else answered that review first.
    """
    run = services.store.run(run_id)
    wanted = _check_shots(run, [shot])
    with _deciding(services, run, review_id) as review:
        stage = _check_stage(run, review, stage)
        try:
            refs = restore_take(run.dir, run.asset_refs(), shot, stage, take)
        except KeyError as exc:
            raise ReviewError(f"run {run_id}: {exc.args[0]} (`sparkle takes {run_id} --shot "
                              f"{shot}` lists them)") from None
        run.save_asset_refs(refs)
        state = run.state(history_first=True)
        reset = reset_after(run, state, stage, wanted, review.review_id)
        decision = _record(run, review, "take", who, note, shots=wanted,
                           extra={"take": take, "take_stage": stage,
                                  "stages_reset": reset}, closes=bool(reset))
        if reset:
            clear_review(str(run.dir))
    decision = _with(decision, stages_reset=reset, closed=bool(reset))
    return _queued(services, run, decision, queue) if reset else decision


def takes_of(store: RunStore, run_id: str, shot: str | None = None
             ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Shot → stage → its takes (see :func:`sparkle.takes.list_takes`), for one shot or
    every shot of the plan.

    Raises:
      ReviewError: ``shot`` is not in the plan.
    """
    run = store.run(run_id)
    shots = _check_shots(run, [shot]) if shot else [s.id for s in run.plan().shots]
    refs = run.asset_refs()
    return {one: list_takes(run.dir, refs, one) for one in shots}


def review_view(store: RunStore, run_id: str) -> dict[str, Any]:
    """What a page needs to show a run's review: its status, the review waiting (with how
    long it has waited and the files to look at) or None, and every review event so far
    (requests and decisions, oldest first, with who, when, note and shots)."""
    run = store.run(run_id)
    waiting = read_review(str(run.dir))
    shown: dict[str, Any] | None = None
    if waiting is not None:
        shown = {**waiting.model_dump(mode="json"),
                 "waiting_sec": round(max(0.0, time.time() - waiting.requested_at), 1)
                 if waiting.status == "awaiting_review" else None,
                 "files": review_files(run, waiting.stage)}
    history = [{"kind": e.status, "stage": e.stage, "at": e.timestamp, **e.metadata}
               for e in run.events() if e.status in REVIEW_EVENTS]
    return {"run_id": run_id, "status": run.status().value, "review": shown,
            "history": history}


def review_files(run: Run, stage: str) -> list[str]:
    """The files a person should look at after ``stage`` (paths in the run folder)."""
    refs: AssetRefs = run.asset_refs()
    if stage in SHOT_FIELDS:
        files: list[str] = []
        for shot in run.plan().shots:
            entry = refs.shots.get(shot.id)
            for name in SHOT_FIELDS[stage] if entry is not None else ():
                value = getattr(entry, name)
                files += value if isinstance(value, list) else [value] if value else []
        return files
    return list(refs.extras.values())


@contextlib.contextmanager
def _deciding(services: Services, run: Run, review_id: str | None) -> Iterator[ReviewState]:
    """Hold the run's lease and folder lock, and yield the review being answered.

    Raises ReviewError when the run waits for nothing, DecisionConflictError when
    ``review_id`` no longer waits (another decision won).
    """
    _waiting(run, review_id)  # refuse at once, without waiting for a lease, when not waiting
    settings = services.settings
    lease = Lease(services.client, settings.namespace, run.run_id, settings.lease_ttl_sec,
                  lock_dir=services.dispatcher.backend.lock_dir(run.dir))
    deadline = time.monotonic() + settings.decision_wait_sec
    # A worker may still hold the run for a moment after opening the review; so may a
    # decision made at the same time (which then wins).
    while not lease.acquire():
        if time.monotonic() > deadline:
            raise RunBusyError(f"run {run.run_id} is held by a worker or another decision; "
                              "try again in a moment")
        time.sleep(LEASE_POLL_SEC)
    try:
        lease.start_heartbeat()
        with run.locked():
            yield _waiting(run, review_id)
    finally:
        lease.release()


def _waiting(run: Run, review_id: str | None) -> ReviewState:
    review = read_review(str(run.dir))
    if review is not None and review.status == "awaiting_review" and (
            review_id is None or review.review_id == review_id):
        return review
    last = _last_decision(run, review_id)
    if review_id is not None and last is not None:
        raise DecisionConflictError(
            f"run {run.run_id}: review {review_id} was already answered: {last}; "
            "this decision was not applied")
    if review is not None and review.status == "rejected":
        raise ReviewError(f"run {run.run_id} was rejected by {review.decided_by}"
                          f"{': ' + review.note if review.note else ''}; nothing to decide")
    if review is not None:
        raise DecisionConflictError(
            f"run {run.run_id} now waits for review {review.review_id}, not {review_id}; "
            "look at it again before deciding")
    status = run.status().value
    said = f" (last decision: {last})" if last else ""
    raise ReviewError(f"run {run.run_id} is not waiting for a review (status {status}){said}; "
                      "decisions apply only to runs with status awaiting_review")


def _last_decision(run: Run, review_id: str | None) -> str | None:
    for event in reversed(run.events()):
        if event.status in ("approved", "redo", "rejected") and (
                review_id is None or event.metadata.get("review_id") == review_id):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.timestamp))
            return f"{event.status} by {event.metadata.get('by')} at {when}"
    return None


def _record(run: Run, review: ReviewState, kind: str, who: str | None, note: str | None,
            shots: list[str] | None = None, extra: dict[str, Any] | None = None,
            closes: bool = True) -> Decision:
    by = (who or "").strip() or default_who()
    text = note.strip()[:MAX_NOTE_CHARS] if note and note.strip() else None
    now = time.time()
    waited = round(max(0.0, now - review.requested_at), 3)
    run.append_event(review.stage, kind, max(1, run.attempts(review.stage)), metadata={
        "review_id": review.review_id, "by": by, "note": text, "waited_sec": waited,
        **({"shots": shots} if shots else {}), **(extra or {})})
    log.info("run %s: %s by %s after %s", run.run_id, kind, by, review.stage)
    return Decision(run.run_id, kind, review.review_id, review.stage, by, text, now, waited,
                    shots=list(shots or []), closed=closes)


def _with(decision: Decision, **changes: Any) -> Decision:
    return Decision(**{**asdict(decision), **changes})


def _queued(services: Services, run: Run, decision: Decision, queue: bool) -> Decision:
    if not queue:
        return decision
    return _with(decision, queued=services.dispatcher.kick(run))


def _check_shots(run: Run, shots: list[str]) -> list[str]:
    """``shots`` in plan order; refuses ids the plan does not have."""
    plan_ids = [shot.id for shot in run.plan().shots]
    unknown = [shot for shot in shots if shot not in plan_ids]
    if unknown or not shots:
        named = "no shot " + ", ".join(unknown) if shots else "no shots named"
        raise ReviewError(
            f"run {run.run_id}: {named} in its plan; its shots are {', '.join(plan_ids)}")
    return [shot for shot in plan_ids if shot in shots]


def _check_stage(run: Run, review: ReviewState, stage: str | None) -> str:
    chosen = stage or review.stage
    if chosen not in PER_SHOT_STAGES:
        raise ReviewError(
            f"{chosen} works on the whole movie, not per shot; name the stage to re-roll "
            f"with --stage ({', '.join(PER_SHOT_STAGES)})")
    if not run.stage_done(chosen):
        raise ReviewError(f"run {run.run_id} has not reached {chosen} yet (it stopped after "
                          f"{review.stage}); only a stage that has run can be re-rolled")
    return chosen

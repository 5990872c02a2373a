"""Cancel and resume asked by someone without the run's lease, carried out by its holder.

Every write to a run's state (``manifest.json``, ``asset_refs.json``, checkpoints) comes
from the holder of the run's lease, so that two hosts sharing the runs folder never write
one run's files at once (docs/RELIABILITY.md, "Who writes a run's files"). ``sparkle
cancel`` and ``sparkle resume`` come at any moment, also while a worker holds the run for
a stage of many minutes. A command that finds the lease free takes it and writes; one that
finds it held leaves its request in a file of its own, which only it creates, and whoever
holds the lease next carries it out: the worker holding it now (before it releases the
run), else the next worker or command that takes it.

- **cancel**: the ``cancelled`` marker is the request. It takes effect at once (no stage
  starts on a run that has it) and carries an id, who asked, the status before and the
  stage running or next then; the holder records the ``cancel`` event naming that id
  unless the history has it already (a stage's worker, before the stage's outcome, so
  the history reads as it happened). A marker without an id (written by an older
  Sparkle) asks for nothing more.
- **resume**: ``.requests/<time>-<random>.json`` names the stages to reset and the cancel
  request the resume lifts. The holder records that cancel's event if nobody did, resets
  the stages, removes the marker when it is still the one the resume lifted (a cancel
  asked after the resume stands), then deletes the request. Requests are carried out in
  the order made, then the marker's pending cancel, so the history keeps their order.

Only the lease holder calls :func:`carry_out`; the lease makes it the only one at a time,
so a request needs no claim. A holder that dies half-way leaves the request for the next
one (resets and the ``cancel`` check are safe to do twice).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from sparkle import atomic, unique
from sparkle.errors import ConfigError
from sparkle.runlayout import REQUESTS_DIR
from sparkle.runstore import CANCELLED_FILE, Run
from sparkle.schemas import STAGES
from sparkle.stages import check_stage

log = logging.getLogger(__name__)

#: Requests larger than this are not read (they are a few hundred bytes).
MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class CancelRequest:
    """What the ``cancelled`` marker says."""

    #: Names the ``cancel`` event that records it; "" for a marker that asks for no event.
    request: str
    by: str = ""
    previous_status: str = ""
    #: The stage running or next when it was asked ("": the run's next stage when recorded).
    stage: str = ""
    requested_at: float = 0.0


@dataclass(frozen=True)
class ResumeRequest:
    """A resume left for the lease holder."""

    #: The file it is in.
    name: str
    #: The stages to reset, in order, and why (``--from``, ``--only``).
    stages: list[str]
    reason: str
    #: The cancel request the resume lifts; None: the run was not cancelled.
    lifts: CancelRequest | None


@dataclass(frozen=True)
class CarriedOut:
    """What :func:`carry_out` did."""

    #: A ``cancel`` event was recorded.
    cancel: bool = False
    #: Resume requests carried out (the stages of each were reset).
    resumed: int = 0


# -- the stages a resume resets ------------------------------------------------------------


def stages_to_reset(run: Run, from_stage: str | None = None,
                    only: str | None = None) -> tuple[list[str], str]:
    """The stages ``--from``/``--only`` reset, and the reason recorded; writes nothing.

    ``from_stage``: that stage and every later one. ``only``: that one stage, refused when
    an earlier stage is not done (its inputs would be missing).

    Raises:
      ConfigError: both given, an unknown stage, or ``only`` with earlier stages undone.
    """
    if from_stage and only:
        raise ConfigError("use --from or --only, not both")
    if only:
        check_stage(only)
        missing = [s for s in STAGES[: STAGES.index(only)] if not run.stage_done(s)]
        if missing:
            raise ConfigError(
                f"cannot re-run only {only!r} of run {run.run_id}: earlier stage(s) "
                f"{', '.join(missing)} not done; use --from {missing[0]} instead"
            )
        return [only], "--only"
    if from_stage:
        check_stage(from_stage)
        return list(STAGES[STAGES.index(from_stage):]), "--from"
    return [], ""


def reset_stages(run: Run, stages: list[str], reason: str) -> None:
    """Force ``stages`` to run again: a ``reset`` event each, and their checkpoints removed
    (the lease holder only)."""
    for stage in stages:
        run.append_event(
            stage, "reset", max(1, run.attempts(stage)), metadata={"reason": reason}
        )
        run.remove_checkpoint(stage)


def force_rerun(run: Run, from_stage: str | None = None, only: str | None = None) -> list[str]:
    """Reset the stages ``--from``/``--only`` name (:func:`stages_to_reset`) now, as the
    lease holder; returns them."""
    stages, reason = stages_to_reset(run, from_stage, only)
    reset_stages(run, stages, reason)
    return stages


# -- cancel --------------------------------------------------------------------------------


def cancel_request(run: Run) -> CancelRequest | None:
    """The run's cancel marker, None when it has none."""
    try:
        data = _read_small(f"{run.dir}/{CANCELLED_FILE}")
    except FileNotFoundError:
        return None
    try:
        return _cancel_from(json.loads(data) if data.strip() else {})
    except ValueError:
        return CancelRequest(request="")


def _cancel_from(fields: Any) -> CancelRequest:
    try:
        return CancelRequest(request=str(fields["request"]), by=str(fields.get("by", "")),
                             previous_status=str(fields.get("previous_status", "")),
                             stage=str(fields.get("stage", "")),
                             requested_at=float(fields.get("requested_at", 0.0)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return CancelRequest(request="")  # (an older Sparkle's empty marker)


def request_cancel(run: Run, by: str, previous_status: str, stage: str) -> CancelRequest:
    """Write the cancel marker with a new request: the run is cancelled from now on; its
    ``cancel`` event is the lease holder's to record (:func:`carry_out`)."""
    request = CancelRequest(request=unique.hex_token(64), by=by,
                            previous_status=previous_status, stage=stage,
                            requested_at=time.time())
    atomic.write_bytes(run.dir / CANCELLED_FILE, json.dumps(asdict(request)).encode())
    return request


def cancel_recorded(run: Run, request: str) -> bool:
    """Whether the history holds the ``cancel`` event of ``request``."""
    return any(e.status == "cancel" and e.metadata.get("request") == request
               for e in run.events())


def record_cancel(run: Run, request: CancelRequest) -> None:
    """Record the ``cancel`` event of ``request`` (the lease holder only): on the stage
    running or next when it was asked, naming who asked and the status before."""
    state = run.state()
    stage = request.stage if request.stage in STAGES else state.next_stage() or STAGES[-1]
    run.append_event(stage, "cancel", max(1, state.attempts(stage)), metadata={
        "by": request.by, "previous_status": request.previous_status,
        "request": request.request, "requested_at": request.requested_at})


# -- resume --------------------------------------------------------------------------------


def request_resume(run: Run, stages: list[str], reason: str,
                   lifts: CancelRequest | None) -> str:
    """Leave a resume for the lease holder; returns the request's name."""
    folder = run.dir / REQUESTS_DIR
    folder.mkdir(exist_ok=True)
    name = f"{time.time_ns():020d}-{unique.hex_token(32)}.json"
    body = {"stages": stages, "reason": reason,
            "lifts": None if lifts is None else asdict(lifts)}
    atomic.write_bytes(folder / name, json.dumps(body).encode())
    return name


def resume_pending(run: Run, name: str) -> bool:
    """Whether the resume request ``name`` waits for the lease holder still."""
    return os.path.exists(f"{run.dir}/{REQUESTS_DIR}/{name}")


def resume_requests(run: Run, set_aside: bool = False) -> list[ResumeRequest]:
    """The resume requests waiting, in the order they were made. One that cannot be read
    is left out; with ``set_aside`` (the lease holder) it is moved aside (logged), so it
    does not stop the others."""
    folder = f"{run.dir}/{REQUESTS_DIR}"
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:
            body: Any = json.loads(_read_small(f"{folder}/{name}"))
            stages = [check_stage(str(s)) for s in body["stages"]]
            lifts = body.get("lifts")
            found.append(ResumeRequest(name, stages, str(body.get("reason", "")),
                                       None if lifts is None else _cancel_from(lifts)))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            if not set_aside:
                continue
            log.error("run %s: resume request %s/%s cannot be read (%s); moved aside",
                      run.run_id, folder, name, exc)
            with contextlib.suppress(OSError):
                os.replace(f"{folder}/{name}", f"{folder}/{name}.unreadable")
    return found


def resume_here(run: Run, stages: list[str], reason: str, lifts: CancelRequest | None) -> None:
    """Carry out a resume (the lease holder only): record the cancel it lifts unless that
    is recorded, reset ``stages``, then lift the cancellation if the marker still holds
    that request (a cancel asked after the resume stands)."""
    if lifts is None:
        reset_stages(run, stages, reason)
        return
    if lifts.request and not cancel_recorded(run, lifts.request):
        record_cancel(run, lifts)
    reset_stages(run, stages, reason)
    marker = cancel_request(run)
    if marker is not None and marker.request == lifts.request:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{run.dir}/{CANCELLED_FILE}")


def lifted_by_a_resume(run: Run, marker: CancelRequest) -> bool:
    """Whether a resume waiting for the lease holder lifts the cancel ``marker`` holds
    (a cancel asked now is then a new one, not "already cancelled")."""
    return any(r.lifts is not None and r.lifts.request == marker.request
               for r in resume_requests(run))


# -- the holder ----------------------------------------------------------------------------


def waiting(run: Run) -> bool:
    """Whether something may wait for the lease holder: a cheap look (two ``stat``) for
    every stage message; :func:`carry_out` reads what is there."""
    return os.path.exists(f"{run.dir}/{CANCELLED_FILE}") \
        or os.path.isdir(f"{run.dir}/{REQUESTS_DIR}")


def carry_out(run: Run) -> CarriedOut:
    """Do what commands left for the lease holder (call only holding the run's lease):
    each resume request in order, then the marker's pending cancel (a cancel a resume
    lifted came before that resume; one it did not lift came after it)."""
    resumed = 0
    for request in resume_requests(run, set_aside=True):
        resume_here(run, request.stages, request.reason, request.lifts)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{run.dir}/{REQUESTS_DIR}/{request.name}")
        resumed += 1
    return CarriedOut(record_pending_cancel(run), resumed)


def record_pending_cancel(run: Run) -> bool:
    """Record the cancels asked and not recorded yet (the lease holder only), in the order
    asked: those the waiting resumes lift, then the marker's. Returns whether it recorded
    the marker's."""
    for request in resume_requests(run):
        if request.lifts is not None and request.lifts.request \
                and not cancel_recorded(run, request.lifts.request):
            record_cancel(run, request.lifts)
    marker = cancel_request(run)
    if marker is None or not marker.request or cancel_recorded(run, marker.request):
        return False
    record_cancel(run, marker)
    return True


def _read_small(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(MAX_REQUEST_BYTES)

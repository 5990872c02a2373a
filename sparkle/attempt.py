"""One attempt of one stage (DESIGN.md's "Stage execution", steps 3 to 5): the ``begin``
records, the adapter in its stage context, its outputs flushed to disk, and, only while
the run's lease is still ours (fencing), the merged refs, the ``success`` checkpoint and
event. A failure is recorded as the attempt's ``fail`` event and raised as
:class:`~sparkle.outcomes.Transient` or :class:`~sparkle.outcomes.Permanent` for the
engine's retry policy."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from dramatiq.middleware import Interrupt, TimeLimitExceeded

from sparkle import atomic, contract, handover, metrics, retrying, takes
from sparkle.errors import LeaseLostError
from sparkle.infrastructure import (
    InfrastructureError,
    bookkeeping,
    from_os_error,
    is_infrastructure,
)
from sparkle.lease import Lease
from sparkle.outcomes import Permanent, Transient, error_text, worker_id
from sparkle.runstore import Run
from sparkle.schemas import AssetRefs, Checkpoint
from sparkle.settings import Settings
from sparkle.stages import Adapter, normalize_result
from sparkle.turn import away

log = logging.getLogger("sparkle.engine")


def run_attempt(run: Run, stage: str, adapter: Adapter, attempt: int, lease: Lease,
                settings: Settings, shots: list[str] | None = None) -> None:
    """Attempt ``attempt`` of ``stage``: ``begin``, the adapter, then (its outputs on disk
    and the lease still ours) the merged refs, the ``success`` checkpoint and event.

    Raises:
      Transient / Permanent: the adapter failed (its ``fail`` event is recorded).
      InfrastructureError: the storage failed; the attempt is closed as held back.
      LeaseLostError: the lease was lost; nothing more is recorded.
    """
    if lease.lost.is_set():
        raise LeaseLostError(f"lease of run {run.run_id} lost before attempt {attempt}")
    begin_meta = {"adapter": adapter.name, "worker": worker_id()}
    # A lost ``begin`` (power cut) only means a crash goes uncounted: not worth fsyncs.
    # (writes wait on the disk: away from the bookkeeping turn, sparkle.turn)
    with away():
        run.write_checkpoint(Checkpoint(stage=stage, status="begin", timestamp=time.time(),  # type: ignore[arg-type]
                                        attempt=attempt, metadata=begin_meta), durable=False)
        run.append_event(stage, "begin", attempt, metadata=begin_meta, durable=False)
    metrics.attempt_started(stage)
    log.debug("run %s stage %s: attempt %d with %s", run.run_id, stage, attempt, adapter.name)
    started = time.monotonic()
    try:
        # (the bytes: what the stage changes is saved as a merge against them)
        with bookkeeping("cannot read"):
            plan, (refs_before, base) = run.plan(), run.asset_refs_as_read()
        # (read before the adapter runs: adapters may change the refs they are given)
        before = set(_local_paths(refs_before))
        # (the stage is made current for sparkle.retry, which records in its manifest)
        # (away from the bookkeeping turn: the other worker threads keep theirs meanwhile)
        with away(), retrying.stage_context(run, stage, attempt, lease.lost, settings):
            # (an absolute run folder: a path the adapter builds from it and stores,
            # as the seed contract's example does, is then one the engine can place)
            if shots is None:
                result = adapter.fn(plan, refs_before, run.dir.absolute())
            else:
                result = takes.run_narrowed(adapter.fn, stage, plan, refs_before,
                                            run.dir.absolute(), shots)
        refs, metadata = normalize_result(result)
        contract.relative_refs(refs, run.dir, stage)
        outputs = _check_paths(run, refs)
        # The success recorded next survives a power cut: so must what it names.
        if outputs:
            # Changed since the refs' last save (only the engine saves them, never
            # during the adapter): any attempt since, a failed one too, may have
            # rewritten a file they name. By the file system's own clock.
            saved = run.asset_refs_saved_at()
            with bookkeeping("cannot flush to disk"):
                atomic.sync_outputs([run.dir / p for p in outputs if p not in before],
                                    run.dir, since=saved,
                                    named_before=[run.dir / p for p in outputs if p in before])
    except InfrastructureError as exc:
        record_held_back(run, stage, attempt, exc, started)
        raise
    except TimeLimitExceeded:
        raise Permanent(
            TimeoutError(f"{stage} exceeded its time limit (SPARKLE_STAGE_TIME_LIMIT_SEC)")
        ) from None
    except Interrupt:
        raise
    except Exception as exc:
        storage = _run_storage_error(run, exc)
        if storage is not None:
            # The adapter met the run folder's disk full (or read-only, or failing):
            # the same infrastructure failure as the engine's own writes, not the stage's.
            fence(run, lease, f"attempt {attempt} held back")
            failure = from_os_error(storage)
            record_held_back(run, stage, attempt, failure, started)
            raise failure from exc
        duration = round(time.monotonic() - started, 3)
        transient = adapter.is_transient(exc)
        log.warning("run %s stage %s: attempt %d failed (%s): %s", run.run_id, stage,
                    attempt, "transient" if transient else "permanent", error_text(exc))
        fence(run, lease, f"attempt {attempt} failed")
        try:
            run.append_event(stage, "fail", attempt, error=error_text(exc),
                             metadata={"transient": transient, "duration_sec": duration})
        except OSError as record_exc:
            if not is_infrastructure(record_exc):
                raise
            # (the adapter's own error is probably the same full disk: it is not held
            # against the stage, and it is the more telling cause)
            failure = from_os_error(record_exc)
            log.warning("run %s stage %s: attempt %d failed (%s) and its failure cannot "
                        "be recorded: %s", run.run_id, stage, attempt, error_text(exc),
                        failure)
            raise failure from exc
        metrics.attempt_finished(stage, duration, "transient" if transient else "permanent")
        raise (Transient(exc) if transient else Permanent(exc, recorded=True)) from exc
    duration = round(time.monotonic() - started, 3)
    # Fencing: a worker paused past its lease must not overwrite the new owner's work.
    fence(run, lease, f"attempt {attempt} succeeded")
    success_meta: dict[str, Any] = {
        **metadata,
        "adapter": adapter.name,
        "duration_sec": duration,
        "attempt": attempt,
    }
    checkpointed = False
    try:
        with away():  # (the writes wait on the disk)
            # (a cancel asked while the adapter ran goes before the success, as it happened)
            if handover.waiting(run):
                handover.record_pending_cancel(run)
            run.merge_asset_refs(base, refs)
            run.write_checkpoint(Checkpoint(stage=stage, status="success", timestamp=time.time(),  # type: ignore[arg-type]
                                            attempt=attempt, metadata=success_meta))
            checkpointed = True
            # Not flushed: the success checkpoint, flushed just before, is what resume
            # needs (the either-or rule; a success checkpoint of the begun attempt counts,
            # see contract.engine_recorded), and flushing the manifest's rename cost 2
            # fsyncs a hop.
            run.append_event(stage, "success", attempt, metadata={
                "duration_sec": duration, **({"shots": shots} if shots is not None else {})},
                durable=False)
    except OSError as exc:
        if not is_infrastructure(exc):
            raise
        failure = from_os_error(exc)
        if not checkpointed:  # (else the stage is done: its checkpoint says so)
            record_held_back(run, stage, attempt, failure, started)
        raise failure from exc
    metrics.attempt_finished(stage, duration)
    log.info("run %s stage %s: succeeded in %.2fs (attempt %d)", run.run_id, stage,
             duration, attempt)


def _check_paths(run: Run, refs: AssetRefs) -> list[str]:
    """Every path an adapter reports must lie inside the run folder. Returns them as
    named (URIs of remote assets left out)."""
    local = _local_paths(refs)
    for path in local:
        run.path(path)  # raises UnsafePathError
    return local


def _run_storage_error(run: Run, exc: BaseException) -> OSError | None:
    """The OSError of the storage (:mod:`sparkle.infrastructure`) naming a file inside the
    run folder that ``exc`` is, or was raised from (``raise ... from``: an adapter may wrap
    it in its own error); None when there is none."""
    inside = os.path.abspath(run.dir) + os.sep
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and is_infrastructure(current) \
                and current.filename is not None \
                and os.path.abspath(os.fsdecode(current.filename)).startswith(inside):
            return current
        current = current.__cause__
    return None


def record_held_back(run: Run, stage: str, attempt: int, failure: InfrastructureError,
                      started: float) -> None:
    """Close the attempt with a ``fail`` event marked ``infrastructure`` when the disk takes
    it (best effort): a ``begin`` left without an outcome would count as a crash."""
    try:
        run.append_event(stage, "fail", attempt, error=error_text(failure),
                         metadata={"transient": True, "infrastructure": True,
                                   "duration_sec": round(time.monotonic() - started, 3)})
    except OSError as exc:
        log.debug("run %s stage %s: the held-back attempt %d cannot be recorded either (%s)",
                  run.run_id, stage, attempt, exc)


def _local_paths(refs: AssetRefs) -> list[str]:
    """The paths ``refs`` names, as written there, without URIs of remote assets (those
    are the adapter's business)."""
    paths: list[str] = list(refs.extras.values())
    for shot in refs.shots.values():
        paths += [p for p in (shot.start_frame, shot.end_frame, shot.raw_clip,
                              shot.final_video_clip) if p]
        paths += shot.dialogue_audio
    return [path for path in paths if "://" not in path]


def fence(run: Run, lease: Lease, what: str) -> None:
    """Raise LeaseLostError unless the lease is still ours: a worker paused past its lease
    must not record anything over the new owner's work (a success, or a failure)."""
    if lease.lost.is_set() or not lease.held():
        raise LeaseLostError(f"lease of run {run.run_id} lost ({what}); nothing recorded")

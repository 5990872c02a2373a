"""Executing one stage of one run: lease, skip, attempts, checkpoint, then the next stage.

This is DESIGN.md's "Stage execution", step by step:

1. Take the run's lease; when another worker holds it, leave (it will continue the chain).
2. When the stage is already done, run nothing: make sure the first unfinished stage is
   queued unless it already has a message on its way, and stop. Duplicate and replayed
   messages die out here instead of multiplying.
3. Write a ``begin`` checkpoint and manifest event (attempts count from 1 across resumes).
4. Call the adapter under tenacity: bounded attempts, exponential backoff with jitter, only
   for transient errors; every attempt is its own ``begin``/``fail``/``success`` event.
5. Flush the files the adapter reported (those it changed) to disk; check the lease is
   still ours (fencing), then write ``asset_refs.json``, the ``success`` checkpoint and the
   manifest event, in that order; release the lease; send the next stage.
6. On permanent failure: ``failed`` checkpoint, ``fail`` event, no next stage, and
   :class:`StageFailed` is raised so dramatiq dead-letters the message.

The lease is released *before* the next stage is sent, so the next stage's worker never
finds the run still held by its predecessor.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import tenacity
from dramatiq.middleware import CurrentMessage, Interrupt, TimeLimitExceeded

from sparkle import atomic, metrics
from sparkle.dispatch import Dispatcher
from sparkle.errors import LeaseLostError, SparkleError
from sparkle.lease import Lease
from sparkle.lease import holder as lease_holder
from sparkle.logs import log_context
from sparkle.runstore import Run, RunState, RunStore
from sparkle.schemas import STAGES, AssetRefs, Checkpoint
from sparkle.settings import Settings
from sparkle.stages import Adapter, normalize_result

log = logging.getLogger(__name__)

#: Error texts stored in checkpoints and events are cut to this many characters.
MAX_ERROR_CHARS = 2000

#: Manifest ``reset`` reason recorded when QA's decision re-runs stages.
QA_REGENERATE = "qa_regenerate"


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


class _Transient(Exception):
    """Wraps an adapter error worth another attempt (tenacity retries on this type)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Permanent(Exception):
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


def reset_stages(run: Run, stages: list[str], reason: str) -> None:
    """Force ``stages`` to run again: a ``reset`` event each, and their checkpoints removed."""
    for stage in stages:
        run.append_event(
            stage, "reset", max(1, run.attempts(stage)), metadata={"reason": reason}
        )
        run.remove_checkpoint(stage)


@dataclass
class Engine:
    """Executes stages. One per process, shared by all worker threads."""

    store: RunStore
    dispatcher: Dispatcher
    client: redis.Redis
    adapters: dict[str, Adapter]
    settings: Settings
    sleep: Callable[[float], None] = time.sleep

    def execute(self, stage: str, run_id: str) -> Outcome:
        """Handle one message for ``stage`` of ``run_id``.

        Raises:
          StageFailed: the stage failed permanently (the message should be dead-lettered).
        """
        with log_context(run_id, stage):
            try:
                outcome = self._execute(stage, run_id)
            except StageFailed:
                metrics.message_handled(stage, "failed")
                raise
            metrics.message_handled(stage, outcome.value)
            return outcome

    def _execute(self, stage: str, run_id: str) -> Outcome:
        run = Run(self.store.root, run_id)
        if not run.exists():
            log.error("run %s stage %s: no such run folder in %s; dropping the message",
                      run_id, stage, self.store.root)
            return Outcome.missing
        lease = Lease(self.client, self.settings.namespace, run_id, self.settings.lease_ttl_sec)
        if not lease.acquire(also=(self.dispatcher.taken_command(run_id, stage),)):
            log.info("run %s stage %s: another worker holds the run; leaving it", run_id, stage)
            return Outcome.busy
        follow_up: str | None = None
        try:
            lease.start_heartbeat()
            outcome, follow_up = self._execute_leased(run, stage, lease)
        except LeaseLostError as exc:
            log.error("run %s stage %s: %s; results discarded", run_id, stage, exc)
            outcome = Outcome.lease_lost
            # Expired with nobody taking the run over (a process suspended past its TTL):
            # nobody else will continue it, so this stage is sent again. (Taken over: the
            # new owner continues the chain.)
            if lease_holder(self.client, self.settings.namespace, run_id) is None:
                follow_up = stage
        finally:
            # The next stage's pending mark goes with the release: one round trip, in order.
            marked = lease.release(
                also=() if follow_up is None else (self.dispatcher.mark_command(run_id, follow_up),)
            )
        if follow_up is not None:
            if marked:
                self.dispatcher.enqueue(run_id, follow_up)
            else:
                self.dispatcher.send(run_id, follow_up)
            log.debug("run %s: queued %s", run_id, follow_up)
        return outcome

    # -- inside the lease --------------------------------------------------------------

    def _execute_leased(self, run: Run, stage: str, lease: Lease) -> tuple[Outcome, str | None]:
        if run.cancelled:
            log.info("run %s stage %s: run is cancelled; not starting", run.run_id, stage)
            return Outcome.cancelled, None
        # The history first: next_stage_after() trusts this look's checkpoints only while
        # the manifest grew by our own appends since it was read, which holds only if it
        # was read before any of them (a reset appends before it removes a checkpoint).
        state = run.state(history_first=True)
        if _sent_before_failure(state, stage):
            log.warning("run %s stage %s: this message was sent before the stage failed "
                        "(a redelivered copy); not running it", run.run_id, stage)
            return Outcome.stale, None
        if state.stage_done(stage):
            log.info("run %s stage %s: already done; skipping", run.run_id, stage)
            return Outcome.skipped, self._unqueued_next(run, state)
        first = state.next_stage()
        if first != stage:
            log.warning("run %s stage %s: %s is not done yet; queueing it instead",
                        run.run_id, stage, first)
            return Outcome.out_of_order, self._unqueued_next(run, state)
        crashes = state.crashed_begins(stage)
        if crashes >= self.settings.crash_loop_limit:
            message = (
                f"crash loop: {crashes} attempts of {stage} started and never finished "
                f"(their worker died each time; limit SPARKLE_CRASH_LOOP_LIMIT="
                f"{self.settings.crash_loop_limit}). Fix the cause, then `sparkle resume "
                f"{run.run_id}`"
            )
            self._record_failure(run, stage, state.attempts(stage), message, lease,
                                 event=True, reason="crash_loop")
            raise StageFailed(f"run {run.run_id} stage {stage}: {message}")
        self._run_attempts(run, stage, lease, state.attempts(stage))
        return Outcome.succeeded, self._after_success(run, stage, state)

    def _unqueued_next(self, run: Run, state: RunState) -> str | None:
        """The first unfinished stage, unless it already has a message on its way.

        Also a stage that failed for good: a resume's or a replay's message that found the
        run's lease held by this one was dropped (busy), after clearing the pending mark,
        and only this worker can still send it.
        """
        stage = state.next_stage()
        if stage is None:
            return None
        pending = self.dispatcher.pending(run.run_id)
        if pending is not None and pending[0] == stage:
            return None
        return stage

    def _after_success(self, run: Run, stage: str, before: RunState) -> str | None:
        if run.cancelled:
            log.info("run %s: cancelled after %s; not continuing", run.run_id, stage)
            return None
        if stage == "qa" and self.settings.qa_auto_regenerate:
            regenerate = self._qa_regenerate_from(run)
            if regenerate is not None:
                return regenerate
        # Not simply the state read before the adapter ran: `sparkle resume --from` may
        # have reset earlier (or later) stages meanwhile, leaving their message to us.
        return before.next_stage_after(stage)

    def _qa_regenerate_from(self, run: Run) -> str | None:
        checkpoint = run.checkpoint("qa")
        if checkpoint is None or checkpoint.metadata.get("decision") != "regenerate":
            return None
        if any(e.status == "reset" and e.metadata.get("reason") == QA_REGENERATE
               for e in run.events()):
            log.warning("run %s: QA asks to regenerate again; already did once, stopping",
                        run.run_id)
            return None
        named = [str(s) for s in checkpoint.metadata.get("regenerate_stages", []) if s in STAGES]
        if not named:
            return None
        earliest = min(named, key=STAGES.index)
        reset_stages(run, list(STAGES[STAGES.index(earliest):]), QA_REGENERATE)
        log.info("run %s: QA decided regenerate; re-running from %s", run.run_id, earliest)
        return earliest

    def _run_attempts(self, run: Run, stage: str, lease: Lease, attempt: int) -> None:
        """Run the adapter under tenacity; ``attempt`` is the last attempt number used."""
        adapter = self.adapters[stage]
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.settings.retry_attempts),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.settings.retry_base_sec,
                max=self.settings.retry_max_sec,
                jitter=self.settings.retry_base_sec,
            ),
            retry=tenacity.retry_if_exception_type(_Transient),
            sleep=self.sleep,
            reraise=True,
        )

        def one_attempt() -> None:
            nonlocal attempt
            attempt += 1
            self._attempt(run, stage, adapter, attempt, lease)

        try:
            # (called, not iterated: the same policy for about two thirds of the cost)
            retrying(one_attempt)
        except _Transient as exc:
            message = (
                f"gave up after {self.settings.retry_attempts} attempt(s); "
                f"last error: {error_text(exc.cause)}"
            )
            self._record_failure(run, stage, attempt, message, lease, event=False)
            raise StageFailed(f"run {run.run_id} stage {stage}: {message}") from exc.cause
        except _Permanent as exc:
            message = error_text(exc.cause)
            self._record_failure(run, stage, attempt, message, lease, event=not exc.recorded)
            raise StageFailed(f"run {run.run_id} stage {stage}: {message}") from exc.cause

    def _attempt(self, run: Run, stage: str, adapter: Adapter, attempt: int, lease: Lease) -> None:
        if lease.lost.is_set():
            raise LeaseLostError(f"lease of run {run.run_id} lost before attempt {attempt}")
        begin_meta = {"adapter": adapter.name, "worker": worker_id()}
        # A lost ``begin`` (power cut) only means a crash goes uncounted: not worth fsyncs.
        run.write_checkpoint(Checkpoint(stage=stage, status="begin", timestamp=time.time(),  # type: ignore[arg-type]
                                        attempt=attempt, metadata=begin_meta), durable=False)
        run.append_event(stage, "begin", attempt, metadata=begin_meta, durable=False)
        metrics.attempt_started(stage)
        log.debug("run %s stage %s: attempt %d with %s", run.run_id, stage, attempt, adapter.name)
        started = time.monotonic()
        try:
            plan, refs_before = run.plan(), run.asset_refs()
            # (read before the adapter runs: adapters may change the refs they are given)
            before = set(_local_paths(refs_before))
            result = adapter.fn(plan, refs_before, run.dir)
            refs, metadata = normalize_result(result)
            outputs = self._check_paths(run, refs)
            # The success recorded next survives a power cut: so must what it names.
            if outputs:
                # Changed since the refs' last save (only the engine saves them, never
                # during the adapter): any attempt since, a failed one too, may have
                # rewritten a file they name. By the file system's own clock.
                saved = run.asset_refs_saved_at()
                atomic.sync_outputs([run.dir / p for p in outputs if p not in before],
                                    run.dir, since=saved,
                                    named_before=[run.dir / p for p in outputs if p in before])
        except TimeLimitExceeded:
            raise _Permanent(
                TimeoutError(f"{stage} exceeded its time limit (SPARKLE_STAGE_TIME_LIMIT_SEC)")
            ) from None
        except Interrupt:
            raise
        except Exception as exc:
            duration = round(time.monotonic() - started, 3)
            transient = adapter.is_transient(exc)
            log.warning("run %s stage %s: attempt %d failed (%s): %s", run.run_id, stage,
                        attempt, "transient" if transient else "permanent", error_text(exc))
            _fence(run, lease, f"attempt {attempt} failed")
            run.append_event(stage, "fail", attempt, error=error_text(exc),
                             metadata={"transient": transient, "duration_sec": duration})
            metrics.attempt_finished(stage, duration, "transient" if transient else "permanent")
            raise (_Transient(exc) if transient else _Permanent(exc, recorded=True)) from exc
        duration = round(time.monotonic() - started, 3)
        # Fencing: a worker paused past its lease must not overwrite the new owner's work.
        _fence(run, lease, f"attempt {attempt} succeeded")
        success_meta: dict[str, Any] = {
            **metadata,
            "adapter": adapter.name,
            "duration_sec": duration,
            "attempt": attempt,
        }
        run.save_asset_refs(refs)
        run.write_checkpoint(Checkpoint(stage=stage, status="success", timestamp=time.time(),  # type: ignore[arg-type]
                                        attempt=attempt, metadata=success_meta))
        run.append_event(stage, "success", attempt, metadata={"duration_sec": duration})
        metrics.attempt_finished(stage, duration)
        log.info("run %s stage %s: succeeded in %.2fs (attempt %d)", run.run_id, stage,
                 duration, attempt)

    @staticmethod
    def _check_paths(run: Run, refs: AssetRefs) -> list[str]:
        """Every path an adapter reports must lie inside the run folder. Returns them as
        named (URIs of remote assets left out)."""
        local = _local_paths(refs)
        for path in local:
            run.path(path)  # raises UnsafePathError
        return local

    def _record_failure(self, run: Run, stage: str, attempt: int, message: str, lease: Lease,
                        event: bool, reason: str = "error") -> None:
        attempt = max(1, attempt)
        _fence(run, lease, f"{stage} failed for good")
        if event:
            run.append_event(stage, "fail", attempt, error=message)
        run.write_checkpoint(Checkpoint(stage=stage, status="failed", timestamp=time.time(),  # type: ignore[arg-type]
                                        attempt=attempt, error=message))
        log.error("run %s stage %s: failed permanently: %s", run.run_id, stage, message)
        metrics.stage_failed(stage, reason)


def _local_paths(refs: AssetRefs) -> list[str]:
    """The paths ``refs`` names, as written there, without URIs of remote assets (those
    are the adapter's business)."""
    paths: list[str] = list(refs.extras.values())
    for shot in refs.shots.values():
        paths += [p for p in (shot.start_frame, shot.end_frame, shot.raw_clip,
                              shot.final_video_clip) if p]
        paths += shot.dialogue_audio
    return [path for path in paths if "://" not in path]


def _fence(run: Run, lease: Lease, what: str) -> None:
    """Raise LeaseLostError unless the lease is still ours: a worker paused past its lease
    must not record anything over the new owner's work (a success, or a failure)."""
    if lease.lost.is_set() or not lease.held():
        raise LeaseLostError(f"lease of run {run.run_id} lost ({what}); nothing recorded")


def _sent_before_failure(state: RunState, stage: str) -> bool:
    """Whether the message being handled was sent before ``stage`` failed for good.

    Such a message is a copy of one whose worker died: dramatiq redelivers those late (a
    crash redelivery is not counted as a retry), and running it would restart a crash loop
    the engine already ended. Resume, replay and the reaper always send a new message.
    """
    # (after a begin, a success or a reset the checkpoint cannot say failed: the begin and
    # success checkpoints come before their events, and a reset removes it; after anything
    # else, a cancel or a replay's redrive included, it may)
    last = state.last_event(stage)
    if last is not None and last.status in ("begin", "success", "reset"):
        return False
    checkpoint = state.checkpoint(stage)
    if checkpoint is None or checkpoint.status != "failed":
        return False
    message = CurrentMessage.get_current_message()
    return message is not None and message.message_timestamp / 1000 < checkpoint.timestamp


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process's engine, built from settings on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from sparkle.broker import get_client, setup_broker
            from sparkle.settings import get_settings
            from sparkle.stages import load_adapters

            settings = get_settings()
            broker = setup_broker(settings)
            client = get_client()
            _engine = Engine(
                store=RunStore(settings.runs_dir),
                dispatcher=Dispatcher(broker, client, settings.namespace),
                client=client,
                adapters=load_adapters(settings.adapters),
                settings=settings,
            )
        return _engine


def set_engine(engine: Engine | None) -> None:
    """Install (or with None, forget) the process's engine: for the CLI and tests."""
    global _engine
    with _engine_lock:
        _engine = engine


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
   still ours (fencing), then merge the stage's refs into ``asset_refs.json`` (so no
   concurrent writer's refs are lost, :mod:`sparkle.refmerge`), the ``success`` checkpoint and the
   manifest event, in that order; release the lease; send the next stage.
6. On permanent failure: ``failed`` checkpoint, ``fail`` event, no next stage, and
   :class:`StageFailed` is raised so dramatiq dead-letters the message.

The lease is released *before* the next stage is sent, so the next stage's worker never
finds the run still held by its predecessor.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import tenacity
from dramatiq.middleware import CurrentMessage

from sparkle import (
    handover,
    metrics,
    notifications,
    review_gates,
    takes,
)
from sparkle.attempt import fence, run_attempt
from sparkle.dispatch import Dispatcher
from sparkle.errors import LeaseLostError, SparkleError
from sparkle.handover import reset_stages
from sparkle.infrastructure import (
    InfrastructureError,
    from_os_error,
    is_infrastructure,
)
from sparkle.lease import Lease
from sparkle.lease import holder as lease_holder
from sparkle.logs import log_context
from sparkle.outcomes import (
    Outcome,
    Permanent,
    StageFailed,
    Transient,
    error_text,
)
from sparkle.runstore import Run, RunState, RunStore
from sparkle.schemas import STAGES, Checkpoint
from sparkle.settings import Settings
from sparkle.stagelimits import StageLimits, parse_limits
from sparkle.stages import Adapter
from sparkle.turn import Turn, away

log = logging.getLogger(__name__)

#: Manifest ``reset`` reason recorded when QA's decision re-runs stages.
QA_REGENERATE = "qa_regenerate"

#: Seconds before a stage whose bookkeeping met an infrastructure failure (a full disk) is
#: tried again; doubling with each failure in a row, up to INFRA_RETRY_MAX_SEC.
INFRA_RETRY_MIN_SEC = float(os.environ.get("SPARKLE_INFRA_RETRY_MIN_SEC", "2"))

#: Longest wait in seconds between two tries of a stage held back by an infrastructure
#: failure: how soon a run continues once the disk has room again.
INFRA_RETRY_MAX_SEC = float(os.environ.get("SPARKLE_INFRA_RETRY_MAX_SEC", "60"))

#: Message option counting the infrastructure failures in a row of the stage it carries.
INFRA_FAILURES_OPTION = "sparkle_infra_failures"


@dataclass
class Engine:
    """Executes stages. One per process, shared by all worker threads."""

    store: RunStore
    dispatcher: Dispatcher
    client: redis.Redis
    adapters: dict[str, Adapter]
    settings: Settings
    sleep: Callable[[float], None] = time.sleep
    #: Cluster-wide limits of executions per stage (:mod:`sparkle.stagelimits`).
    stage_limits: StageLimits = field(init=False, repr=False)
    #: The last infrastructure failure of each run this process met, until a stage of it
    #: next succeeds: what the foreground ``sparkle run`` reports and stops on.
    infrastructure_failures: dict[str, InfrastructureError] = field(
        init=False, repr=False, default_factory=dict)
    #: The worker threads' turn at their bookkeeping (:mod:`sparkle.turn`).
    turn: Turn = field(init=False, repr=False, default_factory=Turn)

    def __post_init__(self) -> None:
        self.stage_limits = StageLimits(
            self.client, self.settings.namespace, parse_limits(self.settings.stage_concurrency),
            self.settings.lease_ttl_sec, self.settings.stage_concurrency_retry_ms)

    def infrastructure_failure(self, run_id: str) -> InfrastructureError | None:
        """The infrastructure failure that holds ``run_id`` back now, if any."""
        return self.infrastructure_failures.get(run_id)

    def execute(self, stage: str, run_id: str) -> Outcome:
        """Handle one message for ``stage`` of ``run_id``.

        Raises:
          StageFailed: the stage failed permanently (the message should be dead-lettered).
        """
        with log_context(run_id, stage):
            try:
                outcome = self._execute_within_limit(stage, run_id)
            except StageFailed:
                metrics.message_handled(stage, "failed")
                raise
            metrics.message_handled(stage, outcome.value)
            return outcome

    def _execute_within_limit(self, stage: str, run_id: str) -> Outcome:
        """:meth:`_execute` holding one of the stage's cluster-wide slots, when the stage
        is limited; without a free slot the message goes back, delayed (not a retry)."""
        if not self.stage_limits.limited(stage):
            with self.turn.taken():
                return self._execute(stage, run_id)
        holder = self.stage_limits.try_acquire(stage)
        if holder is None:
            holder = self.stage_limits.wait_for_slot(stage)
        if holder is None:
            # (not marked again: the pending mark of this message still names the stage)
            self.dispatcher.enqueue(run_id, stage, self.stage_limits.retry_delay_ms())
            self.stage_limits.throttled += 1
            log.debug("run %s stage %s: every slot taken; trying again later", run_id, stage)
            return Outcome.throttled
        with self.stage_limits.slot(stage, holder), self.turn.taken():
            return self._execute(stage, run_id)

    def _execute(self, stage: str, run_id: str) -> Outcome:
        run = Run(self.store.root, run_id)
        if not run.exists():
            log.error("run %s stage %s: no such run folder in %s; dropping the message",
                      run_id, stage, self.store.root)
            return Outcome.missing
        # (embedded, the lease also takes the run's lock file: other processes cannot see
        # the in-process one, sparkle.runlock)
        lease = Lease(self.client, self.settings.namespace, run_id, self.settings.lease_ttl_sec,
                      lock_dir=self.dispatcher.backend.lock_dir(run.dir))
        if not lease.acquire(also=(self.dispatcher.taken_command(run_id, stage),)):
            log.info("run %s stage %s: another worker holds the run; leaving it", run_id, stage)
            return Outcome.busy
        follow_up: str | None = None
        delay_ms: int | None = None
        options: dict[str, Any] = {}
        outcome: Outcome | None = None
        failed: StageFailed | None = None
        try:
            lease.start_heartbeat()
            self._carry_out_handed_over(run, lease)
            outcome, follow_up = self._execute_leased(run, stage, lease)
        except StageFailed as exc:
            failed = exc  # (raised once the lease is released and a resume's stage sent)
        except (OSError, InfrastructureError) as exc:
            if not is_infrastructure(exc):
                raise
            outcome, follow_up = Outcome.infrastructure, stage
            delay_ms, options = self._held_back(run, stage, exc)
        except LeaseLostError as exc:
            log.error("run %s stage %s: %s; results discarded", run_id, stage, exc)
            outcome = Outcome.lease_lost
            # Expired with nobody taking the run over (a process suspended past its TTL):
            # nobody else will continue it, so this stage is sent again. (Taken over: the
            # new owner continues the chain.)
            if lease_holder(self.client, self.settings.namespace, run_id) is None:
                follow_up = stage
        finally:
            # A cancel or resume asked meanwhile by someone without the lease: this worker
            # records it before letting go (a resume: the run goes on as it now stands).
            if self._carry_out_handed_over(run, lease):
                follow_up = None if run.cancelled else self._unqueued_next(run, run.state())
            # The next stage's pending mark goes with the release: one round trip, in order.
            marked = lease.release(
                also=() if follow_up is None else (self.dispatcher.mark_command(run_id, follow_up),)
            )
        if follow_up is not None:
            if marked:
                self.dispatcher.enqueue(run_id, follow_up, delay_ms, options)
            else:
                self.dispatcher.send(run_id, follow_up, delay_ms, options)
            log.debug("run %s: queued %s", run_id, follow_up)
        if failed is not None:
            raise failed
        assert outcome is not None
        return outcome

    def _carry_out_handed_over(self, run: Run, lease: Lease) -> bool:
        """Do what ``sparkle cancel``/``resume`` left for the lease holder, if anything
        (:mod:`sparkle.handover`), fenced like every write. Returns whether a resume was
        carried out. Best effort: what is left waits for the next holder."""
        if not handover.waiting(run) or lease.lost.is_set():
            return False
        try:
            if not lease.held():
                return False
            return handover.carry_out(run).resumed > 0
        except (OSError, redis.RedisError, SparkleError) as exc:
            log.warning("run %s: what a cancel or resume left for this worker is not carried "
                        "out (%s); the run's next holder does it", run.run_id, exc)
            return False

    def _held_back(self, run: Run, stage: str, exc: OSError | InfrastructureError
                   ) -> tuple[int, dict[str, Any]]:
        """An infrastructure failure met while working ``stage``: remember it, log it, and
        return the delay (ms) and options of the message that tries the stage again.

        Nothing is counted against the stage: no attempt is used up (the adapter did not
        fail) and the crash-loop count is not raised when the attempt's ``fail`` event
        could be written. The delay doubles with each failure in a row (carried by the
        message, whichever worker takes it).
        """
        failure = exc if isinstance(exc, InfrastructureError) else from_os_error(exc)
        self.infrastructure_failures[run.run_id] = failure
        message = CurrentMessage.get_current_message()
        before = int(message.options.get(INFRA_FAILURES_OPTION, 0)) if message else 0
        delay = min(INFRA_RETRY_MAX_SEC, INFRA_RETRY_MIN_SEC * 2 ** min(before, 30))
        log.error("run %s stage %s: %s; %s, trying again in %.1f s (no attempt counted)",
                  run.run_id, stage, failure, failure.advice, delay)
        # (counted by the messages metric, outcome "infrastructure": not a failure for good)
        return int(delay * 1000), {INFRA_FAILURES_OPTION: before + 1}

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
        if review_gates.holds(run, state, stage, self.settings):
            log.info("run %s stage %s: the run waits for a review; not starting", run.run_id,
                     stage)
            return Outcome.awaiting_review, None
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
        # (a stage re-run for some shots only: the person's redo, or QA's)
        shots = takes.narrowed_shots(state.events, stage) if stage in takes.SHOT_FIELDS else None
        self._run_attempts(run, stage, lease, state.attempts(stage), shots)
        follow_up = self._after_success(run, stage, state)
        if follow_up is None and stage == STAGES[-1] and not run.cancelled:
            notifications.run_ended(run, self.settings, "succeeded")
        return Outcome.succeeded, follow_up

    def _unqueued_next(self, run: Run, state: RunState) -> str | None:
        """The first unfinished stage, unless it already has a message on its way.

        Also a stage that failed for good: a resume's or a replay's message that found the
        run's lease held by this one was dropped (busy), after clearing the pending mark,
        and only this worker can still send it.
        """
        stage = state.next_stage()
        if stage is None or state.review() is not None:
            return None
        pending = self.dispatcher.pending(run.run_id)
        if pending is not None and pending[0] == stage:
            return None
        return stage

    def _after_success(self, run: Run, stage: str, before: RunState) -> str | None:
        if run.cancelled:
            log.info("run %s: cancelled after %s; not continuing", run.run_id, stage)
            return None
        # A review gate after this stage, or QA's escalate / per-shot regenerate.
        handled, follow_up = review_gates.after_success(run, stage, self.settings)
        if handled:
            if follow_up is None:  # (the run now waits for a person: tell who listens)
                notifications.run_ended(run, self.settings, "awaiting_review")
            return follow_up
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

    def _run_attempts(self, run: Run, stage: str, lease: Lease, attempt: int,
                      shots: list[str] | None = None) -> None:
        """Run the adapter under tenacity; ``attempt`` is the last attempt number used;
        ``shots``: run it for these shots only (:mod:`sparkle.takes`)."""
        adapter = self.adapters[stage]
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.settings.retry_attempts),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.settings.retry_base_sec,
                max=self.settings.retry_max_sec,
                jitter=self.settings.retry_base_sec,
            ),
            retry=tenacity.retry_if_exception_type(Transient),
            sleep=self._sleep_away,
            reraise=True,
        )

        def one_attempt() -> None:
            nonlocal attempt
            attempt += 1
            run_attempt(run, stage, adapter, attempt, lease, self.settings, shots)
            self.infrastructure_failures.pop(run.run_id, None)

        try:
            # (called, not iterated: the same policy for about two thirds of the cost)
            retrying(one_attempt)
        except Transient as exc:
            message = (
                f"gave up after {self.settings.retry_attempts} attempt(s); "
                f"last error: {error_text(exc.cause)}"
            )
            self._record_failure(run, stage, attempt, message, lease, event=False)
            raise StageFailed(f"run {run.run_id} stage {stage}: {message}") from exc.cause
        except Permanent as exc:
            message = error_text(exc.cause)
            self._record_failure(run, stage, attempt, message, lease, event=not exc.recorded)
            raise StageFailed(f"run {run.run_id} stage {stage}: {message}") from exc.cause

    def _sleep_away(self, seconds: float) -> None:
        """A retry's backoff, away from the bookkeeping turn."""
        with away():
            self.sleep(seconds)

    def _record_failure(self, run: Run, stage: str, attempt: int, message: str, lease: Lease,
                        event: bool, reason: str = "error") -> None:
        attempt = max(1, attempt)
        fence(run, lease, f"{stage} failed for good")
        if event:
            run.append_event(stage, "fail", attempt, error=message)
        run.write_checkpoint(Checkpoint(stage=stage, status="failed", timestamp=time.time(),  # type: ignore[arg-type]
                                        attempt=attempt, error=message))
        log.error("run %s stage %s: failed permanently: %s", run.run_id, stage, message)
        metrics.stage_failed(stage, reason)
        notifications.run_ended(run, self.settings, "failed", error=f"{stage}: {message}")


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

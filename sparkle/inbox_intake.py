"""From a claimed plan file to a run: load and validate the plan, create or find its run,
enqueue its first unfinished stage, and settle the file into ``processed/`` (or into
``rejected/`` when the plan is invalid).

Every step can be repeated (:meth:`RunStore.create` finds the run of a plan it has seen;
enqueueing twice is harmless), so a file processed again after a crash or an outage
loses nothing and makes nothing twice. Nothing is rejected for an infrastructure problem:
the broker or the disk failing raises :class:`InfraError` and the file stays claimed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import dramatiq.errors
import redis.exceptions

from sparkle import inbox_settle
from sparkle.errors import PlanError, Problem, RunConflictError
from sparkle.inbox_names import ERROR_SUFFIX, parse_claim_name
from sparkle.infrastructure import InfrastructureError
from sparkle.logs import printable
from sparkle.plans import load_plan_file
from sparkle.runstore import Run, RunStore

#: The hot folder's modules log as one logger, so its log is configured in one place.
log = logging.getLogger("sparkle.inbox")

#: Receives each new or found run and enqueues its first unfinished stage.
Enqueue = Callable[[Run], object]

#: Errors of ``enqueue`` meaning "the broker cannot take it now": the file is held and
#: retried, never rejected. Besides a broker out of reach, the replies of one that will
#: take it later (:data:`PASSING_REPLIES`).
BROKER_ERRORS: Final[tuple[type[BaseException], ...]] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica, during a failover
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.OutOfMemoryError,
    dramatiq.errors.BrokerConnectionError,  # dramatiq < 2.2 called it ConnectionError
    OSError,
)

#: Error replies of a Redis that will take the message later, by their first word: busy
#: with a script, full (maxmemory), refusing writes after a failed save, no replicas yet.
#: Other replies (WRONGTYPE, NOPERM, ...) will not pass by waiting: such a file fails
#: (logged with its traceback) and stays claimed until the next start.
PASSING_REPLIES: Final = frozenset(
    {"BUSY", "OOM", "MISCONF", "NOREPLICAS", "LOADING", "TRYAGAIN", "MASTERDOWN", "READONLY",
     "CLUSTERDOWN"}
)


class InfraError(Exception):
    """Processing stopped for an infrastructure problem; the file stays claimed.

    ``cause`` is None when the file was not tried but queued behind files already held.
    ``created``: the file's run was created by this inbox (so that a later attempt, which
    finds the run, still reports it as created).
    """

    def __init__(self, cause: BaseException | None, created: bool) -> None:
        super().__init__(
            f"{type(cause).__name__}: {cause}" if cause else "waiting behind held files"
        )
        self.cause = cause
        self.created = created


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of a plan file."""

    #: The file's name in the inbox.
    name: str
    #: Its run (moved to ``processed/``); None when it was moved to ``rejected/``.
    run: Run | None
    #: The run was created by this inbox, not found (the same plan dropped again, a restart).
    created: bool = False


class Intake:
    """Turns claimed plan files into runs.

    Parameters:
      store: where runs are created (:meth:`RunStore.create` finds the run of a known plan).
      enqueue: called with each new or found run to enqueue its first unfinished stage;
        it may be called from two threads at once. Raising one of :data:`BROKER_ERRORS`
        (or a Redis reply in :data:`PASSING_REPLIES`) holds the file.
      processed_dir, rejected_dir: where files are settled.
      max_plan_bytes: larger files are rejected unread.
      metadata_defaults: metadata each plan gets where it sets none of its own.
    """

    def __init__(
        self,
        store: RunStore,
        enqueue: Enqueue,
        processed_dir: Path,
        rejected_dir: Path,
        max_plan_bytes: int,
        metadata_defaults: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.enqueue = enqueue
        self.processed_dir = processed_dir
        self.rejected_dir = rejected_dir
        self.max_plan_bytes = max_plan_bytes
        self.metadata_defaults = dict(metadata_defaults or {})

    def process(self, claimed: Path, *, created_before: bool, skip_enqueue: bool) -> Outcome:
        """Load ``claimed``, create or find its run, enqueue, move it to processed/ (or
        reject it).

        Parameters:
          created_before: an earlier attempt on this file created its run.
          skip_enqueue: stop once the run exists, with :class:`InfraError` (no cause): the
            file waits behind files already held for the broker, keeping their order.

        Raises:
          InfraError: the broker or the disk failed; the file stays claimed.
        """
        name = parse_claim_name(claimed.name)[1]
        received = inbox_settle.received_at(claimed)
        try:
            plan = load_plan_file(claimed, self.max_plan_bytes, self.metadata_defaults)
        except PlanError as exc:
            return self._reject(claimed, name, exc.problems, received)
        try:
            run, created = self.store.create(plan)
        except RunConflictError as exc:
            where = "metadata.run_id" if "run_id" in plan.metadata else ""
            return self._reject(claimed, name, [Problem(where, str(exc))], received)
        except (OSError, InfrastructureError) as exc:  # (a full or read-only runs folder)
            raise InfraError(exc, created_before) from exc
        created = created or created_before
        if skip_enqueue:
            raise InfraError(None, created)
        try:
            self.enqueue(run)
        except BROKER_ERRORS as exc:
            raise InfraError(exc, created) from exc
        except redis.exceptions.ResponseError as exc:
            if str(exc).split(" ", 1)[0] not in PASSING_REPLIES:
                raise
            raise InfraError(exc, created) from exc
        try:
            inbox_settle.place(claimed, self.processed_dir, name)
        except OSError as exc:
            raise InfraError(exc, created) from exc
        log.info("inbox: %s -> run %s (%s)", printable(name), run.run_id,
                 "created" if created else "resumed")
        return Outcome(name, run, created)

    def _reject(self, claimed: Path, name: str, problems: list[Problem],
                received: str) -> Outcome:
        try:
            dest = inbox_settle.reject(claimed, self.rejected_dir, name, problems, received)
        except OSError as exc:
            raise InfraError(exc, created=False) from exc
        first = str(problems[0]) if problems else "invalid plan"
        more = f" (+{len(problems) - 1} more in {dest.name}{ERROR_SUFFIX})" if problems[1:] else ""
        log.warning("inbox: %s rejected: %s%s", printable(name), printable(first),
                    printable(more))
        return Outcome(name, None)

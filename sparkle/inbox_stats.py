"""What the inbox counts: the outcome of each file, for ``sparkle serve``'s stop line,
the metrics and tests."""

from __future__ import annotations

import collections
import dataclasses
import threading

from sparkle import metrics


@dataclasses.dataclass(frozen=True)
class InboxStats:
    """Counters since the inbox was created, for metrics and tests."""

    #: Files that became a run (or found theirs) and were moved to ``processed/``.
    processed: int = 0
    #: Of ``processed``: runs created by this inbox.
    created: int = 0
    #: Of ``processed``: runs that existed already (same plan dropped again, or a restart).
    resumed: int = 0
    #: Files moved to ``rejected/``.
    rejected: int = 0
    #: Times a file was held back by an infrastructure error (each failed attempt counts).
    retried: int = 0
    #: Unexpected errors; such a file stays in ``.claimed/`` until the next start.
    failed: int = 0
    #: Files in ``.claimed/`` now, waiting for the broker.
    held: int = 0
    #: Files noticed and not finished: waiting to be stable, queued or being processed.
    pending: int = 0


#: The counters of :class:`InboxStats` that count outcomes (the others are read as they are).
OUTCOMES = tuple(f.name for f in dataclasses.fields(InboxStats)
                 if f.name not in ("held", "pending"))


class InboxCounts:
    """The outcome counters of one inbox (thread-safe); each count is also reported as
    ``sparkle_inbox_plans_total{outcome}``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def count(self, *outcomes: str) -> None:
        """Count one of each of ``outcomes`` (names in :data:`OUTCOMES`)."""
        with self._lock:
            for outcome in outcomes:
                self._counts[outcome] += 1
        for outcome in outcomes:
            metrics.inbox_outcome(outcome)

    def snapshot(self, *, held: int, pending: int) -> InboxStats:
        """The counters now, with the number of files ``held`` and ``pending``."""
        with self._lock:
            counts = {outcome: self._counts[outcome] for outcome in OUTCOMES}
        return InboxStats(**counts, held=held, pending=pending)

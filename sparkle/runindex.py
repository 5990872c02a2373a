"""The index of unfinished runs, so the reaper's cost follows the work in flight.

A reaper pass used to read the summary of every run folder ever made; with months of
finished runs on disk that is most of its cost, in every worker, every 10 s. The index is
a Redis SET of the ids of runs that may be unfinished (in embedded mode, on the process's
in-memory fakeredis, like the leases). The run folders stay the source of truth; the index
only says which ones to look at:

- a run joins when a stage message is sent for it other than as the next hop of a chain
  (:meth:`sparkle.dispatch.Dispatcher.send`: the first stage of a new run, a resume, a
  dead-letter replay, a re-drive), in the same round trip as its pending mark;
- the reaper drops a run it finds finished (succeeded, failed, cancelled...) or gone,
  unless a stage message was sent for it since it looked (a resume just then);
- the whole index is rebuilt from the run folders when it is missing (a new deployment, a
  Redis restart) and every :data:`REBUILD_INTERVAL_SEC` anyway (by one reaper of all),
  which also catches a run whose first message could not be sent.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import redis

from sparkle import keys
from sparkle.errors import UnsafePathError
from sparkle.runindex_fast import DISCARD_IF_QUIET, UNFINISHED
from sparkle.runindex_fast import REBUILD_INTERVAL_SEC as REBUILD_INTERVAL_SEC
from sparkle.runstore import Run, RunStore, RunSummary, cached_summary

if TYPE_CHECKING:
    from sparkle.app import App

log = logging.getLogger(__name__)

class RunIndex:
    """The unfinished-run index of one namespace."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.key = keys.unfinished_runs(namespace)

    def unfinished(self, store: RunStore) -> list[RunSummary]:
        """The summaries of the runs that are queued or running, sorted by id.

        Rebuilds the index from every run folder when it is due (missing, or older than
        :data:`REBUILD_INTERVAL_SEC`); otherwise reads only the runs it names, dropping
        those found finished or gone.
        """
        if self.client.set(keys.unfinished_runs_fresh(self.namespace), str(time.time()),
                           nx=True, px=int(REBUILD_INTERVAL_SEC * 1000)):
            return self.rebuild(store)
        found = []
        for run_id in sorted(_text(m) for m in self.client.smembers(self.key)):
            looked_at = time.time()
            try:
                summary = cached_summary(Run(store.root, run_id))
            except UnsafePathError:  # not a path-safe id: not a run
                summary = None
            if summary is not None and summary.status in UNFINISHED:
                found.append(summary)
                continue
            self.client.eval(DISCARD_IF_QUIET, 2, self.key,
                             keys.pending(self.namespace, run_id), run_id, f"{looked_at:.3f}")
        return found

    def rebuild(self, store: RunStore) -> list[RunSummary]:
        """Add every unfinished run of ``store`` to the index (from the run folders; the
        finished ones it still names are dropped by the next passes). Returns them."""
        found = [s for s in store.summaries() if s.status in UNFINISHED]
        if found:
            self.client.sadd(self.key, *(s.run_id for s in found))
        log.debug("run index rebuilt: %d unfinished run(s)", len(found))
        return found

    def members(self) -> set[str]:
        return {_text(m) for m in self.client.smembers(self.key)}


def listing(app: App, status: str | None) -> list[RunSummary]:
    """What ``sparkle runs [--status S]`` lists (the caller filters by status): for
    ``queued`` or ``running``, only the runs the index of ``app``'s backend names (the
    backend is built only then); else every run. An index that cannot be read (Redis
    unreachable) means every run, read from the folders."""
    store = app.store
    if status not in [s.value for s in UNFINISHED]:
        return store.summaries()
    try:
        return app.backend.run_index(store.root, app.settings.namespace).unfinished(store)
    except redis.RedisError as exc:
        log.warning("run index unavailable (%s); listing every run folder", exc)
        return store.summaries()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

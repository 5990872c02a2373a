"""Prometheus metrics: stage attempts, durations, failures, outcomes, re-drives, inbox
outcomes and worker restarts, plus run and queue gauges read when scraped.

Recording is always on (a few counters in memory). The endpoint is opt-in:
``SPARKLE_METRICS_PORT`` makes :func:`serve` listen on ``SPARKLE_METRICS_HOST`` (loopback by
default). ``sparkle worker`` runs several processes; it points them all at one folder
(:func:`use_multiprocess_dir`, prometheus_client's multiprocess mode) and serves their sum.

prometheus_client chooses between in-memory and multiprocess values when it is imported,
so this module imports it only on first use: the supervisor sets the folder first.

dramatiq's own Prometheus middleware is not used: it starts an exposition server on a fixed
port in every ``dramatiq`` master, which clashes with several supervised processes; the
stage metrics here cover what it would count (messages by actor and outcome, durations).
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from sparkle import keys
from sparkle.schemas import STAGES

if TYPE_CHECKING:
    from sparkle.backends import Backend
    from sparkle.runstore import RunStore
    from sparkle.settings import Settings

log = logging.getLogger(__name__)

#: Environment variable of prometheus_client's multiprocess folder.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Buckets of the stage duration histogram, in seconds (test stages take milliseconds,
#: real renders minutes).
DURATION_BUCKETS = (0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass(frozen=True)
class _Metrics:
    attempts: Any
    attempt_failures: Any
    stage_failures: Any
    durations: Any
    messages: Any
    redrives: Any
    inbox: Any
    restarts: Any


_made: list[_Metrics] = []
_making = threading.Lock()


def _metrics() -> _Metrics:
    """The metrics, registered on first use. Once only, whatever the threads: registering
    a metric twice raises (``functools.cache`` may run a function twice for two threads
    that call it at once, and a fresh worker's threads take their first stages together)."""
    if not _made:
        with _making:
            if not _made:
                _made.append(_register())
    return _made[0]


def _register() -> _Metrics:
    from prometheus_client import Counter, Histogram

    return _Metrics(
        attempts=Counter("sparkle_stage_attempts", "Stage attempts started (begin events).",
                         ["stage"]),
        attempt_failures=Counter(
            "sparkle_stage_attempt_failures",
            "Stage attempts that failed, by kind: transient (retried) or permanent.",
            ["stage", "kind"]),
        stage_failures=Counter(
            "sparkle_stage_failures",
            "Stages failed for good (the run stops, the message is dead-lettered), by reason: "
            "error or crash_loop.",
            ["stage", "reason"]),
        durations=Histogram(
            "sparkle_stage_duration_seconds",
            "Duration of stage attempts, by result (success or fail).",
            ["stage", "result"], buckets=DURATION_BUCKETS),
        messages=Counter(
            "sparkle_stage_messages",
            "Stage messages handled, by outcome (succeeded, skipped, busy, cancelled, failed...).",
            ["stage", "outcome"]),
        redrives=Counter("sparkle_redrives", "Stages re-driven by the reaper or a replay.",
                         ["stage", "reason"]),
        inbox=Counter("sparkle_inbox_plans", "Plan files taken from the inbox, by outcome.",
                      ["outcome"]),
        restarts=Counter("sparkle_worker_restarts",
                         "Worker processes replaced by `sparkle worker`, by cause.", ["cause"]),
    )


# -- recording ---------------------------------------------------------------------------


@functools.cache
def _child(metric: str, *labels: str) -> Any:
    """The series of ``metric`` for ``labels``, looked up once: ``labels()`` takes a lock
    and builds a key on every call, three times per stage."""
    return getattr(_metrics(), metric).labels(*labels)


def attempt_started(stage: str) -> None:
    _child("attempts", stage).inc()


def attempt_finished(stage: str, duration_sec: float, failure: str | None = None) -> None:
    """One attempt ended: ``failure`` is None on success, else ``transient``/``permanent``."""
    _child("durations", stage, "success" if failure is None else "fail").observe(duration_sec)
    if failure is not None:
        _metrics().attempt_failures.labels(stage, failure).inc()


def stage_failed(stage: str, reason: str) -> None:
    """A stage failed for good: ``error`` or ``crash_loop``."""
    _metrics().stage_failures.labels(stage, reason).inc()


def message_handled(stage: str, outcome: str) -> None:
    _child("messages", stage, outcome).inc()


def redriven(stage: str, reason: str) -> None:
    _metrics().redrives.labels(stage, reason).inc()


def inbox_outcome(outcome: str) -> None:
    """A plan file was taken from the inbox: ``accepted``, ``rejected``, ``duplicate``..."""
    _metrics().inbox.labels(outcome).inc()


def worker_restarted(cause: str) -> None:
    _metrics().restarts.labels(cause).inc()


# -- state read at scrape time -----------------------------------------------------------


class StateCollector:
    """Gauges read when scraped: runs by status, and messages per stage queue by state
    (``ready``, ``unacked``: fetched by a worker and not yet acknowledged, ``delayed``,
    ``dead``)."""

    def __init__(self, store: RunStore, backend: Backend, namespace: str) -> None:
        self.store = store
        self.backend = backend
        self.namespace = namespace

    def describe(self) -> list[Any]:
        return []  # names are not fixed up front; registering never scans the runs folder

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        runs = GaugeMetricFamily("sparkle_runs", "Runs by status.", labels=["status"])
        # From the per-run summary caches: a scrape of 10,000 runs reads one small file and
        # stats eleven per run instead of validating every checkpoint.
        summaries = self.store.summaries()
        counts = collections.Counter(s.status.value for s in summaries)
        for status in ("queued", "running", "failed", "succeeded", "cancelled",
                       "awaiting_review", "rejected"):
            runs.add_metric([status], counts[status])
        yield runs
        yield self._review_wait([s.run_id for s in summaries
                                 if s.status.value == "awaiting_review"])
        queues = GaugeMetricFamily("sparkle_queue_messages",
                                   "Messages in each stage queue, by state.",
                                   labels=["queue", "state"])
        try:
            for stage in STAGES:
                for state, count in self._depths(stage).items():
                    queues.add_metric([keys.queue_name(stage), state], count)
        except redis.RedisError as exc:
            log.warning("metrics: cannot read queue depths from Redis (%s)", exc)
            return
        yield queues

    def _review_wait(self, waiting: list[str]) -> Any:
        """How long the longest-waiting run has waited for a person (0 when none waits)."""
        import time

        from prometheus_client.core import GaugeMetricFamily

        from sparkle.review_state import read_review

        oldest = 0.0
        for run_id in waiting:
            review = read_review(str(self.store.root / run_id))
            if review is not None:
                oldest = max(oldest, time.time() - review.requested_at)
        gauge = GaugeMetricFamily("sparkle_review_oldest_wait_seconds",
                                  "Seconds the longest-waiting run has awaited review.")
        gauge.add_metric([], round(oldest, 1))
        return gauge

    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Messages per stage queue by state, as a scrape reports them (the dashboard's
        operations page shows the same numbers)."""
        return {stage: self._depths(stage) for stage in STAGES}

    def _depths(self, stage: str) -> dict[str, int]:
        return self.backend.queue_depths(self.namespace, stage)


def use_multiprocess_dir(folder: Path) -> None:
    """Make this process and the processes it starts share metrics through ``folder``.

    Call before anything records a metric (prometheus_client reads the setting on import).
    """
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    if "prometheus_client" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


@dataclass
class MetricsServer:
    """A running metrics endpoint."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread
    _registry: Any
    _collector: StateCollector

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._registry.unregister(self._collector)


def serve(settings: Settings, store: RunStore, backend: Backend) -> MetricsServer | None:
    """Start the metrics endpoint when ``settings.metrics_port`` is set (else return None).

    In multiprocess mode (:func:`use_multiprocess_dir`) it serves the sum over all processes
    writing to the folder; otherwise this process's own metrics.
    """
    if settings.metrics_port is None:
        return None
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    _metrics()  # declare the families so an idle process still shows them
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    collector = StateCollector(store, backend, settings.namespace)
    registry.register(collector)
    server, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host,
                                       registry=registry)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return MetricsServer(settings.metrics_host, settings.metrics_port, server, thread,
                         registry, collector)

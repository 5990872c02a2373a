"""The opt-in Prometheus endpoint: bound to loopback, stage metrics and run/queue gauges."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

from prometheus_client import REGISTRY
from redis_server import free_port

from sparkle import metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_no_endpoint_unless_a_port_is_set(pipeline):
    engine = pipeline.engine
    assert engine.settings.metrics_port is None
    assert metrics.serve(engine.settings, engine.store, pipeline.app.backend) is None


def test_endpoint_serves_stage_metrics_and_run_gauges_on_loopback(pipeline, plans_dir):
    engine = pipeline.engine
    before = sample("sparkle_stage_attempts_total", stage="images")
    failures = sample("sparkle_stage_attempt_failures_total", stage="images", kind="transient")
    run = pipeline.create(plans_dir / "rooftop.json", fault_images="transient:1")
    assert pipeline.work(run).status.value == "succeeded"
    settings = engine.settings.model_copy(update={"metrics_port": free_port()})
    server = metrics.serve(settings, engine.store, pipeline.app.backend)
    assert server is not None and server.host == "127.0.0.1"
    try:
        url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.stop()
    assert sample("sparkle_stage_attempts_total", stage="images") == before + 2
    assert sample("sparkle_stage_attempt_failures_total", stage="images",
                  kind="transient") == failures + 1
    assert 'sparkle_runs{status="succeeded"} 1.0' in text
    assert 'sparkle_queue_messages{queue="sparkle.videos",state="ready"} 0.0' in text
    assert "sparkle_stage_duration_seconds_bucket" in text
    assert 'sparkle_stage_messages_total{outcome="succeeded",stage="qa"}' in text


def test_threads_taking_their_first_stages_together_register_the_metrics_once():
    """A fresh worker's threads record their first attempts at the same moment: the metrics
    are registered once, not once per thread (a second registration raises, and the stage
    died with it). In a child process, whose registry is still empty."""
    script = """
import threading
from sparkle import metrics
barrier, errors = threading.Barrier(8), []
def first_stage():
    barrier.wait()
    try:
        metrics.attempt_started("script")
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=first_stage) for _ in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(errors)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_gauges_count_runs_awaiting_review_and_the_longest_wait(pipeline, plans_dir):
    """A run stopped at its review gate is counted as awaiting_review, and how long the
    longest-waiting run has waited is a gauge."""
    from sparkle.runstore import RunStatus

    run = pipeline.create(plans_dir / "rooftop.json", review_after="images")
    assert pipeline.work(run).status is RunStatus.awaiting_review
    from sparkle.review_state import read_review, write_review

    waiting = read_review(str(run.dir))
    assert waiting is not None  # (as if it had been waiting for 100 s)
    write_review(str(run.dir), waiting.model_copy(update={"requested_at": time.time() - 100}))
    engine = pipeline.engine
    collector = metrics.StateCollector(engine.store, pipeline.app.backend,
                                       engine.settings.namespace)
    families = {family.name: family for family in collector.collect()}
    runs = {s.labels["status"]: s.value for s in families["sparkle_runs"].samples}
    assert runs["awaiting_review"] == 1 and runs["rejected"] == 0
    [wait] = families["sparkle_review_oldest_wait_seconds"].samples
    assert 100 <= wait.value < 200

"""``sparkle.retry``: bounded retries of an adapter's calls, each retried attempt recorded in
the run's manifest, against a real local HTTP server that fails its first calls."""

from __future__ import annotations

import threading
import urllib.error
from pathlib import Path

import pytest
from retry_stage import URL_VARIABLE, FlakyModelServer, generate_image

import sparkle
from sparkle.retrying import stage_context
from sparkle.runstore import Run, RunStore
from sparkle.schemas import MoviePlan

PLANS = Path(__file__).parents[1] / "data" / "plans"


def new_run(tmp_path: Path, title: str = "retry") -> Run:
    plan = MoviePlan.model_validate_json((PLANS / "rooftop.json").read_bytes())
    plan.title = title
    return RunStore(tmp_path / "runs").create(plan)[0]


def retries(run: Run) -> list[dict[str, object]]:
    return [{"stage": e.stage, "attempt": e.attempt, "error": e.error, **e.metadata}
            for e in run.events() if e.status == "retry"]


def test_a_call_failing_twice_is_retried_and_each_attempt_recorded(tmp_path, monkeypatch):
    """Inside a stage, each failed attempt is a retry event of that stage and attempt (call
    name, attempt number, the server's error, the wait), and the success after them too."""
    # Given a model server whose first two answers are 503, and a run's images stage
    run = new_run(tmp_path)
    with FlakyModelServer(failures=2) as server:
        monkeypatch.setenv(URL_VARIABLE, server.url)
        # When the adapter's call runs inside the stage
        with stage_context(run, "images", 2):
            data = generate_image("a lamp", 7)
    # Then it got the image on the third call, and the manifest says so
    assert data.startswith(b"\x89PNG") and server.calls == 3
    recorded = retries(run)
    assert [(r["call_attempt"], r["outcome"]) for r in recorded] == [
        (1, "retrying"), (2, "retrying"), (3, "success")]
    assert all(r["stage"] == "images" and r["attempt"] == 2 for r in recorded)
    assert all(r["call"] == "generate_image" and r["attempts"] == 4 for r in recorded)
    assert "503" in str(recorded[0]["error"]) and recorded[2]["error"] is None
    assert all(isinstance(r["retry_in_sec"], float) for r in recorded[:2])


def test_a_call_that_keeps_failing_gives_up_after_its_attempts_with_the_last_error(
        tmp_path, monkeypatch):
    """Bounded: after ``attempts`` failures the last error is raised, recorded as given up."""
    run = new_run(tmp_path)
    with FlakyModelServer(failures=100) as server:
        monkeypatch.setenv(URL_VARIABLE, server.url)
        with stage_context(run, "images", 1), pytest.raises(urllib.error.HTTPError):
            generate_image("a lamp", 7)
    assert server.calls == 4
    assert [r["outcome"] for r in retries(run)] == ["retrying"] * 3 + ["gave_up"]


def test_an_error_not_named_transient_is_raised_at_once(tmp_path):
    """Only the exception types given in ``on`` are retried."""
    calls = []

    @sparkle.retry(attempts=5, on=(ConnectionError,), base_sec=0)
    def parse() -> None:
        calls.append(1)
        raise ValueError("bad answer")

    run = new_run(tmp_path)
    with stage_context(run, "script", 1), pytest.raises(ValueError, match="bad answer"):
        parse()
    assert len(calls) == 1
    assert [r["outcome"] for r in retries(run)] == ["permanent"]


def test_outside_a_stage_it_retries_and_records_nothing(tmp_path, monkeypatch):
    """Called from a script or a test (no stage current), it retries the same way."""
    run = new_run(tmp_path)
    with FlakyModelServer(failures=1) as server:
        monkeypatch.setenv(URL_VARIABLE, server.url)
        assert generate_image("a lamp", 7).startswith(b"\x89PNG")
    assert server.calls == 2 and run.events() == []


def test_threads_each_record_in_their_own_run(tmp_path):
    """Worker threads run stages of different runs at once: each thread's retries land in
    the manifest of the run its own stage belongs to."""

    failures: dict[str, int] = {}
    lock = threading.Lock()

    @sparkle.retry(attempts=3, on=(ConnectionError,), base_sec=0.001)
    def call(key: str) -> str:
        with lock:
            failures[key] = failures.get(key, 0) + 1
            first = failures[key] == 1
        if first:
            raise ConnectionError(f"refused for {key}")
        return key

    runs = [new_run(tmp_path, f"thread {i}") for i in range(4)]
    barrier = threading.Barrier(len(runs))

    def work(run: Run) -> None:
        with stage_context(run, "tts", 1):
            barrier.wait()
            for n in range(3):
                call(f"{run.run_id}-{n}")

    threads = [threading.Thread(target=work, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for run in runs:
        recorded = retries(run)
        assert len(recorded) == 6  # a failure and a success for each of its three calls
        assert all(run.run_id in str(r["error"]) for r in recorded if r["error"])


def test_after_the_lease_is_lost_nothing_is_recorded(tmp_path):
    """Only the lease holder writes a run's files: once the stage's lease is lost, the
    decorator still retries but records nothing."""
    lost = threading.Event()
    lost.set()

    @sparkle.retry(attempts=2, on=(ConnectionError,), base_sec=0)
    def flaky() -> None:
        raise ConnectionError("down")

    run = new_run(tmp_path)
    with stage_context(run, "videos", 1, lost), pytest.raises(ConnectionError):
        flaky()
    assert retries(run) == []

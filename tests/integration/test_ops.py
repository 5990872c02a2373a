"""Unattended operation against a real redis-server and real supervised worker processes
(`sparkle worker`): killed workers, a Redis restart, lost messages, crash loops, dead
letters, cancel/resume and draining on SIGTERM.

Short settings keep this fast: a 3 s lease TTL and a 1 s reaper interval, so the bound on
recovery from a killed worker is 3 + 1 s (plus start-up slack). scripts/bench_recovery.py
measures the same with the default settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from redis_server import free_port
from worker_group import BIN, WorkerGroup, wait_for

from sparkle import keys
from sparkle.adapters.testing import read_trace
from sparkle.runstore import Run, RunStore
from sparkle.schemas import STAGES

pytestmark = pytest.mark.redis


#: Lease TTL and reaper interval used here, in seconds.
LEASE_TTL = 3.0
REAPER_INTERVAL = 1.0

#: Slack on top of the recovery bound: worker poll, process start-up, a loaded CI box.
SLACK_SEC = 2.5


class Ops:
    """One test's world: a private Redis, a runs folder, and `sparkle` commands."""

    def __init__(self, redis_server, tmp_path: Path) -> None:
        self.redis = redis_server
        self.dir = tmp_path
        self.runs = tmp_path / "runs"
        self.store = RunStore(self.runs)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
        self.env = {
            **clean,
            "SPARKLE_REDIS_URL": redis_server.url,
            "SPARKLE_RUNS_DIR": str(self.runs),
            "SPARKLE_ADAPTERS": "test",
            "SPARKLE_LEASE_TTL_SEC": str(LEASE_TTL),
            "SPARKLE_REAPER_INTERVAL_SEC": str(REAPER_INTERVAL),
            "SPARKLE_WORKER_RESTART_MIN_SEC": "0.2",
            "SPARKLE_WORKER_RESTART_MAX_SEC": "1",
            "SPARKLE_RETRY_BASE_SEC": "0.01",
            "SPARKLE_RETRY_MAX_SEC": "0.05",
        }
        self.log = tmp_path / "workers.log"
        self.workers = WorkerGroup(tmp_path, self.env, self.log)

    # -- processes -----------------------------------------------------------------------

    def start_workers(self, *args: str, processes: int = 2, threads: int = 1,
                      **env: str) -> None:
        self.workers.start(*args, processes=processes, threads=threads, **env)

    def worker_pids(self) -> list[int]:
        return self.workers.pids()

    def stop_workers(self) -> int:
        return self.workers.stop()

    def close(self) -> None:
        """Stop the workers if a test left them running (killing them if they hang)."""
        self.workers.close()

    def sparkle(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(BIN), *args], cwd=self.dir, env=self.env, text=True,
                              capture_output=True, timeout=60)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    # -- runs ----------------------------------------------------------------------------

    def submit(self, plans_dir: Path, count: int = 1, **metadata: str) -> list[Run]:
        paths = []
        for index in range(count):
            plan = json.loads((plans_dir / "lighthouse.json").read_text())
            plan["title"] = f"Lighthouse {len(list(self.dir.glob('plan-*.json')))}"
            plan["metadata"].update(metadata)
            path = self.dir / f"plan-{index}-{time.monotonic_ns()}.json"
            path.write_text(json.dumps(plan))
            paths.append(path)
        out = self.sparkle("submit", *map(str, paths)).stdout
        return [self.store.run(line.split()[0]) for line in out.splitlines()]

    def status(self, run: Run) -> str:
        return run.status().value

    def wait_status(self, runs: list[Run], status: str, timeout: float) -> None:
        wait_for(lambda: all(self.status(r) == status for r in runs), timeout,
                 f"{len(runs)} run(s) {status}: now "
                 f"{Counter(self.status(r) for r in runs)}")

    def begin_of(self, run: Run, stage: str, attempt: int = 1):
        for event in run.events():
            if (event.stage, event.status, event.attempt) == (stage, "begin", attempt):
                return event
        return None

    def history(self, run: Run) -> str:
        """The run's timeline and the workers' log, for assertion messages."""
        timeline = self.sparkle("timeline", run.run_id, check=False).stdout
        return f"{timeline}\n--- workers.log ---\n{self.log.read_text()[-6000:]}"

    def lease_free(self, run: Run) -> bool:
        return self.redis.client().get(keys.lease("sparkle", run.run_id)) is None


@pytest.fixture
def ops(redis_server, tmp_path):
    world = Ops(redis_server, tmp_path)
    yield world
    world.close()


def successes(run: Run) -> Counter[str]:
    return Counter(e.stage for e in run.events() if e.status == "success")


def assert_complete_and_valid(run: Run) -> None:
    """Succeeded, every stage's success written once, and a movie that decodes."""
    assert run.status().value == "succeeded"
    # the status comes from checkpoints; each stage's manifest event follows its checkpoint
    with contextlib.suppress(AssertionError):
        wait_for(lambda: successes(run)["qa"], 5, "the last success event")
    assert successes(run) == Counter(STAGES), successes(run)
    refs = run.asset_refs()
    with Image.open(run.dir / refs.extras["final_movie"]) as movie:
        assert movie.n_frames >= 2
        movie.seek(movie.n_frames - 1)
    assert json.loads((run.dir / "qa_report.json").read_text())["decision"] == "approve"


@pytest.mark.parametrize("stage", ["videos", "assemble"])
def test_worker_killed_mid_stage_has_its_stage_running_again_within_ttl_plus_interval(
        ops, plans_dir, stage):
    """SIGKILL the worker process running a stage while a second one runs: the reaper
    re-drives the stage within lease TTL + reaper interval, the supervisor replaces the
    process, the run completes, the stage's success is written once, a half-written file
    left by the killed worker does not count, and the movie is valid."""
    port = free_port()
    ops.start_workers(SPARKLE_METRICS_PORT=str(port))
    (run,) = ops.submit(plans_dir, **{f"fault_{stage}": "sleep:3"})
    # Given the stage is running in one of the two worker processes
    wait_for(lambda: ops.begin_of(run, stage), 30, f"{stage} to begin")
    victim = int(ops.begin_of(run, stage).metadata["worker"].split(":")[1])
    assert victim in ops.worker_pids()
    time.sleep(0.5)
    # When I kill it
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    if stage == "assemble":  # as if it died halfway through writing the movie
        (run.dir / "final").mkdir(exist_ok=True)
        (run.dir / "final" / "movie.gif").write_bytes(b"GIF89a\x40\x00")
    # Then the stage runs again within the bound, and the run completes
    wait_for(lambda: ops.begin_of(run, stage, 2), 30, f"{stage} to run again")
    recovery = ops.begin_of(run, stage, 2).timestamp - killed_at
    assert recovery <= LEASE_TTL + REAPER_INTERVAL + SLACK_SEC, (recovery, ops.history(run))
    ops.wait_status([run], "succeeded", 30)
    assert_complete_and_valid(run)
    assert run.checkpoint(stage).attempt == 2, ops.history(run)
    redrives = [e for e in run.events() if e.status == "redrive"]
    assert [(e.stage, e.metadata["reason"]) for e in redrives] == [(stage, "worker_died")], (
        ops.history(run))
    trace = [r for r in read_trace(run.dir) if r["stage"] == stage]
    assert [r["outcome"] for r in trace] == ["ok"] and trace[0]["pid"] != victim, trace
    # And the supervisor replaced the killed process, and counted what happened
    wait_for(lambda: len(ops.worker_pids()) == 2, 10, "a replacement worker process")
    assert victim not in ops.worker_pids()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert f'sparkle_redrives_total{{reason="worker_died",stage="{stage}"}} 1.0' in text
    assert 'sparkle_worker_restarts_total{cause="SIGKILL"} 1.0' in text
    # both attempts: the killed process's counts outlive it in the shared metrics folder
    assert f'sparkle_stage_attempts_total{{stage="{stage}"}} 2.0' in text
    assert "killed by SIGKILL" in ops.log.read_text()


def test_redis_restart_mid_batch_all_runs_complete_after_redrive(ops, plans_dir):
    """Redis restarted without persistence while 10 runs are under way loses every queued
    message, lease and pending mark: a worker whose lease vanished under it records
    nothing and sends its stage again, the reaper re-drives the rest, and all 10 complete,
    each stage's success written once."""
    ops.start_workers(threads=2)
    runs = ops.submit(plans_dir, count=10, fault_videos="sleep:0.5")
    wait_for(lambda: sum(1 for r in runs if ops.begin_of(r, "videos")) >= 3, 30,
             "the batch to be under way")
    assert sum(1 for r in runs if ops.status(r) == "succeeded") < 10
    ops.redis.restart()  # every queued message, lease and pending mark is gone
    ops.wait_status(runs, "succeeded", 90)
    for run in runs:
        assert_complete_and_valid(run)
    def disrupted(run: Run) -> bool:  # re-driven, or a stage begun again after its lease
        events = run.events()
        begins = Counter(e.stage for e in events if e.status == "begin")
        return any(e.status == "redrive" for e in events) or max(begins.values()) > 1

    assert any(disrupted(r) for r in runs), \
        "the restart lost no message and no lease? then this test proved nothing"


def test_deleted_message_is_redriven_by_the_reaper_in_the_workers(ops, plans_dir):
    """A run's queued message deleted from Redis (a flushed queue) before any worker took
    it: the reaper in `sparkle worker` finds no message for its next stage, sends it again,
    and the run completes."""
    # Given a queued run whose message is deleted while no worker runs
    (run,) = ops.submit(plans_dir)
    client = ops.redis.client()
    assert client.delete(keys.dramatiq_queue("sparkle", "script"),
                         keys.dramatiq_messages("sparkle", "script")) == 2
    assert ops.sparkle("redrive", "--dry-run", "--older-than", "0").stdout.startswith(
        f"would re-drive {run.run_id} script (message_lost")
    # When the workers (and their reaper) start
    ops.start_workers()
    # Then it is re-driven and completes
    ops.wait_status([run], "succeeded", LEASE_TTL + REAPER_INTERVAL + 20)
    assert_complete_and_valid(run)
    assert [(e.stage, e.metadata["reason"]) for e in run.events() if e.status == "redrive"] == [
        ("script", "message_lost")]


def test_crash_loop_ends_failed_after_three_attempts(ops, plans_dir):
    """A stage that kills its worker process every time: each death is seen (lease free,
    begin without outcome), re-driven, the process replaced; the third death in a row fails
    the stage with a crash-loop error instead of redelivering it forever."""
    ops.start_workers()
    (run,) = ops.submit(plans_dir, fault_videos="crash")
    ops.wait_status([run], "failed", 60)
    checkpoint = run.checkpoint("videos")
    assert checkpoint.status == "failed"
    assert checkpoint.error.startswith("crash loop: 3 attempts of videos started and never "
                                       "finished")
    begins = [e for e in run.events() if e.stage == "videos" and e.status == "begin"]
    assert len(begins) == 3
    assert not any(e.stage == "tts" for e in run.events())
    (letter,) = json.loads(ops.sparkle("dlq", "list", "--json").stdout)
    assert (letter["run_id"], letter["stage"]) == (run.run_id, "videos")
    assert letter["error"].startswith("crash loop")
    # The processes were replaced each time, and the failed run is left alone after
    wait_for(lambda: len(ops.worker_pids()) == 2, 10, "replacement worker processes")
    time.sleep(LEASE_TTL + REAPER_INTERVAL + 1)
    assert run.status().value == "failed"
    assert [e for e in run.events() if e.stage == "videos" and e.status == "begin"] == begins
    assert ops.log.read_text().count("exited with code 137") == 3


def test_dead_letters_replayed_after_the_fix_complete_and_a_second_replay_does_nothing(
        ops, plans_dir):
    """A permanently failing adapter fills the dead-letter queue; after restarting the
    workers with the fixed adapter, `sparkle dlq replay --all` completes the runs."""
    ops.start_workers()
    runs = ops.submit(plans_dir, count=3, fault_videos="permanent")
    ops.wait_status(runs, "failed", 30)
    letters = json.loads(ops.sparkle("dlq", "list", "--json").stdout)
    assert sorted(x["run_id"] for x in letters) == sorted(r.run_id for r in runs)
    assert {x["error"] for x in letters} == {
        "PermanentStageError: injected permanent fault in videos"}
    assert "injected permanent fault" in ops.sparkle("dlq", "list").stdout
    # When I fix the adapter and replay
    assert ops.stop_workers() == 0
    ops.start_workers(SPARKLE_ADAPTER_VIDEOS="sparkle.adapters.testing:fixed_videos")
    assert "replayed 3 of 3" in ops.sparkle("dlq", "replay", "--all").stdout
    # Then every run completes and the dead-letter queue is empty
    ops.wait_status(runs, "succeeded", 30)
    for run in runs:
        assert_complete_and_valid(run)
    assert json.loads(ops.sparkle("dlq", "list", "--json").stdout) == []
    # And a second replay does nothing
    events = [len(r.events()) for r in runs]
    assert "nothing to replay" in ops.sparkle("dlq", "replay", "--all").stdout
    time.sleep(1)
    assert [len(r.events()) for r in runs] == events


def test_cancel_stops_between_stages_and_resume_finishes(ops, plans_dir):
    """`sparkle cancel` while videos runs: videos finishes, tts never starts, the reaper
    leaves the run alone, status is cancelled; `sparkle resume` finishes it."""
    ops.start_workers()
    (run,) = ops.submit(plans_dir, fault_videos="sleep:2")
    wait_for(lambda: ops.begin_of(run, "videos"), 30, "videos to begin")
    out = ops.sparkle("cancel", run.run_id).stdout
    assert "videos is running and finishes" in out
    assert run.status().value == "cancelled"
    wait_for(lambda: successes(run)["videos"] == 1 and ops.lease_free(run), 20,
             "videos to finish")
    time.sleep(LEASE_TTL + REAPER_INTERVAL + 1)
    assert run.status().value == "cancelled"
    assert not any(e.stage == "tts" for e in run.events())
    assert not any(e.status == "redrive" for e in run.events())
    timeline = json.loads(ops.sparkle("timeline", run.run_id, "--json").stdout)
    assert [e["status"] for e in timeline["events"] if e["stage"] == "videos"] == [
        "begin", "cancel", "success"]
    assert "queued tts" in ops.sparkle("resume", run.run_id).stdout
    ops.wait_status([run], "succeeded", 30)
    assert_complete_and_valid(run)


def test_sigterm_drains_running_stages_and_loses_nothing(ops, plans_dir):
    """SIGTERM to `sparkle worker` while a stage runs: the stage finishes (not cut short,
    not re-run), the lease is released, the next stage's message waits in Redis, and the
    supervisor exits 0; started again, the workers finish the run. Logs are JSON lines
    naming run and stage."""
    ops.start_workers("--log-format", "json")
    (run,) = ops.submit(plans_dir, fault_videos="sleep:2")
    wait_for(lambda: ops.begin_of(run, "videos"), 30, "videos to begin")
    assert ops.stop_workers() == 0
    assert successes(run)["videos"] == 1
    assert ops.lease_free(run)
    client = ops.redis.client()
    assert client.hlen(keys.dramatiq_messages("sparkle", "tts")) == 1
    assert client.llen(keys.dramatiq_queue("sparkle", "tts")) == 1  # given back, not held
    ops.start_workers()
    ops.wait_status([run], "succeeded", 30)
    assert_complete_and_valid(run)
    assert [e.stage for e in run.events() if e.status == "begin"] == list(STAGES)
    lines = [json.loads(line) for line in ops.log.read_text().splitlines()
             if line.startswith("{")]
    videos = [line for line in lines if line.get("stage") == "videos"]
    assert videos and all(line["run_id"] == run.run_id for line in videos)

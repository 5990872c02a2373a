"""`sparkle serve` and `sparkle watch` as a user runs them: real processes, real folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "sparkle"


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.Popen([str(BIN), *args], cwd=cwd, env={**clean, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out


def succeeded(runs: Path) -> list[str]:
    found = []
    for path in runs.glob("*/checkpoints/qa.json"):
        if json.loads(path.read_text())["status"] == "success":
            found.append(path.parents[1].name)
    return found


def test_serve_renders_a_dropped_plan_and_rejects_a_broken_one(tmp_path, plans_dir):
    """With `sparkle serve` running (embedded, real media adapters), a plan dropped into
    inbox/ becomes a finished run with a movie and moves to processed/; a broken file goes
    to rejected/ with a readable error; SIGTERM stops the service cleanly."""
    serve = start(["serve"], cwd=tmp_path)
    try:
        assert wait_for(lambda: (tmp_path / "inbox" / "processed").is_dir(), 30)
        shutil.copy(plans_dir / "lighthouse.json", tmp_path / "inbox" / "lighthouse.json")
        (tmp_path / "inbox" / "broken.json").write_text('{"title": "x", "shots": [')
        assert wait_for(lambda: succeeded(tmp_path / "runs") != [], 120)
    finally:
        output = stop(serve)
    assert serve.returncode == 0, output
    [run_id] = succeeded(tmp_path / "runs")
    assert (tmp_path / "runs" / run_id / "final" / "movie.mp4").stat().st_size > 10_000
    assert (tmp_path / "inbox" / "processed" / "lighthouse.json").is_file()
    error = json.loads((tmp_path / "inbox" / "rejected" / "broken.json.error.json").read_text())
    assert error["file"] == "broken.json"
    assert "invalid JSON at line 1" in error["errors"][0]["message"]
    assert not (tmp_path / "inbox" / "lighthouse.json").exists()


def test_serve_requeues_unfinished_runs_on_start(tmp_path, plans_dir):
    """Embedded messages live in memory: a run left half-done by a stopped `serve` is
    queued again from its checkpoints when `serve` starts again."""
    # Given a run whose tts stage sleeps long enough for serve to be stopped during it
    plan = json.loads((plans_dir / "rooftop.json").read_text())
    plan["metadata"]["fault_tts"] = "sleep:2"
    first = start(["serve", "--adapters", "test"], cwd=tmp_path)
    try:
        assert wait_for(lambda: (tmp_path / "inbox" / "processed").is_dir(), 30)
        (tmp_path / "inbox" / "plan.json").write_text(json.dumps(plan))
        assert wait_for(lambda: any((tmp_path / "runs").glob("*/checkpoints/tts.json")), 30)
    finally:
        first.send_signal(signal.SIGKILL)  # nothing of the in-memory queue survives
        first.communicate(timeout=30)
    assert succeeded(tmp_path / "runs") == []
    # When serve starts again, after the killed stage's lease has expired
    second = start(["serve", "--adapters", "test"], cwd=tmp_path, SPARKLE_LEASE_TTL_SEC="1")
    try:
        assert wait_for(lambda: succeeded(tmp_path / "runs") != [], 60)
    finally:
        stop(second)


@pytest.mark.redis
def test_watch_holds_plans_while_redis_is_down_and_catches_up(redis_server, tmp_path,
                                                               plans_dir):
    """`sparkle watch` against a Redis that goes away: plans dropped meanwhile wait in
    .claimed/, none is rejected, and all are queued once Redis is back."""
    watch = start(["watch"], cwd=tmp_path, SPARKLE_REDIS_URL=redis_server.url)
    try:
        assert wait_for(lambda: (tmp_path / "inbox" / "processed").is_dir(), 30)
        redis_server.stop()
        for index in range(3):
            plan = json.loads((plans_dir / "rooftop.json").read_text())
            plan["title"] = f"Rooftop {index}"
            (tmp_path / "inbox" / f"p{index}.json").write_text(json.dumps(plan))
        time.sleep(2)
        assert list((tmp_path / "inbox" / "processed").glob("*.json")) == []
        assert list((tmp_path / "inbox" / "rejected").iterdir()) == []
        redis_server.start()
        assert wait_for(lambda: len(list((tmp_path / "inbox" / "processed").glob("*.json")))
                        == 3, 60)
    finally:
        output = stop(watch)
    assert watch.returncode == 0, output
    assert list((tmp_path / "inbox" / "rejected").iterdir()) == []
    # and each run's first stage is waiting in its queue
    assert redis_server.client().llen("sparkle:sparkle.script") == 3


def test_serve_exposes_metrics_on_loopback_when_asked(tmp_path):
    """With SPARKLE_METRICS_PORT set, `sparkle serve` serves Prometheus metrics on
    127.0.0.1 (run counts by status among them)."""
    import urllib.request

    from redis_server import free_port

    port = free_port()
    serve = start(["serve", "--adapters", "test"], cwd=tmp_path,
                  SPARKLE_METRICS_PORT=str(port))

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    try:
        assert wait_for(lambda: "sparkle_runs" in scrape(), 30)
        # and the inbox's outcomes are counted
        (tmp_path / "inbox" / "broken.json").write_text("[]")
        assert wait_for(lambda: 'outcome="rejected"} 1.0' in scrape(), 30), scrape()
    finally:
        stop(serve)


@pytest.mark.parametrize("command", [["serve"], ["watch"]])
def test_a_wrong_inbox_profile_stops_serve_and_watch_at_start(tmp_path, command):
    """An unknown key in an inbox profile's profile.toml is one line naming the file and
    the key, and exit 2, before anything starts; never silence."""
    # Given
    (tmp_path / "inbox" / "rush").mkdir(parents=True)
    (tmp_path / "inbox" / "rush" / "profile.toml").write_text('priorty = "high"\n')
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    env = {**clean, "SPARKLE_REDIS_URL": "redis://127.0.0.1:1/0"} if command == ["watch"] \
        else clean
    # When
    done = subprocess.run([str(BIN), *command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    # Then
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "inbox/rush/profile.toml" in lines[0] and "'priorty'" in lines[0]


def test_a_plan_dropped_into_a_profile_folder_runs_with_the_profile(tmp_path, plans_dir):
    """`sparkle serve` watches inbox/rush/ (it has a profile.toml): a plan dropped there
    becomes a run whose plan carries the profile's settings where it set none."""
    # Given
    (tmp_path / "inbox" / "rush").mkdir(parents=True)
    (tmp_path / "inbox" / "rush" / "profile.toml").write_text(
        'priority = "high"\nwebhook = "http://127.0.0.1:9/hook"\n')
    serve = start(["serve", "--adapters", "test"], cwd=tmp_path)
    try:
        assert wait_for(lambda: (tmp_path / "inbox" / "rush" / "processed").is_dir(), 30)
        # When
        shutil.copy(plans_dir / "lighthouse.json", tmp_path / "inbox" / "rush" / "plan.json")
        assert wait_for(lambda: succeeded(tmp_path / "runs") != [], 120)
    finally:
        output = stop(serve)
    # Then
    assert serve.returncode == 0, output
    [run_id] = succeeded(tmp_path / "runs")
    metadata = json.loads((tmp_path / "runs" / run_id / "movie_plan.json").read_text())["metadata"]
    assert metadata["priority"] == "high" and metadata["webhook"] == "http://127.0.0.1:9/hook"
    assert metadata["seed"] == json.loads((plans_dir / "lighthouse.json").read_text())[
        "metadata"]["seed"]
    assert (tmp_path / "inbox" / "rush" / "processed" / "plan.json").is_file()

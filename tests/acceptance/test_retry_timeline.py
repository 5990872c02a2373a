"""An adapter calling a flaky HTTP model service through ``sparkle.retry``: the run
succeeds, and ``sparkle timeline`` shows each retried call, embedded and with Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from retry_stage import URL_VARIABLE, FlakyModelServer

BIN = Path(sys.executable).parent / "sparkle"
TESTS = Path(__file__).resolve().parents[1]

#: How long the Redis test waits for the run at most (a safety net, not a measurement).
PATIENCE_SEC = 90


def environment(server: FlakyModelServer, **more: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return {**clean, "PYTHONPATH": str(TESTS), URL_VARIABLE: server.url,
            "SPARKLE_ADAPTER_IMAGES": "retry_stage:images", **more}


def timeline_of(run_id: str, cwd: Path, env: dict[str, str]) -> str:
    shown = subprocess.run([str(BIN), "timeline", run_id], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_retried_calls_appear_in_the_timeline_embedded(tmp_path, plans_dir):
    """`sparkle run` (embedded): the model service fails twice, the run succeeds, and the
    timeline lists the two retried attempts and the success of the third."""
    # Given a model service that fails its first two calls
    with FlakyModelServer(failures=2) as server:
        env = environment(server)
        # When a run's images stage calls it through sparkle.retry
        done = subprocess.run([str(BIN), "run", str(plans_dir / "rooftop.json"), "--adapters",
                               "test"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        run_id = next((tmp_path / "runs").iterdir()).name
        shown = timeline_of(run_id, tmp_path, env)
    # Then the timeline shows each attempt of the call, in the images stage
    lines = [line for line in shown.splitlines() if " retry " in line]
    assert len(lines) == 3, shown
    assert all("images" in line for line in lines)
    assert "call generate_image attempt 1/4: retrying" in lines[0] and "503" in lines[0]
    assert "call generate_image attempt 2/4: retrying" in lines[1]
    assert "call generate_image attempt 3/4: success" in lines[2]
    assert server.calls == 3


@pytest.mark.redis
def test_retried_calls_appear_in_the_timeline_with_redis(redis_server, tmp_path, plans_dir):
    """The same through `sparkle submit` and a `sparkle worker` process on a real Redis:
    the decorator finds its stage in the worker's threads."""
    with FlakyModelServer(failures=2) as server:
        env = environment(server, SPARKLE_REDIS_URL=redis_server.url,
                          SPARKLE_ADAPTERS="test", SPARKLE_RUNS_DIR=str(tmp_path / "runs"))
        worker = subprocess.Popen([str(BIN), "worker", "--processes", "1", "--threads", "2"],
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            submitted = subprocess.run([str(BIN), "submit", str(plans_dir / "rooftop.json")],
                                       cwd=tmp_path, env=env, capture_output=True, text=True,
                                       timeout=60)
            assert submitted.returncode == 0, submitted.stderr
            deadline = time.monotonic() + PATIENCE_SEC
            qa = None
            while time.monotonic() < deadline:
                qa = next((tmp_path / "runs").glob("*/checkpoints/qa.json"), None)
                if qa is not None and json.loads(qa.read_text() or "{}").get(
                        "status") == "success":
                    break
                time.sleep(0.1)
        finally:
            worker.terminate()
            worker.wait(60)
        assert qa is not None
        shown = timeline_of(qa.parents[1].name, tmp_path, env)
    lines = [line for line in shown.splitlines() if " retry " in line]
    assert [line.split(": ", 1)[0].rsplit("call ", 1)[1] for line in lines] == [
        "generate_image attempt 1/4", "generate_image attempt 2/4", "generate_image attempt 3/4"]

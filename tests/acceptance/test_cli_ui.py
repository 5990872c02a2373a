"""`sparkle ui` and `sparkle serve --ui` as an operator starts them: real processes, real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from redis_server import free_port

BIN = Path(sys.executable).parent / "sparkle"


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.Popen([str(BIN), *args], cwd=cwd, env={**clean, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def poll(fn, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
        except OSError:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_ui_refuses_to_listen_beyond_loopback_without_a_token(tmp_path):
    # When I start the dashboard on every address without SPARKLE_UI_TOKEN
    done = subprocess.run([str(BIN), "ui", "--host", "0.0.0.0"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=60,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("SPARKLE_")})
    # Then it refuses, exit 2, saying what to set
    assert done.returncode == 2
    assert "SPARKLE_UI_TOKEN" in done.stderr and "refusing" in done.stderr
    # and so does `serve --ui` told to by its environment
    served = subprocess.run([str(BIN), "serve", "--ui"], cwd=tmp_path, text=True,
                            capture_output=True, timeout=60,
                            env={**{k: v for k, v in os.environ.items()
                                    if not k.startswith("SPARKLE_")},
                                 "SPARKLE_UI_HOST": "0.0.0.0"})
    assert served.returncode == 2 and "SPARKLE_UI_TOKEN" in served.stderr


def test_serve_ui_shows_a_dropped_plan_rendering_to_the_end(tmp_path, plans_dir):
    """On a fresh folder, `sparkle serve --ui`; a plan dropped into the inbox appears in the
    dashboard's API, its events stream, and it reaches succeeded with its movie served."""
    port = free_port()
    proc = start(["serve", "--ui", "--adapters", "test"], tmp_path,
                 SPARKLE_UI_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        assert poll(lambda: get_json(f"{base}/api/health")), "the dashboard did not answer"
        # When I drop a plan into the inbox
        (tmp_path / "inbox").mkdir(exist_ok=True)
        shutil.copy(plans_dir / "lighthouse.json", tmp_path / "inbox" / "lighthouse.json")
        # Then the dashboard lists its run, which succeeds
        def finished() -> object:
            runs = get_json(f"{base}/api/runs")["runs"]  # type: ignore[index]
            return runs and runs[0]["status"] == "succeeded" and runs[0]

        run = poll(finished)
        assert run, "the run did not succeed"
        detail = get_json(f"{base}/api/runs/{run['run_id']}")
        movie = detail["asset_refs"]["extras"]["final_movie"]  # type: ignore[index]
        request = urllib.request.Request(f"{base}/runs/{run['run_id']}/files/{movie}",
                                         headers={"Range": "bytes=0-9"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 206 and len(answer.read()) == 10
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "dashboard on http://127.0.0.1" in out

#!/usr/bin/env python
"""Benchmark the dashboard: listing 10,000 runs, event latency to an open page, memory.

1. **Listing**: fills a runs folder with ``--runs`` run folders (default 10,000, the mix of
   ``scripts/bench_scale.py``) and times, in this process through Starlette's TestClient
   (server time plus well under a millisecond of client), ``GET /api/runs`` and the runs
   page ``GET /``: the first call of a fresh process (every summary cache read once) and
   then warm (median of ``--repeat``), also filtered by status and searched by title.
   Baselines measured in the same run: a bare ``os.scandir`` of the folder and
   ``RunStore.summaries()`` (what ``sparkle runs`` does), each printed as a ratio.
2. **Event latency**: a real uvicorn server; a client follows a run's events
   (``GET /api/runs/{id}/events``, what the run page's EventSource opens); the time from
   ``Run.append_event`` returning to the event arriving, ``--events`` times.
3. **Memory**: ``sparkle serve --ui`` (embedded, test adapters) in a child process renders
   ``--movies`` plans dropped into its inbox in four batches, while this script keeps a
   page open on every run (its event stream, and ``/runs/{id}/live`` fetched on each
   event as the page's script does) and the runs page's change stream. The child's
   resident memory is printed after each batch.

Usage::

    .venv/bin/python scripts/bench_ui.py [--runs 10000] [--repeat 7] [--events 20] [--movies 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bench_scale import bare_scandir, populate, timed  # noqa: E402

from sparkle.runstore import RunStore  # noqa: E402
from sparkle.settings import Settings  # noqa: E402

BIN = Path(sys.executable).parent
PLAN = REPO / "tests" / "data" / "plans" / "lighthouse.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


# -- 1. listing ---------------------------------------------------------------------------


def bench_listing(root: Path, count: int, repeat: int) -> None:
    from starlette.testclient import TestClient

    from sparkle.web.app import create_app
    from sparkle.web.config import UiConfig
    from sparkle.web.site import Mode, Site

    started = time.perf_counter()
    states = populate(root / "runs", count)
    print(f"populated {len(states)} runs in {time.perf_counter() - started:.1f}s")
    store = RunStore(root / "runs")
    store.summaries()  # (every summary cache written, as a running system has them)
    settings = Settings(runs_dir=root / "runs", inbox_dir=root / "inbox")

    def client() -> TestClient:
        return TestClient(create_app(Site(settings, store, Mode.standalone), UiConfig()),
                          base_url="http://127.0.0.1:8321")

    def once(web: TestClient, url: str) -> float:
        begun = time.perf_counter()
        answer = web.get(url)
        took = time.perf_counter() - begun
        assert answer.status_code == 200, (url, answer.status_code)
        return took

    scandir = timed(lambda: bare_scandir(root / "runs"), repeat)
    summaries = timed(store.summaries, repeat)
    print(f"\nbaselines over {count} runs (warm page cache, median of {repeat}):")
    print(f"  os.scandir of the runs folder      {ms(scandir)}")
    print(f"  RunStore.summaries() (sparkle runs) {ms(summaries)}  {summaries / scandir:6.1f}x")
    print("\nfirst call of a fresh dashboard process:")
    for url in ("/api/runs", "/"):
        took = once(client(), url)
        print(f"  GET {url:<28} {ms(took)}  {took / scandir:6.1f}x scandir")
    web = client()
    once(web, "/api/runs?q=lighthouse")  # (reads each title once)
    print(f"\nwarm (median of {repeat}):")
    for url in ("/api/runs", "/", "/api/runs?status=failed", "/api/runs?q=movie-0999",
                "/api/runs?limit=50&offset=9000", "/runs/table"):
        took = statistics.median(once(web, url) for _ in range(repeat))
        print(f"  GET {url:<32} {ms(took)}  {took / scandir:6.1f}x scandir  "
              f"{took / summaries:5.2f}x summaries()")


# -- 2. event latency -----------------------------------------------------------------------


def bench_events(root: Path, count: int) -> None:
    import httpx2

    from sparkle.plans import load_plan_file
    from sparkle.web.config import UiConfig
    from sparkle.web.server import start_in_background
    from sparkle.web.site import Mode, Site

    settings = Settings(runs_dir=root / "events-runs", inbox_dir=root / "inbox")
    store = RunStore(settings.runs_dir)
    run, _ = store.create(load_plan_file(PLAN, 1 << 20))
    port = free_port()
    server = start_in_background(Site(settings, store, Mode.standalone), UiConfig(port=port))
    latencies: list[float] = []
    arrived = threading.Event()
    stamp = [0.0]

    def follow() -> None:
        url = f"http://127.0.0.1:{port}/api/runs/{run.run_id}/events?from=" + str(
            (run.dir / "manifest.jsonl").stat().st_size)
        with httpx2.stream("GET", url, timeout=60) as answer:
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    latencies.append(time.perf_counter() - stamp[0])
                    arrived.set()
                    if len(latencies) >= count:
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)  # (connected)
    try:
        for _ in range(count):
            arrived.clear()
            time.sleep(0.137)  # (not in step with the server's poll)
            stamp[0] = time.perf_counter()
            run.append_event("script", "redrive", 1, metadata={"reason": "bench"})
            if not arrived.wait(10):
                raise SystemExit("an event did not arrive within 10 s")
    finally:
        server.stop()
    latencies.sort()
    median = latencies[len(latencies) // 2]
    print(f"\nevent latency, append → client, {count} events: median {ms(median)}, "
          f"max {ms(latencies[-1])} (target < 1000 ms)")


# -- 3. memory --------------------------------------------------------------------------------


def bench_memory(root: Path, movies: int) -> None:
    import httpx2
    import psutil

    folder = root / "memory"
    folder.mkdir()
    port = free_port()
    env = {**os.environ, "SPARKLE_ADAPTERS": "test", "SPARKLE_UI_PORT": str(port),
           "SPARKLE_RUNS_DIR": str(folder / "runs"), "SPARKLE_INBOX_DIR": str(folder / "inbox"),
           "SPARKLE_STABLE_SECONDS": "0.1"}
    env.pop("SPARKLE_REDIS_URL", None)
    env.pop("SPARKLE_UI_TOKEN", None)
    child = subprocess.Popen([str(BIN / "sparkle"), "serve", "--ui", "--threads", "2"],
                             cwd=folder, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    pages: list[threading.Thread] = []

    def page(run_id: str) -> None:
        """A run page: follows the events, fetches the live blocks on each, until done."""
        with contextlib.suppress(httpx2.HTTPError), httpx2.Client(
                base_url=base, timeout=60) as web, web.stream(
                "GET", f"/api/runs/{run_id}/events") as answer:
            for line in answer.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("data:"):
                    live = web.get(f"/runs/{run_id}/live").json()
                    if live["status"] in ("succeeded", "failed"):
                        return

    def runs_page() -> None:
        """The runs page: follows the change stream, fetches the table on each change."""
        with contextlib.suppress(httpx2.HTTPError), httpx2.Client(
                base_url=base, timeout=None) as web, web.stream(
                "GET", "/api/runs/changes") as answer:
            for line in answer.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("data:"):
                    web.get("/runs/table")

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("serve --ui did not start") from None
                time.sleep(0.1)
        process = psutil.Process(child.pid)
        threading.Thread(target=runs_page, daemon=True).start()
        plan = json.loads(PLAN.read_text())
        (folder / "inbox").mkdir(exist_ok=True)
        batch = max(1, movies // 4)
        print(f"\nmemory of `sparkle serve --ui` (RSS) while {movies} runs complete with "
              "their pages open:")
        print(f"  at start                        {process.memory_info().rss / 2**20:7.1f} MiB")
        done = 0
        with httpx2.Client(base_url=base, timeout=30) as web:
            while done < movies:
                ids = []
                for number in range(done, min(movies, done + batch)):
                    plan["title"] = f"Lighthouse {number:04d}"
                    data = json.dumps(plan).encode()
                    answer = web.post("/api/runs", content=data,
                                      headers={"content-type": "application/json"})
                    ids.append(answer.json()["run_id"])
                for run_id in ids:
                    thread = threading.Thread(target=page, args=(run_id,), daemon=True)
                    thread.start()
                    pages.append(thread)
                for run_id in ids:
                    while web.get(f"/api/runs/{run_id}").json()["status"] not in (
                            "succeeded", "failed"):
                        time.sleep(0.2)
                done += len(ids)
                time.sleep(1.0)
                print(f"  after {done:4d} runs completed      "
                      f"{process.memory_info().rss / 2**20:7.1f} MiB")
    finally:
        stop.set()
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--movies", type=int, default=100)
    parser.add_argument("--dir", type=Path, help="Work folder (default: a temporary one).")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} cpu(s)")
    root = Path(tempfile.mkdtemp(prefix="bench-ui-", dir=args.dir))
    try:
        bench_listing(root, args.runs, args.repeat)
        bench_events(root, args.events)
        bench_memory(root, args.movies)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

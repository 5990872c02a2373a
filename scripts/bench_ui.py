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
   ``Run.append_event`` being called to the event arriving, ``--events`` times; then the
   same to the line the run page adds to its live log, in headless Chromium (when
   ``/usr/bin/chromium`` is installed).
3. **Memory**: ``sparkle serve --ui`` (embedded, test adapters) in a child process renders
   ``--movies`` plans dropped into its inbox in four batches, while this script keeps a
   page open on every run (its event stream, and ``/runs/{id}/live`` fetched on each
   event as the page's script does) and the runs page's change stream. The child's
   resident memory is printed after each batch, beside that of ``sparkle serve`` without
   the dashboard doing the same work (the baseline).

Usage::

    .venv/bin/python scripts/bench_ui.py [--runs 10000] [--repeat 7] [--events 20] [--movies 100]
        [--parts listing events memory]
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

from sparkle.errors import SparkleError  # noqa: E402
from sparkle.runlayout import PLAN_FILE  # noqa: E402
from sparkle.runstore import Run, RunStore  # noqa: E402
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
    """Latency of manifest events to an SSE client and, when Debian's Chromium is
    installed, to an open run page (its live log)."""
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
        reader.join(10)
        latencies.sort()
        print(f"\nevent latency, append → SSE client, {count} events: median "
              f"{ms(latencies[len(latencies) // 2])}, max {ms(latencies[-1])} "
              "(target < 1000 ms)")
        page = page_latencies(f"http://127.0.0.1:{port}/runs/{run.run_id}", run, count)
        if page:
            print(f"event latency, append → shown in an open run page (Chromium), {count} "
                  f"events: median {ms(page[len(page) // 2])}, max {ms(page[-1])}")
    finally:
        server.stop()


def page_latencies(url: str, run: Run, count: int) -> list[float]:
    """From ``append_event`` to the event's line in the run page's live log, in headless
    Chromium (empty when it is not installed)."""
    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        print("(no /usr/bin/chromium: the page latency is not measured)")
        return []
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path="/usr/bin/chromedriver"))
    found: list[float] = []
    try:
        driver.get(url)
        # (a line added to the live log is stamped with the page's clock, the system's)
        driver.execute_script("""
            window.__arrivals = [];
            new MutationObserver(function () { window.__arrivals.push(Date.now()); })
              .observe(document.getElementById('live-log'), {childList: true});""")
        time.sleep(1.0)
        for index in range(count):
            time.sleep(0.137)
            sent = time.time()
            run.append_event("script", "redrive", 1, metadata={"reason": "bench"})
            deadline = time.monotonic() + 10
            while True:
                arrivals = driver.execute_script("return window.__arrivals;")
                if len(arrivals) > index:
                    found.append(arrivals[index] / 1000 - sent)
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("an event did not reach the page within 10 s")
                time.sleep(0.01)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return sorted(found)


# -- 3. memory --------------------------------------------------------------------------------


def bench_memory(root: Path, movies: int, ui: bool) -> list[float]:
    """RSS of a `sparkle serve` child (with ``ui``: `--ui`, pages open on every run) at the
    start and after each quarter of ``movies`` runs completed; returns them in MiB."""
    import httpx2
    import psutil

    folder = root / ("memory-ui" if ui else "memory-baseline")
    folder.mkdir()
    port = free_port()
    env = {**os.environ, "SPARKLE_ADAPTERS": "test", "SPARKLE_UI_PORT": str(port),
           "SPARKLE_RUNS_DIR": str(folder / "runs"), "SPARKLE_INBOX_DIR": str(folder / "inbox"),
           "SPARKLE_STABLE_SECONDS": "0.1"}
    env.pop("SPARKLE_REDIS_URL", None)
    env.pop("SPARKLE_UI_TOKEN", None)
    (folder / "inbox").mkdir()
    command = [str(BIN / "sparkle"), "serve", "--threads", "2", *(["--ui"] if ui else [])]
    child = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    store = RunStore(folder / "runs")
    stop = threading.Event()

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

    def settled(run_id: str) -> bool:
        try:
            return store.run(run_id).status().value in ("succeeded", "failed")
        except SparkleError:
            return False  # (not taken from the inbox yet)

    rss: list[float] = []
    try:
        time.sleep(3.0)  # (started and idle)
        process = psutil.Process(child.pid)
        if ui:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("serve --ui did not start") from None
                    time.sleep(0.1)
            threading.Thread(target=runs_page, daemon=True).start()
        rss.append(process.memory_info().rss / 2**20)
        plan = json.loads(PLAN.read_text())
        batch = max(1, movies // 4)
        done = 0
        while done < movies:
            ids = []
            for number in range(done, min(movies, done + batch)):
                plan["title"] = f"Lighthouse {number:04d}"
                plan["metadata"]["run_id"] = f"lighthouse-{number:04d}"
                (folder / "inbox" / f"plan-{number:04d}.json").write_text(json.dumps(plan))
                ids.append(plan["metadata"]["run_id"])
            if ui:
                for run_id in ids:
                    while not (folder / "runs" / run_id / PLAN_FILE).exists():
                        time.sleep(0.05)
                    threading.Thread(target=page, args=(run_id,), daemon=True).start()
            for run_id in ids:
                while not settled(run_id):
                    time.sleep(0.2)
            done += len(ids)
            time.sleep(1.0)
            rss.append(process.memory_info().rss / 2**20)
    finally:
        stop.set()
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
    return rss


def report_memory(root: Path, movies: int) -> None:
    with_ui = bench_memory(root, movies, ui=True)
    baseline = bench_memory(root, movies, ui=False)
    print(f"\nmemory (RSS, MiB) of `sparkle serve` while {movies} runs complete "
          "(test adapters):")
    print(f"  {'':<26}{'--ui, every page open':>24}{'without --ui':>16}")
    steps = ["at start"] + [f"after {movies * i // 4} runs" for i in range(1, 5)]
    for step, mine, theirs in zip(steps, with_ui, baseline, strict=True):
        print(f"  {step:<26}{mine:>24.1f}{theirs:>16.1f}")
    print(f"  growth after the first quarter: {with_ui[-1] - with_ui[1]:+.1f} MiB with the "
          f"dashboard, {baseline[-1] - baseline[1]:+.1f} MiB without")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--movies", type=int, default=100)
    parser.add_argument("--parts", nargs="+", default=["listing", "events", "memory"],
                        choices=["listing", "events", "memory"])
    parser.add_argument("--dir", type=Path, help="Work folder (default: a temporary one).")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} cpu(s)")
    root = Path(tempfile.mkdtemp(prefix="bench-ui-", dir=args.dir))
    try:
        if "listing" in args.parts:
            bench_listing(root, args.runs, args.repeat)
        if "events" in args.parts:
            bench_events(root, args.events)
        if "memory" in args.parts:
            report_memory(root, args.movies)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

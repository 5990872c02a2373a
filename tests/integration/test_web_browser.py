"""The dashboard in a real browser: Debian's headless Chromium driven by selenium.

Nothing here downloads a browser: selenium is pointed at /usr/bin/chromium and
/usr/bin/chromedriver (``apt-get install chromium chromium-driver``, done by ``.ci/run``).
One browser serves every test of the session. Screenshots of each page go to
``artifacts/screenshots/`` (kept by CI); with ``SPARKLE_DOCS_SCREENSHOT=1`` the lighthouse
run page also replaces ``docs/dashboard-run.png`` (the README's picture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: Chromium flags: headless, no sandbox (CI containers run as root), and nothing that
#: reaches the network on its own.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1800",
                  "--autoplay-policy=no-user-gesture-required")

#: Longest wait for something to appear on a page, in seconds (a media render of the
#: lighthouse plan takes about 5 s on two idle cores).
WAIT_SEC = 120

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the whole session."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Chromium missing: apt-get install -y chromium chromium-driver")
    os.environ["SE_OFFLINE"] = "true"  # (selenium must never fetch a driver or browser)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(condition: Any, timeout: float = WAIT_SEC, what: str = "condition") -> Any:
    """Poll ``condition()`` until it is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def screenshot(driver: Any, name: str, also: Path | None = None) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    if also is not None:
        driver.save_screenshot(str(also))


def wait_listening(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    import socket

    def up() -> bool:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(up, 60, f"the dashboard on port {port}")


def mark_page(driver: Any) -> None:
    """Mark the loaded document: a reload would lose the mark."""
    driver.execute_script("window.__sparkleMark = 'same-document';")


def same_page(driver: Any) -> bool:
    return bool(driver.execute_script("return window.__sparkleMark === 'same-document';"))


def run_status(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "run-status").text)


# -- embedded `sparkle serve --ui`, the media adapters ----------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`sparkle serve --ui` (embedded, media adapters) as an operator starts it."""
    port = free_port()
    env = {**os.environ, "SPARKLE_UI_PORT": str(port), "SPARKLE_ADAPTERS": "media",
           "SPARKLE_RUNS_DIR": str(tmp_path / "runs"), "SPARKLE_INBOX_DIR": str(tmp_path / "inbox")}
    env.pop("SPARKLE_REDIS_URL", None)
    env.pop("SPARKLE_UI_TOKEN", None)
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen([str(BIN / "sparkle"), "serve", "--ui"], cwd=tmp_path,
                                   env=env, stdout=subprocess.DEVNULL, stderr=log,
                                   start_new_session=True)
    try:
        wait_listening(port, process)
        yield f"http://127.0.0.1:{port}", tmp_path / "runs"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_plan_uploaded_on_the_new_run_page_renders_live_and_its_movie_plays(
        browser, served, plans_dir):
    """Upload the lighthouse plan through New run, watch its page reach `succeeded` without
    a reload, every keyframe loads, the movie can play and is as long as the file says."""
    from selenium.webdriver.common.by import By

    from sparkle.adapters.probe import probe

    base, runs = served
    driver = browser
    # Given the New run page
    driver.get(f"{base}/runs/new")
    screenshot(driver, "new-run")
    # When I upload the lighthouse plan
    driver.find_element(By.NAME, "plan_file").send_keys(str(plans_dir / "lighthouse.json"))
    driver.find_element(By.ID, "create").click()
    wait_for(lambda: "/runs/the-lighthouse-keeper-" in driver.current_url, 30, "the run page")
    mark_page(driver)
    # Then its page reaches succeeded by itself
    wait_for(lambda: run_status(driver) == "succeeded", what="status succeeded")
    assert same_page(driver), "the page was reloaded"
    run_id = driver.current_url.rstrip("/").split("/runs/")[1].split("?")[0]
    # and every keyframe has loaded
    frames = wait_for(lambda: (lambda imgs: imgs if len(imgs) == 6 and all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
        for i in imgs) else None)(driver.find_elements(By.CSS_SELECTOR, "img.keyframe")),
        60, "six loaded keyframes")
    assert all(driver.execute_script("return arguments[0].naturalWidth", img) > 0
               for img in frames)
    # and the movie can play, as long as the file is (within a frame)
    movie = driver.find_element(By.ID, "movie")
    wait_for(lambda: driver.execute_script("return arguments[0].readyState", movie) >= 2,
             60, "the movie to be playable")
    info = probe(runs / run_id / "final" / "movie.mp4")
    assert info.duration_sec is not None and info.video is not None and info.video.fps
    shown = driver.execute_script("return arguments[0].duration", movie)
    assert abs(shown - info.duration_sec) <= 1 / info.video.fps + 0.01
    # and it seeks (a Range request answered with 206)
    driver.execute_script("arguments[0].currentTime = arguments[1];", movie, shown / 2)
    wait_for(lambda: driver.execute_script(
        "return !arguments[0].seeking && arguments[0].readyState >= 2", movie), 30, "the seek")
    driver.execute_script("window.scrollTo(0, 0)")
    screenshot(driver, "run-lighthouse", also=ROOT / "docs" / "dashboard-run.png"
               if os.environ.get("SPARKLE_DOCS_SCREENSHOT") else None)
    for name, path in (("runs", "/"), ("inbox", "/inbox"), ("operations", "/operations")):
        driver.get(base + path)
        screenshot(driver, name)
    # the runs page shows the thumbnail of the first keyframe
    driver.get(base + "/")
    thumb = driver.find_element(By.CSS_SELECTOR, f"#run-{run_id} td.thumb img")
    wait_for(lambda: driver.execute_script("return arguments[0].naturalWidth", thumb) > 0,
             30, "the thumbnail")


def test_a_plan_dropped_into_the_inbox_completes_live_on_its_page(browser, served, plans_dir):
    """The must-show of `sparkle serve --ui`: a plan dropped into the inbox gets a run whose
    page, opened while it renders, shows its stages completing without a reload, then its
    keyframes, and a movie that plays and seeks."""
    from selenium.webdriver.common.by import By

    base, runs = served
    driver = browser
    inbox = runs.parent / "inbox"
    # Given a plan dropped into the inbox (written aside, renamed into place)
    part = inbox / "rooftop.json.part"
    part.write_bytes((plans_dir / "rooftop.json").read_bytes())
    part.rename(inbox / "rooftop.json")
    # When its run appears and I open its page while it renders
    run_dir = wait_for(lambda: next((p for p in runs.glob("night-rooftop-confession-*")
                                     if (p / "movie_plan.json").exists()), None),
                       30, "the run of the dropped plan")
    driver.get(f"{base}/runs/{run_dir.name}")
    mark_page(driver)
    # Then its stages complete on the page by themselves
    wait_for(lambda: run_status(driver) == "succeeded", what="status succeeded")
    assert same_page(driver), "the page was reloaded"
    # and its keyframes load, and its movie plays and seeks
    wait_for(lambda: (lambda imgs: imgs and all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
        for i in imgs))(driver.find_elements(By.CSS_SELECTOR, "img.keyframe")),
        60, "loaded keyframes")
    movie = driver.find_element(By.ID, "movie")
    wait_for(lambda: driver.execute_script("return arguments[0].readyState", movie) >= 2,
             60, "the movie to be playable")
    shown = driver.execute_script("return arguments[0].duration", movie)
    driver.execute_script("arguments[0].currentTime = arguments[1];", movie, shown / 2)
    wait_for(lambda: driver.execute_script(
        "return !arguments[0].seeking && arguments[0].readyState >= 2", movie), 30, "the seek")
    screenshot(driver, "run-dropped-in-inbox")


# -- in-process services: embedded with the test adapters, and Redis ------------------


def fixed(adapter: Any, fn: Any) -> Any:
    """``adapter`` with its fault gone: the same adapter without fault injection."""
    import dataclasses

    return dataclasses.replace(adapter, fn=fn, name=f"{adapter.name} (fixed)")


def _dashboard(pipeline: Any, worker_threads: int | None) -> tuple[str, Any, Any]:
    """A dashboard on a free port for the pipeline's engine, and a stage worker."""
    import dramatiq

    from sparkle.app import installed
    from sparkle.web.config import UiConfig
    from sparkle.web.server import start_in_background
    from sparkle.web.site import Site

    worker = dramatiq.Worker(pipeline.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    port = free_port()
    site = Site.for_app(installed(), worker_threads=worker_threads)
    server = start_in_background(site, UiConfig(port=port))
    return f"http://127.0.0.1:{port}", server, worker


def test_a_failed_run_shows_its_error_and_the_resume_button_completes_it(
        browser, pipeline, plans_dir):
    """A run failed by the test adapters' permanent fault shows the error; once the fault
    is gone, Resume finishes the run, the page following along without a reload."""
    from selenium.webdriver.common.by import By

    from sparkle.adapters.testing import FIXED
    from sparkle.lifecycle import create_run

    base, server, worker = _dashboard(pipeline, worker_threads=2)
    try:
        # Given a run whose videos stage fails for good
        plan = json.loads((plans_dir / "rooftop.json").read_text())
        plan["metadata"]["fault_videos"] = "permanent"
        from sparkle.schemas import MoviePlan

        engine = pipeline.engine
        run = create_run(engine.store, engine.dispatcher, MoviePlan.model_validate(plan)).run
        driver = browser
        driver.get(f"{base}/runs/{run.run_id}")
        mark_page(driver)
        # Then its page shows the failure and the error
        wait_for(lambda: run_status(driver) == "failed", what="status failed")
        error = driver.find_element(By.CSS_SELECTOR, ".stage-error[data-stage=videos]").text
        assert "injected permanent fault in videos" in error
        screenshot(driver, "run-failed")
        # and, in a second tab, the runs page lists it as failed
        run_tab = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.get(f"{base}/")
        listed = f"#run-{run.run_id}"
        assert driver.find_element(By.CSS_SELECTOR, listed).get_attribute("data-status") \
            == "failed"
        mark_page(driver)
        runs_tab = driver.current_window_handle
        # When the fault is removed and I press Resume
        driver.switch_to.window(run_tab)
        engine.adapters["videos"] = fixed(engine.adapters["videos"], FIXED["videos"])
        driver.find_element(By.ID, "resume").click()
        # Then the run completes
        wait_for(lambda: run_status(driver) == "succeeded", what="status succeeded")
        assert run.status().value == "succeeded"
        screenshot(driver, "run-resumed")
        # and its row on the runs page turned succeeded by itself
        driver.switch_to.window(runs_tab)
        wait_for(lambda: driver.find_element(By.CSS_SELECTOR, listed).get_attribute(
            "data-status") == "succeeded", 60, "the runs page row to update")
        assert same_page(driver), "the runs page was reloaded"
        driver.close()
        driver.switch_to.window(run_tab)
    finally:
        server.stop()
        worker.stop()


@pytest.mark.redis
def test_a_dead_letter_is_replayed_from_the_operations_page(
        browser, redis_server, tmp_path, monkeypatch, plans_dir):
    """Redis mode: a stage dead-lettered by a permanent fault is listed on Operations with
    its error; Replay sends it again and, the fault removed, the run succeeds."""
    import redis
    from conftest import _teardown_pipeline, make_pipeline
    from selenium.webdriver.common.by import By

    from sparkle.adapters.testing import FIXED
    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    client = redis.Redis.from_url(redis_server.url)
    broker = build_redis_broker(Settings(redis_url=redis_server.url), client=client)
    pipeline = make_pipeline(tmp_path, monkeypatch, broker=broker, client=client,
                             SPARKLE_REDIS_URL=redis_server.url)
    try:
        # Given a run whose videos stage was dead-lettered
        run = pipeline.create(plans_dir / "rooftop.json", fault_videos="permanent")
        assert pipeline.work(run).status.value == "failed"
        base, server, worker = _dashboard(pipeline, worker_threads=None)
        try:
            driver = browser
            driver.get(f"{base}/operations")
            row = driver.find_element(
                By.CSS_SELECTOR, f"table.dead tr[data-run='{run.run_id}'][data-stage=videos]")
            assert "injected permanent fault in videos" in row.text
            screenshot(driver, "operations-dead-letter")
            # When the fault is removed and I press Replay on its row
            pipeline.engine.adapters["videos"] = fixed(pipeline.engine.adapters["videos"],
                                                       FIXED["videos"])
            row.find_element(By.CSS_SELECTOR, "button.replay").click()
            # Then the page says it was replayed, the queue is empty, the run succeeds
            wait_for(lambda: "replayed 1 of 1" in driver.find_element(By.ID, "notice").text,
                     30, "the replay notice")
            wait_for(lambda: run.status().value == "succeeded", 60, "the run to succeed")
            driver.get(f"{base}/operations")
            assert driver.find_elements(By.ID, "no-dead-letters")
        finally:
            server.stop()
            worker.stop()
    finally:
        _teardown_pipeline()



def test_a_gated_run_is_rerolled_and_approved_from_its_page(browser, pipeline, plans_dir):
    """Issue 21 in the browser: a run gated after images shows its keyframes and the review
    panel; "Re-roll s2" draws s2 again and the new take appears beside the old without a
    reload; "Approve all and continue" finishes the run."""
    from selenium.webdriver.common.by import By

    from sparkle.lifecycle import create_run
    from sparkle.plans import load_plan_file

    base, server, worker = _dashboard(pipeline, worker_threads=2)
    try:
        # Given a lighthouse run (shots s1, s2, s3) gated after images
        plan = load_plan_file(plans_dir / "lighthouse.json", 1 << 20)
        plan.metadata["review_after"] = "images"
        engine = pipeline.engine
        run = create_run(engine.store, engine.dispatcher, plan).run
        driver = browser
        driver.get(f"{base}/runs/{run.run_id}")
        # Then its page comes to wait for review, showing six loaded keyframes
        wait_for(lambda: run_status(driver) == "awaiting_review", what="awaiting_review")
        frames = wait_for(lambda: (lambda imgs: imgs if len(imgs) == 6 and all(
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                  i) for i in imgs) else None)(
            driver.find_elements(By.CSS_SELECTOR, "img.keyframe")), 60, "six keyframes")
        assert len(frames) == 6
        assert driver.find_element(By.ID, "review-stage").text == "images"
        # When I re-roll s2 (its stage, images, chosen by default) with a note
        # (the workers paused, so the page shows the run before the new take exists)
        worker.pause()
        form = driver.find_element(By.CSS_SELECTOR, "#shot-s2 form.reroll")
        form.find_element(By.NAME, "note").send_keys("the lamp is too dim")
        driver.find_element(By.ID, "reroll-s2").click()
        wait_for(lambda: "re-rolling s2" in driver.find_element(By.ID, "notice").text, 30,
                 "the re-roll notice")
        mark_page(driver)
        assert not driver.find_elements(By.CSS_SELECTOR, "#shot-s2 .takes")
        assert not driver.find_elements(By.ID, "approve")  # (no longer waiting)
        worker.resume()
        # Then, without a reload, s2 shows two takes side by side, each with both keyframes
        takes = wait_for(lambda: (lambda found: found if len(found) == 2 else None)(
            driver.find_elements(By.CSS_SELECTOR,
                                 "#shot-s2 .takes[data-stage=images] .take")), 60,
            "two takes of s2")
        wait_for(lambda: run_status(driver) == "awaiting_review", what="the gate again")
        images = driver.find_elements(By.CSS_SELECTOR, "#shot-s2 img.take-image")
        wait_for(lambda: all(driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", i) for i in images),
            30, "the takes' images")
        assert len(images) == 4 and same_page(driver), "the page was reloaded"
        assert "in use" in takes[1].text and takes[0].find_elements(By.CSS_SELECTOR,
                                                                    "button.use-take")
        # and no other shot has a second take
        assert not driver.find_elements(By.CSS_SELECTOR, "#shot-s1 .takes, #shot-s3 .takes")
        history = driver.find_element(By.ID, "review-history").text
        assert "the lamp is too dim" in history and "re-roll images" in history
        driver.execute_script("window.scrollTo(0, 0)")
        screenshot(driver, "run-review")
        driver.execute_script("arguments[0].scrollIntoView()",
                              driver.find_element(By.ID, "shot-s2"))
        screenshot(driver, "run-review-takes")
        # When I approve with a note
        driver.find_element(By.CSS_SELECTOR, "form.decide input[name=note]").send_keys(
            "s2 fixed")
        driver.find_element(By.ID, "approve").click()
        # Then the run completes and the history tells who approved, with the note
        wait_for(lambda: run_status(driver) == "succeeded", what="status succeeded")
        assert run.status().value == "succeeded"
        approved = [e for e in run.events() if e.status == "approved"]
        assert approved[-1].metadata["note"] == "s2 fixed"
        assert approved[-1].metadata["by"].startswith("dashboard")
    finally:
        server.stop()
        worker.stop()


def test_serve_ui_carries_an_approved_run_on_with_its_own_workers(served, plans_dir):
    """Embedded `sparkle serve --ui` (no Redis, media adapters): a decision posted to its
    API continues the run on that process's own worker threads, up to the finished movie."""
    import urllib.request

    base, runs = served

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            base + path, method=method, data=json.dumps(body).encode() if body else None,
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    # Given a gated plan posted to the serve process, resting at its gate
    plan = json.loads((plans_dir / "lighthouse.json").read_text())
    plan["metadata"]["review_after"] = ["images"]
    request = urllib.request.Request(base + "/api/runs", method="POST",
                                     data=json.dumps(plan).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        run_id = json.loads(answer.read())["run_id"]
    wait_for(lambda: call("GET", f"/api/runs/{run_id}")["status"] == "awaiting_review",
             what="the gate")
    # When I approve it through the API
    decision = call("POST", f"/api/runs/{run_id}/approve", {"note": "frames ok"})
    # Then its next stage was queued in that process, and its workers make the movie
    assert decision["queued"] == "videos"
    wait_for(lambda: call("GET", f"/api/runs/{run_id}")["status"] == "succeeded",
             what="the movie")
    assert (runs / run_id / "final" / "movie.mp4").stat().st_size > 0

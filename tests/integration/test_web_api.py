"""The dashboard's JSON API and pages over real runs worked by the in-process pipeline
(test adapters): the same data and shapes as the CLI's ``--json``, and actions through the
CLI's own service functions. Server-sent events are read from a real uvicorn server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from sparkle.app import installed
from sparkle.web.app import create_app
from sparkle.web.config import UiConfig
from sparkle.web.site import Mode, Site

BASE = "http://127.0.0.1:8321"


def dashboard(worker_threads: int | None = 2, **config: Any) -> TestClient:
    site = Site.for_app(installed(), worker_threads=worker_threads)
    return TestClient(create_app(site, UiConfig(**config)), base_url=BASE)


def cli_json(*args: str) -> Any:
    """What the CLI prints with --json, run in this process (same settings)."""
    from click.testing import CliRunner

    from sparkle.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def three_runs(pipeline, plans_dir) -> dict[str, Any]:
    """A succeeded, a failed and a queued run."""
    good = pipeline.create(plans_dir / "lighthouse.json")
    assert pipeline.work(good).status.value == "succeeded"
    bad = pipeline.create(plans_dir / "rooftop.json", fault_videos="permanent")
    assert pipeline.work(bad).status.value == "failed"
    waiting = pipeline.create(plans_dir / "rooftop.json", run_id="waiting-run")
    return {"succeeded": good, "failed": bad, "queued": waiting}


def test_the_runs_listing_has_the_cli_fields_and_filters_searches_and_pages(three_runs):
    web = dashboard()
    # When I list every run
    listed = web.get("/api/runs").json()
    # Then each row carries exactly what `sparkle runs --json` prints for it
    cli = [json.loads(line) for line in cli_json("runs", "--json").splitlines()]
    assert listed["total"] == 3
    for row in listed["runs"]:
        (same,) = [c for c in cli if c["run_id"] == row["run_id"]]
        assert {k: row[k] for k in same} == same
    good = next(r for r in listed["runs"] if r["status"] == "succeeded")
    assert good["stages_done"] == 7 and good["qa_decision"] == "approve"
    assert good["title"] == "The Lighthouse Keeper" and good["thumbnail"].endswith(".png")
    assert web.get(f"/runs/{good['run_id']}/files/{good['thumbnail']}").status_code == 200
    # and the filters narrow it
    failed = web.get("/api/runs?status=failed").json()
    assert [r["run_id"] for r in failed["runs"]] == [three_runs["failed"].run_id]
    assert failed["runs"][0]["error"] and "injected permanent fault" in failed["runs"][0]["error"]
    assert web.get("/api/runs?q=LIGHTHOUSE").json()["total"] == 1  # title, any case
    assert web.get("/api/runs?q=waiting-r").json()["runs"][0]["run_id"] == "waiting-run"
    page = web.get("/api/runs?limit=2&offset=2").json()
    assert page["total"] == 3 and len(page["runs"]) == 1
    assert web.get("/api/runs?limit=x").status_code == 422


def test_the_run_detail_is_the_status_json_with_plan_timeline_assets_and_qa(three_runs):
    web = dashboard()
    run = three_runs["succeeded"]
    detail = web.get(f"/api/runs/{run.run_id}").json()
    status = json.loads(cli_json("status", run.run_id, "--json"))
    timeline = json.loads(cli_json("timeline", run.run_id, "--json"))
    assert {k: detail[k] for k in status} == status
    assert detail["events"] == timeline["events"]
    assert detail["plan"]["title"] == "The Lighthouse Keeper"
    assert detail["qa_report"]["decision"] == "approve"
    assert set(detail["asset_refs"]["shots"]) == {"s1", "s2", "s3"}
    assert detail["asset_refs"]["extras"]["final_movie"] in detail["files"]
    assert web.get("/api/runs/no-such-run").status_code == 404


def test_pages_show_runs_shots_assets_and_the_qa_report(three_runs):
    web = dashboard()
    good, bad = three_runs["succeeded"], three_runs["failed"]
    listing = web.get("/").text
    assert good.run_id in listing and bad.run_id in listing and "7/7" in listing
    assert "waiting-run" not in web.get("/?status=failed").text
    page = web.get(f"/runs/{good.run_id}").text
    for shot in ("s1", "s2", "s3"):
        assert f'id="shot-{shot}"' in page
    assert "Why do you light it every night?" in page and 'id="movie"' in page
    assert "QA report" in page and "approve" in page
    # every asset the page points at is served
    import re

    urls = set(re.findall(r'(?:src|href)="(/runs/[^"]+/files/[^"]+)"', page))
    assert len(urls) >= 10
    for url in urls:
        assert web.get(url.replace("&amp;", "&")).status_code == 200, url
    failed = web.get(f"/runs/{bad.run_id}").text
    assert "injected permanent fault in videos" in failed
    live = web.get(f"/runs/{good.run_id}/live").json()
    assert live["status"] == "succeeded" and {"header", "stages", "final", "qa",
                                              "shot-s1"} <= set(live["blocks"])


def test_a_posted_plan_is_created_queued_and_worked(pipeline, plans_dir):
    web = dashboard()
    body = (plans_dir / "lighthouse.json").read_bytes()
    # When I post a plan
    created = web.post("/api/runs", content=body, headers={"content-type": "application/json"})
    # Then the run exists and its first stage is queued for the workers
    assert created.status_code == 201
    answer = created.json()
    assert answer["queued"] == "script" and answer["created"] is True
    run = pipeline.engine.store.run(answer["run_id"])
    assert pipeline.work(run).status.value == "succeeded"
    # and the same plan again finds the same run
    again = web.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert again.status_code == 200 and again.json()["run_id"] == run.run_id
    # and another plan claiming its run id is a conflict
    other = json.loads(body)
    other["title"] = "Another"
    other["metadata"]["run_id"] = run.run_id
    assert web.post("/api/runs", json=other).status_code == 409


def test_the_new_run_form_creates_the_run_and_opens_its_page(pipeline, plans_dir):
    web = dashboard()
    csrf = web.app.state.secrets.csrf  # type: ignore[attr-defined]
    answer = web.post("/runs/new", data={"csrf_token": csrf},
                      files={"plan_file": ("plan.json", (plans_dir / "rooftop.json").read_bytes(),
                                           "application/json")}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/runs/night-rooftop-confession-")


def test_resume_from_a_stage_and_cancel_go_through_the_cli_services(three_runs, pipeline):
    web = dashboard()
    run = three_runs["succeeded"]
    # When I resume it from qa
    resumed = web.post(f"/api/runs/{run.run_id}/resume", json={"from": "qa"}).json()
    # Then qa was reset and queued, as `sparkle resume --from qa` does
    assert resumed == {"run_id": run.run_id, "reset": ["qa"], "queued": "qa"}
    assert run.events()[-1].status == "reset"
    assert pipeline.work(run).status.value == "succeeded"
    assert web.post(f"/api/runs/{run.run_id}/resume", json={"from": "nope"}).status_code == 422
    # When I cancel the queued run
    waiting = three_runs["queued"]
    cancelled = web.post(f"/api/runs/{waiting.run_id}/cancel").json()
    assert cancelled["result"] == "cancelled" and waiting.status().value == "cancelled"
    assert waiting.events()[-1].metadata["by"].startswith("dashboard")
    assert web.post(f"/api/runs/{waiting.run_id}/cancel").json()["result"] == "already_cancelled"
    # Then resuming lifts the cancellation and queues its first stage
    assert web.post(f"/api/runs/{waiting.run_id}/resume").json()["queued"] == "script"
    assert not waiting.cancelled
    assert web.post("/api/runs/no-such-run/cancel").status_code == 404


def test_a_standalone_dashboard_cannot_resume(three_runs):
    web = dashboard(worker_threads=None)
    assert web.app.state.site.mode is Mode.standalone  # type: ignore[attr-defined]
    answer = web.post(f"/api/runs/{three_runs['failed'].run_id}/resume")
    assert answer.status_code == 409 and "sparkle resume" in answer.json()["error"]


def test_embedded_mode_has_no_dead_letter_queue_and_says_why(three_runs):
    web = dashboard()
    assert web.get("/api/dlq").status_code == 409
    assert "embedded mode" in web.post("/api/dlq/replay", json={"all": True}).json()["error"]
    page = web.get("/operations").text
    assert three_runs["failed"].run_id in page  # (listed as a failed run to resume)
    assert web.get("/api/health").json()["mode"] == "embedded"
    ops = web.get("/api/operations").json()
    assert set(ops["queues"]) == {"script", "images", "videos", "tts", "lipsync", "assemble",
                                  "qa"}


def test_the_inbox_page_shows_rejected_files_with_their_problems(pipeline, tmp_path):
    from sparkle.inbox import Inbox

    # Given a bad plan rejected by the real inbox
    settings = installed().settings
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    (settings.inbox_dir / "broken.json").write_text('{"title": "x", "shots": []}')
    inbox = Inbox.from_settings(pipeline.engine.dispatcher.kick, pipeline.engine.store,
                                settings)
    inbox.stable_seconds = 0
    inbox.scan()
    assert inbox.process_pending(10)
    # Then the inbox page and API show it with the problem from its .error.json
    web = dashboard()
    page = web.get("/inbox").text
    assert "broken.json" in page and "shots" in page
    rejected = web.get("/api/inbox").json()["rejected"]
    assert rejected[0]["name"] == "broken.json"
    assert rejected[0]["problems"][0]["path"] == "shots"


def test_manifest_events_stream_to_a_client_as_they_are_appended(three_runs):
    """GET /api/runs/{id}/events over a real server: one event per manifest event, with the
    number of events up to it as its id; ``from`` skips what was seen."""
    import httpx2
    from redis_server import free_port

    from sparkle.web.server import start_in_background

    run = three_runs["queued"]
    port = free_port()
    site = Site.for_app(installed(), worker_threads=2)
    server = start_in_background(site, UiConfig(port=port))
    try:
        seen = len(run.events())
        url = f"http://127.0.0.1:{port}/api/runs/{run.run_id}/events?from={seen}"
        with httpx2.stream("GET", url, timeout=30) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            lines = answer.iter_lines()
            # When an event is appended after I connected
            run.append_event("script", "redrive", 1, metadata={"reason": "test", "x": "new"})
            # Then it arrives, as written, numbered after the events seen
            got: dict[str, str] = {}
            for line in lines:
                if line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(": ")
                    got[key] = value
                if "data" in got:
                    break
        assert got["event"] == "manifest"
        assert int(got["id"]) == seen + 1
        event = json.loads(got["data"])
        assert (event["stage"], event["status"], event["metadata"]["x"]) == (
            "script", "redrive", "new")
    finally:
        server.stop()


@pytest.mark.redis
def test_dead_letters_are_listed_and_replayed_through_the_api(redis_server, tmp_path,
                                                              monkeypatch, plans_dir):
    import redis
    from conftest import _teardown_pipeline, make_pipeline

    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    client = redis.Redis.from_url(redis_server.url)
    broker = build_redis_broker(Settings(redis_url=redis_server.url), client=client)
    pipeline = make_pipeline(tmp_path, monkeypatch, broker=broker, client=client,
                             SPARKLE_REDIS_URL=redis_server.url)
    try:
        run = pipeline.create(plans_dir / "rooftop.json", fault_videos="permanent")
        assert pipeline.work(run).status.value == "failed"
        web = dashboard(worker_threads=None)
        assert web.get("/api/health").json() == {**web.get("/api/health").json(),
                                                 "mode": "redis", "redis": "ok"}
        # When I list the dead letters
        (letter,) = web.get("/api/dlq").json()
        # Then it names the run, the stage and the error of its failed checkpoint
        assert (letter["run_id"], letter["stage"]) == (run.run_id, "videos")
        assert "injected permanent fault in videos" in letter["error"]
        ops = web.get("/api/operations").json()
        assert ops["queues"]["videos"]["dead"] == 1
        # When I replay it
        done = web.post("/api/dlq/replay", json={"run_id": run.run_id, "stage": "videos"}).json()
        # Then it was sent again (a redrive event) and the queue is empty
        assert done["replayed"] == 1
        assert run.events()[-1].status == "redrive"
        assert web.get("/api/dlq").json() == []
        assert web.post("/api/dlq/replay", json={}).status_code == 422
    finally:
        _teardown_pipeline()



def test_the_resume_form_says_the_worker_holding_the_run_carries_it_out(three_runs, pipeline):
    """Resume asked while a worker holds the run (its lease) writes nothing from the
    dashboard: the page says the worker resets the stages when its stage ends."""
    from sparkle.lease import Lease

    web = dashboard()
    csrf = web.app.state.secrets.csrf  # type: ignore[attr-defined]
    browser = {"origin": BASE, "sec-fetch-site": "same-origin"}
    run = three_runs["succeeded"]
    events = len(run.events())
    # Given a worker holding the run (its lease taken as a stage's is)
    held = Lease(pipeline.engine.client, "sparkle", run.run_id, 30, lock_dir=run.dir)
    assert held.acquire()
    try:
        # When I press Resume from stage qa
        answer = web.post(f"/runs/{run.run_id}/resume", headers=browser,
                          data={"csrf_token": csrf, "from": "qa"}, follow_redirects=False)
        # Then the page says it was handed over, and nothing was written to the run
        assert answer.status_code == 303
        assert "handed%20to%20the%20worker" in answer.headers["location"]
        assert len(run.events()) == events
    finally:
        held.release()


def test_the_run_page_forms_resume_from_a_chosen_stage_and_cancel(three_runs, pipeline):
    web = dashboard()
    csrf = web.app.state.secrets.csrf  # type: ignore[attr-defined]
    browser = {"origin": BASE, "sec-fetch-site": "same-origin"}
    run = three_runs["succeeded"]
    # When I pick "assemble" and press Resume from stage
    answer = web.post(f"/runs/{run.run_id}/resume", headers=browser,
                      data={"csrf_token": csrf, "from": "assemble"}, follow_redirects=False)
    # Then assemble and qa are reset and assemble is queued; the page says so
    assert answer.status_code == 303 and "assemble%20queued" in answer.headers["location"]
    assert [e.stage for e in run.events() if e.status == "reset"] == ["assemble", "qa"]
    assert pipeline.work(run).status.value == "succeeded"
    # and Cancel on a queued run cancels it
    waiting = three_runs["queued"]
    web.post(f"/runs/{waiting.run_id}/cancel", headers=browser, data={"csrf_token": csrf})
    assert waiting.cancelled
    shown = web.get(f"/runs/{waiting.run_id}").text
    assert 'id="run-status">cancelled<' in shown

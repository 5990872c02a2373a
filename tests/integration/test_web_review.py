"""Review decisions from the dashboard (issue 21): the API routes and the run page's forms
call :mod:`sparkle.review`'s service functions on real runs worked by the in-process
pipeline (test adapters), with the same refusals as the CLI, the CSRF and read-only rules
of every other action, and one winner when two people decide at once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sparkle.adapters.testing import read_trace
from sparkle.app import installed
from sparkle.review_state import read_review
from sparkle.runstore import RunStatus
from sparkle.web.app import create_app
from sparkle.web.config import UiConfig
from sparkle.web.site import Site

BASE = "http://127.0.0.1:8321"

#: Headers a browser sends with a form of the dashboard's own page.
BROWSER = {"origin": BASE, "sec-fetch-site": "same-origin"}


def dashboard(worker_threads: int | None = 2, **config: Any) -> TestClient:
    site = Site.for_app(installed(), worker_threads=worker_threads)
    return TestClient(create_app(site, UiConfig(**config)), base_url=BASE)


def gated_run(pipeline: Any, plans_dir: Path) -> Any:
    """A lighthouse run (shots s1, s2, s3) gated after images, worked until it waits."""
    run = pipeline.create(plans_dir / "lighthouse.json", review_after="images")
    assert pipeline.work(run).status is RunStatus.awaiting_review
    return run


def image_calls(run: Any) -> Counter[str]:
    return Counter(shot for record in read_trace(run.dir) if record["stage"] == "images"
                   for shot in record["shots"])


def test_a_waiting_run_is_listed_shown_and_approved_through_the_api(pipeline, plans_dir):
    # Given a run waiting for review after images
    run = gated_run(pipeline, plans_dir)
    web = dashboard()
    # Then the "awaiting review" filter lists it, and its page shows the review panel
    listed = web.get("/api/runs?status=awaiting_review").json()
    assert [r["run_id"] for r in listed["runs"]] == [run.run_id]
    assert 'value="awaiting_review"' in web.get("/").text
    page = web.get(f"/runs/{run.run_id}").text
    assert 'id="approve"' in page and 'id="reroll-s2"' in page and "Awaiting review" in page
    assert 'id="review-stage">images<' in page
    # When I approve it with a note
    answer = web.post(f"/api/runs/{run.run_id}/approve", json={"note": "frames look right"})
    # Then the decision is recorded with who and the note, and the next stage is queued
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["kind"], body["stage"], body["queued"]) == ("approved", "images", "videos")
    event = [e for e in run.events() if e.status == "approved"][-1]
    assert event.metadata["by"].startswith("dashboard") and \
        event.metadata["note"] == "frames look right"
    assert pipeline.work(run).status is RunStatus.succeeded
    # and a second decision on a run that no longer waits is refused, saying why
    again = web.post(f"/api/runs/{run.run_id}/approve", json={})
    assert again.status_code == 409
    assert "not waiting for a review" in again.json()["error"]
    history = web.get(f"/runs/{run.run_id}").text
    assert 'id="review-history"' in history and "frames look right" in history


def test_redo_rerolls_one_shot_keeps_its_takes_and_refuses_what_the_run_lacks(
        pipeline, plans_dir):
    run = gated_run(pipeline, plans_dir)
    web = dashboard()
    # When I ask for shots or stages the run does not have
    unknown = web.post(f"/api/runs/{run.run_id}/redo", json={"shots": ["s9"]})
    early = web.post(f"/api/runs/{run.run_id}/redo", json={"shots": ["s2"], "stage": "videos"})
    whole = web.post(f"/api/runs/{run.run_id}/redo", json={"shots": ["s2"], "stage": "qa"})
    empty = web.post(f"/api/runs/{run.run_id}/redo", json={"shots": []})
    # Then each is refused, naming what is wrong, and the run still waits
    assert unknown.status_code == 400 and "no shot s9" in unknown.json()["error"]
    assert early.status_code == 400 and "has not reached videos" in early.json()["error"]
    assert whole.status_code == 422 and empty.status_code == 422
    assert run.status() is RunStatus.awaiting_review
    # When I re-roll s2's keyframes
    answer = web.post(f"/api/runs/{run.run_id}/redo",
                      json={"shots": ["s2"], "stage": "images", "note": "wrong lamp"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["shots"] == ["s2"] and answer.json()["queued"] == "images"
    assert pipeline.work(run).status is RunStatus.awaiting_review
    # Then only s2 was drawn again, and both its takes are listed, the new one in use
    assert image_calls(run) == Counter({"s1": 1, "s2": 2, "s3": 1})
    takes = web.get(f"/api/runs/{run.run_id}/takes").json()["shots"]
    assert [(t["take"], t["current"]) for t in takes["s2"]["images"]] == [(1, False), (2, True)]
    assert len(takes["s1"]["images"]) == 1
    assert web.get(f"/api/runs/{run.run_id}/takes?shot=s9").status_code == 400
    # and the page shows them side by side, the old one with "Use this take"
    page = web.get(f"/runs/{run.run_id}").text
    assert page.count('class="take-image"') == 4 and page.count('class="use-take"') == 1
    for url in ("takes/s2/images/take1/s2_start.png", "takes/s2/images/take2/s2_start.png"):
        assert web.get(f"/runs/{run.run_id}/files/{url}").status_code == 200
    # When I put take 1 back
    used = web.post(f"/api/runs/{run.run_id}/takes/use",
                     json={"shot": "s2", "stage": "images", "take": 1})
    assert used.status_code == 200 and used.json()["closed"] is False
    takes = web.get(f"/api/runs/{run.run_id}/takes?shot=s2").json()["shots"]
    assert [t["current"] for t in takes["s2"]["images"]] == [True, False]
    missing = web.post(f"/api/runs/{run.run_id}/takes/use", json={"shot": "s2", "take": 9})
    assert missing.status_code == 400 and "no take 9" in missing.json()["error"]
    assert web.post(f"/api/runs/{run.run_id}/takes/use", json={"shot": "s2"}).status_code == 422


def test_reject_needs_a_note_and_ends_the_run(pipeline, plans_dir):
    run = gated_run(pipeline, plans_dir)
    web = dashboard()
    assert web.post(f"/api/runs/{run.run_id}/reject", json={}).status_code == 422
    answer = web.post(f"/api/runs/{run.run_id}/reject", json={"note": "wrong story"})
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    assert run.status() is RunStatus.rejected
    refused = web.post(f"/api/runs/{run.run_id}/approve", json={})
    assert refused.status_code == 409 and "rejected" in refused.json()["error"]
    assert web.get("/api/runs?status=rejected").json()["total"] == 1
    assert web.post("/api/runs/no-such-run/approve", json={}).status_code == 404


def test_decisions_follow_the_csrf_read_only_and_standalone_rules(pipeline, plans_dir):
    run = gated_run(pipeline, plans_dir)
    url = f"/api/runs/{run.run_id}/approve"
    # A read-only dashboard refuses, and so does a standalone one (no queue to continue on)
    assert dashboard(read_only=True).post(url, json={}).status_code == 403
    standalone = dashboard(worker_threads=None).post(url, json={})
    assert standalone.status_code == 409
    assert f"sparkle approve {run.run_id}" in standalone.json()["error"]
    # A browser's post without the page's CSRF token, or from another site, is refused
    web = dashboard()
    assert web.post(url, json={}, headers=BROWSER).status_code == 403
    assert web.post(url, json={}, headers={"origin": "http://evil.example"}).status_code == 403
    assert run.status() is RunStatus.awaiting_review
    # and the page's own form, with it, approves
    csrf = web.app.state.secrets.csrf  # type: ignore[attr-defined]
    waiting = read_review(str(run.dir))
    assert waiting is not None
    answer = web.post(f"/runs/{run.run_id}/review/approve", headers=BROWSER,
                      data={"csrf_token": csrf, "review_id": waiting.review_id,
                            "note": "ok", "who": "erin"}, follow_redirects=False)
    assert answer.status_code == 303 and "notice=approved" in answer.headers["location"]
    event = [e for e in run.events() if e.status == "approved"][-1]
    assert event.metadata["by"].startswith("erin via dashboard")
    # and a form the run can no longer answer comes back to the page with the reason
    late = web.post(f"/runs/{run.run_id}/review/redo", headers=BROWSER,
                    data={"csrf_token": csrf, "review_id": waiting.review_id, "shots": "s1"},
                    follow_redirects=False)
    assert late.status_code == 303 and "error=" in late.headers["location"]
    shown = web.get(late.headers["location"]).text
    assert "was already answered: approved by erin via dashboard" in shown
    assert web.post(f"/runs/{run.run_id}/review/nope", headers=BROWSER,
                    data={"csrf_token": csrf}).status_code == 404


def test_two_people_approving_at_once_through_the_api_one_wins(pipeline, plans_dir):
    """Two approvals of the review both saw, sent at the same moment: one applies (200),
    the other is refused (409) naming who won, and the manifest holds one decision."""
    run = gated_run(pipeline, plans_dir)
    waiting = read_review(str(run.dir))
    assert waiting is not None
    app = dashboard().app
    start = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def approve(name: str) -> None:
        client = TestClient(app, base_url=BASE)
        start.wait()
        answers[name] = client.post(f"/api/runs/{run.run_id}/approve",
                                    json={"who": name, "review_id": waiting.review_id})

    people = [threading.Thread(target=approve, args=(name,)) for name in ("alice", "bob")]
    for person in people:
        person.start()
    for person in people:
        person.join(60)
    codes = sorted(answer.status_code for answer in answers.values())
    assert codes == [200, 409]
    (winner,) = [name for name, answer in answers.items() if answer.status_code == 200]
    (loser,) = [answer for answer in answers.values() if answer.status_code == 409]
    assert f"by {winner} via dashboard" in loser.json()["error"]
    decisions = [e for e in run.events() if e.status in ("approved", "redo", "rejected")]
    assert len(decisions) == 1


def test_a_decision_on_a_run_held_by_a_worker_is_refused_to_try_again(pipeline, plans_dir):
    """While a worker still holds the run's lease (past SPARKLE_DECISION_WAIT_SEC), the
    decision is refused with 409 and nothing is applied."""
    from sparkle.lease import Lease

    run = gated_run(pipeline, plans_dir)
    site = Site.for_app(installed(), worker_threads=2)
    site.settings = site.settings.model_copy(update={"decision_wait_sec": 0.2})
    web = TestClient(create_app(site, UiConfig()), base_url=BASE)
    settings = pipeline.engine.settings
    worker = Lease(pipeline.engine.client, settings.namespace, run.run_id, 60)
    assert worker.acquire()
    try:
        answer = web.post(f"/api/runs/{run.run_id}/approve", json={})
    finally:
        worker.release()
    assert answer.status_code == 409 and answer.json()["busy"] is True
    assert "held by a worker" in answer.json()["error"]
    assert run.status() is RunStatus.awaiting_review
    assert web.post(f"/api/runs/{run.run_id}/approve", json={}).status_code == 200


@pytest.mark.redis
def test_with_redis_a_decision_queues_the_run_for_the_workers(redis_server, tmp_path,
                                                             monkeypatch, plans_dir):
    """`sparkle ui` with Redis (no workers of its own): approve and redo queue the run's
    next stage on Redis, and workers finish it."""
    import redis
    from conftest import _teardown_pipeline, make_pipeline

    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    client = redis.Redis.from_url(redis_server.url)
    broker = build_redis_broker(Settings(redis_url=redis_server.url), client=client)
    pipeline = make_pipeline(tmp_path, monkeypatch, broker=broker, client=client,
                             SPARKLE_REDIS_URL=redis_server.url)
    try:
        run = gated_run(pipeline, plans_dir)
        web = dashboard(worker_threads=None)
        assert web.get("/api/health").json()["mode"] == "redis"
        # When s3 is re-rolled, then the run approved, from the dashboard
        redo = web.post(f"/api/runs/{run.run_id}/redo", json={"shots": "s3"})
        assert redo.status_code == 200 and redo.json()["queued"] == "images"
        assert pipeline.work(run).status is RunStatus.awaiting_review
        assert image_calls(run) == Counter({"s1": 1, "s2": 1, "s3": 2})
        approved = web.post(f"/api/runs/{run.run_id}/approve", json={"note": "go"})
        # Then each was queued on Redis and the workers made the movie
        assert approved.status_code == 200 and approved.json()["queued"] == "videos"
        assert pipeline.work(run).status is RunStatus.succeeded
    finally:
        _teardown_pipeline()


def test_the_dashboard_does_not_resume_a_run_waiting_for_review(pipeline, plans_dir):
    """Resume decides nothing for a person: on a run awaiting review the dashboard answers
    409 naming approve / redo / reject, and nothing is reset or queued (as `sparkle resume`
    refuses)."""
    # Given a run waiting for review after images
    run = gated_run(pipeline, plans_dir)
    events = len(run.events())
    web = dashboard()
    # When the dashboard is asked to resume it from images
    answer = web.post(f"/api/runs/{run.run_id}/resume", json={"from": "images"})
    # Then it is refused, saying who decides, and the run still waits, untouched
    assert answer.status_code == 409
    assert "approve, redo or reject" in answer.json()["error"]
    assert run.status() is RunStatus.awaiting_review
    assert len(run.events()) == events

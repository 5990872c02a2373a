"""The dashboard's guard: bind rules, token login, host and CSRF checks, read-only mode, what
the file route will and will not serve, and hostile uploads (docs/SECURITY.md, section 7).

The app is driven with Starlette's TestClient over run folders made by the run store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from sparkle.errors import ConfigError
from sparkle.plans import load_plan_file
from sparkle.runstore import Run, RunStore
from sparkle.settings import Settings
from sparkle.web.app import create_app
from sparkle.web.config import UiConfig
from sparkle.web.site import Mode, Site

BASE = "http://127.0.0.1:8321"
TOKEN = "t0ken-that-is-long-enough-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def site(tmp_path: Path, plans_dir: Path) -> Site:
    """A standalone site over a runs folder holding the lighthouse run with a few files."""
    settings = Settings(runs_dir=tmp_path / "runs", inbox_dir=tmp_path / "inbox")
    store = RunStore(settings.runs_dir)
    run, _ = store.create(load_plan_file(plans_dir / "lighthouse.json", 1 << 20))
    (run.dir / "frames").mkdir()
    (run.dir / "frames" / "s1_start.png").write_bytes(PNG)
    (run.dir / "audio").mkdir()
    (run.dir / "audio" / "line.wav").write_bytes(b"RIFF" + bytes(100))
    (run.dir / "final").mkdir()
    (run.dir / "final" / "movie.mp4").write_bytes(bytes(range(256)) * 40)
    (run.dir / "page.html").write_text("<script>alert(1)</script>")
    return Site(settings, store, Mode.standalone)


def client(site: Site, **config: object) -> TestClient:
    return TestClient(create_app(site, UiConfig(**config)), base_url=BASE)  # type: ignore[arg-type]


def only_run(site: Site) -> Run:
    (run,) = site.store.runs()
    return run


# -- binding ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "example.org", "::"])
def test_any_address_but_loopback_needs_a_token(host):
    # When the dashboard would listen beyond this machine without a token
    with pytest.raises(ConfigError, match="SPARKLE_UI_TOKEN"):
        UiConfig(host=host).check()
    # Then with a token it may
    UiConfig(host=host, token=TOKEN).check()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_token(host):
    UiConfig(host=host).check()


def test_a_short_token_is_refused():
    with pytest.raises(ConfigError, match="at least 16"):
        UiConfig(token="short").check()


# -- host and token ----------------------------------------------------------------------


def test_a_loopback_dashboard_answers_only_to_loopback_host_names(site):
    """DNS rebinding: a page at evil.example re-pointed to 127.0.0.1 sends Host: evil.example."""
    web = client(site)
    assert web.get("/api/health", headers={"host": "evil.example:8321"}).status_code == 421
    assert web.get("/api/health", headers={"host": "localhost:8321"}).status_code == 200
    assert web.get("/api/health").status_code == 200


def test_with_a_token_every_page_and_api_call_needs_it(site):
    run = only_run(site)
    web = client(site, token=TOKEN)
    # Given no credentials, pages send me to the login form and the API answers 401
    page = web.get("/runs/new?x=1", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fruns%2Fnew%3Fx%3D1"
    for path in ("/api/runs", "/api/health", f"/api/runs/{run.run_id}",
                 f"/runs/{run.run_id}/files/frames/s1_start.png"):
        assert web.get(path).status_code == 401, path
    assert web.post(f"/api/runs/{run.run_id}/cancel").status_code == 401
    assert not run.cancelled
    # and a wrong bearer token, or the token itself as a cookie, are not enough
    assert web.get("/api/runs", headers={"authorization": "Bearer " + TOKEN[:-1] + "x"}
                   ).status_code == 401
    assert web.get("/api/runs", headers={"cookie": f"sparkle_ui_session={TOKEN}"}
                   ).status_code == 401
    # Then the right bearer token opens the API, and the login page and styles are public
    assert web.get("/api/runs", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert web.get("/login").status_code == 200
    assert web.get("/static/style.css").status_code == 200


def test_the_login_form_sets_an_httponly_samesite_cookie(site):
    web = client(site, token=TOKEN)
    csrf = web.app.state.secrets.csrf  # type: ignore[attr-defined]
    # When I log in with a wrong token
    wrong = web.post("/login", data={"token": "nope", "csrf_token": csrf})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    # When I log in with the token (and a next page off this site)
    done = web.post("/login?next=//evil.example/x", data={"token": TOKEN, "csrf_token": csrf},
                    follow_redirects=False)
    # Then I get a session cookie that scripts cannot read and other sites do not send
    assert done.status_code == 303 and done.headers["location"] == "/"
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert TOKEN.lower() not in cookie
    # and the pages open
    assert web.get("/").status_code == 200


# -- cross-site requests -------------------------------------------------------------------


def test_state_changes_are_post_only(site):
    run = only_run(site)
    web = client(site)
    assert web.get(f"/api/runs/{run.run_id}/cancel").status_code == 405
    assert web.get(f"/runs/{run.run_id}/cancel").status_code == 405
    assert not run.cancelled


@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"},
    {"origin": "null"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},
    {"origin": BASE, "sec-fetch-site": "same-origin"},  # a browser without the CSRF token
])
def test_cross_site_or_tokenless_browser_posts_are_refused(site, headers):
    run = only_run(site)
    web = client(site)
    # When a browser posts a cancel from elsewhere, or without the page's token
    answer = web.post(f"/api/runs/{run.run_id}/cancel", headers=headers)
    form = web.post(f"/runs/{run.run_id}/cancel", headers=headers, data={"x": "1"})
    # Then both are refused and the run is untouched
    assert answer.status_code == 403 and form.status_code == 403
    assert not run.cancelled


def test_a_post_carrying_the_page_token_or_from_a_non_browser_client_is_accepted(site):
    run = only_run(site)
    web = client(site)
    csrf = web.app.state.secrets.csrf  # type: ignore[attr-defined]
    browser = {"origin": BASE, "sec-fetch-site": "same-origin"}
    # When the page's form posts with its token
    done = web.post(f"/runs/{run.run_id}/cancel", headers=browser,
                    data={"csrf_token": csrf}, follow_redirects=False)
    # Then the run is cancelled and I am sent back to its page
    assert done.status_code == 303 and done.headers["location"].startswith(f"/runs/{run.run_id}")
    assert run.cancelled
    # and a script (header) or curl (no browser headers) may post too
    assert web.post(f"/api/runs/{run.run_id}/cancel", headers={**browser, "x-csrf-token": csrf}
                    ).json()["result"] == "already_cancelled"
    assert web.post(f"/api/runs/{run.run_id}/cancel").status_code == 200


def test_read_only_refuses_every_action_and_shows_none(site):
    run = only_run(site)
    web = client(site, read_only=True)
    assert web.post(f"/api/runs/{run.run_id}/cancel").status_code == 403
    assert web.post("/api/runs", json={"title": "x"}).status_code == 403
    assert web.post("/api/dlq/replay", json={"all": True}).status_code == 403
    assert not run.cancelled
    page = web.get(f"/runs/{run.run_id}").text
    assert 'id="cancel"' not in page and 'id="resume"' not in page
    assert web.get("/runs/new").status_code == 200  # (shows, but cannot post)
    assert "/runs/new" not in web.get("/").text


def test_every_response_carries_the_security_headers(site):
    web = client(site)
    answer = web.get("/")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"


# -- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "kind"), [
    ("frames/s1_start.png", "image/png"),
    ("audio/line.wav", "audio/wav"),
    ("final/movie.mp4", "video/mp4"),
    ("movie_plan.json", "application/json"),
    ("manifest.json", "application/json"),
])
def test_run_files_are_served_with_their_content_type(site, path, kind):
    run = only_run(site)
    answer = client(site).get(f"/runs/{run.run_id}/files/{path}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].split(";")[0] == kind
    assert answer.content == (run.dir / path).read_bytes()
    assert answer.headers["accept-ranges"] == "bytes"


def test_byte_ranges_are_answered_as_a_browser_seeking_needs(site):
    run = only_run(site)
    web = client(site)
    url = f"/runs/{run.run_id}/files/final/movie.mp4"
    data = (run.dir / "final" / "movie.mp4").read_bytes()
    part = web.get(url, headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = web.get(url, headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    open_end = web.get(url, headers={"range": "bytes=10000-"})
    assert open_end.status_code == 206 and open_end.content == data[10000:]
    past = web.get(url, headers={"range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    several = web.get(url, headers={"range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == data


def test_a_file_that_could_run_script_is_a_sandboxed_download(site):
    run = only_run(site)
    answer = client(site).get(f"/runs/{run.run_id}/files/page.html")
    assert answer.headers["content-disposition"].startswith("attachment")
    assert answer.headers["content-security-policy"] == "sandbox"


def test_only_regular_files_inside_the_run_folder_are_served(site, tmp_path):
    run = only_run(site)
    other, _ = site.store.create(load_plan_file(
        Path(__file__).parent.parent / "data" / "plans" / "rooftop.json", 1 << 20))
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    # Given links out of the run folder, a link inside it, a folder and a FIFO
    os.symlink(secret, run.dir / "out.txt")
    os.symlink(tmp_path, run.dir / "outdir")
    os.symlink(run.dir / "movie_plan.json", run.dir / "inner.json")
    os.mkfifo(run.dir / "fifo")
    base = f"/runs/{run.run_id}/files/"
    refused = [
        "out.txt", "outdir/secret.txt", "inner.json", "frames", "fifo", "missing.png",
        "..%2Fsecret.txt", "%2e%2e%2f%2e%2e%2fsecret.txt", "frames/..%2F..%2F" + other.run_id
        + "%2Fmovie_plan.json", "%252e%252e%252fsecret.txt", "%2Fetc%2Fpasswd",
        "frames%5C..%5C..%5Cmovie_plan.json", "frames/%00.png", "frames/.%2F..%2Fmovie_plan.json",
        "frames//s1_start.png",
    ]
    web = client(site)
    for path in refused:
        answer = web.get(base + path)
        # Then each is a 404 that gives nothing away
        assert answer.status_code == 404, path
        assert b"secret" not in answer.content
    # and unknown or unsafe run ids are 404 too
    for run_id in ("nope", "..", "%2e%2e", "a..b"):
        assert web.get(f"/runs/{run_id}/files/movie_plan.json").status_code == 404, run_id
        assert web.get(f"/api/runs/{run_id}").status_code == 404, run_id


# -- uploads ---------------------------------------------------------------------------------


def test_an_invalid_upload_lists_the_problems_sparkle_validate_prints(site, tmp_path):
    # Given a plan with several mistakes
    plan = {"title": "", "shots": [{"id": "bad id!", "duration_sec": -1}], "extra": 1}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(plan))
    from sparkle.errors import PlanError

    with pytest.raises(PlanError) as expected:
        load_plan_file(path, 1 << 20)
    # When it is posted to the API and through the New run form
    web = client(site)
    answer = web.post("/api/runs", content=path.read_bytes(),
                      headers={"content-type": "application/json"})
    page = web.post("/runs/new", data={"plan_text": path.read_text(),
                                       "csrf_token": web.app.state.secrets.csrf})  # type: ignore[attr-defined]
    # Then both list exactly the problems `sparkle validate` lists
    assert answer.status_code == 422
    wanted = [{"path": p.path, "message": p.message} for p in expected.value.problems]
    assert answer.json()["problems"] == wanted
    assert page.status_code == 422
    for problem in expected.value.problems:
        assert str(escape(problem.message)) in page.text


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"{" + b" " * (1 << 20) + b"}", 413, "limit"),
    (b"[" * 600_000 + b"]" * 600_000, 413, "limit"),
    (b"[" * 50_000 + b"]" * 50_000, 422, "nested too deeply"),
    (b'{"title": "\xff\xfe"}', 422, "not UTF-8"),
    (b"[1, 2]", 422, "top level is a JSON array"),
    (b"", 422, "empty"),
])
def test_hostile_uploads_get_a_4xx_and_the_server_keeps_serving(site, body, status, says):
    web = client(site)
    answer = web.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status
    assert says in answer.text
    assert web.get("/api/health").status_code == 200
    assert not site.settings.inbox_dir.exists()


def test_a_valid_plan_posted_to_a_standalone_dashboard_goes_to_the_inbox(site, plans_dir):
    """Without a reachable queue (no Redis, not `serve --ui`) the plan is handed to the
    inbox, where a running `sparkle serve` takes it."""
    web = client(site)
    answer = web.post("/api/runs", content=(plans_dir / "rooftop.json").read_bytes(),
                      headers={"content-type": "application/json"})
    assert answer.status_code == 202
    (handed,) = site.settings.inbox_dir.glob("*.json")
    assert json.loads(handed.read_text())["title"] == "Night Rooftop Confession"
    assert answer.json()["run_id"].startswith("night-rooftop-confession-")


def test_an_oversized_upload_is_refused_however_it_is_sent(site):
    """A form upload past the limit, and a chunked body that never says its length, are
    both cut off at the limit with 413."""
    web = client(site)
    limit = site.settings.max_plan_bytes
    form = web.post("/runs/new", data={"csrf_token": web.app.state.secrets.csrf},  # type: ignore[attr-defined]
                    files={"plan_file": ("big.json", b" " * (3 * limit), "application/json")})
    assert form.status_code == 413

    def chunks():  # (no Content-Length: the server must count)
        for _ in range(3):
            yield b" " * limit

    chunked = web.post("/api/runs", content=chunks(),
                       headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert web.get("/api/health").status_code == 200


def test_logging_out_forgets_the_session(site):
    web = client(site, token=TOKEN)
    csrf = web.app.state.secrets.csrf  # type: ignore[attr-defined]
    web.post("/login", data={"token": TOKEN, "csrf_token": csrf})
    assert web.get("/").status_code == 200
    out = web.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303 and 'sparkle_ui_session=""' in out.headers["set-cookie"]
    web.cookies.clear()
    assert web.get("/", follow_redirects=False).status_code == 303


def test_the_runs_table_fragment_and_replay_form_in_standalone_mode(site):
    web = client(site)
    run = only_run(site)
    assert run.run_id in web.get("/runs/table").text
    # (no dead-letter queue without Redis: the page says why)
    answer = web.post("/operations/replay", data={"all": "1",
                                                  "csrf_token": web.app.state.secrets.csrf},  # type: ignore[attr-defined]
                      follow_redirects=False)
    assert answer.status_code == 303 and "error=" in answer.headers["location"]
    assert "embedded%20mode" in answer.headers["location"]


def test_a_thumbnail_is_a_small_jpeg_of_the_keyframe(site):
    """The runs page asks for `?thumb=1`: a keyframe scaled down, not the whole image; a
    file that is not a readable image is served as it is."""
    import io

    from PIL import Image

    run = only_run(site)
    Image.new("RGB", (1280, 720), (200, 40, 40)).save(run.dir / "frames" / "big.png")
    web = client(site)
    small = web.get(f"/runs/{run.run_id}/files/frames/big.png?thumb=1")
    assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(small.content)) as image:
        assert max(image.size) == 192
    broken = web.get(f"/runs/{run.run_id}/files/frames/s1_start.png?thumb=1")
    assert broken.content == (run.dir / "frames" / "s1_start.png").read_bytes()


def test_the_new_run_form_of_a_standalone_dashboard_says_where_the_plan_went(site, plans_dir):
    web = client(site)
    answer = web.post("/runs/new", data={"csrf_token": web.app.state.secrets.csrf,  # type: ignore[attr-defined]
                                         "plan_text": (plans_dir / "rooftop.json").read_text()})
    assert answer.status_code == 202
    assert "handed to the inbox" in answer.text and "sparkle serve" in answer.text
    assert len(list(site.settings.inbox_dir.glob("ui-*.json"))) == 1


def test_unknown_pages_are_404_and_head_gives_headers_only(site):
    run = only_run(site)
    web = client(site)
    assert web.get("/runs/no-such-run").status_code == 404
    assert web.get("/runs/no-such-run/live").status_code == 404
    head = web.head(f"/runs/{run.run_id}/files/final/movie.mp4")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str((run.dir / "final" / "movie.mp4").stat().st_size)

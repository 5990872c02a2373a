"""The dashboard's routes: pages, the JSON API under ``/api`` and the runs' files.

Routes read through :mod:`sparkle.web.listing`, :mod:`sparkle.web.details` and
:mod:`sparkle.web.operations`, and act only through the service functions the CLI calls
(:mod:`sparkle.lifecycle`, :class:`sparkle.dlq.DeadLetterQueue`, :mod:`sparkle.review`
through :mod:`sparkle.web.review_actions`). Every POST parses its
fields with :func:`_fields`, which applies the size limit and the CSRF check.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from sparkle import __version__
from sparkle.errors import (
    RunNotFoundError,
    UnsafePathError,
)
from sparkle.names import STAGES, is_safe_id
from sparkle.runstore import Run
from sparkle.web import actions, details, events, files, listing, operations, review_actions
from sparkle.web.config import UiConfig
from sparkle.web.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Guard,
    Secrets,
    check_csrf,
)
from sparkle.web.site import MODE_NOTES, Mode, Site

HERE = Path(__file__).parent

#: Bytes a form may carry beyond the plan itself (field names, multipart boundaries).
FORM_OVERHEAD_BYTES = 64 * 1024

#: Run statuses offered by the filter (others, from newer versions, still show).
FILTER_STATUSES = ("queued", "running", "awaiting_review", "failed", "succeeded", "cancelled",
                   "rejected")


# -- helpers -----------------------------------------------------------------------------


def _site(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


def _index(request: Request) -> listing.RunListing:
    index: listing.RunListing = request.app.state.index
    return index


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _run(request: Request) -> Run:
    """The run named in the path; 404 for an unsafe id or a folder without a run."""
    run_id = request.path_params["run_id"]
    if not is_safe_id(run_id):
        raise HTTPException(404, f"no run {run_id!r}")
    run = Run(_site(request).store.root, run_id)
    if not run.exists():
        raise HTTPException(404, f"no run {run_id!r}")
    return run


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request is {declared} bytes, over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request is over the {limit}-byte limit")
        chunks.append(chunk)
    data = b"".join(chunks)
    request._body = data  # (so that request.form() parses what was read)
    return data


async def _fields(request: Request, limit: int = FORM_OVERHEAD_BYTES) -> dict[str, Any]:
    """The fields of a POST (form or JSON object), after the CSRF check (403) and within
    ``limit`` bytes (413). A file field is returned as its bytes and file name."""
    data = await _body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any] = {}
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=1, max_fields=20, max_part_size=limit)
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields[key] = (value.filename or "upload", await value.read())
            else:
                fields[key] = value
        await form.close()
    elif kind == "application/json" and data.strip():
        fields = _json_object(data)
    reason = check_csrf(request.scope, fields.get(CSRF_FIELD)
                        if isinstance(fields.get(CSRF_FIELD), str) else None)
    if reason:
        raise HTTPException(403, reason)
    return fields


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        loaded = json.loads(data)
    except (ValueError, RecursionError):
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(loaded, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return loaded


def _by(request: Request) -> str:
    """Who asked, as the manifest records it."""
    return f"dashboard ({request.client.host if request.client else '?'})"


def _detail_or_404(run: Run) -> dict[str, Any]:
    try:
        return details.run_detail(run)
    except RunNotFoundError:
        raise HTTPException(404, f"no run {run.run_id!r}") from None


# -- API -------------------------------------------------------------------------------


def _paging(request: Request) -> tuple[str | None, str | None, int, int]:
    params = request.query_params
    try:
        limit = min(listing.MAX_LIMIT, max(1, int(params.get("limit", listing.DEFAULT_LIMIT))))
        offset = max(0, int(params.get("offset", 0)))
    except ValueError:
        raise HTTPException(422, "limit and offset must be whole numbers") from None
    return params.get("status") or None, params.get("q") or None, limit, offset


def api_runs(request: Request) -> Response:
    status, q, limit, offset = _paging(request)
    index = _index(request)
    found, total = index.query(status, q, limit, offset)
    now = time.time()
    return JSONResponse({"runs": [listing.row(index, run_id, known, now)
                                  for run_id, known in found],
                         "total": total, "limit": limit, "offset": offset})


def api_run(request: Request) -> Response:
    return JSONResponse(_detail_or_404(_run(request)))


async def api_create(request: Request) -> Response:
    site = _site(request)
    data = await _body(request, site.settings.max_plan_bytes + FORM_OVERHEAD_BYTES)
    reason = check_csrf(request.scope, None)
    if reason:
        raise HTTPException(403, reason)
    status, body = actions.submit_plan(site, data, "request body")
    return JSONResponse(body, status)


async def api_resume(request: Request) -> Response:
    run = _run(request)
    fields = await _fields(request)
    from_stage = fields.get("from") or request.query_params.get("from") or None
    status, body = actions.resume(_site(request), run, from_stage if isinstance(from_stage, str)
                          or from_stage is None else str(from_stage))
    return JSONResponse(body, status)


async def api_cancel(request: Request) -> Response:
    run = _run(request)
    await _fields(request)
    status, body = actions.cancel(_site(request), run, _by(request))
    return JSONResponse(body, status)


async def _decide(request: Request, kind: str) -> tuple[Run, int, dict[str, Any]]:
    """Apply the review decision ``kind`` posted to the run in the path (in a thread: a
    decision may wait a moment for the run's lease)."""
    run = _run(request)
    fields = await _fields(request)
    status, body = await run_in_threadpool(review_actions.decide, _site(request), run, kind,
                                           fields, review_actions.who(_by(request),
                                                                      fields.get("who")))
    return run, status, body


def _api_decision(kind: str) -> Callable[[Request], Awaitable[Response]]:
    """The JSON route of one review decision (``approve``, ``redo``, ``reject``, ``take``)."""

    async def route(request: Request) -> Response:
        _, status, body = await _decide(request, kind)
        return JSONResponse(body, status)

    route.__name__ = f"api_{kind}"
    return route


def api_takes(request: Request) -> Response:
    status, body = review_actions.takes(_site(request), _run(request),
                                        request.query_params.get("shot") or None)
    return JSONResponse(body, status)


def api_events(request: Request) -> Response:
    run = _run(request)
    start = request.headers.get("last-event-id") or request.query_params.get("from") or "0"
    offset = int(start) if start.isdigit() else 0
    return StreamingResponse(events.follow_manifest(str(run.dir), offset),
                             media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def api_changes(request: Request) -> Response:
    """Server-sent ``change`` events when any run listed in ``ids`` changes or a run
    folder is added or removed: what the runs page listens to."""
    index = _index(request)
    root = str(index.store.root)
    ids = [i for i in request.query_params.get("ids", "").split(",") if is_safe_id(i)][:500]

    def look() -> dict[str, object]:
        seen: dict[str, object] = {i: listing._identity(f"{root}/{i}") for i in ids}
        try:
            folder = os.stat(root)
            seen["*"] = (folder.st_mtime_ns, folder.st_nlink)
        except OSError:
            seen["*"] = None
        return seen

    return StreamingResponse(events.watch(look), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def api_dlq(request: Request) -> Response:
    dead = _site(request).dead_letters()
    if dead is None:
        from sparkle.dlq import EMBEDDED_NOTICE

        return JSONResponse({"error": EMBEDDED_NOTICE, "dead_letters": []}, 409)
    try:
        return JSONResponse([letter.as_dict() for letter in dead.letters()])
    except redis.RedisError as exc:
        return JSONResponse({"error": f"Redis: {exc}"}, 503)


async def api_replay(request: Request) -> Response:
    fields = await _fields(request)
    status, body = actions.replay(_site(request), _text(fields.get("run_id")),
                                  _text(fields.get("stage")),
                                  fields.get("all") in (True, "1", "true", "on"))
    return JSONResponse(body, status)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def api_health(request: Request) -> Response:
    site = _site(request)
    body: dict[str, Any] = {"ok": True, "version": __version__, "mode": site.mode.value,
                            "read_only": site.read_only,
                            "runs_dir": str(site.settings.runs_dir)}
    if site.mode is Mode.redis and site.dispatcher is not None:
        try:
            site.dispatcher.client.ping()
            body["redis"] = "ok"
        except redis.RedisError as exc:
            body.update(ok=False, redis=str(exc))
    return JSONResponse(body, 200 if body["ok"] else 503)


def api_inbox(request: Request) -> Response:
    view = operations.inbox_view(_site(request).settings.inbox_dir)
    return JSONResponse({key: [item.as_dict() for item in items] for key, items in view.items()})


def api_operations(request: Request) -> Response:
    return JSONResponse(operations.operations_view(_site(request), _index(request)))


# -- files -------------------------------------------------------------------------------


def run_file(request: Request) -> Response:
    run = _run(request)
    relative = request.path_params["path"]
    try:
        fd, info = files.open_inside(str(run.dir), relative)
    except files.NotServable:
        raise HTTPException(404, "no such file in this run") from None
    if request.query_params.get("thumb") and files.content_type(relative).startswith("image/"):
        small = files.thumbnail(fd, info)
        if small is not None:
            os.close(fd)
            return Response(small, media_type="image/jpeg", headers={"cache-control": "no-cache"})
    return files.file_response(fd, info, relative, request.headers.get("range"),
                               request.method)


# -- pages -------------------------------------------------------------------------------


def _render(request: Request, name: str, context: dict[str, Any],
            status: int = 200) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    site = _site(request)
    base = {"site": site, "mode_note": MODE_NOTES[site.mode],
            "csrf": request.app.state.secrets.csrf,
            "login": request.app.state.secrets.token is not None, "stages": STAGES,
            "path": request.url.path}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)


def _runs_context(request: Request) -> dict[str, Any]:
    status, q, limit, offset = _paging(request)
    index = _index(request)
    found, total = index.query(status, q, limit, offset)
    now = time.time()
    rows = [listing.row(index, run_id, known, now) for run_id, known in found]

    def page_link(new_offset: int) -> str:
        query = {k: v for k, v in {"status": status or "", "q": q or "", "limit": str(limit),
                                   "offset": str(new_offset)}.items() if v}
        return "/?" + urlencode(query)

    return {"rows": rows, "total": total, "limit": limit, "offset": offset,
            "status": status or "", "q": q or "", "filter_statuses": FILTER_STATUSES,
            "prev_link": page_link(max(0, offset - limit)) if offset else None,
            "next_link": page_link(offset + limit) if offset + limit < total else None,
            "counts": index.counts()}


def page_runs(request: Request) -> Response:
    return _render(request, "runs.html", _runs_context(request))


def page_runs_table(request: Request) -> Response:
    return _render(request, "_runs_table.html", _runs_context(request))


def _blocks(request: Request, run: Run, detail: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The run page's parts, rendered, each with a version (a hash of its HTML)."""
    templates: Jinja2Templates = request.app.state.templates
    site = _site(request)
    module: Any = templates.env.get_template("_run.html").make_module(
        {"site": site, "csrf": request.app.state.secrets.csrf, "stages": STAGES})
    parts: dict[str, str] = {
        "header": str(module.header(detail)),
        "stages": str(module.stage_table(detail)),
        "final": str(module.final(detail)),
        "qa": str(module.qa(detail)),
    }
    shown = {**detail, "review_panel": review_actions.panel(site, run)}
    parts["review"] = str(module.review(shown))
    for shot in detail["plan"]["shots"]:
        parts[f"shot-{shot['id']}"] = str(module.shot(shown, shot))
    return {name: {"version": hashlib.sha1(html.encode()).hexdigest()[:16], "html": html}
            for name, html in parts.items()}


def page_run(request: Request) -> Response:
    run = _run(request)
    detail = _detail_or_404(run)
    return _render(request, "run.html", {"run": detail, "blocks": _blocks(request, run, detail)})


def page_run_live(request: Request) -> Response:
    run = _run(request)
    detail = _detail_or_404(run)
    return JSONResponse({"status": detail["status"], "blocks": _blocks(request, run, detail)})


def _back(request: Request, target: str, message: str, error: bool = False) -> Response:
    separator = "&" if "?" in target else "?"
    key = "error" if error else "notice"
    return RedirectResponse(f"{target}{separator}{key}={quote(message)}", 303)


async def action_resume(request: Request) -> Response:
    run = _run(request)
    fields = await _fields(request)
    status, body = actions.resume(_site(request), run, _text(fields.get("from")))
    target = f"/runs/{run.run_id}"
    if status != 200:
        return _back(request, target, body["error"], error=True)
    queued = body["queued"]
    return _back(request, target, f"resumed: {queued} queued" if queued
                 else "resumed: nothing to queue")


async def action_cancel(request: Request) -> Response:
    run = _run(request)
    await _fields(request)
    _, body = actions.cancel(_site(request), run, _by(request))
    return _back(request, f"/runs/{run.run_id}", body["result"].replace("_", " "))


#: What the run page says after each review decision.
DECIDED = {"approve": "approved: the run continues", "redo": "re-roll queued",
           "reject": "rejected", "take": "take put back in place"}


async def action_decide(request: Request) -> Response:
    """The run page's review forms: ``/runs/{run_id}/review/{kind}``."""
    kind = request.path_params["kind"]
    if kind not in DECIDED:
        raise HTTPException(404, f"no review action {kind!r}")
    run, status, body = await _decide(request, kind)
    target = f"/runs/{run.run_id}"
    if status != 200:
        return _back(request, target, body["error"], error=True)
    message = DECIDED[kind]
    if kind == "redo":
        message = f"re-rolling {', '.join(body['shots'])}: {', '.join(body['stages_reset'])}"
    return _back(request, target, message)


def page_new(request: Request) -> Response:
    return _render(request, "new.html", {"problems": None, "text": "", "error": None})


async def action_new(request: Request) -> Response:
    site = _site(request)
    fields = await _fields(request, site.settings.max_plan_bytes * 2 + FORM_OVERHEAD_BYTES)
    upload = fields.get("plan_file")
    pasted = fields.get("plan_text")
    text = pasted if isinstance(pasted, str) else ""
    if isinstance(upload, tuple) and upload[1]:
        source, data = f"upload {upload[0]}", upload[1]
    else:
        source, data = "pasted plan", text.encode()
    status, body = actions.submit_plan(site, data, source)
    if status in (200, 201):
        return RedirectResponse(f"/runs/{body['run_id']}?notice="
                                f"{quote('created' if status == 201 else 'existing run')}", 303)
    if status == 202:
        return _render(request, "new.html", {"problems": None, "text": "", "error": None,
                                             "handed": body}, 202)
    shown = text if len(text) <= site.settings.max_plan_bytes else ""
    return _render(request, "new.html", {"problems": body.get("problems"), "text": shown,
                                         "error": body["error"]}, status)


def page_inbox(request: Request) -> Response:
    site = _site(request)
    return _render(request, "inbox.html", {"inbox": operations.inbox_view(site.settings.inbox_dir),
                                           "inbox_dir": str(site.settings.inbox_dir)})


def page_operations(request: Request) -> Response:
    return _render(request, "operations.html",
                   {"ops": operations.operations_view(_site(request), _index(request))})


async def action_replay(request: Request) -> Response:
    fields = await _fields(request)
    status, body = actions.replay(_site(request), _text(fields.get("run_id")),
                                  _text(fields.get("stage")),
                                  fields.get("all") in ("1", "true", "on"))
    if status != 200:
        return _back(request, "/operations", body["error"], error=True)
    return _back(request, "/operations",
                 f"replayed {body['replayed']} of {len(body['results'])} dead letter(s)")


def page_login(request: Request) -> Response:
    return _render(request, "login.html", {"next": _next(request), "error": None})


def _next(request: Request) -> str:
    target = request.query_params.get("next", "/")
    # (a path on this site only: never an open redirect)
    return target if target.startswith("/") and not target.startswith("//") \
        and "\\" not in target else "/"


async def action_login(request: Request) -> Response:
    fields = await _fields(request)
    secrets_: Secrets = request.app.state.secrets
    given = fields.get("token")
    if not isinstance(given, str) or not secrets_.token_ok(given):
        return _render(request, "login.html", {"next": _next(request),
                                               "error": "wrong token"}, 401)
    response = RedirectResponse(_next(request), 303)
    response.set_cookie(SESSION_COOKIE, secrets_.session, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


async def action_logout(request: Request) -> Response:
    await _fields(request)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- errors ------------------------------------------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _is_api(request) or "/files/" in request.url.path or request.url.path.endswith("/live"):
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
    return _render(request, "error.html", {"status": exc.status_code, "message": exc.detail},
                   exc.status_code)


async def _unsafe_path(request: Request, exc: Exception) -> Response:
    return await _http_error(request, HTTPException(404, str(exc)))


# -- the application ---------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = _ago
    env.filters["seconds"] = _seconds
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2)
    env.globals["media_kind"] = details.media_kind
    env.globals["file_url"] = _file_url
    return env


def _file_url(run_id: str, path: str, versions: dict[str, str] | None = None) -> str:
    url = f"/runs/{quote(run_id)}/files/{quote(path)}"
    version = (versions or {}).get(path)
    return f"{url}?v={version}" if version else url


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}s" if value < 60 else f"{value / 60:.1f}m"


def create_app(site: Site, config: UiConfig | None = None) -> Starlette:
    """The dashboard for ``site``, guarded as ``config`` says."""
    config = config or UiConfig()
    config.check()
    site.read_only = site.read_only or config.read_only
    secrets_ = Secrets(config.token)
    routes = [
        Route("/", page_runs),
        Route("/runs/table", page_runs_table),
        Route("/runs/new", page_new),
        Route("/runs/new", action_new, methods=["POST"]),
        Route("/runs/{run_id}", page_run),
        Route("/runs/{run_id}/live", page_run_live),
        Route("/runs/{run_id}/resume", action_resume, methods=["POST"]),
        Route("/runs/{run_id}/cancel", action_cancel, methods=["POST"]),
        Route("/runs/{run_id}/review/{kind}", action_decide, methods=["POST"]),
        Route("/runs/{run_id}/files/{path:path}", run_file, methods=["GET", "HEAD"]),
        Route("/inbox", page_inbox),
        Route("/operations", page_operations),
        Route("/operations/replay", action_replay, methods=["POST"]),
        Route("/login", page_login),
        Route("/login", action_login, methods=["POST"]),
        Route("/logout", action_logout, methods=["POST"]),
        Route("/api/health", api_health),
        Route("/api/runs", api_runs),
        Route("/api/runs", api_create, methods=["POST"]),
        Route("/api/runs/changes", api_changes),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/runs/{run_id}/resume", api_resume, methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", api_cancel, methods=["POST"]),
        Route("/api/runs/{run_id}/approve", _api_decision("approve"), methods=["POST"]),
        Route("/api/runs/{run_id}/redo", _api_decision("redo"), methods=["POST"]),
        Route("/api/runs/{run_id}/reject", _api_decision("reject"), methods=["POST"]),
        Route("/api/runs/{run_id}/takes", api_takes),
        Route("/api/runs/{run_id}/takes/use", _api_decision("take"), methods=["POST"]),
        Route("/api/runs/{run_id}/events", api_events),
        Route("/api/dlq", api_dlq),
        Route("/api/dlq/replay", api_replay, methods=["POST"]),
        Route("/api/inbox", api_inbox),
        Route("/api/operations", api_operations),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, config=config, guard=secrets_)],
        exception_handlers={HTTPException: _http_error, UnsafePathError: _unsafe_path,
                            RunNotFoundError: _unsafe_path},
    )
    app.state.site = site
    app.state.index = listing.RunListing(site.store)
    app.state.secrets = secrets_
    app.state.templates = Jinja2Templates(env=_environment())
    app.state.config = config
    return app


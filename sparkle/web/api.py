"""The dashboard's JSON API under ``/api``: the runs, their events, review decisions and
takes, dead letters, the inbox and the operations view.

Routes read through :mod:`sparkle.web.listing`, :mod:`sparkle.web.details` and
:mod:`sparkle.web.operations`, and act only through the service functions the CLI calls
(:mod:`sparkle.web.actions`, :mod:`sparkle.web.review_actions`). Each answers the
``(status, body)`` of the action as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sparkle import __version__
from sparkle.names import is_safe_id
from sparkle.runstore import Run
from sparkle.web import actions, events, listing, operations, review_actions
from sparkle.web.inputs import (
    FORM_OVERHEAD_BYTES,
    detail_or_404,
    listing_of,
    paging,
    posted_by,
    read_body,
    read_fields,
    run_of,
    site_of,
    text_field,
)
from sparkle.web.security import check_csrf
from sparkle.web.site import Mode


def api_runs(request: Request) -> Response:
    status, q, limit, offset = paging(request)
    index = listing_of(request)
    found, total = index.query(status, q, limit, offset)
    now = time.time()
    return JSONResponse({"runs": [listing.row(index, run_id, known, now)
                                  for run_id, known in found],
                         "total": total, "limit": limit, "offset": offset})


def api_run(request: Request) -> Response:
    return JSONResponse(detail_or_404(run_of(request)))


async def api_create(request: Request) -> Response:
    site = site_of(request)
    data = await read_body(request, site.settings.max_plan_bytes + FORM_OVERHEAD_BYTES)
    reason = check_csrf(request.scope, None)
    if reason:
        raise HTTPException(403, reason)
    status, body = actions.submit_plan(site, data, "request body")
    return JSONResponse(body, status)


async def api_resume(request: Request) -> Response:
    run = run_of(request)
    fields = await read_fields(request)
    from_stage = fields.get("from") or request.query_params.get("from") or None
    status, body = actions.resume(site_of(request), run, from_stage if isinstance(from_stage, str)
                          or from_stage is None else str(from_stage))
    return JSONResponse(body, status)


async def api_cancel(request: Request) -> Response:
    run = run_of(request)
    await read_fields(request)
    status, body = actions.cancel(site_of(request), run, posted_by(request))
    return JSONResponse(body, status)


async def decide(request: Request, kind: str) -> tuple[Run, int, dict[str, Any]]:
    """Apply the review decision ``kind`` posted to the run in the path (in a thread: a
    decision may wait a moment for the run's lease)."""
    run = run_of(request)
    fields = await read_fields(request)
    status, body = await run_in_threadpool(review_actions.decide, site_of(request), run, kind,
                                           fields, review_actions.who(posted_by(request),
                                                                      fields.get("who")))
    return run, status, body


def api_decision(kind: str) -> Callable[[Request], Awaitable[Response]]:
    """The JSON route of one review decision (``approve``, ``redo``, ``reject``, ``take``)."""

    async def route(request: Request) -> Response:
        _, status, body = await decide(request, kind)
        return JSONResponse(body, status)

    route.__name__ = f"api_{kind}"
    return route


def api_takes(request: Request) -> Response:
    status, body = review_actions.takes(site_of(request), run_of(request),
                                        request.query_params.get("shot") or None)
    return JSONResponse(body, status)


def api_events(request: Request) -> Response:
    run = run_of(request)
    start = request.headers.get("last-event-id") or request.query_params.get("from") or "0"
    offset = int(start) if start.isdigit() else 0
    return StreamingResponse(events.follow_manifest(str(run.dir), offset),
                             media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def api_changes(request: Request) -> Response:
    """Server-sent ``change`` events when any run listed in ``ids`` changes or a run
    folder is added or removed: what the runs page listens to."""
    index = listing_of(request)
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
    dead = site_of(request).dead_letters()
    if dead is None:
        from sparkle.dlq import EMBEDDED_NOTICE

        return JSONResponse({"error": EMBEDDED_NOTICE, "dead_letters": []}, 409)
    try:
        return JSONResponse([letter.as_dict() for letter in dead.letters()])
    except redis.RedisError as exc:
        return JSONResponse({"error": f"Redis: {exc}"}, 503)


async def api_replay(request: Request) -> Response:
    fields = await read_fields(request)
    status, body = actions.replay(site_of(request), text_field(fields.get("run_id")),
                                  text_field(fields.get("stage")),
                                  fields.get("all") in (True, "1", "true", "on"))
    return JSONResponse(body, status)


def api_health(request: Request) -> Response:
    site = site_of(request)
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
    view = operations.inbox_view(site_of(request).settings.inbox_dir)
    return JSONResponse({key: [item.as_dict() for item in items] for key, items in view.items()})


def api_operations(request: Request) -> Response:
    return JSONResponse(operations.operations_view(site_of(request), listing_of(request)))

"""The dashboard's pages: the runs list, a run, a new run, the inbox, operations and the
login, with the forms they post; and the run's files the pages show.

A form's route answers with a redirect back to its page carrying a notice (or an error),
or with the page again listing the problems.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any
from urllib.parse import quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from sparkle.names import STAGES
from sparkle.runstore import Run
from sparkle.web import actions, files, listing, operations, review_actions
from sparkle.web.api import decide
from sparkle.web.inputs import (
    FORM_OVERHEAD_BYTES,
    detail_or_404,
    listing_of,
    paging,
    posted_by,
    read_fields,
    run_of,
    site_of,
    text_field,
)
from sparkle.web.rendering import render
from sparkle.web.security import SESSION_COOKIE, Secrets

#: Run statuses offered by the filter (others, from newer versions, still show).
FILTER_STATUSES = ("queued", "running", "awaiting_review", "failed", "succeeded", "cancelled",
                   "rejected")


def runs_context(request: Request) -> dict[str, Any]:
    """What the runs page and its table show: one page of runs, the filter and the links."""
    status, q, limit, offset = paging(request)
    index = listing_of(request)
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
    return render(request, "runs.html", runs_context(request))


def page_runs_table(request: Request) -> Response:
    return render(request, "_runs_table.html", runs_context(request))


def run_blocks(request: Request, run: Run, detail: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The run page's parts, rendered, each with a version (a hash of its HTML)."""
    templates: Jinja2Templates = request.app.state.templates
    site = site_of(request)
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
    run = run_of(request)
    detail = detail_or_404(run)
    return render(request, "run.html", {"run": detail, "blocks": run_blocks(request, run, detail)})


def page_run_live(request: Request) -> Response:
    run = run_of(request)
    detail = detail_or_404(run)
    return JSONResponse({"status": detail["status"], "blocks": run_blocks(request, run, detail)})


def back_to(request: Request, target: str, message: str, error: bool = False) -> Response:
    """Redirect to ``target`` with ``message`` shown as a notice (or an error)."""
    separator = "&" if "?" in target else "?"
    key = "error" if error else "notice"
    return RedirectResponse(f"{target}{separator}{key}={quote(message)}", 303)


async def action_resume(request: Request) -> Response:
    run = run_of(request)
    fields = await read_fields(request)
    status, body = actions.resume(site_of(request), run, text_field(fields.get("from")))
    target = f"/runs/{run.run_id}"
    if status != 200:
        return back_to(request, target, body["error"], error=True)
    queued = body["queued"]
    if body.get("handed_over"):
        return back_to(request, target, "resume handed to the worker running a stage: it "
                                        "resets the stages when that stage ends, then goes on")
    return back_to(request, target, f"resumed: {queued} queued" if queued
                   else "resumed: nothing to queue")


async def action_cancel(request: Request) -> Response:
    run = run_of(request)
    await read_fields(request)
    _, body = actions.cancel(site_of(request), run, posted_by(request))
    return back_to(request, f"/runs/{run.run_id}", body["result"].replace("_", " "))


#: What the run page says after each review decision.
DECIDED = {"approve": "approved: the run continues", "redo": "re-roll queued",
           "reject": "rejected", "take": "take put back in place"}


async def action_decide(request: Request) -> Response:
    """The run page's review forms: ``/runs/{run_id}/review/{kind}``."""
    kind = request.path_params["kind"]
    if kind not in DECIDED:
        raise HTTPException(404, f"no review action {kind!r}")
    run, status, body = await decide(request, kind)
    target = f"/runs/{run.run_id}"
    if status != 200:
        return back_to(request, target, body["error"], error=True)
    message = DECIDED[kind]
    if kind == "redo":
        message = f"re-rolling {', '.join(body['shots'])}: {', '.join(body['stages_reset'])}"
    return back_to(request, target, message)


def page_new(request: Request) -> Response:
    return render(request, "new.html", {"problems": None, "text": "", "error": None})


async def action_new(request: Request) -> Response:
    site = site_of(request)
    fields = await read_fields(request, site.settings.max_plan_bytes * 2 + FORM_OVERHEAD_BYTES)
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
        return render(request, "new.html", {"problems": None, "text": "", "error": None,
                                            "handed": body}, 202)
    shown = text if len(text) <= site.settings.max_plan_bytes else ""
    return render(request, "new.html", {"problems": body.get("problems"), "text": shown,
                                        "error": body["error"]}, status)


def page_inbox(request: Request) -> Response:
    site = site_of(request)
    return render(request, "inbox.html", {"inbox": operations.inbox_view(site.settings.inbox_dir),
                                          "inbox_dir": str(site.settings.inbox_dir)})


def page_operations(request: Request) -> Response:
    return render(request, "operations.html",
                  {"ops": operations.operations_view(site_of(request), listing_of(request))})


async def action_replay(request: Request) -> Response:
    fields = await read_fields(request)
    status, body = actions.replay(site_of(request), text_field(fields.get("run_id")),
                                  text_field(fields.get("stage")),
                                  fields.get("all") in ("1", "true", "on"))
    if status != 200:
        return back_to(request, "/operations", body["error"], error=True)
    return back_to(request, "/operations",
                   f"replayed {body['replayed']} of {len(body['results'])} dead letter(s)")


def page_login(request: Request) -> Response:
    return render(request, "login.html", {"next": next_path(request), "error": None})


def next_path(request: Request) -> str:
    """Where to go after logging in: a path on this site only, never an open redirect."""
    target = request.query_params.get("next", "/")
    return target if target.startswith("/") and not target.startswith("//") \
        and "\\" not in target else "/"


async def action_login(request: Request) -> Response:
    fields = await read_fields(request)
    secrets_: Secrets = request.app.state.secrets
    given = fields.get("token")
    if not isinstance(given, str) or not secrets_.token_ok(given):
        return render(request, "login.html", {"next": next_path(request),
                                              "error": "wrong token"}, 401)
    response = RedirectResponse(next_path(request), 303)
    response.set_cookie(SESSION_COOKIE, secrets_.session, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


async def action_logout(request: Request) -> Response:
    await read_fields(request)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def run_file(request: Request) -> Response:
    """A file of the run (or a thumbnail of a picture), with HTTP ranges."""
    run = run_of(request)
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

"""What a dashboard route reads from its request: the site, the run named in the path,
and the fields of a POST, which pass the size limit and the CSRF check first.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from sparkle.errors import RunNotFoundError
from sparkle.names import is_safe_id
from sparkle.runstore import Run
from sparkle.web import details, listing
from sparkle.web.security import CSRF_FIELD, check_csrf
from sparkle.web.site import Site

#: Bytes a form may carry beyond the plan itself (field names, multipart boundaries).
FORM_OVERHEAD_BYTES = 64 * 1024


def site_of(request: Request) -> Site:
    """The site the app serves."""
    site: Site = request.app.state.site
    return site


def listing_of(request: Request) -> listing.RunListing:
    """The app's listing of the runs folder."""
    index: listing.RunListing = request.app.state.index
    return index


def is_api(request: Request) -> bool:
    """Whether the request is for the JSON API (errors then answer JSON)."""
    return request.url.path.startswith("/api/")


def run_of(request: Request) -> Run:
    """The run named in the path; 404 for an unsafe id or a folder without a run."""
    run_id = request.path_params["run_id"]
    if not is_safe_id(run_id):
        raise HTTPException(404, f"no run {run_id!r}")
    run = Run(site_of(request).store.root, run_id)
    if not run.exists():
        raise HTTPException(404, f"no run {run_id!r}")
    return run


async def read_body(request: Request, limit: int) -> bytes:
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


async def read_fields(request: Request, limit: int = FORM_OVERHEAD_BYTES) -> dict[str, Any]:
    """The fields of a POST (form or JSON object), after the CSRF check (403) and within
    ``limit`` bytes (413). A file field is returned as its bytes and file name."""
    data = await read_body(request, limit)
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


def posted_by(request: Request) -> str:
    """Who asked, as the manifest records it."""
    return f"dashboard ({request.client.host if request.client else '?'})"


def text_field(value: object) -> str | None:
    """A posted field's text, or None when it is missing, empty or not text."""
    return value if isinstance(value, str) and value else None


def detail_or_404(run: Run) -> dict[str, Any]:
    """What the run page and ``/api/runs/{id}`` show of ``run``; 404 when it is gone."""
    try:
        return details.run_detail(run)
    except RunNotFoundError:
        raise HTTPException(404, f"no run {run.run_id!r}") from None


def paging(request: Request) -> tuple[str | None, str | None, int, int]:
    """The runs list's query: (status, search text, limit, offset); 422 when malformed."""
    params = request.query_params
    try:
        limit = min(listing.MAX_LIMIT, max(1, int(params.get("limit", listing.DEFAULT_LIMIT))))
        offset = max(0, int(params.get("offset", 0)))
    except ValueError:
        raise HTTPException(422, "limit and offset must be whole numbers") from None
    return params.get("status") or None, params.get("q") or None, limit, offset

"""The dashboard application: its routes, the guard in front of them and the error pages.

Pages and their forms are :mod:`sparkle.web.pages`, the JSON API :mod:`sparkle.web.api`;
both read requests through :mod:`sparkle.web.inputs`, whose :func:`~sparkle.web.inputs.read_fields`
applies the size limit and the CSRF check to every POST.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from sparkle.errors import RunNotFoundError, UnsafePathError
from sparkle.web import api, listing, pages
from sparkle.web.config import UiConfig
from sparkle.web.inputs import is_api
from sparkle.web.rendering import HERE, environment, render
from sparkle.web.security import Guard, Secrets
from sparkle.web.site import Site


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if is_api(request) or "/files/" in request.url.path or request.url.path.endswith("/live"):
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
    return render(request, "error.html", {"status": exc.status_code, "message": exc.detail},
                  exc.status_code)


async def _unsafe_path(request: Request, exc: Exception) -> Response:
    return await _http_error(request, HTTPException(404, str(exc)))


def create_app(site: Site, config: UiConfig | None = None) -> Starlette:
    """The dashboard for ``site``, guarded as ``config`` says."""
    config = config or UiConfig()
    config.check()
    site.read_only = site.read_only or config.read_only
    secrets_ = Secrets(config.token)
    routes = [
        Route("/", pages.page_runs),
        Route("/runs/table", pages.page_runs_table),
        Route("/runs/new", pages.page_new),
        Route("/runs/new", pages.action_new, methods=["POST"]),
        Route("/runs/{run_id}", pages.page_run),
        Route("/runs/{run_id}/live", pages.page_run_live),
        Route("/runs/{run_id}/resume", pages.action_resume, methods=["POST"]),
        Route("/runs/{run_id}/cancel", pages.action_cancel, methods=["POST"]),
        Route("/runs/{run_id}/review/{kind}", pages.action_decide, methods=["POST"]),
        Route("/runs/{run_id}/files/{path:path}", pages.run_file, methods=["GET", "HEAD"]),
        Route("/inbox", pages.page_inbox),
        Route("/operations", pages.page_operations),
        Route("/operations/replay", pages.action_replay, methods=["POST"]),
        Route("/login", pages.page_login),
        Route("/login", pages.action_login, methods=["POST"]),
        Route("/logout", pages.action_logout, methods=["POST"]),
        Route("/api/health", api.api_health),
        Route("/api/runs", api.api_runs),
        Route("/api/runs", api.api_create, methods=["POST"]),
        Route("/api/runs/changes", api.api_changes),
        Route("/api/runs/{run_id}", api.api_run),
        Route("/api/runs/{run_id}/resume", api.api_resume, methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", api.api_cancel, methods=["POST"]),
        Route("/api/runs/{run_id}/approve", api.api_decision("approve"), methods=["POST"]),
        Route("/api/runs/{run_id}/redo", api.api_decision("redo"), methods=["POST"]),
        Route("/api/runs/{run_id}/reject", api.api_decision("reject"), methods=["POST"]),
        Route("/api/runs/{run_id}/takes", api.api_takes),
        Route("/api/runs/{run_id}/takes/use", api.api_decision("take"), methods=["POST"]),
        Route("/api/runs/{run_id}/events", api.api_events),
        Route("/api/dlq", api.api_dlq),
        Route("/api/dlq/replay", api.api_replay, methods=["POST"]),
        Route("/api/inbox", api.api_inbox),
        Route("/api/operations", api.api_operations),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, config=config, guard=secrets_)],
        exception_handlers={HTTPException: _http_error, UnsafePathError: _unsafe_path,
                            RunNotFoundError: _unsafe_path},
    )
    app.state.site = site
    app.state.index = listing.RunListing(site.store, unfinished=listing.unfinished_reader(site))
    app.state.secrets = secrets_
    app.state.templates = Jinja2Templates(env=environment())
    app.state.config = config
    return app

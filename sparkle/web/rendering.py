"""The dashboard's templates: the Jinja2 environment with its filters, and rendering a
page with what every page shows (the site's mode, the CSRF token, the stages).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from sparkle.names import STAGES
from sparkle.web import details
from sparkle.web.inputs import site_of
from sparkle.web.site import MODE_NOTES

#: Folder of the templates and static files.
HERE = Path(__file__).parent


def render(request: Request, name: str, context: dict[str, Any],
           status: int = 200) -> Response:
    """The page ``name`` with ``context`` and what every page shows."""
    templates: Jinja2Templates = request.app.state.templates
    site = site_of(request)
    base = {"site": site, "mode_note": MODE_NOTES[site.mode],
            "csrf": request.app.state.secrets.csrf,
            "login": request.app.state.secrets.token is not None, "stages": STAGES,
            "path": request.url.path}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)


def environment() -> jinja2.Environment:
    """The templates' environment: autoescaped, with the dashboard's filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = format_ago
    env.filters["seconds"] = format_seconds
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2)
    env.globals["media_kind"] = details.media_kind
    env.globals["file_url"] = file_url
    return env


def file_url(run_id: str, path: str, versions: dict[str, str] | None = None) -> str:
    """The URL of a run's file, with its version (so a new take is fetched anew)."""
    url = f"/runs/{quote(run_id)}/files/{quote(path)}"
    version = (versions or {}).get(path)
    return f"{url}?v={version}" if version else url


def format_ago(seconds: float | None) -> str:
    """An age in its largest whole unit: ``3h``, ``42s``."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def format_seconds(value: float | None) -> str:
    """A duration: ``1.25s`` under a minute, ``2.5m`` above."""
    if value is None:
        return "-"
    return f"{value:.2f}s" if value < 60 else f"{value / 60:.1f}m"

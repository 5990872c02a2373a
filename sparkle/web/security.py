"""The dashboard's guard: who may ask (token), from where (host, origin), and what (read-only).

An ASGI middleware in front of every route (:class:`Guard`) and the check of state-changing
requests (:func:`check_csrf`), which the action routes call on the fields they parse.

- **Host**: bound to loopback, requests must name a loopback host, so a web page whose
  domain was re-pointed at 127.0.0.1 (DNS rebinding) cannot read or drive the dashboard.
- **Token** (``SPARKLE_UI_TOKEN``): every route but ``/login`` and ``/static`` needs
  ``Authorization: Bearer <token>`` or the session cookie the login form sets (HttpOnly,
  SameSite=Strict; its value is an HMAC of the token, never the token). Compared in
  constant time.
- **Cross-site requests**: state changes are POST only. A POST from a browser (it sends
  ``Origin`` or ``Sec-Fetch-Site``) must come from the dashboard's own origin and carry the
  page's CSRF token (a form field or ``X-CSRF-Token``), unless it authenticates with a
  Bearer header, which a browser never adds by itself. A client that is not a browser
  sends neither header and needs only the token, when one is set.
- **Read-only**: every POST but the login is refused.
- Every response carries a strict Content-Security-Policy (no inline script, nothing from
  elsewhere), ``X-Frame-Options: DENY``, ``nosniff`` and ``Referrer-Policy: same-origin``
  (``no-referrer`` would make Chromium send ``Origin: null`` on the dashboard's own forms).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit

from sparkle.web.config import UiConfig, is_loopback

#: Name of the session cookie set by the login form.
SESSION_COOKIE = "sparkle_ui_session"

#: Form field and header carrying the CSRF token.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

#: Paths served without a login (the login form itself and its stylesheet).
PUBLIC_PREFIXES = ("/login", "/static/")

#: Methods that change nothing.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: The Content-Security-Policy of every response: scripts, styles and media from the
#: dashboard only; no inline script; no framing; forms post back to the dashboard only.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Secrets:
    """The values derived for one dashboard process: session cookie and CSRF token."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        key = token.encode() if token else secrets.token_bytes(32)
        self.session = hmac.new(key, b"sparkle-ui session", hashlib.sha256).hexdigest()
        # (random per process: a page from before a restart must be loaded again to post)
        self.csrf = secrets.token_urlsafe(32)

    def bearer_ok(self, header: str | None) -> bool:
        if self.token is None or not header:
            return False
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode())

    def cookie_ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.session.encode())

    def token_ok(self, given: str) -> bool:
        """Whether ``given`` (typed into the login form) is the token."""
        return self.token is not None and hmac.compare_digest(given.encode(),
                                                               self.token.encode())

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        found.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _host_name(host: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8321`` → ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def cross_site(headers: dict[str, str]) -> str | None:
    """Why a state-changing request comes from another site, or None."""
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is not None and (
            origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()):
        return f"Origin {origin!r} is not this dashboard"
    return None


def from_browser(headers: dict[str, str]) -> bool:
    """Whether a request comes from a browser: browsers send ``Origin`` on every POST and
    ``Sec-Fetch-Site`` on every request (other clients send neither)."""
    return "origin" in headers or "sec-fetch-site" in headers


def check_csrf(scope: Scope, given: str | None) -> str | None:
    """Why the state-changing request in ``scope`` must be refused, or None.

    ``given``: the CSRF token the request carried (form field or header)."""
    headers = _headers(scope)
    reason = cross_site(headers)
    if reason:
        return reason
    guard: Secrets = scope["app"].state.secrets
    if guard.bearer_ok(headers.get("authorization")) or not from_browser(headers):
        return None
    if guard.csrf_ok(given or headers.get(CSRF_HEADER)):
        return None
    return "missing or wrong CSRF token: reload the page and try again"


class Guard:
    """ASGI middleware applying the host, token and read-only rules, and adding the
    security headers to every response."""

    def __init__(self, app: ASGIApp, config: UiConfig, guard: Secrets) -> None:
        self.app = app
        self.config = config
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path: str = scope["path"]
        method: str = scope["method"]
        if is_loopback(self.config.host) and not is_loopback(_host_name(headers.get("host",
                                                                                       ""))):
            await _refuse(send, 421, "this dashboard answers to loopback names only "
                                     "(127.0.0.1, localhost, [::1])")
            return
        if self.guard.token is not None and not path.startswith(PUBLIC_PREFIXES) and not (
                self.guard.bearer_ok(headers.get("authorization"))
                or self.guard.cookie_ok(_cookie(headers, SESSION_COOKIE))):
            await _unauthorised(scope, send, path)
            return
        if method not in SAFE_METHODS and self.config.read_only and path != "/login":
            await _refuse(send, 403, "read-only dashboard (--read-only): no actions")
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"content-security-policy", CSP.encode()),
                         (b"x-frame-options", b"DENY"),
                         (b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"same-origin")]
                names = {key.lower() for key, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (key, value) for key, value in extra if key not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _unauthorised(scope: Scope, send: Send, path: str) -> None:
    """401 for the API and files; a redirect to the login form for pages."""
    if path.startswith("/api/") or "/files/" in path or scope["method"] not in SAFE_METHODS:
        body = json.dumps({"error": "login needed: send Authorization: Bearer <token> "
                                    "(SPARKLE_UI_TOKEN)"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"www-authenticate", b'Bearer realm="sparkle"'),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    query = scope.get("query_string", b"").decode("latin-1")
    target = quote(path + (f"?{query}" if query else ""), safe="")
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", f"/login?next={target}".encode()),
                            (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})

"""Webhook requests: the signed JSON POST of a notification, and how a receiver checks it.

Each request carries these headers (docs/SECURITY.md, "Webhooks", shows a receiver):

- ``X-Sparkle-Id``: the notification's id, the same on every retry (deduplicate by it);
- ``X-Sparkle-Event``: ``run.succeeded``, ``run.failed``, ``run.cancelled``...;
- ``X-Sparkle-Timestamp``: when this attempt was sent, in whole seconds since the epoch;
- ``X-Sparkle-Signature``: ``sha256=<hex>``, the HMAC-SHA256 with ``SPARKLE_WEBHOOK_SECRET``
  of ``<timestamp>.<body>`` (the timestamp header's text, a full stop, the raw body bytes);
  sent only when a secret is set.

Redirects are not followed (a POST must not turn into a GET somewhere else): a 3xx counts as
a failed attempt, like any answer outside 2xx, a timeout or a refused connection.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from sparkle import __version__

#: Header names.
ID_HEADER = "X-Sparkle-Id"
EVENT_HEADER = "X-Sparkle-Event"
TIMESTAMP_HEADER = "X-Sparkle-Timestamp"
SIGNATURE_HEADER = "X-Sparkle-Signature"

#: Seconds a receiver should accept between a request's timestamp and its own clock.
DEFAULT_TOLERANCE_SEC = 300.0

#: Characters of a receiver's answer kept in a failed delivery's error.
MAX_ANSWER_CHARS = 200


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Sparkle-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of
    ``<timestamp>.<body>`` keyed with ``secret``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                      hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, body: bytes, timestamp: str, signature: str,
           tolerance_sec: float = DEFAULT_TOLERANCE_SEC, now: float | None = None) -> bool:
    """What a receiver does: the signature matches (compared in constant time) and the
    timestamp is within ``tolerance_sec`` of ``now`` (a replayed old request is refused)."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - sent) > tolerance_sec:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def check_url(url: str) -> str:
    """``url`` if it is an ``http``/``https`` URL with a host.

    Raises:
      ValueError: any other URL (``file:``, ``ftp:``, no host...).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown_url(url)!r} is not an http:// or https:// URL")
    return url


def shown_url(url: str) -> str:
    """The URL as logs and the timeline show it: scheme, host and port only (the path or
    query of a webhook URL is often its secret, as in Slack's)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True)
class Answer:
    """How one POST went."""

    ok: bool
    #: The HTTP status, None when there was no answer.
    status: int | None
    #: Why it failed (None when ok).
    error: str | None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects())


def post(url: str, body: bytes, notification_id: str, event: str, secret: str | None,
         timeout_sec: float) -> Answer:
    """POST ``body`` (JSON) to ``url``, signed when ``secret`` is set. Never raises for a
    network or HTTP failure: the answer says what happened."""
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"sparkle-motion/{__version__}",
        ID_HEADER: notification_id,
        EVENT_HEADER: event,
        TIMESTAMP_HEADER: timestamp,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=timeout_sec) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        answer = exc.read(MAX_ANSWER_CHARS).decode("utf-8", "replace").strip()
        exc.close()
        return Answer(False, exc.code, f"HTTP {exc.code}" + (f": {answer}" if answer else ""))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Answer(False, None, f"{type(exc).__name__}: {reason}")
    if 200 <= status < 300:
        return Answer(True, status, None)
    return Answer(False, status, f"HTTP {status}")


def webhook_urls(value: str | None) -> list[str]:
    """The URLs of ``SPARKLE_WEBHOOK_URL`` (comma-separated).

    Raises:
      ValueError: one is not an http(s) URL.
    """
    return [check_url(part.strip()) for part in (value or "").split(",") if part.strip()]

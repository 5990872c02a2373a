"""The layout of ``runs/<run_id>/manifest.json``: the seed contract's ``RunManifest``.

The file is ``{"run_id": ..., "events": [StageEvent, ...]}``, valid JSON at every moment:
each event is added by writing the whole file anew under a temporary name and renaming it
into place (:func:`sparkle.atomic.write_bytes`), so a reader, or a worker killed mid-write,
sees the old file or the new one. Sparkle writes it one event per line::

    {"run_id":"the-run","events":[
    {"run_id":"the-run","stage":"script","status":"begin",...},
    {"run_id":"the-run","stage":"script","status":"success",...}
    ]}

so that adding an event is a byte-level splice (the events already there are not parsed
again), and a reader can parse only the events added since it last read the file. A
manifest in any other layout (re-indented by a tool, or written by an older Sparkle) is
read as JSON and rewritten in this layout with the next event. (Compact JSON holds no raw
newline, so a line is exactly one event.)

This module only encodes and decodes bytes; :mod:`sparkle.run` reads and writes them.
"""

from __future__ import annotations

import json
from typing import Any

#: How the file ends: the last event's line, then this.
TAIL = b"\n]}\n"


def header(run_id: str) -> bytes:
    """The first line of ``run_id``'s manifest, without its newline."""
    return b'{"run_id":' + json.dumps(run_id).encode("utf-8") + b',"events":['


def empty(run_id: str) -> bytes:
    """A manifest with no events."""
    return header(run_id) + TAIL


def encode(run_id: str, records: list[bytes]) -> bytes:
    """A manifest of ``records`` (each one event as compact JSON, without a newline)."""
    if not records:
        return empty(run_id)
    return header(run_id) + b"\n" + b",\n".join(records) + TAIL


def as_lines(data: bytes, run_id: str) -> bytes | None:
    """The events of a manifest in Sparkle's layout, one per line, each line ending in a
    newline (the form :mod:`sparkle.history_cache` parses); None when ``data`` is in another
    layout (or names another run)."""
    head = header(run_id)
    if not data.startswith(head + b"\n") or not data.endswith(TAIL):
        return None
    body = data[len(head) + 1:len(data) - len(TAIL)]
    if not body:
        return b""
    return body.replace(b",\n", b"\n") + b"\n"


def append(data: bytes, record: bytes) -> bytes:
    """``data`` (a manifest in Sparkle's layout) with one more event, ``record``."""
    front = data[:len(data) - len(TAIL)]
    return front + (b"\n" if front.endswith(b"[") else b",\n") + record + TAIL


def raw_events(data: bytes) -> list[Any] | None:
    """The ``events`` of a manifest in any layout, as parsed JSON; None when ``data`` is not
    a JSON object with an ``events`` list."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    events = document.get("events") if isinstance(document, dict) else None
    return events if isinstance(events, list) else None


def record(event: Any) -> bytes:
    """One parsed event as compact JSON (no raw newline), for :func:`encode`."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

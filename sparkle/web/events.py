"""Live updates as server-sent events: a run's manifest, followed; the runs on a page, watched.

``GET /api/runs/{run_id}/events`` sends one ``manifest`` event per event in the run's
manifest (``manifest.json``, then the ``manifest.jsonl`` of a run an older Sparkle wrote),
its data the event as written (so kinds this version does not know pass through), its id
the number of events up to it: a reconnecting ``EventSource`` sends that back as
``Last-Event-ID`` and continues where it stopped. The manifest is looked at every
:data:`POLL_SEC` (a ``stat``; read only when it changed: it is replaced whole on every
event), which keeps an event's way to an open page well under a second on local and
network file systems alike (inotify does not see writes made on another NFS client).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from sparkle import manifest
from sparkle.runlayout import LEGACY_LOG_FILE, MANIFEST_FILE

#: Seconds between looks at a followed manifest or watched runs.
POLL_SEC = 0.2

#: Seconds between keep-alive comments on an idle stream (proxies close silent streams).
KEEPALIVE_SEC = 15.0

#: Largest manifest file followed (a real run's is well under a megabyte); a larger one is
#: not read, and its stream stays quiet.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def sse(data: str, event: str | None = None, event_id: str | None = None) -> bytes:
    """One server-sent event."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size > MAX_MANIFEST_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def read_events(run_dir: str) -> list[Any] | None:
    """The run's events as written (parsed JSON, any kind): ``manifest.json``'s, then those
    of an older Sparkle's ``manifest.jsonl`` (a line cut short by a crash is skipped, as
    the run store's readers skip it). None when the manifest cannot be read just now."""
    found: list[Any] = []
    data = _read(f"{run_dir}/{MANIFEST_FILE}")
    if data is not None:
        events = manifest.raw_events(data)
        if events is None:
            return None  # (replaced whole, never half written: a hand edit; look again)
        found.extend(events)
    legacy = _read(f"{run_dir}/{LEGACY_LOG_FILE}")
    for line in (legacy or b"").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


async def follow_manifest(run_dir: str, start: int,
                          poll: float = POLL_SEC) -> AsyncIterator[bytes]:
    """Server-sent events for each manifest event after the first ``start``, forever (the
    response ends it when the client goes away)."""
    paths = (f"{run_dir}/{MANIFEST_FILE}", f"{run_dir}/{LEGACY_LOG_FILE}")
    sent = max(0, start)
    seen: tuple[object, ...] | None = None
    quiet_since = time.monotonic()
    yield b"retry: 1000\n\n"
    while True:
        now = tuple(_identity(path) for path in paths)
        if now != seen:
            events = await anyio.to_thread.run_sync(read_events, run_dir)
            if events is not None:
                seen = now
                if len(events) < sent:  # rewritten by hand, shorter: start over
                    sent = 0
                    yield sse("{}", "reset", "0")
                for number, event in enumerate(events[sent:], start=sent + 1):
                    quiet_since = time.monotonic()
                    yield sse(json.dumps(event), "manifest", str(number))
                sent = len(events)
        if time.monotonic() - quiet_since > KEEPALIVE_SEC:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"
        await anyio.sleep(poll)


async def watch(look: Callable[[], dict[str, object]],
                poll: float = POLL_SEC * 2) -> AsyncIterator[bytes]:
    """A ``change`` event whenever ``look()`` (cheap identities of what a page shows)
    answers differently from the time before, forever."""
    before = await anyio.to_thread.run_sync(look)
    quiet_since = time.monotonic()
    yield b"retry: 1000\n\n"
    while True:
        await anyio.sleep(poll)
        now = await anyio.to_thread.run_sync(look)
        changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
        before = now
        if changed:
            quiet_since = time.monotonic()
            yield sse(json.dumps({"changed": changed}), "change")
        elif time.monotonic() - quiet_since > KEEPALIVE_SEC:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"

"""Live updates as server-sent events: a run's manifest, followed; the runs on a page, watched.

``GET /api/runs/{run_id}/events`` sends one ``manifest`` event per line appended to the run's
manifest, its data the event as written (so kinds this version does not know pass through),
its id the manifest offset after it: a reconnecting ``EventSource`` sends that back as
``Last-Event-ID`` and continues where it stopped. The manifest is looked at every
:data:`POLL_SEC` (an ``fstat``; read only when it grew), which keeps an event's way to an
open page well under a second on local and network file systems alike (inotify does not
see writes made on another NFS client).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable

import anyio

from sparkle.statuscache import MANIFEST_FILE

#: Seconds between looks at a followed manifest or watched runs.
POLL_SEC = 0.2

#: Seconds between keep-alive comments on an idle stream (proxies close silent streams).
KEEPALIVE_SEC = 15.0

#: Longest manifest line passed on; a longer one is skipped (a real event is < 4 KiB).
MAX_LINE_BYTES = 256 * 1024


def sse(data: str, event: str | None = None, event_id: str | None = None) -> bytes:
    """One server-sent event."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def _read_from(path: str, offset: int) -> tuple[bytes, int]:
    """Bytes of the file at ``path`` after ``offset``, and its size (-1: unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b"", -1
    try:
        size = os.fstat(fd).st_size
        if size <= offset:
            return b"", size
        return os.pread(fd, size - offset, offset), size
    finally:
        os.close(fd)


#: The last line of ``manifest.json`` (:data:`sparkle.manifest.TAIL`): not an event, and
#: replaced when the next event is added.
MANIFEST_END = b"]}"


async def follow_manifest(run_dir: str, start: int,
                          poll: float = POLL_SEC) -> AsyncIterator[bytes]:
    """Server-sent events for each manifest line after byte ``start``, forever (the
    response ends it when the client goes away). ``manifest.json`` holds one event per line
    (:mod:`sparkle.manifest`), each but the last followed by a comma; its first and last
    lines are not events."""
    path = f"{run_dir}/{MANIFEST_FILE}"
    offset = max(0, start)
    pending = b""
    quiet_since = time.monotonic()
    yield b"retry: 1000\n\n"
    while True:
        data, size = _read_from(path, offset + len(pending))
        if 0 <= size < offset + len(pending):  # rewritten by hand: start over
            offset, pending = 0, b""
            yield sse("{}", "reset", "0")
            continue
        pending += data
        while b"\n" in pending:
            line, _, rest = pending.partition(b"\n")
            if line.strip() == MANIFEST_END:
                # (the end of manifest.json, rewritten with the next event: read again
                # from here; that event's line follows the comma added to the one before)
                pending = b""
                break
            pending = rest
            offset += len(line) + 1
            text = line.decode("utf-8", "replace").strip().removesuffix(",")
            if not text or len(line) > MAX_LINE_BYTES or text.endswith("["):
                continue  # (a blank line, or the manifest's first line: no event)
            try:
                event = json.loads(text)
            except ValueError:
                continue  # a line cut short by a crash: the manifest's readers skip it too
            quiet_since = time.monotonic()
            yield sse(json.dumps(event), "manifest", str(offset))
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

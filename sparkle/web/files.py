"""Serving a run's files (keyframes, clips, audio, the movie) with HTTP ranges.

Only a regular file inside that run's folder is ever served: the path is taken apart into
names, each must be a plain name (no ``..``, ``.``, empty part, NUL or backslash) and each
is opened relative to the one before with ``O_NOFOLLOW``, so no symbolic link is followed
anywhere, whatever the path looked like before the URL was decoded. The file is served
from the descriptor that was checked, never opened again by name.

Ranges: one ``bytes=`` range answers 206 with ``Content-Range`` (browsers seek in a movie
that way); an unsatisfiable one 416; several ranges are answered with the whole file (a
server may ignore ``Range``).
"""

from __future__ import annotations

import collections
import io
import mimetypes
import os
import stat
import threading
from collections.abc import AsyncIterator

import anyio
from starlette.responses import Response, StreamingResponse

#: Bytes read per chunk when streaming a file.
CHUNK_BYTES = 256 * 1024

#: Content types served inline; anything else is a download (``attachment``), so an HTML or
#: SVG file that found its way into a run folder cannot run script in the dashboard's origin.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4",
                "video/webm", "audio/wav", "audio/x-wav", "audio/mpeg", "audio/ogg",
                "application/json", "text/plain")

#: Types of the run's own files that :mod:`mimetypes` may not know.
EXTRA_TYPES = {".jsonl": "text/plain", ".wav": "audio/wav", ".mp4": "video/mp4",
               ".txt": "text/plain", ".srt": "text/plain", ".log": "text/plain"}


#: Longest side of a thumbnail (``?thumb=1``), in pixels.
THUMB_PIXELS = 192

#: Thumbnails kept in memory (about 5 KiB each), by the identity of their source file.
THUMB_CACHE = 512

_thumbs: collections.OrderedDict[tuple[int, ...], bytes] = collections.OrderedDict()
_thumbs_lock = threading.Lock()


class NotServable(Exception):
    """The path names no regular file inside the run folder."""


def open_inside(folder: str, relative: str) -> tuple[int, os.stat_result]:
    """Open ``relative`` under ``folder`` without following any link; return the open
    descriptor of the regular file and its ``stat``.

    Raises:
      NotServable: an unsafe path, a link, a missing or non-regular file.
    """
    if not relative or "\0" in relative or "\\" in relative or relative.startswith("/"):
        raise NotServable(relative)
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise NotServable(relative)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(folder, flags | os.O_DIRECTORY)
    except OSError:
        raise NotServable(relative) from None
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        os.close(fd)
        raise NotServable(relative) from None
    os.close(fd)
    info = os.fstat(leaf)
    if not stat.S_ISREG(info.st_mode):
        os.close(leaf)
        raise NotServable(relative)
    return leaf, info


def content_type(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    return EXTRA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one byte range ``header`` asks for as ``(first, last)`` inclusive; None for the
    whole file (no header, several ranges, a malformed one); ``"unsatisfiable"``."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, dash, last_text = header[6:].strip().partition("-")
    if not dash:
        return None
    try:
        if not first_text:  # the last N bytes
            count = int(last_text)
            if count <= 0:
                return "unsatisfiable"
            return max(0, size - count), size - 1 if size else -1
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first >= size:
        return "unsatisfiable"
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)


async def _chunks(fd: int, first: int, last: int) -> AsyncIterator[bytes]:
    try:
        position = first
        while position <= last:
            size = min(CHUNK_BYTES, last - position + 1)
            data = await anyio.to_thread.run_sync(os.pread, fd, size, position)
            if not data:
                break
            position += len(data)
            yield data
    finally:
        os.close(fd)


def file_response(fd: int, info: os.stat_result, name: str, range_header: str | None,
                  method: str = "GET") -> Response:
    """The response serving the open file ``fd`` (closed by the response)."""
    size = info.st_size
    kind = content_type(name)
    etag = f'"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"'
    headers = {
        "accept-ranges": "bytes",
        "etag": etag,
        "cache-control": "no-cache",
        "last-modified": _http_date(info.st_mtime),
    }
    if kind.split(";")[0] not in INLINE_TYPES:
        headers["content-disposition"] = f'attachment; filename="{_ascii(name)}"'
        headers["content-security-policy"] = "sandbox"
    wanted = parse_range(range_header, size)
    if wanted == "unsatisfiable":
        os.close(fd)
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    first, last, status = 0, size - 1, 200
    if isinstance(wanted, tuple):
        first, last = wanted
        status = 206
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    headers["content-length"] = str(max(0, last - first + 1))
    if method == "HEAD" or size == 0:
        os.close(fd)
        return Response(status_code=status, headers=headers, media_type=kind)
    return StreamingResponse(_chunks(fd, first, last), status_code=status, headers=headers,
                             media_type=kind)


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                   for c in os.path.basename(name))


def _http_date(timestamp: float) -> str:
    from email.utils import formatdate

    return formatdate(timestamp, usegmt=True)


def thumbnail(fd: int, info: os.stat_result) -> bytes | None:
    """A small JPEG of the image open as ``fd`` (the runs page shows fifty of them: the
    keyframes themselves weigh 100 KiB or more each), or None when it is not an image
    Pillow reads safely. Kept in memory by the file's identity; ``fd`` stays open."""
    from PIL import Image

    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    with _thumbs_lock:
        if key in _thumbs:
            _thumbs.move_to_end(key)
            return _thumbs[key]
    try:
        with os.fdopen(os.dup(fd), "rb") as handle, Image.open(handle) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and image.width * image.height > limit:
                return None
            image.draft("RGB", (THUMB_PIXELS * 2, THUMB_PIXELS * 2))
            image.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    data = out.getvalue()
    with _thumbs_lock:
        _thumbs[key] = data
        if len(_thumbs) > THUMB_CACHE:
            _thumbs.popitem(last=False)
    return data

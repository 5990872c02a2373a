"""Crash-safe file writes: a reader sees the old file or the new one, never half of either.

JSON goes through a temp file in the same folder, flush, fsync, ``os.replace`` and an fsync
of the folder. Media files are produced under a temporary name (``temp_path_for``) and
renamed into place only when complete, so a half-written file never looks finished; before
a stage's success is recorded, the engine flushes the files it reports (:func:`sync_changed`),
so that a record that survives a power cut never vouches for media that did not.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sparkle import slots, unique


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entry table so a rename inside it survives a power loss."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with slots.waiting_on_disk():
            os.fsync(fd)
    finally:
        os.close(fd)


#: File times come from a coarse clock that runs a few milliseconds behind ``time.time()``:
#: :func:`sync_changed` takes a file changed this long before its ``since`` as changed after.
CLOCK_SLACK_SEC = 1.0


def sync_changed(paths: Collection[Path], since: float, root: Path) -> int:
    """Flush to disk every file among ``paths`` (resolved) changed since ``since`` (a
    ``time.time()``), then every folder between those files and ``root`` (included) that
    changed since. Returns how many files were flushed.

    A file counts as changed by its ``ctime``, which nothing can set back: a copy that keeps
    its source's ``mtime`` (``shutil.copy2``) and a file renamed into place both have a new
    one. Only regular files are flushed (opening a FIFO would block); missing ones are
    skipped. Folders go deepest first, so that a new folder's entry in its parent is
    flushed after its own entries.
    """
    since -= CLOCK_SLACK_SEC
    root = Path(os.path.realpath(root)) if paths else root
    folders: set[Path] = set()
    flushed = 0
    for path in dict.fromkeys(paths):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_ctime < since:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            with slots.waiting_on_disk():
                os.fsync(fd)
        finally:
            os.close(fd)
        flushed += 1
        folders.update(p for p in path.parents if p == root or root in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(folder).st_ctime >= since:
                fsync_dir(folder)
    return flushed


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically; with ``durable``, also survive a power loss.

    Without ``durable`` the rename is still atomic (a crashed process leaves the old file
    or the new one) but the OS may lose the write in a power cut; for records whose loss
    is harmless, it saves two fsyncs.
    """
    folder, name = os.path.split(os.fspath(path))
    folder = folder or "."
    # Not mkstemp: it makes 0600 files. State files follow the umask like the media beside
    # them, so a team sharing a runs folder by group permissions can read checkpoints.
    tmp, fd = _create_temp(folder, name)
    try:
        try:
            write_all(fd, data)
            if durable:
                with slots.waiting_on_disk():
                    os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(folder)


def _create_temp(folder: str, name: str) -> tuple[str, int]:
    """Create a new temp file for ``name`` in ``folder`` (made if missing): path and fd.

    The name is random, not secret (:mod:`sparkle.unique`: no system call, where
    ``secrets`` would ask the kernel), and ``O_EXCL`` catches a clash.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for _ in range(100):
        tmp = f"{folder}/.{name}.{unique.hex_token(48)}.tmp"
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
    raise FileExistsError(f"no free temp name for {name!r} in {folder!r} after 100 tries")


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte of ``data`` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_json(
    path: str | Path, value: BaseModel | dict[str, Any] | list[Any], durable: bool = True
) -> None:
    """Write a model or plain JSON value to ``path`` atomically (indented, UTF-8)."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    else:
        text = json.dumps(value, indent=2, sort_keys=True)
    write_bytes(path, (text + "\n").encode("utf-8"), durable)


@contextlib.contextmanager
def temp_path_for(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; rename it onto ``path`` on success.

    The temp name keeps the suffix (``.clip.mp4.tmp-123.mp4``) so tools such as ffmpeg that
    pick a format from the extension still work. On error the temp file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

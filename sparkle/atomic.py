"""Crash-safe file writes: a reader sees the old file or the new one, never half of either.

JSON goes through a temp file in the same folder, flush, fsync, ``os.replace`` and an fsync
of the folder. Media files are produced under a temporary name (``temp_path_for``) and
renamed into place only when complete, so a half-written file never looks finished; before
a stage's success is recorded, the engine flushes the files it reports (:func:`sync_outputs`),
so that a record that survives a power cut does not vouch for media that did not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sparkle import turn, unique
from sparkle.infrastructure import naming

log = logging.getLogger(__name__)


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entry table so a rename inside it survives a power loss."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: File times come from a coarse clock: :func:`sync_outputs` takes a file changed this
#: long before ``since`` as changed after.
CLOCK_SLACK_SEC = 1.0


def sync_outputs(paths: Collection[Path], root: Path, *, named_before: Collection[Path] = (),
                 since: float = 0.0) -> int:
    """Flush to disk what a stage reports, before its success is recorded: each path in
    ``paths`` (inside ``root``, as named, symlinks not resolved), each in ``named_before``
    (paths the run's refs named before this attempt) changed since ``since`` (a ``ctime``:
    the engine passes that of ``asset_refs.json``, its last save, so the file system's
    clock is compared with itself), and the folders between them and ``root``, included.
    Returns how many files were flushed.

    Every path new to the refs is flushed, not only those written by this attempt: a retry
    may reuse what an attempt that failed (and flushed nothing) wrote. Those named before
    were flushed by the stage that named them, unless they changed since (by ``ctime``,
    which nothing can set back). A symlink is flushed as its target, and both the folders
    on the way to the link and those on the way to the target are; a folder is flushed
    with the regular files directly inside it (not those further down). Missing paths and
    anything else (a FIFO, a socket, a device) are skipped, as is a file that cannot be
    opened (logged). Folders go deepest first, so a new folder's entry in its parent is
    flushed after its own entries.

    Raises:
      OSError: a flush failed (``EIO``, ``ENOSPC``); the message names the file.
    """
    since -= CLOCK_SLACK_SEC
    chosen = list(paths)
    for path in named_before:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ctime >= since:
                chosen.append(path)
    if not chosen:
        return 0
    with turn.away():  # (the flushes wait on the disk: sparkle.turn)
        return _sync(chosen, root)


def _sync(chosen: list[Path], root: Path) -> int:
    real_root = Path(os.path.realpath(root))
    folders: dict[str, int] = {}  # real path -> depth
    done: set[str] = set()  # folders flushed already

    def folders_up(path: Path, top: Path) -> None:
        for folder in path.parents:
            if folder != top and top not in folder.parents:
                break
            real = os.path.realpath(folder)
            folders[real] = real.count("/")

    flushed = 0
    for path in dict.fromkeys(chosen):
        real = Path(os.path.realpath(path))  # (as the system resolves it: `link/..` too)
        # (normalised only to walk up: `a/../../r1/x` must not reach above the run folder)
        folders_up(Path(os.path.normpath(path)), root)
        folders_up(real, real_root)
        kind = _flush(real)
        if kind == "folder":
            done.add(str(real))
            with os.scandir(real) as entries:
                inside = [Path(e.path) for e in entries if e.is_file(follow_symlinks=False)]
            flushed += sum(_flush(p) == "file" for p in inside)
        elif kind == "file":
            flushed += 1
    for folder in sorted(folders.keys() - done, key=folders.__getitem__, reverse=True):
        _flush(Path(folder))
    return flushed


def _flush(path: Path) -> str | None:
    """fsync ``path``: "file" or "folder" when flushed, None when skipped."""
    fd = None
    try:
        # (non-blocking: a FIFO put there would otherwise block the open for good)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return None
        try:
            os.fsync(fd)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot flush {path} to disk: {exc.strerror}") from exc
        return "file" if stat.S_ISREG(mode) else "folder"
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as exc:
        log.warning("cannot open %s to flush it to disk (%s); a power cut may lose it",
                    path, exc.strerror)
        return None
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # (a socket cannot be opened)
            raise
        return None
    finally:
        if fd is not None:
            os.close(fd)


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
    # (an error of os.write or os.fsync names no file: the one being written is named;
    # the flushes wait on the disk: away from the engine's turn, sparkle.turn)
    with naming(path), (turn.away() if durable else contextlib.nullcontext()):
        tmp, fd = create_temp(folder, name)
        try:
            try:
                write_all(fd, data)
                if durable:
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


def create_temp(folder: str, name: str) -> tuple[str, int]:
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

"""Settling a claimed file: its move out of ``.claimed/`` into ``processed/``, or into
``rejected/`` beside its error record.

A settled file never replaces another file of its name (it takes ``name-1``, ...), and a
settling repeated after a crash finds its own earlier copy instead of making a second.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sparkle import atomic
from sparkle.errors import Problem
from sparkle.inbox_names import ERROR_SUFFIX, candidate_names

#: ``os.link`` errors meaning "no hard link here" (a folder, a filesystem without links).
_LINK_UNSUPPORTED: Final = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS}
)


def received_at(claimed: Path) -> str:
    """When the file was claimed (its ctime: the claim rename sets it), ISO 8601 UTC."""
    try:
        when = os.lstat(claimed).st_ctime
    except OSError:
        when = time.time()
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


def reject(claimed: Path, rejected_dir: Path, name: str, problems: list[Problem],
           received: str) -> Path:
    """Move ``claimed`` into ``rejected_dir`` as ``name`` beside its error record
    ``<name>.error.json`` (the file's name, when it was received, and ``problems``).

    Returns:
      Where the file was placed (its record is that name plus :data:`ERROR_SUFFIX`).

    Raises:
      OSError: the file or its record could not be written; it stays claimed.
    """
    record = {
        "file": name,
        "received_at": received,
        "errors": [{"path": p.path, "message": p.message} for p in problems],
    }

    def write_record(dest: Path) -> None:
        atomic.write_json(dest.with_name(dest.name + ERROR_SUFFIX), record)

    return place(claimed, rejected_dir, name, before_release=write_record,
                 record_suffix=ERROR_SUFFIX)


def place(
    claimed: Path,
    folder: Path,
    name: str,
    before_release: Callable[[Path], None] | None = None,
    record_suffix: str | None = None,
) -> Path:
    """Move ``claimed`` into ``folder`` as ``name`` (``name-1``, ... when taken).

    A hard link reserves the name without ever replacing a file, then the claim is
    removed; ``before_release`` runs in between. A link to the same file found there is
    ours from before a crash and is reused, so a retry never makes a second copy. A
    symlink is moved as itself (never followed). Where hard links cannot be made (a
    folder, a filesystem without them, another user's file under
    ``protected_hardlinks``), a placeholder created with ``O_EXCL`` reserves the name
    instead and the claim is renamed over it. With ``record_suffix``, a name is taken
    only if the name with that suffix (its error record's) is free as well.

    Returns:
      Where the file now is.

    Raises:
      OSError: it could not be moved; it stays claimed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = candidate_names(name)
    while True:
        dest = folder / next(names)
        if record_suffix is not None and os.path.lexists(
                dest.with_name(dest.name + record_suffix)) and not os.path.lexists(dest):
            continue  # (the record's name is another file's: never write over it)
        try:
            os.link(claimed, dest, follow_symlinks=False)
        except FileExistsError:
            if not _same_file(claimed, dest):
                continue
        except OSError as exc:
            if exc.errno not in _LINK_UNSUPPORTED:
                raise
            if not _reserve(claimed, dest):
                continue
            if before_release is not None:
                before_release(dest)
            os.rename(claimed, dest)
            return dest
        if before_release is not None:
            before_release(dest)
        os.unlink(claimed)
        return dest


def _reserve(claimed: Path, dest: Path) -> bool:
    """Reserve ``dest`` for ``claimed`` without a hard link; False when it is taken.

    A regular placeholder naming the claim is created with ``O_EXCL`` (a placeholder of
    ours left by a crash is reused). A claimed folder, which cannot be renamed over a file,
    takes a free name as it is: renaming a folder never replaces a file.
    """
    if stat.S_ISDIR(os.lstat(claimed).st_mode):
        return not os.path.lexists(dest)
    marker = f"sparkle inbox: reserved for {claimed.name}\n".encode()
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        try:
            fd = os.open(dest, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            return os.read(fd, len(marker) + 1) == marker
        finally:
            os.close(fd)
    try:
        atomic.write_all(fd, marker)
    finally:
        os.close(fd)
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

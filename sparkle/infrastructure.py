"""Infrastructure failures: the storage under Sparkle's own bookkeeping fails, not a stage.

A full disk (``ENOSPC``, ``EDQUOT``), a read-only file system (``EROFS``), a permission
taken away (``EACCES``, ``EPERM``) or a failing disk or lost share (``EIO``) met while the
engine writes a checkpoint, an event, the asset refs or a new run folder says nothing about
the stage: running the adapter again cannot help, and counting it as an attempt would fail
a good stage. Such an ``OSError`` becomes an :class:`InfrastructureError` whose message
names the file, the cause and the file system it lives on (its mount point, type and free
space), so an operator knows which disk to look at.

What happens next is the caller's business: the engine backs off and sends the stage again
(``sparkle serve``, ``sparkle worker``), and the foreground ``sparkle run`` stops with exit
code 3 and the command that resumes the run once the cause is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from sparkle.errors import SparkleError

#: errno values that mean the storage failed rather than the work: the disk or the quota is
#: full, the file system is read-only, access was taken away, or the device fails.
INFRASTRUCTURE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)

#: What to do about each kind of failure, by errno.
_ADVICE = {
    errno.ENOSPC: "free some space there",
    errno.EDQUOT: "free some space or raise the quota there",
    errno.EROFS: "make it writable (remount it read-write) or choose another folder",
    errno.EACCES: "give this user write access or choose another folder",
    errno.EPERM: "give this user write access or choose another folder",
    errno.EIO: "check the disk or the network share",
}


class InfrastructureError(SparkleError):
    """The storage under the engine's bookkeeping failed (see the module docstring).

    ``path`` is the file or folder being used, ``errno`` the cause, ``advice`` what to do.
    """

    def __init__(self, message: str, path: str | None, code: int | None, advice: str) -> None:
        super().__init__(message)
        self.path = path
        self.errno = code
        self.advice = advice


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError of the storage (or already an InfrastructureError)."""
    if isinstance(exc, InfrastructureError):
        return True
    return isinstance(exc, OSError) and exc.errno in INFRASTRUCTURE_ERRNOS


def from_os_error(exc: OSError, doing: str = "cannot write", path: str | Path | None = None
                  ) -> InfrastructureError:
    """The InfrastructureError for ``exc``, met while ``doing`` something with ``path``
    (default: the file the OSError names).

    The message reads ``cannot write PATH: No space left on device (ENOSPC) on the file
    system mounted at /srv (ext4, 12.0 KB free of 20.0 GB)``.
    """
    where = os.fspath(path) if path is not None else _filename(exc)
    code = exc.errno
    cause = exc.strerror or str(exc)
    name = errno.errorcode.get(code, "") if code is not None else ""
    text = f"{doing} {where}: {cause}" if where else f"{doing}: {cause}"
    if name:
        text += f" ({name})"
    if where:
        text += f" on {describe_file_system(where)}"
    advice = _ADVICE.get(code or 0, "check the storage")
    return InfrastructureError(text, where, code, advice)


def _filename(exc: OSError) -> str | None:
    name = exc.filename
    if name is None:
        return None
    return os.fsdecode(name) if isinstance(name, bytes | str) else str(name)


@contextlib.contextmanager
def bookkeeping(doing: str = "cannot write", path: str | Path | None = None) -> Iterator[None]:
    """Turn an OSError of the storage raised inside the block into an InfrastructureError;
    other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in INFRASTRUCTURE_ERRNOS:
            raise
        raise from_os_error(exc, doing, path) from exc


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Re-raise an OSError raised inside the block that names no file (``os.write``,
    ``os.fsync``) as the same error naming ``path``, so that whoever reports it can say
    which file it was."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc


def mount_point(path: str | Path) -> str:
    """The mount point of the file system holding ``path`` (or its nearest existing
    parent)."""
    current = os.path.abspath(os.fspath(path))
    while not os.path.exists(current) and current != os.path.dirname(current):
        current = os.path.dirname(current)
    while not os.path.ismount(current):
        current = os.path.dirname(current)
    return current


def _file_system_type(mount: str) -> str | None:
    """The type of the file system mounted at ``mount`` (Linux: from /proc/self/mounts)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            found = None
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[1].replace("\\040", " ") == mount:
                    found = fields[2]  # (the last mount on a point is the visible one)
            return found
    except OSError:
        return None


def describe_file_system(path: str | Path) -> str:
    """``the file system mounted at /srv (ext4, read-only, 12.0 KB free of 20.0 GB)``: where
    ``path`` lives, to name the disk in a message. Best effort: what cannot be learned is
    left out."""
    mount = mount_point(path)
    details = []
    kind = _file_system_type(mount)
    if kind:
        details.append(kind)
    try:
        stats = os.statvfs(mount)
    except OSError:
        pass
    else:
        if stats.f_flag & os.ST_RDONLY:
            details.append("read-only")
        free, size = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
        details.append(f"{human_bytes(free)} free of {human_bytes(size)}")
    extra = f" ({', '.join(details)})" if details else ""
    return f"the file system mounted at {mount}{extra}"


def human_bytes(count: int) -> str:
    """``count`` bytes as ``512 B``, ``12.0 KB``, ``3.4 GB`` (powers of 1024)."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover (the loop returns)

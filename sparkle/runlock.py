"""The run's lock file: in embedded mode, one process at a time works a run.

Embedded mode keeps its leases in an in-process fakeredis, which other processes cannot
see: two ``sparkle run`` (or two ``sparkle serve``) on one runs folder would each work the
same run. So an embedded process also holds an advisory POSIX lock (``lockf``) on
``<run>/.lease`` while it works the run: a stage holds it for as long as the run's lease,
and ``sparkle run`` for the whole run. The kernel frees it the moment the holder dies,
however it dies (``kill -9`` included), so nothing waits for a TTL.

The lock belongs to the process (POSIX locks do), so this module keeps one open file per
locked run and counts the holders inside the process; threads of one process are kept
apart by the in-process lease, as before. The holder writes who it is into the file
(pid, host, command, since), so another process can say who works the run; whether the
file is locked is asked of the kernel (``F_GETLK``), never by taking the lock, so looking
never makes a worker find the run busy.

Limits: the lock excludes processes on one machine. On a network file system (NFS) POSIX
locks go through the NFS lock manager, which is only as reliable as that service; several
machines on one runs folder want Redis mode (``SPARKLE_REDIS_URL``), whose lease this
lock does not replace and is not used with.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sparkle.runlayout import LEASE_FILE

#: Bytes of the command line recorded in the lock file.
MAX_COMMAND_CHARS = 200

#: ``struct flock`` on Linux (x86-64, arm64): l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = "hhxxxxqqixxxx"


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lock (as it wrote into the lock file)."""

    pid: int
    host: str
    command: str
    since: float

    def describe(self) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(self.since)) if self.since else "?"
        command = f" (`{self.command}`)" if self.command else ""
        return f"pid {self.pid} on {self.host}{command}, since {since}"


class _Held:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.count = 1


_lock = threading.Lock()
_held: dict[str, _Held] = {}


def _path(run_dir: Path | str) -> str:
    # One name per file, however the run folder was named (relative, through a link): the
    # process must never open the file a second time under another name, since closing
    # any descriptor of a file drops the process's POSIX locks on it.
    return f"{os.path.realpath(run_dir)}/{LEASE_FILE}"


def acquire(run_dir: Path | str) -> bool:
    """Take the run's lock for this process, or add a holder when it has it already.

    Returns False at once when another process holds it. Every True must be matched by a
    :func:`release`. Raises OSError when the run folder cannot be written.
    """
    path = _path(run_dir)
    with _lock:
        held = _held.get(path)
        if held is not None:
            held.count += 1
            return True
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # (safe: this process holds no lock on the file)
            return False
        _held[path] = _Held(fd)
    _write_holder(fd)
    return True


def release(run_dir: Path | str) -> None:
    """Drop one holder; the last one frees the lock (closing the file frees it)."""
    path = _path(run_dir)
    with _lock:
        held = _held.get(path)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[path]
        with contextlib.suppress(OSError):
            os.ftruncate(held.fd, 0)
        os.close(held.fd)


def held_here(run_dir: Path | str) -> bool:
    """Whether this process holds the run's lock."""
    with _lock:
        return _path(run_dir) in _held


def intact(run_dir: Path | str) -> bool:
    """The fencing check: this process holds the lock, and on the file the run folder
    has now (a run folder removed or replaced meanwhile has another file, unlocked)."""
    path = _path(run_dir)
    with _lock:
        held = _held.get(path)
        if held is None:
            return False
        try:
            mine, now = os.fstat(held.fd), os.stat(path)
        except OSError:
            return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def other_holder(run_dir: Path | str) -> Holder | None:
    """Who holds the run's lock when another process does; None when it is free, when
    this process holds it, or when the run folder has no lock file."""
    path = _path(run_dir)
    with _lock:  # (while this process opens and closes the file, it takes no lock on it)
        if path in _held:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            pid = _locking_pid(fd)
            if pid is None:
                return None
            return _read_holder(fd, pid)
        finally:
            os.close(fd)


def _locking_pid(fd: int) -> int | None:
    """The pid of the process holding a write lock on the file (``F_GETLK``), or None."""
    if sys.platform != "linux":  # pragma: no cover - the struct layout is Linux's
        return _locking_pid_by_trying(fd)
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    # (F_GETLK asks for a write lock's conflicts: needs no write access to the file)
    reply = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    kind, _, _, _, pid = struct.unpack(_FLOCK, reply)
    return None if kind == fcntl.F_UNLCK else pid


def _locking_pid_by_trying(fd: int) -> int | None:  # pragma: no cover - not Linux
    """Elsewhere: a shared lock tried for a moment (a stage starting then may find the
    run busy and leave it; the process that looked then sends it again)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return 0
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return None


def _write_holder(fd: int) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:MAX_COMMAND_CHARS]
        if sys.argv and sys.argv[0] else "",
        "since": round(time.time(), 3),
    }
    data = json.dumps(record).encode()
    with contextlib.suppress(OSError):  # (who holds it is for messages only)
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def _read_holder(fd: int, pid: int) -> Holder:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or (pid and data.get("pid") != pid):
        # Written by the holder just after it took the lock: not there yet. The kernel's
        # pid is the truth (0 where it was not asked).
        data = {}
    return Holder(pid=pid or int(data.get("pid", 0)), host=str(data.get("host", "this host")),
                  command=str(data.get("command", "")), since=float(data.get("since", 0.0)))

"""Running ffmpeg: finding the binary, running it, and classifying how it failed.

A failure that retrying can cure (out of disk, memory or files, killed by a signal, timed
out) raises :class:`FFmpegResourceError`, a transient stage error; any other failure
raises :class:`FFmpegError`, a permanent one. Both carry the command and the last lines of
ffmpeg's stderr. A disk failure is raised with an ``OSError`` naming the file as its cause,
so the engine sees the run folder's disk failing through the adapter.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sparkle.adapters.run_files import TRANSIENT_ERRNOS, os_error
from sparkle.atomic import temp_path_for
from sparkle.errors import PermanentStageError, TransientStageError
from sparkle.infrastructure import describe_file_system

#: Seconds one ffmpeg call may run before it is killed (a TransientStageError).
FFMPEG_TIMEOUT_SEC = float(os.environ.get("SPARKLE_FFMPEG_TIMEOUT_SEC", "600"))

#: Lines of ffmpeg's stderr quoted in an error message.
STDERR_TAIL_LINES = 15

#: ffmpeg exits with its negative error code, ``AVERROR(errno)`` = ``-errno``, which the
#: system reports as ``256 - errno`` (228 is ``ENOSPC``). The errno values read back from an
#: exit code: those of system calls ffmpeg makes. Others are left alone, because ffmpeg's own
#: error tags land in the same range (``AVERROR_INVALIDDATA`` exits with 183), and 255 is
#: also its exit after a signal.
FFMPEG_EXIT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.ENOMEM,
     errno.EMFILE, errno.ENFILE, errno.ENOENT, errno.EFBIG, errno.EAGAIN, errno.EINVAL,
     errno.EPIPE}
)

#: Of those, the errno values that are about the disk: the message then names the file
#: system of the file ffmpeg was writing (or reading).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})

#: ffmpeg stderr phrases that mean "out of a resource".
_TRANSIENT_STDERR = (
    "No space left on device",
    "Cannot allocate memory",
    "Too many open files",
    "Resource temporarily unavailable",
)


class FFmpegError(PermanentStageError):
    """ffmpeg exited with an error: the input or the command is wrong; retrying will not help."""

    def __init__(self, message: str, command: Sequence[str], stderr_tail: str) -> None:
        self.command = list(command)
        self.stderr_tail = stderr_tail
        super().__init__(message)


class FFmpegResourceError(TransientStageError):
    """ffmpeg ran out of a resource, was killed by a signal or timed out: retrying can help."""

    def __init__(self, message: str, command: Sequence[str], stderr_tail: str) -> None:
        self.command = list(command)
        self.stderr_tail = stderr_tail
        super().__init__(message)


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (from imageio-ffmpeg; ``IMAGEIO_FFMPEG_EXE`` overrides it)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())



def exit_errno(returncode: int) -> int | None:
    """The errno an ffmpeg exit code stands for (228 → ``ENOSPC``), or None (see
    :data:`FFMPEG_EXIT_ERRNOS`)."""
    if not 128 < returncode < 255:
        return None
    code = 256 - returncode
    return code if code in FFMPEG_EXIT_ERRNOS else None


def exit_meaning(returncode: int, args: Sequence[str] = ()) -> str | None:
    """What an ffmpeg exit code means when it carries an errno: ``No space left on device
    (ENOSPC, exit 228)``, followed for a disk error by the file system of the file in
    ``args``' last position (ffmpeg's output), e.g. ``on the file system mounted at /srv
    (ext4, 0 B free of 20.0 GB)``. None for other exit codes."""
    code = exit_errno(returncode)
    if code is None:
        return None
    text = f"{os.strerror(code)} ({errno.errorcode[code]}, exit {returncode})"
    target = _output_file(args)
    if code in _DISK_ERRNOS and target is not None:

        text += f" writing {target} on {describe_file_system(target)}"
    return text


def _disk_cause(returncode: int, args: Sequence[str]) -> OSError | None:
    """The OSError a disk failure of ffmpeg stands for, naming the file it was writing (its
    last argument), or None. Raised as the cause of the ffmpeg error, it lets the engine
    see the run folder's disk failing (:mod:`sparkle.infrastructure`) through the adapter."""
    code = exit_errno(returncode)
    target = _output_file(args)
    if code not in _DISK_ERRNOS or target is None:
        return None
    return OSError(code, os.strerror(code), target)


def _output_file(args: Sequence[str]) -> str | None:
    """The file an ffmpeg command writes: its last argument, unless that is ``-`` (a pipe)
    or a URL such as ``pipe:1``."""
    target = args[-1] if args else ""
    if not target or target == "-" or re.match(r"[a-z]+:", target):
        return None
    return target


def stderr_tail(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def run_ffmpeg(
    args: Sequence[str],
    *,
    doing: str,
    timeout: float = FFMPEG_TIMEOUT_SEC,
    check: bool = True,
) -> tuple[int, str]:
    """Run ffmpeg with ``args`` and return its exit code and stderr.

    Parameters:
      args: arguments after ``ffmpeg -nostdin -hide_banner -y``.
      doing: what the call does, for error messages ("encoding clips/s1.mp4").
      timeout: seconds before ffmpeg is killed.
      check: raise FFmpegError on an ordinary non-zero exit code; without it the caller
        reads the exit code (resource failures raise either way).

    Raises:
      FFmpegResourceError: timeout, killed by a signal, or out of disk, memory or files.
      FFmpegError: any other failure when ``check`` is true.
    """
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-y", *args]
    try:
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raw = exc.stderr if isinstance(exc.stderr, bytes) else b""
        tail = stderr_tail(raw.decode("utf-8", "replace"))
        raise FFmpegResourceError(
            f"ffmpeg timed out after {timeout:g} s while {doing}\n"
            f"command: {shlex.join(command)}\n{tail}",
            command,
            tail,
        ) from None
    except OSError as exc:
        raise os_error(exc, f"cannot start ffmpeg while {doing}") from exc
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode == 0:
        return proc.returncode, stderr
    tail = stderr_tail(stderr)
    meaning = exit_meaning(proc.returncode, args)
    resource = exit_errno(proc.returncode) in TRANSIENT_ERRNOS | {errno.EIO}
    if meaning is not None and (resource or check):
        # (said first: the last lines of stderr are often an encoder's statistics, and the
        # one line saying "No space left on device" lies above them)
        kind = FFmpegResourceError if resource else FFmpegError
        error = kind(
            f"ffmpeg failed: {meaning} while {doing}\ncommand: {shlex.join(command)}\n{tail}",
            command,
            tail,
        )
        raise error from _disk_cause(proc.returncode, args)
    if proc.returncode < 0 or any(phrase in stderr for phrase in _TRANSIENT_STDERR):
        cause = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"out of a resource (exit {proc.returncode})"
        )
        raise FFmpegResourceError(
            f"ffmpeg {cause} while {doing}\ncommand: {shlex.join(command)}\n{tail}",
            command,
            tail,
        )
    if not check:
        return proc.returncode, stderr
    raise FFmpegError(
        f"ffmpeg failed (exit {proc.returncode}) while {doing}\n"
        f"command: {shlex.join(command)}\n{tail}",
        command,
        tail,
    )


def ffmpeg_to_file(args: Sequence[str], out: Path, *, doing: str) -> None:
    """Run ffmpeg writing to a temp sibling of ``out``, then rename it onto ``out``.

    ``args`` is everything but the output path. A half-written file never has the final
    name, and an OSError of the file system is classified like any other.
    """
    try:
        with temp_path_for(out) as tmp:
            run_ffmpeg([*args, str(tmp)], doing=doing)
    except OSError as exc:
        raise os_error(exc, f"cannot write {out}") from exc


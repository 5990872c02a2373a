"""Small file systems for tests of a full disk and a read-only folder.

A real one where the test may mount (``mount -t tmpfs``, as root with CAP_SYS_ADMIN); where
it may not (an unprivileged CI), a test double: ``os.write`` raising ENOSPC for the files
of a folder while a marker file is there (:data:`ENOSPC_DOUBLE`), or a folder without write
permission for the read-only cases. Tests say which one they got.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

#: Name of the marker file that makes the ENOSPC double fail writes (remove it: space is back).
FULL_MARKER = ".disk-full"

#: Python run before ``sparkle.cli.main`` in a child process when no tmpfs can be mounted:
#: ``os.write`` to a checkpoint under ``$SPARKLE_TEST_FULL_DIR`` raises ENOSPC while
#: ``$SPARKLE_TEST_FULL_DIR/.disk-full`` exists. (Checkpoints only: the run folder itself
#: can still be made, as on a disk with a few KB left.)
ENOSPC_DOUBLE_SETUP = f"""
import errno, os, sys
_full = os.environ["SPARKLE_TEST_FULL_DIR"]
_write = os.write
def write(fd, data):
    try:
        target = os.readlink(f"/proc/self/fd/{{fd}}")
    except OSError:
        target = ""
    if (target.startswith(_full) and "/checkpoints/" in target
            and os.path.exists(os.path.join(_full, {FULL_MARKER!r}))):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _write(fd, data)
os.write = write
"""

#: :data:`ENOSPC_DOUBLE_SETUP`, then the ``sparkle`` command line (arguments after ``-c``).
ENOSPC_DOUBLE = ENOSPC_DOUBLE_SETUP + """
from sparkle.cli import main
sys.argv[0] = "sparkle"
main()
"""

#: :data:`ENOSPC_DOUBLE_SETUP`, then the ``dramatiq`` command line (its worker processes are
#: forked, so they inherit the double).
ENOSPC_DOUBLE_DRAMATIQ = ENOSPC_DOUBLE_SETUP + """
from dramatiq.cli import main
sys.argv[0] = "dramatiq"
sys.exit(main())
"""


def mount_tmpfs(folder: Path, size: str, read_only: bool = False) -> bool:
    """Mount a tmpfs of ``size`` (``"1m"``) on ``folder``; False when not allowed here."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, check=False)
    return done.returncode == 0


def remount(folder: Path, read_only: bool) -> None:
    subprocess.run(["mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(folder)],
                   check=True, capture_output=True)


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[bool]:
    """A tmpfs on ``folder`` for the block, unmounted after; yields whether it was mounted."""
    mounted = mount_tmpfs(folder, size)
    try:
        yield mounted
    finally:
        if mounted:
            unmount(folder)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Write a filler file in ``folder`` until its file system has about ``leave_bytes``
    free. Returns the filler (remove it to give the space back)."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    block = 1 << 16
    with open(filler, "wb", buffering=0) as out:
        remaining = max(0, free - leave_bytes)
        try:
            while remaining > 0:
                remaining -= out.write(b"\0" * min(block, remaining))
        except OSError:
            pass
    return filler

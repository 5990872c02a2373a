"""An adapter's files in the run folder: reading a recorded reference, recording a written
file, and what an ``OSError`` met on the way means for the stage.
"""

from __future__ import annotations

import errno
from pathlib import Path

from sparkle.errors import PermanentStageError, TransientStageError

#: errno values that mean "out of a resource": retrying later can help.
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN}
)


def os_error(exc: OSError, doing: str) -> TransientStageError | PermanentStageError:
    """Classify an OSError met while ``doing`` something: resource errors are transient."""
    kind = TransientStageError if exc.errno in TRANSIENT_ERRNOS else PermanentStageError
    return kind(f"{doing}: {exc}")


def require_file(run_dir: Path, relative: str | None, what: str) -> Path:
    """Resolve ``relative`` inside ``run_dir`` and check the file exists.

    Raises:
      PermanentStageError: the reference is missing, escapes the run folder, or the file
        does not exist; the message names the file and what produces it.
    """
    if not relative:
        raise PermanentStageError(f"missing prerequisite: no {what} recorded in asset refs")
    root = run_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise PermanentStageError(f"{what} {relative!r} lies outside the run folder {root}")
    if not path.is_file():
        raise PermanentStageError(f"missing prerequisite: {what} {path} does not exist")
    return path


def relative_to_run(run_dir: Path, path: Path) -> str:
    """``path`` relative to ``run_dir`` as a posix string, for AssetRefs."""
    return path.resolve().relative_to(run_dir.resolve()).as_posix()

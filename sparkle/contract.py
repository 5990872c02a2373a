"""What the seed contract lets an adapter hand back, put into the form Sparkle stores.

The contract (``../shared/seed-contract.md``) lets a stage store in ``asset_refs`` "file
paths, URIs"; its own example stores ``str(run_dir / 's1_start.png')``, an absolute path.
Sparkle's run folders keep every path relative to the run folder (a runs folder can be
moved or mounted elsewhere), so :func:`relative_refs` turns an absolute path inside the
run folder into a relative one, keeps URIs as they are, and refuses anything outside the
run folder with an error naming the stage and the path.

The contract also has a stage write its own ``checkpoints/<stage>.json``. The engine
writes that file itself, before and after the adapter runs, so its record is the one that
stands; :func:`engine_recorded` tells the engine's success checkpoint from one an adapter
wrote during an attempt whose outcome the engine never recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

from sparkle.errors import UnsafePathError
from sparkle.schemas import AssetRefs, Checkpoint, StageEvent

#: Metadata keys every success checkpoint written by the engine carries (since its first
#: version): an adapter's own checkpoint carries what the adapter put there.
ENGINE_SUCCESS_KEYS = ("adapter", "attempt")


def is_uri(path: str) -> bool:
    """Whether ``path`` names a remote asset (``scheme://...``) rather than a file."""
    return "://" in path


def relative_refs(refs: AssetRefs, run_dir: Path, stage: str) -> AssetRefs:
    """``refs`` with every local path relative to ``run_dir`` (changed in place).

    Raises:
      UnsafePathError: a path lies outside the run folder (absolute, or relative with
        ``..``); the message names the stage, the field and the path.
    """
    base = os.path.realpath(run_dir)

    def fix(path: str, field: str) -> str:
        if is_uri(path):
            return path
        if "\0" in path:
            raise UnsafePathError(f"stage {stage} stored {field} = {path!r}: contains a NUL byte")
        full = os.path.realpath(os.path.join(base, path))  # (an absolute path stays itself)
        if full != base and not full.startswith(base + os.sep):
            raise UnsafePathError(
                f"stage {stage} stored {field} = {path!r}, which resolves outside run folder "
                f"{str(run_dir)!r}: an adapter must store paths inside run_dir (relative, or "
                "absolute under it) or URIs"
            )
        if not os.path.isabs(path):
            return path
        # (as the adapter named it, relative to the run folder as it was given: a symbolic
        # link inside the run folder stays a link, like a relative path's would)
        named = os.path.abspath(path)
        given = os.path.abspath(run_dir)
        if named.startswith(given + os.sep):
            return named[len(given) + 1:]
        return os.path.relpath(full, base)

    for shot_id, shot in refs.shots.items():
        for name in ("start_frame", "end_frame", "raw_clip", "final_video_clip"):
            value = getattr(shot, name)
            if value:
                setattr(shot, name, fix(value, f"shots[{shot_id!r}].{name}"))
        shot.dialogue_audio = [fix(p, f"shots[{shot_id!r}].dialogue_audio[{i}]")
                               for i, p in enumerate(shot.dialogue_audio)]
    for key, value in refs.extras.items():
        refs.extras[key] = fix(value, f"extras[{key!r}]")
    return refs


#: The events of an attempt, and the reset that ends a stage's history: the last of these
#: says what a stage's checkpoint should be (a redrive or a cancel changes nothing there).
ATTEMPT_EVENTS = ("begin", "success", "fail", "reset")


def engine_recorded(checkpoint: Checkpoint, last: StageEvent | None) -> bool:
    """Whether a ``success`` checkpoint is one the engine recorded, judged against the
    stage's last event of :data:`ATTEMPT_EVENTS`.

    The engine writes a success checkpoint and then its success event; only a crash
    between the two leaves a success checkpoint after a ``begin`` with no outcome, and
    then the checkpoint names that attempt and carries the engine's metadata. A success
    checkpoint after a ``begin`` that does not, or after a ``fail``, was written by the
    adapter itself (as the seed contract's example stage does) during an attempt that
    did not succeed, or whose success the engine never recorded: it does not count.
    """
    if last is None or last.status not in ("begin", "fail"):
        return True
    if last.status == "fail":
        return False
    return (checkpoint.attempt == last.attempt
            and all(key in checkpoint.metadata for key in ENGINE_SUCCESS_KEYS)
            and checkpoint.metadata.get("attempt") == last.attempt)

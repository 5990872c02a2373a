"""Saving a stage's asset references as a merge, so no concurrent writer's refs are lost.

A stage reads ``asset_refs.json``, runs its adapter, and saves what the adapter returned.
Saving that whole object would drop whatever another writer saved in between (two
processes on one run before runs had a lock between processes; a worker paused past its
lease): its ``videos`` refs gone under another's ``tts`` refs, and ``lipsync`` then fails
for lack of audio. So the save is a three-way merge, under the run folder's file lock: the
file as it is now, plus exactly what this stage changed (the adapter's result against the
refs it was given). Every field this stage did not touch keeps the file's current value.
"""

from __future__ import annotations

from typing import Any

from sparkle.schemas import AssetRefs

#: Stands for a key that is absent.
_MISSING: Any = object()


def merge(base: AssetRefs, ours: AssetRefs, current: AssetRefs) -> AssetRefs:
    """``current`` with the changes from ``base`` to ``ours`` applied.

    Per shot field and per extra: changed by this stage (``ours`` differs from ``base``)
    → ours, removals included; else → current. Lists (a shot's dialogue audio) are one
    value each.
    """
    merged = _merge(base.model_dump(), ours.model_dump(), current.model_dump())
    return AssetRefs.model_validate(merged)


def _merge(base: Any, ours: Any, current: Any) -> Any:
    if ours == base:
        return current
    if isinstance(base, dict) and isinstance(ours, dict) and isinstance(current, dict):
        result = {}
        for key in {**current, **ours, **base}:
            value = _merge(base.get(key, _MISSING), ours.get(key, _MISSING),
                           current.get(key, _MISSING))
            if value is not _MISSING:
                result[key] = value
        return result
    return ours


"""One run as the dashboard shows it: status, plan, timeline, assets per shot, movie, QA.

``GET /api/runs/{run_id}`` returns :func:`run_detail`: the object ``sparkle status --json``
prints, with the events of ``sparkle timeline --json``, the plan, the asset references and
the QA report beside it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from sparkle.errors import RunNotFoundError
from sparkle.manifest import TAIL
from sparkle.runstore import Run, cached_entry
from sparkle.schemas import QAReport
from sparkle.statuscache import MANIFEST_FILE
from sparkle.timeline import timeline
from sparkle.web.files import NotServable, open_inside

#: A QA report larger than this is not shown (a real one is a few KiB).
MAX_REPORT_BYTES = 1024 * 1024

#: How an asset is shown, by file suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
AUDIO_SUFFIXES = (".wav", ".mp3", ".ogg", ".m4a")


def media_kind(path: str) -> str:
    """``image``, ``video``, ``audio`` or ``file``: the element that shows ``path``."""
    lower = path.lower()
    if lower.endswith(IMAGE_SUFFIXES):
        return "image"
    if lower.endswith(VIDEO_SUFFIXES):
        return "video"
    if lower.endswith(AUDIO_SUFFIXES):
        return "audio"
    return "file"


def run_detail(run: Run) -> dict[str, Any]:
    """Everything the run page shows, as JSON-ready data.

    Raises:
      RunNotFoundError: the folder holds no run.
    """
    size = manifest_size(run)  # (first: an event appended meanwhile is sent live too)
    entry = cached_entry(run)
    if entry is None or entry.view is None:
        raise RunNotFoundError(f"no run {run.run_id!r}")
    plan = run.plan()
    refs = run.asset_refs()
    refs_data = refs.model_dump(mode="json")
    return {
        **entry.view,
        "title": plan.title,
        "cancelled": run.cancelled,
        "plan": plan.model_dump(mode="json"),
        "asset_refs": refs_data,
        "files": file_versions(run, _referenced(refs_data)),
        "qa_report": qa_report(run, refs.extras.get("qa_report")),
        "events": [entry.as_dict() for entry in timeline(run)],
        "manifest_bytes": size,
    }


def _referenced(refs: dict[str, Any]) -> list[str]:
    paths: list[str] = []
    for shot in refs.get("shots", {}).values():
        for key in ("start_frame", "end_frame", "raw_clip", "final_video_clip"):
            if shot.get(key):
                paths.append(shot[key])
        paths.extend(shot.get("dialogue_audio") or [])
    paths.extend(value for value in refs.get("extras", {}).values() if isinstance(value, str))
    return paths


def file_versions(run: Run, paths: list[str]) -> dict[str, str]:
    """For each path that names a regular file in the run folder, a version (changes when
    the file is rewritten): asset URLs carry it, so a re-rendered frame is fetched anew."""
    found: dict[str, str] = {}
    for path in paths:
        try:
            fd, info = open_inside(str(run.dir), path)
        except NotServable:
            continue
        os.close(fd)
        found[path] = f"{info.st_ino:x}{info.st_mtime_ns:x}"
    return found


def qa_report(run: Run, path: str | None) -> dict[str, Any] | None:
    """The QA report the QA stage wrote, or None (missing, too large, invalid)."""
    if not path:
        return None
    try:
        fd, info = open_inside(str(run.dir), path)
    except NotServable:
        return None
    try:
        if info.st_size > MAX_REPORT_BYTES:
            return None
        data = os.read(fd, MAX_REPORT_BYTES)
    finally:
        os.close(fd)
    try:
        return QAReport.model_validate_json(data).model_dump(mode="json")
    except ValueError:
        try:
            loaded = json.loads(data)  # another shape than ours: show it as it is
        except ValueError:
            return None
        return loaded if isinstance(loaded, dict) else None


def manifest_size(run: Run) -> int:
    """Where a page rendered now starts following the run's manifest: its size without
    its last line (``]}``, rewritten when the next event is added)."""
    try:
        size = os.stat(f"{run.dir}/{MANIFEST_FILE}").st_size
    except OSError:
        return 0
    return max(0, size - len(TAIL) + 1)

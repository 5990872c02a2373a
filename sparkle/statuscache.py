"""The per-run cache of what ``sparkle runs`` and ``sparkle status`` show: ``.summary.json``.

Listing thousands of runs, or showing one, would read up to ten files per run and validate
each. Instead the answer is cached in the run's ``.summary.json`` together with the
identity (inode, size, mtime, ctime) of every file it was derived from, and trusted only
while all of them are unchanged. A stale, damaged or missing cache is derived again from
the run's files (:func:`sparkle.runsummary.cached_summary`) and rewritten; nothing else writes
it, and deleting it is harmless.

This module reads the cache, writes its bytes and renders a run's status with the standard
library only, so that ``sparkle status`` answers from a fresh cache without importing
pydantic or click (:mod:`sparkle.entry`): start-up is most of that command's time.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, NamedTuple, overload

from sparkle.names import STAGES, RunStatus
from sparkle.runlayout import (
    ASSET_REFS_FILE,
    CANCELLED_FILE,
    LEGACY_LOG_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    REVIEW_FILE,
    SUMMARY_FILE,
    checkpoint_file,
)

#: Version of the ``.summary.json`` format; a cache of any other version is derived again.
SUMMARY_VERSION = 4

#: The files a run's summary and status view depend on, relative to its folder. The plan
#: comes first: a folder without one is not a run.
SUMMARY_SOURCES: tuple[str, ...] = (
    PLAN_FILE,
    CANCELLED_FILE,
    MANIFEST_FILE,
    LEGACY_LOG_FILE,
    ASSET_REFS_FILE,
    *(checkpoint_file(stage) for stage in STAGES),
    REVIEW_FILE,
)
# (Not takes.json: it changes only just before ASSET_REFS_FILE is saved, by a re-roll or a
# take put back, so one more stat per run and listing would buy nothing.)

#: A file's identity: [inode, size, mtime_ns, ctime_ns], or None when it does not exist. An
#: atomic replace gives a new inode; an append or an edit in place changes size or times.
#: A list, as JSON gives it back: a cached list of identities is compared with the current
#: one as it was read, so a malformed cached list can only fail to match.
FileIdentity = list[int] | None

#: A cache file larger than this is not read (a real one is about 1 KiB).
MAX_CACHE_BYTES = 64 * 1024

#: Keys of a status view (what ``sparkle status --json`` prints) and of each of its stages.
VIEW_KEYS = ("run_id", "status", "qa_decision", "final_movie", "stages", "review", "takes")

#: Keys of a status view's ``review`` (None unless the run waits for a person or was
#: rejected).
REVIEW_KEYS = ("review_id", "stage", "reason", "requested_at", "decided_by", "note")
STAGE_KEYS = ("stage", "status", "attempt", "duration_sec", "error")


class Unidentifiable(Exception):
    """A source could not be stat-ed for a reason other than being absent: do not cache."""


class Entry(NamedTuple):
    """One run's cached answer: its summary, its status view, and the identities of the
    files both were derived from (one per entry of SUMMARY_SOURCES)."""

    sources: list[FileIdentity]
    status: RunStatus
    qa_decision: str | None
    next_stage: str | None
    #: What ``sparkle status --json`` prints; None when read without it.
    view: dict[str, Any] | None


def identities(run_dir: str) -> list[FileIdentity]:
    """The identity of every source file of the run in ``run_dir``."""
    found: list[FileIdentity] = []
    for name in SUMMARY_SOURCES:
        try:
            info = os.lstat(f"{run_dir}/{name}")  # state files are read without following
        except FileNotFoundError:
            found.append(None)
        except OSError as exc:
            raise Unidentifiable(f"{name}: {exc.strerror}") from exc
        else:
            found.append([info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns])
    return found


def fresh(run_dir: str) -> Entry | None:
    """The cached entry of the run in ``run_dir`` if every source is unchanged since it was
    written; None when it is missing, damaged, stale or the folder holds no run."""
    entry = read(f"{run_dir}/{SUMMARY_FILE}", with_view=True)
    if entry is None:
        return None
    try:
        current = identities(run_dir)
    except Unidentifiable:
        return None
    return entry if current[0] is not None and entry.sources == current else None


def read(path: str, with_view: bool) -> Entry | None:
    """The entry in the cache file at ``path``, or None unless it is exactly well-formed.

    The file is our own, but anything may have happened to it: every field is checked, and
    a symlink in its place is not followed. Without ``with_view`` the status view is not
    checked (listings do not show it) and the entry's ``view`` is None.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        data = read_all(fd, MAX_CACHE_BYTES)
        if data is None:
            return None
        head, _, tail = data.partition(b"\n")
        return _entry(json.loads(head), json.loads(tail) if with_view else None)
    except (OSError, KeyError, TypeError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)


@overload
def read_all(fd: int) -> bytes: ...


@overload
def read_all(fd: int, limit: int) -> bytes | None: ...


def read_all(fd: int, limit: int | None = None) -> bytes | None:
    """Everything left in the regular file ``fd`` (None when it exceeds ``limit`` bytes),
    read in small pieces: ``os.read`` allocates the whole size asked for, and the state
    files of a run are mostly under 8 KiB. (On a regular file a short read means the end.)"""
    chunks = [os.read(fd, 8192)]
    size = len(chunks[0])
    while len(chunks[-1]) == 8192:
        if limit is not None and size > limit:
            return None
        chunks.append(os.read(fd, 8192))
        size += len(chunks[-1])
    if limit is not None and size > limit:
        return None
    return b"".join(chunks)


def encode(entry: Entry) -> bytes:
    """The cache file's bytes for ``entry``: the summary on the first line, the status view
    on the second (its stages as rows), so a listing parses only the short first line."""
    view = entry.view
    if view is None:
        raise ValueError("an entry is written with its view")
    summary = {
        "version": SUMMARY_VERSION,
        "sources": entry.sources,
        "status": entry.status.value,
        "qa_decision": entry.qa_decision,
        "next_stage": entry.next_stage,
    }
    stored = {**view, "stages": [[item[key] for key in STAGE_KEYS] for item in view["stages"]]}
    return b"\n".join(json.dumps(part, separators=(",", ":")).encode()
                      for part in (summary, stored)) + b"\n"


def _entry(data: Any, stored_view: Any) -> Entry:
    """The entry from the parsed first line and, when wanted, the parsed second line."""
    if type(data) is not dict or set(data) != {"version", "sources", "status", "qa_decision",
                                                "next_stage"}:
        raise ValueError("not a cache entry")
    if data["version"] != SUMMARY_VERSION or type(data["version"]) is not int:
        raise ValueError("another version")
    sources = data["sources"]
    if type(sources) is not list:
        raise ValueError("sources")
    next_stage = data["next_stage"]
    if next_stage is not None and next_stage not in STAGES:
        raise ValueError("next_stage")
    return Entry(
        sources=sources,
        status=RunStatus(_text(data["status"])),
        qa_decision=_optional_text(data["qa_decision"]),
        next_stage=next_stage,
        view=None if stored_view is None else _view(stored_view),
    )


def _view(stored: Any) -> dict[str, Any]:
    """The status view from its stored form; raises ValueError unless it is well-formed."""
    if type(stored) is not dict or tuple(stored) != VIEW_KEYS:
        raise ValueError("view keys")
    _text(stored["run_id"])
    RunStatus(_text(stored["status"]))
    _optional_text(stored["qa_decision"])
    _optional_text(stored["final_movie"])
    rows = stored["stages"]
    if type(rows) is not list or len(rows) != len(STAGES):
        raise ValueError("view stages")
    stages = []
    for stage, row in zip(STAGES, rows, strict=True):
        if type(row) is not list or len(row) != len(STAGE_KEYS) or row[0] != stage:
            raise ValueError("view stage")
        _, status, attempt, duration, error = row
        _text(status)
        if type(attempt) is not int or attempt < 0:
            raise ValueError("attempt")
        if duration is not None and (type(duration) is not float or not math.isfinite(duration)):
            raise ValueError("duration_sec")
        _optional_text(error)
        stages.append(dict(zip(STAGE_KEYS, row, strict=True)))
    review = stored["review"]
    if review is not None:
        if type(review) is not dict or tuple(review) != REVIEW_KEYS:
            raise ValueError("review")
        if type(review["requested_at"]) is not float:
            raise ValueError("requested_at")
        for key in ("review_id", "stage", "reason"):
            _text(review[key])
        _optional_text(review["decided_by"])
        _optional_text(review["note"])
    takes = stored["takes"]
    if type(takes) is not dict or not all(type(k) is str and type(v) is int
                                          for k, v in takes.items()):
        raise ValueError("takes")
    return {**stored, "stages": stages}


def _text(value: Any) -> str:
    if type(value) is not str:
        raise ValueError("not a string")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


# -- rendering (shared by the fast path and the full CLI) ------------------------------------


def decision_label(decision: str) -> str:
    """How a QA decision is shown: ``escalate`` means a person must look."""
    return "needs_review" if decision == "escalate" else decision


def waited(view: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds the run has waited for a person (None unless it is awaiting review)."""
    review = view.get("review")
    if review is None or view["status"] != "awaiting_review":
        return None
    requested: float = review["requested_at"]
    return max(0.0, (time.time() if now is None else now) - requested)


def duration_text(seconds: float) -> str:
    """``42s``, ``5m07s``, ``3h12m``, ``2d04h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def render_json(view: dict[str, Any]) -> str:
    """``sparkle status --json`` (with ``waiting_sec`` while the run awaits review)."""
    seconds = waited(view)
    shown = view if seconds is None else {**view, "waiting_sec": round(seconds, 1)}
    return json.dumps(shown, indent=2)


#: Characters of a stage's error ``sparkle status`` shows on its line (the whole text is in
#: ``sparkle status --json`` and ``sparkle timeline``).
STATUS_ERROR_CHARS = 160


def first_line(error: str) -> str:
    """The first line of ``error``, cut at STATUS_ERROR_CHARS, saying where the rest is
    when anything was left out (an ffmpeg error quotes its command and stderr)."""
    lines = error.strip().splitlines() or [""]
    shown = lines[0]
    if len(shown) > STATUS_ERROR_CHARS:
        shown = shown[: STATUS_ERROR_CHARS - 1] + "…"
    if shown != error.strip():
        shown += " (whole error: --json or `sparkle timeline`)"
    return shown


def render_text(view: dict[str, Any], run_dir: str) -> str:
    """``sparkle status``: a header line, one line per stage, the time all stages took
    and, once there is one, the movie's path (in ``run_dir``, the run's folder)."""
    decision = view["qa_decision"]
    qa = f"  qa: {decision_label(decision)}" if decision else ""
    lines = [f"{view['run_id']}  {view['status']}{qa}"]
    review = view.get("review")
    seconds = waited(view)
    if review is not None and seconds is not None:
        lines.append(f"  waiting for review after {review['stage']} ({review['reason']}) for "
                     f"{duration_text(seconds)}: `sparkle approve {view['run_id']}`, "
                     f"`sparkle redo {view['run_id']} --shots ID,...` or "
                     f"`sparkle reject {view['run_id']} --note TEXT`")
    elif review is not None:
        note = f": {review['note']}" if review["note"] else ""
        lines.append(f"  rejected after {review['stage']} by {review['decided_by']}{note}")
    if view.get("takes"):
        lines.append("  takes: " + ", ".join(f"{shot} {count}"
                                             for shot, count in sorted(view["takes"].items())))
    total = 0.0
    for item in view["stages"]:
        seconds = item["duration_sec"]
        total += seconds or 0.0
        duration = f"{seconds:.2f}s" if seconds is not None else "-"
        error = f"  {first_line(item['error'])}" if item["error"] else ""
        lines.append(f"  {item['stage']:<9} {item['status']:<8} attempt {item['attempt']:<3} "
                     f"{duration:>8}{error}")
    lines.append(f"  {'total':<9} {'':<8} {'':<11} {total:>7.2f}s")
    if view["final_movie"]:
        lines.append(f"movie: {run_dir}/{view['final_movie']}")
    return "\n".join(lines)

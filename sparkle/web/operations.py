"""What the Inbox and Operations pages show: the hot folder's files, queue depths, workers,
re-drives and dead letters."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from sparkle import keys
from sparkle.errors import SparkleError
from sparkle.inbox_names import CLAIMED_DIR, ERROR_SUFFIX, PROCESSED_DIR, REJECTED_DIR
from sparkle.runstore import Run
from sparkle.web.listing import RunListing
from sparkle.web.site import Mode, Site

#: Files listed per inbox folder (the most recent).
INBOX_LIMIT = 50

#: Re-drives listed on the operations page (the most recent).
REDRIVES_LIMIT = 50

#: Only runs whose manifest changed within this many seconds are searched for re-drives.
REDRIVES_WINDOW_SEC = 24 * 3600.0

#: Runs searched for re-drives at most (those whose manifests changed last).
REDRIVES_RUNS = 200

#: An error record larger than this is not parsed.
MAX_RECORD_BYTES = 256 * 1024


@dataclass(frozen=True)
class InboxFile:
    """One file of the hot folder."""

    name: str
    #: Last modification, seconds since the epoch.
    modified: float
    size: int
    #: For a rejected file: its ``.error.json`` problems as ``{"path", "message"}``.
    problems: list[dict[str, str]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "modified": self.modified, "size": self.size,
                "problems": self.problems}


def _files(folder: Path, limit: int = INBOX_LIMIT) -> list[InboxFile]:
    found = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name.endswith(ERROR_SUFFIX):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    continue
                found.append(InboxFile(entry.name, info.st_mtime, info.st_size))
    except OSError:
        return []
    found.sort(key=lambda item: -item.modified)
    return found[:limit]


def _problems(record: Path) -> list[dict[str, str]]:
    try:
        fd = os.open(record, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return [{"path": "", "message": f"no readable {record.name}"}]
    try:
        data = os.read(fd, MAX_RECORD_BYTES)
    finally:
        os.close(fd)
    try:
        errors = json.loads(data).get("errors", [])
        return [{"path": str(item.get("path", "")), "message": str(item.get("message", ""))}
                for item in errors if isinstance(item, dict)]
    except (ValueError, AttributeError):
        return [{"path": "", "message": f"{record.name} is not a valid error record"}]


def inbox_view(inbox: Path) -> dict[str, list[InboxFile]]:
    """Files waiting in the inbox, claimed, processed and rejected (most recent first)."""
    rejected = [InboxFile(item.name, item.modified, item.size,
                          _problems(inbox / REJECTED_DIR / (item.name + ERROR_SUFFIX)))
                for item in _files(inbox / REJECTED_DIR)]
    return {
        "waiting": _files(inbox),
        "claimed": _files(inbox / CLAIMED_DIR),
        "processed": _files(inbox / PROCESSED_DIR),
        "rejected": rejected,
    }


def queue_depths(site: Site) -> dict[str, dict[str, int]] | None:
    """Messages per stage queue by state; None when no queue is reachable from here."""
    if site.backend is None:
        return None
    from sparkle.metrics import StateCollector

    collector = StateCollector(site.store, site.backend, site.settings.namespace)
    return collector.queue_depths()


def workers(site: Site) -> list[dict[str, Any]]:
    """Live dramatiq worker processes (Redis heartbeats), or this process's threads."""
    if site.mode is Mode.embedded:
        return [{"id": f"this process ({os.getpid()})", "threads": site.worker_threads,
                 "last_seen_sec": 0.0}]
    if site.mode is not Mode.redis or site.dispatcher is None:
        return []
    now_ms = time.time() * 1000
    beats: list[tuple[bytes | str, float]] = site.dispatcher.client.zrange(  # type: ignore[assignment]
        keys.heartbeats(site.settings.namespace), 0, -1, withscores=True)
    timeout = site.settings.heartbeat_timeout_ms
    return [{"id": name.decode() if isinstance(name, bytes) else str(name), "threads": None,
             "last_seen_sec": round((now_ms - score) / 1000, 1)}
            for name, score in beats if now_ms - score < timeout]


def recent_redrives(index: RunListing) -> list[dict[str, Any]]:
    """Re-drive events of the runs whose manifests changed lately, newest first."""
    cutoff = time.time() - REDRIVES_WINDOW_SEC
    recent: list[tuple[float, str]] = []
    for run_id, known in index.known():
        if len(known.identity) == 9:
            changed = known.identity[8] / 1e9
            if changed >= cutoff:
                recent.append((changed, run_id))
    recent.sort(reverse=True)
    found: list[dict[str, Any]] = []
    for _, run_id in recent[:REDRIVES_RUNS]:
        try:
            events = Run(index.store.root, run_id).events()
        except (SparkleError, OSError):
            continue
        found.extend({"run_id": run_id, "stage": event.stage, "timestamp": event.timestamp,
                      "reason": str(event.metadata.get("reason", "?")),
                      "by": event.metadata.get("by")}
                     for event in events if event.status == "redrive")
    found.sort(key=lambda item: -item["timestamp"])
    return found[:REDRIVES_LIMIT]


def operations_view(site: Site, index: RunListing) -> dict[str, Any]:
    """Everything the operations page shows (``error`` says what could not be read)."""
    view: dict[str, Any] = {"mode": site.mode.value, "queues": None, "workers": [],
                            "dead_letters": None, "error": None}
    try:
        view["queues"] = queue_depths(site)
        view["workers"] = workers(site)
        dead = site.dead_letters()
        if dead is not None:
            view["dead_letters"] = [letter.as_dict() for letter in dead.letters()]
    except redis.RedisError as exc:
        view["error"] = f"Redis: {exc}"
    view["redrives"] = recent_redrives(index)
    view["failed_runs"] = [run_id for run_id, known in index.known()
                           if known.summary is not None
                           and known.summary.status.value == "failed"][:INBOX_LIMIT]
    return view

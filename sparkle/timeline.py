"""A run's history as a timeline: every manifest event in order, with durations and details.

``sparkle timeline RUN`` prints it; ``--json`` gives the same entries as JSON.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from sparkle.runstore import Run
from sparkle.schemas import StageEvent


@dataclass(frozen=True)
class TimelineEntry:
    """One event of a run, ready to show."""

    #: Seconds since the epoch.
    timestamp: float
    #: Seconds since the run's first event.
    offset_sec: float
    stage: str
    attempt: int
    status: str
    #: For ``success``/``fail``: how long the attempt ran, in seconds.
    duration_sec: float | None
    error: str | None
    #: Re-drive reason, reset reason, worker, "no outcome"...
    detail: str
    metadata: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timeline(run: Run) -> list[TimelineEntry]:
    """The run's events in order, each with its duration and a one-line detail."""
    events = run.events()
    if not events:
        return []
    start = events[0].timestamp
    begins: dict[tuple[str, int], float] = {}
    entries = []
    for index, event in enumerate(events):
        duration = None
        if event.status == "begin":
            begins[(event.stage, event.attempt)] = event.timestamp
        elif event.status in ("success", "fail"):
            recorded = event.metadata.get("duration_sec")
            if isinstance(recorded, int | float):
                duration = float(recorded)
            elif event.status == "success" and (event.stage, event.attempt) in begins:
                duration = round(event.timestamp - begins[(event.stage, event.attempt)], 3)
        entries.append(TimelineEntry(
            timestamp=event.timestamp,
            offset_sec=round(event.timestamp - start, 3),
            stage=event.stage,
            attempt=event.attempt,
            status=event.status,
            duration_sec=duration,
            error=event.error,
            detail=_detail(event, events[index + 1:]),
            metadata=event.metadata,
        ))
    return _with_deliveries(run, entries, start)


def _with_deliveries(run: Run, entries: list[TimelineEntry], start: float
                     ) -> list[TimelineEntry]:
    """``entries`` with the run's notification deliveries (:mod:`sparkle.notifications`)
    placed among them by time, as ``notify`` entries."""
    from sparkle.notifications import deliveries

    found = deliveries(run)
    if not found:
        return entries
    for record in found:
        timestamp = float(record["timestamp"])
        error = record.get("error")
        entries.append(TimelineEntry(
            timestamp=timestamp,
            offset_sec=round(timestamp - start, 3),
            stage="notify",
            attempt=max(1, int(record.get("attempts") or 1)),
            status=str(record.get("outcome", "?")),
            duration_sec=None,
            error=str(error) if error else None,
            detail=f"{record.get('event', '?')} to {record.get('target', '?')}",
            metadata={"id": record.get("id")},
        ))
    return sorted(entries, key=lambda entry: entry.timestamp)


def _detail(event: StageEvent, later: list[StageEvent]) -> str:
    meta = event.metadata
    if event.status == "begin":
        parts = [str(meta["worker"])] if "worker" in meta else []
        ended = any(e.stage == event.stage and (e.status == "reset" or (
            e.attempt == event.attempt and e.status in ("success", "fail"))) for e in later)
        moved_on = any(e.stage == event.stage and e.status == "begin" for e in later)
        if not ended and moved_on:
            parts.append("no outcome: its worker died")
        elif not ended:
            parts.append("no outcome yet")
        return ", ".join(parts)
    if event.status == "redrive":
        reason = str(meta.get("reason", "?"))
        idle = meta.get("idle_sec")
        by = meta.get("by")
        text = reason + (f" after {float(idle):.0f}s still" if isinstance(idle, int | float)
                         else "")
        return text + (f" ({by})" if by else "")
    if event.status in ("reset", "cancel"):
        return ", ".join(f"{k}={v}" for k, v in sorted(meta.items()))
    if event.status == "fail":
        return "transient" if meta.get("transient") else ""
    return ""


def render(run: Run, entries: list[TimelineEntry], status: str) -> str:
    """The timeline as aligned text lines for a terminal."""
    lines = [f"{run.run_id}  {status}  ({len(entries)} events)"]
    if not entries:
        return "\n".join(lines)
    lines.append(f"{'time':<19} {'+sec':>8}  {'stage':<9}{'att':>3}  {'status':<8}"
                 f"{'duration':>9}  detail")
    for entry in entries:
        clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.timestamp))
        duration = f"{entry.duration_sec:.2f}s" if entry.duration_sec is not None else ""
        detail = entry.detail
        if entry.error:
            first = entry.error.splitlines()[0] if entry.error.strip() else entry.error
            detail = f"{detail}: {first}" if detail else first
        lines.append(f"{clock:<19} {entry.offset_sec:>8.2f}  {entry.stage:<9}{entry.attempt:>3}  "
                     f"{entry.status:<8}{duration:>9}  {detail}".rstrip())
    redrives = sum(1 for e in entries if e.status == "redrive")
    if redrives:
        lines.append(f"re-driven {redrives} time(s)")
    return "\n".join(lines)

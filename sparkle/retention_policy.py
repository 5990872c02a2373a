"""Retention policies: which finished runs a prune removes, and how much of each, as
``SPARKLE_RETENTION``, ``sparkle prune --status/--keep/--older-than`` write them.

Apart from :mod:`sparkle.retention` (which prunes), so that the settings can check
``SPARKLE_RETENTION`` when they are read, without importing the run store.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkle.durations import parse_duration

#: Statuses a run can be pruned in: it is finished and nothing will continue it by itself.
FINISHED_STATUSES: tuple[str, ...] = ("succeeded", "failed", "rejected", "cancelled")

#: Default age, in seconds, a finished run must reach before it is pruned (30 days).
DEFAULT_OLDER_THAN_SEC = 30 * 86400.0

#: ``--keep`` value that keeps a run's plan, history, QA report and final movie.
KEEP_FINAL = "final"


class RetentionError(ValueError):
    """A retention policy (``SPARKLE_RETENTION``, ``--status``, ``--keep``) is invalid."""


@dataclass(frozen=True)
class RetentionPolicy:
    """Which finished runs to prune, and how much of each."""

    #: Seconds since a run last changed before it may be pruned.
    older_than_sec: float = DEFAULT_OLDER_THAN_SEC
    #: Statuses pruned (a subset of :data:`FINISHED_STATUSES`).
    statuses: frozenset[str] = frozenset(FINISHED_STATUSES)
    #: Remove only intermediate media, keeping plan, history, QA report and final movie.
    keep_final: bool = False


def parse_statuses(text: str) -> frozenset[str]:
    """``succeeded,failed`` as a set of statuses.

    Raises:
      RetentionError: a status is not a finished one (unfinished runs are never pruned).
    """
    statuses = frozenset(part.strip().lower() for part in text.split(",") if part.strip())
    if not statuses:
        raise RetentionError(f"no status given; choose from {', '.join(FINISHED_STATUSES)}")
    unknown = sorted(statuses - set(FINISHED_STATUSES))
    if unknown:
        raise RetentionError(
            f"cannot prune runs in status {', '.join(unknown)}: only finished runs are pruned "
            f"({', '.join(FINISHED_STATUSES)})")
    return statuses


def parse_keep(text: str | None) -> bool:
    """Whether ``--keep`` asks to keep final results (``final``); None keeps nothing."""
    if text is None or text == "":
        return False
    if text.strip().lower() != KEEP_FINAL:
        raise RetentionError(f"--keep {text!r}: the only choice is {KEEP_FINAL!r} (keep plan, "
                             "history, QA report and final movie; remove intermediate media)")
    return True


def parse_policy(text: str) -> RetentionPolicy:
    """``SPARKLE_RETENTION``: ``30d`` (remove whole runs) or ``30d:final`` (media only).

    Raises:
      RetentionError: the text is neither.
    """
    age, _, keep = text.strip().partition(":")
    try:
        seconds = parse_duration(age)
    except ValueError as exc:
        raise RetentionError(f"{exc}; write e.g. 30d or 30d:final") from None
    if seconds <= 0:
        raise RetentionError(f"{text!r}: the age must be more than 0 (e.g. 30d)")
    return RetentionPolicy(older_than_sec=seconds, keep_final=parse_keep(keep or None))

"""The names everything else agrees on: stages, the id alphabet, run statuses.

Standard library only, so the fast path of ``sparkle status`` can use them without
importing pydantic (see :mod:`sparkle.entry`).
"""

from __future__ import annotations

import enum
import re

#: The seven stages of a run, in the order they execute.
STAGES: tuple[str, ...] = ("script", "images", "videos", "tts", "lipsync", "assemble", "qa")

#: Ids (shot, character, run) become folder and file names, so they are restricted to a
#: portable, path-safe alphabet: 1-64 characters, first a letter or digit, never "..".
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def is_safe_id(value: str) -> bool:
    """Whether ``value`` may name a run, shot or character folder."""
    return ID_RE.fullmatch(value) is not None and ".." not in value


class RunStatus(enum.StrEnum):
    """A run's status, derived from its checkpoints."""

    #: No stage has started.
    queued = "queued"
    #: Some stage started or finished and the run is not at its end.
    running = "running"
    #: A stage failed permanently; ``sparkle resume`` continues it.
    failed = "failed"
    #: Every stage succeeded.
    succeeded = "succeeded"
    #: Stopped by ``sparkle cancel``; only ``sparkle resume`` continues it.
    cancelled = "cancelled"
    #: Stopped at a review gate (or by QA's ``escalate``) until a person approves, re-rolls
    #: shots or rejects it (:mod:`sparkle.review`). Never re-driven while it waits.
    awaiting_review = "awaiting_review"
    #: A person rejected it at a review gate: finished, not an error, never re-driven.
    rejected = "rejected"

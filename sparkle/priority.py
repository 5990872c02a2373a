"""Run priorities: ``high``, ``normal`` and ``low``, and which queue a priority's messages use.

A run's priority is its plan's ``metadata.priority`` (``normal`` when absent), set in the plan,
by ``--priority`` on ``sparkle submit`` / ``sparkle run``, or by the inbox profile the plan was
dropped into. dramatiq's Redis broker keeps each queue in arrival order, so each priority
has its own queue per stage: ``sparkle.videos`` (normal: the name stays what it always was),
``sparkle.videos.high`` and ``sparkle.videos.low``. Every stage message of a run goes to its
priority's queue, so a run keeps its priority from the first stage to the last (the engine
sends the next stage on the level of the message it handled; ``kick``, the reaper and the
dead-letter replay read the run's plan). Workers consume every level and take the waiting
messages highest level first (:mod:`sparkle.workqueue`), with a guard against starving the
lower levels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

#: The priority levels, highest first.
PRIORITIES: Final = ("high", "normal", "low")

#: The level of a run whose plan names none.
NORMAL: Final = "normal"

#: The plan metadata key holding a run's priority.
METADATA_KEY: Final = "priority"

#: File in a run folder holding a priority given on the command line (``--priority``),
#: which wins over the plan's: the plan, and so the run id, stay as they were.
RUN_FILE: Final = "priority.txt"

#: dramatiq's suffixes of a queue's delay and dead-letter queues.
_DERIVED_SUFFIXES: Final = (".DQ", ".XQ")


def check_priority(value: object) -> str:
    """``value`` as a priority level.

    Raises:
      ValueError: it is not one of :data:`PRIORITIES` (the message names them).
    """
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return value.strip().lower()
    raise ValueError(f"must be one of {', '.join(PRIORITIES)} (got {json.dumps(value)})")


def queue_suffix(priority: str) -> str:
    """What a stage's queue name gets for ``priority``: nothing for normal (the queue names
    of earlier versions stay valid), else ``.high`` / ``.low``."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}; priorities are {', '.join(PRIORITIES)}")
    return "" if priority == NORMAL else f".{priority}"


def priority_of_queue(queue_name: str) -> str:
    """The priority level of a stage queue's name (its delay or dead-letter queue too)."""
    for suffix in _DERIVED_SUFFIXES:
        if queue_name.endswith(suffix):
            queue_name = queue_name[: -len(suffix)]
    for level in PRIORITIES:
        if level != NORMAL and queue_name.endswith(f".{level}"):
            return level
    return NORMAL


def from_metadata(metadata: object) -> str:
    """The priority named in a plan's metadata mapping; normal when absent or not valid
    (plans are validated when they are received: this never fails a stage)."""
    if isinstance(metadata, dict):
        try:
            return check_priority(metadata.get(METADATA_KEY, NORMAL))
        except ValueError:
            return NORMAL
    return NORMAL


def of_run_dir(run_dir: str | os.PathLike[str], plan_file: str) -> str:
    """The priority of the run in ``run_dir``: its :data:`RUN_FILE` when there is one, else
    its plan file's ``metadata.priority`` (read as plain JSON: a plan in either format keeps
    ``metadata`` at the top). Normal when unreadable."""
    try:
        with open(os.path.join(run_dir, RUN_FILE), encoding="utf-8") as handle:
            return check_priority(handle.read())
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(run_dir, plan_file), "rb") as handle:
            document = json.loads(handle.read())
    except (OSError, ValueError):
        return NORMAL
    return from_metadata(document.get("metadata") if isinstance(document, dict) else None)


def set_run_priority(run_dir: str | os.PathLike[str], level: str) -> None:
    """Give the run in ``run_dir`` the priority ``level`` (``--priority``), for every
    message sent for it from outside its chain from now on (the first stage, a resume, a
    re-drive, a replay); a chain already in flight keeps the level it was sent with."""
    from sparkle import atomic

    atomic.write_bytes(Path(run_dir) / RUN_FILE, (check_priority(level) + "\n").encode())

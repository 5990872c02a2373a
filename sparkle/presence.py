"""What the broker holds for each run: which stages have a live message, and since when
a worker holds it (read by the reaper, listed by each backend in its own way)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

#: Run id → stage → None when one of the stage's messages waits in a queue, else the
#: latest time (seconds) from which a message of it that live workers hold counts as
#: held: when the reaper first saw it held, or its ``eta`` if that is later.
Presence = dict[str, dict[str, float | None]]


def new_presence() -> Presence:
    return defaultdict(dict)


def collect(found: Presence, stage: str, body: Any, held_since: float | None) -> None:
    """Record ``body``, a message of ``stage``: waiting in a queue (``held_since`` None),
    or held by a live worker since then."""
    try:
        data = json.loads(body)
    except ValueError:
        return
    run_id = _run_id_of(data)
    if run_id is None:
        return
    stages = found[run_id]
    if held_since is None:
        stages[stage] = None
        return
    if stage in stages and stages[stage] is None:
        return  # another message of the stage waits in a queue
    options = data.get("options")
    eta = options.get("eta") if isinstance(options, dict) else None
    if isinstance(eta, int | float):  # delayed: held on purpose until then
        held_since = max(held_since, eta / 1000)
    stages[stage] = max(held_since, stages.get(stage) or 0.0)


def message_run_id(body: bytes | str) -> str | None:
    """The run id a stage message (dramatiq's JSON encoding) is for, or None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return _run_id_of(data)


def _run_id_of(data: object) -> str | None:
    args = data.get("args") if isinstance(data, dict) else None
    if isinstance(args, list) and args and isinstance(args[0], str):
        return args[0]
    return None


def text(value: object) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)

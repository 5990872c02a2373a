"""The parsed events of recently read manifests, so that reading a run's history again
parses only the lines added since.

Every stage message reads its run's whole history (:meth:`sparkle.run.Run.events`); a
history of hundreds of events would otherwise be validated again each time.
"""

from __future__ import annotations

import collections
import logging
import threading

from pydantic import TypeAdapter, ValidationError

from sparkle.schemas import StageEvent

log = logging.getLogger(__name__)

#: Validates a list of events in one call (see :func:`_parse_lines`).
_EVENT_LIST = TypeAdapter(list[StageEvent])

#: Manifests whose parsed events :class:`_Histories` keeps, per process.
HISTORY_CACHE_RUNS = 1024


def _parse_lines(run_id: str, path: str, data: bytes, start: int, end: int
                 ) -> tuple[list[StageEvent], bool]:
    """The events in ``data[start:end]`` (whole lines of the manifest at ``path``), and
    whether every line was one. Lines that are not events are reported and skipped."""
    lines = data[start:end].split(b"\n")[:-1]
    records = [line for line in lines if line.strip()]
    if not records:
        return [], True
    try:
        # All lines in one call, as one JSON array: a call per line costs more than its
        # parsing. A bad line fails the whole array, and then each line is read on its own
        # to skip only that one. (Joined records cannot parse as a different number of
        # events: a torn record leaves a bracket or a string open.)
        parsed = _EVENT_LIST.validate_json(b"[" + b",".join(records) + b"]")
        if len(parsed) == len(records):
            return parsed, True
    except ValidationError:
        pass
    events, clean = [], True
    for number, line in enumerate(lines, data.count(b"\n", 0, start) + 1):
        if not line.strip():
            continue
        try:
            events.append(StageEvent.model_validate_json(line))
        except ValidationError as exc:
            clean = False
            log.warning("run %s: %s line %d is not a stage event (%s); skipping it",
                        run_id, path, number, exc.errors(include_url=False)[0]["msg"])
    return events, clean


class Histories:
    """The events parsed from recently read manifests, by path, so that reading a run's
    history again parses only the lines appended since.

    A manifest only grows, by whole lines. The bytes a cached history was parsed from are
    compared with the new read (in memory: no system call), never assumed: a manifest
    rewritten or replaced by hand is parsed afresh. Only histories whose every line was an
    event are kept, so a damaged line is still reported on every read.
    """

    def __init__(self, capacity: int) -> None:
        self._entries: collections.OrderedDict[str, tuple[bytes, tuple[StageEvent, ...]]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self._capacity = capacity

    def parse(self, run_id: str, path: str, data: bytes) -> list[StageEvent]:
        """The events of ``data``, the manifest at ``path`` as just read. The events are
        shared with later reads: callers must not change them."""
        # Without a final newline the last line is an append still being written (or one a
        # power loss cut short, which the next append leaves on its own line): not yet news.
        end = data.rfind(b"\n") + 1
        with self._lock:
            cached = self._entries.get(path)
        start = 0
        known: tuple[StageEvent, ...] = ()
        if cached is not None and data.startswith(cached[0]):
            start, known = len(cached[0]), cached[1]
        new, clean = _parse_lines(run_id, path, data, start, end)
        events = [*known, *new]
        if clean:
            with self._lock:
                self._entries[path] = (data[:end], tuple(events))
                self._entries.move_to_end(path)
                if len(self._entries) > self._capacity:
                    self._entries.popitem(last=False)
        return events


#: The history cache of this process.
histories = Histories(HISTORY_CACHE_RUNS)

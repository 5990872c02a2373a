"""When a file dropped into the inbox is complete, and may be taken.

At once on a close-after-write or a rename into the folder, unless the file is empty or
holds JSON that stops early (a writer that reopens the file for each chunk closes it
between chunks). Otherwise (polling, files moved in from elsewhere, writers that keep
files open) once its size and mtime have not changed for ``stable_seconds``. An empty
file is never taken: it waits for its writer, however long that takes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal

from sparkle.inbox_names import PROFILE_FILE
from sparkle.logs import printable

#: The hot folder's modules log as one logger, so its log is configured in one place.
log = logging.getLogger("sparkle.inbox")

#: An empty file is never taken: a shell's ``generate > inbox/plan.json`` creates the file
#: at once and fills it when the generator is done, however long that takes. One still
#: empty after this many seconds is reported once in the log and left in the inbox.
EMPTY_WARN_SEC: Final = 60.0

#: How a file came to the inbox's attention: a close or rename (complete now), a write or a
#: creation (complete once stable), or a scan (complete once stable; an existing wait is
#: not restarted).
Notice = Literal["closed", "changed", "found"]

#: What may stand at the end of JSON cut short, after the position its parser stopped at: a
#: literal or a number begun and not finished (nothing at all, when it stopped at the end).
_PARTIAL_TOKEN: Final = re.compile(r"t(r(ue?)?)?|f(a(l(se?)?)?)?|n(u(ll?)?)?|[-+.0-9eE]*")


def json_ends_early(path: Path, max_bytes: int) -> bool:
    """Whether the file at ``path`` holds the beginning of a JSON text that stops before its
    end (a writer still at work), rather than complete or broken JSON.

    False for anything that is not a regular file of at most ``max_bytes`` that can be read:
    those are taken and judged as they are.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= max_bytes:
            return False
        data = os.read(fd, max_bytes + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            return False
        text = data[: exc.start].decode("utf-8")  # (a character cut in two at the end)
    if not text.strip():
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unterminated string"):
            return True
        return _PARTIAL_TOKEN.fullmatch(text[exc.pos:].strip()) is not None
    except (RecursionError, ValueError):
        return False
    return False


def closed_empty(path: Path) -> bool:
    """Whether ``path`` is an empty regular file: closed so, it was touched before being
    written, probably, and a close does not make it complete."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == 0


@dataclasses.dataclass
class Candidate:
    """A file waiting to be stable: its last seen size and mtime, since when (monotonic)."""

    since: float
    #: When it is next looked at (monotonic).
    due: float
    size: int = -1
    mtime_ns: int = -1
    #: Empty for longer than EMPTY_WARN_SEC: waits for a write, not for work.
    parked: bool = False
    #: Reported as empty in the log (once per file).
    warned: bool = False


#: A file looked at by :meth:`StabilityWatch.look`: its name, its candidate, its lstat
#: (None when it is gone or cannot be read).
Seen = tuple[str, Candidate, os.stat_result | None]


class StabilityWatch:
    """The files of the inbox ``folder`` waiting to be complete.

    Not thread-safe: the inbox calls every method under its lock, except :meth:`look`,
    which only reads the disk. Times are ``time.monotonic()`` values given by the caller.

    Parameters:
      folder: the inbox.
      stable_seconds: how long a file's size and mtime must be unchanged.
      rescan_interval: how often, in seconds, a file parked empty is looked at again.
    """

    def __init__(self, folder: Path, stable_seconds: float, rescan_interval: float) -> None:
        self.folder = folder
        self.stable_seconds = stable_seconds
        self.rescan_interval = rescan_interval
        #: A file was added or is due now: the check should run before its planned time.
        self.changed = False
        self._watching: dict[str, Candidate] = {}
        #: Names found stable: they were still for ``stable_seconds`` when handed on.
        self._settled: set[str] = set()

    def notice(self, name: str, how: Notice, now: float) -> bool:
        """Note that ``name`` was closed, changed or found.

        Returns:
          True when it is complete now (closed): it is no longer watched, take it.
        """
        candidate = self._watching.get(name)
        if how == "closed":
            self._watching.pop(name, None)
            return True
        if candidate is None:
            self._watching[name] = Candidate(since=now, due=now)
            self.changed = True
        elif how == "changed":
            candidate.since = now  # a write: the stability window starts again
            # (and is checked after it, not later: an empty file waited longer)
            candidate.due = min(candidate.due, now + self.stable_seconds)
            candidate.parked = False
        elif candidate.parked:
            candidate.due = now  # found again (a rescan): look at it now
            self.changed = True
        return False

    def forget(self, name: str) -> bool:
        """Stop watching ``name`` (removed or renamed away); True when it was watched."""
        self._settled.discard(name)
        return self._watching.pop(name, None) is not None

    def take_settled(self, name: str) -> bool:
        """Whether ``name`` was handed on as stable (by :meth:`judge`); forgets that."""
        settled = name in self._settled
        self._settled.discard(name)
        return settled

    def due(self, now: float) -> list[tuple[str, Candidate]]:
        """The files due for a look at ``now``; clears :attr:`changed`."""
        self.changed = False
        return [(name, c) for name, c in self._watching.items() if c.due <= now]

    def look(self, due: Iterable[tuple[str, Candidate]]) -> list[Seen]:
        """Stat the files ``due`` (without the lock: it only reads the disk)."""
        seen: list[Seen] = []
        for name, candidate in due:
            try:
                info: os.stat_result | None = os.lstat(self.folder / name)
            except FileNotFoundError:
                info = None  # removed, or renamed (the rename has its own event)
            except OSError as exc:
                log.warning("inbox: cannot stat %s (%s); the next scan retries", printable(name),
                            exc)
                info = None
            seen.append((name, candidate, info))
        return seen

    def judge(self, seen: Iterable[Seen], now: float) -> tuple[list[str], list[str]]:
        """Update the files looked at.

        Returns:
          The names now complete (no longer watched: take them), and the names found empty
          for longer than :data:`EMPTY_WARN_SEC`, for the first time (to report them).
        """
        stable_names: list[str] = []
        still_empty: list[str] = []
        for name, candidate, info in seen:
            if self._watching.get(name) is not candidate:
                continue  # taken or replaced while we looked
            if info is None or (stat.S_ISDIR(info.st_mode)
                                and os.path.isfile(self.folder / name / PROFILE_FILE)):
                del self._watching[name]  # (gone, or an inbox profile's folder)
                continue
            signature = (info.st_size, info.st_mtime_ns)
            if not stat.S_ISREG(info.st_mode):
                stable = True  # links, folders, FIFOs never complete: reject them now
            elif signature != (candidate.size, candidate.mtime_ns):
                candidate.size, candidate.mtime_ns = signature
                candidate.since = now
                candidate.parked = False
                stable = self.stable_seconds <= 0
            else:
                stable = now - candidate.since >= self.stable_seconds
            if stable and info.st_size == 0 and stat.S_ISREG(info.st_mode):
                # Never taken: its writer may not have begun (see EMPTY_WARN_SEC).
                if not candidate.parked and now - candidate.since >= EMPTY_WARN_SEC:
                    candidate.parked = True
                    if not candidate.warned:
                        candidate.warned = True
                        still_empty.append(name)
                candidate.due = (now + self.rescan_interval if candidate.parked
                                 else candidate.since + EMPTY_WARN_SEC)
                continue
            if stable:
                del self._watching[name]
                self._settled.add(name)
                stable_names.append(name)
            else:
                candidate.due = candidate.since + self.stable_seconds
        return stable_names, still_empty

    def next_due(self) -> float | None:
        """When the next file is due for a look; None when none is watched."""
        return min((c.due for c in self._watching.values()), default=None)

    def waiting(self) -> list[Candidate]:
        """The files waiting to be stable (not those parked empty: they wait for a write)."""
        return [c for c in self._watching.values() if not c.parked]

    def clear(self) -> None:
        """Stop watching every file."""
        self._watching.clear()


def report_still_empty(names: Iterable[str]) -> None:
    """Log, once per file, that a file is still empty (see :data:`EMPTY_WARN_SEC`)."""
    for name in names:
        log.warning("inbox: %s is still empty after %.0f s; it stays in the inbox until "
                    "something is written to it (remove it if it was dropped by mistake)",
                    printable(name), EMPTY_WARN_SEC)

"""Watching the inbox folder with watchdog: its events become notices of files that were
closed, changed or renamed away, and a watch that died (the folder was removed) is
restarted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from sparkle.inbox_stability import Notice

#: The hot folder's modules log as one logger, so its log is configured in one place.
log = logging.getLogger("sparkle.inbox")

#: Watchdog events the inbox reacts to (opened, closed-without-write and folder
#: modifications are dropped before they reach the handler).
_EVENT_TYPES: Final = [
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]

#: Told that a file of the inbox (by name) was closed, changed or found.
OnNotice = Callable[[str, Notice], None]
#: Told that a file of the inbox (by name) was removed or renamed away.
OnGone = Callable[[str], None]


class FolderObserver:
    """A watchdog observer on the inbox ``folder``, restarted when it dies.

    Parameters:
      folder: the inbox (its real path: events name files by it).
      on_notice, on_gone: receive the inbox's events, on the observer's thread.
      poll: watch with watchdog's ``PollingObserver`` (network shares) instead of inotify.
      poll_interval: seconds between directory snapshots when polling.
      stopping: set when the inbox stops; a dead observer is no longer restarted then.
    """

    def __init__(self, folder: Path, on_notice: OnNotice, on_gone: OnGone, *, poll: bool,
                 poll_interval: float, stopping: threading.Event) -> None:
        self.folder = folder
        self.poll = poll
        self.poll_interval = poll_interval
        self._handler = _EventHandler(folder, on_notice, on_gone)
        self._stopping = stopping
        self._observer: BaseObserver | None = None
        self._guard = threading.Lock()
        self._watched_id: tuple[int, int] | None = None

    def start(self) -> None:
        with self._guard:
            self._observer = self._start()

    def stop(self, timeout: float) -> None:
        """Stop watching (waiting up to ``timeout`` seconds); safe when not started."""
        with self._guard:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout)

    def restart_if_dead(self, prepare: Callable[[], None], timeout: float) -> bool:
        """Restart the observer when it died (the folder was removed, say): ``prepare``
        recreates the folder first. True when it was restarted (then files may have been
        missed: rescan)."""
        with self._guard:
            observer = self._observer
            if observer is None or self._stopping.is_set():
                return False
            # Our open owner lock pins the folder, so its removal sends no IN_DELETE_SELF and
            # the emitter lives on, watching nothing: compare the folder's identity too.
            if (
                observer.is_alive()
                and all(e.is_alive() for e in list(observer.emitters))
                and folder_id(self.folder) == self._watched_id
            ):
                return False
            log.error(
                "inbox: the watch on %s stopped; recreating the folder and restarting",
                self.folder,
            )
            observer.stop()
            observer.join(timeout)
            prepare()
            self._observer = self._start()
        return True

    def _start(self) -> BaseObserver:
        observer: BaseObserver = (
            PollingObserver(timeout=self.poll_interval) if self.poll else Observer()
        )
        # With inotify the watch is recursive so that a claim (a rename into .claimed/) is
        # a paired move: an unpaired IN_MOVED_FROM makes watchdog hold back every later
        # event by 0.5 s. Events from sub-folders are ignored. Polling stays flat, so the
        # snapshots never list processed/.
        observer.schedule(
            self._handler, str(self.folder), recursive=not self.poll, event_filter=_EVENT_TYPES
        )
        observer.start()
        self._watched_id = folder_id(self.folder)
        return observer


class _EventHandler(FileSystemEventHandler):
    """Turns watchdog events into notices; an exception never reaches the observer."""

    def __init__(self, folder: Path, on_notice: OnNotice, on_gone: OnGone) -> None:
        super().__init__()
        self._folder = str(folder)
        self._on_notice = on_notice
        self._on_gone = on_gone

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:
            log.exception("inbox: could not handle %r; the next scan picks the file up", event)

    def _handle(self, event: FileSystemEvent) -> None:
        folder, name = os.path.split(os.fsdecode(event.src_path))
        in_inbox = folder == self._folder
        if event.event_type == EVENT_TYPE_MOVED:
            if in_inbox:
                self._on_gone(name)
            dest_folder, dest_name = os.path.split(os.fsdecode(event.dest_path))
            if dest_folder == self._folder:
                # A rename into the folder publishes a complete file (x.part -> x.json).
                self._on_notice(dest_name, "closed")
        elif not in_inbox:
            return
        elif event.event_type == EVENT_TYPE_CLOSED:
            self._on_notice(name, "closed")
        elif event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED):
            self._on_notice(name, "changed")
        elif event.event_type == EVENT_TYPE_DELETED:
            self._on_gone(name)


def folder_id(folder: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of ``folder``, None when it is missing."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_dev, info.st_ino

"""Claiming plan files, so that two watchers on one folder never both take one.

A watcher claims a file by an atomic rename into ``.claimed/`` under a name bearing its
owner id (:func:`sparkle.inbox_names.claim_name`); of two watchers renaming one file, one
wins and the other finds nothing. While alive, a watcher holds an ``flock`` on its owner
lock file in ``.claimed/``; a claim whose owner's lock is free was left by a watcher that
died, and is taken over (renamed again to the new owner, so again only one wins).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from sparkle.inbox_names import (
    CLAIMED_DIR,
    MAX_KEPT_NAME_BYTES,
    PROCESSED_DIR,
    REJECTED_DIR,
    claim_name,
    fitted_name,
    owner_lock_name,
    parse_claim_name,
    parse_owner_lock_name,
)
from sparkle.logs import printable

#: The hot folder's modules log as one logger, so its log is configured in one place.
log = logging.getLogger("sparkle.inbox")


class Claims:
    """One watcher's claims in the ``.claimed/`` folder of the inbox ``inbox_dir``, and
    the owner lock that tells other watchers this one is alive.

    Thread-safe. The owner id is made, and its lock taken, on first use (or by
    :meth:`prepare`); :meth:`release` gives them up.
    """

    def __init__(self, inbox_dir: Path) -> None:
        self.dir = inbox_dir
        self.claimed_dir = inbox_dir / CLAIMED_DIR
        self._owner: str | None = None
        self._owner_fd: int | None = None
        self._guard = threading.Lock()
        self._seq = itertools.count(1)

    @property
    def owner_id(self) -> str:
        """This watcher's id (12 hex digits), part of the name of each of its claims."""
        if self._owner is None:
            self.prepare()
        assert self._owner is not None
        return self._owner

    def prepare(self) -> None:
        """Create the folders a claim passes through (the inbox, ``.claimed/``,
        ``processed/``, ``rejected/``) where missing, and hold this watcher's owner lock
        (again, if its file was removed)."""
        for folder in (self.dir, self.claimed_dir, self.dir / PROCESSED_DIR,
                       self.dir / REJECTED_DIR):
            folder.mkdir(parents=True, exist_ok=True)
        with self._guard:
            if self._owner is None:
                self._owner = uuid.uuid4().hex[:12]
            path = self._owner_lock_path(self._owner)
            if self._owner_fd is not None:
                if os.path.exists(path):
                    return
                os.close(self._owner_fd)  # our lock file was removed: make a new one
            # Locked under a temporary name and then renamed, so no one ever sees it unlocked
            # (which would mean "dead" and let them take over our claims).
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, path)
            self._owner_fd = fd

    def release(self) -> None:
        """Remove and unlock the owner lock; the next use makes a new owner id."""
        with self._guard:
            if self._owner_fd is not None and self._owner is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._owner_lock_path(self._owner))
                os.close(self._owner_fd)
            self._owner_fd = None
            self._owner = None

    def claim(self, path: Path) -> Path | None:
        """Rename ``path`` (a file in the inbox) into ``.claimed/``.

        Returns:
          The claim, or None when another watcher took the file first (or it is gone, or
          cannot be renamed: it stays in the inbox for the next scan).
        """
        kept = fitted_name(path.name)
        if kept != path.name:
            log.warning("inbox: %s: the name is longer than %d bytes; it is kept as %s",
                        printable(path.name), MAX_KEPT_NAME_BYTES, printable(kept))
        target = self.claimed_dir / claim_name(self.owner_id, next(self._seq), kept)
        for _ in range(2):
            try:
                os.rename(path, target)
                return target
            except FileNotFoundError:
                if not os.path.lexists(path):
                    return None  # taken by another watcher, or removed
                self.prepare()  # .claimed/ itself was removed
            except OSError as exc:
                log.warning(
                    "inbox: cannot claim %s (%s); it stays in the inbox until the next scan",
                    printable(path.name),
                    exc,
                )
                return None
        return None

    def take_over_orphans(self, taken: Callable[[Path], None]) -> int:
        """Take over the claims whose watcher is gone, oldest first: each is renamed to our
        owner id (an atomic rename again: of two watchers taking over, one wins) and handed
        to ``taken``. The lock files of watchers that are gone are removed.

        Returns:
          How many claims were taken over.
        """
        me = self.owner_id
        orphans: list[tuple[int, str, str | None, str]] = []
        with os.scandir(self.claimed_dir) as listing:
            for entry in listing:
                if entry.name.startswith("."):
                    continue
                owner, name = parse_claim_name(entry.name)
                if owner == me:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                    orphans.append((mtime, entry.name, owner, name))
        alive: dict[str, bool] = {}
        count = 0
        for _, claimed, owner, name in sorted(orphans):
            if owner is not None:
                if owner not in alive:
                    alive[owner] = self.owner_alive(owner)
                if alive[owner]:
                    continue
            # (fitted: a claim left by an older version may bear a name too long to place)
            target = self.claimed_dir / claim_name(me, next(self._seq), fitted_name(name))
            try:
                os.rename(self.claimed_dir / claimed, target)
            except FileNotFoundError:
                continue  # another watcher took it over first
            except OSError as exc:
                log.warning("inbox: cannot take over the claim %s (%s); the next scan retries",
                            printable(str(claimed)), exc)
                continue
            log.info(
                "inbox: %s: finishing a claim left by %s",
                printable(name),
                f"watcher {owner}" if owner else "an unknown process",
            )
            taken(target)
            count += 1
        self._remove_dead_owner_locks(me)
        return count

    def owner_alive(self, owner: str) -> bool:
        """Whether watcher ``owner`` holds its lock (a missing lock file means gone)."""
        path = self._owner_lock_path(owner)
        try:
            fd = _open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return False
        except _NotALock:
            log.warning("inbox: %s is not a lock file (a link or other); watcher %s is taken "
                        "for gone", path, owner)
            return False
        except BlockingIOError:
            return True
        except OSError as exc:
            log.warning("inbox: cannot check watcher %s's lock %s (%s); taking it for alive",
                        owner, path, exc)
            return True
        return False

    def _owner_lock_path(self, owner: str) -> Path:
        return self.claimed_dir / owner_lock_name(owner)

    def _remove_dead_owner_locks(self, me: str) -> None:
        with os.scandir(self.claimed_dir) as listing:
            locks = [(e.name, owner) for e in listing
                     if (owner := parse_owner_lock_name(e.name)) is not None]
        for lock_name, owner in locks:
            if owner == me:
                continue
            path = self.claimed_dir / lock_name
            try:
                fd = _open_lock(path)
            except (OSError, _NotALock):
                continue  # gone, not a lock, or not ours to check: left alone
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink(missing_ok=True)  # unlinked while we hold it: no one sees it free
            except OSError:
                pass  # alive (BlockingIOError), or not ours to remove
            finally:
                os.close(fd)


class _NotALock(Exception):
    """An owner-lock name that holds no lock file (a link, a FIFO, a folder)."""


def _open_lock(path: Path) -> int:
    """Open another watcher's lock file to test its lock: read-write where allowed (over
    NFS an exclusive lock needs a file open for writing), else read-only (a lock file of
    another user, 0644 under the usual umask: a local ``flock`` needs no write access).

    Raises:
      _NotALock: the name holds something else (never followed, never blocked on).
      OSError: it could not be opened.
    """
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, os.O_RDWR | flags)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            fd = os.open(path, os.O_RDONLY | flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise _NotALock(path) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _NotALock(path)
    return fd

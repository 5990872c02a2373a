"""Claimed files held while the broker (or the runs folder) cannot take them.

A file whose processing failed for an infrastructure problem stays in ``.claimed/`` and
is retried with jittered exponential backoff until it is done; files claimed meanwhile
queue up behind it, so plans are enqueued in the order they came and a broker that is
down is not hammered. Nothing is rejected for an infrastructure problem.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import tenacity

from sparkle.inbox_intake import InfraError
from sparkle.inbox_names import CLAIMED_DIR, parse_claim_name
from sparkle.logs import printable

#: The hot folder's modules log as one logger, so its log is configured in one place.
log = logging.getLogger("sparkle.inbox")

#: Processes a claim (``True``: an earlier attempt created its run); raises
#: :class:`InfraError` while the broker cannot take it.
Process = Callable[[Path, bool], None]


@dataclasses.dataclass
class _Held:
    """A claimed file waiting for the broker. ``created``: this inbox created its run."""

    claimed: Path
    created: bool


class _Stopping(Exception):
    """Raised out of a backoff sleep when the inbox stops."""


class HeldFiles:
    """The inbox's held files, oldest first, and their retries.

    Parameters:
      cond: the inbox's condition: it guards the held files and is notified of each change
        (callers of the ``*_locked`` methods hold it).
      stopping: set when the inbox stops: a backoff sleep ends and the file stays claimed.
      process: tries a held file again.
      record: counts an outcome (``retried``, ``failed``) in the inbox's statistics.
      retry_initial, retry_max: seconds before the first retry, and at most between two.
    """

    def __init__(self, cond: threading.Condition, stopping: threading.Event, process: Process,
                 record: Callable[[str], None], *, retry_initial: float,
                 retry_max: float) -> None:
        self._cond = cond
        self._stopping = stopping
        self._process = process
        self._record = record
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._held: collections.deque[_Held] = collections.deque()

    def count_locked(self) -> int:
        """How many files are held."""
        return len(self._held)

    def clear_locked(self) -> None:
        """Forget the held files (they stay claimed for the next start)."""
        self._held.clear()

    def hold(self, claimed: Path, exc: InfraError) -> None:
        """Hold ``claimed``, whose processing raised ``exc``, behind the files held before."""
        with self._cond:
            self._held.append(_Held(claimed, exc.created))
            self._cond.notify_all()
        self._record("retried")
        name = parse_claim_name(claimed.name)[1]
        if exc.cause is None:
            log.info("inbox: %s held behind files waiting for the broker", printable(name))
        else:
            log.warning("inbox: %s held in %s (%s); retrying with backoff", printable(name),
                        CLAIMED_DIR, exc)

    def run(self) -> None:
        """The retry thread: retry the oldest held file until done, then the next, until
        the inbox stops."""
        while True:
            with self._cond:
                while not self._held and not self._stopping.is_set():
                    self._cond.wait()
                if self._stopping.is_set():
                    return
                item = self._held[0]
            try:
                self._retry_until_done(item)
            except _Stopping:
                return
            except Exception:
                self._record("failed")
                log.exception(
                    "inbox: %s failed unexpectedly; it stays in %s for the next start",
                    printable(parse_claim_name(item.claimed.name)[1]),
                    item.claimed.parent,
                )
            with self._cond:
                self._held.popleft()
                self._cond.notify_all()

    def retry_once(self) -> None:
        """Without threads: try each held file once, stopping at the first that fails."""
        with self._cond:
            items = list(self._held)
        for item in items:
            try:
                self._process(item.claimed, item.created)
            except InfraError as exc:
                item.created = exc.created
                self._record("retried")
                return
            except Exception:
                self._record("failed")
                log.exception(
                    "inbox: %s failed unexpectedly; it stays in %s",
                    printable(parse_claim_name(item.claimed.name)[1]),
                    item.claimed.parent,
                )
            with self._cond:
                self._held.remove(item)
                self._cond.notify_all()

    def _retry_until_done(self, item: _Held) -> None:
        """Process a held file, retrying infrastructure errors with backoff until it is done.

        Raises:
          _Stopping: the inbox stops; the file stays claimed.
        """
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(InfraError),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.retry_initial, max=self.retry_max, jitter=self.retry_initial
            ),
            sleep=self._backoff_sleep,
            before_sleep=functools.partial(self._log_retry, item),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    self._process(item.claimed, item.created)
                except InfraError as exc:
                    item.created = exc.created
                    raise

    def _backoff_sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stopping

    def _log_retry(self, item: _Held, state: tenacity.RetryCallState) -> None:
        self._record("retried")
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "inbox: %s still held (attempt %d: %s); next try in %.1f s",
            printable(parse_claim_name(item.claimed.name)[1]),
            state.attempt_number,
            error,
            wait,
        )

"""What ``sparkle serve`` tells the person running it, at any log level: a line when a plan
is picked up (its file and run), a line when that run ends (the movie, or the error and
the command that resumes it), and its inbox's counts when it stops.

These are the service's output, not log records: they go through ``say`` (print by
default), whatever ``--log-level`` filters.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sparkle.inbox_stats import InboxStats
from sparkle.runstore import Run, RunStatus

log = logging.getLogger(__name__)

#: Seconds between looks at the runs being watched for their end.
LOOK_EVERY_SEC = 0.5


def _print(text: str) -> None:
    print(text, flush=True)


class RunAnnouncer:
    """Says when plans are picked up and when their runs end.

    Parameters:
      resume_command: the command that resumes a run, given its id.
      say: where the lines go (one call per line).
    """

    def __init__(self, resume_command: Callable[[str], str],
                 say: Callable[[str], None] = _print, every_sec: float = LOOK_EVERY_SEC) -> None:
        self.resume_command = resume_command
        self.say = say
        self.every_sec = every_sec
        self._watched: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def picked_up(self, name: str, run: Run, created: bool) -> None:
        """A plan file became ``run`` (for :attr:`sparkle.inbox.Inbox.on_processed`)."""
        self.say(f"picked up {name} -> run {run.run_id}" + ("" if created else " (existing run)"))
        self.watch(run)

    def watch(self, run: Run) -> None:
        """Say when ``run`` ends."""
        with self._lock:
            self._watched[run.run_id] = run

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="announcer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def look(self) -> None:
        """Say which watched runs ended since the last look, and stop watching them."""
        with self._lock:
            runs = list(self._watched.values())
        for run in runs:
            try:
                line = self._ending(run)
            except Exception as exc:  # a damaged run folder must not end the announcements
                log.warning("run %s: cannot read its status (%s)", run.run_id, exc)
                line = None
            if line is not None:
                with self._lock:
                    self._watched.pop(run.run_id, None)
                self.say(line)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_sec):
            self.look()

    def _ending(self, run: Run) -> str | None:
        """The line saying how ``run`` ended, or None while it has not."""
        status = run.status()
        if status is RunStatus.succeeded:
            movie = run.asset_refs().extras.get("final_movie")
            where = f"movie {run.dir / movie}" if movie else f"in {run.dir}"
            return f"run {run.run_id} succeeded: {where}"
        if status is RunStatus.failed:
            failed = next((v for v in run.stage_views() if v.status == "failed"), None)
            what = f" at {failed.stage}: {failed.error}" if failed is not None else ""
            return (f"run {run.run_id} failed{what}; fix the cause, then "
                    f"`{self.resume_command(run.run_id)}`")
        if status is RunStatus.cancelled:
            return f"run {run.run_id} cancelled; `{self.resume_command(run.run_id)}` continues it"
        return None


def describe_stats(stats: InboxStats) -> str:
    """The inbox's counts in words: ``3 plans taken (2 new runs, 1 existing), 1 rejected``."""
    parts = [f"{stats.processed} plan(s) taken ({stats.created} new run(s), "
             f"{stats.resumed} existing)", f"{stats.rejected} rejected"]
    if stats.held:
        parts.append(f"{stats.held} held back waiting for the broker")
    if stats.failed:
        parts.append(f"{stats.failed} failed unexpectedly (kept in the inbox's .claimed/)")
    if stats.pending:
        parts.append(f"{stats.pending} not finished (taken again on the next start)")
    return ", ".join(parts)

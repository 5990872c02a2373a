"""`sparkle worker` as a child process group, and a polling wait: shared by the tests that
kill worker processes (tests/integration/test_ops.py) and scripts/bench_recovery.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent / "sparkle"


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Wait until ``condition()``; returns the ``time.time()`` at which it became true.

    Raises:
      AssertionError: still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.time()


class WorkerGroup:
    """``sparkle worker`` started in a session of its own, logging to ``log``."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.cwd = cwd
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *options: str, worker_options: Sequence[str] = (), processes: int = 2,
              threads: int = 1, wait_sec: float = 20, **env: str) -> None:
        """Start it and wait for its worker processes. ``options`` go before ``worker``,
        ``worker_options`` after it; ``env`` adds to the environment."""
        assert self.process is None
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN), "--log-level", "info", *options, "worker", "-p", str(processes),
                 "-t", str(threads), *worker_options],
                cwd=self.cwd, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for(lambda: len(self.pids()) == processes, wait_sec, "worker processes")

    def pids(self) -> list[int]:
        """The live worker processes under the supervisor."""
        if self.process is None:
            return []
        try:
            return [p.pid for p in psutil.Process(self.process.pid).children()
                    if p.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (drain) and the supervisor's exit code; SIGKILL and raise after
        ``timeout``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise
        finally:
            self.process = None

    def close(self) -> None:
        """Stop it if still running, killing whatever of its group is left."""
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)

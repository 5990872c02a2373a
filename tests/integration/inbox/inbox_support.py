"""Helpers of the hot-folder tests: valid plans, a recording enqueue, waiting."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from sparkle.runstore import Run

REPO = Path(__file__).resolve().parents[3]

LIGHTHOUSE: dict[str, Any] = json.loads(
    (REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text()
)

STABLE = 0.3


def plan(title: str = "The Lighthouse Keeper", **changes: Any) -> dict[str, Any]:
    """A valid plan (the lighthouse example) with another title and top-level changes."""
    document = copy.deepcopy(LIGHTHOUSE)
    document["title"] = title
    document.update(changes)
    return document


def plan_bytes(title: str = "The Lighthouse Keeper") -> bytes:
    return json.dumps(plan(title), indent=2).encode()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)


def names(folder: Path) -> list[str]:
    """The non-hidden names in ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


class Recorder:
    """A thread-safe fake enqueue: records each run id with the time of the call, and raises
    a Redis ConnectionError while ``down`` is set."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, float]] = []
        self.down = threading.Event()

    def __call__(self, run: Run) -> None:
        if self.down.is_set():
            raise redis.exceptions.ConnectionError("Error 111 connecting: refused (test)")
        with self.lock:
            self.calls.append((run.run_id, time.monotonic()))

    @property
    def run_ids(self) -> list[str]:
        with self.lock:
            return [run_id for run_id, _ in self.calls]

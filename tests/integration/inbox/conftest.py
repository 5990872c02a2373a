"""Fixtures of the hot-folder tests: an inbox folder, a run store, and inboxes built on
them that are stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkle.inbox import Inbox
from sparkle.runstore import Run, RunStore

from .inbox_support import STABLE


@pytest.fixture
def inbox_dir(tmp_path: Path) -> Path:
    return tmp_path / "inbox"


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


@pytest.fixture
def make_inbox(inbox_dir: Path, store: RunStore) -> Iterator[Callable[..., Inbox]]:
    """Build (and by default start) inboxes on ``inbox_dir``; all are stopped at teardown."""
    made: list[Inbox] = []

    def make(enqueue: Callable[[Run], object], *, start: bool = True, **options: Any) -> Inbox:
        settings: dict[str, Any] = {
            "stable_seconds": STABLE,
            "glob": "*.json",
            "max_plan_bytes": 1024 * 1024,
            "retry_initial": 0.05,
            "retry_max": 0.2,
        }
        settings.update(options)
        inbox = Inbox(inbox_dir, store, enqueue, **settings)
        made.append(inbox)
        if start:
            inbox.start()
        return inbox

    yield make
    for inbox in made:
        inbox.stop()

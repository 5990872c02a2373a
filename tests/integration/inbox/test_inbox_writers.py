"""The hot folder and awkward writers: a program that reopens the plan for every chunk, and
file names made to forge log lines or drive the operator's terminal. Real folders, the real
watchdog observer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sparkle.inbox import Inbox
from sparkle.inbox_stability import json_ends_early
from sparkle.runstore import Run, RunStore

PLAN = Path(__file__).resolve().parents[2] / "data" / "plans" / "lighthouse.json"


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[Inbox]:
    """A running inbox (inotify, stability wait 0.5 s, the default) recording enqueued runs."""
    enqueued: list[str] = []

    def enqueue(run: Run) -> None:
        enqueued.append(run.run_id)

    box = Inbox(tmp_path / "inbox", RunStore(tmp_path / "runs"), enqueue, stable_seconds=0.5,
                glob="*.json", max_plan_bytes=1 << 20)
    box.start()
    yield box
    box.stop()


def test_a_writer_reopening_the_file_per_chunk_is_waited_for(inbox: Inbox):
    """`>>` in a loop closes the file after every chunk: the plan is taken once, whole, not
    rejected in fragments (each closed chunk ends early, so it waits for stillness)."""
    data = PLAN.read_bytes()
    chunks = [data[i:i + 30] for i in range(0, len(data), 30)]
    assert len(chunks) > 50
    # When a program appends the plan chunk by chunk, opening and closing the file each time
    for chunk in chunks:
        with open(inbox.dir / "slow.json", "ab") as handle:
            handle.write(chunk)
        time.sleep(0.03)
    # Then it becomes one run, and nothing is rejected
    wait_until(lambda: inbox.processed == 1)
    assert inbox.wait_idle(5)
    assert inbox.rejected == 0
    assert (inbox.processed_dir / "slow.json").read_bytes() == data
    assert sorted(p.name for p in inbox.rejected_dir.iterdir()) == []


def test_json_that_ends_early_is_rejected_once_still(inbox: Inbox):
    """A writer that stops half-way (it died): once the file has been still for the
    stability wait it is judged as it is, and rejected."""
    data = PLAN.read_bytes()[:300]
    # When half a plan is written and closed, and nothing more comes
    (inbox.dir / "half.json").write_bytes(data)
    # Then it is rejected as invalid JSON, once
    wait_until(lambda: inbox.rejected == 1)
    assert inbox.wait_idle(5)
    record = json.loads((inbox.rejected_dir / "half.json.error.json").read_text())
    assert "invalid JSON" in record["errors"][0]["message"]


@pytest.mark.parametrize(("text", "expected"), [
    (b'{"title": "x", "shots": [1, 2', True),
    (b'{"title": "unterminated', True),
    (b'{"a": tru', True),
    (b'{"a": 12.', True),
    (b'{"title": "caf\xc3', True),  # a character cut in two
    (b'{"a": 1}', False),  # complete
    (b'{"a": 1} trailing', False),  # complete, then junk: broken, not early
    (b'{"a": nope', False),  # broken
    (b'\xff\xfe{"a"', False),  # not UTF-8
    (b"   ", False),
])
def test_json_ends_early(tmp_path: Path, text: bytes, expected: bool):
    path = tmp_path / "p.json"
    path.write_bytes(text)
    assert json_ends_early(path, 1 << 20) is expected


@pytest.mark.parametrize(("name", "shown"), [
    ("evil\n2026-12-06 12:00:00,000 ERROR sparkle.engine: forged.json",
     "evil\\x0a2026-12-06 12:00:00,000 ERROR sparkle.engine: forged.json"),
    ("\x1b[2J\x1b[31mred.json", "\\x1b[2J\\x1b[31mred.json"),
    ("rtl\u202egnp.json", "rtl\\u202egnp.json"),
    # (a backslash is escaped too, so that an escape cannot be forged)
    ("back\\x0aslash.json", "back\\\\x0aslash.json"),
])
def test_file_names_are_logged_with_control_characters_escaped(
        inbox: Inbox, caplog: pytest.LogCaptureFixture, name: str, shown: str):
    """A name with a newline cannot forge a log line, nor one with escape codes drive the
    terminal: every inbox log line shows them escaped."""
    caplog.set_level(logging.INFO, logger="sparkle.inbox")
    # When an invalid plan with such a name is dropped
    (inbox.dir / name).write_bytes(b'{"title": 1}')
    wait_until(lambda: inbox.rejected == 1)
    assert inbox.wait_idle(5)
    # Then it was logged escaped, and no line holds a raw control character or override
    lines = [r.getMessage() for r in caplog.records if r.name == "sparkle.inbox"]
    assert any(line.startswith(f"inbox: {shown} rejected: ") for line in lines), lines
    for line in lines:
        assert not any(ord(c) < 0x20 or c == "\u202e" for c in line), repr(line)


def test_a_full_runs_folder_holds_the_plan_instead_of_rejecting_it(
        inbox: Inbox, monkeypatch: pytest.MonkeyPatch):
    """A run folder that cannot be made (a full disk: here a test double of os.write raising
    ENOSPC) is an infrastructure problem: the plan waits in .claimed/ and becomes a run once
    there is room; it is never rejected."""
    import errno
    import os
    import threading

    full = threading.Event()
    full.set()
    write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if full.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    # When a valid plan is dropped while the runs folder's disk is full
    (inbox.dir / "plan.json").write_bytes(PLAN.read_bytes())
    # Then it is held and retried, not rejected
    wait_until(lambda: inbox.retried >= 2)
    assert inbox.rejected == 0 and inbox.processed == 0
    # When there is room again, then it becomes a run
    full.clear()
    wait_until(lambda: inbox.processed == 1)
    assert inbox.rejected == 0
    assert (inbox.processed_dir / "plan.json").exists()

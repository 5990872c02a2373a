"""Claims: two watchers on one folder never take the same file; the claims of a watcher
that died are taken over (and a live one's are not), whatever its owner lock looks like.
Real folders, real processes killed mid-way."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sparkle.inbox import Inbox
from sparkle.runstore import RunStore

from .inbox_support import REPO, Recorder, names, plan_bytes, wait_until


def test_two_watchers_on_one_folder_never_take_the_same_file(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore
) -> None:
    # Protects: the claim by atomic rename.
    # Given two running inboxes on the same folder
    first, second = Recorder(), Recorder()
    one, two = make_inbox(first), make_inbox(second)

    # When 50 plans are dropped
    for i in range(50):
        (inbox_dir / f"p{i:02d}.json").write_bytes(plan_bytes(f"Shared {i}"))
    wait_until(lambda: one.processed + two.processed == 50, what="50 processed plans")
    assert one.wait_idle(5)
    assert two.wait_idle(5)

    # Then each file was processed exactly once, by one of them
    all_ids = first.run_ids + second.run_ids
    assert len(all_ids) == 50
    assert len(set(all_ids)) == 50
    assert names(inbox_dir / "processed") == sorted(f"p{i:02d}.json" for i in range(50))
    assert len(store.runs()) == 50


CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from sparkle.inbox import Inbox
from sparkle.runstore import RunStore

inbox_dir, runs_dir, point, calls = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

class CrashingStore(RunStore):
    def create(self, plan, run_id=None):
        if point == "after-claim":
            os._exit(17)
        result = super().create(plan, run_id)
        if point == "after-run-created":
            os._exit(17)
        return result

def enqueue(run):
    with open(calls, "a") as handle:
        handle.write(run.run_id + "\\n")
    os._exit(17)  # after the enqueue, before the move to processed/

inbox = Inbox(inbox_dir, CrashingStore(runs_dir), enqueue, stable_seconds=0, glob="*.json",
              max_plan_bytes=1 << 20)
inbox.scan()
inbox.process_pending()
"""


@pytest.mark.parametrize("point", ["after-claim", "after-run-created", "after-enqueue"])
def test_a_crash_at_any_point_loses_nothing_and_duplicates_no_run(
    make_inbox: Callable[..., Inbox],
    inbox_dir: Path,
    store: RunStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    point: str,
) -> None:
    # Protects: start-up recovery of .claimed/ (the claim of a dead process is taken over).
    # Given a watcher process that dies (os._exit) at `point` while processing a plan
    inbox_dir.mkdir()
    (inbox_dir / "crash.json").write_bytes(plan_bytes("Crash Test"))
    calls = tmp_path / "calls.txt"
    child = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(inbox_dir), str(store.root), point, str(calls)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == 17, child.stderr.decode()
    assert len(names(inbox_dir / ".claimed")) == 1
    assert len(store.runs()) == (0 if point == "after-claim" else 1)
    enqueued_before_crash = calls.read_text().split() if calls.exists() else []
    assert len(enqueued_before_crash) == (1 if point == "after-enqueue" else 0)

    # When a new watcher starts
    caplog.set_level(logging.INFO, logger="sparkle.inbox")
    recorder = Recorder()
    inbox = make_inbox(recorder)
    wait_until(lambda: inbox.processed == 1, what="the crashed claim to be finished")
    assert inbox.wait_idle(5)

    # Then the plan is finished, with one run, and nothing is left claimed (nor the dead
    # watcher's lock)
    assert names(inbox.processed_dir) == ["crash.json"]
    assert len(store.runs()) == 1
    assert recorder.run_ids == [store.runs()[0].run_id]
    assert os.listdir(inbox.claimed_dir) == [f".owner-{inbox.claims.owner_id}.lock"]
    expected = "created" if point == "after-claim" else "resumed"
    assert f"crash.json -> run {store.runs()[0].run_id} ({expected})" in caplog.text


def test_a_live_watchers_claims_are_not_taken_over_until_it_stops(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore
) -> None:
    # Protects: recovery takes only the claims of watchers that are gone (owner lock free).
    # Given watcher A holding a claimed file because its broker is down
    down = Recorder()
    down.down.set()
    first = make_inbox(down)
    (inbox_dir / "held.json").write_bytes(plan_bytes())
    wait_until(lambda: first.stats().held == 1)

    # When watcher B starts and rescans often
    up = Recorder()
    second = make_inbox(up, rescan_interval=0.1)
    time.sleep(0.5)

    # Then B leaves A's claim alone
    assert up.calls == []
    assert len(names(inbox_dir / ".claimed")) == 1

    # When A stops, then B takes the claim over and finishes it
    first.stop()
    wait_until(lambda: second.processed == 1)
    assert len(up.calls) == 1
    assert len(store.runs()) == 1


def test_the_inbox_worker_survives_an_error_while_claiming(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Protects: an error while claiming (the claimed folder cannot be made again: a full
    # or read-only disk) once killed the only worker thread; later files piled up.
    recorder = Recorder()
    inbox = make_inbox(recorder)
    claim = inbox.claims.claim
    broken = threading.Event()
    broken.set()

    def claim_once_broken(path: Path) -> Path | None:
        if broken.is_set():
            broken.clear()
            raise OSError(28, "No space left on device")
        return claim(path)

    monkeypatch.setattr(inbox.claims, "claim", claim_once_broken)
    (inbox_dir / "first.json").write_bytes(plan_bytes("First"))
    wait_until(lambda: inbox.failed == 1, what="the failed claim")
    (inbox_dir / "second.json").write_bytes(plan_bytes("Second"))
    wait_until(lambda: inbox.processed == 1, what="the next file still processed")
    # And the first file was not lost: it is still in the inbox for the next scan
    assert (inbox_dir / "first.json").exists()
    inbox.scan()
    wait_until(lambda: inbox.processed == 2, what="the first file taken by a rescan")


def test_an_owner_lock_that_cannot_be_checked_counts_as_alive(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Protects: over NFS, flock(LOCK_EX) on another watcher's lock file fails with EBADF
    # (or EACCES for another user's file); that error once escaped scan() and stopped the
    # watcher from starting. Such a watcher must be taken for alive and its claims left.
    import fcntl as real_fcntl

    inbox = make_inbox(Recorder(), start=False)
    inbox.scan()  # makes the folders and our own lock
    other = "0123456789ab"
    lock = inbox.claimed_dir / f".owner-{other}.lock"
    lock.write_bytes(b"")
    claimed = inbox.claimed_dir / f"{other}-1_theirs.json"
    claimed.write_bytes(plan_bytes("Theirs"))
    flock = real_fcntl.flock

    def nfs_flock(fd: int, operation: int) -> None:
        if os.fstat(fd).st_ino == lock.stat().st_ino:
            raise OSError(9, "Bad file descriptor")
        flock(fd, operation)

    monkeypatch.setattr("sparkle.inbox_claims.fcntl.flock", nfs_flock)
    inbox.scan()  # does not raise
    assert claimed.exists() and lock.exists()


def test_a_long_named_claim_left_by_an_older_version_is_taken_over(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: a claim with a name too long to place (left by a version without name
    # fitting, whose watcher is gone) is renamed to a fitted name when taken over, instead
    # of being held forever or failing the scan.
    (inbox_dir / ".claimed").mkdir(parents=True)
    long_name = "L" * 225 + ".json"
    (inbox_dir / ".claimed" / f"0123456789ab-1_{long_name}").write_bytes(plan_bytes("Old Claim"))
    inbox = make_inbox(Recorder())
    wait_until(lambda: inbox.processed == 1, what="the old claim processed")
    [placed] = names(inbox.processed_dir)
    assert placed.startswith("L" * 100) and len(os.fsencode(placed)) <= 160


def test_another_users_lock_file_is_checked_read_only_when_it_cannot_be_opened_to_write(
    make_inbox: Callable[..., Inbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Protects: watchers of different users share a folder: a 0644 lock file of another
    # user cannot be opened read-write, and a local flock needs no write access, so the
    # check falls back to read-only instead of taking every such watcher for alive.
    import errno

    inbox = make_inbox(Recorder(), start=False)
    inbox.scan()
    other = "0123456789ab"
    lock = inbox.claimed_dir / f".owner-{other}.lock"
    lock.write_bytes(b"")
    opened: list[int] = []
    real_open = os.open

    def open_as_another_user(path: Any, flags: int, *args: Any) -> int:
        if Path(path) == lock:
            opened.append(flags & os.O_ACCMODE)
            if flags & os.O_ACCMODE == os.O_RDWR:
                raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr("sparkle.inbox_claims.os.open", open_as_another_user)
    assert inbox.claims.owner_alive(other) is False  # nobody holds it: gone
    assert opened == [os.O_RDWR, os.O_RDONLY]


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_an_owner_lock_name_holding_no_lock_file_means_that_watcher_is_gone(
    make_inbox: Callable[..., Inbox], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    kind: str
) -> None:
    # Protects: a FIFO there (opened read-only after a refused read-write open) blocked the
    # scan, and the whole watch, for good; a symlink there (never followed) counted its
    # watcher alive forever, so its claims were never taken over.
    import errno

    inbox = make_inbox(Recorder(), start=False)
    inbox.scan()
    other = "0123456789ab"
    lock = inbox.claimed_dir / f".owner-{other}.lock"
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        (tmp_path / "elsewhere.lock").write_bytes(b"")
        lock.symlink_to(tmp_path / "elsewhere.lock")
    real_open = os.open

    def refuse_writing(path: Any, flags: int, *args: Any) -> int:
        if Path(path) == lock and flags & os.O_ACCMODE == os.O_RDWR:
            raise PermissionError(errno.EACCES, "Permission denied")  # another user's
        return real_open(path, flags, *args)

    monkeypatch.setattr("sparkle.inbox_claims.os.open", refuse_writing)
    answers: list[bool] = []
    checker = threading.Thread(target=lambda: answers.append(inbox.claims.owner_alive(other)),
                               daemon=True)
    checker.start()
    checker.join(5)
    assert answers == [False], "the check blocked or took a non-lock for a live watcher"

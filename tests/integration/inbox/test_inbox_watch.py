"""The hot folder takes a plan once it is complete, whatever the writer: closed, renamed
from ``.part``, moved in, written slowly, left empty for a while; and its watch survives
the folder being removed. Real folders, the real watchdog observer, real files."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkle.inbox import Inbox
from sparkle.inbox_names import ERROR_SUFFIX
from sparkle.runstore import RunStore

from .inbox_support import STABLE, Recorder, names, plan_bytes, wait_until


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
def test_a_plan_written_slowly_is_taken_once_after_it_is_complete(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore, poll: bool
) -> None:
    # Protects: a half-written file is never taken, and a slow writer's file is taken once.
    # Given a running inbox (default stability wait of 0.5 s)
    recorder = Recorder()
    inbox = make_inbox(recorder, poll=poll, stable_seconds=0.5)
    data = plan_bytes("Slow Writer")
    chunks = [data[i : i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]

    # When a writer writes the plan in chunks, sleeping between them, with the file open
    with (inbox_dir / "slow.json").open("wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            time.sleep(0.15)
    closed_at = time.monotonic()
    wait_until(lambda: inbox.processed == 1, what="the slow plan to be processed")
    assert inbox.wait_idle(5)

    # Then it was enqueued exactly once, after the writer closed it, with the whole content
    assert len(recorder.calls) == 1
    assert recorder.calls[0][1] >= closed_at
    assert (inbox.processed_dir / "slow.json").read_bytes() == data
    assert inbox.rejected == 0
    assert len(store.runs()) == 1


def test_a_part_file_is_ignored_until_renamed_to_json(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: temporary names are left alone; the rename publishes the file.
    # Given a running inbox and a plan written under a .part name
    recorder = Recorder()
    inbox = make_inbox(recorder)
    (inbox_dir / "x.part").write_bytes(plan_bytes())

    # When more than the stability wait passes, then it is still untouched
    time.sleep(STABLE + 0.3)
    assert names(inbox_dir) == ["processed", "rejected", "x.part"]
    assert recorder.calls == []

    # When it is renamed to x.json, then it is processed under that name
    os.rename(inbox_dir / "x.part", inbox_dir / "x.json")
    wait_until(lambda: inbox.processed == 1)
    assert names(inbox.processed_dir) == ["x.json"]


def test_a_plan_moved_in_from_another_folder_is_taken(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, tmp_path: Path
) -> None:
    # Protects: a moved-in file (a created event only, no close event) is taken once stable.
    # Given a running inbox and a plan in another folder on the same filesystem
    recorder = Recorder()
    inbox = make_inbox(recorder)
    elsewhere = tmp_path / "drafts"
    elsewhere.mkdir()
    (elsewhere / "moved.json").write_bytes(plan_bytes())

    # When the plan is moved into the inbox
    os.rename(elsewhere / "moved.json", inbox_dir / "moved.json")

    # Then it is processed once
    wait_until(lambda: inbox.processed == 1)
    assert inbox.wait_idle(5)
    assert names(inbox.processed_dir) == ["moved.json"]
    assert len(recorder.calls) == 1


def test_plans_copied_while_the_watcher_is_down_are_taken_at_start_oldest_first(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore
) -> None:
    # Protects: the start-up scan (no event is ever delivered for these files) and its order.
    # Given two plans copied into the inbox while no watcher runs, "b" older than "a"
    inbox_dir.mkdir()
    (inbox_dir / "a.json").write_bytes(plan_bytes("Plan A"))
    (inbox_dir / "b.json").write_bytes(plan_bytes("Plan B"))
    os.utime(inbox_dir / "b.json", (time.time() - 60, time.time() - 60))

    # When the watcher starts
    recorder = Recorder()
    inbox = make_inbox(recorder)

    # Then both are processed, the older one first
    wait_until(lambda: inbox.processed == 2)
    assert [store.run(run_id).plan().title for run_id in recorder.run_ids] == ["Plan B", "Plan A"]
    assert names(inbox.processed_dir) == ["a.json", "b.json"]


def test_files_the_inbox_must_not_take_are_left_alone(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: dotfiles, temporary names and other extensions are never taken; the glob
    # ignores case.
    # Given a running inbox
    recorder = Recorder()
    inbox = make_inbox(recorder)
    ignored = [".hidden.json", "draft.tmp", "movie.crdownload", "~$plan.json", "notes.txt"]

    # When those files and one upper-case PLAN.JSON are written
    for name in ignored:
        (inbox_dir / name).write_bytes(plan_bytes())
    (inbox_dir / "PLAN.JSON").write_bytes(plan_bytes())
    wait_until(lambda: inbox.processed == 1)
    time.sleep(STABLE + 0.2)

    # Then only PLAN.JSON was taken
    assert names(inbox.processed_dir) == ["PLAN.JSON"]
    assert sorted(p.name for p in inbox_dir.iterdir() if p.is_file()) == sorted(ignored)
    assert len(recorder.calls) == 1


def test_a_burst_of_200_plans_gives_200_runs_each_enqueued_once(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore
) -> None:
    # Protects: nothing dropped is lost or processed twice under load.
    # Given a running inbox
    recorder = Recorder()
    inbox = make_inbox(recorder)

    # When 200 valid plans with distinct titles are dropped at once
    for i in range(200):
        (inbox_dir / f"plan-{i:03d}.json").write_bytes(plan_bytes(f"Burst {i}"))
    wait_until(lambda: inbox.processed == 200, timeout=30, what="200 processed plans")
    assert inbox.wait_idle(5)

    # Then there are 200 runs, each enqueued once, and nothing left behind or rejected
    assert len(store.runs()) == 200
    assert sorted(recorder.run_ids) == sorted({run.run_id for run in store.runs()})
    assert [p for p in inbox_dir.iterdir() if p.is_file()] == []
    assert names(inbox.claimed_dir) == []
    assert names(inbox.rejected_dir) == []
    assert len(names(inbox.processed_dir)) == 200
    assert inbox.stats().rejected == 0


def test_the_watcher_recovers_when_the_inbox_folder_is_removed(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: the observer health check (the inotify watch dies with its folder).
    # Given a running inbox
    inbox = make_inbox(Recorder())

    # When the whole inbox folder is removed, then it is recreated
    shutil.rmtree(inbox_dir)
    wait_until(lambda: (inbox_dir / "processed").is_dir(), what="the folder to be recreated")

    # And a plan dropped afterwards is processed
    time.sleep(0.2)
    (inbox_dir / "after.json").write_bytes(plan_bytes())
    wait_until(lambda: inbox.processed == 1)


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
def test_a_file_still_empty_while_its_writer_works_is_not_taken(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, poll: bool
) -> None:
    # Protects: `generate > inbox/plan.json` creates the file at once and fills it only
    # when the generator is done; an empty file is not stable, however long it sits.
    recorder = Recorder()
    inbox = make_inbox(recorder, poll=poll)
    # Given a writer that opened the plan file and has not written yet
    with open(inbox_dir / "slow.json", "wb") as writer:
        time.sleep(STABLE * 4)  # longer than the stability wait
        # When it finally writes and closes
        writer.write(plan_bytes("Slow Generator"))
    # Then the plan is taken whole, not rejected as empty
    wait_until(lambda: inbox.processed == 1, what="the slow plan processed")
    assert inbox.rejected == 0
    assert names(inbox.processed_dir) == ["slow.json"]


def test_an_empty_file_is_never_taken_and_is_reported_once(
    make_inbox: Callable[..., Inbox],
    inbox_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Protects: a writer slower than any grace (a long generation) still gets its plan
    # taken whole: an empty file is left in the inbox, reported once, and taken once
    # written. (Claimed empty, the writer's open file would follow it into rejected/.)
    caplog.set_level(logging.WARNING, logger="sparkle.inbox")
    monkeypatch.setattr("sparkle.inbox_stability.EMPTY_WARN_SEC", 0.6)
    inbox = make_inbox(Recorder())
    with open(inbox_dir / "late.json", "wb") as writer:
        wait_until(lambda: "late.json is still empty" in caplog.text, what="the warning")
        time.sleep(STABLE * 3)
        assert inbox.rejected == 0 and inbox.processed == 0
        assert (inbox_dir / "late.json").exists()
        assert inbox.wait_idle(1)  # (a file parked empty is not work in progress)
        writer.write(plan_bytes("Very Late"))
    wait_until(lambda: inbox.processed == 1, what="the plan taken once written")
    assert inbox.rejected == 0
    assert caplog.text.count("late.json is still empty") == 1


def test_files_with_very_long_names_are_handled_and_hold_up_nothing(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: a name near the 255-byte limit once made the error record's temporary
    # name too long: the file was held forever and every plan behind it waited. A name
    # too long to claim with its prefix stayed in the inbox, unreported.
    recorder = Recorder()
    inbox = make_inbox(recorder)
    bad_name = "é" * 113 + ".json"  # 231 bytes
    good_long = "g" * 245 + ".json"  # 250 bytes
    (inbox_dir / bad_name).write_text("{")
    time.sleep(STABLE * 2)
    (inbox_dir / good_long).write_bytes(plan_bytes("Long Name"))
    (inbox_dir / "after.json").write_bytes(plan_bytes("Behind It"))
    wait_until(lambda: inbox.processed == 2 and inbox.rejected == 1, what="all three taken")
    assert inbox.wait_idle(5)
    # The long names are kept recognisable: their start, a hash, the extension
    [rejected] = [n for n in names(inbox.rejected_dir) if not n.endswith(ERROR_SUFFIX)]
    assert rejected.startswith("é" * 20) and rejected.endswith(".json")
    assert len(os.fsencode(rejected)) <= 160
    assert (inbox.rejected_dir / (rejected + ERROR_SUFFIX)).exists()
    processed = names(inbox.processed_dir)
    assert "after.json" in processed
    assert any(n.startswith("g" * 100) and n.endswith(".json") for n in processed)
    assert [p for p in inbox_dir.iterdir() if p.is_file()] == []

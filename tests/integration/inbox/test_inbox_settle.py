"""Rejections and the move into ``processed/`` or ``rejected/``: every bad plan gets an
error record naming the field, and no file is ever overwritten or copied twice, with or
without hard links. Real folders and files."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sparkle.inbox import Inbox
from sparkle.inbox_names import ERROR_SUFFIX
from sparkle.plans import load_plan_file
from sparkle.runstore import RunStore

from .inbox_support import LIGHTHOUSE, Recorder, names, plan, plan_bytes, wait_until


def _bad(**changes: Any) -> bytes:
    return json.dumps(plan(**changes)).encode()


def _shots(**shot0: Any) -> list[dict[str, Any]]:
    shots: list[dict[str, Any]] = copy.deepcopy(LIGHTHOUSE["shots"])
    shots[0].update(shot0)
    return shots


_DUPLICATE = copy.deepcopy(LIGHTHOUSE["shots"])
_DUPLICATE[1]["id"] = "s1"
_UNKNOWN_SPEAKER = copy.deepcopy(LIGHTHOUSE["shots"])
_UNKNOWN_SPEAKER[1]["dialogue"][0]["character_id"] = "ghost"
_NO_TITLE = {k: v for k, v in LIGHTHOUSE.items() if k != "title"}

BAD_PLANS = [
    ("dotdot-shot-id", _bad(shots=_shots(id="../escape")), "shots[0].id", "must"),
    ("absolute-shot-id", _bad(shots=_shots(id="/etc/passwd")), "shots[0].id", "must"),
    ("duplicate-shot-id", _bad(shots=_DUPLICATE), "shots[1].id", "duplicate shot id"),
    (
        "unknown-character",
        _bad(shots=_UNKNOWN_SPEAKER),
        "shots[1].dialogue[0].character_id",
        "names no character",
    ),
    ("zero-duration", _bad(shots=_shots(duration_sec=0)), "shots[0].duration_sec", "more than 0"),
    ("no-shots", _bad(shots=[]), "shots", "at least 1"),
    ("missing-title", json.dumps(_NO_TITLE).encode(), "title", "missing"),
    ("wrong-type", _bad(shots=_shots(duration_sec="long")), "shots[0].duration_sec", "number"),
    ("truncated", plan_bytes()[:200], "", "invalid JSON"),
    ("non-utf8", b'{"title": "caf\xe9"}', "", "not UTF-8"),
    ("deep-nesting", b'{"title": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "", "nested"),
    ("top-level-array", b"[1, 2, 3]", "", "array"),
]


@pytest.mark.parametrize(
    ("content", "field", "fragment"),
    [case[1:] for case in BAD_PLANS],
    ids=[case[0] for case in BAD_PLANS],
)
def test_a_bad_plan_is_rejected_with_an_error_record_naming_the_field(
    make_inbox: Callable[..., Inbox],
    inbox_dir: Path,
    store: RunStore,
    content: bytes,
    field: str,
    fragment: str,
) -> None:
    # Protects: invalid input never becomes a run and the user is told what and where.
    # Given a running inbox
    recorder = Recorder()
    inbox = make_inbox(recorder)

    # When a bad plan is dropped
    (inbox_dir / "bad.json").write_bytes(content)
    wait_until(lambda: inbox.rejected == 1, what="the rejection")
    assert inbox.wait_idle(5)

    # Then it is in rejected/ beside an error record naming the field and the problem
    assert names(inbox.rejected_dir) == ["bad.json", "bad.json" + ERROR_SUFFIX]
    assert (inbox.rejected_dir / "bad.json").read_bytes() == content
    record = json.loads((inbox.rejected_dir / ("bad.json" + ERROR_SUFFIX)).read_text())
    assert set(record) == {"file", "received_at", "errors"}
    assert record["file"] == "bad.json"
    datetime.fromisoformat(record["received_at"])
    assert any(
        e["path"] == field and fragment.lower() in e["message"].lower() for e in record["errors"]
    ), record["errors"]
    # And no run was created or enqueued
    assert store.runs() == []
    assert recorder.calls == []


def test_a_symlink_is_rejected_as_itself_and_its_target_is_untouched(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, tmp_path: Path, store: RunStore
) -> None:
    # Protects: links are never followed; the target (here a valid plan) is never moved.
    # Given a running inbox and a valid plan outside it
    recorder = Recorder()
    inbox = make_inbox(recorder)
    target = tmp_path / "secret.json"
    target.write_bytes(plan_bytes())

    # When a symlink to it is dropped
    (inbox_dir / "link.json").symlink_to(target)
    wait_until(lambda: inbox.rejected == 1)

    # Then the link itself is in rejected/, the target is where it was, unchanged
    rejected = inbox.rejected_dir / "link.json"
    assert rejected.is_symlink()
    assert os.readlink(rejected) == str(target)
    assert target.read_bytes() == plan_bytes()
    record = json.loads((inbox.rejected_dir / ("link.json" + ERROR_SUFFIX)).read_text())
    assert "symbolic link" in record["errors"][0]["message"]
    assert store.runs() == []


def test_an_oversized_file_is_rejected_unread(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: the size cap.
    # Given an inbox with a 2 KiB cap
    inbox = make_inbox(Recorder(), max_plan_bytes=2048)

    # When a (valid) plan of 5,000 bytes is dropped
    (inbox_dir / "big.json").write_bytes(plan_bytes().ljust(5000))
    wait_until(lambda: inbox.rejected == 1)

    # Then it is rejected with the reason
    record = json.loads((inbox.rejected_dir / ("big.json" + ERROR_SUFFIX)).read_text())
    assert "over the 2048-byte limit" in record["errors"][0]["message"]


def test_non_regular_files_are_rejected(make_inbox: Callable[..., Inbox], inbox_dir: Path) -> None:
    # Protects: a FIFO (whose open could block) and a folder named like a plan.
    # Given a running inbox
    inbox = make_inbox(Recorder())

    # When a FIFO and a folder with plan names appear
    os.mkfifo(inbox_dir / "pipe.json")
    (inbox_dir / "folder.json").mkdir()
    wait_until(lambda: inbox.rejected == 2)

    # Then both are in rejected/ with "not a regular file"
    for name in ("pipe.json", "folder.json"):
        record = json.loads((inbox.rejected_dir / (name + ERROR_SUFFIX)).read_text())
        assert "not a regular file" in record["errors"][0]["message"]
    assert [p for p in inbox_dir.iterdir() if p.name.endswith(".json")] == []


def test_a_different_plan_claiming_an_existing_run_id_is_rejected(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore
) -> None:
    # Protects: a RunConflictError is the user's problem (a rejection), not a crash.
    # Given a run created from a plan with metadata.run_id "shared"
    inbox = make_inbox(Recorder())
    (inbox_dir / "one.json").write_text(json.dumps(plan("One", metadata={"run_id": "shared"})))
    wait_until(lambda: inbox.processed == 1)

    # When a different plan with the same run id is dropped
    (inbox_dir / "two.json").write_text(json.dumps(plan("Two", metadata={"run_id": "shared"})))
    wait_until(lambda: inbox.rejected == 1)

    # Then it is rejected naming metadata.run_id, and the run keeps its plan
    record = json.loads((inbox.rejected_dir / ("two.json" + ERROR_SUFFIX)).read_text())
    assert record["errors"][0]["path"] == "metadata.run_id"
    assert store.run("shared").plan().title == "One"


def test_a_same_named_file_lands_beside_the_first_with_a_suffix(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: processed/ never overwrites; the same plan dropped again resumes its run.
    # Given a plan processed once
    recorder = Recorder()
    inbox = make_inbox(recorder)
    (inbox_dir / "again.json").write_bytes(plan_bytes())
    wait_until(lambda: inbox.processed == 1)

    # When the same file is dropped again
    (inbox_dir / "again.json").write_bytes(plan_bytes())
    wait_until(lambda: inbox.processed == 2)

    # Then both copies are kept and the second found the same run
    assert names(inbox.processed_dir) == ["again-1.json", "again.json"]
    assert recorder.run_ids[0] == recorder.run_ids[1]
    assert inbox.stats().created == 1
    assert inbox.stats().resumed == 1


def test_a_crash_between_linking_into_processed_and_unclaiming_leaves_one_copy(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore
) -> None:
    # Protects: the move to processed/ is repeatable: our own earlier link is reused.
    # Given a claim of a dead watcher, its run, and its hard link already in processed/
    claimed = inbox_dir / ".claimed" / "0123456789ab-7_done.json"
    claimed.parent.mkdir(parents=True)
    claimed.write_bytes(plan_bytes())
    (inbox_dir / "processed").mkdir()
    os.link(claimed, inbox_dir / "processed" / "done.json")
    store.create(load_plan_file(claimed, 1 << 20))

    # When a watcher starts
    inbox = make_inbox(Recorder())
    wait_until(lambda: inbox.processed == 1)

    # Then processed/ holds the one copy and there is one run
    assert names(inbox.processed_dir) == ["done.json"]
    assert names(inbox.claimed_dir) == []
    assert len(store.runs()) == 1


def test_without_hard_links_a_name_taken_meanwhile_is_never_overwritten(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Protects: where hard links cannot be made (another user's file under
    # protected_hardlinks, CIFS, FUSE) the name in rejected/ was checked free and then
    # renamed onto: a second watcher taking it meanwhile lost its file.
    import errno

    from sparkle import atomic

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("sparkle.inbox_settle.os.link", no_links)
    write_json = atomic.write_json
    competitor: list[bool] = []

    def record_while_another_watcher_places(path: Any, value: Any, *args: Any) -> None:
        # Another watcher places its own bad.json the way the inbox does (never replacing)
        data = Path(str(path)[: -len(ERROR_SUFFIX)])
        try:
            fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            competitor.append(False)
        else:
            os.write(fd, b"theirs")
            os.close(fd)
            competitor.append(True)
        write_json(path, value, *args)

    monkeypatch.setattr(atomic, "write_json", record_while_another_watcher_places)
    inbox = make_inbox(Recorder())
    (inbox_dir / "bad.json").write_text("{")
    wait_until(lambda: inbox.rejected == 1, what="the rejection")
    contents = sorted((inbox.rejected_dir / n).read_bytes() for n in names(inbox.rejected_dir)
                      if not n.endswith(ERROR_SUFFIX))
    # Then neither file was lost: ours is there, and theirs if it got the name
    assert competitor == [False]
    assert contents == [b"{"]


def test_an_error_record_never_overwrites_a_rejected_file_of_that_name(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: a file rejected earlier under the name x.json.error.json (an error record
    # dropped back into the inbox) was replaced by x.json's record.
    inbox = make_inbox(Recorder())
    inbox.rejected_dir.mkdir(parents=True, exist_ok=True)
    earlier = inbox.rejected_dir / ("x.json" + ERROR_SUFFIX)
    earlier.write_bytes(b"an earlier rejected file")
    (inbox_dir / "x.json").write_text("{")
    wait_until(lambda: inbox.rejected == 1, what="the rejection")
    assert earlier.read_bytes() == b"an earlier rejected file"
    assert (inbox.rejected_dir / "x-1.json").read_text() == "{"
    assert (inbox.rejected_dir / ("x-1.json" + ERROR_SUFFIX)).exists()

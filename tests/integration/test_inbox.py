"""The hot folder against real folders, the real watchdog observer and real files.

The enqueue callable is a thread-safe recorder (the engine is tested elsewhere), except in
the test that stops and restarts a real redis-server.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from sparkle.inbox import Inbox
from sparkle.inbox_names import ERROR_SUFFIX
from sparkle.plans import load_plan_file
from sparkle.runstore import Run, RunStore

REPO = Path(__file__).resolve().parents[2]
LIGHTHOUSE: dict[str, Any] = json.loads(
    (REPO / "tests" / "data" / "plans" / "lighthouse.json").read_text()
)

#: Stability wait used by most tests, in seconds (the default is 0.5).
STABLE = 0.3


# -- helpers -------------------------------------------------------------------------------


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


# -- complete files only -------------------------------------------------------------------


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


# -- many files ----------------------------------------------------------------------------


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


# -- rejections ----------------------------------------------------------------------------


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
    ("zero-duration", _bad(shots=_shots(duration_sec=0)), "shots[0].duration_sec", "greater"),
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


# -- crashes -------------------------------------------------------------------------------

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


# -- infrastructure problems ---------------------------------------------------------------


def test_files_wait_in_claimed_while_the_broker_is_down_and_flow_when_it_returns(
    make_inbox: Callable[..., Inbox],
    inbox_dir: Path,
    store: RunStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Protects: a broker outage never rejects a file; other files keep flowing; catch-up.
    # Given a running inbox whose enqueue raises ConnectionError
    caplog.set_level(logging.INFO, logger="sparkle.inbox")
    recorder = Recorder()
    recorder.down.set()
    inbox = make_inbox(recorder)

    # When three plans are dropped
    for i in range(3):
        (inbox_dir / f"wait-{i}.json").write_bytes(plan_bytes(f"Waiting {i}"))
    wait_until(lambda: inbox.stats().held == 3, what="three held files")
    time.sleep(0.5)  # several backoff rounds

    # Then they stay claimed, their runs exist, nothing is rejected or processed
    assert len(names(inbox.claimed_dir)) == 3
    assert len(store.runs()) == 3
    assert names(inbox.rejected_dir) == []
    assert names(inbox.processed_dir) == []
    assert inbox.retried > 3

    # When a bad plan is dropped meanwhile, then it is rejected at once
    (inbox_dir / "bad.json").write_text("{")
    wait_until(lambda: inbox.rejected == 1)

    # When the broker returns, then the held files are finished, each enqueued once
    recorder.down.clear()
    wait_until(lambda: inbox.processed == 3, what="catch-up after the broker returns")
    assert inbox.wait_idle(5)
    assert sorted(recorder.run_ids) == sorted(run.run_id for run in store.runs())
    assert names(inbox.claimed_dir) == []
    # And the log says they were created (by this watcher, on the first attempt)
    assert caplog.text.count("(created)") == 3


def test_an_unexpected_error_leaves_the_file_claimed_and_the_watcher_running(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Protects: one file's problem never kills the watcher or stalls the files behind it.
    # Given an enqueue with a bug for one plan
    recorder = Recorder()

    def enqueue(run: Run) -> None:
        if run.plan().title == "Buggy":
            raise ValueError("a bug")
        recorder(run)

    inbox = make_inbox(enqueue)

    # When that plan and then a good one are dropped
    (inbox_dir / "buggy.json").write_bytes(plan_bytes("Buggy"))
    (inbox_dir / "good.json").write_bytes(plan_bytes("Good"))
    wait_until(lambda: inbox.processed == 1 and inbox.failed == 1)

    # Then the good one is processed, the buggy one stays claimed (not lost), and the
    # traceback is logged
    assert names(inbox.processed_dir) == ["good.json"]
    assert [name.split("_", 1)[1] for name in names(inbox.claimed_dir)] == ["buggy.json"]
    assert "ValueError: a bug" in caplog.text


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


@pytest.mark.redis
def test_plans_dropped_while_redis_is_down_are_processed_when_it_returns(
    make_inbox: Callable[..., Inbox], inbox_dir: Path, store: RunStore, redis_server: Any
) -> None:
    # Protects: the same, against a real redis-server that is stopped and started again.
    # Given a running inbox whose enqueue pushes the run id onto a Redis list
    client = redis.Redis.from_url(
        redis_server.url, socket_connect_timeout=1, socket_timeout=1, decode_responses=True
    )
    key = "sparkle:test:inbox"

    def enqueue(run: Run) -> None:
        client.rpush(key, run.run_id)

    inbox = make_inbox(enqueue)
    (inbox_dir / "before.json").write_bytes(plan_bytes("Before"))
    wait_until(lambda: inbox.processed == 1)

    try:
        # When Redis stops and four plans are dropped
        redis_server.stop()
        for i in range(4):
            (inbox_dir / f"down-{i}.json").write_bytes(plan_bytes(f"Down {i}"))
        wait_until(lambda: inbox.stats().held == 4, what="four held files")
        time.sleep(0.3)

        # Then they wait in .claimed/ and none is rejected
        assert len(names(inbox.claimed_dir)) == 4
        assert inbox.rejected == 0

        # When Redis starts again, then all four are processed and pushed once each
        redis_server.start()
        wait_until(lambda: inbox.processed == 5, timeout=15, what="catch-up")
        pushed = [str(value) for value in client.lrange(key, 0, -1)]
        titles = sorted(store.run(run_id).plan().title for run_id in pushed)
        assert titles == [f"Down {i}" for i in range(4)]
        assert names(inbox.claimed_dir) == []
        assert inbox.rejected == 0
    finally:
        client.close()


# -- review of 2026-11-27: slow writers, long names, broker replies, owner locks ------------


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


def test_a_redis_reply_error_holds_the_file_until_the_broker_takes_it(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: a replica answering READONLY during a failover (a reply error, not a
    # connection error) once left the file stranded in .claimed/ until a restart.
    recorder = Recorder()
    failing = threading.Event()
    failing.set()

    def enqueue(run: Run) -> None:
        if failing.is_set():
            raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
        recorder(run)

    inbox = make_inbox(enqueue)
    (inbox_dir / "failover.json").write_bytes(plan_bytes("During Failover"))
    wait_until(lambda: inbox.stats().held == 1, what="the file held")
    assert inbox.failed == 0 and inbox.rejected == 0
    failing.clear()
    wait_until(lambda: inbox.processed == 1, what="the file processed after the failover")
    assert names(inbox.claimed_dir) == []


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


def test_a_permanent_redis_reply_fails_its_file_without_holding_the_others(
    make_inbox: Callable[..., Inbox], inbox_dir: Path
) -> None:
    # Protects: a reply that waiting will not change (WRONGTYPE, NOPERM) is not taken for
    # an outage: holding that file forever would hold every plan behind it.
    recorder = Recorder()

    def enqueue(run: Run) -> None:
        if run.plan().title == "Clashing Key":
            raise redis.exceptions.ResponseError(
                "WRONGTYPE Operation against a key holding the wrong kind of value")
        recorder(run)

    inbox = make_inbox(enqueue)
    (inbox_dir / "clash.json").write_bytes(plan_bytes("Clashing Key"))
    wait_until(lambda: inbox.failed == 1, what="the failed file")
    (inbox_dir / "next.json").write_bytes(plan_bytes("Next In Line"))
    wait_until(lambda: inbox.processed == 1, what="the next plan processed")
    assert inbox.stats().held == 0
    assert [n.split("_", 1)[1] for n in names(inbox.claimed_dir)] == ["clash.json"]


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

"""The run folder: run ids, creation, crash-safe JSON, checkpoints, manifest, status, paths.

Everything here uses real folders under ``tmp_path``; the crash and concurrency tests use
real child processes, because that is where atomic writes and file locks earn their keep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkle import atomic, history_cache, unique
from sparkle.errors import RunConflictError, RunNotFoundError, UnsafePathError
from sparkle.plans import load_plan_file
from sparkle.runstore import (
    Run,
    RunStatus,
    RunStore,
    canonical_plan_json,
    run_id_for,
    slugify,
)
from sparkle.schemas import STAGES, Checkpoint, MoviePlan, check_id

PLANS = Path(__file__).parents[1] / "data" / "plans"

#: Sets the path of the sparkle package for child processes started by these tests.
CHILD_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}


def example_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((PLANS / "lighthouse.json").read_text("utf-8"))
    return doc


def plan_from(doc: dict[str, Any]) -> MoviePlan:
    return MoviePlan.model_validate(doc)


def example_plan(**metadata: str) -> MoviePlan:
    doc = example_doc()
    doc["metadata"].update(metadata)
    return plan_from(doc)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def run_child(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python process with ``args`` as sys.argv[1:]."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def checkpoint(
    stage: str, status: str = "success", attempt: int = 1, **metadata: Any
) -> Checkpoint:
    return Checkpoint(
        stage=stage,
        status=status,
        timestamp=time.time(),
        attempt=attempt,
        error="boom" if status == "failed" else None,
        metadata=metadata,
    )


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


@pytest.fixture
def run(store: RunStore) -> Run:
    created, _ = store.create(example_plan())
    return created


# -- run ids ---------------------------------------------------------------------------------


def test_metadata_run_id_wins(store: RunStore):
    """A plan naming its run id in metadata.run_id gets exactly that id and folder."""
    plan = example_plan(run_id="lighthouse-take-2")
    assert run_id_for(plan) == "lighthouse-take-2"
    created, _ = store.create(plan)
    assert created.dir == store.root / "lighthouse-take-2"


def test_derived_run_id_is_title_slug_and_plan_hash():
    """Without metadata.run_id the id is <slug of title>-<first 10 hex of sha256(canonical)>."""
    plan = example_plan()
    canonical = json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert run_id_for(plan) == f"the-lighthouse-keeper-{digest[:10]}"


def test_same_plan_gives_same_run_id():
    """Validating the same plan twice gives the same run id."""
    assert run_id_for(example_plan()) == run_id_for(example_plan())


def test_key_order_and_whitespace_do_not_change_the_run_id(tmp_path: Path):
    """The id hashes the canonical plan, not the file's bytes."""
    # Given the same plan written compactly, and indented with its keys in reverse order
    doc = example_doc()

    def reverse_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse_keys(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse_keys(v) for v in value]
        return value

    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(doc, separators=(",", ":")))
    pretty = tmp_path / "pretty.json"
    pretty.write_text("\n\n" + json.dumps(reverse_keys(doc), indent=7) + "\n   \n")
    assert compact.read_bytes() != pretty.read_bytes()
    # When both are loaded, then they have one run id
    ids = {
        run_id_for(load_plan_file(p, 1 << 20)) for p in (compact, pretty, PLANS / "lighthouse.json")
    }
    assert len(ids) == 1


def test_spelled_out_defaults_do_not_change_the_run_id():
    """Writing a default value explicitly (is_talking_closeup: false, 4 vs 4.0) is the same plan."""
    doc = example_doc()
    doc["shots"][0]["is_talking_closeup"] = False
    doc["shots"][0]["dialogue"] = []
    doc["shots"][0]["duration_sec"] = 4.0
    assert run_id_for(plan_from(doc)) == run_id_for(example_plan())


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["shots"][0].update(motion_prompt="slow pull out"),
        lambda d: d["metadata"].update(seed="43"),
        lambda d: d["shots"].reverse(),
    ],
    ids=["prompt", "seed", "shot-order"],
)
def test_different_plan_gives_different_run_id(change: Any):
    """Any change to the plan's content gives a new run id (same title, new hash)."""
    doc = example_doc()
    change(doc)
    changed = run_id_for(plan_from(doc))
    original = run_id_for(example_plan())
    assert changed != original
    assert changed.rsplit("-", 1)[0] == original.rsplit("-", 1)[0]


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("The Lighthouse Keeper", "the-lighthouse-keeper"),
        ("  Hello,  World!! ", "hello-world"),
        ("!!!", "run"),
        ("\u5149\u306e\u706f\u53f0", "run"),
        ("Caf\u00e9 au lait", "caf-au-lait"),
        ("x" * 100, "x" * 40),
    ],
)
def test_title_slug(title: str, slug: str):
    """The slug is lower-case ASCII words joined by '-', at most 40 characters, 'run' if empty."""
    assert slugify(title) == slug


@settings(max_examples=200, deadline=None)
@given(title=st.text(min_size=1, max_size=300).filter(lambda t: not t.isspace()))
def test_derived_run_id_is_always_path_safe(title: str):
    """Whatever the title, the derived run id passes the path-safe id rule."""
    doc = example_doc()
    doc["title"] = title
    run_id = run_id_for(plan_from(doc))
    assert check_id(run_id) == run_id


# -- creating runs ---------------------------------------------------------------------------


def test_create_lays_out_the_run_folder(store: RunStore):
    """A new run holds its plan, empty asset refs, an empty manifest and a checkpoints folder."""
    plan = example_plan()
    created, is_new = store.create(plan)
    assert is_new
    assert MoviePlan.model_validate_json((created.dir / "movie_plan.json").read_bytes()) == plan
    assert json.loads((created.dir / "asset_refs.json").read_text()) == {"shots": {}, "extras": {}}
    assert json.loads((created.dir / "manifest.json").read_bytes()) == {
        "run_id": created.run_id, "events": []}
    assert (created.dir / "checkpoints").is_dir()
    assert created.plan() == plan


def test_create_is_idempotent(store: RunStore, tmp_path: Path):
    """Creating the same plan again (even from a reformatted file) finds the run: no duplicate."""
    # Given a run created from the example file
    first, created_first = store.create(load_plan_file(PLANS / "lighthouse.json", 1 << 20))
    first.append_event("script", "begin", 1)
    before = snapshot(first.dir)
    # When the same plan, reformatted, is created again
    again_file = tmp_path / "again.json"
    again_file.write_text(json.dumps(example_doc(), indent=1))
    second, created_second = store.create(load_plan_file(again_file, 1 << 20))
    # Then it is the same run, reported as existing, and nothing in it changed
    assert (created_first, created_second) == (True, False)
    assert second.dir == first.dir
    assert [r.run_id for r in store.runs()] == [first.run_id]
    assert snapshot(first.dir) == before


def test_different_plan_under_same_run_id_conflicts(store: RunStore):
    """A different plan claiming an existing run id is refused; the old run is untouched."""
    # Given a run with an explicit id and some history
    old, _ = store.create(example_plan(run_id="shared"))
    old.append_event("script", "begin", 1)
    old.write_checkpoint(checkpoint("script"))
    before = snapshot(old.dir)
    # When a different plan asks for the same id
    other = example_doc()
    other["title"] = "Another Movie"
    other["metadata"]["run_id"] = "shared"
    with pytest.raises(RunConflictError) as info:
        store.create(plan_from(other))
    # Then the message names the run and says what to do
    message = str(info.value)
    assert "'shared'" in message
    assert "different plan" in message
    assert "metadata.run_id" in message
    # And the old run is exactly as it was
    assert snapshot(old.dir) == before
    assert old.plan().title == "The Lighthouse Keeper"


def test_explicit_run_id_argument_conflicts_too(store: RunStore):
    """The run_id argument (``sparkle run --run-id``) is checked for conflicts like metadata."""
    store.create(example_plan(), run_id="take-1")
    with pytest.raises(RunConflictError):
        store.create(example_plan(seed="99"), run_id="take-1")


@pytest.mark.parametrize("bad", ["../x", "/tmp/x", "..", "", "a/b"])
def test_unsafe_run_id_argument_is_refused(store: RunStore, tmp_path: Path, bad: str):
    """An unsafe run id given directly never creates anything outside the runs folder."""
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UnsafePathError):
        store.create(example_plan(), run_id=bad or "..")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unknown_run_is_not_found(store: RunStore):
    """Asking for a run that does not exist says so and how to list runs."""
    with pytest.raises(RunNotFoundError, match="sparkle runs"):
        store.run("nope")


def test_run_without_plan_is_not_found(store: RunStore):
    """A folder whose plan is missing is not a run."""
    (store.root / "half").mkdir(parents=True)
    with pytest.raises(RunNotFoundError):
        store.run("half")
    with pytest.raises(RunNotFoundError):
        Run(store.root, "half").plan()


def test_concurrent_creates_of_one_plan_make_one_run(store: RunStore):
    """Two watchers creating the same plan at once: one creates it, the other finds it."""
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        results.append(store.create(example_plan())[1])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len(store.runs()) == 1


# -- atomic JSON writes ----------------------------------------------------------------------


CRASH_BEFORE_REPLACE = """
    import os, sys
    from pathlib import Path
    from sparkle import atomic

    def die(src, dst):
        os._exit(1)  # the process dies after the temp file is written, before the rename

    os.replace = die
    atomic.write_json(Path(sys.argv[1]), {"version": 2, "padding": "x" * 100_000})
    os._exit(0)
"""


def test_crash_between_temp_write_and_replace_keeps_previous_json(tmp_path: Path):
    """A process dying after writing the temp file but before os.replace leaves the old JSON."""
    # Given a state file written atomically
    state = tmp_path / "state.json"
    atomic.write_json(state, {"version": 1})
    # When a process rewriting it dies between the temp write and the rename
    child = run_child(CRASH_BEFORE_REPLACE, str(state))
    assert child.returncode == 1, child.stderr
    # Then the file still holds the complete previous JSON
    assert json.loads(state.read_text("utf-8")) == {"version": 1}
    # And the complete new content was only ever in the temp file (so the crash was mid-write)
    (temp,) = tmp_path.glob(".state.json.*.tmp")
    assert json.loads(temp.read_text("utf-8"))["version"] == 2


def test_a_temp_name_already_taken_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Temp names are random, not unique by construction: a name another writer holds (a
    crashed writer's leftover, or a clash) is left alone and another one tried."""
    # Given a leftover temp file under the first name the writer will draw
    draws = iter([0xABC, 0xABC, 0xDEF])
    monkeypatch.setattr(unique, "hex_token", lambda bits: f"{next(draws):0{bits // 4}x}")
    leftover = tmp_path / f".state.json.{0xABC:012x}.tmp"
    leftover.write_text("someone else's")
    # When the file is written
    atomic.write_json(tmp_path / "state.json", {"version": 1})
    # Then it is written through the next free name, and the leftover is untouched
    assert json.loads((tmp_path / "state.json").read_text("utf-8")) == {"version": 1}
    assert leftover.read_text() == "someone else's"
    assert not list(tmp_path.glob(f".state.json.{0xDEF:012x}.tmp"))


def test_crash_while_writing_a_checkpoint_keeps_the_previous_checkpoint(run: Run):
    """A worker dying while it replaces a checkpoint leaves the previous one readable."""
    run.write_checkpoint(checkpoint("images", "begin"))
    child = run_child(
        """
        import os, sys, time
        from pathlib import Path
        from sparkle.runstore import Run
        from sparkle.schemas import Checkpoint
        os.replace = lambda src, dst: os._exit(1)
        Run(Path(sys.argv[1]), sys.argv[2]).write_checkpoint(
            Checkpoint(stage="images", status="success", timestamp=time.time(), attempt=1))
        """,
        str(run.dir.parent),
        run.run_id,
    )
    assert child.returncode == 1, child.stderr
    read = run.checkpoint("images")
    assert read is not None and read.status == "begin"


@pytest.mark.slow
def test_killing_a_writer_at_random_moments_never_leaves_a_partial_file(tmp_path: Path):
    """SIGKILL at any moment during repeated rewrites leaves one complete version on disk."""
    state = tmp_path / "state.json"
    atomic.write_json(state, {"n": -1, "padding": ""})
    code = """
        import sys
        from pathlib import Path
        from sparkle import atomic
        path = Path(sys.argv[1])
        print("ready", flush=True)
        n = 0
        while True:
            atomic.write_json(path, {"n": n, "padding": "y" * (200_000 + n)})
            n += 1
    """
    rng = random.Random(7)
    for _ in range(5):
        # Given a process rewriting the file in a loop
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(state)],
            env=CHILD_ENV,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        # When it is killed at a random moment
        time.sleep(rng.uniform(0.01, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        # Then the file is one complete version
        value = json.loads(state.read_text("utf-8"))
        assert value["n"] == -1 or len(value["padding"]) == 200_000 + value["n"]


def test_failed_replace_keeps_previous_json_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """When os.replace raises, the error propagates, the old file stays and no temp is left."""
    state = tmp_path / "state.json"
    atomic.write_json(state, {"version": 1})

    def refuse(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic.write_json(state, {"version": 2})
    monkeypatch.undo()
    assert json.loads(state.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_json_creates_parent_folders_and_ends_with_newline(tmp_path: Path):
    """Atomic JSON is indented UTF-8 ending in a newline, folders created as needed."""
    target = tmp_path / "a" / "b" / "c.json"
    atomic.write_json(target, {"title": "\u00e9t\u00e9"})
    assert target.read_text("utf-8").endswith("}\n")
    assert json.loads(target.read_text("utf-8")) == {"title": "\u00e9t\u00e9"}


# -- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_round_trip(run: Run):
    """A checkpoint written is read back equal, from checkpoints/<stage>.json."""
    written = checkpoint("videos", "failed", attempt=3, adapter="media", clips=2)
    run.write_checkpoint(written)
    assert run.checkpoint("videos") == written
    on_disk = json.loads((run.dir / "checkpoints" / "videos.json").read_text())
    assert set(on_disk) == {"stage", "status", "timestamp", "attempt", "error", "metadata"}


def test_missing_checkpoint_is_not_done_without_a_warning(
    run: Run, caplog: pytest.LogCaptureFixture
):
    """No checkpoint is the normal state of a stage that has not run: None, nothing logged."""
    with caplog.at_level(logging.WARNING):
        assert run.checkpoint("script") is None
    assert not caplog.records


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"stage": "script", "status": "succ', id="truncated"),
        pytest.param(b"not json at all", id="invalid-json"),
        pytest.param(b'{"stage": "script", "status": "success"}', id="missing-fields"),
        pytest.param(
            b'{"stage": "script", "status": "done", "timestamp": 1, "attempt": 1}', id="bad-status"
        ),
        pytest.param(
            b'{"stage": "script", "status": "success", "timestamp": 1, "attempt": 1, '
            b'"extra": true}',
            id="extra-key",
        ),
        pytest.param(b"[]", id="array"),
        pytest.param(b"\xff\xfe\x00", id="non-utf8"),
        pytest.param(b"[" * 100_000, id="deeply-nested"),
    ],
)
def test_bad_checkpoint_reads_as_not_done_with_a_warning(
    run: Run, caplog: pytest.LogCaptureFixture, content: bytes
):
    """A damaged checkpoint means "run the stage again": None and a warning, never an error."""
    # Given a damaged checkpoint file
    path = run.dir / "checkpoints" / "script.json"
    path.write_bytes(content)
    # When it is read
    with caplog.at_level(logging.WARNING, logger="sparkle.runstore"):
        read = run.checkpoint("script")
        done = run.stage_done("script")
    # Then the stage is not done, and the log names the run and the file
    assert read is None
    assert not done
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert run.run_id in warnings[0]
    assert str(path) in warnings[0]


def test_checkpoint_that_is_a_folder_reads_as_not_done(run: Run, caplog: pytest.LogCaptureFixture):
    """An unreadable checkpoint (here a folder in its place) is logged, not raised."""
    (run.dir / "checkpoints" / "tts.json").mkdir()
    with caplog.at_level(logging.WARNING, logger="sparkle.runstore"):
        assert run.checkpoint("tts") is None
    assert any("tts.json" in r.getMessage() for r in caplog.records)


def test_unknown_stage_has_no_checkpoint_path(run: Run):
    """Asking for the checkpoint of a stage that does not exist is a programming error."""
    with pytest.raises(ValueError, match="unknown stage 'render'"):
        run.checkpoint("render")


def test_remove_checkpoint_is_idempotent(run: Run):
    """Removing a checkpoint (forced re-run) twice is fine; afterwards the stage is not done."""
    run.write_checkpoint(checkpoint("script"))
    run.remove_checkpoint("script")
    run.remove_checkpoint("script")
    assert run.checkpoint("script") is None


# -- manifest --------------------------------------------------------------------------------


def test_manifest_keeps_events_in_order(run: Run):
    """Appended events are read back in the order they happened, with their fields."""
    run.append_event("script", "begin", 1)
    run.append_event("script", "fail", 1, error="timeout")
    run.append_event("script", "begin", 2)
    run.append_event("script", "success", 2, metadata={"adapter": "test"})
    run.append_event("images", "begin", 1)
    events = run.events()
    assert [(e.stage, e.status, e.attempt) for e in events] == [
        ("script", "begin", 1),
        ("script", "fail", 1),
        ("script", "begin", 2),
        ("script", "success", 2),
        ("images", "begin", 1),
    ]
    assert events[1].error == "timeout"
    assert events[3].metadata == {"adapter": "test"}
    assert all(e.run_id == run.run_id for e in events)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)


def test_manifest_survives_concurrent_appends_from_threads(run: Run):
    """8 threads x 25 appends: all 200 events kept, each thread's in its own order."""
    barrier = threading.Barrier(8)

    def append(worker: int) -> None:
        barrier.wait()
        for i in range(25):
            run.append_event("script", "begin", 1, metadata={"worker": worker, "i": i})

    threads = [threading.Thread(target=append, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = run.events()
    assert len(events) == 200
    for worker in range(8):
        mine = [e.metadata["i"] for e in events if e.metadata["worker"] == worker]
        assert mine == list(range(25))


@pytest.mark.slow
def test_manifest_survives_concurrent_appends_from_processes(run: Run, tmp_path: Path):
    """4 processes x 25 appends (the flock serialises them): all 100 events kept, in order."""
    # Given four processes that wait for a start signal, then append 25 events each
    go = tmp_path / "go"
    code = """
        import os, sys, time
        from pathlib import Path
        from sparkle.runstore import Run
        root, run_id, worker, go = sys.argv[1:]
        run = Run(Path(root), run_id)
        while not os.path.exists(go):
            time.sleep(0.001)
        for i in range(25):
            run.append_event("images", "begin", 1, metadata={"worker": int(worker), "i": i})
    """
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(code),
                str(run.dir.parent),
                run.run_id,
                str(w),
                str(go),
            ],
            env=CHILD_ENV,
        )
        for w in range(4)
    ]
    # When they all start at once
    go.touch()
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    # Then no append was lost and each process's events keep their order
    events = run.events()
    assert len(events) == 100
    for worker in range(4):
        assert [e.metadata["i"] for e in events if e.metadata["worker"] == worker] == list(
            range(25)
        )


def test_damaged_manifest_line_is_skipped_with_a_warning(
    run: Run, caplog: pytest.LogCaptureFixture
):
    """A damaged line does not stop the run: the events around it are read, and the bad line
    is named in a warning."""
    begin, success = legacy_lines(run, "begin", "success")
    write_legacy_log(run, begin + b'{"run_id": "x", "events": [\n' + success)
    with caplog.at_level(logging.WARNING, logger="sparkle.runstore"):
        assert [e.status for e in run.events()] == ["begin", "success"]
    assert any("manifest.jsonl line 2" in r.getMessage() for r in caplog.records)


def test_record_cut_short_by_a_power_loss_spoils_only_itself(run: Run):
    """A legacy log whose last record lacks its newline (power lost mid-append) is read
    without it, and the next event moves the whole records into manifest.json and
    removes the log."""
    (whole,) = legacy_lines(run, "begin")
    write_legacy_log(run, whole + whole[: len(whole) // 2])  # half of a second record
    run.append_event("script", "success", 1)
    assert [e.status for e in run.events()] == ["begin", "success"]
    assert not (run.dir / "manifest.jsonl").exists()
    on_disk = json.loads((run.dir / "manifest.json").read_bytes())
    assert [e["status"] for e in on_disk["events"]] == ["begin", "success"]


def test_each_event_replaces_the_manifest_with_valid_json_keeping_earlier_bytes(run: Run):
    """An event replaces manifest.json whole (a new file renamed into place: a reader or a
    crash sees the old manifest or the new one, each a valid RunManifest), and the events
    already there are kept byte for byte, never re-encoded."""
    run.append_event("script", "begin", 1)
    manifest = run.dir / "manifest.json"
    before = manifest.read_bytes()
    inode = manifest.stat().st_ino
    run.append_event("script", "success", 1)
    after = manifest.read_bytes()
    assert manifest.stat().st_ino != inode
    assert after.startswith(before[: -len(b"\n]}\n")])
    document = json.loads(after)
    assert document["run_id"] == run.run_id
    assert [e["status"] for e in document["events"]] == ["begin", "success"]


def test_a_look_knows_whether_only_its_own_run_object_appended_since(run: Run):
    """The engine's cheap fresh look after a success relies on this: a look stays current
    while every event appended since it was read came through the same Run object (one
    worker's own attempt), and stops being current once anyone else appends (a reset by
    `sparkle resume`, another process)."""
    run.append_event("script", "begin", 1)
    unordered = run.state()
    assert not unordered.appended_only_by_us()  # the history was not read yet: unknown
    assert unordered.checkpoint("script") is None  # a checkpoint read before the history
    assert unordered.next_stage() == "script" and unordered.crashed_begins("script") == 1
    # a reset may fall between the two reads, so this look is never trusted
    assert not unordered.appended_only_by_us()
    look = run.state(history_first=True)
    assert look.next_stage() == "script" and look.crashed_begins("script") == 1
    assert look.appended_only_by_us()
    run.append_event("script", "success", 1)
    run.append_event("images", "begin", 1)
    assert look.appended_only_by_us()
    Run(run.dir.parent, run.run_id).append_event("images", "reset", 1)  # someone else
    assert not look.appended_only_by_us()
    run.append_event("images", "success", 1)
    assert not look.appended_only_by_us()


def test_next_stage_after_a_success_reads_later_stages_afresh(run: Run):
    """After ``script`` succeeds the next stage is the first later one not done now,
    including a checkpoint written after the look was read (a re-run with --only)."""
    look = run.state(history_first=True)
    assert look.next_stage() == "script" and look.attempts("script") == 0
    assert look.checkpoint("images") is None  # (now in the look, but read again below)
    for stage in ("script", "images"):
        run.write_checkpoint(checkpoint(stage, "success"))
    run.append_event("script", "success", 1)
    assert look.next_stage_after("script") == "videos"
    Run(run.dir.parent, run.run_id).append_event("script", "reset", 1)
    run.remove_checkpoint("script")
    assert look.next_stage_after("script") == "script"  # someone appended: a full look


def test_unreadable_manifest_reads_as_empty_with_a_warning(
    run: Run, caplog: pytest.LogCaptureFixture
):
    """A manifest that cannot be opened (here a folder in its place) reads as empty."""
    manifest = run.dir / "manifest.json"
    manifest.unlink()
    manifest.mkdir()
    with caplog.at_level(logging.WARNING, logger="sparkle.runstore"):
        assert run.events() == []
    assert any("manifest" in r.getMessage() for r in caplog.records)


def test_append_event_refuses_an_unknown_status(run: Run):
    """Only the documented event statuses go into the manifest."""
    with pytest.raises(ValueError):
        run.append_event("script", "exploded", 1)
    assert run.events() == []


# -- status ----------------------------------------------------------------------------------


def test_new_run_is_queued(run: Run):
    """A run with no checkpoints is queued."""
    assert run.status() is RunStatus.queued


@pytest.mark.parametrize("status", ["begin", "success"])
def test_run_with_some_checkpoints_is_running(run: Run, status: str):
    """A run with a started or finished stage, and not all done, is running."""
    run.write_checkpoint(checkpoint("script", "success"))
    run.write_checkpoint(checkpoint("images", status))
    assert run.status() is RunStatus.running


def test_run_with_a_failed_stage_is_failed(run: Run):
    """A failed checkpoint makes the run failed, whatever else succeeded."""
    run.write_checkpoint(checkpoint("script", "success"))
    run.write_checkpoint(checkpoint("images", "failed"))
    assert run.status() is RunStatus.failed


def test_run_with_every_stage_succeeded_is_succeeded_with_qa_decision(run: Run):
    """Seven success checkpoints make the run succeeded; the QA decision is shown beside it."""
    for stage in STAGES:
        run.write_checkpoint(checkpoint(stage, "success", decision="approve"))
    assert run.status() is RunStatus.succeeded
    assert run.qa_decision() == "approve"
    assert run.next_stage() is None


def test_cancelled_run_is_cancelled_until_uncancelled(run: Run):
    """The cancel marker wins over checkpoints; removing it restores the derived status."""
    run.write_checkpoint(checkpoint("script", "failed"))
    run.set_cancelled(True)
    assert run.status() is RunStatus.cancelled
    run.set_cancelled(False)
    run.set_cancelled(False)
    assert run.status() is RunStatus.failed


def test_damaged_checkpoint_counts_as_not_started(run: Run):
    """A damaged checkpoint file does not make a queued run look started."""
    (run.dir / "checkpoints" / "script.json").write_bytes(b"{")
    assert run.status() is RunStatus.queued


def test_next_stage_is_the_first_without_success(run: Run):
    """The stage to resume is the first one without a success checkpoint."""
    run.write_checkpoint(checkpoint("script", "success"))
    run.write_checkpoint(checkpoint("images", "success"))
    run.write_checkpoint(checkpoint("videos", "failed"))
    assert run.next_stage() == "videos"


# -- listing ---------------------------------------------------------------------------------


def test_runs_lists_only_folders_with_a_plan(store: RunStore):
    """runs() returns real runs sorted by id, skipping stray folders, files and odd names."""
    # Given two runs and some clutter in the runs folder
    store.create(example_plan(run_id="b-run"))
    store.create(example_plan(run_id="a-run"))
    (store.root / "no-plan").mkdir()
    (store.root / "no-plan" / "manifest.jsonl").write_text("")
    (store.root / "-odd").mkdir()
    (store.root / "-odd" / "movie_plan.json").write_text("{}")
    (store.root / "stray.json").write_text("{}")
    # Then only the two runs are listed, in id order
    assert [r.run_id for r in store.runs()] == ["a-run", "b-run"]


def test_runs_of_a_missing_folder_is_empty(tmp_path: Path):
    """A runs folder that does not exist yet holds no runs."""
    assert RunStore(tmp_path / "absent").runs() == []


# -- paths -----------------------------------------------------------------------------------


def test_path_inside_the_run_is_resolved(run: Run):
    """A relative path inside the run folder resolves to an absolute path under it."""
    resolved = run.path("frames", "s1_start.png")
    assert resolved == run.dir.resolve() / "frames" / "s1_start.png"
    assert run.path() == run.dir.resolve()


@pytest.mark.parametrize(
    "parts",
    [("../x",), ("..", "x"), ("frames", "..", "..", "x"), ("/etc/passwd",), ("frames", "/tmp/x")],
    ids=["dotdot", "dotdot-part", "climb", "absolute", "absolute-part"],
)
def test_path_outside_the_run_is_refused(run: Run, parts: tuple[str, ...]):
    """A path that resolves outside the run folder raises UnsafePathError naming it."""
    with pytest.raises(UnsafePathError, match="outside run folder"):
        run.path(*parts)


def test_path_through_a_symlink_out_of_the_run_is_refused(run: Run, tmp_path: Path):
    """A symlink inside the run pointing outside cannot be used to escape it."""
    # Given a folder in the run that is a symlink to somewhere else
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run.dir / "frames").symlink_to(elsewhere)
    # Then paths through it are refused
    with pytest.raises(UnsafePathError):
        run.path("frames", "s1.png")


def test_path_through_a_symlink_inside_the_run_is_allowed(run: Run):
    """A symlink that stays inside the run folder is fine."""
    (run.dir / "clips").mkdir()
    (run.dir / "latest").symlink_to(run.dir / "clips")
    assert run.path("latest", "c.mp4") == run.dir.resolve() / "clips" / "c.mp4"


@pytest.mark.parametrize("bad", ["../x", "/abs", "..", "a/b", ""])
def test_run_refuses_unsafe_run_ids(tmp_path: Path, bad: str):
    """A Run cannot be made for an id that is not path-safe."""
    with pytest.raises(UnsafePathError):
        Run(tmp_path, bad)


def test_canonical_plan_json_is_compact_and_sorted():
    """The canonical form has sorted keys and no whitespace, so equal plans hash equally."""
    text = canonical_plan_json(example_plan())
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert text.startswith('{"characters":')


def test_state_files_follow_the_umask_like_media(tmp_path: Path):
    """JSON state files are created with the umask applied (0644 under 022), not 0600, so
    a runs folder shared through group permissions is readable by the group."""
    import os

    from sparkle import atomic

    old = os.umask(0o022)
    try:
        atomic.write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_a_symlinked_checkpoint_is_not_read_through(run: Run, tmp_path: Path):
    """A checkpoint replaced by a symlink (to a file outside the run) is not followed: the
    stage reads as not done instead of trusting a file outside the run folder."""
    outside = tmp_path / "elsewhere.json"
    outside.write_text(
        Checkpoint(stage="script", status="success", timestamp=1.0, attempt=1).model_dump_json()
    )
    run.checkpoint_path("script").symlink_to(outside)
    assert run.checkpoint("script") is None
    assert not run.stage_done("script")


def test_history_of_a_run_made_before_the_append_only_manifest_is_kept(run: Run):
    """A run folder from before manifest.jsonl keeps its events in manifest.json: they come
    first in the history, so attempts and crash counts carry on across the upgrade."""
    legacy = [
        {"run_id": run.run_id, "stage": "script", "status": "success", "timestamp": 1.0,
         "attempt": 1, "error": None, "metadata": {}},
        {"run_id": run.run_id, "stage": "images", "status": "begin", "timestamp": 2.0,
         "attempt": 1, "error": None, "metadata": {}},
        {"run_id": run.run_id, "stage": "images", "status": "begin", "timestamp": 3.0,
         "attempt": 2, "error": None, "metadata": {}},
    ]
    (run.dir / "manifest.json").write_text(json.dumps({"run_id": run.run_id,
                                                       "events": legacy}, indent=2))
    assert [e.timestamp for e in run.events()] == [1.0, 2.0, 3.0]
    assert run.attempts("images") == 2
    assert run.state().crashed_begins("images") == 2
    run.append_event("images", "begin", 3)
    assert [e.attempt for e in run.events() if e.stage == "images"] == [1, 2, 3]
    assert run.state().crashed_begins("images") == 3


def test_an_append_still_being_written_is_not_read_and_not_warned_about(
    run: Run, caplog: pytest.LogCaptureFixture
):
    """A reader that catches another process mid-append (no final newline yet) reads the
    events before it, silently; the record is read once it is complete."""
    (complete,) = legacy_lines(run, "begin")
    write_legacy_log(run, complete + complete[:40])  # the first 40 bytes of a second record
    with caplog.at_level(logging.WARNING, logger="sparkle.runstore"):
        assert [e.status for e in run.events()] == ["begin"]
    assert caplog.records == []


def test_a_symlinked_plan_is_refused_with_a_clear_error(run: Run, tmp_path: Path):
    """A plan replaced by a symbolic link is not read through; the error names the file."""
    from sparkle.errors import UnsafePathError

    outside = tmp_path / "outside.json"
    outside.write_bytes((run.dir / "movie_plan.json").read_bytes())
    (run.dir / "movie_plan.json").unlink()
    (run.dir / "movie_plan.json").symlink_to(outside)
    with pytest.raises(UnsafePathError, match=r"movie_plan\.json is a symbolic link"):
        run.plan()


@pytest.mark.parametrize(
    ("checkpoint_status", "last_event", "done"),
    [
        ("success", None, True),
        (None, "success", True),
        ("success", "reset", True),  # a reset under way: its checkpoint not removed yet
        ("begin", "success", True),  # a stray begin written over a success
        ("failed", "fail", False),
        (None, "reset", False),
        ("begin", "begin", False),
        (None, None, False),
    ],
)
def test_a_stage_is_done_when_its_checkpoint_or_its_last_event_says_success(
    run: Run, checkpoint_status: str | None, last_event: str | None, done: bool
):
    """The seed contract's resume rule: a stage is skipped when either its checkpoint says
    success or the manifest's last event for it is a success."""
    if last_event is not None:
        run.append_event("script", "begin", 1)
        run.append_event("script", last_event, 1)
    if checkpoint_status is not None:
        run.write_checkpoint(checkpoint("script", checkpoint_status))
    assert run.stage_done("script") is done
    assert run.state(history_first=True).stage_done("script") is done


def test_stages_the_history_shows_done_are_decided_without_reading_their_checkpoints(
    run: Run, monkeypatch: pytest.MonkeyPatch
):
    """A worker's look at a run decides from the history (one file) that the stages before
    the current one are done: with five stages done it reads only the checkpoint of the
    sixth, instead of one file per stage for every message."""
    for stage in STAGES[:5]:
        run.write_checkpoint(checkpoint(stage, "success"))
        run.append_event(stage, "success", 1)
    reads: list[str] = []
    real = Run.checkpoint

    def counting(self: Run, stage: str) -> Checkpoint | None:
        reads.append(stage)
        return real(self, stage)

    monkeypatch.setattr(Run, "checkpoint", counting)
    look = run.state(history_first=True)
    assert look.next_stage() == "assemble"
    assert look.attempts("assemble") == 0 and look.crashed_begins("assemble") == 0
    assert reads == ["assemble"]


def test_an_append_waits_for_the_lock_on_the_run(run: Run):
    """Events are added under an exclusive ``flock`` on the manifest's lock file: one added while
    another process holds it waits for the lock, then lands after what the holder wrote."""
    import fcntl

    holder = os.open(run.dir / ".manifest.lock", os.O_RDWR | os.O_CREAT)  # another holder
    fcntl.flock(holder, fcntl.LOCK_EX)
    appender = threading.Thread(target=run.append_event, args=("script", "success", 1))
    try:
        appender.start()
        appender.join(0.5)
        assert appender.is_alive(), "the append did not wait for the lock"
        theirs = {"run_id": run.run_id, "stage": "script", "status": "begin",
                  "timestamp": 1.0, "attempt": 1, "error": None, "metadata": {}}
        (run.dir / "manifest.json").write_text(json.dumps({"run_id": run.run_id,
                                                           "events": [theirs]}))
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        appender.join(10)
    assert [e.status for e in run.events()] == ["begin", "success"]


class _CountingEventList:
    """Stands in for history_cache._EVENT_LIST, counting the manifest lines it validates."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.lines = 0

    def validate_json(self, data: bytes) -> Any:
        parsed = self.real.validate_json(data)
        self.lines += len(parsed)
        return parsed


def test_reading_a_history_again_parses_only_the_lines_appended_since(
    run: Run, monkeypatch: pytest.MonkeyPatch
):
    """Every stage message reads its run's whole history; the lines parsed by an earlier
    read are not parsed again while the file still begins with them."""
    counting = _CountingEventList(history_cache._EVENT_LIST)
    monkeypatch.setattr(history_cache, "_EVENT_LIST", counting)
    for stage in STAGES[:3]:
        run.append_event(stage, "begin", 1)
        run.append_event(stage, "success", 1)
    assert len(run.events()) == 6 and counting.lines == 6
    run.append_event("tts", "begin", 1)
    run.append_event("tts", "success", 1)
    events = Run(run.dir.parent, run.run_id).events()  # another look, as the next message's
    assert [(e.stage, e.status) for e in events] == [
        (stage, status) for stage in STAGES[:4] for status in ("begin", "success")]
    assert counting.lines == 8  # only the two new lines


def test_a_history_rewritten_by_hand_is_parsed_afresh(run: Run):
    """The parsed history is reused only while the file begins with the bytes it came from:
    a manifest edited or replaced by hand, even to the same size, reads as it is now."""
    run.append_event("script", "begin", 1)
    run.append_event("script", "fail", 1)
    assert [e.status for e in run.events()] == ["begin", "fail"]
    manifest = run.dir / "manifest.json"
    edited = manifest.read_bytes().replace(b'"begin"', b'"reset"')  # same length
    manifest.write_bytes(edited)
    assert [e.status for e in run.events()] == ["reset", "fail"]
    manifest.write_bytes(b"")
    assert run.events() == []


def test_a_damaged_line_is_reported_on_every_read(run: Run, caplog: pytest.LogCaptureFixture):
    """A history with a damaged line is not kept parsed: each read skips the line again and
    says so again, naming its line number, also once more lines follow it."""
    begin, success = legacy_lines(run, "begin", "success")
    write_legacy_log(run, begin + b"not an event\n")
    with caplog.at_level(logging.WARNING, logger="sparkle.runstore"):
        assert [e.status for e in run.events()] == ["begin"]
        write_legacy_log(run, begin + b"not an event\n" + success)
        assert [e.status for e in run.events()] == ["begin", "success"]
    warnings = [r.getMessage() for r in caplog.records if "line 2" in r.getMessage()]
    assert len(warnings) == 2


def legacy_lines(run: Run, *statuses: str) -> list[bytes]:
    """Script events of ``run`` with ``statuses``, each as a line of the append-only
    ``manifest.jsonl`` that Sparkle wrote before manifest.json (newline included)."""
    return [json.dumps({"run_id": run.run_id, "stage": "script", "status": status,
                        "timestamp": 1.0 + i, "attempt": 1, "error": None,
                        "metadata": {}}).encode() + b"\n"
            for i, status in enumerate(statuses)]


def write_legacy_log(run: Run, data: bytes) -> None:
    """Make ``run`` a run folder as Sparkle wrote it before manifest.json: its history in
    ``manifest.jsonl`` (``data``) and no manifest.json."""
    (run.dir / "manifest.json").unlink(missing_ok=True)
    (run.dir / "manifest.jsonl").write_bytes(data)


def test_a_run_written_with_manifest_jsonl_reads_resumes_and_moves_into_manifest_json(
        run: Run):
    """A run folder as today's Sparkle wrote it (manifest.jsonl only) reads its history;
    the next event moves it into manifest.json (a valid RunManifest) and removes the log."""
    # Given a run whose history is in manifest.jsonl: script done, images begun
    lines = legacy_lines(run, "begin", "success")
    write_legacy_log(run, b"".join(lines) + json.dumps(
        {"run_id": run.run_id, "stage": "images", "status": "begin", "timestamp": 5.0,
         "attempt": 1, "error": None, "metadata": {}}).encode() + b"\n")
    # Then it reads as it did
    assert run.stage_done("script") and run.next_stage() == "images"
    assert run.state().crashed_begins("images") == 1
    # When the next event is added
    run.append_event("images", "begin", 2)
    # Then the history is all in manifest.json, in order, and the log is gone
    assert not (run.dir / "manifest.jsonl").exists()
    document = json.loads((run.dir / "manifest.json").read_bytes())
    assert [(e["stage"], e["status"]) for e in document["events"]] == [
        ("script", "begin"), ("script", "success"), ("images", "begin"), ("images", "begin")]
    assert run.state().crashed_begins("images") == 2


def test_a_log_already_moved_into_manifest_json_is_not_read_twice(run: Run):
    """A writer that died after moving manifest.jsonl into manifest.json but before
    removing it leaves both: the history reads each event once."""
    # Given a manifest.json holding the log's events, and the log still there
    lines = legacy_lines(run, "begin", "success")
    write_legacy_log(run, b"".join(lines))
    run.append_event("images", "begin", 1)
    document = json.loads((run.dir / "manifest.json").read_bytes())
    document["events"] = document["events"][:2]
    (run.dir / "manifest.json").write_text(json.dumps(document))
    (run.dir / "manifest.jsonl").write_bytes(b"".join(lines))
    # Then the history holds each event once, and so does manifest.json after one more
    assert [e.status for e in run.events()] == ["begin", "success"]
    run.append_event("images", "begin", 1)
    assert len(json.loads((run.dir / "manifest.json").read_bytes())["events"]) == 3


def test_an_event_of_a_kind_this_version_does_not_know_is_skipped_and_kept(
        run: Run, caplog: pytest.LogCaptureFixture):
    """The manifest stays open to more kinds of events (a newer Sparkle's): one this version
    cannot read is skipped with a warning, the others read, and it is kept when the
    manifest is rewritten."""
    # Given a manifest (re-indented by a tool) with an event of an unknown status
    unknown = {"run_id": run.run_id, "stage": "qa", "status": "a_kind_from_the_future",
               "timestamp": 2.0, "attempt": 1, "error": None, "metadata": {"by": "x"}}
    (run.dir / "manifest.json").write_text(json.dumps(
        {"run_id": run.run_id, "events": [unknown]}, indent=2))
    with caplog.at_level(logging.WARNING, logger="sparkle.runstore"):
        assert run.events() == []
    assert any("events[0]" in r.getMessage() for r in caplog.records)
    # When an event is added
    run.append_event("script", "begin", 1)
    # Then both are in the file, the unknown one unchanged
    events = json.loads((run.dir / "manifest.json").read_bytes())["events"]
    assert events[0] == unknown and events[1]["status"] == "begin"
    assert [e.status for e in run.events()] == ["begin"]

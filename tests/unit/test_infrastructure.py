"""Infrastructure failures: messages naming the file, the cause and the disk; a run folder
that is made whole or not at all; ffmpeg exit codes that carry an errno; short errors in
`sparkle status`."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from sparkle import atomic
from sparkle.adapters import ffmpeg
from sparkle.infrastructure import (
    InfrastructureError,
    bookkeeping,
    describe_file_system,
    from_os_error,
    is_infrastructure,
    mount_point,
    naming,
)
from sparkle.plans import load_plan_file
from sparkle.runstore import RunStore
from sparkle.statuscache import STATUS_ERROR_CHARS, first_line, render_json, render_text

PLANS = Path(__file__).parents[1] / "data" / "plans"


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test double of a full disk: every os.write raises ENOSPC (as the kernel does)."""

    def write(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)


def test_message_names_the_file_the_cause_and_the_file_system(tmp_path):
    """An ENOSPC becomes one message: which file, what happened, on which disk, what to do."""
    # Given an ENOSPC met writing a file
    target = tmp_path / "runs" / "r1" / "checkpoints" / "script.json"
    exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    # When it is described
    failure = from_os_error(exc)
    # Then the message names all of it
    assert str(failure).startswith(f"cannot write {target}: No space left on device (ENOSPC) "
                                   f"on the file system mounted at {mount_point(tmp_path)} (")
    assert " free of " in str(failure)
    assert failure.advice == "free some space there"
    assert (failure.path, failure.errno) == (str(target), errno.ENOSPC)


def test_mount_point_of_a_path_not_yet_made_is_that_of_its_parent(tmp_path):
    # Given a folder that does not exist yet, then its disk is its nearest parent's
    assert mount_point(tmp_path / "a" / "b") == mount_point(tmp_path)
    assert os.path.ismount(mount_point(tmp_path))
    assert describe_file_system("/").startswith("the file system mounted at / (")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                  errno.EPERM, errno.EIO])
def test_storage_errors_are_infrastructure(code):
    assert is_infrastructure(OSError(code, os.strerror(code)))


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.ELOOP])
def test_other_os_errors_are_not(code):
    # (a missing file or a link where a file should be is a bug or bad input, not a disk)
    assert not is_infrastructure(OSError(code, os.strerror(code)))


def test_bookkeeping_converts_only_storage_errors(tmp_path):
    # When a storage error is raised inside the block, then it comes out as an
    # InfrastructureError naming the path given
    expected = r"cannot create run folder .*/r1: Read-only file system \(EROFS\)"
    with pytest.raises(InfrastructureError, match=expected), \
            bookkeeping("cannot create run folder", tmp_path / "r1"):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    # And anything else passes unchanged
    with pytest.raises(FileNotFoundError), bookkeeping():
        raise FileNotFoundError(errno.ENOENT, "gone", "x")


def test_naming_adds_the_file_to_an_error_that_names_none(tmp_path):
    # Given an error from os.write, which names no file, then naming() names the one given
    with pytest.raises(OSError) as caught, naming(tmp_path / "m.jsonl"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(tmp_path / "m.jsonl"))
    # And an error naming a file already keeps it
    with pytest.raises(OSError) as caught, naming(tmp_path / "other"):
        raise OSError(errno.EIO, "I/O error", "first")
    assert caught.value.filename == "first"


def test_atomic_write_on_a_full_disk_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    # Given a full disk
    full_disk(monkeypatch)
    # When a JSON file is written atomically
    with pytest.raises(OSError) as caught:
        atomic.write_json(tmp_path / "state.json", {"a": 1})
    # Then the error names the file, and neither it nor a temp file is left
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "state.json")
    assert list(tmp_path.iterdir()) == []


def test_run_folder_is_made_whole_or_not_at_all(tmp_path, monkeypatch):
    """A full disk while a run folder is made leaves nothing behind (no half-made run that
    `sparkle runs` cannot list); once space is back the run is made."""
    store = RunStore(tmp_path / "runs")
    plan = load_plan_file(PLANS / "lighthouse.json", 1 << 20)
    # Given a full disk
    with monkeypatch.context() as patch:
        full_disk(patch)
        # When the run is created
        with pytest.raises(InfrastructureError, match=r"cannot create run folder .*ENOSPC"):
            store.create(plan)
    # Then the runs folder holds nothing, not even a hidden temporary folder
    assert list((tmp_path / "runs").iterdir()) == []
    # When space is back, the run is made, whole
    run, created = store.create(plan)
    assert created and run.plan() == plan
    assert [r.run_id for r in store.runs()] == [run.run_id]
    assert sorted(p.name for p in run.dir.iterdir()) == [
        "asset_refs.json", "checkpoints", "manifest.json", "movie_plan.json"]


def test_a_run_folder_left_without_a_plan_is_completed(tmp_path):
    """A folder without a plan (a crash of an older version that built runs in place) is
    completed by the next create, not refused."""
    store = RunStore(tmp_path / "runs")
    plan = load_plan_file(PLANS / "lighthouse.json", 1 << 20)
    run, _ = store.create(plan)
    (run.dir / "movie_plan.json").unlink()
    # When the same plan is created again, then the run is made in that folder
    again, created = store.create(plan)
    assert created and again.dir == run.dir and again.plan() == plan


# -- ffmpeg exit codes ---------------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [
    (228, errno.ENOSPC),  # 256 - 28
    (251, errno.EIO),
    (226, errno.EROFS),
    (234, errno.EINVAL),
    (183, None),  # AVERROR_INVALIDDATA, not an errno
    (255, None),  # ffmpeg's exit after a signal
    (1, None),
    (0, None),
])
def test_ffmpeg_exit_codes_carrying_an_errno_are_read_back(code, expected):
    assert ffmpeg.exit_errno(code) == expected


def test_ffmpeg_out_of_disk_says_so(tmp_path, monkeypatch):
    """ffmpeg exiting 228 is reported as "No space left on device", naming the disk of the
    file it was writing, even when that line is not in the last lines of its stderr."""
    # Given an ffmpeg (a test double) that runs out of disk, then prints encoder statistics
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'Error closing file: No space left on device' >&2\n"
                    "for i in $(seq 20); do echo \"[libx264] stats line $i\" >&2; done\n"
                    "exit 228\n")
    fake.chmod(0o755)
    monkeypatch.setattr(ffmpeg, "ffmpeg_exe", lambda: str(fake))
    # When it encodes a clip
    with pytest.raises(ffmpeg.FFmpegResourceError) as caught:
        ffmpeg.run_ffmpeg(["-i", "in.png", str(tmp_path / "clip.mp4")], doing="encoding clip")
    # Then the message says what happened and where, first
    first = str(caught.value).splitlines()[0]
    assert first.startswith("ffmpeg failed: No space left on device (ENOSPC, exit 228) writing "
                            f"{tmp_path / 'clip.mp4'} on the file system mounted at ")
    assert first.endswith("while encoding clip")


def test_other_ffmpeg_failures_are_unchanged(tmp_path, monkeypatch):
    # Given an ffmpeg that fails with invalid data (exit 183), then it is a plain failure
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'Invalid data found when processing input' >&2\nexit 183\n")
    fake.chmod(0o755)
    monkeypatch.setattr(ffmpeg, "ffmpeg_exe", lambda: str(fake))
    with pytest.raises(ffmpeg.FFmpegError, match=r"ffmpeg failed \(exit 183\) while probing"):
        ffmpeg.run_ffmpeg(["-i", "x"], doing="probing")


# -- sparkle status ------------------------------------------------------------------------


def test_status_shows_the_first_line_of_a_long_error():
    """`sparkle status` shows an error's first line and where the rest is."""
    error = "FFmpegResourceError: ffmpeg failed: No space left on device\ncommand: ffmpeg -i x"
    assert first_line(error) == ("FFmpegResourceError: ffmpeg failed: No space left on device "
                                 "(whole error: --json or `sparkle timeline`)")
    # A short one-line error is shown as it is
    assert first_line("PermanentStageError: bad input") == "PermanentStageError: bad input"
    # A long line is cut
    shown = first_line("x" * 1000)
    assert shown.startswith("x" * (STATUS_ERROR_CHARS - 1) + "… (whole error")
    # And the status view shows it on the stage's line, the JSON view all of it
    view = {"run_id": "r1", "status": "failed", "qa_decision": None, "final_movie": None,
            "stages": [{"stage": "videos", "status": "failed", "attempt": 3,
                        "duration_sec": None, "error": error}]}
    text = render_text(view, "runs/r1")
    assert text.splitlines()[1].endswith("No space left on device (whole error: --json or "
                                         "`sparkle timeline`)")
    assert [line.split()[0] for line in text.splitlines()] == ["r1", "videos", "total"]
    assert json.loads(render_json(view))["stages"][0]["error"] == error

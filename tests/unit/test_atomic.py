"""Crash-safe writes: which files a stage's success flushes to disk first."""

from __future__ import annotations

import os
import time

import pytest

from sparkle import atomic


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths fsynced from now on, in order."""
    seen: list[str] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    return seen


def test_files_changed_before_the_attempt_are_left_alone(tmp_path, fsynced):
    """Only what changed since the attempt began is flushed: older outputs were flushed by
    the attempt that wrote them, and flushing each again would cost every stage."""
    old = tmp_path / "frames" / "start.png"
    old.parent.mkdir()
    old.write_bytes(b"png")
    assert atomic.sync_changed([old], time.time() + 60, tmp_path) == 0
    assert fsynced == []


def test_a_copy_that_kept_its_old_mtime_is_still_flushed(tmp_path, fsynced):
    """A file copied with its source's times (shutil.copy2, rsync -t) is new all the same:
    ctime, which nothing can set back, decides."""
    began = time.time()
    copy = tmp_path / "clip.mp4"
    copy.write_bytes(b"mp4")
    os.utime(copy, (began - 86400, began - 86400))
    assert atomic.sync_changed([copy], began, tmp_path) == 1
    assert fsynced == [str(copy), str(tmp_path)]


def test_missing_paths_and_fifos_are_skipped_without_blocking(tmp_path, fsynced):
    """An output that is gone or is not a regular file is not opened: opening a FIFO for
    reading would wait for a writer forever."""
    began = time.time()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    real = tmp_path / "voice.wav"
    real.write_bytes(b"wav")
    paths = [tmp_path / "gone.png", fifo, real, real]
    assert atomic.sync_changed(paths, began, tmp_path) == 1
    assert fsynced == [str(real), str(tmp_path)]


def test_folders_outside_the_root_are_not_flushed(tmp_path, fsynced):
    """Folders are flushed from the file up to the run folder, not beyond it."""
    began = time.time()
    run_dir = tmp_path / "runs" / "r1"
    (run_dir / "audio").mkdir(parents=True)
    voice = run_dir / "audio" / "line.wav"
    voice.write_bytes(b"wav")
    atomic.sync_changed([voice], began, run_dir)
    assert fsynced == [str(voice), str(run_dir / "audio"), str(run_dir)]

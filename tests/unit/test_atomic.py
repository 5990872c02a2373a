"""Crash-safe writes: what a stage's success flushes to disk first (atomic.sync_outputs)."""

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


def test_a_file_written_long_before_is_flushed_too(tmp_path, fsynced):
    """An output kept from an earlier attempt (one that failed, and flushed nothing) is
    flushed as well: its age says nothing about whether it reached the disk."""
    old = tmp_path / "frames" / "start.png"
    old.parent.mkdir()
    old.write_bytes(b"png")
    os.utime(old, (time.time() - 86400, time.time() - 86400))
    assert atomic.sync_outputs([old], tmp_path) == 1
    assert fsynced == [str(old), str(tmp_path / "frames"), str(tmp_path)]


def test_missing_paths_and_fifos_are_skipped_without_blocking(tmp_path, fsynced):
    """An output that is gone or is not a regular file is not flushed, and a FIFO is
    opened without blocking (a blocking open would wait for a writer forever)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    real = tmp_path / "voice.wav"
    real.write_bytes(b"wav")
    paths = [tmp_path / "gone.png", fifo, real, real]
    assert atomic.sync_outputs(paths, tmp_path) == 1
    assert fsynced == [str(real), str(tmp_path)]


def test_folders_outside_the_root_are_not_flushed(tmp_path, fsynced):
    """Folders are flushed from the file up to the run folder, not beyond it."""
    run_dir = tmp_path / "runs" / "r1"
    (run_dir / "audio").mkdir(parents=True)
    voice = run_dir / "audio" / "line.wav"
    voice.write_bytes(b"wav")
    atomic.sync_outputs([voice], run_dir)
    assert fsynced == [str(voice), str(run_dir / "audio"), str(run_dir)]


def test_a_symlink_flushes_its_target_and_the_folder_holding_the_link(tmp_path, fsynced):
    """A link is flushed as its target, and the folder holding the link is flushed too:
    else a power cut could lose the link while the success names it."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "frames").mkdir()
    target = tmp_path / "cache" / "x.png"
    target.write_bytes(b"png")
    link = tmp_path / "frames" / "a.png"
    link.symlink_to("../cache/x.png")
    assert atomic.sync_outputs([link], tmp_path) == 1
    assert fsynced[0] == str(target)
    assert {str(tmp_path / "frames"), str(tmp_path / "cache"), str(tmp_path)} <= set(fsynced)
    assert fsynced[-1] == str(tmp_path)


def test_a_folder_named_as_an_output_is_flushed_with_its_files(tmp_path, fsynced):
    """A folder among the outputs vouches for what is in it: the folder and the regular
    files directly inside are flushed."""
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "c1.gif").write_bytes(b"gif")
    (clips / "c2.gif").write_bytes(b"gif")
    assert atomic.sync_outputs([clips], tmp_path) == 2
    assert {str(clips / "c1.gif"), str(clips / "c2.gif"), str(clips), str(tmp_path)} == set(
        fsynced)


def test_a_failed_flush_names_the_file(tmp_path, monkeypatch):
    """An fsync error (EIO, ENOSPC) fails the attempt with a message naming the file."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"mp4")

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match=r"cannot flush .*clip\.mp4 to disk: Input/output error"):
        atomic.sync_outputs([clip], tmp_path)

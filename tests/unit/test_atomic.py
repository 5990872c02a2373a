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


def test_a_file_named_before_is_flushed_only_if_it_changed_since(tmp_path, fsynced):
    """A path the refs named before the attempt was flushed by the stage that named it:
    it is flushed again only if it changed since the attempt began (each stage's refs
    name every earlier stage's media too)."""
    kept = tmp_path / "frames" / "start.png"
    kept.parent.mkdir()
    kept.write_bytes(b"png")
    assert atomic.sync_outputs([], tmp_path, named_before=[kept], since=time.time() + 60) == 0
    assert fsynced == []
    assert atomic.sync_outputs([], tmp_path, named_before=[kept], since=time.time() - 60) == 1
    assert fsynced[0] == str(kept)


def test_dot_dot_in_a_path_never_flushes_folders_above_the_root(tmp_path, fsynced):
    """A path that goes up and back down (``a/../../r1/x``) is normalised first: only the
    folders between the file and the run folder are flushed."""
    run_dir = tmp_path / "runs" / "r1"
    (run_dir / "a" / "b").mkdir(parents=True)
    clip = run_dir / "x.mp4"
    clip.write_bytes(b"mp4")
    atomic.sync_outputs([run_dir / "a" / "b" / ".." / ".." / ".." / "r1" / "x.mp4"], run_dir)
    assert fsynced == [str(clip), str(run_dir)]


def test_a_socket_among_the_outputs_is_skipped(tmp_path, fsynced):
    """A socket cannot be opened (ENXIO): skipped like a FIFO, not an error."""
    import socket

    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        assert atomic.sync_outputs([path], tmp_path) == 0
    finally:
        server.close()


def test_an_output_that_cannot_be_opened_is_logged_and_skipped(tmp_path, monkeypatch, caplog):
    """A file the worker may not open (another user's 0600 file, root_squash) cannot be
    flushed: that is logged, and the stage is not failed for it."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"mp4")
    real_open = os.open

    def refused(path, flags, *args):
        if str(path) == str(clip):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refused)
    assert atomic.sync_outputs([clip], tmp_path) == 0
    assert "cannot open" in caplog.text and "clip.mp4" in caplog.text


def test_dot_dot_after_a_symlink_flushes_the_file_the_system_finds(tmp_path, fsynced):
    """``link/../x`` is ``x`` beside the link's target, not beside the link: normalising
    the text alone would flush a file that is not there and miss the real one."""
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    real = tmp_path / "sub" / "x.bin"
    real.write_bytes(b"bin")
    (tmp_path / "link").symlink_to("sub/deep")
    assert atomic.sync_outputs([tmp_path / "link" / ".." / "x.bin"], tmp_path) == 1
    assert fsynced[0] == str(real)

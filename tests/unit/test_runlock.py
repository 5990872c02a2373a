"""The run's lock file inside one process, and saving asset refs as a merge (issue 17).

Between processes, the lock is tested with real processes in
tests/integration/test_run_lock.py and tests/acceptance/test_cli_race.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import fakeredis

from sparkle import refmerge, runlock
from sparkle.lease import Lease
from sparkle.runstore import Run
from sparkle.schemas import AssetRefs, AssetRefsShot


def test_holders_in_one_process_share_the_lock(tmp_path: Path):
    """`sparkle run` holds a run for its whole length and its stages take it again: the
    lock is the process's, counted, and freed by the last holder only."""
    # Given the run held twice by this process
    assert runlock.acquire(tmp_path)
    assert runlock.acquire(tmp_path)
    # When one holder lets go, then the other
    runlock.release(tmp_path)
    still = runlock.held_here(tmp_path)
    runlock.release(tmp_path)
    # Then the first release kept it, the second freed it
    assert still
    assert not runlock.held_here(tmp_path)


def test_this_process_is_never_reported_as_another_holder(tmp_path: Path):
    """Looking at a run this process holds (dispatcher kick, reaper) never reads as
    "another process works it", and looking never takes the lock."""
    # Given a run this process holds
    assert runlock.acquire(tmp_path)
    try:
        # When it looks for another holder
        other = runlock.other_holder(tmp_path)
    finally:
        runlock.release(tmp_path)
    # Then there is none, and a free run has none either
    assert other is None
    assert runlock.other_holder(tmp_path) is None


def test_fencing_fails_when_the_run_folder_was_replaced(tmp_path: Path):
    """The kernel's lock cannot expire, but the file can be replaced under it (a run folder
    removed and made again): the fencing check then fails and nothing is recorded."""
    # Given an embedded-mode lease holding the run's lock file
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    lease = Lease(client, "ns", "run-a", 30, lock_dir=tmp_path)
    assert lease.acquire()
    intact_before = lease.held()
    # When the lock file is replaced by another one
    (tmp_path / "new").write_text("")
    os.replace(tmp_path / "new", tmp_path / runlock.LEASE_FILE)
    # Then the lease no longer passes the fencing check
    try:
        assert intact_before
        assert not lease.held()
    finally:
        lease.release()
    assert not runlock.held_here(tmp_path)


def _refs(**shots: AssetRefsShot) -> AssetRefs:
    return AssetRefs(shots=dict(shots))


def test_merge_keeps_what_a_concurrent_writer_saved():
    """The issue's broken run: one process saved videos' clips, the other then saved tts'
    audio over refs read before: the clips must survive, and the audio be added."""
    # Given the refs both read, the clips another writer saved since, and tts' result
    base = _refs(s2=AssetRefsShot(start_frame="frames/s2_start.png"))
    current = _refs(s2=AssetRefsShot(start_frame="frames/s2_start.png", raw_clip="clips/s2.mp4"))
    ours = _refs(s2=AssetRefsShot(start_frame="frames/s2_start.png",
                                  dialogue_audio=["audio/s2/0.wav", "audio/s2/1.wav"]))
    # When tts' refs are merged into the file as it is now
    merged = refmerge.merge(base, ours, current)
    # Then both writers' refs are there
    assert merged.shots["s2"].raw_clip == "clips/s2.mp4"
    assert merged.shots["s2"].dialogue_audio == ["audio/s2/0.wav", "audio/s2/1.wav"]


def test_merge_applies_this_stages_removals_and_replacements():
    """What the stage changed wins, a removal too; what it left alone keeps the file's value."""
    base = AssetRefs(shots={"s1": AssetRefsShot(raw_clip="clips/old.mp4")},
                     extras={"gone": "x.txt", "kept": "k.txt"})
    ours = AssetRefs(shots={"s1": AssetRefsShot(raw_clip="clips/new.mp4")},
                     extras={"kept": "k.txt"})
    current = AssetRefs(shots={"s1": AssetRefsShot(raw_clip="clips/old.mp4",
                                                   final_video_clip="final/s1.mp4")},
                        extras={"gone": "x.txt", "kept": "k2.txt", "other": "o.txt"})
    merged = refmerge.merge(base, ours, current)
    assert merged.shots["s1"].raw_clip == "clips/new.mp4"
    assert merged.shots["s1"].final_video_clip == "final/s1.mp4"
    assert merged.extras == {"kept": "k2.txt", "other": "o.txt"}


def test_run_saves_refs_as_a_merge_atomically(tmp_path: Path):
    """Run.merge_asset_refs: the file on disk gets this stage's change and keeps the rest."""
    # Given a run whose refs another writer changed after this stage read them
    run = Run(tmp_path, "run-a")
    run.dir.mkdir()
    run.save_asset_refs(_refs(s1=AssetRefsShot(start_frame="frames/a.png")))
    _, base = run.asset_refs_as_read()
    run.save_asset_refs(_refs(s1=AssetRefsShot(start_frame="frames/a.png",
                                               raw_clip="clips/s1.mp4")))
    # When the stage saves its own change
    run.merge_asset_refs(base, _refs(s1=AssetRefsShot(start_frame="frames/a.png",
                                                      dialogue_audio=["audio/s1/0.wav"])))
    # Then the file holds both, and no temporary file is left
    saved = run.asset_refs().shots["s1"]
    assert (saved.raw_clip, saved.dialogue_audio) == ("clips/s1.mp4", ["audio/s1/0.wav"])
    assert sorted(p.name for p in run.dir.iterdir()) == [".lock", "asset_refs.json"]

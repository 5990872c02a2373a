"""A worker on Redis whose runs folder is full backs off and goes on once space is back.

The disk is a real tmpfs where the test may mount one; elsewhere the ``os.write`` ENOSPC
test double of :mod:`full_disk` (the test prints which).
"""

from __future__ import annotations

import collections
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from full_disk import ENOSPC_DOUBLE_DRAMATIQ, FULL_MARKER, fill, tmpfs

from sparkle import keys
from sparkle.adapters.testing import read_trace
from sparkle.runstore import RunStore
from sparkle.schemas import STAGES

BIN = Path(sys.executable).parent


def _wait_for(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.redis
def test_worker_backs_off_on_a_full_disk_and_finishes_once_space_is_back(
        redis_server, tmp_path, plans_dir):
    """A stage whose checkpoint cannot be written is sent again after a growing delay, not
    failed and not dead-lettered; the run finishes once space is back, each stage's adapter
    having run once."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "1m") as mounted:
        runs = disk / "runs"
        runs.mkdir(parents=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")},
            "SPARKLE_REDIS_URL": redis_server.url,
            "SPARKLE_RUNS_DIR": str(runs),
            "SPARKLE_ADAPTERS": "test",
            "SPARKLE_INFRA_RETRY_MIN_SEC": "0.2",
            "SPARKLE_INFRA_RETRY_MAX_SEC": "1",
        }
        # Given a run queued on Redis, and then the disk under its folder full
        submitted = subprocess.run([str(BIN / "sparkle"), "submit",
                                    str(plans_dir / "lighthouse.json")], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        if mounted:
            print("real tmpfs of 1 MB")
            filler = fill(disk, leave_bytes=12 * 1024)
            command = [str(BIN / "dramatiq"), "actors", "-p", "1", "-t", "2"]
        else:
            print("no mount allowed here: the os.write ENOSPC test double")
            filler = runs / FULL_MARKER
            filler.touch()
            env["SPARKLE_TEST_FULL_DIR"] = str(runs)
            command = [sys.executable, "-c", ENOSPC_DOUBLE_DRAMATIQ, "actors", "-p", "1",
                       "-t", "2"]
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out, stderr=out,
                                      start_new_session=True)
        try:
            # When a worker takes it
            def held_back() -> int:
                return log.read_text(errors="replace").count("no attempt counted")

            # Then it tries again and again, with a growing delay, naming the cause
            assert _wait_for(lambda: held_back() >= 3, 30), log.read_text()
            text = log.read_text()
            assert "No space left on device (ENOSPC)" in text
            assert "trying again in 0.2 s" in text and "trying again in 0.4 s" in text
            store = RunStore(runs)
            run = store.runs()[0]
            assert run.status().value in ("queued", "running")
            # When space is back
            filler.unlink()
            # Then the run finishes without any help
            assert _wait_for(lambda: run.status().value == "succeeded", 60), log.read_text()
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        # And no stage was failed or dead-lettered: the stages ran in order, one again only
        # where the disk refused to record its success (manifest.json is rewritten whole, so
        # the full disk may refuse the success after the adapter ran), never counted
        ran = [r["stage"] for r in read_trace(run.dir)]
        assert list(dict.fromkeys(ran)) == list(STAGES)
        assert all(count <= 2 for count in collections.Counter(ran).values()), ran
        events = json.loads((run.dir / "manifest.json").read_text())["events"]
        assert all(e["metadata"].get("infrastructure") for e in events if e["status"] == "fail")
        import redis

        client = redis.Redis.from_url(redis_server.url)
        assert client.zcard(keys.dead_letters("sparkle", "script")) == 0
        assert "Traceback" not in log.read_text()


def test_real_ffmpeg_out_of_disk_says_so(tmp_path):
    """The real ffmpeg writing onto a full disk exits 228; the error says "No space left on
    device" and names the disk (the unit tests cover the same with an ffmpeg double)."""
    from sparkle.adapters import ffmpeg, media

    disk = tmp_path / "disk"
    with tmpfs(disk, "256k") as mounted:
        if not mounted:
            pytest.skip("needs a real small file system (mount -t tmpfs, as root)")
        # Given a disk with 16 KB left
        fill(disk, leave_bytes=16 * 1024)
        # When ffmpeg encodes a clip larger than that onto it
        with pytest.raises(ffmpeg.FFmpegResourceError) as caught:
            ffmpeg.ffmpeg_to_file(["-f", "lavfi", "-i", "testsrc=duration=10:size=640x360",
                                   *media.VIDEO_CODEC_ARGS], disk / "clip.mp4",
                                  doing="encoding a test clip")
        # Then the first line says why and where
        first = str(caught.value).splitlines()[0]
        assert "No space left on device (ENOSPC, exit 228)" in first
        assert f"on the file system mounted at {disk} (tmpfs" in first
        # And it is raised from the OSError it stands for, naming the file: through it the
        # engine holds the stage back instead of failing it
        cause = caught.value.__cause__
        assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
        assert str(cause.filename).startswith(str(disk))

"""A full disk and read-only folders, through the real console script.

The file systems are real tmpfs mounts where the test may mount them (as root); elsewhere
the full disk is a test double (``os.write`` raising ENOSPC, :mod:`full_disk`) and the
read-only folder one without write permission. Each test prints which one it used.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from full_disk import ENOSPC_DOUBLE, FULL_MARKER, fill, mount_tmpfs, remount, tmpfs, unmount

BIN = Path(sys.executable).parent / "sparkle"


def sparkle(*args: str, cwd: Path, double: Path | None = None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; with ``double``, under the ENOSPC test double for that folder."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    command = [str(BIN), *args]
    if double is not None:
        command = [sys.executable, "-c", ENOSPC_DOUBLE, *args]
        env = {**env, "SPARKLE_TEST_FULL_DIR": str(double)}
    return subprocess.run(command, cwd=cwd, env={**clean, **env}, capture_output=True,
                          text=True, timeout=timeout)


def no_traceback(done: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback" not in done.stderr and "Traceback" not in done.stdout


def test_run_on_a_full_disk_exits_3_naming_the_disk_and_resumes_once_space_is_back(
        tmp_path, plans_dir):
    """A full runs folder stops `sparkle run` with exit 3, a message naming the file, the
    cause and the file system, and the resume command; that command finishes the run once
    space is back, and no stage is counted as failed."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "1m") as mounted:
        runs = disk / "runs"
        plan = str(plans_dir / "lighthouse.json")
        # Given a runs folder on a disk with room for a new run folder and no more
        if mounted:
            print("real tmpfs of 1 MB")
            runs.mkdir()
            filler = fill(disk, leave_bytes=12 * 1024)
            double = None
        else:
            print("no mount allowed here: the os.write ENOSPC test double")
            runs.mkdir(parents=True)
            filler = runs / FULL_MARKER
            filler.touch()
            double = runs
        # When I render a plan into it
        full = sparkle("run", plan, "--adapters", "test", "--runs-dir", str(runs),
                       cwd=tmp_path, double=double)
        # Then it stops at once with exit 3, saying what failed, where and how to go on
        assert full.returncode == 3, full.stderr
        assert no_traceback(full)
        assert "No space left on device (ENOSPC)" in full.stderr
        assert str(runs) in full.stderr
        if mounted:
            assert f"on the file system mounted at {disk} (tmpfs" in full.stderr
        resume_line = next(line for line in full.stderr.splitlines() if "resume with:" in line)
        command = shlex.split(resume_line.split("resume with: ", 1)[1])
        # When space is back and I run the printed command
        filler.unlink()
        resumed = sparkle(*command[1:], cwd=tmp_path, double=double)
        # Then the run finishes, every stage succeeded once, and none failed on the way
        assert resumed.returncode == 0, resumed.stderr
        run_dir = next(runs.iterdir())
        status = json.loads(sparkle("status", run_dir.name, "--json", "--runs-dir", str(runs),
                                    cwd=tmp_path).stdout)
        assert status["status"] == "succeeded"
        events = json.loads((run_dir / "manifest.json").read_text())["events"]
        assert [e["stage"] for e in events if e["status"] == "success"] == [
            "script", "images", "videos", "tts", "lipsync", "assemble", "qa"]
        assert all(e["metadata"].get("infrastructure") for e in events if e["status"] == "fail")


def test_run_on_a_disk_with_no_room_leaves_no_half_made_run(tmp_path, plans_dir):
    """With no room even for the run folder: exit 3 with one line naming the folder and the
    disk, and nothing left behind that `sparkle runs` cannot see; once space is back the
    same command creates and renders the run."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "1m") as mounted:
        if not mounted:
            pytest.skip("needs a real small file system (mount -t tmpfs, as root)")
        print("real tmpfs of 1 MB")
        runs = disk / "runs"
        runs.mkdir()
        # Given a disk with no room at all
        filler = fill(disk, leave_bytes=0)
        plan = str(plans_dir / "lighthouse.json")
        # When I render a plan into it
        full = sparkle("run", plan, "--adapters", "test", "--runs-dir", str(runs), cwd=tmp_path)
        # Then one clear line, exit 3, and no run folder, whole or half
        assert full.returncode == 3, full.stderr
        assert full.stderr.count("\n") == 1 and no_traceback(full)
        assert full.stderr.startswith(f"error: cannot create run folder {runs}/")
        assert f"No space left on device (ENOSPC) on the file system mounted at {disk}" \
            in full.stderr
        assert list(runs.iterdir()) == []
        # When space is back, the same command works
        filler.unlink()
        again = sparkle("run", plan, "--adapters", "test", "--runs-dir", str(runs),
                        cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        listed = sparkle("runs", "--runs-dir", str(runs), cwd=tmp_path)
        assert "succeeded" in listed.stdout


def _read_only_folder(tmp_path: Path) -> tuple[Path, str]:
    """A read-only folder: a tmpfs mounted read-only, or (not root) a folder without write
    permission. Returns it and the errno name to expect."""
    folder = tmp_path / "ro"
    if mount_tmpfs(folder, "64k"):
        (folder / "inbox").mkdir()
        remount(folder, read_only=True)
        print("real read-only tmpfs")
        return folder, "EROFS"
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere, and mounting is not allowed here")
    print("no mount allowed here: a folder without write permission")
    (folder / "inbox").mkdir(parents=True)
    folder.chmod(0o555)
    (folder / "inbox").chmod(0o555)
    return folder, "EACCES"


def test_run_into_a_read_only_folder_prints_one_line(tmp_path, plans_dir):
    """`sparkle run` into a read-only runs folder: exit 3 and one line naming it."""
    folder, cause = _read_only_folder(tmp_path)
    try:
        # When I render a plan into a read-only folder
        done = sparkle("run", str(plans_dir / "lighthouse.json"), "--adapters", "test",
                       "--runs-dir", str(folder / "runs"), cwd=tmp_path)
        # Then one line says which folder, why and what to do; exit 3
        assert done.returncode == 3
        assert done.stderr.count("\n") == 1 and no_traceback(done), done.stderr
        assert done.stderr.startswith(f"error: cannot create run folder {folder}/runs/")
        assert f"({cause})" in done.stderr
    finally:
        unmount(folder)
        folder.chmod(0o755)


def test_serve_on_a_read_only_inbox_prints_one_line(tmp_path):
    """`sparkle serve` on a read-only inbox: exit 3 at once with one line naming it."""
    folder, cause = _read_only_folder(tmp_path)
    try:
        # When I serve a read-only inbox
        started = time.monotonic()
        done = sparkle("serve", str(folder / "inbox"), "--adapters", "test", "--runs-dir",
                       str(tmp_path / "runs"), cwd=tmp_path, timeout=30)
        # Then it does not start: one line, exit 3
        assert done.returncode == 3, done.stderr
        assert done.stderr.count("\n") == 1 and no_traceback(done), done.stderr
        assert done.stderr.startswith(f"error: cannot write the inbox {folder}/inbox: ")
        assert f"({cause})" in done.stderr
        print(f"serve exited in {time.monotonic() - started:.1f} s")
    finally:
        unmount(folder)
        folder.chmod(0o755)

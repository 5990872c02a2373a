"""How fast ``sparkle run`` gives up on a full disk, and what it says (needs root: it mounts
a tmpfs).

For each amount of free space in ``--leave`` (KB), mounts a 1 MB tmpfs, fills it to leave
that much, runs ``sparkle run`` (test adapters) into it ``--repeat`` times, and prints the
exit code, the wall seconds to exit (median and worst) and the first line it printed. Then
frees the space and times the printed resume command.

Usage::

    sudo .venv/bin/python scripts/bench_full_disk.py                # 0 and 12 KB left, 5 times
    sudo .venv/bin/python scripts/bench_full_disk.py --leave 8 --repeat 10
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The ``sparkle`` console script beside this interpreter.
SPARKLE = Path(sys.executable).parent / "sparkle"

#: The plan rendered.
PLAN = Path(__file__).resolve().parent.parent / "tests" / "data" / "plans" / "lighthouse.json"


def fill(folder: Path, leave: int) -> Path:
    """A filler file leaving about ``leave`` bytes free on ``folder``'s file system."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    remaining = max(0, stats.f_bavail * stats.f_frsize - leave)
    with open(filler, "wb", buffering=0) as out:
        try:
            while remaining > 0:
                remaining -= out.write(b"\0" * min(1 << 16, remaining))
        except OSError:
            pass
    return filler


def one(disk: Path, leave_kb: int) -> tuple[int, float, str, list[str]]:
    """Exit code, seconds, first stderr line and the resume command of one full-disk run."""
    runs = disk / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    (disk / "filler").unlink(missing_ok=True)
    runs.mkdir()
    fill(disk, leave_kb * 1024)
    started = time.monotonic()
    done = subprocess.run([str(SPARKLE), "run", str(PLAN), "--adapters", "test", "--runs-dir",
                           str(runs)], capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    resume = [line.split("resume with: ", 1)[1] for line in done.stderr.splitlines()
              if "resume with: " in line]
    return done.returncode, seconds, errors[0] if errors else done.stderr[-300:], \
        shlex.split(resume[0]) if resume else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leave", type=int, action="append", help="KB left free (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sparkle-full-") as tmp:
        disk = Path(tmp) / "disk"
        disk.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                          check=False).returncode:
            raise SystemExit("cannot mount a tmpfs here (run as root)")
        try:
            for leave in args.leave or [0, 12]:
                results = [one(disk, leave) for _ in range(args.repeat)]
                seconds = [r[1] for r in results]
                codes = sorted({r[0] for r in results})
                print(f"{leave} KB left: exit {codes}, {statistics.median(seconds):.2f} s median, "
                      f"{max(seconds):.2f} s worst of {len(results)}")
                print(f"  {results[-1][2]}")
                command = results[-1][3]
                if command:
                    (disk / "filler").unlink()
                    started = time.monotonic()
                    resumed = subprocess.run([str(SPARKLE), *command[1:]], capture_output=True,
                                             text=True, timeout=300)
                    print(f"  space back: `{shlex.join(command)}` exit {resumed.returncode} "
                          f"in {time.monotonic() - started:.2f} s")
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)


if __name__ == "__main__":
    main()

"""Sparkle's hop rate in two or more source trees, trials rotated in one loop.

On a shared machine single ``bench_hops.py`` runs swing by tens of percent; trials of the
trees alternated in the same loop see the same load, and the ratio taken round by round
is what tells a change's cost. Each trial is ``bench_hops.bench_sparkle`` (200 runs through
``sparkle worker -p 1 -t 8``, no-op adapters) on a private redis-server, run with that
tree's own ``sparkle`` (make the trees with ``git archive <commit> | tar -x -C DIR``).

    python scripts/bench_hops_ab.py BASE_TREE OTHER_TREE... [--rounds 4] [--runs 200]
                                    [--dir /dev/shm]

Prints each round's rates, then each other tree's rate over the base's: median and range.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

#: Run in a child process with the tree's folders first on ``sys.path``.
TRIAL = r"""
import sys, tempfile
from pathlib import Path
tree, runs, base = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
sys.path[:0] = [tree, tree + "/scripts", tree + "/tests"]
import bench_hops
from redis_server import RedisServer
with tempfile.TemporaryDirectory(dir=base) as tmp:
    server = RedisServer(Path(tmp) / "redis")
    server.start()
    try:
        (Path(tmp) / "runs").mkdir()
        print(bench_hops.bench_sparkle(server, runs, Path(tmp) / "runs"))
    finally:
        server.stop()
"""


def trial(tree: str, runs: int, folder: str) -> float:
    """Hops per second of one trial of ``tree``."""
    done = subprocess.run([sys.executable, "-c", TRIAL, tree, str(runs), folder],
                          capture_output=True, text=True, cwd="/", check=False)
    if done.returncode:
        raise SystemExit(f"trial of {tree} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", help="source trees; the first is the base")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=200, help="runs per trial")
    parser.add_argument("--dir", default="", help="folder for the runs (default: temp)")
    args = parser.parse_args()
    trees: list[str] = args.trees
    ratios: dict[str, list[float]] = {tree: [] for tree in trees[1:]}
    for number in range(args.rounds):
        shift = number % len(trees)  # each tree goes first in turn
        rates = {tree: trial(tree, args.runs, args.dir) for tree in trees[shift:] + trees[:shift]}
        for tree in trees[1:]:
            ratios[tree].append(rates[tree] / rates[trees[0]])
        print(f"round {number + 1}: " + ", ".join(f"{t} {rates[t]:.0f}" for t in trees),
              flush=True)
    for tree, values in ratios.items():
        print(f"{tree} / {trees[0]}: median {statistics.median(values):.2f}, "
              f"range {min(values):.2f}-{max(values):.2f} ({len(values)} rounds)")


if __name__ == "__main__":
    main()

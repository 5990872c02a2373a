#!/usr/bin/env python
"""A reaper pass with many finished runs on disk costs about what it costs without them
(issue 22, item 1: the unfinished-run index).

Starts a private redis-server, creates ``--active`` runs and sends each one's first stage
(queued, their messages waiting: the runs a reaper must watch), then times a dry-run
reaper pass (``Reaper.run_once(dry_run=True, older_than=0)``, median of ``--repeat``):

1. with only the active runs on disk;
2. after ``--finished`` succeeded runs were added to the runs folder (copies of one run
   folder made through the RunStore API, ids replaced);
3. the same, with the index rebuilt from every folder on each pass (its key deleted
   first): what every pass cost before the index, and what one pass in
   ``REBUILD_INTERVAL_SEC`` (by one reaper of all) still costs;

and, as child processes, ``sparkle runs --status running|queued`` (from the index, the
fast path of :mod:`sparkle.entry`, and the same through the full CLI), ``sparkle runs``
(every folder) and ``sparkle --version`` (the CLI's start-up alone), each with its ratio to
the interpreter's start-up; embedded (no Redis), the same from the runs folder's own index;
and in process, the dashboard's runs listing (:mod:`sparkle.web.listing`) of the runs in
flight (from the index) and of every run (its snapshot of every folder).

Usage::

    .venv/bin/python scripts/bench_run_index.py [--active 100] [--finished 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

from bench_hops import engine_with_runs  # noqa: E402
from bench_scale import build_template  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from sparkle import keys  # noqa: E402
from sparkle.runindex import REBUILD_INTERVAL_SEC  # noqa: E402
from sparkle.runindex_folder import FolderRunIndex  # noqa: E402
from sparkle.runstore import CHECKPOINTS_DIR, MANIFEST_FILE, RunStore  # noqa: E402

#: The ``sparkle`` command of this virtualenv.
SPARKLE = str(Path(sys.executable).with_name("sparkle"))


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


#: Runs that share one copy of the template's files (ext4 allows 65,000 links to a file).
LINKS_PER_COPY = 50_000


def add_finished(root: Path, count: int) -> None:
    """Add ``count`` succeeded runs to ``root``, quickly enough for 100,000.

    One run is made through the RunStore API; each copy is that folder's files hard-linked
    (plan, asset refs, the seven checkpoints: nothing in them names the run; not its lock
    or cache dotfiles) and its manifest written with the run id replaced: two directories,
    nine links and one small file a run. Linked copies share inodes, so the page cache
    holds one of each; a listing that reads every folder is measured a little faster than
    over distinct files."""
    template = build_template(RunStore(root.parent / "template"), "succeeded", 0)
    linked = [str(p.relative_to(template.dir)) for p in sorted(template.dir.rglob("*"))
              if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(".")]
    manifest = (template.dir / MANIFEST_FILE).read_bytes()
    old_id = template.run_id.encode()
    sources: list[str] = []
    for number in range(count):
        if number % LINKS_PER_COPY == 0:  # a fresh copy of the files to link to
            copy = root.parent / f"template-files-{number}"
            for name in linked:
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                (copy / name).write_bytes((template.dir / name).read_bytes())
            sources = [str(copy / name) for name in linked]
        run_id = f"finished-{number:06d}"
        folder = f"{root}/{run_id}"
        os.mkdir(folder)
        os.mkdir(f"{folder}/{CHECKPOINTS_DIR}")
        for source, name in zip(sources, linked, strict=True):
            os.link(source, f"{folder}/{name}")
        with open(f"{folder}/{MANIFEST_FILE}", "wb") as out:
            out.write(manifest.replace(old_id, run_id.encode()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-run-index-") as tmp:
        folder = Path(tmp)
        server = RedisServer(folder / "redis")
        server.start()
        try:
            runs_dir = folder / "runs"
            engine, runs = engine_with_runs(server, runs_dir, args.active, "Active")
            for run in runs:
                engine.dispatcher.send(run.run_id, "script")
            from sparkle.redrive import Reaper

            reaper = Reaper(engine.store, engine.dispatcher, engine.settings)

            def one_pass() -> object:
                return reaper.run_once(dry_run=True, older_than=0)

            def rebuilding_pass() -> object:
                engine.client.delete(keys.unfinished_runs_fresh(engine.settings.namespace))
                return one_pass()

            only_active = timed(one_pass, args.repeat)
            started = time.perf_counter()
            add_finished(runs_dir, args.finished)
            built = time.perf_counter() - started
            engine.store.summaries()  # (their summary caches, as any listing leaves them)
            with_finished = timed(one_pass, args.repeat)
            rebuilding = timed(rebuilding_pass, args.repeat)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")},
                   "SPARKLE_REDIS_URL": server.url, "SPARKLE_RUNS_DIR": str(runs_dir)}

            def cli(*argv: str) -> Callable[[], object]:
                return lambda: subprocess.run([SPARKLE, *argv], env=env, check=True,
                                              capture_output=True, timeout=600)

            def full_cli(*argv: str) -> Callable[[], object]:
                """The same command through sparkle.cli, never sparkle.entry's fast path."""
                return lambda: subprocess.run(
                    [sys.executable, "-c", "from sparkle.cli import main; main()", *argv],
                    env=env, check=True, capture_output=True, timeout=600)

            listed = subprocess.run([SPARKLE, "runs", "--status", "queued"], env=env,
                                    check=True, capture_output=True, text=True).stdout
            assert len(listed.splitlines()) == args.active + 1, listed[-500:]
            child: dict[str, float] = {}
            child["interpreter"] = timed(lambda: subprocess.run(
                [sys.executable, "-c", "import sparkle.entry"], check=True), args.repeat)
            child["import redis"] = timed(lambda: subprocess.run(
                [sys.executable, "-c", "import sparkle.entry, redis"], check=True), args.repeat)
            child["version"] = timed(cli("--version"), args.repeat)
            child["running"] = timed(cli("runs", "--status", "running"), args.repeat)
            child["queued"] = timed(cli("runs", "--status", "queued"), args.repeat)
            child["full running"] = timed(full_cli("runs", "--status", "running"), args.repeat)
            child["everything"] = timed(cli("runs"), args.repeat)
            dashboard = dashboard_costs(engine, args.repeat)
            # Embedded (no SPARKLE_REDIS_URL): the runs folder's own index
            # (sparkle.runindex_folder), built once as a serve's reaper would
            FolderRunIndex(runs_dir).rebuild(engine.store)
            del env["SPARKLE_REDIS_URL"]
            child["embedded running"] = timed(cli("runs", "--status", "running"), args.repeat)
            child["embedded queued"] = timed(cli("runs", "--status", "queued"), args.repeat)
        finally:
            server.stop()
    passes = REBUILD_INTERVAL_SEC / engine.settings.reaper_interval_sec
    print(f"reaper pass, dry run, {args.active} active runs (queued, messages waiting); "
          f"{args.finished} finished runs added in {built:.0f}s:")
    print(f"  only the active runs:             {only_active * 1000:8.1f} ms")
    print(f"  with {args.finished} finished on disk:  {with_finished * 1000:8.1f} ms  "
          f"(ratio {with_finished / only_active:.2f})")
    print(f"  rebuilding the index every pass:  {rebuilding * 1000:8.1f} ms  "
          f"(ratio {rebuilding / only_active:.2f}; the cost of every pass before the index; "
          f"now one pass in {passes:.0f}, by one reaper of all)")
    total = args.active + args.finished
    floor = child["interpreter"]
    print(f"child processes (ratio to `python -c 'import sparkle.entry'`, "
          f"{floor * 1000:.0f} ms, the interpreter's start-up):")
    for key, what in (
            ("import redis", "the same importing redis-py too (the Redis fast path's floor)"),
            ("version", "`sparkle --version` (the full CLI's start-up)"),
            ("running", "`sparkle runs --status running` (Redis index)"),
            ("queued", f"`sparkle runs --status queued` (Redis index, {args.active} listed)"),
            ("full running", "the same `--status running` through the full CLI"),
            ("embedded running", "embedded `sparkle runs --status running` (folder index)"),
            ("embedded queued", "embedded `sparkle runs --status queued`"),
            ("everything", f"`sparkle runs` (all {total})")):
        print(f"  {what:<66} {child[key] * 1000:8.0f} ms  ({child[key] / floor:.1f})")
    print("dashboard (in process, sparkle.web.listing.RunListing, Redis index):")
    for what, seconds in dashboard.items():
        print(f"  {what:<66} {seconds * 1000:8.1f} ms")


def dashboard_costs(engine: Any, repeat: int) -> dict[str, float]:
    """A dashboard's runs listing: the runs in flight (from the index) on a new listing, and
    every run (the snapshot of every folder) on a new one and on one that has it."""
    from sparkle.web.listing import RunListing, unfinished_reader
    from sparkle.web.site import Mode, Site

    site = Site(engine.settings, engine.store, Mode.redis, engine.dispatcher)
    reader = unfinished_reader(site)

    def listing() -> RunListing:
        return RunListing(engine.store, refresh_sec=3600, unfinished=reader)

    warm = listing()
    warm.query()
    return {
        "status=running, a new listing (index)": timed(
            lambda: listing().query(status="running"), repeat),
        "status=queued, a new listing (index)": timed(
            lambda: listing().query(status="queued"), repeat),
        "every run, first page, a new listing (the snapshot taken)": timed(
            lambda: listing().query(), repeat),
        "every run, first page, the snapshot taken (a request's checks)": timed(
            warm.query, repeat),
        "every run, the snapshot checked through (a background pass)": timed(
            warm.refresh, repeat),
    }


if __name__ == "__main__":
    main()

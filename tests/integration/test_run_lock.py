"""Embedded mode between processes (issue 17): a run another live process holds is left
to it by the engine, the dispatcher, `serve`'s start-up and the reaper; the kernel frees
the lock the moment that process dies, and it is taken at once.

The other process is a real one holding the run's lock file (as a `sparkle run` or a
stage of a `sparkle serve` does), killed with SIGKILL where it has to die.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkle import runlock
from sparkle.adapters.testing import read_trace
from sparkle.outcomes import Outcome
from sparkle.redrive import RedriveReason
from sparkle.service import requeue_unfinished

#: A process that takes a run's lock file, says so, and holds it until killed.
HOLD = ("import sys, time; from sparkle import runlock; "
        "assert runlock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)")


#: A process that says whether a run's lock file is held by another process.
PROBE = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
         "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
         "except OSError:\n    print('held')")


def seen_from_another_process(run_dir: Path) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, str(run_dir / runlock.LEASE_FILE)],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def holder() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def hold(run_dir: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def calls(run: Any) -> Counter[str]:
    return Counter(record["stage"] for record in read_trace(run.dir))


def test_stage_is_left_to_the_process_holding_the_run(pipeline, plans_dir, holder):
    """A stage message for a run another process works runs nothing; once that process
    is killed, the next message runs at once (no TTL to wait for)."""
    # Given a run another process holds
    run = pipeline.create(plans_dir / "rooftop.json")
    other = holder(run.dir)
    # When this process's worker gets its first stage
    busy = pipeline.engine.execute("script", run.run_id)
    # Then nothing ran, nothing was recorded, and the holder is named
    assert busy is Outcome.busy
    assert sum(calls(run).values()) == 0 and run.events() == []
    named = runlock.other_holder(run.dir)
    assert named is not None and named.pid == other.pid
    assert "-c" in named.command
    # And when the holder dies, the stage runs at once
    kill(other)
    assert pipeline.engine.execute("script", run.run_id) is Outcome.succeeded


def test_kick_and_serve_start_up_leave_runs_another_process_holds(pipeline, plans_dir, holder):
    """A `serve` starting up re-queues only the unfinished runs nobody holds."""
    # Given two unfinished runs, one held by another live process
    held = pipeline.create(plans_dir / "rooftop.json")
    free = pipeline.create(plans_dir / "lighthouse.json")
    holder(held.dir)
    # When serve's start-up re-queues unfinished runs
    sent = requeue_unfinished(pipeline.engine)
    # Then only the free one was queued
    assert [run.run_id for run in sent] == [free.run_id]
    assert pipeline.engine.dispatcher.pending(free.run_id) is not None
    assert pipeline.engine.dispatcher.pending(held.run_id) is None
    assert pipeline.engine.dispatcher.kick(held) is None


def test_reaper_never_redrives_a_run_another_live_process_holds(pipeline, plans_dir, holder):
    """Two `serve` on one runs folder: a stage running in the other process (an open
    `begin`, no lease in this process) is not a dead worker; once that process dies, it is."""
    # Given a run whose stage began in another process that still holds the run
    run = pipeline.create(plans_dir / "rooftop.json")
    run.append_event("script", "begin", 1)
    other = holder(run.dir)
    reaper = pipeline.app.reaper
    # When the reaper looks (however long the stage has been running)
    while_alive = reaper.run_once(older_than=0)
    kill(other)
    after_death = reaper.run_once(older_than=0)
    # Then it left the run alone while its process lived, and re-drove it after
    assert while_alive == []
    assert [(r.stage, r.reason) for r in after_death] == [("script", RedriveReason.worker_died)]


def test_one_run_named_two_ways_is_one_lock(tmp_path, monkeypatch):
    """A run folder named relatively by one caller and absolutely (or through a link) by
    another is one lock: had the process opened the file twice, the first close would drop
    the lock the other holder still counts on (POSIX locks belong to the process)."""
    # Given a run held through its absolute path
    run_dir = tmp_path / "run-a"
    run_dir.mkdir()
    (tmp_path / "link").symlink_to(run_dir)
    monkeypatch.chdir(tmp_path)
    assert runlock.acquire(run_dir)
    try:
        # When it is taken and given back through a relative name and through a link
        assert runlock.acquire(Path("run-a"))
        assert runlock.acquire(tmp_path / "link")
        runlock.release(Path("run-a"))
        runlock.release(tmp_path / "link")
        # Then another process still finds it held
        assert seen_from_another_process(run_dir) == "held"
    finally:
        runlock.release(run_dir)
    assert seen_from_another_process(run_dir) == "free"

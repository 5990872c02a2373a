"""Cancel and resume handed to the run's lease holder (sparkle.handover), in embedded mode:
the requests' files, older markers, and another process holding the run's lock file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import fakeredis

from sparkle import handover, lifecycle
from sparkle.runstore import CANCELLED_FILE, Run


def embedded_leases() -> lifecycle.Leases:
    return lifecycle.Leases(fakeredis.FakeRedis(server=fakeredis.FakeServer()), "sparkle", True)


def test_an_older_marker_asks_for_no_event_and_a_resume_lifts_it(pipeline, plans_dir):
    """A ``cancelled`` marker written by an older Sparkle (empty: its event was recorded
    then) records nothing more, and resume lifts it."""
    run = pipeline.create(plans_dir / "rooftop.json")
    (run.dir / CANCELLED_FILE).write_bytes(b"")
    assert handover.carry_out(run) == handover.CarriedOut()
    assert not any(e.status == "cancel" for e in run.events())
    stages, here = lifecycle.reset_for_resume(run, embedded_leases())
    assert (stages, here) == ([], True)
    assert not run.cancelled


def test_an_unreadable_request_is_set_aside_by_the_holder_only(pipeline, plans_dir, caplog):
    """A torn resume request does not stop the ones after it: the holder moves it aside
    (logged) and carries out the next; a look by anyone else leaves it where it is."""
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.work(run)
    folder = run.dir / handover.REQUESTS_DIR
    folder.mkdir()
    (folder / "00000000000000000001-aa.json").write_text('{"stages": ["ima')
    handover.request_resume(run, ["qa"], "--only", None)
    assert [r.stages for r in handover.resume_requests(run)] == [["qa"]]
    assert (folder / "00000000000000000001-aa.json").exists()
    assert handover.carry_out(run).resumed == 1
    assert run.checkpoint("qa") is None
    assert sorted(p.name for p in folder.iterdir()) == ["00000000000000000001-aa.json.unreadable"]
    assert "cannot be read" in caplog.text


HOLD = textwrap.dedent("""
    import sys, time
    from sparkle import runlock
    assert runlock.acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def hold_lock_file(run: Run, seconds: float) -> subprocess.Popen[str]:
    """Another process (a `sparkle serve` working the run) holds the run's lock file."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run.dir), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_embedded_a_cancel_beside_a_process_working_the_run_leaves_it_the_event(
        pipeline, plans_dir):
    """Embedded, the lease of another process is its lock file on the run: while it holds
    it, `sparkle cancel` writes the marker alone; once it lets go, the command records the
    event itself (it waited for it)."""
    run = pipeline.create(plans_dir / "rooftop.json")
    holder = hold_lock_file(run, 60)
    try:
        done = lifecycle.cancel_run(run, by="a", leases=embedded_leases(), wait_sec=0.3)
        assert not done.recorded and run.status().value == "cancelled"
        assert [e.status for e in run.events()] == []
    finally:
        holder.kill()
        holder.wait()
    # (a second command, the run now free: it records the first one's cancel)
    stages, here = lifecycle.reset_for_resume(run, embedded_leases(), from_stage="script")
    assert here and stages[0] == "script"
    statuses = [(e.status, e.metadata.get("by")) for e in run.events()]
    assert statuses[0] == ("cancel", "a")
    assert not run.cancelled


def test_embedded_a_resume_waits_for_the_process_to_let_go_then_does_it(
        pipeline, plans_dir, tmp_path: Path):
    run = pipeline.create(plans_dir / "rooftop.json")
    pipeline.work(run)
    holder = hold_lock_file(run, 0.5)
    try:
        stages, here = lifecycle.reset_for_resume(run, embedded_leases(), only="qa",
                                                  wait_sec=20)
    finally:
        holder.wait()
    assert (stages, here) == (["qa"], True)
    assert run.checkpoint("qa") is None
    assert not (run.dir / handover.REQUESTS_DIR).exists() or not any(
        (run.dir / handover.REQUESTS_DIR).iterdir())

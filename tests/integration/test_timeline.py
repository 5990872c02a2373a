"""`sparkle timeline`: events in order with durations, errors and re-drives; durations."""

from __future__ import annotations

import pytest

from sparkle.durations import parse_duration
from sparkle.timeline import render, timeline


def test_timeline_lists_every_event_with_duration_error_and_redrive(pipeline, plans_dir):
    run = pipeline.create(plans_dir / "rooftop.json", fault_images="transient:1")
    assert pipeline.work(run).status.value == "succeeded"
    run.append_event("qa", "redrive", 1, metadata={"reason": "message_lost", "idle_sec": 20,
                                                   "by": "reaper h:1"})
    entries = timeline(run)
    assert [(e.stage, e.status, e.attempt) for e in entries[:6]] == [
        ("script", "begin", 1), ("script", "success", 1),
        ("images", "begin", 1), ("images", "fail", 1),
        ("images", "begin", 2), ("images", "success", 2)]
    assert entries[0].offset_sec == 0 and all(e.offset_sec >= 0 for e in entries)
    assert entries[1].duration_sec is not None
    assert "injected transient fault" in (entries[3].error or "")
    assert entries[3].detail == "transient"
    assert entries[-1].detail == "message_lost after 20s still (reaper h:1)"
    text = render(run, entries, "succeeded")
    lines = text.splitlines()
    assert lines[0].startswith(f"{run.run_id}  succeeded")
    assert any("images" in line and "fail" in line and "injected transient" in line
               for line in lines)
    assert lines[-1] == "re-driven 1 time(s)"


def test_a_begin_without_outcome_is_marked(pipeline, plans_dir):
    run = pipeline.create(plans_dir / "rooftop.json")
    run.append_event("script", "begin", 1, metadata={"worker": "h:1:t"})
    run.append_event("script", "redrive", 1, metadata={"reason": "worker_died"})
    run.append_event("script", "begin", 2, metadata={"worker": "h:2:t"})
    details = [e.detail for e in timeline(run)]
    assert details[0] == "h:1:t, no outcome: its worker died"
    assert details[2] == "h:2:t, no outcome yet"


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("1.5h", 5400), ("7d", 604800),
    ("0", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5 minutes", "-3s", "1h-"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)

"""``sparkle.inbox_stability``: when a file in the inbox is complete, on real files with the
clock given by the test (no threads, no waiting)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sparkle.inbox_stability import EMPTY_WARN_SEC, StabilityWatch, report_still_empty

#: The stability wait of these tests, in seconds.
STABLE = 1.0


def check(watch: StabilityWatch, now: float) -> tuple[list[str], list[str]]:
    """One pass of the inbox's stability check at ``now``."""
    return watch.judge(watch.look(watch.due(now)), now)


@pytest.fixture
def watch(tmp_path: Path) -> StabilityWatch:
    return StabilityWatch(tmp_path, STABLE, rescan_interval=30.0)


def test_a_file_is_taken_once_unchanged_for_the_stability_wait(
    watch: StabilityWatch, tmp_path: Path
) -> None:
    # Given a plan file found by a scan
    (tmp_path / "plan.json").write_text("{}")
    assert watch.notice("plan.json", "found", now=0.0) is False

    # When it is looked at before the wait is over, it is not taken
    assert check(watch, 0.0) == ([], [])
    assert check(watch, 0.5) == ([], [])
    assert watch.next_due() == STABLE

    # Then once unchanged for the wait it is taken, and marked as settled (once)
    assert check(watch, STABLE) == (["plan.json"], [])
    assert watch.next_due() is None
    assert watch.take_settled("plan.json") is True
    assert watch.take_settled("plan.json") is False


def test_a_write_restarts_the_stability_wait(watch: StabilityWatch, tmp_path: Path) -> None:
    # Given a file being written, looked at once
    path = tmp_path / "slow.json"
    path.write_text("{")
    watch.notice("slow.json", "changed", now=0.0)
    check(watch, 0.0)

    # When it grows before the wait is over
    with path.open("a") as handle:
        handle.write('"title": 1}')

    # Then the wait starts again from the look that saw the change
    assert check(watch, STABLE) == ([], [])
    assert watch.next_due() == 2 * STABLE
    assert check(watch, 2 * STABLE) == (["slow.json"], [])


def test_a_closed_file_is_complete_at_once(watch: StabilityWatch, tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text("{}")
    watch.notice("plan.json", "changed", now=0.0)
    assert watch.notice("plan.json", "closed", now=0.1) is True
    assert watch.next_due() is None and watch.waiting() == []


def test_an_empty_file_is_never_taken_and_reported_once(
    watch: StabilityWatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an empty file (a shell redirect whose generator has not written yet)
    (tmp_path / "late.json").write_bytes(b"")
    watch.notice("late.json", "found", now=0.0)

    # When it stays empty past the stability wait, it is neither taken nor reported
    assert check(watch, 0.0) == ([], [])
    assert check(watch, STABLE) == ([], [])
    assert watch.next_due() == EMPTY_WARN_SEC

    # Then past EMPTY_WARN_SEC it is reported once and parked: no longer work in progress
    assert check(watch, EMPTY_WARN_SEC) == ([], ["late.json"])
    assert watch.waiting() == []
    assert check(watch, EMPTY_WARN_SEC + 30.0) == ([], [])
    caplog.set_level(logging.WARNING, logger="sparkle.inbox")
    report_still_empty(["late.json"])
    assert "late.json is still empty after 60 s" in caplog.text

    # And once written it waits again, from the look that sees the write, and is taken
    (tmp_path / "late.json").write_text("{}")
    watch.notice("late.json", "changed", now=100.0)
    assert len(watch.waiting()) == 1
    assert check(watch, 100.0 + STABLE) == ([], [])
    assert check(watch, 100.0 + 2 * STABLE) == (["late.json"], [])


def test_folders_are_handed_on_at_once_except_a_profiles(
    watch: StabilityWatch, tmp_path: Path
) -> None:
    # Given a folder dropped by mistake and an inbox profile's folder
    (tmp_path / "oops.json").mkdir()
    (tmp_path / "rush.json").mkdir()
    (tmp_path / "rush.json" / "profile.toml").write_text("")
    watch.notice("oops.json", "found", now=0.0)
    watch.notice("rush.json", "found", now=0.0)

    # Then the folder is handed on at once (to be rejected) and the profile is dropped
    assert check(watch, 0.0) == (["oops.json"], [])
    assert watch.next_due() is None


def test_a_file_removed_or_renamed_away_is_forgotten(
    watch: StabilityWatch, tmp_path: Path
) -> None:
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").write_text("{}")
    watch.notice("a.json", "found", now=0.0)
    watch.notice("b.json", "found", now=0.0)
    check(watch, 0.0)

    # When one is renamed away (its event) and the other removed (seen at the next look)
    assert watch.forget("a.json") is True
    assert watch.forget("a.json") is False
    os.unlink(tmp_path / "b.json")

    # Then neither is taken
    assert check(watch, STABLE) == ([], [])
    assert watch.next_due() is None

"""Watch-folder profiles on real folders (issue 22, item 6): a plan dropped into
``inbox/rush/`` becomes a run with the rush profile's settings where the plan sets none, the
plan's own values win, and the inbox above ignores the profile folder."""

from __future__ import annotations

import json
from pathlib import Path

from sparkle.inbox import Inbox
from sparkle.notifications import run_targets
from sparkle.priority import of_run_dir
from sparkle.profiles import discover, inbox_for
from sparkle.runstore import PLAN_FILE, Run, RunStore
from sparkle.settings import Settings


def _drop(folder: Path, name: str, plans_dir: Path, **metadata: str) -> None:
    plan = json.loads((plans_dir / "lighthouse.json").read_text())
    plan["title"] = name
    plan.setdefault("metadata", {}).update(metadata)
    (folder / f"{name}.json").write_text(json.dumps(plan))


def test_a_plan_dropped_into_a_profile_folder_gets_the_profiles_settings(tmp_path, plans_dir):
    # Given: an inbox with a rush profile, and plans dropped into it and into the top
    inbox_dir, runs_dir = tmp_path / "inbox", tmp_path / "runs"
    (inbox_dir / "rush").mkdir(parents=True)
    (inbox_dir / "rush" / "profile.toml").write_text(
        'priority = "high"\nreview_after = "images"\nwebhook = "https://hooks.example.com/r"\n')
    _drop(inbox_dir / "rush", "plain", plans_dir)
    _drop(inbox_dir / "rush", "says-low", plans_dir, priority="low")
    _drop(inbox_dir, "top", plans_dir)
    settings = Settings(inbox_dir=inbox_dir, runs_dir=runs_dir, stable_seconds=0)
    queued: list[Run] = []
    (profile,) = discover(inbox_dir)
    rush = inbox_for(profile, queued.append, RunStore(runs_dir), settings)
    top = Inbox(inbox_dir, RunStore(runs_dir), queued.append, stable_seconds=0)
    # When: both folders are processed
    for inbox in (top, rush):
        inbox.scan()
        assert inbox.process_pending(timeout=30)
    # Then: three runs, the top one without the profile's settings
    by_title = {run.plan().title: run for run in queued}
    assert sorted(by_title) == ["plain", "says-low", "top"]
    plain, says_low, top_run = by_title["plain"], by_title["says-low"], by_title["top"]
    assert plain.plan().metadata["review_after"] == "images"
    assert of_run_dir(plain.dir, PLAN_FILE) == "high"
    assert run_targets(plain) == ["https://hooks.example.com/r"]
    # (the plan's own value wins over the profile's)
    assert of_run_dir(says_low.dir, PLAN_FILE) == "low"
    assert "priority" not in top_run.plan().metadata and run_targets(top_run) == []
    # (each folder keeps its own processed/; the top inbox never took the profile folder)
    assert (inbox_dir / "rush" / "processed" / "plain.json").is_file()
    assert (inbox_dir / "processed" / "top.json").is_file()
    assert (inbox_dir / "rush" / "profile.toml").is_file()
    assert not (inbox_dir / "rejected").exists() or not any((inbox_dir / "rejected").iterdir())


def test_an_inbox_taking_every_name_leaves_a_profile_folder_alone(tmp_path, plans_dir):
    # Given: SPARKLE_INBOX_GLOB="*" (any name is a plan) and a profile folder in the inbox
    inbox_dir = tmp_path / "inbox"
    (inbox_dir / "rush").mkdir(parents=True)
    (inbox_dir / "rush" / "profile.toml").write_text('priority = "high"\n')
    _drop(inbox_dir, "top", plans_dir)
    queued: list[Run] = []
    top = Inbox(inbox_dir, RunStore(tmp_path / "runs"), queued.append, stable_seconds=0,
                glob="*")
    # When
    top.scan()
    assert top.process_pending(timeout=30)
    # Then: the plan became a run; the profile folder was neither claimed nor rejected
    assert [run.plan().title for run in queued] == ["top"]
    assert (inbox_dir / "rush" / "profile.toml").is_file()
    assert not (inbox_dir / "rejected").exists() or not any((inbox_dir / "rejected").iterdir())

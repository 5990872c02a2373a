"""`sparkle submit` without Redis hands plan files to the inbox through
:func:`sparkle.lifecycle.copy_into_inbox`: never over another waiting plan, never half a
file under a name the watcher takes, and with --priority written into the copy."""

from __future__ import annotations

import json
from pathlib import Path

from sparkle.lifecycle import copy_into_inbox

PLAN = Path(__file__).parents[1] / "data" / "plans" / "lighthouse.json"


def test_a_plan_is_copied_under_its_name_then_numbered_when_taken(tmp_path: Path) -> None:
    # Given an inbox that does not exist yet
    inbox = tmp_path / "inbox"
    # When the same plan is handed over three times
    names = [copy_into_inbox(PLAN, inbox).name for _ in range(3)]
    # Then each copy keeps the plan's bytes under its own name, and no .part is left
    assert names == ["lighthouse.json", "lighthouse-1.json", "lighthouse-2.json"]
    assert sorted(path.name for path in inbox.iterdir()) == sorted(names)
    assert all((inbox / name).read_bytes() == PLAN.read_bytes() for name in names)


def test_a_priority_is_written_into_the_copy_only(tmp_path: Path) -> None:
    target = copy_into_inbox(PLAN, tmp_path, "high")
    copied = json.loads(target.read_text())
    original = json.loads(PLAN.read_text())
    assert copied["metadata"]["priority"] == "high"
    del copied["metadata"]["priority"]
    original.setdefault("metadata", {})
    assert copied == original
    assert "priority" not in json.loads(PLAN.read_text()).get("metadata", {})

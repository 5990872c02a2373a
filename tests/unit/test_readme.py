"""The README stays true: every setting documented, the test command the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from sparkle.settings import Settings

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table():
    """Each Settings field appears as SPARKLE_<NAME> in the README's settings table."""
    missing = [f"SPARKLE_{name.upper()}" for name in Settings.model_fields
               if f"| `SPARKLE_{name.upper()}` |" not in README]
    assert missing == []


def test_readme_documents_no_setting_that_does_not_exist():
    """Every SPARKLE_ variable in the settings table is a real setting (or an override)."""
    table = re.findall(r"^\| `(SPARKLE_[A-Z_<>]+)` \|", README, flags=re.M)
    known = {f"SPARKLE_{name.upper()}" for name in Settings.model_fields}
    assert set(table) - known == {"SPARKLE_ADAPTER_<STAGE>"}


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the same pytest the README tells a newcomer to run."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/pytest -q" in README
    assert ".venv/bin/pytest -q" in ci


def test_the_plan_shown_is_the_file_it_names():
    """The plan format section shows tests/data/plans/lighthouse.json as it is (it once
    showed two of its three shots)."""
    import json

    section = README.split("## The plan format", 1)[1]
    named = re.search(r"`(tests/data/plans/[\w.-]+\.json)`", section)
    assert named is not None
    shown = section.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(shown) == json.loads((ROOT / named.group(1)).read_text())

"""The QA policy: loading from JSON or YAML, validation errors that name the field, and
first-matching-rule decisions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from sparkle.errors import ConfigError
from sparkle.qa_policy import FINDINGS, Finding, QAPolicy, load_policy, parse_policy

POLICY: dict[str, Any] = {
    "version": 1,
    "thresholds": {"max_black_ratio": 0.25},
    "rules": [
        {"name": "format", "if_any": ["resolution_mismatch"], "decision": "escalate"},
        {
            "name": "black",
            "if_any": ["black_frames"],
            "decision": "regenerate",
            "stages": ["lipsync", "images", "videos"],
        },
        {
            "name": "both",
            "if_all": ["duration_mismatch", "movie_duration_mismatch"],
            "decision": "regenerate",
            "stages": ["assemble"],
        },
        {"name": "fine", "decision": "approve"},
    ],
}


def write_policy(folder: Path, data: Any, suffix: str) -> Path:
    path = folder / f"policy{suffix}"
    text = json.dumps(data) if suffix == ".json" else yaml.safe_dump(data)
    path.write_text(text, encoding="utf-8")
    return path


def test_default_policy_loads_and_approves_a_clean_report() -> None:
    """Protects: the policy shipped in the package is valid and approves no findings."""
    # Given no policy file
    # When I load the policy
    policy = load_policy(None)
    # Then I get the packaged default, ending in a catch-all that approves
    assert policy.rules[-1].catch_all
    assert policy.decide([]).decision == "approve"
    # And an extended shot alone is not a defect
    assert policy.decide(["extended"]).decision == "approve"


def test_every_finding_code_is_described() -> None:
    """Protects: the documented finding codes and the accepted ones are the same list."""
    # Given the Finding type and the FINDINGS table
    # Then they name the same codes
    assert set(FINDINGS) == set(get_args(Finding))


@pytest.mark.parametrize(
    ("findings", "rule", "decision"),
    [
        (["black_frames"], "black-frames", "regenerate"),
        (["no_dialogue_audio"], "silent-dialogue", "regenerate"),
        (["duration_mismatch", "movie_duration_mismatch"], "wrong-duration", "regenerate"),
        (["movie_duration_mismatch"], "movie-length", "regenerate"),
        (["resolution_mismatch", "black_frames"], "wrong-format", "escalate"),
        (["decode_error"], "broken-media", "regenerate"),
        (["dialogue_below_bed"], "silent-dialogue", "regenerate"),
        (["audio_desync"], "desynced-audio", "regenerate"),
        (["frozen_picture"], "frozen-picture", "regenerate"),
        (["subtitle_mismatch"], "subtitles", "regenerate"),
    ],
)
def test_default_policy_decisions(findings: list[str], rule: str, decision: str) -> None:
    """Protects: the default policy maps each kind of defect to the documented rule."""
    # Given the default policy
    policy = load_policy(None)
    # When it judges these findings
    chosen = policy.decide(findings)
    # Then the expected rule decides
    assert (chosen.name, chosen.decision) == (rule, decision)
    assert (decision == "regenerate") == bool(chosen.stages)


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_policy_file_is_read_by_suffix(tmp_path: Path, suffix: str) -> None:
    """Protects: JSON and YAML policy files both load, chosen by the file's suffix."""
    # Given the same policy written as JSON or YAML
    path = write_policy(tmp_path, POLICY, suffix)
    # When I load it
    policy = load_policy(path)
    # Then thresholds and rules are as written
    assert policy.thresholds.max_black_ratio == 0.25
    assert [rule.name for rule in policy.rules] == ["format", "black", "both", "fine"]


def test_first_matching_rule_wins_and_stages_are_in_pipeline_order() -> None:
    """Protects: rules are tried in order, and regenerate stages run earliest first."""
    # Given a policy whose 'format' rule comes before 'black'
    policy = parse_policy(POLICY, "test")
    # When both rules could match
    rule = policy.decide(["black_frames", "resolution_mismatch"])
    # Then the earlier rule decides
    assert rule.name == "format"
    # And stages written out of order are kept in pipeline order
    assert policy.decide(["black_frames"]).stages == ["images", "videos", "lipsync"]


def test_if_all_needs_every_finding() -> None:
    """Protects: an if_all rule matches only when all of its findings are present."""
    # Given a rule that needs both duration findings
    policy = parse_policy(POLICY, "test")
    # Then one of them is not enough, both are
    assert policy.decide(["duration_mismatch"]).name == "fine"
    assert policy.decide(["duration_mismatch", "movie_duration_mismatch"]).name == "both"


def _broken(change: dict[str, Any], rule: int = 1) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(POLICY))
    data["rules"][rule].update(change)
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _broken({"decision": "aprove"}),
            "rules[1].decision: must be one of approve, regenerate, escalate (got 'aprove')",
        ),
        (_broken({"if_any": ["blak_frames"]}), "rules[1].if_any[0]: must be one of"),
        (_broken({"stages": []}), "rules[1]: a 'regenerate' rule must list the stages"),
        (_broken({"stages": ["render"]}), "rules[1].stages[0]: must be one of script,"),
        (_broken({"stages": ["qa"]}, rule=0), "rules[0]: only a 'regenerate' rule may list"),
        (_broken({"colour": "red"}), "rules[1].colour: unknown field"),
        (
            {**POLICY, "rules": POLICY["rules"][:2]},
            "rules: the last rule (rules[1], 'black') must be a catch-all",
        ),
        ({**POLICY, "thresholds": {"max_black_ratio": 2}}, "thresholds.max_black_ratio:"),
        ({"version": 1}, "rules: required field is missing"),
    ],
)
def test_invalid_policy_names_file_and_field(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    """Protects: an invalid policy fails with a message naming the file and the field."""
    # Given a policy file with one mistake
    path = write_policy(tmp_path, data, ".yaml")
    # When I load it
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    # Then the error names the file and says what is wrong where
    message = str(caught.value)
    assert str(path) in message
    assert expected in message


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.yaml", "rules: [", "not valid YAML"),
        ("bad.json", '{"rules": ', "not valid JSON (line 1"),
        ("list.yaml", "- a\n- b\n", "must be a mapping"),
        ("policy.toml", "x = 1", "must end in .json, .yaml or .yml"),
    ],
)
def test_unreadable_policy_files(tmp_path: Path, name: str, text: str, expected: str) -> None:
    """Protects: syntax errors and unknown file kinds are ConfigErrors naming the file."""
    # Given a policy file that cannot be parsed
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    # When I load it
    with pytest.raises(ConfigError, match=re.escape(expected)) as caught:
        load_policy(path)
    # Then the message names the file
    assert str(path) in str(caught.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    """Protects: a policy path that does not exist is a ConfigError, not a crash."""
    # Given a path to nothing
    path = tmp_path / "nowhere.yaml"
    # When I load it, then the error names the file
    with pytest.raises(ConfigError, match="cannot read the QA policy"):
        load_policy(path)


def test_policy_model_round_trips() -> None:
    """Protects: a validated policy dumps to data that validates to the same policy."""
    # Given the default policy
    policy = load_policy(None)
    # When I dump and re-validate it
    again = QAPolicy.model_validate(policy.model_dump())
    # Then nothing changed
    assert again == policy

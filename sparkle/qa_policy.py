"""The QA policy: thresholds for the QA stage's measurements and rules turning findings into a
decision.

A policy is a JSON or YAML file (chosen by suffix) validated into :class:`QAPolicy`.
``thresholds`` tune what counts as a finding; ``rules`` are tried in order and the first
whose condition holds decides: ``approve``, ``regenerate`` (with the ``stages`` to re-run)
or ``escalate`` (a person must look). The last rule must be a catch-all, so every report
gets a decision. The policy shipped with Sparkle is ``sparkle/qa_policy.yaml``;
``SPARKLE_QA_POLICY`` points to another.

Example (YAML)::

    version: 1
    thresholds:
      max_black_ratio: 0.5
    rules:
      - name: black-frames
        if_any: [black_frames]
        decision: regenerate
        stages: [videos, lipsync, assemble]
      - name: default
        decision: approve
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sparkle.errors import ConfigError
from sparkle.schemas import STAGES, QADecision, StageName

Finding = Literal[
    "decode_error",
    "missing_file",
    "missing_stream",
    "duration_mismatch",
    "extended",
    "black_frames",
    "no_dialogue_audio",
    "unexpected_audio",
    "resolution_mismatch",
    "fps_mismatch",
    "movie_duration_mismatch",
    "dialogue_below_bed",
    "audio_desync",
    "frozen_picture",
    "subtitle_mismatch",
]

#: Every finding code the QA stage can report, with what it means.
FINDINGS: dict[str, str] = {
    "decode_error": "the file does not decode without errors",
    "missing_file": "the asset refs name a file that does not exist",
    "missing_stream": "a clip or the movie lacks its video or its audio stream",
    "duration_mismatch": "a shot's length differs from the plan (or from its extension)",
    "extended": "a shot was lengthened to fit its dialogue (informational)",
    "black_frames": "too much of a shot is black",
    "no_dialogue_audio": "a shot with dialogue is (nearly) silent",
    "unexpected_audio": "no longer reported: every shot now has an ambience bed (kept so "
    "older policy files still load)",
    "resolution_mismatch": "a clip or the movie is not at the plan's resolution",
    "fps_mismatch": "a clip or the movie is not at the plan's frame rate",
    "movie_duration_mismatch": "the movie's length is not the sum of its shots",
    "dialogue_below_bed": "a shot's dialogue is not clearly louder than its ambience bed",
    "audio_desync": "a shot's speech is heard earlier or later than its lines are placed",
    "frozen_picture": "a shot's picture stands still for most of its length",
    "subtitle_mismatch": "the subtitle files or track lack a cue or disagree with the dialogue",
}

#: Findings that describe a shot rather than a defect; they do not count as issues.
INFORMATIONAL_FINDINGS = frozenset({"extended"})

#: Name of the policy file shipped inside the ``sparkle`` package.
DEFAULT_POLICY_RESOURCE = "qa_policy.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    """Limits that decide which measurements are findings."""

    #: Seconds a shot's length may differ from the expected length.
    duration_tolerance_sec: float = Field(default=0.15, ge=0)
    #: Seconds the movie's length may differ from the sum of its shots.
    movie_duration_tolerance_sec: float = Field(default=0.2, ge=0)
    #: Largest fraction (0-1) of a shot that may be black.
    max_black_ratio: float = Field(default=0.5, ge=0, le=1)
    #: A shot with dialogue needs a mean level (dBFS) above this to count as audible.
    min_dialogue_mean_db: float = Field(default=-50.0, le=0)
    #: Unused since every shot has an ambience bed; accepted so older files still load.
    max_silent_peak_db: float = Field(default=-60.0, le=0)
    #: Speech must be at least this many dB above the bed around it.
    min_dialogue_margin_db: float = Field(default=8.0, ge=0)
    #: Seconds the speech may be heard earlier or later than placed.
    max_audio_offset_sec: float = Field(default=0.2, ge=0)
    #: Largest fraction (0-1) of a shot (of at least 1 s) the picture may stand still.
    max_still_ratio: float = Field(default=0.75, ge=0, le=1)
    #: Seconds a subtitle cue's start or end may differ from its line's audio.
    subtitle_tolerance_sec: float = Field(default=0.1, ge=0)
    #: Frames per second a clip's rate may differ from the plan's.
    fps_tolerance: float = Field(default=0.01, ge=0)


class Rule(_Strict):
    """One rule: a condition on the findings and the decision it gives."""

    name: str = Field(min_length=1)
    #: Matches when any of these findings is present (no list: no such condition).
    if_any: list[Finding] = Field(default_factory=list)
    #: Matches when all of these findings are present (no list: no such condition).
    if_all: list[Finding] = Field(default_factory=list)
    decision: QADecision
    #: For ``regenerate``: the stages to re-run (stored in pipeline order).
    stages: list[StageName] = Field(default_factory=list)
    description: str | None = None

    @model_validator(mode="after")
    def _check_stages(self) -> Rule:
        if self.decision == "regenerate" and not self.stages:
            raise PydanticCustomError(
                "stages_required", "a 'regenerate' rule must list the stages to re-run"
            )
        if self.decision != "regenerate" and self.stages:
            raise PydanticCustomError(
                "stages_unexpected", "only a 'regenerate' rule may list stages"
            )
        return self

    @field_validator("stages")
    @classmethod
    def _pipeline_order(cls, stages: list[StageName]) -> list[StageName]:
        return [stage for stage in STAGES if stage in stages]

    @property
    def catch_all(self) -> bool:
        """True when the rule has no condition and so matches every report."""
        return not self.if_any and not self.if_all

    def matches(self, findings: set[str]) -> bool:
        """Whether the rule applies to a report with these findings."""
        if self.if_any and not findings.intersection(self.if_any):
            return False
        return set(self.if_all) <= findings


class QAPolicy(_Strict):
    """Thresholds and ordered rules; the first matching rule decides."""

    version: Literal[1] = 1
    thresholds: Thresholds = Field(default_factory=Thresholds)
    rules: list[Rule] = Field(min_length=1)

    @field_validator("rules")
    @classmethod
    def _check_rules(cls, rules: list[Rule]) -> list[Rule]:
        seen: dict[str, int] = {}
        for i, rule in enumerate(rules):
            if rule.name in seen:
                raise PydanticCustomError(
                    "duplicate_rule",
                    "rules[{index}] reuses the name '{name}' of rules[{first}]",
                    {"index": i, "name": rule.name, "first": seen[rule.name]},
                )
            seen[rule.name] = i
        if rules and not rules[-1].catch_all:
            raise PydanticCustomError(
                "no_catch_all",
                "the last rule (rules[{index}], '{name}') must be a catch-all (no 'if_any' "
                "or 'if_all') so that every report gets a decision",
                {"index": len(rules) - 1, "name": rules[-1].name},
            )
        return rules

    def decide(self, findings: Iterable[str]) -> Rule:
        """The first rule that matches ``findings``."""
        present = set(findings)
        for rule in self.rules:
            if rule.matches(present):
                return rule
        return self.rules[-1]  # unreachable: the last rule is a catch-all


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: Any) -> str:
    kind = error.get("type")
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected} (got {error.get('input')!r})"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    return str(error.get("msg", "invalid value"))


def parse_policy(data: Any, source: str) -> QAPolicy:
    """Validate already-parsed JSON/YAML data as a policy.

    Raises:
      ConfigError: naming ``source`` and every wrong field, e.g.
        ``rules[1].decision: must be one of approve, regenerate, escalate``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a QA policy must be a mapping with 'rules'")
    try:
        return QAPolicy.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_location(tuple(err['loc'])) or '(top level)'}: {_describe(err)}"
            for err in exc.errors()
        ]
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"{source}: invalid QA policy ({len(problems)} problem(s))\n{lines}"
        ) from None


def load_policy(path: Path | None) -> QAPolicy:
    """Read a QA policy file (``.json``, ``.yaml`` or ``.yml``); None gives the default.

    Raises:
      ConfigError: the file is missing, unreadable, of an unknown kind, or invalid.
    """
    if path is None:
        source = f"sparkle/{DEFAULT_POLICY_RESOURCE}"
        text = resources.files("sparkle").joinpath(DEFAULT_POLICY_RESOURCE).read_text("utf-8")
        suffix = ".yaml"
    else:
        source = str(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".yaml", ".yml"):
            raise ConfigError(f"{source}: a QA policy file must end in .json, .yaml or .yml")
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{source}: cannot read the QA policy: {exc.strerror or exc}"
            ) from exc
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_policy(data, source)

"""The data model: plans in, asset references and reports out, checkpoints and events between.

Every model here is the wire format of something written to disk or read from a user, so
each one forbids unknown keys: a typo in a plan is an error, not a silently ignored field.
JSON Schemas of the public models are exported with ``sparkle schema`` into ``schemas/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

# Defined in sparkle.names (no pydantic there); re-exported because many modules take them
# from here.
from sparkle.names import ID_RE as ID_RE
from sparkle.names import STAGES as STAGES

StageName = Literal["script", "images", "videos", "tts", "lipsync", "assemble", "qa"]

#: Upper bound of a shot's duration in seconds (ten minutes).
MAX_SHOT_SECONDS = 600.0

#: Bounds of ``metadata.fps``.
FPS_RANGE = (1.0, 120.0)

#: Bounds of each side of ``metadata.resolution`` in pixels; sides must be even (yuv420p).
RESOLUTION_RANGE = (16, 7680)

RESOLUTION_RE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")

SEED_RE = re.compile(r"-?[0-9]{1,19}")

FPS_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")


def check_id(value: str) -> str:
    """Return ``value`` when it is a path-safe id, else raise a ValueError saying why."""
    if not ID_RE.fullmatch(value):
        raise PydanticCustomError(
            "unsafe_id",
            "must be 1-64 characters of letters, digits, '_', '-' or '.', "
            "starting with a letter or digit",
        )
    if ".." in value:
        raise PydanticCustomError("unsafe_id", "must not contain '..'")
    return value


#: The id rule as a JSON Schema pattern (ECMA-262), for tools that validate with the schemas.
ID_JSON_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

SafeId = Annotated[
    str,
    AfterValidator(check_id),
    WithJsonSchema({"type": "string", "pattern": ID_JSON_PATTERN, "minLength": 1, "maxLength": 64}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


class DialogueLine(_Model):
    """One spoken line in a shot."""

    model_config = ConfigDict(strict=True)

    character_id: SafeId
    text: str = Field(min_length=1, max_length=2000)
    #: Seconds from the start of the shot; unset means right after the previous line.
    start_time_sec: float | None = Field(default=None, ge=0)


class CharacterSpec(_Model):
    """A character and how it sounds."""

    model_config = ConfigDict(strict=True)

    id: SafeId
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    #: Voice settings for the TTS adapter, e.g. ``{"voice": "en-us+f3", "rate": "160"}``.
    voice_profile: dict[str, str] = Field(default_factory=dict)


class ShotSpec(_Model):
    """One shot: what it shows at its start and end, how the camera moves, who speaks."""

    model_config = ConfigDict(strict=True)

    id: SafeId
    duration_sec: float = Field(gt=0, le=MAX_SHOT_SECONDS)
    setting: str | None = None
    visual_description: str = Field(min_length=1)
    start_frame_prompt: str = Field(min_length=1)
    end_frame_prompt: str = Field(min_length=1)
    motion_prompt: str | None = None
    is_talking_closeup: bool = False
    dialogue: list[DialogueLine] = Field(default_factory=list)


def _check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    problems: list[list[str]] = []

    def bad(key: str, rule: str) -> None:
        value = metadata[key]
        shown = json.dumps(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        problems.append([f"metadata.{key}", f"{rule} (got {shown})"])

    if "seed" in metadata and not SEED_RE.fullmatch(metadata["seed"]):
        bad("seed", "must be an integer, e.g. '42'")
    if "fps" in metadata:
        ok = bool(FPS_RE.fullmatch(metadata["fps"]))
        if not ok or not FPS_RANGE[0] <= float(metadata["fps"]) <= FPS_RANGE[1]:
            bad("fps", "must be a number from 1 to 120, e.g. '24'")
    if "resolution" in metadata:
        match = RESOLUTION_RE.fullmatch(metadata["resolution"])
        lo, hi = RESOLUTION_RANGE
        if not match or not all(lo <= int(side) <= hi and int(side) % 2 == 0
                                for side in match.groups()):
            bad("resolution", "must be WIDTHxHEIGHT with even sides from 16 to 7680, "
                "e.g. '1280x720'")
    if "run_id" in metadata:
        try:
            check_id(metadata["run_id"])
        except PydanticCustomError as exc:
            bad("run_id", str(exc))
    if problems:
        raise PydanticCustomError(
            "bad_metadata",
            "{summary}",
            {"summary": "; ".join(f"{p}: {m}" for p, m in problems), "problems": problems},
        )
    return metadata


#: Reference problems listed for one plan: a plan made of mistakes is reported in a few
#: lines, not one line per mistake (the inbox writes them into its error record).
MAX_REFERENCE_PROBLEMS = 100
#: Known character ids listed beside an unknown one.
KNOWN_IDS_SHOWN = 10


def _quoted(text: str) -> str:
    """``text`` quoted, and cut short if it is longer than an id may be."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


def reference_problems(
    character_ids: Sequence[object], shots: Sequence[tuple[object, Sequence[object] | None]]
) -> list[list[str]]:
    """What is wrong between a plan's ids, as ``[json path, message]`` pairs: duplicate
    character or shot ids, and dialogue naming no character. Takes the ids by position
    (``shots``: each shot's id and its lines' ``character_id``; None where a part is
    unreadable), so that it also serves a plan whose fields are wrong elsewhere: ids that
    are not strings are left to the field checks, and dialogue is checked only when every
    character id could be read."""
    problems: list[list[str]] = []
    seen: dict[str, int] = {}
    more = 0  # problems past MAX_REFERENCE_PROBLEMS, counted and not listed

    def add(path: str, message: str) -> None:
        nonlocal more
        if len(problems) < MAX_REFERENCE_PROBLEMS:
            problems.append([path, message])
        else:
            more += 1

    for i, character_id in enumerate(character_ids):
        if not isinstance(character_id, str):
            continue
        if character_id in seen:
            add(f"characters[{i}].id", f"duplicate character id {_quoted(character_id)} "
                                       f"(also characters[{seen[character_id]}].id)")
        seen.setdefault(character_id, i)
    known = set(seen)
    listed = "[" + ", ".join(_quoted(k) for k in sorted(known)[:KNOWN_IDS_SHOWN]) + "]"
    known_text = ("none" if not known else listed if len(known) <= KNOWN_IDS_SHOWN
                  else f"{listed} and {len(known) - KNOWN_IDS_SHOWN} more")
    all_known = all(isinstance(character_id, str) for character_id in character_ids)
    shots_seen: dict[str, int] = {}
    for i, (shot_id, speakers) in enumerate(shots):
        if isinstance(shot_id, str):
            if shot_id in shots_seen:
                add(f"shots[{i}].id",
                    f"duplicate shot id {_quoted(shot_id)} (also shots[{shots_seen[shot_id]}].id)")
            shots_seen.setdefault(shot_id, i)
        for j, speaker in enumerate(speakers or ()):
            if all_known and isinstance(speaker, str) and speaker not in known:
                add(f"shots[{i}].dialogue[{j}].character_id",
                    f"{_quoted(speaker)} names no character; known ids: {known_text}")
    if more:
        problems.append(["", f"{more} more problems like these, not listed"])
    return problems


class MoviePlan(_Model):
    """A whole movie: the input of a run and its source of truth."""

    model_config = ConfigDict(strict=True)

    title: str = Field(min_length=1, max_length=300, pattern=r"\S")
    characters: list[CharacterSpec] = Field(default_factory=list)
    shots: list[ShotSpec] = Field(min_length=1)
    #: Free-form string settings; known keys: ``seed``, ``fps``, ``resolution``, ``run_id``.
    metadata: Annotated[dict[str, str], AfterValidator(_check_metadata)] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _check_references(self) -> MoviePlan:
        problems = reference_problems(
            [character.id for character in self.characters],
            [(shot.id, [line.character_id for line in shot.dialogue]) for shot in self.shots],
        )
        if problems:
            raise PydanticCustomError(
                "plan_references",
                "{summary}",
                {"summary": "; ".join(f"{p}: {m}" for p, m in problems), "problems": problems},
            )
        return self

    def shot(self, shot_id: str) -> ShotSpec:
        """Return the shot with ``shot_id``; raises KeyError when there is none."""
        for shot in self.shots:
            if shot.id == shot_id:
                return shot
        raise KeyError(shot_id)

    def character(self, character_id: str) -> CharacterSpec:
        """Return the character with ``character_id``; raises KeyError when there is none."""
        for character in self.characters:
            if character.id == character_id:
                return character
        raise KeyError(character_id)

    @property
    def seed(self) -> int:
        """The plan's seed (``metadata.seed``), 0 when unset."""
        return int(self.metadata.get("seed", "0"))

    @property
    def fps(self) -> float:
        """Frames per second (``metadata.fps``), 24 when unset."""
        return float(self.metadata.get("fps", "24"))

    @property
    def resolution(self) -> tuple[int, int]:
        """Width and height in pixels (``metadata.resolution``), 1280x720 when unset."""
        width, height = self.metadata.get("resolution", "1280x720").split("x")
        return int(width), int(height)


class AssetRefsShot(_Model):
    """Files produced for one shot, as paths relative to the run directory."""

    start_frame: str | None = None
    end_frame: str | None = None
    raw_clip: str | None = None
    dialogue_audio: list[str] = Field(default_factory=list)
    final_video_clip: str | None = None


class AssetRefs(_Model):
    """Everything a run has produced so far; each stage adds to it."""

    shots: dict[str, AssetRefsShot] = Field(default_factory=dict)
    extras: dict[str, str] = Field(default_factory=dict)

    def shot(self, shot_id: str) -> AssetRefsShot:
        """Return the entry for ``shot_id``, creating an empty one when missing."""
        return self.shots.setdefault(shot_id, AssetRefsShot())


QADecision = Literal["approve", "regenerate", "escalate"]


class QAShotReport(_Model):
    """Measurements and findings for one shot."""

    shot_id: str
    decodes: bool = True
    expected_duration_sec: float | None = None
    duration_sec: float | None = None
    extended: bool = False
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    black_ratio: float | None = None
    mean_volume_db: float | None = None
    has_dialogue: bool = False
    #: Mean level where speech should be minus the bed around it (dB).
    dialogue_margin_db: float | None = None
    #: How late (positive) or early the speech is heard (seconds).
    audio_offset_sec: float | None = None
    #: Longest stretch over which the picture stands still (seconds).
    longest_still_sec: float | None = None
    findings: list[str] = Field(default_factory=list)


class QAReport(_Model):
    """The QA stage's verdict on a finished movie."""

    movie_title: str | None = None
    per_shot: list[QAShotReport] = Field(default_factory=list)
    summary: str | None = None
    decision: QADecision
    #: The stages a ``regenerate`` decision asks to re-run, earliest first.
    regenerate_stages: list[str] = Field(default_factory=list)
    #: The policy rule that decided, by name.
    rule: str | None = None
    issues_found: int = Field(ge=0)
    movie: dict[str, Any] = Field(default_factory=dict)


CheckpointStatus = Literal["begin", "success", "failed"]


class Checkpoint(_Model):
    """The state of one stage of one run: ``runs/<run_id>/checkpoints/<stage>.json``."""

    stage: StageName
    status: CheckpointStatus
    #: Seconds since the epoch.
    timestamp: float
    attempt: int = Field(ge=1)
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


#: ``reset`` marks a forced re-run, ``redrive`` a re-enqueue by the reaper or an operator,
#: ``cancel`` a cancellation request.
EventStatus = Literal["begin", "success", "fail", "reset", "redrive", "cancel"]


class StageEvent(_Model):
    """One entry of a run's history: one line of ``manifest.jsonl``."""

    run_id: SafeId
    stage: StageName
    status: EventStatus
    timestamp: float
    attempt: int = Field(ge=1)
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


#: Models whose JSON Schemas are exported by ``sparkle schema``.
EXPORTED_MODELS: dict[str, type[BaseModel]] = {
    "MoviePlan": MoviePlan,
    "AssetRefs": AssetRefs,
    "QAReport": QAReport,
    "Checkpoint": Checkpoint,
    "StageEvent": StageEvent,
}

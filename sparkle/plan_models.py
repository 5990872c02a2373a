"""The plan models: a movie as a user writes it (:class:`MoviePlan`, its characters, shots
and dialogue) and the rules its metadata and references follow.

Plans are strict: a value of the wrong JSON type is an error, never converted. JSON
Schemas are exported with ``sparkle schema`` into ``schemas/``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sparkle.names import STAGES
from sparkle.priority import PRIORITIES
from sparkle.schema_base import SafeId, _Model, check_id, problems_error
from sparkle.webhooks import check_url

#: Upper bound of a shot's duration in seconds (ten minutes).
MAX_SHOT_SECONDS = 600.0

#: Bounds of ``metadata.fps``.
FPS_RANGE = (1.0, 120.0)

#: Bounds of each side of ``metadata.resolution`` in pixels; sides must be even (yuv420p).
RESOLUTION_RANGE = (16, 7680)

RESOLUTION_RE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")

SEED_RE = re.compile(r"-?[0-9]{1,19}")

#: Environment variable giving the seed of plans without ``metadata.seed``.
SEED_VARIABLE = "SPARKLE_SEED"

FPS_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")


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
    if "review_after" in metadata:
        unknown = [name for name in split_stages(metadata["review_after"]) if name not in STAGES]
        if unknown:
            bad("review_after", f"names no stage: {', '.join(map(repr, unknown))}; stages are "
                f"{', '.join(STAGES)} (e.g. [\"images\", \"qa\"] or 'images,qa')")
    if "priority" in metadata and metadata["priority"] not in PRIORITIES:
        bad("priority", f"must be one of {', '.join(PRIORITIES)} (the run's queue priority; "
            "normal when absent)")
    if "webhook" in metadata:
        try:
            check_url(metadata["webhook"])
        except ValueError:
            bad("webhook", "must be an http:// or https:// URL to POST the run's "
                "notifications to")
    if problems:
        raise problems_error("bad_metadata", problems)
    return metadata


def split_stages(text: str) -> list[str]:
    """Stage names in a comma-separated list (``"images, qa"``); blanks are dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _review_after_as_text(value: Any) -> Any:
    """``metadata.review_after`` may be written as a JSON list of stages or as a string; it
    is stored as the comma-separated string every other metadata value is, in pipeline
    order (``["qa", "images"]`` and ``"images, qa"`` are the same plan, with the same run
    id). Anything naming no stage is left as written, for the error to show."""
    if not isinstance(value, dict) or "review_after" not in value:
        return value
    named = value["review_after"]
    if isinstance(named, str):
        named = split_stages(named)
    if not isinstance(named, list) or not all(isinstance(item, str) for item in named):
        return value
    names = [item.strip() for item in named]
    if not all(name in STAGES for name in names):
        return {**value, "review_after": ",".join(names)}
    return {**value, "review_after": ",".join(s for s in STAGES if s in names)}


#: Metadata key of a plan narrowed to some shots for a re-roll (:mod:`sparkle.takes`):
#: every shot id of the run's plan, comma-separated, in order.
NARROWED_FROM = "narrowed_from"

#: The JSON Schema of ``metadata``: strings, except ``review_after`` (a string or a list).
METADATA_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Metadata",
    "additionalProperties": {"type": "string"},
    "properties": {
        "review_after": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"enum": list(STAGES)}},
            ],
            "description": "Stages after which the run stops for a person's review.",
        }
    },
}

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
    #: Free-form string settings; known keys: ``seed``, ``fps``, ``resolution``, ``run_id``,
    #: ``review_after`` (stages to stop after for a person: a list or ``"images,qa"``),
    #: ``priority`` (``high``, ``normal``, ``low``) and ``webhook`` (a URL also notified).
    metadata: Annotated[
        dict[str, str],
        BeforeValidator(_review_after_as_text),
        AfterValidator(_check_metadata),
        WithJsonSchema(METADATA_JSON_SCHEMA),
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> MoviePlan:
        problems = reference_problems(
            [character.id for character in self.characters],
            [(shot.id, [line.character_id for line in shot.dialogue]) for shot in self.shots],
        )
        if problems:
            raise problems_error("plan_references", problems)
        return self

    #: The plan as received, when it came in another format (:mod:`sparkle.base_image_plan`).
    _source: BaseModel | None = PrivateAttr(default=None)
    #: Shot id -> the names of its start and end keyframes, when shots share them.
    _keyframes: dict[str, tuple[str, str]] = PrivateAttr(default_factory=dict)
    #: What was accepted but is worth knowing (a timeline's gaps); recorded on the run.
    _warnings: list[str] = PrivateAttr(default_factory=list)

    def set_source(self, source: BaseModel, keyframes: dict[str, tuple[str, str]],
                   warnings: list[str]) -> None:
        """Remember that this plan was made from ``source`` (the plan as received), whose
        shots start and end on the named ``keyframes``, with ``warnings``."""
        self._source, self._keyframes, self._warnings = source, keyframes, list(warnings)

    def as_received(self) -> BaseModel:
        """The plan as it was received (the model it was read as)."""
        return self._source if self._source is not None else self

    def received_json(self) -> dict[str, Any]:
        """The plan as it was received, as JSON: what the run folder keeps and the run id
        is made from. (A plan in another format keeps only the fields it was given.)"""
        if self._source is not None:
            return self._source.model_dump(mode="json", exclude_unset=True)
        return self.model_dump(mode="json")

    @property
    def warnings(self) -> list[str]:
        """What was accepted but is worth knowing about this plan (recorded on its run)."""
        return list(self._warnings)

    def keyframe_names(self, shot: ShotSpec) -> tuple[str, str]:
        """Names (path-safe, unique in the movie) of the start and end keyframes of
        ``shot``: ``<shot>_start`` and ``<shot>_end``, or, when the plan has shots share
        keyframes, the shared keyframe's id, so that one is rendered once and both shots
        name the same file."""
        return self._keyframes.get(shot.id, (f"{shot.id}_start", f"{shot.id}_end"))

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
        """The plan's seed: ``metadata.seed``, else the ``SPARKLE_SEED`` environment
        variable (the seed contract's "from movie_plan.metadata or environment"), else 0.

        Raises:
          ValueError: ``SPARKLE_SEED`` is set but not an integer.
        """
        if "seed" in self.metadata:
            return int(self.metadata["seed"])
        from_env = os.environ.get(SEED_VARIABLE, "").strip()
        if not from_env:
            return 0
        if not SEED_RE.fullmatch(from_env):
            raise ValueError(f"{SEED_VARIABLE}={from_env!r} is not an integer; set it to "
                             "e.g. 42, or give the plan a metadata.seed")
        return int(from_env)

    @property
    def review_after(self) -> tuple[str, ...] | None:
        """The stages to stop after for a review (``metadata.review_after``), in pipeline
        order; None when the plan does not say (``SPARKLE_REVIEW_AFTER`` applies then)."""
        if "review_after" not in self.metadata:
            return None
        named = set(split_stages(self.metadata["review_after"]))
        return tuple(stage for stage in STAGES if stage in named)

    @property
    def fps(self) -> float:
        """Frames per second (``metadata.fps``), 24 when unset."""
        return float(self.metadata.get("fps", "24"))

    @property
    def resolution(self) -> tuple[int, int]:
        """Width and height in pixels (``metadata.resolution``), 1280x720 when unset."""
        width, height = self.metadata.get("resolution", "1280x720").split("x")
        return int(width), int(height)

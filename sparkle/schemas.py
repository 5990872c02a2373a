"""The data model: plans in, asset references and reports out, checkpoints and events between.

Every model here is the wire format of something written to disk or read from a user, so
each one forbids unknown keys: a typo in a plan is an error, not a silently ignored field.
JSON Schemas of the public models are exported with ``sparkle schema`` into ``schemas/``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Annotated, Any, Literal

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

# Defined in sparkle.names (no pydantic there); re-exported because many modules take them
# from here.
from sparkle.names import ID_RE as ID_RE
from sparkle.names import STAGES as STAGES
from sparkle.priority import PRIORITIES
from sparkle.webhooks import check_url

StageName = Literal["script", "images", "videos", "tts", "lipsync", "assemble", "qa"]

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

    def json(self, **kwargs: Any) -> str:
        """The model as JSON, pydantic-v1 style (the seed contract's adapters call
        ``checkpoint.json()``); the same as ``model_dump_json``, without v2's warning."""
        return self.model_dump_json(**kwargs)


class _ItemAccess(_Model):
    """Dict-style access to a model's fields, as the seed contract's adapters use it
    (``asset_refs['shots'][shot_id]['start_frame'] = path``); attributes work as well.
    An assigned value is validated like the field's value in a file would be."""

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in type(self).model_fields:
            raise KeyError(f"{key!r} is not a field of {type(self).__name__}; fields: "
                           f"{', '.join(type(self).model_fields)}")
        self.__pydantic_validator__.validate_assignment(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in type(self).model_fields

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key``, or ``default`` when the model has no such field."""
        return getattr(self, key) if key in type(self).model_fields else default


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
        raise PydanticCustomError(
            "bad_metadata",
            "{summary}",
            {"summary": "; ".join(f"{p}: {m}" for p, m in problems), "problems": problems},
        )
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
            raise PydanticCustomError(
                "plan_references",
                "{summary}",
                {"summary": "; ".join(f"{p}: {m}" for p, m in problems), "problems": problems},
            )
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


class AssetRefsShot(_ItemAccess):
    """Files produced for one shot, as paths relative to the run directory."""

    start_frame: str | None = None
    end_frame: str | None = None
    raw_clip: str | None = None
    dialogue_audio: list[str] = Field(default_factory=list)
    final_video_clip: str | None = None


class AssetRefs(_ItemAccess):
    """Everything a run has produced so far; each stage adds to it.

    Item access follows the seed contract: ``refs['shots'][shot_id]`` creates the shot's
    entry when it is missing (so ``refs['shots']['s1']['start_frame'] = path`` works on
    empty refs), ``refs['extras']`` is the extras dict itself."""

    shots: dict[str, AssetRefsShot] = Field(default_factory=dict)
    extras: dict[str, str] = Field(default_factory=dict)

    def shot(self, shot_id: str) -> AssetRefsShot:
        """Return the entry for ``shot_id``, creating an empty one when missing."""
        return self.shots.setdefault(shot_id, AssetRefsShot())

    def __getitem__(self, key: str) -> Any:
        if key == "shots":
            return ShotsView(self)
        return super().__getitem__(key)


class ShotsView(MutableMapping[str, AssetRefsShot]):
    """``asset_refs['shots']``: the refs' shots, where reading a missing shot creates it
    (the contract's adapters assign into ``['shots'][id]`` without creating it first) and
    an assigned dict is validated as an :class:`AssetRefsShot`."""

    def __init__(self, refs: AssetRefs) -> None:
        self._refs = refs

    def __getitem__(self, shot_id: str) -> AssetRefsShot:
        return self._refs.shot(check_id(shot_id))

    def __setitem__(self, shot_id: str, value: AssetRefsShot | dict[str, Any]) -> None:
        self._refs.shots[check_id(shot_id)] = AssetRefsShot.model_validate(value)

    def __delitem__(self, shot_id: str) -> None:
        del self._refs.shots[shot_id]

    def __contains__(self, shot_id: object) -> bool:
        return shot_id in self._refs.shots

    def get(self, shot_id: str, default: Any = None) -> Any:
        """The shot's entry, or ``default`` when it has none (reading with get creates
        nothing)."""
        return self._refs.shots.get(shot_id, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs.shots)

    def __len__(self) -> int:
        return len(self._refs.shots)


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
    #: 1 when unset, as the seed contract's example builds it (the engine always sets it).
    attempt: int = Field(default=1, ge=1)
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


#: ``reset`` marks a forced re-run, ``redrive`` a re-enqueue by the reaper or an operator,
#: ``cancel`` a cancellation request, ``retry`` a failed (or finally successful) attempt of
#: a call inside an adapter (:mod:`sparkle.retrying`), ``warning`` something accepted in
#: the plan but worth knowing (recorded when the run is created). The review kinds
#: (:mod:`sparkle.review`): ``review_requested`` (the run stopped after the stage for a
#: person), and the person's decision: ``approved``, ``redo`` (shots re-rolled),
#: ``rejected``; ``take`` records an earlier take put back in place (:mod:`sparkle.takes`).
EventStatus = Literal["begin", "success", "fail", "reset", "redrive", "cancel", "retry",
                      "warning", "review_requested", "approved", "redo", "rejected", "take"]

#: The event kinds that record a review: its request and the decisions answering it.
REVIEW_EVENTS = ("review_requested", "approved", "redo", "rejected", "take")


class StageEvent(_Model):
    """One entry of a run's history (``events`` of ``manifest.json``)."""

    run_id: SafeId
    stage: StageName
    status: EventStatus
    timestamp: float
    attempt: int = Field(ge=1)
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RunManifest(_Model):
    """A run's history, ``runs/<run_id>/manifest.json``: the seed contract's RunManifest.

    Written by Sparkle one event per line (:mod:`sparkle.manifest`); read event by event,
    so an event this version does not know (a newer Sparkle's kind) is skipped, not fatal.
    """

    run_id: SafeId
    events: list[StageEvent] = Field(default_factory=list)


#: Models whose JSON Schemas are exported by ``sparkle schema`` (and ``BaseImagePlan``,
#: added by :mod:`sparkle.base_image_plan` when imported).
EXPORTED_MODELS: dict[str, type[BaseModel]] = {
    "MoviePlan": MoviePlan,
    "AssetRefs": AssetRefs,
    "QAReport": QAReport,
    "Checkpoint": Checkpoint,
    "StageEvent": StageEvent,
    "RunManifest": RunManifest,
}

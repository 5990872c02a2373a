"""The second plan format: base images shared between shots and one dialogue timeline.

This is the MoviePlan the script agent of the seed's system emits. Instead of a start and
an end frame prompt on each shot and dialogue inside shots, it has:

- ``base_images``: one more than there are shots; shot *i* runs from base image *i*
  (``start_base_image_id``) to base image *i+1* (``end_base_image_id``), so two shots that
  meet share a keyframe and continuity holds;
- ``dialogue_timeline``: ``dialogue`` and ``silence`` entries at absolute times
  (``start_time_sec``, ``duration_sec``) over the whole movie;
- ``render_profile.video``: ``model_id`` (passed to the adapters as
  ``metadata.video_model_id``) and ``max_fps`` (caps the frame rate);
- ``setting`` on shots, ``description`` on characters, a free-form ``voice_profile``.

Its own rules (:func:`cross_problems`) are checked on the raw JSON as well as on the model,
so that one pass names every problem. A timeline with gaps is accepted, the gaps being
silence, with a warning (:func:`timeline_gaps`) that the run records.

Internally such a plan becomes a Sparkle :class:`~sparkle.schemas.MoviePlan`
(:func:`to_movie_plan`): each shot's frame prompts are its base images' prompts, each
dialogue entry goes to the shot containing its start, at its time within that shot, and
the plan remembers which keyframe file each shot's ends are (the base image's id), so the
images stage renders each base image once. The run folder keeps the plan as received.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from sparkle.schema_base import problems_error
from sparkle.schemas import (
    EXPORTED_MODELS,
    FPS_RANGE,
    MAX_SHOT_SECONDS,
    MoviePlan,
    SafeId,
    _Model,
    _quoted,
    reference_problems,
)

#: Seconds two times may differ by and still count as equal (float sums of durations).
TOLERANCE_SEC = 1e-3

#: Plan metadata key under which ``render_profile.video.model_id`` reaches the adapters.
MODEL_ID_KEY = "video_model_id"

#: Frame rate of a plan that sets none (Sparkle's default).
DEFAULT_FPS = 24.0

#: Top-level keys that only this format has: a plan with any of them is read as this one.
MARKER_KEYS = ("base_images", "dialogue_timeline", "render_profile")


class BaseImageSpec(_Model):
    """A keyframe, shared by the shot that ends on it and the one that starts on it."""

    id: SafeId
    prompt: str = Field(min_length=1, pattern=r"\S")
    asset_uri: str | None = None
    local_path: str | None = None
    mime_type: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AgentCharacter(_Model):
    """A character; ``voice_profile`` is free-form (values other than strings are kept as
    their JSON text)."""

    id: SafeId
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    voice_profile: dict[str, Any] = Field(default_factory=dict)


class AgentDialogueLine(_Model):
    """A line listed on a shot; what is spoken, and when, is the timeline's."""

    character_id: SafeId
    text: str = Field(min_length=1, max_length=2000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class AgentShot(_Model):
    """A shot between two base images."""

    id: SafeId
    duration_sec: float = Field(gt=0, le=MAX_SHOT_SECONDS)
    setting: str | None = None
    visual_description: str = Field(min_length=1)
    start_base_image_id: SafeId
    end_base_image_id: SafeId
    motion_prompt: str | None = None
    is_talking_closeup: bool = False
    dialogue: list[AgentDialogueLine] = Field(default_factory=list)


class TimelineDialogue(_Model):
    """A line spoken at an absolute time of the movie."""

    type: Literal["dialogue"]
    character_id: SafeId
    text: str = Field(min_length=1, max_length=2000)
    start_time_sec: float = Field(ge=0)
    duration_sec: float = Field(gt=0)


class TimelineSilence(_Model):
    """A span of the movie with nobody speaking."""

    type: Literal["silence"]
    start_time_sec: float = Field(ge=0)
    duration_sec: float = Field(gt=0)


TimelineEntry = Annotated[TimelineDialogue | TimelineSilence, Field(discriminator="type")]


class RenderProfileVideo(_Model):
    """How the video is to be rendered."""

    model_id: str = Field(min_length=1, max_length=200, pattern=r"\S")
    max_fps: float | None = Field(default=None, ge=FPS_RANGE[0], le=FPS_RANGE[1])
    notes: str | None = None


class RenderProfile(_Model):
    video: RenderProfileVideo
    metadata: dict[str, Any] = Field(default_factory=dict)


class BaseImagePlan(_Model):
    """A movie as the script agent plans it: base images, shots between them, a timeline."""

    title: str = Field(min_length=1, max_length=300, pattern=r"\S")
    characters: list[AgentCharacter] = Field(default_factory=list)
    base_images: list[BaseImageSpec] = Field(min_length=2)
    shots: list[AgentShot] = Field(min_length=1)
    dialogue_timeline: list[TimelineEntry] = Field(default_factory=list)
    render_profile: RenderProfile | None = None
    #: Free-form; ``seed``, ``fps``, ``resolution`` and ``run_id`` mean what they mean in
    #: Sparkle's own format (values other than strings are read as their JSON text).
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_plan(self) -> BaseImagePlan:
        problems = cross_problems(self.model_dump(mode="json"))
        if problems:
            raise problems_error("plan_references", problems)
        return self


# `sparkle schema` exports this format's schema beside Sparkle's own (registered here:
# sparkle.schemas cannot import this module, which builds on it).
EXPORTED_MODELS["BaseImagePlan"] = BaseImagePlan


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _get(value: object, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def cross_problems(document: dict[str, Any]) -> list[list[str]]:
    """What is wrong between the parts of a plan in this format, as ``[json path, message]``
    pairs; read from its JSON as far as it can be (a field of the wrong type is left to
    the field checks)."""
    characters = _items(document.get("characters"))
    shots = _items(document.get("shots"))
    images = _items(document.get("base_images"))
    timeline = _items(document.get("dialogue_timeline"))
    character_ids = [_get(c, "id") for c in characters]
    problems = reference_problems(
        character_ids,
        [(_get(shot, "id"), [_get(line, "character_id") for line in _items(_get(shot, "dialogue"))])
         for shot in shots])
    # base images: unique ids, one more than shots, shot i from image i to image i+1
    seen: dict[str, int] = {}
    for i, image in enumerate(images):
        image_id = _get(image, "id")
        if isinstance(image_id, str):
            if image_id in seen:
                problems.append([f"base_images[{i}].id", f"duplicate base image id "
                                 f"{_quoted(image_id)} (also base_images[{seen[image_id]}].id)"])
            seen.setdefault(image_id, i)
    if images and shots and len(images) != len(shots) + 1:
        problems.append(["base_images", f"{len(images)} base images for {len(shots)} shots; "
                         f"expected len(shots) + 1 = {len(shots) + 1} (shot i runs from "
                         "base_images[i] to base_images[i+1])"])
    for i, shot in enumerate(shots):
        for key, index in (("start_base_image_id", i), ("end_base_image_id", i + 1)):
            named = _get(shot, key)
            if not isinstance(named, str):
                continue
            expected = _get(images[index], "id") if index < len(images) else None
            verb = key.split("_", 1)[0]  # start / end
            if named not in seen:
                hint = "" if expected is None else f"; expected {_quoted(str(expected))}"
                problems.append([f"shots[{i}].{key}",
                                 f"{_quoted(named)} names no base image{hint}"])
            elif isinstance(expected, str) and named != expected:
                problems.append([f"shots[{i}].{key}",
                                 f"{_quoted(named)} is base_images[{seen[named]}], but shot {i} "
                                 f"must {verb} at base_images[{index}] ({_quoted(expected)}) so "
                                 "that consecutive shots share a keyframe"])
    # the timeline: known speakers, in order, no overlaps, within the runtime
    durations = [_number(_get(shot, "duration_sec")) for shot in shots]
    runtime = sum(d for d in durations if d is not None) if None not in durations else None
    known = {c for c in character_ids if isinstance(c, str)}
    all_known = all(isinstance(c, str) for c in character_ids)
    previous: tuple[int, float, float] | None = None  # index, start, end
    total = 0.0
    for k, entry in enumerate(timeline):
        speaker = _get(entry, "character_id")
        if all_known and _get(entry, "type") == "dialogue" and isinstance(speaker, str) \
                and speaker not in known:
            problems.append([f"dialogue_timeline[{k}].character_id", f"{_quoted(speaker)} names "
                             f"no character; known ids: {sorted(known) or 'none'}"])
        start, length = _number(_get(entry, "start_time_sec")), _number(_get(entry, "duration_sec"))
        if start is None or length is None:
            continue
        end = start + length
        total += length
        if previous is not None:
            j, previous_start, previous_end = previous
            if start + TOLERANCE_SEC < previous_start:
                problems.append([f"dialogue_timeline[{k}].start_time_sec",
                                 f"{start:g} s comes before dialogue_timeline[{j}]'s "
                                 f"{previous_start:g} s; entries must be in order of "
                                 "start_time_sec"])
            elif start + TOLERANCE_SEC < previous_end:
                problems.append([f"dialogue_timeline[{k}]", f"{start:g}-{end:g} s overlaps "
                                 f"dialogue_timeline[{j}] ({previous_start:g}-{previous_end:g} s)"])
        if runtime is not None and end > runtime + TOLERANCE_SEC:
            problems.append([f"dialogue_timeline[{k}]", f"ends at {end:g} s, after the movie's "
                             f"end at {runtime:g} s (the sum of the shots' duration_sec)"])
        if previous is None or end > previous[2]:
            previous = (k, start, end)
    if runtime is not None and total > runtime + TOLERANCE_SEC:
        problems.append(["dialogue_timeline", f"its entries last {total:g} s in all, more than "
                         f"the shots' {runtime:g} s; the totals must agree"])
    return problems


def timeline_gaps(plan: BaseImagePlan) -> list[str]:
    """The spans of the movie that no timeline entry covers (accepted as silence)."""
    runtime = sum(shot.duration_sec for shot in plan.shots)
    gaps, cursor = [], 0.0
    for entry in plan.dialogue_timeline:
        if entry.start_time_sec > cursor + TOLERANCE_SEC:
            gaps.append((cursor, entry.start_time_sec))
        cursor = max(cursor, entry.start_time_sec + entry.duration_sec)
    if runtime > cursor + TOLERANCE_SEC:
        gaps.append((cursor, runtime))
    return [f"dialogue_timeline has a gap from {a:g} s to {b:g} s; treated as silence"
            for a, b in gaps]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def to_movie_plan(plan: BaseImagePlan) -> MoviePlan:
    """The plan as Sparkle's own format, remembering the plan as received, the shared
    keyframes and the timeline's gaps.

    Raises:
      ValidationError: the result breaks a rule of Sparkle's format (the metadata's).
    """
    images = plan.base_images
    metadata = {key: _text(value) for key, value in plan.metadata.items()}
    if plan.render_profile is not None:
        video = plan.render_profile.video
        metadata[MODEL_ID_KEY] = video.model_id
        current = metadata.get("fps", "")
        fps = float(current) if _is_number(current) else DEFAULT_FPS
        if video.max_fps is not None and video.max_fps < fps:
            metadata["fps"] = f"{video.max_fps:g}"
    starts, cursor = [], 0.0
    for shot in plan.shots:
        starts.append(cursor)
        cursor += shot.duration_sec
    lines: list[list[dict[str, Any]]] = [[] for _ in plan.shots]
    for entry in plan.dialogue_timeline:
        if not isinstance(entry, TimelineDialogue):
            continue
        index = max(i for i, start in enumerate(starts)
                    if start <= entry.start_time_sec + TOLERANCE_SEC)
        lines[index].append({"character_id": entry.character_id, "text": entry.text,
                             "start_time_sec": round(entry.start_time_sec - starts[index], 6)})
    document = {
        "title": plan.title,
        "characters": [{"id": c.id, "name": c.name, "description": c.description,
                        "voice_profile": {k: _text(v) for k, v in c.voice_profile.items()}}
                       for c in plan.characters],
        "shots": [{"id": shot.id, "duration_sec": shot.duration_sec, "setting": shot.setting,
                   "visual_description": shot.visual_description,
                   "start_frame_prompt": images[i].prompt,
                   "end_frame_prompt": images[i + 1].prompt,
                   "motion_prompt": shot.motion_prompt,
                   "is_talking_closeup": shot.is_talking_closeup,
                   "dialogue": [{**line, "start_time_sec": max(0.0, line["start_time_sec"])}
                                for line in lines[i]]}
                  for i, shot in enumerate(plan.shots)],
        "metadata": metadata,
    }
    movie = MoviePlan.model_validate(document)
    movie.set_source(plan, {shot.id: (shot.start_base_image_id, shot.end_base_image_id)
                            for shot in plan.shots}, timeline_gaps(plan))
    return movie


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_this_format(document: object) -> bool:
    """Whether a parsed plan is in this format (it has one of its own top-level keys)."""
    return isinstance(document, dict) and any(key in document for key in MARKER_KEYS)


def load_json(data: bytes) -> MoviePlan:
    """A run folder's ``movie_plan.json`` in this format, as Sparkle's plan.

    Raises:
      ValidationError: it is not a valid plan in this format.
    """
    return to_movie_plan(BaseImagePlan.model_validate_json(data))


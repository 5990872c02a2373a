"""The run records: what a run writes as it goes (asset references, checkpoints, the
history of events) and the QA stage's report.

Records are not strict, unlike plans: a status given as a string (``Checkpoint(status=
"success", ...)``, as the seed contract's adapters build them) becomes its enum member.
Unknown keys are refused, as by every wire-format model (:mod:`sparkle.schema_base`).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any, Literal

from pydantic import Field

from sparkle.names import CheckpointStatus, EventKind, StageName
from sparkle.schema_base import SafeId, _Model, check_id, values_schema


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


class Checkpoint(_Model):
    """The state of one stage of one run: ``runs/<run_id>/checkpoints/<stage>.json``."""

    stage: StageName
    status: Annotated[CheckpointStatus, values_schema(CheckpointStatus), Field(title="Status")]
    #: Seconds since the epoch.
    timestamp: float
    #: 1 when unset, as the seed contract's example builds it (the engine always sets it).
    attempt: int = Field(default=1, ge=1)
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class StageEvent(_Model):
    """One entry of a run's history (``events`` of ``manifest.json``)."""

    run_id: SafeId
    stage: StageName
    #: The event's kind (named ``status`` in the seed contract's format).
    status: Annotated[EventKind, values_schema(EventKind), Field(title="Status")]
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

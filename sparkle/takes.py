"""Takes: re-rolling single shots of a stage, and every earlier version kept beside the new.

A person who dislikes one shot re-rolls that shot (``sparkle redo RUN --shots s2``), not the
movie. The engine then runs the stage's adapter on a plan **narrowed** to the chosen shots
(and asset refs narrowed the same way) and merges the refs it returns into the run's refs:
the other shots' files are not touched. Adapters keep the seed contract's signature.

Each such run of a per-shot stage for a shot is a new **take**. Before the first re-roll of
a shot's stage, the files it has (take 1, the original) are copied to
``takes/<shot>/<stage>/take1/``; after each re-roll, its files are copied to
``takes/<shot>/<stage>/take<N>/``. The stage's own files (``frames/s2_start.png``...) always
hold the take in use, so later stages and the movie never need to know about takes.
``takes.json`` indexes them; ``sparkle takes RUN --shot s2 [--use N]`` lists them and puts
an earlier one back in place.

A re-roll's seed is derived from the plan's seed and the take number
(:func:`take_seed`): a re-roll differs from the take before it, and the same decisions
give the same pictures again.

Which stages a redo re-runs (:func:`dependent_stages`): the named stage for the chosen
shots, the per-shot stages that read its output for those shots (images → videos →
lipsync; tts → lipsync), and the stages that work on the whole movie (assemble, qa), whole.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparkle import atomic
from sparkle.errors import UnsafePathError
from sparkle.runlayout import TAKES_FILE
from sparkle.schemas import (
    NARROWED_FROM,
    STAGES,
    AssetRefs,
    AssetRefsShot,
    MoviePlan,
    StageEvent,
)
from sparkle.stages import StageFn, normalize_result

#: Folder of the kept takes, inside the run folder.
TAKES_DIR = "takes"

#: The stages that make files per shot, and the fields of a shot's asset refs each writes.
SHOT_FIELDS: dict[str, tuple[str, ...]] = {
    "images": ("start_frame", "end_frame"),
    "videos": ("raw_clip",),
    "tts": ("dialogue_audio",),
    "lipsync": ("final_video_clip",),
}

#: Per-shot stages, in pipeline order: the ones a redo may name.
PER_SHOT_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s in SHOT_FIELDS)

#: Per-shot stages reading a per-shot stage's output for the same shot.
READS_FROM: dict[str, tuple[str, ...]] = {
    "videos": ("images",),
    "lipsync": ("videos", "tts"),
}

#: Stages that work on the whole movie; after any re-roll they run again, whole.
WHOLE_MOVIE_STAGES: tuple[str, ...] = ("assemble", "qa")

#: The ``reset`` reason of stages re-run for some shots only; its metadata names them.
SHOTS_RESET = "redo"


class Take(BaseModel):
    """One version of one shot's output of one stage."""

    model_config = ConfigDict(extra="forbid")

    take: int = Field(ge=1)
    #: The shot's asset-ref fields as the stage left them (paths in the run folder).
    refs: dict[str, str | list[str]]
    #: Each of those files → where its copy is kept, under ``takes/``.
    kept: dict[str, str]
    #: The seed the take was made with.
    seed: int
    #: Seconds since the epoch.
    recorded_at: float
    #: ``original``, ``redo`` (a person's re-roll or a dependent stage re-run), ``qa``.
    cause: str


class StageTakes(BaseModel):
    """Every take of one shot's stage, and which is in use."""

    model_config = ConfigDict(extra="forbid")

    current: int = Field(ge=1)
    takes: list[Take] = Field(default_factory=list)

    def find(self, number: int) -> Take | None:
        return next((take for take in self.takes if take.take == number), None)


class TakesIndex(BaseModel):
    """``runs/<run_id>/takes.json``: shot → stage → takes."""

    model_config = ConfigDict(extra="forbid")

    shots: dict[str, dict[str, StageTakes]] = Field(default_factory=dict)


def read_index(run_dir: Path) -> TakesIndex:
    try:
        return TakesIndex.model_validate_json((run_dir / TAKES_FILE).read_bytes())
    except FileNotFoundError:
        return TakesIndex()
    except ValidationError as exc:
        raise ValueError(f"{run_dir / TAKES_FILE} is damaged ({exc.error_count()} problem(s)); "
                         "move it aside to start the takes afresh") from None


def write_index(run_dir: Path, index: TakesIndex) -> None:
    atomic.write_json(run_dir / TAKES_FILE, index)


def take_counts(run_dir: Path) -> dict[str, int]:
    """Shot → takes of its most re-rolled stage, for shots re-rolled at least once."""
    try:
        index = read_index(run_dir)
    except (ValueError, OSError):
        return {}
    counts = {shot: max((len(t.takes) for t in stages.values()), default=0)
              for shot, stages in index.shots.items()}
    return {shot: count for shot, count in counts.items() if count > 1}


def take_seed(plan_seed: int, take: int) -> int:
    """The seed of take ``take``: the plan's own for take 1, else one derived from the
    plan's seed and the take number (reproducible; a non-negative 63-bit integer)."""
    if take <= 1:
        return plan_seed
    digest = hashlib.sha256(f"sparkle-take:{plan_seed}:{take}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# -- which stages a redo re-runs ---------------------------------------------------------


def dependent_stages(stage: str) -> list[str]:
    """The per-shot stages after ``stage`` that read its output (directly or not)."""
    found: list[str] = []
    for later in PER_SHOT_STAGES[PER_SHOT_STAGES.index(stage) + 1:]:
        if any(source == stage or source in found for source in READS_FROM.get(later, ())):
            found.append(later)
    return found


def narrowed_shots(events: Sequence[StageEvent], stage: str) -> list[str] | None:
    """The shots the next run of ``stage`` is for, or None for all of them.

    A stage re-run for some shots carries them in its ``reset`` event (reason
    :data:`SHOTS_RESET`); the scope lasts until the stage next succeeds, and a reset for
    other reasons (``sparkle resume --from``) runs it whole.
    """
    for event in reversed(events):
        if event.stage != stage or event.status not in ("reset", "success"):
            continue
        if event.status == "reset" and event.metadata.get("reason") == SHOTS_RESET:
            shots = event.metadata.get("shots")
            if isinstance(shots, list) and shots:
                return [str(shot) for shot in shots]
        return None
    return None


# -- running a stage for some shots --------------------------------------------------------


def run_narrowed(fn: StageFn, stage: str, plan: MoviePlan, refs: AssetRefs, run_dir: Path,
                 shots: list[str], cause: str = "redo") -> tuple[AssetRefs, dict[str, Any]]:
    """Run the adapter ``fn`` of ``stage`` for ``shots`` only and merge what it returns.

    Shots of the same take number go to the adapter together, on a plan narrowed to them
    whose seed is :func:`take_seed` of that take and whose ``metadata.narrowed_from`` lists
every shot of the run (for an adapter that numbers shots). Each call's files are kept as a
new take.

    Returns:
      The run's refs with those shots' entries (and any extras) replaced by the adapter's,
      and metadata naming the shots, their takes and seeds.
    """
    index = read_index(run_dir)
    wanted = [shot for shot in (s.id for s in plan.shots) if shot in shots]
    fields = SHOT_FIELDS.get(stage, ())
    numbers: dict[str, int] = {}
    changed = False
    for shot in wanted:
        record = index.shots.setdefault(shot, {}).get(stage)
        if record is None:
            record = StageTakes(current=1)
            current = refs.shots.get(shot)
            if current is not None and _fields_of(current, fields):
                record.takes.append(_keep(run_dir, shot, stage, 1, _fields_of(current, fields),
                                          plan.seed, "original"))
                changed = True
            index.shots[shot][stage] = record
        numbers[shot] = max((t.take for t in record.takes), default=0) + 1
    if changed:
        write_index(run_dir, index)  # the originals are kept before anything overwrites them
    merged = refs.model_copy(deep=True)
    results: list[dict[str, Any]] = []
    seeds: dict[str, int] = {}
    for number in sorted(set(numbers.values())):
        group = [shot for shot in wanted if numbers[shot] == number]
        seed = take_seed(plan.seed, number)
        narrow_plan = plan.model_copy(update={
            "shots": [s for s in plan.shots if s.id in group],
            "metadata": {**plan.metadata, "seed": str(seed),
                         NARROWED_FROM: ",".join(s.id for s in plan.shots)},
        })
        narrow_refs = AssetRefs(
            shots={shot: refs.shots[shot].model_copy(deep=True) for shot in group
                   if shot in refs.shots},
            extras=dict(refs.extras),
        )
        result, metadata = normalize_result(fn(narrow_plan, narrow_refs, run_dir))
        for shot in group:
            entry = result.shots.get(shot, AssetRefsShot())
            merged.shots[shot] = entry
            seeds[shot] = seed
            record = index.shots[shot][stage]
            made = _fields_of(entry, fields)
            if made:
                record.takes.append(_keep(run_dir, shot, stage, number, made, seed, cause))
            record.current = number
        merged.extras.update(result.extras)
        results.append(metadata)
    write_index(run_dir, index)
    return merged, {
        "shots": wanted,
        "takes": numbers,
        "seeds": seeds,
        "adapter_results": results,
    }


def _fields_of(entry: AssetRefsShot, fields: tuple[str, ...]) -> dict[str, str | list[str]]:
    """The named fields of a shot's refs that hold something."""
    found: dict[str, str | list[str]] = {}
    for name in fields:
        value = getattr(entry, name)
        if value:
            found[name] = list(value) if isinstance(value, list) else str(value)
    return found


def _paths(refs: dict[str, str | list[str]]) -> list[str]:
    paths: list[str] = []
    for value in refs.values():
        paths += value if isinstance(value, list) else [value]
    return [path for path in paths if "://" not in path]


def _keep(run_dir: Path, shot: str, stage: str, number: int,
          refs: dict[str, str | list[str]], seed: int, cause: str) -> Take:
    """Copy the files ``refs`` names to ``takes/<shot>/<stage>/take<number>/``."""
    folder = Path(TAKES_DIR) / shot / stage / f"take{number}"
    kept: dict[str, str] = {}
    for path in _paths(refs):
        source = inside(run_dir, path)
        if not source.is_file():
            continue
        name = Path(path).name
        target = folder / name
        if str(target) in kept.values():
            target = folder / f"{len(kept)}-{name}"
        _copy(source, run_dir / target)
        kept[path] = str(target)
    return Take(take=number, refs=refs, kept=kept, seed=seed, recorded_at=time.time(),
                cause=cause)


def inside(run_dir: Path, path: str) -> Path:
    """``run_dir / path``, refused when it resolves outside the run folder (an adapter's
    refs, or a ``takes.json`` edited by hand, must not make a take read or write there).

    Raises:
      UnsafePathError: it does.
    """
    base = run_dir.resolve()
    candidate = (base / path).resolve()
    if base not in candidate.parents:
        raise UnsafePathError(f"{path!r} resolves outside run folder {str(run_dir)!r}; "
                              "a take keeps only files inside it")
    return candidate


def _copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary name, so a copy cut short never
    looks kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.temp_path_for(target) as tmp:
        shutil.copyfile(source, tmp)


# -- looking at takes and putting one back --------------------------------------------------


def list_takes(run_dir: Path, refs: AssetRefs, shot: str) -> dict[str, list[dict[str, Any]]]:
    """Stage → the takes of ``shot``, oldest first, each with ``take``, ``current``,
    ``files`` (the kept copies, or the stage's files for a take never re-rolled),
    ``seed``, ``cause`` and ``recorded_at``."""
    index = read_index(run_dir)
    recorded = index.shots.get(shot, {})
    entry = refs.shots.get(shot)
    found: dict[str, list[dict[str, Any]]] = {}
    for stage in PER_SHOT_STAGES:
        record = recorded.get(stage)
        if record is not None and record.takes:
            found[stage] = [
                {"take": t.take, "current": t.take == record.current,
                 "files": list(t.kept.values()), "seed": t.seed, "cause": t.cause,
                 "recorded_at": t.recorded_at}
                for t in record.takes
            ]
        elif entry is not None and _fields_of(entry, SHOT_FIELDS[stage]):
            found[stage] = [{"take": 1, "current": True,
                             "files": _paths(_fields_of(entry, SHOT_FIELDS[stage])),
                             "seed": None, "cause": "original", "recorded_at": None}]
    return found


def restore_take(run_dir: Path, refs: AssetRefs, shot: str, stage: str, number: int
                 ) -> AssetRefs:
    """Put take ``number`` of ``shot``'s ``stage`` back in place: its kept files copied over
    the stage's files, the shot's refs set to them, and the index told. Returns the refs.

    Raises:
      KeyError: there is no such take (the message lists the ones there are).
    """
    index = read_index(run_dir)
    record = index.shots.get(shot, {}).get(stage)
    take = record.find(number) if record is not None else None
    if record is None or take is None:
        have = sorted(t.take for t in record.takes) if record is not None else [1]
        raise KeyError(f"shot {shot} has no take {number} of {stage}; takes: "
                       f"{', '.join(map(str, have))}")
    for path, copy in take.kept.items():
        _copy(inside(run_dir, copy), inside(run_dir, path))
    refs = refs.model_copy(deep=True)
    entry = refs.shot(shot)
    for name, value in take.refs.items():
        setattr(entry, name, value)
    record.current = number
    write_index(run_dir, index)
    return refs


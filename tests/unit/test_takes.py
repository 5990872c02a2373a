"""Takes: narrowed adapter calls, merged refs, kept files, seeds per take (sparkle.takes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sparkle.schemas import AssetRefs, MoviePlan, StageEvent
from sparkle.takes import (
    dependent_stages,
    list_takes,
    narrowed_shots,
    restore_take,
    run_narrowed,
    take_seed,
)

PLANS = Path(__file__).parents[1] / "data" / "plans"


def plan() -> MoviePlan:
    return MoviePlan.model_validate(json.loads((PLANS / "lighthouse.json").read_text()))


def drawing_adapter(calls: list[tuple[list[str], int]]) -> Any:
    """An images adapter writing one file per shot whose bytes name the seed."""

    def images(movie_plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Any:
        calls.append(([s.id for s in movie_plan.shots], movie_plan.seed))
        refs = refs.model_copy(deep=True)
        for shot in movie_plan.shots:
            path = run_dir / "frames" / f"{shot.id}_start.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{shot.id} seed {movie_plan.seed}".encode())
            refs.shot(shot.id).start_frame = f"frames/{shot.id}_start.png"
            refs.extras["last_call"] = ",".join(s.id for s in movie_plan.shots)
        return refs, {"frames_written": len(movie_plan.shots)}

    return images


def test_seed_of_a_take_is_reproducible_and_differs_per_take():
    """Take 1 keeps the plan's seed; later takes get seeds derived from seed and number:
    the same every time, different from each other."""
    assert take_seed(42, 1) == 42
    assert take_seed(42, 2) == take_seed(42, 2)
    assert len({42, take_seed(42, 2), take_seed(42, 3), take_seed(7, 2)}) == 4
    assert 0 <= take_seed(-5, 9) < 2**63


def test_a_redo_reaches_the_per_shot_stages_that_read_the_output():
    """images feeds videos, and through it lipsync; tts feeds lipsync only."""
    assert dependent_stages("images") == ["videos", "lipsync"]
    assert dependent_stages("videos") == ["lipsync"]
    assert dependent_stages("tts") == ["lipsync"]
    assert dependent_stages("lipsync") == []


def event(stage: str, status: str, **metadata: Any) -> StageEvent:
    return StageEvent(run_id="r", stage=stage, status=status, timestamp=1.0,  # type: ignore[arg-type]
                      attempt=1, metadata=metadata)


def test_the_shots_of_a_stage_come_from_its_last_reset_until_it_succeeds():
    """A redo's reset narrows the stage's next run; its success, or a whole reset
    (`resume --from`), ends the narrowing."""
    redo = event("images", "reset", reason="redo", shots=["s2"])
    assert narrowed_shots([redo], "images") == ["s2"]
    assert narrowed_shots([redo, event("images", "begin")], "images") == ["s2"]
    assert narrowed_shots([redo], "videos") is None
    assert narrowed_shots([redo, event("images", "success")], "images") is None
    assert narrowed_shots([redo, event("images", "reset", reason="--from")], "images") is None


def test_narrowed_call_sees_only_its_shots_and_the_others_are_left_alone(tmp_path: Path):
    """run_narrowed: the adapter gets a plan of s2 alone with take 2's seed; the merged refs
    keep s1 and s3 as they were; take 1 (the original file) and take 2 are kept."""
    # Given a run whose three shots have their take-1 keyframes
    calls: list[tuple[list[str], int]] = []
    adapter = drawing_adapter(calls)
    refs, _ = adapter(plan(), AssetRefs(), tmp_path)
    original = {p.name: p.read_bytes() for p in (tmp_path / "frames").iterdir()}
    # When s2 is re-run on its own
    merged, metadata = run_narrowed(adapter, "images", plan(), refs, tmp_path, ["s2"])
    # Then the adapter saw s2 alone, with take 2's seed
    assert calls[-1] == (["s2"], take_seed(42, 2))
    assert metadata["takes"] == {"s2": 2} and metadata["shots"] == ["s2"]
    # And s1 and s3 are as they were, in the refs and on disk
    assert merged.shots["s1"] == refs.shots["s1"] and merged.shots["s3"] == refs.shots["s3"]
    now = {p.name: p.read_bytes() for p in (tmp_path / "frames").iterdir()}
    assert now["s1_start.png"] == original["s1_start.png"]
    assert now["s2_start.png"] != original["s2_start.png"]
    assert merged.extras["last_call"] == "s2"
    # And both takes are kept and listed, take 2 in use
    kept = list_takes(tmp_path, merged, "s2")["images"]
    assert [(t["take"], t["current"]) for t in kept] == [(1, False), (2, True)]
    assert (tmp_path / kept[0]["files"][0]).read_bytes() == original["s2_start.png"]
    # When take 1 is put back, its bytes are in place again
    restored = restore_take(tmp_path, merged, "s2", "images", 1)
    assert (tmp_path / "frames" / "s2_start.png").read_bytes() == original["s2_start.png"]
    assert restored.shots["s2"].start_frame == "frames/s2_start.png"
    with pytest.raises(KeyError, match="no take 3 of images; takes: 1, 2"):
        restore_take(tmp_path, merged, "s2", "images", 3)


def test_shots_at_the_same_take_share_one_call_and_others_get_their_own(tmp_path: Path):
    """s2 at its second re-roll and s3 at its first: two calls, each with its take's seed."""
    calls: list[tuple[list[str], int]] = []
    adapter = drawing_adapter(calls)
    refs, _ = adapter(plan(), AssetRefs(), tmp_path)
    refs, _ = run_narrowed(adapter, "images", plan(), refs, tmp_path, ["s2"])
    calls.clear()
    run_narrowed(adapter, "images", plan(), refs, tmp_path, ["s3", "s2"])
    assert calls == [(["s3"], take_seed(42, 2)), (["s2"], take_seed(42, 3))]


def test_a_take_never_reads_or_writes_outside_the_run_folder(tmp_path: Path):
    """An adapter naming a file outside the run folder fails the re-roll (nothing copied
    from there), and a takes.json edited to point outside is refused when restoring."""
    from sparkle.errors import UnsafePathError

    run_dir = tmp_path / "run"
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")

    def escaping(movie_plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Any:
        refs = refs.model_copy(deep=True)
        refs.shot("s2").start_frame = "../secret.txt"
        return refs

    run_dir.mkdir()
    with pytest.raises(UnsafePathError, match="outside run folder"):
        run_narrowed(escaping, "images", plan(), AssetRefs(), run_dir, ["s2"])
    assert not list(run_dir.rglob("secret.txt"))
    index = run_dir / "takes.json"
    index.write_text(json.dumps({"shots": {"s2": {"images": {"current": 1, "takes": [{
        "take": 1, "refs": {"start_frame": "../evil.png"}, "kept": {"../evil.png": "x.png"},
        "seed": 1, "recorded_at": 1.0, "cause": "original"}]}}}}))
    (run_dir / "x.png").write_bytes(b"x")
    with pytest.raises(UnsafePathError):
        restore_take(run_dir, AssetRefs(), "s2", "images", 1)
    assert not (tmp_path / "evil.png").exists()

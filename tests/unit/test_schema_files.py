"""The committed JSON Schemas in ``schemas/`` match the models, and real files match them.

When a model changes, regenerate with ``sparkle schema --out schemas`` and commit the result;
these tests fail until then, so the published schemas never drift from the code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from schema_check import committed, schema_errors

from sparkle.runstore import RunStore
from sparkle.schemas import EXPORTED_MODELS, Checkpoint, MoviePlan, StageEvent

ROOT = Path(__file__).parents[2]
SCHEMAS = ROOT / "schemas"
SPARKLE = Path(sys.executable).parent / "sparkle"
PLANS = ROOT / "tests" / "data" / "plans"


def test_committed_schemas_match_the_models():
    """Each committed schema equals the schema its model produces now."""
    for name, model in EXPORTED_MODELS.items():
        assert committed(name) == model.model_json_schema(), (
            f"schemas/{name}.schema.json is out of date: run `sparkle schema --out schemas`"
        )


def test_committed_schemas_are_exactly_the_exported_models():
    """schemas/ holds one file per exported model and nothing stale."""
    files = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))
    assert files == sorted(f"{name}.schema.json" for name in EXPORTED_MODELS)
    assert set(EXPORTED_MODELS) == {
        "MoviePlan",
        "AssetRefs",
        "QAReport",
        "Checkpoint",
        "StageEvent",
        "RunManifest",
        "BaseImagePlan",
    }


def test_sparkle_schema_regenerates_the_committed_files_byte_for_byte(tmp_path: Path):
    """`sparkle schema --out DIR` writes exactly the committed files (formatting included)."""
    # When I regenerate the schemas into a fresh folder with the real command
    result = subprocess.run(
        [str(SPARKLE), "schema", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Then every file is identical to the committed one
    for name in EXPORTED_MODELS:
        fresh = (tmp_path / "out" / f"{name}.schema.json").read_bytes()
        assert fresh == (SCHEMAS / f"{name}.schema.json").read_bytes(), (
            f"schemas/{name}.schema.json drifted: run `sparkle schema --out schemas`"
        )


def test_checkpoint_written_by_the_run_store_matches_the_committed_schema(tmp_path: Path):
    """A real checkpoint file on disk validates against schemas/Checkpoint.schema.json."""
    # Given a run with a failed checkpoint carrying an error and metadata
    store = RunStore(tmp_path / "runs")
    plan = MoviePlan.model_validate_json((PLANS / "lighthouse.json").read_bytes())
    run, _ = store.create(plan)
    run.write_checkpoint(
        Checkpoint(
            stage="videos",
            status="failed",
            timestamp=time.time(),
            attempt=2,
            error="ffmpeg exited 1",
            metadata={"adapter": "media", "duration_sec": 1.5},
        )
    )
    # When I read the file the store wrote
    on_disk = json.loads((run.dir / "checkpoints" / "videos.json").read_text("utf-8"))
    # Then it satisfies the committed schema, and the model reads it back
    assert schema_errors(on_disk, committed("Checkpoint")) == []
    assert Checkpoint.model_validate(on_disk).attempt == 2


def test_manifest_events_written_by_the_run_store_match_the_committed_schema(tmp_path: Path):
    """Every event in a real manifest validates against schemas/StageEvent.schema.json."""
    store = RunStore(tmp_path / "runs")
    plan = MoviePlan.model_validate_json((PLANS / "lighthouse.json").read_bytes())
    run, _ = store.create(plan)
    run.append_event("script", "begin", 1)
    run.append_event("script", "success", 1, metadata={"adapter": "test"})
    manifest = json.loads((run.dir / "manifest.json").read_text("utf-8"))
    assert schema_errors(manifest, committed("RunManifest")) == []
    events = manifest["events"]
    assert len(events) == 2
    for event in events:
        assert schema_errors(event, committed("StageEvent")) == []
        StageEvent.model_validate(event)


@pytest.mark.parametrize(
    "bad",
    [
        {"status": "done"},
        {"attempt": 0},
        {"stage": "render"},
        {"surprise": True},
        {"error": 5},
    ],
    ids=["status", "attempt-zero", "stage", "extra-key", "error-type"],
)
def test_committed_checkpoint_schema_refuses_what_the_model_refuses(bad: dict[str, Any]):
    """The schema is not vacuous: instances the model refuses are refused by it too."""
    instance = {
        "stage": "qa",
        "status": "success",
        "timestamp": 1.0,
        "attempt": 1,
        "error": None,
        "metadata": {},
    } | bad
    assert schema_errors(instance, committed("Checkpoint"))
    with pytest.raises(ValueError):
        Checkpoint.model_validate_json(json.dumps(instance))


def test_movie_plan_schema_carries_the_path_safe_id_rule():
    """A tool validating plans with the published schema also refuses unsafe ids."""
    schema = committed("MoviePlan")
    for model, field in [
        ("ShotSpec", "id"),
        ("CharacterSpec", "id"),
        ("DialogueLine", "character_id"),
    ]:
        prop = schema["$defs"][model]["properties"][field]
        assert "pattern" in prop, f"{model}.{field} in MoviePlan.schema.json has no id pattern"

"""The models as the seed contract's adapters use them: dict-style asset refs, a
Checkpoint built without an attempt, pydantic-v1 style ``.json()``."""

from __future__ import annotations

import json
import time
import warnings

import pytest
from pydantic import ValidationError

from sparkle.schemas import AssetRefs, AssetRefsShot, Checkpoint


def test_item_access_reads_and_writes_the_same_fields_as_attributes():
    """refs['shots'][id][field] = ... creates the shot's entry, and reads back either way."""
    refs = AssetRefs()
    refs["shots"]["s1"]["start_frame"] = "frames/s1_start.png"
    refs["shots"]["s1"]["dialogue_audio"].append("audio/s1/00.wav")
    refs["extras"]["screenplay"] = "script/screenplay.txt"
    assert refs.shots["s1"].start_frame == "frames/s1_start.png"
    assert refs.shot("s1")["dialogue_audio"] == ["audio/s1/00.wav"]
    assert refs.extras == {"screenplay": "script/screenplay.txt"}
    assert AssetRefs.model_validate_json(refs.json()) == refs


def test_reading_with_get_or_in_creates_nothing():
    refs = AssetRefs()
    assert refs["shots"].get("nope") is None and "nope" not in refs["shots"]
    assert refs.shots == {}
    assert "shots" in refs and refs.get("missing", 3) == 3


def test_assigned_values_are_validated_and_unknown_fields_refused():
    """A wrong type or an unknown field fails where the adapter wrote it, not later."""
    refs = AssetRefs()
    with pytest.raises(ValidationError):
        refs["shots"]["s1"]["start_frame"] = 42
    with pytest.raises(KeyError, match="start_fram"):
        refs["shots"]["s1"]["start_fram"] = "x.png"
    refs["shots"]["s2"] = {"raw_clip": "clips/s2.mp4"}
    assert isinstance(refs.shots["s2"], AssetRefsShot)
    with pytest.raises(ValueError):
        refs["shots"]["../x"]["start_frame"] = "x.png"


def test_a_checkpoint_built_as_the_contract_does_is_valid_and_dumps_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint = Checkpoint(stage="images", status="success", timestamp=time.time())
        text = checkpoint.json()
    assert checkpoint.attempt == 1
    assert Checkpoint.model_validate(json.loads(text)) == checkpoint

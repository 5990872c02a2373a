"""The plan's seed: metadata.seed, else SPARKLE_SEED (the seed contract's section 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkle.schemas import MoviePlan

PLAN = Path(__file__).parents[1] / "data" / "plans" / "rooftop.json"


def plan(**metadata: str) -> MoviePlan:
    document = json.loads(PLAN.read_text())
    document["metadata"] = metadata
    return MoviePlan.model_validate(document)


def test_metadata_seed_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("SPARKLE_SEED", "99")
    assert plan(seed="12").seed == 12


def test_without_metadata_seed_the_environment_gives_it(monkeypatch):
    monkeypatch.setenv("SPARKLE_SEED", "99")
    assert plan().seed == 99
    monkeypatch.delenv("SPARKLE_SEED")
    assert plan().seed == 0


def test_a_seed_that_is_not_an_integer_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SPARKLE_SEED", "abc")
    with pytest.raises(ValueError, match="SPARKLE_SEED='abc' is not an integer"):
        _ = plan().seed

"""The inbox's pure naming rules: which files are plans, claim names, collision names."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkle.inbox_names import candidate_names, claim_name, is_plan_name, parse_claim_name


@pytest.mark.parametrize(
    "name",
    ["plan.json", "My Movie.json", "UPPER.JSON", "a.b.json", "~plan.json", "plan-1.json"],
)
def test_plan_names_are_taken(name: str) -> None:
    # Given a plain plan name, then the inbox takes it (the glob ignores case)
    assert is_plan_name(name, "*.json")


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.json",  # dotfile
        ".claimed",  # the inbox's own folder
        "processed",
        "rejected",
        "plan.json.part",  # still being written
        "plan.part",
        "plan.tmp",
        "plan.TMP",
        "plan.json.crdownload",
        "~$plan.json",  # office lock file
        "notes.txt",  # not the glob
        "plan.json.error.json.txt",
        "",
    ],
)
def test_other_names_are_left_alone(name: str) -> None:
    # Given a dotfile, a temporary name, a sub-folder or another extension, then it is ignored
    assert not is_plan_name(name, "*.json")


def test_a_custom_glob_still_ignores_temporary_names_and_subfolders() -> None:
    # Given the glob "*", then sub-folders and temporary names are still ignored
    assert is_plan_name("anything", "*")
    assert not is_plan_name("processed", "*")
    assert not is_plan_name("x.part", "*")


def test_collision_names_keep_the_extension() -> None:
    # When names are generated for a collision, then the suffix goes before the extension
    assert list(itertools.islice(candidate_names("plan.json"), 3)) == [
        "plan.json",
        "plan-1.json",
        "plan-2.json",
    ]
    assert list(itertools.islice(candidate_names("README"), 2)) == ["README", "README-1"]
    assert list(itertools.islice(candidate_names(".env"), 2)) == [".env", ".env-1"]


def test_a_name_in_claimed_without_an_owner_is_kept_whole() -> None:
    # Given a file put into .claimed/ by hand, then its whole name is the original name
    assert parse_claim_name("plan.json") == (None, "plan.json")
    assert parse_claim_name("abc-1_plan.json") == (None, "abc-1_plan.json")


@given(
    owner=st.text("0123456789abcdef", min_size=12, max_size=12),
    seq=st.integers(min_value=1, max_value=10**9),
    name=st.text(st.characters(blacklist_characters="/\x00"), min_size=1, max_size=200),
)
def test_a_claim_name_gives_back_its_owner_and_original_name(
    owner: str, seq: int, name: str
) -> None:
    # Given any file name claimed by any watcher, then parsing the claim name gives both back
    assert parse_claim_name(claim_name(owner, seq, name)) == (owner, name)

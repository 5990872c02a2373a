"""Watch-folder profiles (issue 22, item 6): which inbox sub-folders are profiles, and a
wrong ``profile.toml`` is one clear error naming the file and the key, never silence."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sparkle.errors import ConfigError
from sparkle.profiles import discover, load_profile


def _profile(inbox: Path, name: str, text: str) -> Path:
    folder = inbox / name
    folder.mkdir(parents=True)
    (folder / "profile.toml").write_text(text)
    return folder


def test_only_subfolders_with_a_profile_file_are_profiles(tmp_path, caplog):
    # Given: the inbox's own folders (one even holding a profile.toml), a profile, and a
    # plain folder
    inbox = tmp_path / "inbox"
    for own in (".claimed", "processed", "rejected"):
        (inbox / own).mkdir(parents=True)
    (inbox / "processed" / "profile.toml").write_text('priority = "high"\n')
    _profile(inbox, "rush", 'priority = "high"\nreview_after = ["qa", "images"]\n'
                            'webhook = "https://hooks.example.com/rush"\n')
    (inbox / "plain").mkdir()
    # When
    with caplog.at_level(logging.WARNING):
        found = discover(inbox)
    # Then: only rush, its values as the plan metadata they become (stages in order)
    assert [(p.name, p.metadata) for p in found] == [("rush", {
        "priority": "high", "review_after": "images,qa",
        "webhook": "https://hooks.example.com/rush"})]
    assert "plain" in caplog.text and "profile.toml" in caplog.text


@pytest.mark.parametrize(("text", "key", "says"), [
    ('priority = "high"\nreview_afer = ["qa"]\n', "review_afer", "unknown key"),
    ('priority = "urgent"\n', "priority", "high, normal, low"),
    ('review_after = ["qa", "colour"]\n', "review_after", "'colour'"),
    ('webhook = "ftp://example.com/x"\n', "webhook", "http"),
    ('adapters = "test"\n', "adapters", "not supported yet"),
])
def test_a_wrong_profile_is_an_error_naming_file_and_key(tmp_path, text, key, says):
    # Given
    folder = _profile(tmp_path / "inbox", "rush", text)
    # When
    with pytest.raises(ConfigError) as caught:
        discover(tmp_path / "inbox")
    # Then: one line, naming the file, the key and what is wrong
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder / "profile.toml") in message and repr(key) in message and says in message


def test_a_profile_file_that_is_not_toml_is_an_error_naming_it(tmp_path):
    # Given
    folder = _profile(tmp_path / "inbox", "rush", "priority = high\n")
    # When / Then
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(folder)

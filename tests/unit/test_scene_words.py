"""The pure parts of the newcomer's movie: which words pick which scene elements, which
phonemes give which mouth shapes, and how dialogue timing becomes subtitle cues."""

from __future__ import annotations

import pytest

from sparkle.adapters.ambience import bed_for
from sparkle.adapters.scene_words import find_elements
from sparkle.adapters.subtitles import Cue, cues_from_timing, parse_cues, srt_text, vtt_text
from sparkle.adapters.visemes import Viseme, from_phonemes, shape_at, shape_for
from sparkle.schemas import MoviePlan


@pytest.mark.parametrize(
    ("text", "present", "absent"),
    [
        ("Wide view of a lighthouse at dusk, stormy sea", {"lighthouse", "dusk", "storm", "sea"},
         {"lamp"}),
        ("It keeps raining on the rooftops", {"rain", "rooftop"}, set()),
        ("A neon-lit alley", {"neon", "street", "night"}, set()),
        ("Snowy peaks", {"snow", "mountains"}, set()),
        ("A seagull", set(), {"sea"}),
        ("An abstract feeling of longing", set(), {"sea", "night", "room"}),
    ],
)  # fmt: skip
def test_words_pick_scene_elements(text: str, present: set[str], absent: set[str]) -> None:
    """Protects: vocabulary words match whole or with an ending, never inside other words."""
    # Given a prompt, when its elements are found
    found = set(find_elements(text))
    # Then the named elements are there and the look-alikes are not
    assert present <= found
    assert not absent & found


def test_ambience_follows_the_scene_words() -> None:
    """Protects: rain and sea sound where the words say so; a room has room tone only."""
    # Given shots at a stormy coast and in a kitchen
    plan = MoviePlan.model_validate(
        {
            "title": "t",
            "shots": [
                {"id": "a", "duration_sec": 1, "visual_description": "a stormy sea",
                 "start_frame_prompt": "waves", "end_frame_prompt": "waves"},
                {"id": "b", "duration_sec": 1, "setting": "kitchen",
                 "visual_description": "a table", "start_frame_prompt": "a cup",
                 "end_frame_prompt": "a cup"},
            ],
        }
    )  # fmt: skip
    # Then the coast has rain, wind and sea, the kitchen room tone
    assert set(bed_for(plan, plan.shots[0]).sounds) == {"rain", "wind", "sea"}
    assert bed_for(plan, plan.shots[1]).sounds == ("room",)


@pytest.mark.parametrize(
    ("phoneme", "shape"),
    [("'aI", "AI"), ("V", "AI"), ("u:", "O"), ("w", "O"), ("i:", "E"), ("m", "MBP"),
     ("b", "MBP"), ("f", "FV"), ("t", "etc"), ("_:", "rest"), ("_", "rest")],
)  # fmt: skip
def test_phonemes_map_to_mouth_shapes(phoneme: str, shape: str) -> None:
    """Protects: espeak phoneme names (with stress and length marks) give the documented shape."""
    # Given an espeak phoneme name, then it maps to its mouth shape
    assert shape_for(phoneme) == shape


def test_viseme_track_closes_at_the_end_and_outside_the_line() -> None:
    """Protects: a line's shapes start where espeak says and end closed."""
    # Given phoneme events of "pa"
    shapes = from_phonemes([(0.0, "p"), (0.08, "'a:"), (0.3, "_:")], 0.5)
    # Then the track is pressed, open, closed
    assert [v.shape for v in shapes] == ["MBP", "AI", "rest"]
    assert shape_at(shapes, 0.1) == "AI"
    assert shape_at(shapes, 0.4) == "rest"
    assert shape_at([Viseme(0.2, "AI")], 0.1) == "rest"


def test_cues_follow_each_shots_final_length() -> None:
    """Protects: a cue starts at its shot's offset in the movie plus the line's start, and
    lasts as long as its audio; an extended shot pushes later cues back."""
    # Given a timing record of two shots, the first extended to 3.5 s
    timing = {
        "shots": {
            "a": {"duration_sec": 3.5, "lines": [
                {"start_sec": 0.5, "duration_sec": 2.9, "text": "First  line"}]},
            "b": {"duration_sec": 2.0, "lines": [
                {"start_sec": 0.25, "duration_sec": 1.0, "text": "Second"}]},
        }
    }  # fmt: skip
    # When it becomes cues
    cues = cues_from_timing(timing, ["a", "b"])
    # Then each starts at the shot's offset plus the line's start
    assert cues == [Cue(0.5, 3.4, "First line"), Cue(3.75, 4.75, "Second")]
    # And SRT and WebVTT both carry them, in their own clock formats
    srt, vtt = srt_text(cues), vtt_text(cues)
    assert "00:00:03,750 --> 00:00:04,750" in srt
    assert vtt.startswith("WEBVTT") and "00:00:03.750 --> 00:00:04.750" in vtt
    assert parse_cues(srt) == parse_cues(vtt) == cues

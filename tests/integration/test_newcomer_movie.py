"""What a newcomer sees: keyframes that follow the prompts, mouths that move with the words,
subtitles at the dialogue's times, and QA that catches injected defects.

Real Pillow drawings, real espeak-ng speech and real ffmpeg encodes, at small sizes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from sparkle.adapters.assemble import assemble_stage
from sparkle.adapters.ffmpeg import run_ffmpeg
from sparkle.adapters.images import images_stage
from sparkle.adapters.lipsync import lipsync_stage
from sparkle.adapters.media_set import ADAPTERS
from sparkle.adapters.probe import probe
from sparkle.adapters.subtitles import parse_cues
from sparkle.adapters.tts import tts_stage
from sparkle.adapters.videos import videos_stage
from sparkle.schemas import STAGES, AssetRefs, MoviePlan

ROOT = Path(__file__).resolve().parent.parent.parent
PLANS = ROOT / "tests" / "data" / "plans"


def load_plan(name: str, **metadata: str) -> MoviePlan:
    plan = MoviePlan.model_validate_json((PLANS / name).read_text(encoding="utf-8"))
    plan.metadata.update(metadata)
    return plan


def layout_of(run_dir: Path, keyframe: str) -> dict[str, Any]:
    layouts: dict[str, Any] = json.loads((run_dir / "frames" / "layout.json").read_text("utf-8"))
    return layouts[keyframe]  # type: ignore[no-any-return]


def frame_at(clip: Path, seconds: float, out: Path) -> Image.Image:
    """The frame of ``clip`` shown at ``seconds``, as RGB."""
    run_ffmpeg(
        ["-ss", f"{seconds:.3f}", "-i", str(clip), "-frames:v", "1", "-update", "1", str(out)],
        doing="grabbing a frame",
    )
    return Image.open(out).convert("RGB")


def region_diff(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Mean absolute difference (0-255) of two frames inside ``box``."""
    diff = ImageChops.difference(a.crop(box), b.crop(box)).convert("L")
    return float(ImageStat.Stat(diff).mean[0])


def share(image: Image.Image, box: tuple[int, int, int, int], test: Any) -> float:
    """Fraction of the pixels in ``box`` for which ``test(r, g, b)`` holds."""
    pixels = list(image.crop(box).get_flattened_data())
    return sum(1 for p in pixels if test(*p)) / max(1, len(pixels))


@pytest.fixture(scope="module", autouse=True)
def default_settings() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("SPARKLE_QA_POLICY", "SPARKLE_CAPTIONS", "SPARKLE_BURN_SUBTITLES"):
            patch.delenv(name, raising=False)
        yield


# --- scenes from the prompts ------------------------------------------------------------


def test_lighthouse_keyframe_shows_lighthouse_sea_and_dusk(tmp_path: Path) -> None:
    """Protects the must-show: "Wide view of a lighthouse at dusk, stormy sea" draws a
    striped lighthouse, the sea and a dusk sky, where the layout says they are."""
    # Given the lighthouse example at 640x360
    plan = load_plan("lighthouse.json", resolution="640x360")
    # When its keyframes are drawn
    refs, _ = images_stage(plan, AssetRefs(), tmp_path)
    first = str(refs.shots["s1"].start_frame)
    layout = layout_of(tmp_path, first)
    image = Image.open(tmp_path / first).convert("RGB")
    # Then the layout names a dusk sky, a storm, the sea and a lighthouse
    assert {"dusk", "storm", "sea", "lighthouse"} <= set(layout["elements"])
    # And the lighthouse's box holds its red and its white bands
    tower = tuple(layout["boxes"]["lighthouse"])
    assert share(image, tower, lambda r, g, b: r > 150 and g < 90 and b < 90) > 0.1
    assert share(image, tower, lambda r, g, b: min(r, g, b) > 150) > 0.1
    # And the sea is blue-grey water below the horizon
    x0, y0, x1, y1 = layout["boxes"]["sea"]
    cliff = layout["boxes"]["cliff"]
    x0, x1 = (cliff[2], x1) if cliff[0] == 0 else (x0, cliff[0])
    water = (x0, y0, x1, y0 + (y1 - y0) // 3)
    assert share(image, water, lambda r, g, b: b > r + 15) > 0.6
    # And the sky glows warm (orange) just above the horizon, as at dusk
    sx0, sy0, sx1, sy1 = layout["boxes"]["sky"]
    glow = (sx0, sy1 - (sy1 - sy0) // 6, sx1, sy1 - 2)
    assert share(image, glow, lambda r, g, b: r > 150 and r > b + 50) > 0.5


def test_rooftop_keyframe_is_night_with_rain(tmp_path: Path) -> None:
    """Protects the must-show: the rooftop example is at night, with rain falling (and
    without the rain words there is no rain)."""
    # Given the rooftop example, and the same plan with the rain words taken out
    plan = load_plan("rooftop.json", resolution="640x360")
    dry = plan.model_copy(deep=True)
    dry.shots[0].start_frame_prompt = "A neon-lit rooftop, city lights below"
    dry.shots[0].end_frame_prompt = "Same rooftop, Ava in closeup"
    # When both are drawn
    refs, _ = images_stage(plan, AssetRefs(), tmp_path / "wet")
    images_stage(dry, AssetRefs(), tmp_path / "dry")
    keyframe = str(refs.shots["shot_001"].start_frame)
    layout = layout_of(tmp_path / "wet", keyframe)
    wet_image = Image.open(tmp_path / "wet" / keyframe).convert("RGB")
    dry_image = Image.open(tmp_path / "dry" / keyframe).convert("RGB")
    # Then it is night with rain, in a city
    assert layout["time"] == "night"
    assert {"rain", "rooftop", "neon"} <= set(layout["elements"])
    # And the sky is dark blue, not magenta
    x0, y0, x1, y1 = layout["boxes"]["sky"]
    top = (x0, y0, x1, y0 + (y1 - y0) // 4)
    assert share(dry_image, top, lambda r, g, b: b > r and r + g + b < 240) > 0.8

    # And the rain shows as light streaks, many more than stars alone give
    def streak(r: int, g: int, b: int) -> bool:
        return b > 120 and r > 90 and abs(r - g) < 30

    assert share(wet_image, top, streak) > 3 * share(dry_image, top, streak) + 0.01


def test_captions_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects: SPARKLE_CAPTIONS=off leaves the caption band out of the keyframes."""
    # Given the lighthouse plan drawn with and without captions
    plan = load_plan("lighthouse.json", resolution="320x180")
    images_stage(plan, AssetRefs(), tmp_path / "on")
    monkeypatch.setenv("SPARKLE_CAPTIONS", "off")
    images_stage(plan, AssetRefs(), tmp_path / "off")
    on = Image.open(tmp_path / "on" / "frames" / "s1_start.png").convert("L")
    off = Image.open(tmp_path / "off" / "frames" / "s1_start.png").convert("L")
    # Then only the bottom band differs, and there it is darker with captions on
    assert region_diff(on, off, (0, 0, 320, 100)) < 2
    band = (0, 150, 320, 180)
    assert ImageStat.Stat(on.crop(band)).mean[0] < ImageStat.Stat(off.crop(band)).mean[0]


# --- lip sync ---------------------------------------------------------------------------

TALKING_PLAN = {
    "title": "Mouths",
    "characters": [{"id": "ava", "name": "Ava", "voice_profile": {"voice": "en-us+f3"}}],
    "shots": [
        {
            "id": "talk",
            "duration_sec": 3,
            "setting": "kitchen",
            "visual_description": "Ava at the table",
            "start_frame_prompt": "Ava in close-up",
            "end_frame_prompt": "Ava in close-up, later",
            "motion_prompt": "static",
            "is_talking_closeup": True,
            "dialogue": [
                {"character_id": "ava", "text": "Papa was always far away.", "start_time_sec": 1.0}
            ],
        },
        {
            "id": "listen",
            "duration_sec": 2,
            "setting": "kitchen",
            "visual_description": "Ava listens",
            "start_frame_prompt": "Ava in close-up, silent",
            "end_frame_prompt": "Ava in close-up, silent, later",
            "motion_prompt": "static",
            "is_talking_closeup": True,
        },
    ],
    "metadata": {"seed": "5", "resolution": "320x180"},
}


@pytest.fixture(scope="module")
def talking_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[MoviePlan, AssetRefs, Path]:
    """A close-up talking shot and a silent close-up, rendered up to lipsync."""
    plan = MoviePlan.model_validate(TALKING_PLAN)
    run_dir = tmp_path_factory.mktemp("talking")
    refs = AssetRefs()
    for stage in (images_stage, videos_stage, tts_stage, lipsync_stage):
        refs, _ = stage(plan, refs, run_dir)
    return plan, refs, run_dir


def _mouth_box(layout: dict[str, Any]) -> tuple[int, int, int, int]:
    face = layout["faces"][0]
    x, y, w, h = face["mouth_x"], face["mouth_y"], face["mouth_w"], face["mouth_h"]
    return (x - w // 2, y - h // 2, x + w // 2, y + h)


def test_mouth_opens_on_vowels_and_closes_in_pauses(
    talking_run: tuple[MoviePlan, AssetRefs, Path], tmp_path: Path
) -> None:
    """Protects the must-show: in a talking close-up, the frame at a vowel and the frame
    at a pause differ in the mouth region (and hardly anywhere else)."""
    # Given the talking shot and the mouth shapes its timing file records
    _, refs, run_dir = talking_run
    timing = json.loads((run_dir / "lipsync" / "timing.json").read_text("utf-8"))
    line = timing["shots"]["talk"]["lines"][0]
    assert line["viseme_method"] == "espeak-phoneme-events"
    shapes = line["visemes"]
    assert {"AI", "MBP", "rest"} <= {shape for _, shape in shapes}
    # When I take the frame in the middle of the longest open vowel, and one in the pause
    # before the line starts
    spans = [
        (shapes[i + 1][0] - t, t + (shapes[i + 1][0] - t) / 2)
        for i, (t, shape) in enumerate(shapes[:-1])
        if shape == "AI"
    ]
    vowel_at = line["start_sec"] + max(spans)[1]
    clip = run_dir / str(refs.shots["talk"].final_video_clip)
    vowel = frame_at(clip, vowel_at, tmp_path / "vowel.png")
    pause = frame_at(clip, 0.5, tmp_path / "pause.png")
    layout = layout_of(run_dir, str(refs.shots["talk"].start_frame))
    mouth = _mouth_box(layout)
    # Then the mouth region differs strongly between them
    assert region_diff(vowel, pause, mouth) > 25
    # And the eyes above it do not change
    face = layout["faces"][0]
    eyes = (face["cx"] - face["r"] // 2, face["cy"] - face["r"] // 6, face["cx"] + face["r"] // 2,
            face["cy"] + face["r"] // 4)  # fmt: skip
    assert region_diff(vowel, pause, eyes) < 4
    # And in the pause the mouth is the keyframe's closed mouth
    raw = frame_at(run_dir / str(refs.shots["talk"].raw_clip), 0.5, tmp_path / "raw.png")
    assert region_diff(pause, raw, mouth) < 8


def test_silent_close_up_keeps_its_mouth_closed(
    talking_run: tuple[MoviePlan, AssetRefs, Path], tmp_path: Path
) -> None:
    """Protects: a shot where nobody speaks is not painted, and its mouth stays closed."""
    # Given the silent close-up of the same character
    _, refs, run_dir = talking_run
    timing = json.loads((run_dir / "lipsync" / "timing.json").read_text("utf-8"))
    assert timing["shots"]["listen"]["mouths_drawn"] is False
    assert timing["shots"]["talk"]["mouths_drawn"] is True
    clip = run_dir / str(refs.shots["listen"].final_video_clip)
    mouth = _mouth_box(layout_of(run_dir, str(refs.shots["listen"].start_frame)))
    # Then the mouth region is the same at its start, middle and end
    frames = [frame_at(clip, t, tmp_path / f"f{t}.png") for t in (0.1, 1.0, 1.9)]
    assert all(region_diff(frames[0], other, mouth) < 4 for other in frames[1:])


# --- subtitles and sound ----------------------------------------------------------------


@pytest.fixture(scope="module")
def lighthouse_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[MoviePlan, AssetRefs, Path]:
    plan = load_plan("lighthouse.json", resolution="320x180")
    run_dir = tmp_path_factory.mktemp("lighthouse")
    refs = AssetRefs()
    for stage in STAGES:
        refs, _ = ADAPTERS[stage](plan, refs, run_dir)
    return plan, refs, run_dir


def _track(movie: Path, tmp_path: Path) -> tuple[str, list[Any]]:
    _, summary = run_ffmpeg(["-i", str(movie)], doing="probing", check=False)
    code, _ = run_ffmpeg(
        ["-i", str(movie), "-map", "0:s:0", "-f", "srt", str(tmp_path / "t.srt")],
        doing="extracting",
        check=False,
    )
    cues = parse_cues((tmp_path / "t.srt").read_text("utf-8")) if code == 0 else []
    return summary, cues


def test_movie_has_subtitles_at_the_dialogue_times(
    lighthouse_run: tuple[MoviePlan, AssetRefs, Path], tmp_path: Path
) -> None:
    """Protects the must-show: the MP4 has a mov_text track whose cues start and end when
    each line's audio does, and movie.srt / movie.vtt say the same."""
    # Given the lighthouse movie, where s2 (4 s into the movie) has lines at +0.3 and +2.4 s
    plan, refs, run_dir = lighthouse_run
    timing = json.loads((run_dir / "lipsync" / "timing.json").read_text("utf-8"))
    lines = timing["shots"]["s2"]["lines"]
    expected = [
        (4.0 + line["start_sec"], 4.0 + line["start_sec"] + line["duration_sec"], text.text)
        for line, text in zip(lines, plan.shots[1].dialogue, strict=True)
    ]
    assert [round(e[0], 2) for e in expected] == [4.3, 6.4]
    # When I read the movie's subtitle track and the two files
    summary, track = _track(run_dir / "final" / "movie.mp4", tmp_path)
    srt = parse_cues((run_dir / "final" / "movie.srt").read_text("utf-8"))
    vtt_text = (run_dir / "final" / "movie.vtt").read_text("utf-8")
    assert vtt_text.startswith("WEBVTT")
    # Then there is a mov_text stream, and every source has one cue per line, on time
    assert "Subtitle: mov_text" in summary
    for cues in (track, srt, parse_cues(vtt_text)):
        assert [(c.start, c.end, c.text) for c in cues] == [
            (pytest.approx(a, abs=0.02), pytest.approx(b, abs=0.02), t) for a, b, t in expected
        ]
    assert refs.extras["subtitles_srt"] == "final/movie.srt"


def test_burned_subtitles_replace_the_soft_track(
    lighthouse_run: tuple[MoviePlan, AssetRefs, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Protects: SPARKLE_BURN_SUBTITLES=on draws the cue into the picture and leaves the
    soft track out (the .srt is still written)."""
    # Given a copy of the rendered run, lipsynced and assembled again with burning on
    plan, refs, run_dir = lighthouse_run
    burned = tmp_path / "run"
    shutil.copytree(run_dir, burned)
    monkeypatch.setenv("SPARKLE_BURN_SUBTITLES", "on")
    refs2, meta = lipsync_stage(plan, refs, burned)
    refs2, assembled = assemble_stage(plan, refs2, burned)
    # Then the movie has no subtitle stream, but the .srt still holds both cues
    summary, _ = _track(burned / "final" / "movie.mp4", tmp_path)
    assert "Subtitle:" not in summary
    assert assembled["subtitles"] == "burned" and meta["subtitles_burned"] is True
    assert len(parse_cues((burned / "final" / "movie.srt").read_text("utf-8"))) == 2
    # And during the first cue the bottom of the picture differs from the soft-track movie
    soft = frame_at(run_dir / "final" / "movie.mp4", 5.0, tmp_path / "soft.png")
    hard = frame_at(burned / "final" / "movie.mp4", 5.0, tmp_path / "hard.png")
    assert region_diff(soft, hard, (0, 90, 320, 150)) > 3
    # And outside any cue it does not
    soft0 = frame_at(run_dir / "final" / "movie.mp4", 1.0, tmp_path / "soft0.png")
    hard0 = frame_at(burned / "final" / "movie.mp4", 1.0, tmp_path / "hard0.png")
    assert region_diff(soft0, hard0, (0, 90, 320, 150)) < 1


# --- QA catches injected defects ---------------------------------------------------------


@pytest.mark.slow
def test_qa_catches_every_injected_defect_kind(tmp_path: Path) -> None:
    """Protects: scripts/qa_defects.py injects each defect kind into a good run of the
    lighthouse plan, and QA catches and names every one while approving the clean run."""
    # Given the defect-injection script on one plan
    out = tmp_path / "result.json"
    # When it runs
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "qa_defects.py"), "--plans", "1",
         "--json-out", str(out)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    result = json.loads(out.read_text("utf-8"))
    # Then the clean run is approved
    assert [c["decision"] for c in result["clean"]] == ["approve"]
    # And every defect kind is caught and named by its expected finding
    assert set(result["defects"]) == {
        "black_frames", "frozen_clip", "missing_dialogue", "silent_dialogue",
        "wrong_duration", "audio_desync", "undecodable_clip", "missing_cue",
    }  # fmt: skip
    for defect, rows in result["defects"].items():
        assert all(row["caught"] and row["named"] for row in rows), (defect, rows)


def test_draft_clip_of_a_talking_shot_is_never_copied_into_the_movie(
    lighthouse_run: tuple[MoviePlan, AssetRefs, Path], tmp_path: Path
) -> None:
    """Protects: the quick draft the videos stage writes for a talking shot is encoded
    again by the lipsync stage, even when it can no longer find the faces to paint."""
    # Given the lighthouse run, whose talking shot s2 was written as a draft
    plan, refs, run_dir = lighthouse_run
    raw = probe(run_dir / str(refs.shots["s2"].raw_clip)).video
    assert raw is not None and raw.codec == "h264" and raw.profile != "High"
    # When the lipsync stage runs again without the keyframe layout
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "frames" / "layout.json").unlink()
    refs2, meta = lipsync_stage(plan, refs, copy)
    # Then s2 is re-encoded to the movie's settings rather than copied
    assert "s2" in meta["reencoded_shots"] and "s2" not in meta["talking_shots"]
    clip = probe(copy / str(refs2.shots["s2"].final_video_clip)).video
    assert clip is not None and clip.profile == "High"

"""A plan in the base-image format rendered with the media set: shots meet on shared
keyframe files, dialogue starts at the timeline's times, and the same plan and seed give
the same keyframes and audio (the seed contract's determinism)."""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest

BIN = Path(sys.executable).parent / "sparkle"
PLAN = Path(__file__).parents[1] / "data" / "plans" / "harbour-base-images.json"

#: Audio analysis: sample rate, window (10 ms) and the silence before an onset (200 ms).
RATE, WINDOW, QUIET_WINDOWS = 16000, 160, 20

pytestmark = pytest.mark.slow


def render(folder: Path, **env: str) -> Path:
    """`sparkle run PLAN --adapters media` in ``folder``; returns the run folder."""
    folder.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    done = subprocess.run([str(BIN), "run", str(PLAN), "--adapters", "media"], cwd=folder,
                          env={**clean, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (folder / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The harbour plan rendered twice, in two separate runs folders."""
    return (render(tmp_path_factory.mktemp("first")), render(tmp_path_factory.mktemp("second")))


def audio_samples(movie: Path) -> bytes:
    """The movie's sound as mono 16-bit PCM at RATE, decoded by ffmpeg."""
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(movie),
                           "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-"],
                          capture_output=True, check=True).stdout


def speech_onsets(pcm: bytes) -> list[float]:
    """Seconds at which speech starts after at least 200 ms without it. Speech is a level
    above a fifth of the loudest: the ambience bed under every shot (about -40 dBFS, ducked
    further under speech) stays below that, the spoken lines reach it in their first
    window."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    levels = [math.sqrt(sum(s * s for s in samples[i:i + WINDOW]) / WINDOW)
              for i in range(0, len(samples) - WINDOW, WINDOW)]
    threshold = max(levels) * 0.2
    onsets, quiet = [], QUIET_WINDOWS
    for index, level in enumerate(levels):
        if level > threshold:
            if quiet >= QUIET_WINDOWS:
                onsets.append(index * WINDOW / RATE)
            quiet = 0
        else:
            quiet += 1
    return onsets


def test_consecutive_shots_share_their_keyframe_file_rendered_once(renders):
    """Shot i's end frame is the very file of shot i+1's start frame: one PNG per base
    image, four for three shots."""
    run_dir = renders[0]
    refs = json.loads((run_dir / "asset_refs.json").read_text())["shots"]
    plan = json.loads(PLAN.read_text())
    order = [shot["id"] for shot in plan["shots"]]
    for before, after in itertools.pairwise(order):
        assert refs[before]["end_frame"] == refs[after]["start_frame"]
    assert sorted(p.name for p in (run_dir / "frames").glob("*.png")) == [
        f"{image['id']}.png" for image in plan["base_images"]]
    images = json.loads((run_dir / "checkpoints" / "images.json").read_text())
    assert images["metadata"]["frames_written"] == 4


def test_dialogue_starts_at_the_timelines_times_within_a_frame(renders):
    """Measured from the finished movie's sound, each line starts at its timeline
    start_time_sec, within one frame (max_fps caps the frame rate at 10)."""
    run_dir = renders[0]
    plan = json.loads(PLAN.read_text())
    fps = json.loads((run_dir / "checkpoints" / "videos.json").read_text())["metadata"]["fps"]
    assert fps == 10
    expected = [e["start_time_sec"] for e in plan["dialogue_timeline"] if e["type"] == "dialogue"]
    measured = speech_onsets(audio_samples(run_dir / "final" / "movie.mp4"))
    assert len(measured) == len(expected), measured
    for want, got in zip(expected, measured, strict=True):
        assert abs(got - want) <= 1 / fps, (want, got)


def test_the_run_keeps_the_plan_as_received_and_passes_the_model_id(renders):
    """movie_plan.json is the plan as submitted (same JSON), and the videos stage records
    render_profile.video.model_id."""
    run_dir = renders[0]
    assert json.loads((run_dir / "movie_plan.json").read_text()) == json.loads(PLAN.read_text())
    videos: dict[str, Any] = json.loads((run_dir / "checkpoints" / "videos.json").read_text())
    assert videos["metadata"]["model_id"] == "wan-2.1"


def test_the_same_plan_and_seed_give_identical_keyframes_and_audio(renders):
    """Rendered twice from scratch: byte-identical keyframes and TTS lines, and the same
    decoded movie sound."""
    first, second = renders
    frames = sorted(p.relative_to(first) for p in (first / "frames").glob("*.png"))
    assert frames
    for rel in frames:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    lines = sorted(p.relative_to(first) for p in (first / "audio").rglob("*.wav"))
    assert len(lines) == 3
    for rel in lines:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    assert audio_samples(first / "final" / "movie.mp4") == audio_samples(
        second / "final" / "movie.mp4")

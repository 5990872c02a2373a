"""The test adapters' assemble and qa stream the movie: memory grows with a shot, not with
the movie, and the movie they write is the clips' frames and tracks, exactly."""

from __future__ import annotations

import tracemalloc
import wave
from pathlib import Path

from PIL import Image

from sparkle.adapters import testing
from sparkle.schemas import AssetRefs, MoviePlan


def plan_of(shots: int) -> MoviePlan:
    return MoviePlan.model_validate({
        "title": f"{shots} shots",
        "characters": [],
        "shots": [{"id": f"s{i}", "duration_sec": 4, "visual_description": "v",
                   "start_frame_prompt": "a", "end_frame_prompt": "b"} for i in range(shots)],
    })


def clips_and_tracks(run_dir: Path, shots: int) -> AssetRefs:
    """Refs naming, for every shot, a 4 s clip and track written once (two clips that
    differ, alternating), as lipsync leaves them."""
    refs = AssetRefs()
    for index in range(2):
        frames = [Image.new("RGB", testing.FRAME_SIZE, (index * 200, 40 * f, 90))
                  for f in range(testing._frame_count(4))]
        (run_dir / f"clip{index}.gif").write_bytes(testing._gif_bytes(frames))
        testing._write_wav(run_dir / f"track{index}.wav", [index * 1000 + 1] * (4 * 8000))
    for i in range(shots):
        refs.shot(f"s{i}").final_video_clip = f"clip{i % 2}.gif"
        refs.extras[f"track_s{i}"] = f"track{i % 2}.wav"
    return refs


def peak_bytes(run_dir: Path, shots: int) -> int:
    """Peak Python memory (tracemalloc) of assemble then qa on ``shots`` shots."""
    plan, refs = plan_of(shots), clips_and_tracks(run_dir, shots)
    tracemalloc.start()
    try:
        refs, _ = testing._assemble(plan, refs, run_dir)
        testing._qa(plan, refs, run_dir)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_assemble_and_qa_memory_does_not_grow_with_the_movie(tmp_path):
    """20 times the shots must not take 20 times the memory (before streaming it took
    about that: every frame and sample of the movie was held at once)."""
    # Given runs of 20 and of 400 shots
    (small := tmp_path / "small").mkdir()
    (large := tmp_path / "large").mkdir()
    # When each is assembled and checked
    small_peak, large_peak = peak_bytes(small, 20), peak_bytes(large, 400)
    # Then the larger movie costs less than twice the memory (a shot's worth and the plan)
    assert large_peak < 2 * small_peak + (1 << 20), (small_peak, large_peak)


def test_the_streamed_movie_is_the_clips_frames_and_tracks_in_order(tmp_path):
    # Given three shots alternating two different clips and tracks
    refs = clips_and_tracks(tmp_path, 3)
    # When they are assembled
    refs, metadata = testing._assemble(plan_of(3), refs, tmp_path)
    # Then the movie shows every frame of each clip, in order, pixel for pixel
    expected = []
    for index in (0, 1, 0):
        with Image.open(tmp_path / f"clip{index}.gif") as clip:
            for f in range(clip.n_frames):
                clip.seek(f)
                expected.append(clip.convert("RGB").tobytes())
    with Image.open(tmp_path / "final" / "movie.gif") as movie:
        assert movie.n_frames == len(expected)
        for f, frame in enumerate(expected):
            movie.seek(f)
            assert movie.convert("RGB").tobytes() == frame, f
    # And its sound is the three tracks, one after the other
    with wave.open(str(tmp_path / "final" / "movie.wav"), "rb") as sound:
        samples = sound.readframes(sound.getnframes())
    assert samples == b"".join((index * 1000 + 1).to_bytes(2, "little") * 32000
                               for index in (0, 1, 0))
    assert metadata["duration_sec"] == 12.0

"""The media format every clip shares, and the arithmetic of frames.

Every clip the media adapters write uses the same codec settings (``VIDEO_CODEC_ARGS``,
``AUDIO_CODEC_ARGS``) so that clips can be concatenated without re-encoding video.
Running ffmpeg is :mod:`sparkle.adapters.ffmpeg`; reading files, :mod:`~sparkle.adapters.probe`
and :mod:`~sparkle.adapters.analysis`.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

#: libx264 preset of every encode; ``veryfast`` trades a little size for speed.
X264_PRESET = os.environ.get("SPARKLE_X264_PRESET", "veryfast")

#: libx264 constant rate factor (lower is better quality and larger files).
X264_CRF = os.environ.get("SPARKLE_X264_CRF", "23")

#: Sample rate in Hz of every audio track the adapters write.
AUDIO_SAMPLE_RATE = 48_000

#: Channels of every audio track the adapters write (speech is mono).
AUDIO_CHANNELS = 1

#: AAC bit rate of every audio track.
AUDIO_BITRATE = "96k"

#: Encoder arguments for every H.264 video stream; identical everywhere so that clips
#: concatenate with ``-c:v copy``. No B-frames: a clip then starts at decode time 0, and
#: joining a clip of one or two frames to the next never squeezes timestamps (measured:
#: with B-frames such a movie lost 83 ms); it also encodes about 12 % faster for 13 %
#: larger files.
VIDEO_CODEC_ARGS: tuple[str, ...] = (
    "-c:v",
    "libx264",
    "-preset",
    X264_PRESET,
    "-crf",
    X264_CRF,
    "-bf",
    "0",
    "-pix_fmt",
    "yuv420p",
)

#: Encoder arguments of an intermediate clip that the lipsync stage will decode and encode
#: again anyway (a talking shot whose mouths it paints): a quick ``ultrafast`` encode at a
#: higher quality, so the second encode loses little. Its Constrained Baseline profile
#: marks it: a clip that is not High profile is never copied into the movie.
DRAFT_VIDEO_CODEC_ARGS: tuple[str, ...] = (
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-crf",
    "18",
    "-bf",
    "0",
    "-pix_fmt",
    "yuv420p",
)

#: Profile of every clip encoded with ``VIDEO_CODEC_ARGS`` (as ffmpeg names it).
VIDEO_PROFILE = "High"

#: Encoder arguments for every AAC audio stream.
AUDIO_CODEC_ARGS: tuple[str, ...] = (
    "-c:a",
    "aac",
    "-b:a",
    AUDIO_BITRATE,
    "-ar",
    str(AUDIO_SAMPLE_RATE),
    "-ac",
    str(AUDIO_CHANNELS),
)


def fps_fraction(fps: float) -> Fraction:
    """``fps`` as an exact fraction (23.976 becomes 24000/1001) for ffmpeg rate options."""
    return Fraction(fps).limit_denominator(1001)


def frame_count(duration_sec: float, fps: float) -> int:
    """Whole frames in ``duration_sec`` at ``fps``, halves rounded up (at least one)."""
    return max(1, math.floor(duration_sec * fps + 0.5))


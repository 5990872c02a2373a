"""Probing a media file: its duration and first video and audio streams.

There is no ffprobe in the imageio-ffmpeg wheel, so probing parses the stream summary
``ffmpeg -i FILE`` prints on stderr.
"""

from __future__ import annotations

import re
import wave
from dataclasses import dataclass
from pathlib import Path

from sparkle.adapters.ffmpeg import FFmpegError, ffmpeg_exe, run_ffmpeg, stderr_tail
from sparkle.adapters.run_files import os_error
from sparkle.errors import PermanentStageError


@dataclass(frozen=True)
class VideoStream:
    """The first video stream of a file."""

    codec: str
    width: int
    height: int
    #: Frames per second; None when ffmpeg reports none (a still image may say 25).
    fps: float | None
    pix_fmt: str | None
    #: Codec profile as ffmpeg names it ("High", "Constrained Baseline"), None if unsaid.
    profile: str | None = None


@dataclass(frozen=True)
class AudioStream:
    """The first audio stream of a file."""

    codec: str
    sample_rate: int | None
    channels: int | None


@dataclass(frozen=True)
class MediaInfo:
    """What ``ffmpeg -i`` says about a file."""

    path: Path
    #: Container duration in seconds (10 ms resolution), None when unknown.
    duration_sec: float | None
    video: VideoStream | None
    audio: AudioStream | None
    video_streams: int = 0
    audio_streams: int = 0


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d\d):(\d\d(?:\.\d+)?)")
_STREAM_RE = re.compile(r"Stream #\d+:\d+\S*:\s*(Video|Audio):\s*(.*)")
_SIZE_RE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS_RE = re.compile(r"([\d.]+)(k?) (?:fps|tbr)\b")
_RATE_RE = re.compile(r"(\d+) Hz")
_CHANNEL_NAMES = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "7.1": 8}


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _parse_video(desc: str) -> VideoStream:
    parts = _split_top_level(desc)
    codec = parts[0].split()[0] if parts and parts[0] else "unknown"
    profile = re.match(r"\S+ \(([^)/]+)\)", parts[0]) if parts else None
    pix_fmt = parts[1].split("(")[0].strip() if len(parts) > 1 else None
    size = _SIZE_RE.search(desc)
    fps: float | None = None
    for match in _FPS_RE.finditer(desc):
        fps = float(match.group(1)) * (1000 if match.group(2) else 1)
        break
    return VideoStream(
        codec=codec,
        width=int(size.group(1)) if size else 0,
        height=int(size.group(2)) if size else 0,
        fps=fps,
        pix_fmt=pix_fmt or None,
        profile=profile.group(1).strip() if profile else None,
    )


def _parse_audio(desc: str) -> AudioStream:
    parts = _split_top_level(desc)
    codec = parts[0].split()[0] if parts and parts[0] else "unknown"
    rate = _RATE_RE.search(desc)
    channels: int | None = None
    for part in parts[1:]:
        word = part.split("(")[0].strip()
        if word in _CHANNEL_NAMES:
            channels = _CHANNEL_NAMES[word]
            break
        count = re.fullmatch(r"(\d+) channels", word)
        if count:
            channels = int(count.group(1))
            break
    return AudioStream(
        codec=codec, sample_rate=int(rate.group(1)) if rate else None, channels=channels
    )


def parse_probe(path: Path, stderr: str) -> MediaInfo:
    """Build a MediaInfo from the stderr of ``ffmpeg -i path``."""
    duration = _DURATION_RE.search(stderr)
    video: VideoStream | None = None
    audio: AudioStream | None = None
    n_video = n_audio = 0
    for match in _STREAM_RE.finditer(stderr):
        kind, desc = match.group(1), match.group(2)
        if kind == "Video":
            n_video += 1
            video = video or _parse_video(desc)
        else:
            n_audio += 1
            audio = audio or _parse_audio(desc)
    seconds = (
        int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3))
        if duration
        else None
    )
    return MediaInfo(path, seconds, video, audio, n_video, n_audio)


def probe(path: Path) -> MediaInfo:
    """Describe the streams of a media file.

    Raises:
      PermanentStageError: the file does not exist.
      FFmpegError: ffmpeg cannot read the file (its stderr tail is in the message).
    """
    if not path.is_file():
        raise PermanentStageError(f"cannot probe {path}: no such file")
    # Without an output file ffmpeg exits with 1 after printing the summary; that is normal.
    args = ["-i", str(path)]
    _, stderr = run_ffmpeg(args, doing=f"probing {path}", check=False)
    info = parse_probe(path, stderr)
    if info.video is None and info.audio is None:
        tail = stderr_tail(stderr)
        raise FFmpegError(
            f"ffmpeg found no audio or video stream in {path}\n{tail}",
            [ffmpeg_exe(), *args],
            tail,
        )
    return info


def audio_duration(path: Path) -> float:
    """Length in seconds of an audio file (exact for WAV, from the container otherwise)."""
    if path.suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as reader:
                return reader.getnframes() / reader.getframerate()
        except (wave.Error, EOFError):
            pass  # not plain PCM (e.g. float WAV): let ffmpeg read it below
        except OSError as exc:
            raise os_error(exc, f"cannot read {path}") from exc
    info = probe(path)
    if info.duration_sec is None:
        raise PermanentStageError(f"cannot tell the duration of {path}")
    return info.duration_sec


"""One-pass analysis of a media file: black frames, loudness, silence and, on request, the
audio envelope and the longest still picture.

The file is decoded once through ``blackdetect``, ``silencedetect`` and ``volumedetect``
into a null muxer; QA reads its findings (:mod:`sparkle.adapters.qa`).
"""

from __future__ import annotations

import math
import re
import tempfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from sparkle.adapters.ffmpeg import STDERR_TAIL_LINES, FFmpegError, run_ffmpeg, stderr_tail
from sparkle.adapters.probe import MediaInfo, probe

#: ``blackdetect`` pixel threshold (0-1): darker pixels count as black.
BLACK_PIXEL_THRESHOLD = 0.10

#: ``blackdetect`` minimum length in seconds of a black span worth reporting.
BLACK_MIN_SEC = 0.5

#: ``silencedetect`` noise floor in dB: quieter audio counts as silence.
SILENCE_NOISE_DB = -50.0

#: ``silencedetect`` minimum length in seconds of a silent span worth reporting.
SILENCE_MIN_SEC = 1.0


@dataclass(frozen=True)
class Span:
    """A stretch of time in seconds."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class MediaAnalysis:
    """What one full decode of a file found."""

    info: MediaInfo
    #: True when ffmpeg decoded the whole file without an error message.
    decodes: bool
    #: Decoding error messages (at most ``STDERR_TAIL_LINES``).
    errors: list[str] = field(default_factory=list)
    #: Video frames decoded.
    frames: int | None = None
    #: Black spans of at least ``BLACK_MIN_SEC``.
    black_spans: list[Span] = field(default_factory=list)
    #: Fraction (0-1) of the duration that is black.
    black_ratio: float | None = None
    #: Mean and peak audio level in dBFS; None without audio.
    mean_volume_db: float | None = None
    max_volume_db: float | None = None
    #: Silent spans of at least ``SILENCE_MIN_SEC``.
    silence_spans: list[Span] = field(default_factory=list)
    #: With ``signals``: audio level in dBFS per ``ENVELOPE_WINDOW_SEC`` window.
    envelope_db: list[float] = field(default_factory=list)
    #: With ``signals``: the longest stretch in seconds over which the picture does not
    #: change (frames within ``STILL_MAX_DIFF`` of the stretch's first frame).
    longest_still_sec: float | None = None

    @property
    def duration_sec(self) -> float | None:
        """Duration in seconds: decoded frames over the frame rate when known."""
        video = self.info.video
        if self.frames and video and video.fps:
            return self.frames / video.fps
        return self.info.duration_sec


#: Window in seconds of the audio envelope ``analyze(signals=True)`` measures.
ENVELOPE_WINDOW_SEC = 0.02

#: Sample rate in Hz the audio is reduced to for the envelope.
ENVELOPE_RATE = 8000

#: Size of the grey thumbnails compared to find a picture that does not change.
STILL_THUMB_SIZE = (32, 18)

#: Largest difference (0-255) of any thumbnail pixel between two frames of one still span.
STILL_MAX_DIFF = 3


def _envelope(pcm: bytes) -> list[float]:
    samples = array("h", pcm[: len(pcm) - len(pcm) % 2])
    return dbfs_levels(samples, round(ENVELOPE_RATE * ENVELOPE_WINDOW_SEC))


def dbfs_levels(samples: array[int], step: int) -> list[float]:
    """The level in dBFS of each whole window of ``step`` 16-bit samples (-120 for silence)."""
    levels = []
    for start in range(0, len(samples) - step + 1, step):
        chunk = samples[start : start + step]
        power = sum(x * x for x in chunk) / step
        levels.append(10 * math.log10(power / 32768**2) if power > 0 else -120.0)
    return levels


def _longest_still(raw: bytes, fps: float | None) -> float | None:
    width, height = STILL_THUMB_SIZE
    size = width * height
    frames = [raw[i : i + size] for i in range(0, len(raw) - size + 1, size)]
    if not frames or not fps:
        return None
    longest = run = 1
    anchor = frames[0]
    for frame in frames[1:]:
        if max(abs(a - b) for a, b in zip(frame, anchor, strict=True)) <= STILL_MAX_DIFF:
            run += 1
        else:
            anchor, run = frame, 1
        longest = max(longest, run)
    return longest / fps


_BLACK_RE = re.compile(r"black_start:\s*([\d.]+)\s+black_end:\s*([\d.]+)")
_SILENCE_START_RE = re.compile(r"silence_start:\s*(-?[\d.]+)")
_SILENCE_END_RE = re.compile(r"silence_end:\s*(-?[\d.]+)")
_MEAN_RE = re.compile(r"mean_volume:\s*(-?[\d.]+|-inf) dB")
_MAX_RE = re.compile(r"max_volume:\s*(-?[\d.]+|-inf) dB")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")


def _db(text: str) -> float:
    return -math.inf if text == "-inf" else float(text)


def analyze(path: Path, info: MediaInfo | None = None, signals: bool = False) -> MediaAnalysis:
    """Decode ``path`` once and measure black frames, loudness and silence.

    With ``signals`` the same decode also gives the audio envelope and the longest still
    stretch of picture (``envelope_db``, ``longest_still_sec``).

    A file ffmpeg cannot open gives ``decodes=False`` rather than an exception, because
    "does not decode" is itself the finding QA wants.

    Raises:
      FFmpegResourceError: ffmpeg timed out, was killed or ran out of a resource.
    """
    try:
        info = info or probe(path)
    except FFmpegError as exc:
        return MediaAnalysis(
            info=MediaInfo(path, None, None, None),
            decodes=False,
            errors=exc.stderr_tail.splitlines() or [str(exc)],
        )
    # Analysis needs every frame decoded, not pretty: skipping H.264 deblocking saves about
    # 30 % of the CPU, and one thread each suits the several analyses QA runs at once.
    args = ["-loglevel", "level+info", "-threads", "1", "-skip_loop_filter", "all"]
    args += ["-i", str(path)]
    if info.video:
        args += ["-vf", f"blackdetect=d={BLACK_MIN_SEC}:pix_th={BLACK_PIXEL_THRESHOLD}"]
    if info.audio:
        args += [
            "-af",
            f"silencedetect=n={SILENCE_NOISE_DB}dB:d={SILENCE_MIN_SEC},volumedetect",
        ]
    args += ["-f", "null", "-"]
    with tempfile.TemporaryDirectory(prefix="sparkle-analyze-") as tmp:
        pcm, thumbs = Path(tmp) / "audio.s16", Path(tmp) / "video.gray"
        if signals and info.audio:
            args += ["-map", "0:a:0", "-ac", "1", "-ar", str(ENVELOPE_RATE)]
            args += ["-f", "s16le", str(pcm)]
        if signals and info.video:
            width, height = STILL_THUMB_SIZE
            args += ["-map", "0:v:0", "-vf", f"scale={width}:{height},format=gray"]
            args += ["-f", "rawvideo", str(thumbs)]
        code, stderr = run_ffmpeg(args, doing=f"analysing {path}", check=False)
        envelope = _envelope(pcm.read_bytes()) if pcm.is_file() else []
        still = _longest_still(thumbs.read_bytes(), info.video.fps if info.video else None) if (
            thumbs.is_file()
        ) else None
    errors = [
        line.strip()
        for line in stderr.splitlines()
        if "[error]" in line or "[fatal]" in line or "[panic]" in line
    ][-STDERR_TAIL_LINES:]
    frames = [int(m) for m in _FRAME_RE.findall(stderr)]
    n_frames = frames[-1] if frames else None
    decoded = MediaAnalysis(info=info, decodes=True, frames=n_frames)
    duration = decoded.duration_sec or 0.0
    black = [Span(float(a), float(b)) for a, b in _BLACK_RE.findall(stderr)]
    silence: list[Span] = []
    start: float | None = None
    for line in stderr.splitlines():
        begin = _SILENCE_START_RE.search(line)
        if begin:
            start = max(0.0, float(begin.group(1)))
        end = _SILENCE_END_RE.search(line)
        if end and start is not None:
            silence.append(Span(start, float(end.group(1))))
            start = None
    if start is not None:
        silence.append(Span(start, duration))
    means = _MEAN_RE.findall(stderr)
    maxes = _MAX_RE.findall(stderr)
    black_sec = sum(span.duration for span in black)
    return MediaAnalysis(
        info=info,
        decodes=code == 0 and not errors,
        errors=errors or ([stderr_tail(stderr)] if code else []),
        frames=n_frames,
        black_spans=black,
        black_ratio=min(1.0, black_sec / duration) if info.video and duration > 0 else None,
        # volumedetect may print an empty summary for a probe graph first: take the last.
        mean_volume_db=_db(means[-1]) if info.audio and means else None,
        max_volume_db=_db(maxes[-1]) if info.audio and maxes else None,
        silence_spans=silence,
        envelope_db=envelope,
        longest_still_sec=still,
    )

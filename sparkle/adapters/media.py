"""Shared ffmpeg work: finding and running ffmpeg, probing files, one-pass analysis.

There is no ffprobe in the imageio-ffmpeg wheel, so probing parses the stream summary
``ffmpeg -i FILE`` prints on stderr, and analysis decodes a file once through
``blackdetect``, ``silencedetect`` and ``volumedetect`` into a null muxer.

Every clip the media adapters write uses the same codec settings (``VIDEO_CODEC_ARGS``,
``AUDIO_CODEC_ARGS``) so that clips can be concatenated without re-encoding video.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import shlex
import subprocess
import tempfile
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from sparkle.atomic import temp_path_for
from sparkle.errors import PermanentStageError, TransientStageError

#: Seconds one ffmpeg call may run before it is killed (a TransientStageError).
FFMPEG_TIMEOUT_SEC = float(os.environ.get("SPARKLE_FFMPEG_TIMEOUT_SEC", "600"))

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

#: Lines of ffmpeg's stderr quoted in an error message.
STDERR_TAIL_LINES = 15

#: ``blackdetect`` pixel threshold (0-1): darker pixels count as black.
BLACK_PIXEL_THRESHOLD = 0.10

#: ``blackdetect`` minimum length in seconds of a black span worth reporting.
BLACK_MIN_SEC = 0.5

#: ``silencedetect`` noise floor in dB: quieter audio counts as silence.
SILENCE_NOISE_DB = -50.0

#: ``silencedetect`` minimum length in seconds of a silent span worth reporting.
SILENCE_MIN_SEC = 1.0

#: errno values that mean "out of a resource": retrying later can help.
TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN}
)

#: ffmpeg exits with its negative error code, ``AVERROR(errno)`` = ``-errno``, which the
#: system reports as ``256 - errno`` (228 is ``ENOSPC``). The errno values read back from an
#: exit code: those of system calls ffmpeg makes. Others are left alone, because ffmpeg's own
#: error tags land in the same range (``AVERROR_INVALIDDATA`` exits with 183), and 255 is
#: also its exit after a signal.
FFMPEG_EXIT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.ENOMEM,
     errno.EMFILE, errno.ENFILE, errno.ENOENT, errno.EFBIG, errno.EAGAIN, errno.EINVAL,
     errno.EPIPE}
)

#: Of those, the errno values that are about the disk: the message then names the file
#: system of the file ffmpeg was writing (or reading).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})

#: ffmpeg stderr phrases that mean "out of a resource".
_TRANSIENT_STDERR = (
    "No space left on device",
    "Cannot allocate memory",
    "Too many open files",
    "Resource temporarily unavailable",
)


class FFmpegError(PermanentStageError):
    """ffmpeg exited with an error: the input or the command is wrong; retrying will not help."""

    def __init__(self, message: str, command: Sequence[str], stderr_tail: str) -> None:
        self.command = list(command)
        self.stderr_tail = stderr_tail
        super().__init__(message)


class FFmpegResourceError(TransientStageError):
    """ffmpeg ran out of a resource, was killed by a signal or timed out: retrying can help."""

    def __init__(self, message: str, command: Sequence[str], stderr_tail: str) -> None:
        self.command = list(command)
        self.stderr_tail = stderr_tail
        super().__init__(message)


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (from imageio-ffmpeg; ``IMAGEIO_FFMPEG_EXE`` overrides it)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def os_error(exc: OSError, doing: str) -> TransientStageError | PermanentStageError:
    """Classify an OSError met while ``doing`` something: resource errors are transient."""
    kind = TransientStageError if exc.errno in TRANSIENT_ERRNOS else PermanentStageError
    return kind(f"{doing}: {exc}")


def exit_errno(returncode: int) -> int | None:
    """The errno an ffmpeg exit code stands for (228 → ``ENOSPC``), or None (see
    :data:`FFMPEG_EXIT_ERRNOS`)."""
    if not 128 < returncode < 255:
        return None
    code = 256 - returncode
    return code if code in FFMPEG_EXIT_ERRNOS else None


def exit_meaning(returncode: int, args: Sequence[str] = ()) -> str | None:
    """What an ffmpeg exit code means when it carries an errno: ``No space left on device
    (ENOSPC, exit 228)``, followed for a disk error by the file system of the file in
    ``args``' last position (ffmpeg's output), e.g. ``on the file system mounted at /srv
    (ext4, 0 B free of 20.0 GB)``. None for other exit codes."""
    code = exit_errno(returncode)
    if code is None:
        return None
    text = f"{os.strerror(code)} ({errno.errorcode[code]}, exit {returncode})"
    target = _output_file(args)
    if code in _DISK_ERRNOS and target is not None:
        from sparkle.infrastructure import describe_file_system

        text += f" writing {target} on {describe_file_system(target)}"
    return text


def _disk_cause(returncode: int, args: Sequence[str]) -> OSError | None:
    """The OSError a disk failure of ffmpeg stands for, naming the file it was writing (its
    last argument), or None. Raised as the cause of the ffmpeg error, it lets the engine
    see the run folder's disk failing (:mod:`sparkle.infrastructure`) through the adapter."""
    code = exit_errno(returncode)
    target = _output_file(args)
    if code not in _DISK_ERRNOS or target is None:
        return None
    return OSError(code, os.strerror(code), target)


def _output_file(args: Sequence[str]) -> str | None:
    """The file an ffmpeg command writes: its last argument, unless that is ``-`` (a pipe)
    or a URL such as ``pipe:1``."""
    target = args[-1] if args else ""
    if not target or target == "-" or re.match(r"[a-z]+:", target):
        return None
    return target


def _tail(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def run_ffmpeg(
    args: Sequence[str],
    *,
    doing: str,
    timeout: float = FFMPEG_TIMEOUT_SEC,
    check: bool = True,
) -> tuple[int, str]:
    """Run ffmpeg with ``args`` and return its exit code and stderr.

    Parameters:
      args: arguments after ``ffmpeg -nostdin -hide_banner -y``.
      doing: what the call does, for error messages ("encoding clips/s1.mp4").
      timeout: seconds before ffmpeg is killed.
      check: raise FFmpegError on an ordinary non-zero exit code; without it the caller
        reads the exit code (resource failures raise either way).

    Raises:
      FFmpegResourceError: timeout, killed by a signal, or out of disk, memory or files.
      FFmpegError: any other failure when ``check`` is true.
    """
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-y", *args]
    try:
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raw = exc.stderr if isinstance(exc.stderr, bytes) else b""
        tail = _tail(raw.decode("utf-8", "replace"))
        raise FFmpegResourceError(
            f"ffmpeg timed out after {timeout:g} s while {doing}\n"
            f"command: {shlex.join(command)}\n{tail}",
            command,
            tail,
        ) from None
    except OSError as exc:
        raise os_error(exc, f"cannot start ffmpeg while {doing}") from exc
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode == 0:
        return proc.returncode, stderr
    tail = _tail(stderr)
    meaning = exit_meaning(proc.returncode, args)
    resource = exit_errno(proc.returncode) in TRANSIENT_ERRNOS | {errno.EIO}
    if meaning is not None and (resource or check):
        # (said first: the last lines of stderr are often an encoder's statistics, and the
        # one line saying "No space left on device" lies above them)
        kind = FFmpegResourceError if resource else FFmpegError
        error = kind(
            f"ffmpeg failed: {meaning} while {doing}\ncommand: {shlex.join(command)}\n{tail}",
            command,
            tail,
        )
        raise error from _disk_cause(proc.returncode, args)
    if proc.returncode < 0 or any(phrase in stderr for phrase in _TRANSIENT_STDERR):
        cause = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"out of a resource (exit {proc.returncode})"
        )
        raise FFmpegResourceError(
            f"ffmpeg {cause} while {doing}\ncommand: {shlex.join(command)}\n{tail}",
            command,
            tail,
        )
    if not check:
        return proc.returncode, stderr
    raise FFmpegError(
        f"ffmpeg failed (exit {proc.returncode}) while {doing}\n"
        f"command: {shlex.join(command)}\n{tail}",
        command,
        tail,
    )


def ffmpeg_to_file(args: Sequence[str], out: Path, *, doing: str) -> None:
    """Run ffmpeg writing to a temp sibling of ``out``, then rename it onto ``out``.

    ``args`` is everything but the output path. A half-written file never has the final
    name, and an OSError of the file system is classified like any other.
    """
    try:
        with temp_path_for(out) as tmp:
            run_ffmpeg([*args, str(tmp)], doing=doing)
    except OSError as exc:
        raise os_error(exc, f"cannot write {out}") from exc


def fps_fraction(fps: float) -> Fraction:
    """``fps`` as an exact fraction (23.976 becomes 24000/1001) for ffmpeg rate options."""
    return Fraction(fps).limit_denominator(1001)


def frame_count(duration_sec: float, fps: float) -> int:
    """Whole frames in ``duration_sec`` at ``fps``, halves rounded up (at least one)."""
    return max(1, math.floor(duration_sec * fps + 0.5))


def require_file(run_dir: Path, relative: str | None, what: str) -> Path:
    """Resolve ``relative`` inside ``run_dir`` and check the file exists.

    Raises:
      PermanentStageError: the reference is missing, escapes the run folder, or the file
        does not exist; the message names the file and what produces it.
    """
    if not relative:
        raise PermanentStageError(f"missing prerequisite: no {what} recorded in asset refs")
    root = run_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise PermanentStageError(f"{what} {relative!r} lies outside the run folder {root}")
    if not path.is_file():
        raise PermanentStageError(f"missing prerequisite: {what} {path} does not exist")
    return path


def relative_to_run(run_dir: Path, path: Path) -> str:
    """``path`` relative to ``run_dir`` as a posix string, for AssetRefs."""
    return path.resolve().relative_to(run_dir.resolve()).as_posix()


# --- probing -------------------------------------------------------------------------


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
        tail = _tail(stderr)
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


# --- analysis ------------------------------------------------------------------------


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
    step = round(ENVELOPE_RATE * ENVELOPE_WINDOW_SEC)
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
        errors=errors or ([_tail(stderr)] if code else []),
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

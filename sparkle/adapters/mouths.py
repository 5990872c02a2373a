"""Talking faces: the lipsync stage's frame-by-frame painting of mouths (and burned cues).

A shot whose speakers have faces in its keyframes (``frames/layout.json``) is decoded to
raw RGB frames, each frame gets the mouth shape its speaker is making at that instant
(:mod:`sparkle.adapters.visemes`) drawn where the camera move has carried the face
(:func:`sparkle.adapters.videos.keyframe_to_frame`), and the frames are encoded again with
the shot's audio. Faces of characters who do not speak keep the keyframe's closed mouth.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO

from PIL import Image, ImageDraw

from sparkle.adapters.media import (
    FFMPEG_TIMEOUT_SEC,
    FFmpegError,
    FFmpegResourceError,
    ffmpeg_exe,
    os_error,
)
from sparkle.adapters.scene import Face, draw_mouth
from sparkle.adapters.subtitles import cue_image
from sparkle.adapters.videos import CameraMove, keyframe_to_frame
from sparkle.adapters.visemes import Viseme, shape_at
from sparkle.atomic import temp_path_for

#: Lines of ffmpeg's stderr quoted in an error message.
STDERR_TAIL_LINES = 15


@dataclass
class FramePainter:
    """Draws a shot's moving mouths (and burned subtitles) onto its frames."""

    size: tuple[int, int]
    fps: float
    clip_frames: int
    move: CameraMove
    caption_rows: int
    #: Faces of the speakers in the start and the end keyframe.
    start_faces: list[Face]
    end_faces: list[Face]
    #: Each line: (character id, start in the shot in seconds, mouth shapes of the line).
    lines: list[tuple[str, float, list[Viseme]]]
    #: Burned cues: (start, end, text) in seconds of the shot; empty when not burning.
    cues: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def has_faces(self) -> bool:
        """Whether any speaker's face is on screen (so mouths are drawn)."""
        return bool(self.start_faces or self.end_faces)

    def shape(self, character_id: str, t: float) -> str:
        """The mouth shape of ``character_id`` at ``t`` seconds into the shot."""
        for speaker, start, shapes in self.lines:
            end = shapes[-1].t if shapes else 0.0
            if speaker == character_id and start <= t < start + end:
                return shape_at(shapes, t - start)
        return "rest"

    def paint(self, image: Image.Image, n: int) -> None:
        """Draw frame ``n``'s mouths and cue onto ``image`` (in place)."""
        t = n / self.fps
        held = min(n, self.clip_frames - 1)
        faces = self.start_faces
        if self.end_faces and (not faces or held >= self.clip_frames / 2):
            faces = self.end_faces
        draw = ImageDraw.Draw(image)
        if faces:
            scale, dx, dy = keyframe_to_frame(
                self.move, self.size, self.clip_frames, held, self.caption_rows
            )
            for face in faces:
                draw_mouth(draw, face, self.shape(face.character_id, t), scale, (dx, dy))
        for start, end, text in self.cues:
            if start <= t < end:
                width, height = self.size
                strip = cue_image(text, width, height)
                y = height - self.caption_rows - strip.height - round(height * 0.02)
                image.paste(strip, (0, max(0, y)), strip)


def _tail(handle: IO[bytes]) -> str:
    handle.seek(0)
    lines = [ln for ln in handle.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def pipe_frames(
    decode_args: Sequence[str],
    encode_args: Sequence[str],
    size: tuple[int, int],
    rate: Fraction,
    total_frames: int,
    painter: FramePainter,
    out: Path,
) -> None:
    """Decode with ``decode_args``, paint every frame, encode with ``encode_args`` to ``out``.

    The encoder reads raw RGB frames as its input 0; frames past the end of the decoded
    clip repeat its last frame (the picture holds while the speech goes on).

    Raises:
      FFmpegError: either ffmpeg failed (the message quotes its stderr).
      FFmpegResourceError: either ffmpeg timed out or was killed.
    """
    width, height = size
    exe = ffmpeg_exe()
    base = [exe, "-nostdin", "-hide_banner", "-loglevel", "error"]
    decode = [*base, *decode_args, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = width * height * 3
    try:
        with (
            temp_path_for(out) as tmp,
            tempfile.TemporaryFile() as dec_err,
            tempfile.TemporaryFile() as enc_err,
        ):
            encode = [
                *base, "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                "-framerate", str(rate), "-i", "-", *encode_args, str(tmp),
            ]  # fmt: skip
            dec = subprocess.Popen(
                decode, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=dec_err
            )
            enc = subprocess.Popen(
                encode, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=enc_err
            )
            assert dec.stdout is not None and enc.stdin is not None
            try:
                last: bytes | None = None
                ended = False
                for n in range(total_frames):
                    data = b"" if ended else dec.stdout.read(frame_bytes)
                    if len(data) < frame_bytes:
                        ended = True
                        if last is None:
                            break
                        data = last
                    last = data
                    image = Image.frombytes("RGB", size, data)
                    painter.paint(image, n)
                    enc.stdin.write(image.tobytes())
                enc.stdin.close()
                dec.stdout.read()
                dec_code = dec.wait(timeout=FFMPEG_TIMEOUT_SEC)
                enc_code = enc.wait(timeout=FFMPEG_TIMEOUT_SEC)
            except BrokenPipeError:
                dec_code, enc_code = dec.wait(timeout=10), enc.wait(timeout=FFMPEG_TIMEOUT_SEC)
            except subprocess.TimeoutExpired:
                raise FFmpegResourceError(
                    f"ffmpeg timed out after {FFMPEG_TIMEOUT_SEC:g} s while painting {out}",
                    encode,
                    "",
                ) from None
            finally:
                for proc in (dec, enc):
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            for code, command, err in ((dec_code, decode, dec_err), (enc_code, encode, enc_err)):
                if code != 0:
                    tail = _tail(err)
                    kind = FFmpegResourceError if code < 0 else FFmpegError
                    raise kind(
                        f"ffmpeg failed (exit {code}) while painting mouths into {out}\n"
                        f"command: {shlex.join(command)}\n{tail}",
                        command,
                        tail,
                    )
            if last is None:
                raise FFmpegError(
                    f"ffmpeg decoded no frame of the clip while painting {out}", decode, ""
                )
    except OSError as exc:
        raise os_error(exc, f"cannot write {out}") from exc

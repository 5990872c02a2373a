"""Talking faces: the lipsync stage's frame-by-frame painting of mouths (and burned cues).

A shot whose speakers have faces in its keyframes (``frames/layout.json``) is decoded to
raw yuv420p frames, each frame gets the mouth shape its speaker is making at that instant
(:mod:`sparkle.adapters.visemes`) drawn where the camera move has carried the face
(:func:`sparkle.adapters.videos.keyframe_to_frame`), and the frames are encoded again with
the shot's audio. Faces of characters who do not speak keep the keyframe's closed mouth.

Only the small region around each mouth is touched, in the video's own Y'CbCr values: no
colour conversion of whole frames, and the skin painted over the old mouth is sampled from
the frame beside it, so it matches exactly.
"""

from __future__ import annotations

import dataclasses
import queue
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO

from PIL import Image, ImageDraw

from sparkle.adapters.ffmpeg import (
    FFMPEG_TIMEOUT_SEC,
    FFmpegError,
    FFmpegResourceError,
    ffmpeg_exe,
)
from sparkle.adapters.run_files import os_error
from sparkle.adapters.scene_layout import (
    MOUTH_INSIDE,
    RGB,
    TEETH_COLOUR,
    Box,
    Face,
    draw_mouth,
    mouth_box,
)
from sparkle.adapters.subtitles import cue_image
from sparkle.adapters.videos import CameraMove, keyframe_to_frame
from sparkle.adapters.visemes import Viseme, shape_at
from sparkle.atomic import temp_path_for

#: Lines of ffmpeg's stderr quoted in an error message.
STDERR_TAIL_LINES = 15

#: Decoded frames held ready while earlier ones are painted and encoded.
PREFETCH_FRAMES = 8

#: Pixels around a mouth box included in the painted region (room to sample skin).
REGION_PAD = 6


def video_ycbcr(rgb: RGB) -> RGB:
    """The limited-range BT.601 Y'CbCr of an RGB colour, as ffmpeg's yuv420p holds it."""
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(cb), round(cr)


class YuvFrame:
    """One raw yuv420p frame, with regions cut out as Y'CbCr images and put back."""

    def __init__(self, data: bytearray, size: tuple[int, int]) -> None:
        self.data = data
        self.width, self.height = size

    def _planes(self) -> tuple[int, int, int]:
        luma = self.width * self.height
        return luma, luma + luma // 4, self.width // 2

    def aligned(self, box: Box) -> Box:
        """``box`` grown by ``REGION_PAD``, on even pixels, inside the frame."""
        x0 = max(0, box[0] - REGION_PAD) & ~1
        y0 = max(0, box[1] - REGION_PAD) & ~1
        x1 = min(self.width, (box[2] + REGION_PAD + 1) & ~1)
        y1 = min(self.height, (box[3] + REGION_PAD + 1) & ~1)
        return x0, y0, max(x0 + 2, x1), max(y0 + 2, y1)

    def cut(self, box: Box) -> Image.Image:
        """The aligned ``box`` as a Y'CbCr image (chroma repeated to full size)."""
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        u_at, v_at, half = self._planes()
        d, stride = self.data, self.width
        luma = b"".join(d[y * stride + x0 : y * stride + x1] for y in range(y0, y1))
        planes = [Image.frombytes("L", (w, h), luma)]
        for at in (u_at, v_at):
            rows = b"".join(
                d[at + y * half + x0 // 2 : at + y * half + x1 // 2]
                for y in range(y0 // 2, y1 // 2)
            )
            plane = Image.frombytes("L", (w // 2, h // 2), rows)
            planes.append(plane.resize((w, h), Image.Resampling.NEAREST))
        return Image.merge("YCbCr", planes)

    def put(self, image: Image.Image, box: Box) -> None:
        """Write ``image`` (from :meth:`cut`) back at ``box``, chroma averaged 2x2."""
        x0, y0, x1, y1 = box
        w = x1 - x0
        u_at, v_at, half = self._planes()
        y_plane, u_plane, v_plane = image.split()
        luma = y_plane.tobytes()
        for i, y in enumerate(range(y0, y1)):
            self.data[y * self.width + x0 : y * self.width + x1] = luma[i * w : (i + 1) * w]
        for at, plane in ((u_at, u_plane), (v_at, v_plane)):
            small = plane.reduce(2).tobytes()
            for i, y in enumerate(range(y0 // 2, y1 // 2)):
                row = small[i * (w // 2) : (i + 1) * (w // 2)]
                self.data[at + y * half + x0 // 2 : at + y * half + x1 // 2] = row


#: Mouth colours in video Y'CbCr.
_INSIDE, _TEETH = (video_ycbcr(c) for c in (MOUTH_INSIDE, TEETH_COLOUR))


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

    def paint(self, frame: YuvFrame, n: int) -> None:
        """Draw frame ``n``'s mouths and cue onto ``frame`` (in place)."""
        t = n / self.fps
        held = min(n, self.clip_frames - 1)
        faces = self.start_faces
        if self.end_faces and (not faces or held >= self.clip_frames / 2):
            faces = self.end_faces
        if faces:
            scale, dx, dy = keyframe_to_frame(
                self.move, self.size, self.clip_frames, held, self.caption_rows
            )
            for face in faces:
                box = frame.aligned(mouth_box(face, scale, (dx, dy)))
                region = frame.cut(box)
                local = (dx - box[0], dy - box[1])
                inner = mouth_box(face, scale, local)
                skin = _skin(region, inner)
                painted = dataclasses.replace(face, skin=skin, lip=video_ycbcr(face.lip))
                shape = self.shape(face.character_id, t)
                draw_mouth(ImageDraw.Draw(region), painted, shape, scale, local, _INSIDE, _TEETH)
                frame.put(region, box)
        for start, end, text in self.cues:
            if start <= t < end:
                width, height = self.size
                strip = cue_image(text, width, height)
                y = max(0, height - self.caption_rows - strip.height - round(height * 0.02))
                box = frame.aligned((0, y, width, min(height, y + strip.height)))
                region = frame.cut(box)
                region.paste(strip.convert("YCbCr"), (0, y - box[1]), strip)
                frame.put(region, box)


def _skin(region: Image.Image, inner: Box) -> RGB:
    """The face's colour beside a mouth box: the median of a few samples left and right."""
    width, height = region.size
    y = min(height - 1, max(0, (inner[1] + inner[3]) // 2))
    samples: list[tuple[int, int, int]] = []
    for x in (inner[0] - 2, inner[0] - 4, inner[2] + 2, inner[2] + 4):
        value = region.getpixel((min(width - 1, max(0, x)), y))
        assert isinstance(value, tuple)
        samples.append((int(value[0]), int(value[1]), int(value[2])))
    samples.sort()
    return samples[len(samples) // 2]


def _read_frames(
    stream: IO[bytes], frame_bytes: int, frames: queue.Queue[bytes | None], stop: threading.Event
) -> None:
    """Put whole frames read from ``stream`` on ``frames``, then None; quit when ``stop``."""
    while not stop.is_set():
        data = stream.read(frame_bytes)
        item = data if len(data) == frame_bytes else None
        while not stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if item is None:
            return


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

    The encoder reads raw yuv420p frames as its input 0; frames past the end of the decoded
    clip repeat its last frame (the picture holds while the speech goes on).

    Raises:
      FFmpegError: either ffmpeg failed (the message quotes its stderr).
      FFmpegResourceError: either ffmpeg timed out or was killed.
    """
    width, height = size
    exe = ffmpeg_exe()
    base = [exe, "-nostdin", "-hide_banner", "-loglevel", "error"]
    decode = [*base, *decode_args, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]
    frame_bytes = width * height * 3 // 2
    try:
        with (
            temp_path_for(out) as tmp,
            tempfile.TemporaryFile() as dec_err,
            tempfile.TemporaryFile() as enc_err,
        ):
            encode = [
                *base, "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
                "-framerate", str(rate), "-i", "-", *encode_args, str(tmp),
            ]  # fmt: skip
            dec = subprocess.Popen(
                decode, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=dec_err
            )
            enc = subprocess.Popen(
                encode, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=enc_err
            )
            assert dec.stdout is not None and enc.stdin is not None
            # A reader thread keeps the decoder running while frames are painted and
            # written to the encoder, instead of both waiting on this one thread.
            frames: queue.Queue[bytes | None] = queue.Queue(maxsize=PREFETCH_FRAMES)
            stop = threading.Event()
            reader = threading.Thread(
                target=_read_frames, args=(dec.stdout, frame_bytes, frames, stop), daemon=True
            )
            reader.start()
            try:
                last: bytes | None = None
                ended = False
                for n in range(total_frames):
                    data = None if ended else frames.get(timeout=FFMPEG_TIMEOUT_SEC)
                    if data is None:
                        ended = True
                        if last is None:
                            break
                        data = last
                    last = data
                    frame = YuvFrame(bytearray(data), size)
                    painter.paint(frame, n)
                    enc.stdin.write(frame.data)
                enc.stdin.close()
                stop.set()
                reader.join()
                dec.stdout.read()
                dec_code = dec.wait(timeout=FFMPEG_TIMEOUT_SEC)
                enc_code = enc.wait(timeout=FFMPEG_TIMEOUT_SEC)
            except BrokenPipeError:
                # The encoder died: its stderr says why; the decoder is merely stopped.
                stop.set()
                dec.kill()
                dec.wait()
                dec_code, enc_code = 0, enc.wait(timeout=FFMPEG_TIMEOUT_SEC)
            except (subprocess.TimeoutExpired, queue.Empty):
                raise FFmpegResourceError(
                    f"ffmpeg timed out after {FFMPEG_TIMEOUT_SEC:g} s while painting {out}",
                    encode,
                    "",
                ) from None
            finally:
                stop.set()
                for proc in (dec, enc):
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                reader.join(timeout=10)
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

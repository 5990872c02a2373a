"""Subtitles: one cue per dialogue line, at the time its audio starts and ends in the movie.

Cues come from the lipsync stage's ``timing.json`` (where each line starts in its shot and
how long each shot finally lasts), so they follow the audio exactly, including shifted
lines and extended shots. The assemble stage writes them as ``final/movie.srt`` and
``final/movie.vtt`` and as a soft ``mov_text`` track of the MP4;
``SPARKLE_BURN_SUBTITLES=on`` draws them into the picture instead (in the lipsync stage).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

#: Values of ``SPARKLE_BURN_SUBTITLES`` that burn subtitles into the picture.
BURN_ON = frozenset({"on", "1", "true", "yes"})

#: Height of burned subtitle text as a fraction of the frame height.
BURN_FONT_FRACTION = 0.055

#: Smallest burned font size in pixels.
BURN_MIN_FONT_PX = 10


def burn_subtitles() -> bool:
    """Whether subtitles are burned into the picture (``SPARKLE_BURN_SUBTITLES=on``)."""
    return os.environ.get("SPARKLE_BURN_SUBTITLES", "off").strip().lower() in BURN_ON


@dataclass(frozen=True)
class Cue:
    """One subtitle: text shown from ``start`` to ``end`` seconds of the movie."""

    start: float
    end: float
    text: str


def cues_from_timing(timing: dict[str, Any], shot_ids: list[str]) -> list[Cue]:
    """The movie's cues from the lipsync timing record, shots in ``shot_ids`` order."""
    cues: list[Cue] = []
    offset = 0.0
    shots = timing.get("shots", {})
    for shot_id in shot_ids:
        record = shots.get(shot_id, {})
        for line in record.get("lines", []):
            start = offset + float(line["start_sec"])
            text = " ".join(str(line.get("text", "")).split())
            if text:
                cues.append(
                    Cue(round(start, 3), round(start + float(line["duration_sec"]), 3), text)
                )
        offset += float(record.get("duration_sec", 0.0))
    return cues


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt_text(cues: list[Cue]) -> str:
    """SubRip text of ``cues``."""
    blocks = [
        f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{c.text}\n"
        for i, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def vtt_text(cues: list[Cue]) -> str:
    """WebVTT text of ``cues``."""
    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{c.text}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


_TIME_RE = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{3})\s*-->\s*(\d+):(\d\d):(\d\d)[,.](\d{3})")


def parse_cues(text: str) -> list[Cue]:
    """Cues of SubRip or WebVTT text (what ffmpeg writes when it extracts a track)."""
    cues: list[Cue] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            match = _TIME_RE.search(line)
            if match:
                g = [int(x) for x in match.groups()]
                start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
                end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
                cues.append(Cue(start, end, " ".join(lines[i + 1 :]).strip()))
                break
    return cues


@functools.lru_cache(maxsize=64)
def cue_image(text: str, width: int, height: int) -> Image.Image:
    """The burned look of a cue: white text with a dark box, as an RGBA strip ``width`` wide."""
    size = max(BURN_MIN_FONT_PX, round(height * BURN_FONT_FRACTION))
    font = ImageFont.load_default(size=size)
    words, lines, current = text.split(), [], ""
    for word in words:
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= width * 0.86 or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    line_h = round(size * 1.25)
    strip = Image.new("RGBA", (width, line_h * len(lines) + size // 2), (0, 0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        w = font.getlength(line)
        x, y = (width - w) / 2, size // 4 + i * line_h
        draw.rectangle(
            (x - size // 3, y - size // 8, x + w + size // 3, y + line_h - size // 8),
            fill=(0, 0, 0, 170),
        )
        draw.text((x, y), line, font=font, fill=(255, 255, 255, 255))
    return strip

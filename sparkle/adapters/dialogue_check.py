"""Is the dialogue heard, and heard on time? QA's measurements of speech over the bed.

Every shot carries an ambience bed, so "a shot with dialogue is loud" does not prove
that the words are there. QA knows where speech should be instead: the lipsync
timing says when each line starts, and the line's own WAV says when within it the voice
is loud. That gives a speech mask on the clip's envelope (``analyze(signals=True)``):

* the **margin**: mean level where speech should be minus mean level elsewhere (the bed);
  silent or missing dialogue gives a margin near zero or below (the bed is ducked there);
* the **offset**: the shift at which the clip's envelope best follows the loudness of the
  lines' own audio (syllable by syllable); audio laid on late or early shows up as an
  offset of that many seconds. Speech that is there but shifted is a desync; speech not
  clearly above the bed even at its best shift is dialogue below the bed.
"""

from __future__ import annotations

import math
import wave
from array import array
from pathlib import Path

from sparkle.adapters.analysis import ENVELOPE_WINDOW_SEC, dbfs_levels

#: A window of a line's own audio louder than this (dBFS) counts as speech.
SPEECH_DB = -40.0

#: Fewest speech windows needed before a margin or an offset means anything.
MIN_WINDOWS = 5

#: Largest shift in seconds tried when looking for the offset.
MAX_OFFSET_SEC = 1.0


def _wav_levels(path: Path) -> list[float]:
    """Level in dBFS per ``ENVELOPE_WINDOW_SEC`` of a 16-bit PCM WAV (empty if unreadable)."""
    try:
        with wave.open(str(path), "rb") as reader:
            rate, width, channels = (
                reader.getframerate(),
                reader.getsampwidth(),
                reader.getnchannels(),
            )
            raw = reader.readframes(reader.getnframes())
    except (OSError, wave.Error, EOFError):
        return []
    if width != 2:
        return []
    samples = array("h", raw)[::channels]
    return dbfs_levels(samples, max(1, round(rate * ENVELOPE_WINDOW_SEC)))


def speech_levels(lines: list[tuple[float, Path]], windows: int) -> list[float | None]:
    """Per envelope window of a clip, the level its lines' own audio has there (None: no
    speech): ``(start_sec, wav)`` per line."""
    levels: list[float | None] = [None] * windows
    for start, wav in lines:
        first = round(start / ENVELOPE_WINDOW_SEC)
        for i, level in enumerate(_wav_levels(wav)):
            if level > SPEECH_DB and 0 <= first + i < windows:
                levels[first + i] = max(level, levels[first + i] or level)
    return levels


def _separation(
    envelope: list[float], mask: list[bool], lag: int, outside: float | None = None
) -> float | None:
    """Mean of the speech windows minus mean of the others, the mask shifted by ``lag``.

    Windows shifted off the clip read ``outside`` (a bed-like level), so every shift
    compares the same windows; without it they are skipped.
    """
    speech: list[float] = []
    rest: list[float] = []
    for i, active in enumerate(mask):
        j = i + lag
        if 0 <= j < len(envelope):
            (speech if active else rest).append(envelope[j])
        elif outside is not None:
            (speech if active else rest).append(outside)
    if len(speech) < MIN_WINDOWS or len(rest) < MIN_WINDOWS:
        return None
    return sum(speech) / len(speech) - sum(rest) / len(rest)


def dialogue_margin_db(envelope: list[float], mask: list[bool]) -> float | None:
    """Mean level where speech should be minus elsewhere, in dB (None: not measurable)."""
    return _separation(envelope, mask, 0)


def _correlation(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def best_alignment(envelope: list[float], levels: list[float | None]) -> tuple[float, float] | None:
    """``(offset_sec, margin_db)``: where the clip's sound best follows the lines' own.

    The offset is the shift (up to ``MAX_OFFSET_SEC``) at which the clip's envelope
    correlates best with the loudness of the lines' WAVs over the speech windows: the
    syllables line up only at the true shift, whatever the bed and its ducking do. Positive
    means the speech is heard late. The margin is :func:`dialogue_margin_db` at that shift.
    None when not measurable.
    """
    active = [(i, level) for i, level in enumerate(levels) if level is not None]
    if not envelope or len(active) < MIN_WINDOWS:
        return None
    reach = round(MAX_OFFSET_SEC / ENVELOPE_WINDOW_SEC)
    # Off the clip there is no speech: read it as a quiet level of the clip itself.
    outside = sorted(envelope)[len(envelope) // 5]
    floor = outside - 10  # digital silence (-120 dB) would swamp the correlation
    clip = [max(v, floor) for v in envelope]
    xs = [level for _, level in active]
    best: tuple[float, int] | None = None
    for lag in sorted(range(-reach, reach + 1), key=abs):
        ys = [clip[i + lag] if 0 <= i + lag < len(clip) else outside for i, _ in active]
        score = _correlation(xs, ys)
        # Ties go to the smallest shift: a clean clip must not look shifted.
        if best is None or score > best[0] + 1e-9:
            best = (score, lag)
    assert best is not None
    mask = [level is not None for level in levels]
    margin = _separation(envelope, mask, best[1], outside)
    if margin is None:
        return None
    return best[1] * ENVELOPE_WINDOW_SEC, margin

"""Visemes: the mouth shapes of a spoken line, timed from the speech.

The tts stage asks espeak-ng for phoneme events while it synthesises: each event names a
phoneme and the millisecond of the audio where it starts. :func:`from_phonemes` maps them to
a few mouth shapes (:data:`sparkle.adapters.scene_layout.MOUTH_SHAPES`): open ``AI``, wide ``E``,
round ``O``, lips pressed ``MBP``, teeth on lip ``FV``, a small opening ``etc`` for other
consonants, and ``rest`` in pauses. Phoneme events were chosen over the audio envelope
because they say *which* shape (an "oo" is round, an "m" is closed even though it is
voiced) and come from the synthesiser's own clock, so they cannot drift from the audio.

For a line without a sidecar (audio from another TTS), :func:`from_envelope` falls back to
the loudness of the WAV: loud is open, quiet is half open, silent is closed.

Sidecar: ``<line>.visemes.json`` beside the WAV, ``{"method", "duration_sec", "visemes":
[{"t": seconds, "shape": name, "phoneme": espeak name}]}``.
"""

from __future__ import annotations

import json
import math
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path

from sparkle.adapters.run_files import os_error
from sparkle.atomic import write_json
from sparkle.errors import PermanentStageError

#: Method recorded for shapes timed from espeak-ng's phoneme events.
PHONEME_METHOD = "espeak-phoneme-events"

#: Method recorded for shapes derived from the loudness of the audio.
ENVELOPE_METHOD = "audio-envelope"

#: Seconds per loudness window of the envelope fallback.
ENVELOPE_WINDOW_SEC = 0.04

#: Envelope fallback: dBFS above which the mouth is wide open, and above which it is half open.
ENVELOPE_OPEN_DB = -24.0
ENVELOPE_HALF_DB = -38.0

#: espeak phoneme names (stress marks and length removed) -> mouth shape; the first
#: matching prefix wins, longest prefixes first. Anything else is ``etc``.
PHONEME_PREFIXES: tuple[tuple[str, str], ...] = (
    ("_", "rest"),
    ("aI", "AI"),
    ("aU", "AI"),
    ("OI", "O"),
    ("oU", "O"),
    ("eI", "E"),
    ("tS", "etc"),
    ("dZ", "etc"),
    ("a", "AI"),
    ("A", "AI"),
    ("V", "AI"),
    ("&", "AI"),
    ("@", "E"),
    ("3", "E"),
    ("E", "E"),
    ("e", "E"),
    ("I", "E"),
    ("i", "E"),
    ("O", "O"),
    ("o", "O"),
    ("0", "O"),
    ("U", "O"),
    ("u", "O"),
    ("w", "O"),
    ("m", "MBP"),
    ("b", "MBP"),
    ("p", "MBP"),
    ("f", "FV"),
    ("v", "FV"),
)


@dataclass(frozen=True)
class Viseme:
    """A mouth shape from ``t`` seconds into the line until the next one."""

    t: float
    shape: str
    phoneme: str = ""


def shape_for(phoneme: str) -> str:
    """The mouth shape of an espeak phoneme name such as ``'aI``, ``u:`` or ``_:``."""
    name = phoneme.strip().lstrip("',%=")
    for prefix, shape in PHONEME_PREFIXES:
        if name.startswith(prefix):
            return shape
    return "etc"


def from_phonemes(phonemes: list[tuple[float, str]], duration_sec: float) -> list[Viseme]:
    """Shapes from espeak's ``(seconds, phoneme)`` events; closed before and after."""
    shapes: list[Viseme] = []
    for t, phoneme in sorted(phonemes, key=lambda item: item[0]):
        shape = shape_for(phoneme)
        if shapes and shapes[-1].shape == shape:
            continue
        if shapes and abs(shapes[-1].t - t) < 1e-6:
            shapes[-1] = Viseme(round(t, 4), shape, phoneme)  # same instant: the later wins
        else:
            shapes.append(Viseme(round(t, 4), shape, phoneme))
    if not shapes or shapes[-1].shape != "rest":
        shapes.append(Viseme(round(duration_sec, 4), "rest"))
    return shapes


def from_envelope(wav_path: Path) -> list[Viseme]:
    """Shapes from the loudness of a 16-bit PCM WAV, one per ``ENVELOPE_WINDOW_SEC``."""
    try:
        with wave.open(str(wav_path), "rb") as reader:
            rate, width = reader.getframerate(), reader.getsampwidth()
            raw = reader.readframes(reader.getnframes())
            channels = reader.getnchannels()
    except (OSError, wave.Error, EOFError) as exc:
        raise PermanentStageError(f"cannot read {wav_path} for mouth shapes: {exc}") from exc
    if width != 2:
        return [Viseme(0.0, "rest")]
    samples = array("h", raw)[::channels]
    step = max(1, round(rate * ENVELOPE_WINDOW_SEC))
    shapes: list[Viseme] = []
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        power = sum(s * s for s in chunk) / max(1, len(chunk))
        db = 10 * math.log10(power / 32768**2) if power > 0 else -120.0
        shape = "AI" if db > ENVELOPE_OPEN_DB else "etc" if db > ENVELOPE_HALF_DB else "rest"
        if not shapes or shapes[-1].shape != shape:
            shapes.append(Viseme(round(start / rate, 4), shape))
    shapes.append(Viseme(round(len(samples) / rate, 4), "rest"))
    return shapes


def sidecar_path(wav_path: Path) -> Path:
    """Where the mouth shapes of the line ``wav_path`` are kept."""
    return wav_path.with_suffix(".visemes.json")


def write_visemes(wav_path: Path, shapes: list[Viseme], method: str) -> None:
    """Write the sidecar of ``wav_path`` atomically."""
    record = {
        "method": method,
        "duration_sec": shapes[-1].t if shapes else 0.0,
        "visemes": [{"t": v.t, "shape": v.shape, "phoneme": v.phoneme} for v in shapes],
    }
    path = sidecar_path(wav_path)
    try:
        write_json(path, record)
    except OSError as exc:
        raise os_error(exc, f"cannot write {path}") from exc


def load_visemes(wav_path: Path) -> tuple[str, list[Viseme]]:
    """The method and shapes of a line: its sidecar, else derived from the audio."""
    path = sidecar_path(wav_path)
    try:
        data = json.loads(path.read_text("utf-8"))
        shapes = [
            Viseme(float(v["t"]), str(v["shape"]), str(v.get("phoneme", "")))
            for v in data["visemes"]
        ]
        return str(data.get("method", PHONEME_METHOD)), shapes
    except FileNotFoundError:
        return ENVELOPE_METHOD, from_envelope(wav_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PermanentStageError(
            f"cannot read the mouth shapes {path}: {exc}; re-run the tts stage"
        ) from exc


def shape_at(shapes: list[Viseme], t: float) -> str:
    """The shape at ``t`` seconds into the line (``rest`` outside it)."""
    current = "rest"
    for viseme in shapes:
        if viseme.t > t:
            break
        current = viseme.shape
    return current

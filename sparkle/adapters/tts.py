"""The ``tts`` stage: one WAV of real speech per dialogue line, with espeak-ng.

espeak-ng comes from the ``espeakng-loader`` wheel and is called through ctypes. Its state
is global to the process, so it is initialised once and every synthesis holds a lock. The
data path is always passed explicitly: with NULL the library looks for a build folder and
calls ``exit(1)``, which would kill the worker without an exception.

Outputs: ``audio/<shot>/<index:02d>_<character>.wav`` (16-bit mono PCM at espeak's rate,
22050 Hz), ``index`` counting the shot's lines from 0, and beside each its mouth shapes
``<index:02d>_<character>.visemes.json`` timed from espeak's phoneme events.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
import wave
from array import array
from pathlib import Path
from typing import Any

from sparkle.adapters.run_files import os_error, relative_to_run
from sparkle.adapters.visemes import PHONEME_METHOD, from_phonemes, write_visemes
from sparkle.atomic import temp_path_for
from sparkle.errors import PermanentStageError, TransientStageError
from sparkle.schemas import AssetRefs, CharacterSpec, MoviePlan

#: Voice used when a character names none, or names one espeak-ng does not know.
DEFAULT_VOICE = "en-us"

#: espeak-ng's default speaking rate in words per minute, restored before every line.
DEFAULT_RATE_WPM = 175

#: espeak-ng's default pitch (0-100), restored before every line.
DEFAULT_PITCH = 50

#: Accepted speaking rates in words per minute (espeak-ng's own limits).
RATE_RANGE = (80, 450)

#: Milliseconds of audio espeak-ng hands to the callback at a time.
BUFFER_MS = 500

# espeak-ng API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1
_PITCH = 3
_EE_OK = 0

_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Espeak:
    """The process-wide espeak-ng library, initialised on first use."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        self._samples = array("h")
        self._phonemes: list[tuple[float, str]] = []
        try:
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise PermanentStageError(f"cannot load espeak-ng from espeakng-loader: {exc}") from exc
        self.lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetVoiceByName.restype = ctypes.c_int
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_SetParameter.restype = ctypes.c_int
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.lib.espeak_Synth.restype = ctypes.c_int
        self.lib.espeak_Synchronize.restype = ctypes.c_int
        # espeak-ng seeds its noise (breathy voices) from the clock: seeded per line instead,
        # the same plan and seed give the same samples (absent from old libraries)
        self._set_seed = getattr(self.lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None
        # Phoneme events: espeak reports each phoneme with its time in the audio, which
        # the lipsync stage turns into mouth shapes (see sparkle.adapters.visemes).
        rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, data_path.encode(), _INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise PermanentStageError(f"espeak-ng failed to initialise with data at {data_path}")
        self.sample_rate: int = rate
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SynthCallback(self._collect)
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if wav and count > 0:
            self._samples.frombytes(ctypes.string_at(wav, count * 2))
        if events:
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                event = events[i]
                if event.type == _EVENT_PHONEME:
                    name = event.id.string.decode("ascii", "replace")
                    self._phonemes.append((event.audio_position / 1000, name))
                i += 1
        return 0

    def set_voice(self, name: str) -> bool:
        """Select a voice; False when espeak-ng does not know it."""
        return bool(self.lib.espeak_SetVoiceByName(name.encode()) == _EE_OK)

    def synthesize(
        self, text: str, voice: str, rate: int, pitch: int, seed: int = 0
    ) -> tuple[array[int], str, list[tuple[float, str]]]:
        """Speak ``text``; return the samples, the voice used and the phonemes.

        Phonemes are ``(seconds from the start, espeak phoneme name)``. Hold ``lock``.
        ``seed`` seeds espeak-ng's noise, so that the same arguments give the same samples.
        """
        used = voice if self.set_voice(voice) else DEFAULT_VOICE
        if used != voice and not self.set_voice(DEFAULT_VOICE):
            raise PermanentStageError(
                f"espeak-ng knows neither voice {voice!r} nor {DEFAULT_VOICE!r}"
            )
        self.lib.espeak_SetParameter(_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._samples = array("h")
        if self._set_seed is not None:
            self._set_seed(seed)
        self._phonemes = []
        data = text.encode("utf-8") + b"\0"
        code = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if code != _EE_OK:
            raise TransientStageError(f"espeak-ng could not speak the line (error {code})")
        self.lib.espeak_Synchronize()
        return self._samples, used, self._phonemes


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def espeak() -> _Espeak:
    """The process-wide espeak-ng instance (initialised on first call)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


def _int_setting(
    character: CharacterSpec, key: str, default: int, bounds: tuple[int, int], warnings: list[str]
) -> int:
    raw = character.voice_profile.get(key)
    if raw is None:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        warnings.append(
            f"character {character.id}: voice_profile.{key}={raw!r} is not a number; "
            f"using {default}"
        )
        return default
    clamped = min(max(value, bounds[0]), bounds[1])
    if clamped != value:
        warnings.append(f"character {character.id}: voice_profile.{key}={raw} clamped to {clamped}")
    return clamped


def synthesize_line(text: str, voice: str, rate: int, pitch: int, out: Path,
                    seed: int = 0) -> tuple[str, float]:
    """Speak ``text`` into the WAV ``out`` (atomically); return the voice used and seconds.
    The same arguments (``seed`` included) give the same file.

    Beside it goes the line's mouth shapes, timed from espeak's phoneme events
    (:func:`sparkle.adapters.visemes.sidecar_path`).
    """
    engine = espeak()
    with engine.lock:
        samples, used, phonemes = engine.synthesize(text, voice, rate, pitch, seed)
        sample_rate = engine.sample_rate
    try:
        with temp_path_for(out) as tmp, wave.open(str(tmp), "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(sample_rate)
            writer.writeframes(samples.tobytes())
    except OSError as exc:
        raise os_error(exc, f"cannot write {out}") from exc
    write_visemes(out, from_phonemes(phonemes, len(samples) / sample_rate), PHONEME_METHOD)
    return used, len(samples) / sample_rate


def _line_seed(seed: int, shot_id: str, index: int) -> int:
    """A 31-bit seed for one line, from the plan's seed and the line's place."""
    digest = hashlib.sha256(f"{seed}\x1f{shot_id}\x1f{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def tts_stage(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> tuple[AssetRefs, dict[str, Any]]:
    """Synthesize every dialogue line of every shot."""
    refs = refs.model_copy(deep=True)
    warnings: list[str] = []
    voices: dict[str, str] = {}
    spoken_sec = 0.0
    lines = 0
    for shot in plan.shots:
        paths: list[str] = []
        for index, line in enumerate(shot.dialogue):
            character = plan.character(line.character_id)
            wanted = character.voice_profile.get("voice", DEFAULT_VOICE)
            rate = _int_setting(character, "rate", DEFAULT_RATE_WPM, RATE_RANGE, warnings)
            pitch = _int_setting(character, "pitch", DEFAULT_PITCH, (0, 100), warnings)
            out = run_dir / "audio" / shot.id / f"{index:02d}_{character.id}.wav"
            # (the plan's seed, mixed with the line's place: lines differ, runs do not)
            seed = _line_seed(plan.seed, shot.id, index)
            used, seconds = synthesize_line(line.text, wanted, rate, pitch, out, seed)
            if used != wanted and character.id not in voices:
                warnings.append(
                    f"character {character.id}: espeak-ng has no voice {wanted!r}; "
                    f"used {used!r} instead"
                )
            if seconds == 0:
                warnings.append(f"shot {shot.id} line {index}: espeak-ng produced no audio")
            voices.setdefault(character.id, used)
            paths.append(relative_to_run(run_dir, out))
            spoken_sec += seconds
            lines += 1
        refs.shot(shot.id).dialogue_audio = paths
    return refs, {
        "lines_synthesized": lines,
        "voices": voices,
        "characters_processed": len(voices),
        "speech_sec": round(spoken_sec, 3),
        # The same voice-profile warning comes once per line: report each once.
        "warnings": list(dict.fromkeys(warnings)),
    }

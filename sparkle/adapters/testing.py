"""The ``test`` adapter set: fast, deterministic, tiny but real files, with fault injection.

For engine, queue and chaos tests, where rendering real movies would take too long. Each
stage genuinely consumes what the stage before it wrote, so the chain's data flow is
exercised: PNG keyframes → animated GIF clips (blends of the two keyframes) → WAV lines →
per-shot WAV tracks with the lines mixed in at their times → one GIF and one WAV for the
movie → a QA report from reading those back. No ffmpeg, pure Python, a few ms per stage.

Faults are injected through plan metadata, ``fault_<stage>``:

- ``transient:N``: the first N attempts raise TransientStageError;
- ``permanent``: every attempt raises PermanentStageError;
- ``sleep:S``: sleep S seconds, then work normally;
- ``crash``: kill the worker process (``os._exit``), every attempt;
- ``crash:N``: kill the worker process on the first N attempts.

Every call appends ``{"stage", "pid", "start", "end", "outcome", "shots", "seed"}`` to
``trace.jsonl`` in the run folder, so tests can count calls (per shot, too: a re-rolled shot
is a call on a plan narrowed to it) and check that no two stages of a run overlapped.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from sparkle import atomic
from sparkle.errors import PermanentStageError, TransientStageError
from sparkle.infrastructure import naming
from sparkle.schemas import AssetRefs, MoviePlan, QAReport, QAShotReport

#: Keyframe size in pixels.
FRAME_SIZE = (64, 36)

#: Frames per second of the GIF clips.
CLIP_FPS = 4

#: Sample rate of the WAV files, in Hz.
SAMPLE_RATE = 8000

#: Seconds of "speech" per character of dialogue.
SECONDS_PER_CHAR = 0.02

TRACE_FILE = "trace.jsonl"
FAULT_COUNTS_DIR = "faults"

Result = tuple[AssetRefs, dict[str, Any]]
Body = Callable[[MoviePlan, AssetRefs, Path], Result]


def _inject_fault(stage: str, plan: MoviePlan, run_dir: Path) -> None:
    spec = plan.metadata.get(f"fault_{stage}")
    if not spec:
        return
    kind, _, arg = spec.partition(":")
    counter = run_dir / FAULT_COUNTS_DIR / f"{stage}.count"
    counter.parent.mkdir(parents=True, exist_ok=True)
    calls = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if kind == "transient" and calls <= int(arg or 1):
        raise TransientStageError(f"injected transient fault {calls}/{arg or 1} in {stage}")
    if kind == "permanent":
        raise PermanentStageError(f"injected permanent fault in {stage}")
    if kind == "sleep":
        time.sleep(float(arg))
    if kind == "crash" and (not arg or calls <= int(arg)):
        os._exit(137)


def _trace(run_dir: Path, record: dict[str, Any]) -> None:
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    path = run_dir / TRACE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with naming(path):  # (a full disk: say which file)
            os.write(fd, line)  # one write on O_APPEND: lines from processes never interleave
    finally:
        os.close(fd)


def _traced(
    stage: str, body: Body, faults: bool = True
) -> Callable[[MoviePlan, AssetRefs, Path], Result]:
    def adapter(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Result:
        start = time.time()
        outcome = "error"
        try:
            if faults:
                _inject_fault(stage, plan, run_dir)
            result = body(plan, refs.model_copy(deep=True), run_dir)
            outcome = "ok"
            return result
        finally:
            _trace(
                run_dir,
                {
                    "stage": stage,
                    "pid": os.getpid(),
                    "start": start,
                    "end": time.time(),
                    "outcome": outcome,
                    "shots": [shot.id for shot in plan.shots],
                    "seed": plan.seed,
                },
            )

    adapter.__name__ = f"test_{stage}"
    return adapter


def _seeded_color(*parts: object) -> tuple[int, int, int]:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return digest[0], digest[1], digest[2]


def _require(run_dir: Path, rel: str | None, what: str) -> Path:
    if not rel or not (run_dir / rel).is_file():
        raise PermanentStageError(f"missing {what}: {rel or '(no path recorded)'} in {run_dir}")
    return run_dir / rel


def _write_wav(path: Path, samples: list[int]) -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    atomic.write_bytes(path, buffer.getvalue())


def _read_wav(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as src:
        if src.getframerate() != SAMPLE_RATE or src.getsampwidth() != 2:
            raise PermanentStageError(f"{path}: unexpected WAV format")
        data = src.readframes(src.getnframes())
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def _script(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Result:
    lines = [plan.title, ""]
    for shot in plan.shots:
        lines.append(f"SHOT {shot.id} ({shot.duration_sec:g}s): {shot.visual_description}")
        lines += [f"  {plan.character(d.character_id).name}: {d.text}" for d in shot.dialogue]
    atomic.write_bytes(run_dir / "script" / "screenplay.txt", "\n".join(lines).encode())
    refs.extras["screenplay"] = "script/screenplay.txt"
    return refs, {"shots": len(plan.shots)}


def _images(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Result:
    written: set[str] = set()  # (a keyframe shared by two shots is written once)
    for shot in plan.shots:
        prompts = (shot.start_frame_prompt, shot.end_frame_prompt)
        for which, name, prompt in zip(("start", "end"), plan.keyframe_names(shot), prompts,
                                       strict=True):
            rel = f"frames/{name}.png"
            if rel not in written:
                image = Image.new("RGB", FRAME_SIZE, _seeded_color(plan.seed, shot.id, prompt))
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                atomic.write_bytes(run_dir / rel, buffer.getvalue())
                written.add(rel)
            setattr(refs.shot(shot.id), f"{which}_frame", rel)
    return refs, {"frames_written": len(written), "seed": plan.seed}


def _gif_bytes(frames: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=1000 // CLIP_FPS,
        loop=0,
    )
    return buffer.getvalue()


def _gif_frames(path: Path) -> list[Image.Image]:
    with Image.open(path) as gif:
        frames = []
        for index in range(getattr(gif, "n_frames", 1)):
            gif.seek(index)
            frames.append(gif.convert("RGB"))
        return frames


def _frame_count(seconds: float) -> int:
    return max(2, math.ceil(seconds * CLIP_FPS))


def _videos(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Result:
    for shot in plan.shots:
        entry = refs.shot(shot.id)
        with (
            Image.open(_require(run_dir, entry.start_frame, "start frame")) as a,
            Image.open(_require(run_dir, entry.end_frame, "end frame")) as b,
        ):
            start, end = a.convert("RGB"), b.convert("RGB")
        count = _frame_count(shot.duration_sec)
        frames = [Image.blend(start, end, i / (count - 1)) for i in range(count)]
        rel = f"clips/{shot.id}.gif"
        atomic.write_bytes(run_dir / rel, _gif_bytes(frames))
        entry.raw_clip = rel
    return refs, {"clips_written": len(plan.shots), "fps": CLIP_FPS, "codec": "gif"}


def _tts(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Result:
    lines = 0
    for shot in plan.shots:
        entry = refs.shot(shot.id)
        entry.dialogue_audio = []
        for index, line in enumerate(shot.dialogue):
            n = max(int(SAMPLE_RATE * SECONDS_PER_CHAR * len(line.text)), SAMPLE_RATE // 10)
            pitch = 200 + sum(line.character_id.encode()) % 200
            samples = [
                int(8000 * math.sin(2 * math.pi * pitch * t / SAMPLE_RATE)) for t in range(n)
            ]
            rel = f"audio/{shot.id}/{index:02d}_{line.character_id}.wav"
            _write_wav(run_dir / rel, samples)
            entry.dialogue_audio.append(rel)
            lines += 1
    return refs, {"lines_synthesized": lines}


def _lipsync(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Result:
    extended = []
    for shot in plan.shots:
        entry = refs.shot(shot.id)
        frames = _gif_frames(_require(run_dir, entry.raw_clip, "clip"))
        placed: list[tuple[int, list[int]]] = []
        cursor = 0
        for line, rel in zip(shot.dialogue, entry.dialogue_audio, strict=True):
            samples = _read_wav(_require(run_dir, rel, "dialogue audio"))
            at = (
                int(line.start_time_sec * SAMPLE_RATE)
                if line.start_time_sec is not None
                else cursor
            )
            placed.append((at, samples))
            cursor = at + len(samples)
        length = max(int(shot.duration_sec * SAMPLE_RATE), cursor)
        if length > int(shot.duration_sec * SAMPLE_RATE):
            extended.append(shot.id)
            frames += [frames[-1]] * (_frame_count(length / SAMPLE_RATE) - len(frames))
        track = [0] * length
        for at, samples in placed:
            for i, sample in enumerate(samples):
                track[at + i] = max(-32768, min(32767, track[at + i] + sample))
        _write_wav(run_dir / "lipsync" / f"{shot.id}.wav", track)
        rel = f"lipsync/{shot.id}.gif"
        atomic.write_bytes(run_dir / rel, _gif_bytes(frames))
        entry.final_video_clip = rel
        refs.extras[f"track_{shot.id}"] = f"lipsync/{shot.id}.wav"
    return refs, {"clips_synced": len(plan.shots), "extended_shots": extended}


def _assemble(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Result:
    # Streamed, one shot at a time: the movie's frames are copied from the clips as they are
    # encoded, and its sound a track at a time, so memory grows with a shot, not the movie.
    clips = (_require(run_dir, refs.shot(shot.id).final_video_clip, "clip")
             for shot in plan.shots)
    tracks = (_require(run_dir, refs.extras.get(f"track_{shot.id}"), "track")
              for shot in plan.shots)
    with atomic.temp_path_for(run_dir / "final" / "movie.gif") as movie:
        _concat_gifs(clips, movie)
    with atomic.temp_path_for(run_dir / "final" / "movie.wav") as sound:
        samples = _concat_wavs(tracks, sound)
    refs.extras["final_movie"] = "final/movie.gif"
    refs.extras["final_audio"] = "final/movie.wav"
    return refs, {
        "final_path": "final/movie.gif",
        "shots_used": len(plan.shots),
        "duration_sec": round(samples / SAMPLE_RATE, 3),
    }


def _qa(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> Result:
    # Read back without holding the movie: frames counted block by block, samples from the
    # WAV header.
    frames = sum(1 for _ in _gif_frame_blocks(
        _require(run_dir, refs.extras.get("final_movie"), "movie"))[1])
    audio = _wav_samples(_require(run_dir, refs.extras.get("final_audio"), "movie audio"))
    per_shot = [
        QAShotReport(
            shot_id=s.id, expected_duration_sec=s.duration_sec, has_dialogue=bool(s.dialogue)
        )
        for s in plan.shots
    ]
    expected = sum(_frame_count(s.duration_sec) for s in plan.shots)
    issues = 0 if frames >= expected and audio else 1
    report = QAReport(
        movie_title=plan.title,
        per_shot=per_shot,
        issues_found=issues,
        decision="approve" if issues == 0 else "escalate",
        summary=f"{frames} frames, {audio / SAMPLE_RATE:.2f}s audio",
        movie={"frames": frames},
    )
    atomic.write_json(run_dir / "qa_report.json", report)
    refs.extras["qa_report"] = "qa_report.json"
    return refs, {"decision": report.decision, "issues_found": issues}


#: Bytes copied at a time when streaming a WAV track into the movie's sound.
WAV_COPY_FRAMES = 1 << 16

#: The NETSCAPE2.0 application extension: loop the GIF forever.
_GIF_LOOP = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"


def _wav_samples(path: Path) -> int:
    """Samples in a WAV file, from its header."""
    with wave.open(str(path), "rb") as src:
        if src.getframerate() != SAMPLE_RATE or src.getsampwidth() != 2:
            raise PermanentStageError(f"{path}: unexpected WAV format")
        return src.getnframes()


def _concat_wavs(tracks: Iterator[Path], out: Path) -> int:
    """Write the samples of ``tracks`` one after the other into the WAV ``out``, a block at
    a time. Returns the samples written."""
    total = 0
    with wave.open(str(out), "wb") as dest:
        dest.setnchannels(1)
        dest.setsampwidth(2)
        dest.setframerate(SAMPLE_RATE)
        for track in tracks:
            with wave.open(str(track), "rb") as src:
                if src.getframerate() != SAMPLE_RATE or src.getsampwidth() != 2:
                    raise PermanentStageError(f"{track}: unexpected WAV format")
                while block := src.readframes(WAV_COPY_FRAMES):
                    dest.writeframes(block)
                    total += len(block) // 2
    return total


def _sub_blocks(data: bytes, at: int) -> int:
    """The offset after the GIF data sub-blocks starting at ``at`` (through the 0 size)."""
    while True:
        size = data[at]
        at += 1 + size
        if size == 0:
            return at


def _gif_frame_blocks(path: Path) -> tuple[bytes, Iterator[bytes]]:
    """The logical screen descriptor of the GIF at ``path`` and its frames, each as the
    bytes of its graphic control extension and image (with the global colour table made its
    local one, so the frame can stand in another GIF). Reads one file, not one movie."""
    data = path.read_bytes()
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise PermanentStageError(f"{path}: not a GIF file")
    packed = data[10]
    table = 3 << ((packed & 7) + 1) if packed & 0x80 else 0
    palette, screen = data[13:13 + table], data[6:13]

    def frames() -> Iterator[bytes]:
        at, control = 13 + table, b""
        while at < len(data) and data[at] != 0x3B:
            if data[at] == 0x21:  # an extension: keep a graphic control one for its frame
                end = _sub_blocks(data, at + 2)
                if data[at + 1] == 0xF9:
                    control = data[at:end]
                at = end
            elif data[at] == 0x2C:  # an image
                flags = data[at + 9]
                local = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
                end = _sub_blocks(data, at + 10 + local + 1)
                if local or not palette:
                    yield control + data[at:end]
                else:  # (the global table, as this frame's own)
                    flags = 0x80 | (flags & 0x40) | (packed & 7)
                    yield (control + data[at:at + 9] + bytes([flags]) + palette
                           + data[at + 10:end])
                at, control = end, b""
            else:
                raise PermanentStageError(f"{path}: damaged GIF (byte {data[at]:#x} at {at})")

    return screen, frames()


def _concat_gifs(clips: Iterator[Path], out: Path) -> None:
    """Write the frames of ``clips`` one after the other into the looping GIF ``out``,
    copying each frame's encoded bytes (no decoding), a clip at a time."""
    with open(out, "wb") as dest:
        started = False
        for clip in clips:
            screen, frames = _gif_frame_blocks(clip)
            if not started:
                # (the first clip's size, no global colour table: every frame has its own)
                dest.write(b"GIF89a" + screen[:4] + bytes([0]) + screen[5:7] + _GIF_LOOP)
                started = True
            for frame in frames:
                dest.write(frame)
        if not started:
            raise PermanentStageError("no clips to assemble")
        dest.write(b"\x3b")


_BODIES: dict[str, Body] = {
    "script": _script,
    "images": _images,
    "videos": _videos,
    "tts": _tts,
    "lipsync": _lipsync,
    "assemble": _assemble,
    "qa": _qa,
}

#: The test set: stage → adapter (honouring ``fault_<stage>`` in plan metadata).
ADAPTERS: dict[str, Callable[[MoviePlan, AssetRefs, Path], Result]] = {
    stage: _traced(stage, body) for stage, body in _BODIES.items()
}

#: The same adapters with fault injection off: "the fixed adapter" in tests, e.g.
#: ``SPARKLE_ADAPTER_VIDEOS=sparkle.adapters.testing:fixed_videos``.
FIXED: dict[str, Callable[[MoviePlan, AssetRefs, Path], Result]] = {
    stage: _traced(stage, body, faults=False) for stage, body in _BODIES.items()
}
fixed_script = FIXED["script"]
fixed_images = FIXED["images"]
fixed_videos = FIXED["videos"]
fixed_tts = FIXED["tts"]
fixed_lipsync = FIXED["lipsync"]
fixed_assemble = FIXED["assemble"]
fixed_qa = FIXED["qa"]


def read_trace(run_dir: Path) -> list[dict[str, Any]]:
    """The calls recorded in a run folder's ``trace.jsonl``."""
    path = run_dir / TRACE_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

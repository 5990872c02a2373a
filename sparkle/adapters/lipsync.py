"""The ``lipsync`` stage: each shot's clip with moving mouths, its dialogue and an ambience bed.

Every line starts at its ``start_time_sec``, or right after the previous line when unset.
A line that would start before the previous one has finished is pushed back to start when
it ends (talking over each other is unintelligible); ``timing.json`` records it as
``shifted``. Dialogue is never cut: when the last line ends after the clip, the clip is
extended by holding its last frame (``tpad stop_mode=clone``) until ``DIALOGUE_TAIL_SEC``
after the speech.

When a speaker's face is in the shot's keyframes (``frames/layout.json``), the clip goes
through :mod:`sparkle.adapters.mouths` frame by frame: the mouth shapes of each line
(:mod:`sparkle.adapters.visemes`) are drawn on the speaker's face in time with the audio
(and, with ``SPARKLE_BURN_SUBTITLES=on``, the cues are drawn in). Under the dialogue lies
the shot's ambience bed (:mod:`sparkle.adapters.ambience`), ducked while anyone speaks.

Every output has the same layout, H.264 yuv420p video plus AAC mono 48 kHz audio, so the
assemble stage can concatenate the clips without re-encoding video. Clips that need no
mouths and no extension keep their video stream as is (``-c:v copy``).

Outputs: ``lipsync/<shot>.mp4`` and ``lipsync/timing.json``, which holds per shot the
planned, raw and final durations, whether it was extended, where each line starts and
its mouth shapes, the ambience sounds and whether mouths were drawn. QA reads it to tell
an extended shot from a wrong-length one and to know where speech should be heard.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparkle.adapters.ambience import Bed, bed_filter, bed_for
from sparkle.adapters.ffmpeg import ffmpeg_to_file
from sparkle.adapters.images import read_layouts
from sparkle.adapters.media import (
    AUDIO_CHANNELS,
    AUDIO_CODEC_ARGS,
    AUDIO_SAMPLE_RATE,
    VIDEO_CODEC_ARGS,
    VIDEO_PROFILE,
    fps_fraction,
    frame_count,
)
from sparkle.adapters.mouths import FramePainter, pipe_frames
from sparkle.adapters.probe import MediaInfo, audio_duration, probe
from sparkle.adapters.run_files import os_error, relative_to_run, require_file
from sparkle.adapters.scene_layout import speaking_faces
from sparkle.adapters.subtitles import burn_subtitles
from sparkle.adapters.videos import camera_move, still_caption_rows
from sparkle.adapters.visemes import Viseme, load_visemes
from sparkle.atomic import write_json
from sparkle.errors import PermanentStageError
from sparkle.schemas import AssetRefs, MoviePlan, ShotSpec

#: Seconds of picture kept after the last line when a shot is extended for its dialogue.
DIALOGUE_TAIL_SEC = 0.3

#: Where the per-shot timing goes, relative to the run folder (also ``extras``).
TIMING_PATH = "lipsync/timing.json"

#: Key of the timing file in ``AssetRefs.extras``.
TIMING_EXTRA = "lipsync_timing"

#: Shots muxed at the same time (one ffmpeg each).
LIPSYNC_WORKERS = int(os.environ.get("SPARKLE_LIPSYNC_WORKERS", "2"))

_LAYOUT = "mono" if AUDIO_CHANNELS == 1 else "stereo"

#: One shot's work: raw clip, timing, output, re-encode?, ambience, frame painter.
Job = tuple[Path, "ShotTiming", Path, bool, Bed | None, FramePainter | None]


@dataclass(frozen=True)
class PlacedLine:
    """One dialogue line on the shot's timeline, in seconds."""

    audio: Path
    wanted_start_sec: float
    start_sec: float
    duration_sec: float
    character_id: str = ""
    text: str = ""
    #: Mouth shapes, timed from the start of the line, and how they were timed.
    visemes: list[Viseme] = field(default_factory=list)
    viseme_method: str = ""

    @property
    def end_sec(self) -> float:
        """When the line has been spoken."""
        return self.start_sec + self.duration_sec


@dataclass(frozen=True)
class ShotTiming:
    """How a shot's clip and its dialogue fit together."""

    shot_id: str
    planned_sec: float
    fps: float
    clip_frames: int
    extra_frames: int
    lines: list[PlacedLine]

    @property
    def clip_sec(self) -> float:
        """Duration of the video clip before any extension."""
        return self.clip_frames / self.fps

    @property
    def final_sec(self) -> float:
        """Duration of the lipsynced clip."""
        return (self.clip_frames + self.extra_frames) / self.fps

    @property
    def speech_end_sec(self) -> float:
        """When the last line ends (0 without dialogue)."""
        return max((line.end_sec for line in self.lines), default=0.0)

    def as_json(self, run_dir: Path) -> dict[str, Any]:
        """The JSON record of ``timing.json``."""
        return {
            "planned_sec": self.planned_sec,
            "clip_sec": round(self.clip_sec, 4),
            "duration_sec": round(self.final_sec, 4),
            "extended": self.extra_frames > 0,
            "extended_by_sec": round(self.extra_frames / self.fps, 4),
            "speech_end_sec": round(self.speech_end_sec, 4),
            "lines": [
                {
                    "audio": relative_to_run(run_dir, line.audio),
                    "wanted_start_sec": round(line.wanted_start_sec, 4),
                    "start_sec": round(line.start_sec, 4),
                    "duration_sec": round(line.duration_sec, 4),
                    "shifted": line.start_sec > line.wanted_start_sec + 1e-6,
                    "character_id": line.character_id,
                    "text": line.text,
                    "viseme_method": line.viseme_method,
                    "visemes": [[v.t, v.shape] for v in line.visemes],
                }
                for line in self.lines
            ],
        }


def place_lines(shot: ShotSpec, audio: list[Path]) -> list[PlacedLine]:
    """Put each line on the timeline: at its start time, never over the previous line."""
    placed: list[PlacedLine] = []
    previous_end = 0.0
    for line, path in zip(shot.dialogue, audio, strict=True):
        wanted = line.start_time_sec if line.start_time_sec is not None else previous_end
        start = max(wanted, previous_end)
        method, shapes = load_visemes(path)
        placed.append(
            PlacedLine(
                path, wanted, start, audio_duration(path), line.character_id, line.text,
                shapes, method,
            )
        )
        previous_end = placed[-1].end_sec
    return placed


def plan_timing(shot: ShotSpec, clip: MediaInfo, fps: float, audio: list[Path]) -> ShotTiming:
    """Work out the lines' positions and whether (and by how much) to extend the clip."""
    clip_sec = clip.duration_sec or shot.duration_sec
    clip_frames = frame_count(clip_sec, fps)
    lines = place_lines(shot, audio)
    speech_end = max((line.end_sec for line in lines), default=0.0)
    extra = 0
    if speech_end > clip_frames / fps:
        extra = math.ceil((speech_end + DIALOGUE_TAIL_SEC) * fps) - clip_frames
    return ShotTiming(shot.id, shot.duration_sec, fps, clip_frames, extra, lines)


def _conforms(clip: MediaInfo, size: tuple[int, int], fps: float) -> bool:
    video = clip.video
    return bool(
        video
        and video.codec == "h264"
        and video.profile in (None, VIDEO_PROFILE)
        and video.pix_fmt == "yuv420p"
        and (video.width, video.height) == size
        and video.fps is not None
        and abs(video.fps - fps) < 0.01
    )


def audio_graph(timing: ShotTiming, bed: Bed | None, first_input: int) -> list[str]:
    """Filter chains mixing the lines (inputs ``first_input``...) over the bed into ``[aout]``.

    Without a bed and without lines the track is silence.
    """
    final = f"{timing.final_sec:.6f}"
    graph: list[str] = []
    labels = []
    for i, line in enumerate(timing.lines, start=first_input):
        delay = round(line.start_sec * AUDIO_SAMPLE_RATE)
        graph.append(
            f"[{i}:a]aresample={AUDIO_SAMPLE_RATE},"
            f"aformat=sample_fmts=fltp:channel_layouts={_LAYOUT},"
            f"adelay=delays={delay}S:all=1[l{i}]"
        )
        labels.append(f"[l{i}]")
    if bed is not None:
        spans = [(line.start_sec, line.end_sec) for line in timing.lines]
        graph += bed_filter(bed, timing.final_sec, spans, "bed")
        graph.append(f"[bed]aformat=sample_fmts=fltp:channel_layouts={_LAYOUT}[bedf]")
        labels.append("[bedf]")
    if not labels:
        graph.append(f"anullsrc=r={AUDIO_SAMPLE_RATE}:cl={_LAYOUT}[silence]")
        labels.append("[silence]")
    mixed = (
        f"{''.join(labels)}amix=inputs={len(labels)}:duration=longest:normalize=0"
        if len(labels) > 1
        else f"{labels[0]}anull"
    )
    graph.append(f"{mixed},apad=whole_dur={final},atrim=end={final}[aout]")
    return graph


def mux_shot(
    raw: Path,
    timing: ShotTiming,
    out: Path,
    size: tuple[int, int],
    reencode: bool,
    bed: Bed | None = None,
    painter: FramePainter | None = None,
) -> None:
    """Write the lipsynced clip of one shot (atomically).

    With a ``painter`` every frame goes through Python, which draws the mouths (and burned
    subtitles); otherwise the video is copied, or re-encoded when it does not conform.
    """
    rate = fps_fraction(timing.fps)
    width, height = size
    total_frames = timing.clip_frames + timing.extra_frames
    audio_args = [arg for line in timing.lines for arg in ("-i", str(line.audio))]
    graph = audio_graph(timing, bed, 1)
    tail = ["-map", "[aout]", *AUDIO_CODEC_ARGS, "-map_metadata", "-1"]
    conform = (
        f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,fps={rate}"
    )
    if painter is not None:
        decode = ["-i", str(raw)] + (["-vf", conform] if reencode else [])
        encode = [
            *audio_args,
            "-filter_complex",
            ";".join(graph),
            "-map",
            "0:v",
            "-frames:v",
            str(total_frames),
            *VIDEO_CODEC_ARGS,
            *tail,
        ]
        pipe_frames(decode, encode, size, rate, total_frames, painter, out)
        return
    if reencode or timing.extra_frames:
        graph.append(
            f"[0:v]{conform},"
            f"tpad=stop_mode=clone:stop={timing.extra_frames},format=yuv420p[vout]"
        )
        video = ["-map", "[vout]", "-frames:v", str(total_frames), *VIDEO_CODEC_ARGS]
    else:
        video = ["-map", "0:v:0", "-c:v", "copy"]
    ffmpeg_to_file(
        ["-i", str(raw), *audio_args, "-filter_complex", ";".join(graph), *video, *tail],
        out,
        doing=f"muxing dialogue into {out}",
    )


def _earlier_timings(run_dir: Path, fps: float, redone: set[str]) -> dict[str, Any]:
    """The timing records of shots other than ``redone`` in the timing file already there
    (at the same frame rate), or none when it is missing or unreadable."""
    try:
        data = json.loads((run_dir / TIMING_PATH).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    shots = data.get("shots") if isinstance(data, dict) else None
    if data.get("fps") != fps or not isinstance(shots, dict):
        return {}
    return {shot: timing for shot, timing in shots.items() if shot not in redone}


def lipsync_stage(
    plan: MoviePlan, refs: AssetRefs, run_dir: Path
) -> tuple[AssetRefs, dict[str, Any]]:
    """Lay each shot's dialogue onto its clip, extending clips the dialogue outlasts."""
    refs = refs.model_copy(deep=True)
    size, fps = plan.resolution, plan.fps
    layouts = read_layouts(run_dir, refs)
    burn = burn_subtitles()
    caption_rows = still_caption_rows(size[1])
    jobs: list[Job] = []
    for shot in plan.shots:
        entry = refs.shot(shot.id)
        raw = require_file(run_dir, entry.raw_clip, f"raw clip of shot {shot.id}")
        if len(entry.dialogue_audio) != len(shot.dialogue):
            raise PermanentStageError(
                f"shot {shot.id} has {len(shot.dialogue)} dialogue line(s) but "
                f"{len(entry.dialogue_audio)} audio file(s) in asset refs; re-run the tts stage"
            )
        audio = [
            require_file(run_dir, rel, f"dialogue audio {i} of shot {shot.id}")
            for i, rel in enumerate(entry.dialogue_audio)
        ]
        clip = probe(raw)
        timing = plan_timing(shot, clip, fps, audio)
        speakers = {line.character_id for line in shot.dialogue}
        start_faces = speaking_faces(layouts, entry.start_frame, speakers)
        end_faces = speaking_faces(layouts, entry.end_frame, speakers)
        painter: FramePainter | None = None
        if start_faces or end_faces or (burn and timing.lines):
            painter = FramePainter(
                size=size,
                fps=fps,
                clip_frames=timing.clip_frames,
                move=camera_move(shot.motion_prompt),
                caption_rows=caption_rows,
                start_faces=start_faces,
                end_faces=end_faces,
                lines=[(ln.character_id, ln.start_sec, ln.visemes) for ln in timing.lines],
                cues=[(ln.start_sec, ln.end_sec, ln.text) for ln in timing.lines] if burn else [],
            )
        out = run_dir / "lipsync" / f"{shot.id}.mp4"
        reencode = not _conforms(clip, size, fps)
        jobs.append((raw, timing, out, reencode, bed_for(plan, shot), painter))

    def mux(job: Job) -> None:
        mux_shot(job[0], job[1], job[2], size, job[3], job[4], job[5])

    with ThreadPoolExecutor(max_workers=max(1, LIPSYNC_WORKERS)) as pool:
        list(pool.map(mux, jobs))
    record = {job[1].shot_id: job[1].as_json(run_dir) for job in jobs}
    for _, timing, _, _, bed, painter in jobs:
        record[timing.shot_id]["ambience"] = list(bed.sounds) if bed else []
        record[timing.shot_id]["mouths_drawn"] = bool(painter and painter.has_faces)
    # A call for some shots only (a re-roll, sparkle.takes) keeps the others' timings.
    record = {**_earlier_timings(run_dir, fps, {shot.id for shot in plan.shots}), **record}
    try:
        write_json(
            run_dir / TIMING_PATH, {"fps": fps, "subtitles_burned": burn, "shots": record}
        )
    except OSError as exc:
        raise os_error(exc, f"cannot write {run_dir / TIMING_PATH}") from exc
    for _, timing, out, _, _, _ in jobs:
        refs.shot(timing.shot_id).final_video_clip = relative_to_run(run_dir, out)
    refs.extras[TIMING_EXTRA] = TIMING_PATH
    return refs, {
        "clips_synced": len(jobs),
        "extended_shots": [job[1].shot_id for job in jobs if job[1].extra_frames > 0],
        "durations_sec": {job[1].shot_id: round(job[1].final_sec, 3) for job in jobs},
        "reencoded_shots": [
            job[1].shot_id for job in jobs if job[3] or job[1].extra_frames or job[5]
        ],
        "talking_shots": [job[1].shot_id for job in jobs if job[5] and job[5].has_faces],
        "subtitles_burned": burn,
        "timing": TIMING_PATH,
    }

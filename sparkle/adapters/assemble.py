"""The ``assemble`` stage: the lipsynced clips, in plan order, as one MP4.

Video is joined with ffmpeg's concat demuxer without re-encoding (``-c:v copy``): every
clip was encoded with the same settings, and a lipsync clip that does not match them was
re-encoded there. Audio is decoded and re-encoded once, which removes each clip's AAC
priming delay; ``-copyts`` keeps the demuxer's exact timestamps, so the movie lasts the
sum of its clips (measured: 40.00 s for ten clips totalling 40.00 s; without it the
priming shifts everything by 21 ms).

Every dialogue line becomes a subtitle cue at the time its audio starts and ends (from the
lipsync stage's ``timing.json``): ``final/movie.srt`` and ``final/movie.vtt``, and a soft
``mov_text`` track in the MP4 unless ``SPARKLE_BURN_SUBTITLES=on`` had the lipsync stage
burn them into the picture.

Output: ``final/movie.mp4`` (``extras["final_movie"]``), with ``+faststart`` so it plays
while downloading; ``final/movie.srt`` and ``final/movie.vtt`` (``extras["subtitles_srt"]``,
``extras["subtitles_vtt"]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sparkle.adapters.ffmpeg import ffmpeg_to_file
from sparkle.adapters.lipsync import TIMING_EXTRA
from sparkle.adapters.media import AUDIO_CODEC_ARGS
from sparkle.adapters.probe import probe
from sparkle.adapters.run_files import os_error, relative_to_run, require_file
from sparkle.adapters.subtitles import Cue, burn_subtitles, cues_from_timing, srt_text, vtt_text
from sparkle.atomic import write_bytes
from sparkle.errors import PermanentStageError
from sparkle.schemas import AssetRefs, MoviePlan

#: The finished movie, relative to the run folder.
MOVIE_PATH = "final/movie.mp4"

#: The concat demuxer's list of clips, relative to the run folder.
CONCAT_LIST_PATH = "final/concat.txt"

#: The movie's subtitles as SubRip and WebVTT, relative to the run folder.
SRT_PATH = "final/movie.srt"
VTT_PATH = "final/movie.vtt"

#: Language tag of the soft subtitle track.
SUBTITLE_LANGUAGE = "eng"


def movie_cues(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> list[Cue]:
    """The movie's subtitle cues, from the lipsync stage's timing file (none without it)."""
    relative = refs.extras.get(TIMING_EXTRA)
    if not relative:
        return []
    path = run_dir / relative
    try:
        timing = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise PermanentStageError(
            f"cannot read the lipsync timing {path}: {exc}; re-run the lipsync stage"
        ) from exc
    return cues_from_timing(timing, [shot.id for shot in plan.shots])


def concat_list(clips: list[Path]) -> str:
    """The concat demuxer's list file for ``clips`` (absolute, quoted paths)."""
    lines = ["ffconcat version 1.0"]
    for clip in clips:
        quoted = str(clip.resolve()).replace("'", "'\\''")
        lines.append(f"file '{quoted}'")
    return "\n".join(lines) + "\n"


def assemble_stage(
    plan: MoviePlan, refs: AssetRefs, run_dir: Path
) -> tuple[AssetRefs, dict[str, Any]]:
    """Concatenate the lipsynced clips into ``final/movie.mp4``."""
    refs = refs.model_copy(deep=True)
    clips = [
        require_file(
            run_dir, refs.shot(shot.id).final_video_clip, f"lipsynced clip of shot {shot.id}"
        )
        for shot in plan.shots
    ]
    for clip in clips:
        info = probe(clip)
        if info.video is None or info.audio is None:
            raise PermanentStageError(
                f"{clip} lacks a video or an audio stream; re-run the lipsync stage"
            )
    list_path = run_dir / CONCAT_LIST_PATH
    movie = run_dir / MOVIE_PATH
    cues = movie_cues(plan, refs, run_dir)
    try:
        write_bytes(list_path, concat_list(clips).encode("utf-8"))
        write_bytes(run_dir / SRT_PATH, srt_text(cues).encode("utf-8"))
        write_bytes(run_dir / VTT_PATH, vtt_text(cues).encode("utf-8"))
    except OSError as exc:
        raise os_error(exc, f"cannot write {list_path.parent}") from exc
    soft = bool(cues) and not burn_subtitles()
    subtitle_args = (
        ["-i", str(run_dir / SRT_PATH), "-map", "1:s:0", "-c:s", "mov_text",
         "-metadata:s:s:0", f"language={SUBTITLE_LANGUAGE}"]
        if soft
        else []
    )  # fmt: skip
    ffmpeg_to_file(
        [
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(list_path),
            *subtitle_args[:2],
            "-map",
            "0:v:0",
            "-map",
            "0:a:0",
            *subtitle_args[2:],
            "-c:v",
            "copy",
            *AUDIO_CODEC_ARGS,
            "-copyts",
            "-map_metadata",
            "-1",
            "-metadata",
            f"title={plan.title}",
            "-movflags",
            "+faststart",
        ],
        movie,
        doing=f"assembling {movie}",
    )
    info = probe(movie)
    refs.extras["final_movie"] = relative_to_run(run_dir, movie)
    refs.extras["subtitles_srt"] = SRT_PATH
    refs.extras["subtitles_vtt"] = VTT_PATH
    return refs, {
        "subtitle_cues": len(cues),
        "subtitles": "burned" if burn_subtitles() and cues else "soft" if soft else "none",
        "final_path": MOVIE_PATH,
        "duration_sec": info.duration_sec,
        "video_codec": info.video.codec if info.video else None,
        "audio_codec": info.audio.codec if info.audio else None,
        "shots_used": [shot.id for shot in plan.shots],
    }

"""The ``assemble`` stage: the lipsynced clips, in plan order, as one MP4.

Video is joined with ffmpeg's concat demuxer without re-encoding (``-c:v copy``): every
clip was encoded with the same settings, and a lipsync clip that does not match them was
re-encoded there. Audio is decoded and re-encoded once, which removes each clip's AAC
priming delay; ``-copyts`` keeps the demuxer's exact timestamps, so the movie lasts the
sum of its clips (measured: 40.00 s for ten clips totalling 40.00 s; without it the
priming shifts everything by 21 ms).

Output: ``final/movie.mp4`` (``extras["final_movie"]``), with ``+faststart`` so it plays
while downloading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparkle.adapters.media import (
    AUDIO_CODEC_ARGS,
    ffmpeg_to_file,
    os_error,
    probe,
    relative_to_run,
    require_file,
)
from sparkle.atomic import write_bytes
from sparkle.errors import PermanentStageError
from sparkle.schemas import AssetRefs, MoviePlan

#: The finished movie, relative to the run folder.
MOVIE_PATH = "final/movie.mp4"

#: The concat demuxer's list of clips, relative to the run folder.
CONCAT_LIST_PATH = "final/concat.txt"


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
    try:
        write_bytes(list_path, concat_list(clips).encode("utf-8"))
    except OSError as exc:
        raise os_error(exc, f"cannot write {list_path}") from exc
    ffmpeg_to_file(
        [
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(list_path),
            "-map",
            "0:v:0",
            "-map",
            "0:a:0",
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
    return refs, {
        "final_path": MOVIE_PATH,
        "duration_sec": info.duration_sec,
        "video_codec": info.video.codec if info.video else None,
        "audio_codec": info.audio.codec if info.audio else None,
        "shots_used": [shot.id for shot in plan.shots],
    }

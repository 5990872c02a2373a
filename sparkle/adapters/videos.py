"""The ``videos`` stage: one silent H.264 clip per shot, moving from start to end keyframe.

The shot's ``motion_prompt`` picks a camera move (see :func:`camera_move`); every move
dissolves from the start keyframe to the end keyframe while the camera moves. Each PNG is
decoded once and repeated with the ``loop`` filter (re-reading it per frame costs more than
the encode), and the whole clip is one ffmpeg call: xfade, then zoompan or a moving crop,
then the keyframes' caption band laid over the moving picture so its text stays still.

Outputs: ``clips/<shot>.mp4`` (video only; the lipsync stage adds the audio). A talking
shot, which the lipsync stage encodes again with its mouths painted, is written as a quick
draft (``DRAFT_VIDEO_CODEC_ARGS``).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sparkle.adapters.ffmpeg import ffmpeg_to_file
from sparkle.adapters.images import caption_height, read_layouts
from sparkle.adapters.media import (
    DRAFT_VIDEO_CODEC_ARGS,
    VIDEO_CODEC_ARGS,
    fps_fraction,
    frame_count,
)
from sparkle.adapters.run_files import relative_to_run, require_file
from sparkle.adapters.scene_layout import speaking_faces
from sparkle.adapters.subtitles import burn_subtitles
from sparkle.base_image_plan import MODEL_ID_KEY
from sparkle.schemas import AssetRefs, MoviePlan, ShotSpec

#: Shots encoded at the same time (one ffmpeg each); ffmpeg's filter graph is mostly
#: single-threaded, so two processes keep two cores busy.
VIDEO_WORKERS = int(os.environ.get("SPARKLE_VIDEO_WORKERS", "2"))

#: How far a push-in or zoom-out zooms (1.2 = the frame ends 20 % closer).
ZOOM_FACTOR = 1.2

#: Extra size of the keyframe a pan or tilt travels across (0.15 = 15 % larger).
PAN_MARGIN = 0.15

#: Longest dissolve ffmpeg's xfade allows, in seconds; longer shots dissolve in the middle.
XFADE_MAX_SEC = 60.0


class CameraMove(enum.StrEnum):
    """What the camera does during a shot."""

    #: Zoom in towards the centre.
    PUSH_IN = "push_in"
    #: Zoom out from the centre.
    ZOOM_OUT = "zoom_out"
    #: The view travels left across the frame.
    PAN_LEFT = "pan_left"
    #: The view travels right across the frame.
    PAN_RIGHT = "pan_right"
    #: The view travels up.
    TILT_UP = "tilt_up"
    #: The view travels down.
    TILT_DOWN = "tilt_down"
    #: A locked-off camera: hold the start frame, dissolve in the middle third, hold the end.
    STATIC = "static"
    #: No camera move: one slow dissolve over the whole shot.
    CROSSFADE = "crossfade"


#: Phrases of a motion prompt and the move they select, checked in this order; the first
#: phrase found (case-insensitive) wins, no match means ``CROSSFADE``.
MOTION_PHRASES: tuple[tuple[str, CameraMove], ...] = (
    ("zoom out", CameraMove.ZOOM_OUT),
    ("dolly out", CameraMove.ZOOM_OUT),
    ("pull", CameraMove.ZOOM_OUT),
    ("push", CameraMove.PUSH_IN),
    ("dolly", CameraMove.PUSH_IN),
    ("zoom in", CameraMove.PUSH_IN),
    ("pan left", CameraMove.PAN_LEFT),
    ("pan right", CameraMove.PAN_RIGHT),
    ("tilt down", CameraMove.TILT_DOWN),
    ("tilt", CameraMove.TILT_UP),
    ("static", CameraMove.STATIC),
)


def camera_move(motion_prompt: str | None) -> CameraMove:
    """The camera move a motion prompt asks for (see ``MOTION_PHRASES``)."""
    text = " ".join((motion_prompt or "").lower().split())
    for phrase, move in MOTION_PHRASES:
        if phrase in text:
            return move
    return CameraMove.CROSSFADE


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def clip_filter(
    move: CameraMove, size: tuple[int, int], fps: float, frames: int, caption_rows: int = 0
) -> str:
    """The ``-filter_complex`` graph turning inputs 0 (start) and 1 (end) into ``[v]``.

    ``caption_rows`` is the height of the keyframes' caption band: it is cut out of each
    keyframe and laid over the moving picture, still, so the text stays legible. It shows
    the start frame's caption for the first half of the shot and the end frame's after.
    """
    width, height = size
    rate = fps_fraction(fps)
    last = max(1, frames - 1)
    seconds = last / fps
    pans = (CameraMove.PAN_LEFT, CameraMove.PAN_RIGHT, CameraMove.TILT_UP, CameraMove.TILT_DOWN)
    if move in pans:
        in_w, in_h = _even(width * (1 + PAN_MARGIN)), _even(height * (1 + PAN_MARGIN))
    else:
        in_w, in_h = width, height
    picture = height - caption_rows
    # Lowest crop offset that keeps the enlarged frame's own caption under the still one.
    y_max = (
        min(in_h - height, int((in_h / height - 1) * picture)) if caption_rows else in_h - height
    )
    loop = f"loop=loop={last}:size=1:start=0,setpts=N*{rate.denominator}/({rate.numerator}*TB)"
    graph: list[str] = []
    # Scaling, cropping and format conversion run on the one decoded frame, before loop.
    for index, label in ((0, "a"), (1, "b")):
        if caption_rows:
            graph += [
                f"[{index}:v]scale={width}:{height},format=yuv420p,split[{label}p][{label}c]",
                f"[{label}p]scale={in_w}:{in_h},{loop}[{label}]",
                f"[{label}c]crop={width}:{caption_rows}:0:{picture},{loop}[{label}cap]",
            ]
        else:
            graph.append(f"[{index}:v]scale={in_w}:{in_h},format=yuv420p,{loop}[{label}]")
    if frames < 3:
        source = "[a]"
        graph.append("[b]nullsink")
    else:
        if move is CameraMove.STATIC:
            offset, fade = seconds / 3, seconds / 3
        else:
            fade = min(seconds, XFADE_MAX_SEC)
            offset = (seconds - fade) / 2
        graph.append(f"[a][b]xfade=transition=fade:duration={fade:.6f}:offset={offset:.6f}[x]")
        source = "[x]"
    # Smoothstep easing of the move, 0 -> 1 over the clip (t is the frame time in seconds).
    p = f"min(t/{seconds:.6f},1)"
    ease = f"({p}*{p}*(3-2*{p}))"
    on_p = f"min(on/{last},1)"
    on_ease = f"({on_p}*{on_p}*(3-2*{on_p}))"
    zoom = ZOOM_FACTOR - 1
    if move is CameraMove.PUSH_IN or move is CameraMove.ZOOM_OUT:
        z = (
            f"1+{zoom}*{on_ease}"
            if move is CameraMove.PUSH_IN
            else f"{ZOOM_FACTOR}-{zoom}*{on_ease}"
        )
        motion = (
            f"zoompan=z='{z}':x='iw/2-iw/zoom/2':y='ih/2-ih/zoom/2'"
            f":d=1:s={width}x{height}:fps={rate}"
        )
    elif move in pans:
        middle = min((in_h - height) // 2, y_max)
        x, y = {
            CameraMove.PAN_LEFT: (f"(iw-ow)*(1-{ease})", f"{middle}"),
            CameraMove.PAN_RIGHT: (f"(iw-ow)*{ease}", f"{middle}"),
            CameraMove.TILT_UP: ("(iw-ow)/2", f"{y_max}*(1-{ease})"),
            CameraMove.TILT_DOWN: ("(iw-ow)/2", f"{y_max}*{ease}"),
        }[move]
        motion = f"crop={width}:{height}:x='{x}':y='{y}'"
    else:
        motion = "null"
    if not caption_rows:
        graph.append(f"{source}{motion},format=yuv420p[v]")
    elif frames < 3:
        graph += [
            f"{source}{motion},format=yuv420p[m]",
            "[bcap]nullsink",
            f"[m][acap]overlay=0:{picture}[v]",
        ]
    else:
        half = f"{seconds / 2:.6f}"
        graph += [
            f"{source}{motion},format=yuv420p[m]",
            f"[m][acap]overlay=0:{picture}:enable='lt(t,{half})'[m1]",
            f"[m1][bcap]overlay=0:{picture}:enable='gte(t,{half})',format=yuv420p[v]",
        ]
    return ";".join(graph)


def still_caption_rows(height: int) -> int:
    """Rows of caption band kept still over the moving picture (0: it moves along).

    On tiny frames the caption fills most of the picture, so it moves with the rest.
    """
    rows = caption_height(height)
    return rows if rows <= height // 3 else 0


def keyframe_to_frame(
    move: CameraMove, size: tuple[int, int], frames: int, n: int, caption_rows: int = 0
) -> tuple[float, float, float]:
    """Where a keyframe point lands in frame ``n`` of the clip: ``(scale, dx, dy)``.

    A keyframe pixel ``(x, y)`` is seen at ``(x * scale + dx, y * scale + dy)``. This is
    the geometry of :func:`clip_filter`'s camera moves; the lipsync stage uses it to draw
    mouths where the faces are.
    """
    width, height = size
    last = max(1, frames - 1)
    p = min(max(n / last, 0.0), 1.0)
    ease = p * p * (3 - 2 * p)
    zoom = ZOOM_FACTOR - 1
    if move is CameraMove.PUSH_IN or move is CameraMove.ZOOM_OUT:
        z = 1 + zoom * ease if move is CameraMove.PUSH_IN else ZOOM_FACTOR - zoom * ease
        return z, width / 2 * (1 - z), height / 2 * (1 - z)
    pans = (CameraMove.PAN_LEFT, CameraMove.PAN_RIGHT, CameraMove.TILT_UP, CameraMove.TILT_DOWN)
    if move not in pans:
        return 1.0, 0.0, 0.0
    in_w, in_h = _even(width * (1 + PAN_MARGIN)), _even(height * (1 + PAN_MARGIN))
    picture = height - caption_rows
    y_max = (
        min(in_h - height, int((in_h / height - 1) * picture)) if caption_rows else in_h - height
    )
    middle = min((in_h - height) // 2, y_max)
    x, y = {
        CameraMove.PAN_LEFT: ((in_w - width) * (1 - ease), middle),
        CameraMove.PAN_RIGHT: ((in_w - width) * ease, middle),
        CameraMove.TILT_UP: ((in_w - width) / 2, y_max * (1 - ease)),
        CameraMove.TILT_DOWN: ((in_w - width) / 2, y_max * ease),
    }[move]
    return (in_w / width + in_h / height) / 2, -float(x), -float(y)


def render_clip(
    start: Path,
    end: Path,
    out: Path,
    move: CameraMove,
    size: tuple[int, int],
    fps: float,
    frames: int,
    caption_rows: int = 0,
    codec_args: Sequence[str] = VIDEO_CODEC_ARGS,
) -> None:
    """Encode one clip of ``frames`` frames from two keyframes, atomically."""
    ffmpeg_to_file(
        [
            "-framerate",
            str(fps_fraction(fps)),
            "-i",
            str(start),
            "-framerate",
            str(fps_fraction(fps)),
            "-i",
            str(end),
            "-filter_complex",
            clip_filter(move, size, fps, frames, caption_rows),
            "-map",
            "[v]",
            "-frames:v",
            str(frames),
            "-r",
            str(fps_fraction(fps)),
            *codec_args,
            "-an",
            "-map_metadata",
            "-1",
        ],
        out,
        doing=f"encoding {out}",
    )


def videos_stage(
    plan: MoviePlan, refs: AssetRefs, run_dir: Path
) -> tuple[AssetRefs, dict[str, Any]]:
    """Encode one clip per shot from its keyframes."""
    refs = refs.model_copy(deep=True)
    size, fps = plan.resolution, plan.fps
    jobs: list[tuple[ShotSpec, Path, Path, Path, CameraMove]] = []
    layouts = read_layouts(run_dir, refs)
    burn = burn_subtitles()
    drafts: set[str] = set()
    for shot in plan.shots:
        entry = refs.shot(shot.id)
        start = require_file(run_dir, entry.start_frame, f"start keyframe of shot {shot.id}")
        end = require_file(run_dir, entry.end_frame, f"end keyframe of shot {shot.id}")
        jobs.append(
            (
                shot,
                start,
                end,
                run_dir / "clips" / f"{shot.id}.mp4",
                camera_move(shot.motion_prompt),
            )
        )
        # The lipsync stage will decode and encode this clip again to paint mouths (or
        # burn subtitles): a quick draft is enough (see DRAFT_VIDEO_CODEC_ARGS).
        speakers = {line.character_id for line in shot.dialogue}
        if shot.dialogue and (
            burn
            or speaking_faces(layouts, entry.start_frame, speakers)
            or speaking_faces(layouts, entry.end_frame, speakers)
        ):
            drafts.add(shot.id)

    still_rows = still_caption_rows(size[1])

    def encode(job: tuple[ShotSpec, Path, Path, Path, CameraMove]) -> None:
        shot, start, end, out, move = job
        frames = frame_count(shot.duration_sec, fps)
        args = DRAFT_VIDEO_CODEC_ARGS if shot.id in drafts else VIDEO_CODEC_ARGS
        render_clip(start, end, out, move, size, fps, frames, still_rows, args)

    with ThreadPoolExecutor(max_workers=max(1, VIDEO_WORKERS)) as pool:
        # list() re-raises the first failure after every running encode has finished.
        list(pool.map(encode, jobs))
    for shot, _, _, out, _ in jobs:
        refs.shot(shot.id).raw_clip = relative_to_run(run_dir, out)
    return refs, {
        "clips_written": len(jobs),
        "fps": fps,
        "codec": "h264",
        "resolution": f"{size[0]}x{size[1]}",
        "frames": sum(frame_count(shot.duration_sec, fps) for shot in plan.shots),
        "motions": {shot.id: str(move) for shot, _, _, _, move in jobs},
        # (the plan's render_profile.video.model_id: this CPU set has no model to pick,
        # so it records which one the plan asked for)
        **({"model_id": plan.metadata[MODEL_ID_KEY]} if MODEL_ID_KEY in plan.metadata else {}),
        "draft_clips": sorted(drafts),
    }

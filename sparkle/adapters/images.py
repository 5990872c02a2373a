"""The ``images`` stage: a start and an end keyframe per shot, drawn as storyboard panels.

Each keyframe is a Pillow drawing at the plan's resolution, composed by
:mod:`sparkle.adapters.scene` from the words of the shot (sky, weather, place, objects and
the characters as figures), with a caption band of fixed height (:func:`caption_height`)
holding the movie title, the shot's number and the prompt; ``SPARKLE_CAPTIONS=off`` leaves
the band out. Everything is derived from the plan's seed, so the same plan and seed give
byte-identical PNGs.

Outputs: ``frames/<shot>_start.png``, ``frames/<shot>_end.png`` and ``frames/layout.json``
(what each keyframe shows, where the faces and mouths are; ``extras["keyframe_layout"]``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFont

from sparkle.adapters.run_files import os_error, relative_to_run
from sparkle.adapters.scene import compose
from sparkle.adapters.scene_layout import SceneLayout
from sparkle.atomic import temp_path_for, write_json
from sparkle.errors import PermanentStageError
from sparkle.schemas import NARROWED_FROM, AssetRefs, MoviePlan, ShotSpec

#: Name recorded in the stage metadata.
ADAPTER_NAME = "pillow-storyboard"

#: zlib level of the PNGs (1 is fastest; the frames are only an intermediate).
PNG_COMPRESS_LEVEL = 1

#: Smallest font size in pixels, so text stays legible on tiny test resolutions.
MIN_FONT_PX = 10

#: Lines of prompt text in the caption band; a longer prompt ends in "…".
CAPTION_LINES = 2

#: Line height as a multiple of the font size.
LINE_SPACING = 1.25

#: Values of ``SPARKLE_CAPTIONS`` that turn the caption band off.
CAPTIONS_OFF = frozenset({"off", "0", "false", "no"})

#: What every keyframe shows (elements, boxes, faces), relative to the run folder.
LAYOUT_PATH = "frames/layout.json"

#: Key of the layout file in ``AssetRefs.extras``.
LAYOUT_EXTRA = "keyframe_layout"

Which = Literal["start", "end"]

#: The two keyframes of a shot, in order.
KEYFRAMES: tuple[Which, ...] = ("start", "end")

def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float, max_lines: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and font.getlength(lines[-1] + "…") > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "…"
    return lines


def _caption_metrics(height: int) -> tuple[int, int, int]:
    """Margin, title font size and body font size in pixels for a frame ``height`` tall."""
    margin = max(4, round(height * 0.03))
    return margin, max(MIN_FONT_PX, round(height / 20)), max(MIN_FONT_PX, round(height / 26))


def caption_height(height: int) -> int:
    """Rows at the bottom of a keyframe ``height`` tall taken by the caption band (even).

    0 when captions are off (``SPARKLE_CAPTIONS=off``).
    """
    if not captions_enabled():
        return 0
    margin, title_px, body_px = _caption_metrics(height)
    rows = margin * 1.5 + (title_px + body_px * CAPTION_LINES) * LINE_SPACING
    return min(height - height % 2, 2 * math.ceil(rows / 2))


def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    assert isinstance(font, ImageFont.FreeTypeFont)  # true whenever FreeType is available
    return font


def captions_enabled() -> bool:
    """Whether keyframes carry the caption band (``SPARKLE_CAPTIONS``, on unless ``off``)."""
    return os.environ.get("SPARKLE_CAPTIONS", "on").strip().lower() not in CAPTIONS_OFF


def render_keyframe_with_layout(
    plan: MoviePlan, shot: ShotSpec, which: Which, index: int, size: tuple[int, int],
    total: int | None = None,
) -> tuple[Image.Image, SceneLayout]:
    """Draw one keyframe and say what it shows (see :mod:`sparkle.adapters.scene`)."""
    width, height = size
    prompt = shot.start_frame_prompt if which == "start" else shot.end_frame_prompt
    band = caption_height(height)
    picture, layout = compose(plan, shot, which, size, height - band)
    if not band:
        return picture, layout
    # Caption band, on a translucent layer; the videos stage keeps this band still.
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    layer = ImageDraw.Draw(overlay)
    margin, title_px, body_px = _caption_metrics(height)
    title_font, body_font = _font(title_px), _font(body_px)
    total = len(plan.shots) if total is None else total
    header = f"{plan.title}  ·  shot {index} of {total}"
    band_top = height - band
    layer.rectangle((0, band_top, width, height), fill=(0, 0, 0, 150))
    y = band_top + margin * 0.5
    header_line = _wrap(header, title_font, width - 2 * margin, 1)[0]
    layer.text((margin, y), header_line, font=title_font, fill=(255, 255, 255, 255))
    y += title_px * LINE_SPACING
    for text in _wrap(prompt, body_font, width - 2 * margin, CAPTION_LINES):
        layer.text((margin, y), text, font=body_font, fill=(235, 235, 235, 255))
        y += body_px * LINE_SPACING
    return Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB"), layout


def read_layouts(run_dir: Path, refs: AssetRefs) -> dict[str, SceneLayout]:
    """Keyframe path -> what it shows, from ``frames/layout.json`` (empty when absent).

    Raises:
      PermanentStageError: the file exists but cannot be read.
    """
    relative = refs.extras.get(LAYOUT_EXTRA)
    if not relative:
        return {}
    path = run_dir / relative
    try:
        data = json.loads(path.read_text("utf-8"))
        return {key: SceneLayout.from_json(value) for key, value in data.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PermanentStageError(
            f"cannot read the keyframe layout {path}: {exc}; re-run the images stage"
        ) from exc


def save_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` to ``path`` atomically, with no metadata (so bytes are reproducible)."""
    try:
        with temp_path_for(path) as tmp:
            image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    except OSError as exc:
        raise os_error(exc, f"cannot write {path}") from exc


def images_stage(
    plan: MoviePlan, refs: AssetRefs, run_dir: Path
) -> tuple[AssetRefs, dict[str, Any]]:
    """Draw the start and end keyframes of every shot."""
    refs = refs.model_copy(deep=True)
    size = plan.resolution
    latencies: list[float] = []
    # A re-roll's plan is narrowed to some shots (sparkle.takes); it names them all, so the
    # captions keep each shot's place in the movie.
    every = plan.metadata.get(NARROWED_FROM, "").split(",") if NARROWED_FROM in plan.metadata \
        else [s.id for s in plan.shots]
    # Keyframe name -> its file: two shots meeting on a shared keyframe (a plan with base
    # images) name one file, rendered once.
    rendered: dict[str, str] = {}
    layouts: dict[str, dict[str, Any]] = {}
    for shot in plan.shots:
        index = every.index(shot.id) + 1 if shot.id in every else 1
        entry = refs.shot(shot.id)
        for which, name in zip(KEYFRAMES, plan.keyframe_names(shot), strict=True):
            if name not in rendered:
                began = time.perf_counter()
                path = run_dir / "frames" / f"{name}.png"
                image, layout = render_keyframe_with_layout(plan, shot, which, index, size,
                                                            len(every))
                save_png(image, path)
                rendered[name] = relative_to_run(run_dir, path)
                layouts[rendered[name]] = layout.as_json()
                latencies.append(time.perf_counter() - began)
            if which == "start":
                entry.start_frame = rendered[name]
            else:
                entry.end_frame = rendered[name]
    # (a re-roll of some shots keeps the layouts of the others)
    layouts = {**_earlier_layouts(run_dir, refs), **layouts}
    try:
        write_json(run_dir / LAYOUT_PATH, layouts)
    except OSError as exc:
        raise os_error(exc, f"cannot write {run_dir / LAYOUT_PATH}") from exc
    refs.extras[LAYOUT_EXTRA] = LAYOUT_PATH
    return refs, {
        "frames_written": len(latencies),
        "seed": plan.seed,
        "adapter": ADAPTER_NAME,
        "resolution": f"{size[0]}x{size[1]}",
        "avg_latency_ms": round(1000 * sum(latencies) / max(1, len(latencies)), 2),
    }


def _earlier_layouts(run_dir: Path, refs: AssetRefs) -> dict[str, dict[str, Any]]:
    """The layouts already recorded (a stage run for some shots only must keep the others';
    the lipsync stage finds faces through them)."""
    try:
        return {key: layout.as_json() for key, layout in read_layouts(run_dir, refs).items()}
    except PermanentStageError:
        return {}

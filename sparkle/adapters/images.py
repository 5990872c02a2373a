"""The ``images`` stage: a start and an end keyframe per shot, drawn as storyboard panels.

Each keyframe is a Pillow drawing at the plan's resolution: a sky and ground in a palette
chosen from the shot's setting, a composition of silhouettes chosen from the frame prompt,
and a caption band of fixed height (:func:`caption_height`) with the movie title, shot id
and the prompt itself, so a viewer can follow the story without an image model.
Everything is derived from a SHA-256 of (seed, setting, prompt), so the same plan and seed
give byte-identical PNGs.

Outputs: ``frames/<shot>_start.png`` and ``frames/<shot>_end.png``.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import random
import time
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFont

from sparkle.adapters.media import os_error, relative_to_run
from sparkle.atomic import temp_path_for
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

#: Lightness range (0-1) of the sky, kept well above black so QA's black-frame check
#: never mistakes a night scene for a black frame.
SKY_LIGHTNESS = (0.32, 0.72)

#: Words in a setting or prompt that pull the palette towards a hue (0-1) and a lightness
#: shift; the first match wins.
MOOD_WORDS: tuple[tuple[str, float, float], ...] = (
    ("neon", 0.85, -0.05),
    ("night", 0.66, -0.12),
    ("dusk", 0.06, -0.06),
    ("sunset", 0.04, 0.0),
    ("dawn", 0.10, 0.04),
    ("storm", 0.60, -0.10),
    ("sea", 0.56, 0.0),
    ("ocean", 0.56, 0.0),
    ("forest", 0.33, -0.04),
    ("desert", 0.11, 0.08),
    ("snow", 0.58, 0.14),
    ("lamp", 0.12, -0.04),
    ("fire", 0.03, -0.02),
)

#: Words in a prompt that put a glowing light (sun, moon, lamp) into the picture.
LIGHT_WORDS = ("lamp", "light", "sun", "moon", "beam", "glow", "neon", "fire", "star")

Which = Literal["start", "end"]

#: The two keyframes of a shot, in order.
KEYFRAMES: tuple[Which, ...] = ("start", "end")

RGB = tuple[int, int, int]


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _hls(h: float, lightness: float, s: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, min(max(lightness, 0.0), 1.0), min(max(s, 0.0), 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _palette(setting: str, prompt: str, seed: int) -> dict[str, RGB]:
    """Colours of a scene: the hue comes from the setting, variations from the prompt."""
    base = _rng("palette", seed, setting)
    text = f"{setting} {prompt}".lower()
    hue, shift = base.random(), 0.0
    for word, word_hue, word_shift in MOOD_WORDS:
        if word in text:
            hue, shift = word_hue + base.uniform(-0.03, 0.03), word_shift
            break
    vary = _rng("variation", seed, setting, prompt)
    hue += vary.uniform(-0.02, 0.02)
    low, high = SKY_LIGHTNESS
    light = min(max(base.uniform(low + 0.1, high - 0.1) + shift, low), high)
    sat = base.uniform(0.35, 0.7)
    return {
        "sky_top": _hls(hue + 0.03, light - 0.06, sat),
        "sky_bottom": _hls(hue - 0.04, light + 0.14, sat * 0.9),
        "far": _hls(hue + 0.5, light - 0.12, sat * 0.4),
        "ground_top": _hls(hue + 0.45, light - 0.16, sat * 0.6),
        "ground_bottom": _hls(hue + 0.45, light - 0.24, sat * 0.5),
        "subject": _hls(hue + 0.5 + vary.uniform(-0.08, 0.08), light - 0.22, sat),
        "accent": _hls(hue + 0.12, min(light + 0.3, 0.92), 0.85),
    }


def _gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    width, height = size
    column = Image.new("RGB", (1, height))
    column.putdata([_mix(top, bottom, y / max(1, height - 1)) for y in range(height)])
    return column.resize((width, height), Image.Resampling.NEAREST)


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
    """Rows at the bottom of a keyframe ``height`` tall taken by the caption band (even)."""
    margin, title_px, body_px = _caption_metrics(height)
    rows = margin * 1.5 + (title_px + body_px * CAPTION_LINES) * LINE_SPACING
    return min(height - height % 2, 2 * math.ceil(rows / 2))


def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    assert isinstance(font, ImageFont.FreeTypeFont)  # true whenever FreeType is available
    return font


def render_keyframe(
    plan: MoviePlan, shot: ShotSpec, which: Which, index: int, size: tuple[int, int],
    total: int | None = None,
) -> Image.Image:
    """Draw one storyboard keyframe of ``shot`` (``index`` counts from 1, of ``total``
    shots: by default the plan's)."""
    width, height = size
    prompt = shot.start_frame_prompt if which == "start" else shot.end_frame_prompt
    setting = shot.setting or shot.visual_description
    colours = _palette(setting, prompt, plan.seed)
    layout = _rng("layout", plan.seed, setting, prompt)

    horizon = round(height * layout.uniform(0.5, 0.68))
    image = _gradient((width, horizon), colours["sky_top"], colours["sky_bottom"])
    canvas = Image.new("RGB", size)
    canvas.paste(image, (0, 0))
    canvas.paste(
        _gradient((width, height - horizon), colours["ground_top"], colours["ground_bottom"]),
        (0, horizon),
    )
    draw = ImageDraw.Draw(canvas)

    if any(word in prompt.lower() for word in LIGHT_WORDS):
        r = round(height * layout.uniform(0.05, 0.09))
        cx, cy = (
            round(width * layout.uniform(0.15, 0.85)),
            round(horizon * layout.uniform(0.25, 0.6)),
        )
        glow = _mix(colours["accent"], colours["sky_bottom"], 0.6)
        draw.ellipse((cx - 2 * r, cy - 2 * r, cx + 2 * r, cy + 2 * r), fill=glow)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colours["accent"])

    # A far skyline of hills or blocks along the horizon.
    points = [(0, horizon)]
    x = 0
    while x < width:
        step = round(width * layout.uniform(0.05, 0.14))
        points.append((x, horizon - round(height * layout.uniform(0.02, 0.12))))
        x += step
        points.append((x, points[-1][1]))
    points.append((width, horizon))
    draw.polygon(points, fill=colours["far"])

    # One to three subjects in the foreground, placed on a rule-of-thirds grid.
    for _ in range(layout.randint(1, 3)):
        cx = round(
            width * layout.choice((1 / 3, 1 / 2, 2 / 3)) + width * layout.uniform(-0.08, 0.08)
        )
        w = round(width * layout.uniform(0.06, 0.16))
        h = round(height * layout.uniform(0.18, 0.42))
        base_y = horizon + round((height - horizon) * layout.uniform(0.1, 0.5))
        box = (cx - w // 2, base_y - h, cx + w // 2, base_y)
        shape = layout.choice(("tower", "figure", "mound"))
        if shape == "tower":
            draw.rectangle(box, fill=colours["subject"])
            draw.rectangle((box[0], box[1], box[2], box[1] + h // 8), fill=colours["accent"])
        elif shape == "figure":
            head = w // 2
            draw.ellipse(
                (cx - head // 2, box[1], cx + head // 2, box[1] + head), fill=colours["subject"]
            )
            draw.rounded_rectangle(
                (box[0], box[1] + head, box[2], box[3]), radius=w // 3, fill=colours["subject"]
            )
        else:
            draw.pieslice(
                (box[0] - w, box[1] + h // 2, box[2] + w, box[3] + h // 2),
                180,
                360,
                fill=colours["subject"],
            )

    # Caption band, on a translucent layer; the videos stage keeps this band still.
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    layer = ImageDraw.Draw(overlay)
    margin, title_px, body_px = _caption_metrics(height)
    title_font, body_font = _font(title_px), _font(body_px)
    total = len(plan.shots) if total is None else total
    header = f"{plan.title}  ·  shot {shot.id} ({index}/{total})  ·  {which.upper()}"
    band_top = height - caption_height(height)
    layer.rectangle((0, band_top, width, height), fill=(0, 0, 0, 150))
    y = band_top + margin * 0.5
    header_line = _wrap(header, title_font, width - 2 * margin, 1)[0]
    layer.text((margin, y), header_line, font=title_font, fill=(255, 255, 255, 255))
    y += title_px * LINE_SPACING
    for text in _wrap(prompt, body_font, width - 2 * margin, CAPTION_LINES):
        layer.text((margin, y), text, font=body_font, fill=(235, 235, 235, 255))
        y += body_px * LINE_SPACING
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")


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
    for shot in plan.shots:
        index = every.index(shot.id) + 1 if shot.id in every else 1
        entry = refs.shot(shot.id)
        for which, name in zip(KEYFRAMES, plan.keyframe_names(shot), strict=True):
            if name not in rendered:
                began = time.perf_counter()
                path = run_dir / "frames" / f"{name}.png"
                save_png(render_keyframe(plan, shot, which, index, size, len(every)), path)
                latencies.append(time.perf_counter() - began)
                rendered[name] = relative_to_run(run_dir, path)
            if which == "start":
                entry.start_frame = rendered[name]
            else:
                entry.end_frame = rendered[name]
    return refs, {
        "frames_written": len(latencies),
        "seed": plan.seed,
        "adapter": ADAPTER_NAME,
        "resolution": f"{size[0]}x{size[1]}",
        "avg_latency_ms": round(1000 * sum(latencies) / max(1, len(latencies)), 2),
    }

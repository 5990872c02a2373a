"""The things standing in a keyframe's scene (a lighthouse, a boat, a car, a lamp, a neon
sign) and the weather over it.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from sparkle.adapters.scene_canvas import SceneContext, draw_glow, mix, rng
from sparkle.adapters.scene_layout import SceneLayout


def draw_lighthouse(img: Image.Image, ctx: SceneContext, layout: SceneLayout, beam: bool) -> None:
    draw = ImageDraw.Draw(img)
    cliff = layout.boxes.get("cliff")
    if cliff:
        cx = (cliff[0] + cliff[2]) // 2
        base = cliff[1] + ctx.py(0.01)
    else:
        cx = ctx.px(ctx.rnd.choice((0.22, 0.78)))
        base = ctx.horizon + ctx.py(0.04)
    tall = min(ctx.py(0.34), base - ctx.py(0.16))
    bw, tw = ctx.px(0.045), ctx.px(0.028)
    top = base - tall
    bands = 6
    for i in range(bands):
        y0, y1 = top + tall * i // bands, top + tall * (i + 1) // bands
        w0 = tw + (bw - tw) * i / bands
        w1 = tw + (bw - tw) * (i + 1) / bands
        colour = (200, 40, 40) if i % 2 == 0 else (245, 245, 240)
        draw.polygon(
            [(cx - w0, y0), (cx + w0, y0), (cx + w1, y1), (cx - w1, y1)], fill=ctx.lit(colour)
        )
    lamp_h = ctx.py(0.06)
    lamp_box = (cx - tw, top - lamp_h, cx + tw, top)
    lit = beam or ctx.time in ("night", "dusk") or "storm" in ctx.weather
    draw.rectangle(
        lamp_box,
        fill=(255, 236, 140) if lit else ctx.lit((180, 200, 210)),
        outline=(40, 40, 40),
        width=max(1, ctx.height // 240),
    )
    draw.polygon(
        [
            (cx - tw - 4, top - lamp_h),
            (cx + tw + 4, top - lamp_h),
            (cx, top - lamp_h - ctx.py(0.04)),
        ],
        fill=(40, 40, 44),
    )
    if beam:
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        bd = ImageDraw.Draw(layer)
        ly = top - lamp_h // 2
        far = -ctx.px(0.1) if cx > ctx.width // 2 else ctx.width + ctx.px(0.1)
        bd.polygon(
            [(cx, ly - 2), (far, ly - ctx.py(0.12)), (far, ly + ctx.py(0.1)), (cx, ly + 2)],
            fill=(255, 244, 180, 110),
        )
        img.alpha_composite(layer)
        draw_glow(img, (cx, ly), ctx.py(0.04), (255, 240, 170))
    layout.boxes["lighthouse"] = (round(cx - bw), top - lamp_h, round(cx + bw), base)


def draw_boat(img: Image.Image, ctx: SceneContext, layout: SceneLayout) -> None:
    draw = ImageDraw.Draw(img)
    sea_top = ctx.horizon
    x = ctx.px(ctx.rnd.uniform(0.3, 0.6) + (0.08 if ctx.which == "end" else 0.0))
    y = sea_top + (ctx.floor - sea_top) // 3
    w, hh = ctx.px(0.14), ctx.py(0.05)
    draw.polygon(
        [(x - w // 2, y), (x + w // 2, y), (x + w // 3, y + hh), (x - w // 3, y + hh)],
        fill=ctx.lit((120, 60, 40)),
    )
    draw.line(
        (x, y, x, y - ctx.py(0.2)), fill=ctx.lit((70, 50, 40)), width=max(1, ctx.height // 180)
    )
    draw.polygon(
        [(x + 2, y - ctx.py(0.19)), (x + 2, y - ctx.py(0.02)), (x + w // 3, y - ctx.py(0.02))],
        fill=ctx.lit((236, 230, 214)),
    )
    layout.boxes["boat"] = (x - w // 2, y - ctx.py(0.2), x + w // 2, y + hh)


def draw_car(img: Image.Image, ctx: SceneContext, layout: SceneLayout) -> None:
    draw = ImageDraw.Draw(img)
    x = ctx.px(ctx.rnd.uniform(0.25, 0.6))
    y = ctx.horizon + (ctx.floor - ctx.horizon) * 2 // 3
    w, hh = ctx.px(0.2), ctx.py(0.07)
    body = ctx.lit(ctx.rnd.choice(((180, 40, 40), (40, 80, 160), (220, 190, 60))))
    draw.rounded_rectangle((x, y - hh, x + w, y), radius=hh // 3, fill=body)
    draw.rounded_rectangle(
        (x + w // 5, y - 2 * hh + hh // 4, x + w * 4 // 5, y - hh + 2), radius=hh // 3, fill=body
    )
    draw.rectangle((x + w // 4, y - 2 * hh + hh // 2, x + w * 3 // 4, y - hh), fill=(150, 190, 220))
    r = hh // 2
    for wx in (x + w // 5, x + w * 4 // 5):
        draw.ellipse((wx - r, y - r, wx + r, y + r), fill=(24, 24, 24))
    if ctx.time in ("night", "dusk"):
        draw_glow(img, (x + w, y - hh // 2), ctx.py(0.03), (255, 240, 200))
    layout.boxes["car"] = (x, y - 2 * hh, x + w, y + r)


def draw_street_lamp(
    img: Image.Image, ctx: SceneContext, layout: SceneLayout, indoor: bool
) -> None:
    draw = ImageDraw.Draw(img)
    x = ctx.px(ctx.rnd.choice((0.12, 0.88)))
    if indoor:
        base = ctx.py(0.66)
        top = base - ctx.py(0.32)
        draw.line((x, base, x, top), fill=(60, 50, 40), width=max(2, ctx.height // 120))
        shade = ctx.px(0.04)
        draw.polygon(
            [
                (x - shade // 2, top - ctx.py(0.06)),
                (x + shade // 2, top - ctx.py(0.06)),
                (x + shade, top),
                (x - shade, top),
            ],
            fill=(250, 220, 150),
        )
        draw_glow(img, (x, top), ctx.py(0.08), (255, 220, 150))
        layout.boxes["lamp"] = (x - shade, top - ctx.py(0.06), x + shade, base)
    else:
        base = ctx.horizon + (ctx.floor - ctx.horizon) // 2
        top = base - ctx.py(0.45)
        draw.line((x, base, x, top), fill=(40, 40, 46), width=max(2, ctx.height // 120))
        draw.line(
            (x, top, x + ctx.px(0.03), top), fill=(40, 40, 46), width=max(2, ctx.height // 120)
        )
        r = max(3, ctx.py(0.015))
        lx = x + ctx.px(0.03)
        draw.ellipse((lx - r, top, lx + r, top + 2 * r), fill=(255, 236, 170))
        draw_glow(img, (lx, top + r), ctx.py(0.06), (255, 220, 140))
        layout.boxes["lamp"] = (x - r, top, lx + r, base)


def draw_neon(img: Image.Image, ctx: SceneContext, layout: SceneLayout) -> None:
    draw = ImageDraw.Draw(img)
    colour = ctx.rnd.choice(((255, 60, 200), (60, 230, 255), (255, 80, 120)))
    x = ctx.px(ctx.rnd.uniform(0.55, 0.75))
    y = ctx.py(ctx.rnd.uniform(0.12, 0.22))
    w, hh = ctx.px(0.2), ctx.py(0.1)
    draw.rectangle((x, y, x + w, y + hh), fill=(30, 20, 40))
    draw_glow(img, (x + w // 2, y + hh // 2), hh, colour)
    draw = ImageDraw.Draw(img)
    width = max(2, ctx.height // 120)
    draw.rectangle((x, y, x + w, y + hh), outline=colour, width=width)
    bars = 4
    for i in range(bars):
        bx = x + w * (i + 0.5) // (bars + 0.5) + width * 2
        draw.line(
            (bx, y + hh // 4, bx, y + hh * 3 // 4),
            fill=mix(colour, (255, 255, 255), 0.4),
            width=width,
        )
    layout.boxes["neon"] = (x, y, x + w, y + hh)


def draw_weather(
    img: Image.Image, ctx: SceneContext, layout: SceneLayout, density: float = 1.0
) -> None:
    """Rain, snow and fog over the picture; ``density`` scales the number of drops."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    # The same drops in both keyframes: a dissolve between two rain patterns would look
    # doubled and cost the encoder a lot for nothing.
    drops = rng("drops", ctx.rnd.random())
    if "rain" in ctx.weather or "storm" in ctx.weather:
        length, slant = ctx.py(0.06), ctx.px(0.012)
        count = round(density * ctx.width * ctx.height / (1800 if "rain" in ctx.weather else 4000))
        width = max(1, ctx.height // 360)
        for _ in range(count):
            x, y = drops.randrange(-slant, ctx.width), drops.randrange(-length, ctx.height)
            draw.line((x, y, x - slant, y + length), fill=(200, 210, 235, 150), width=width)
        layout.boxes["rain"] = (0, 0, ctx.width, ctx.height)
    if "snow" in ctx.weather:
        for _ in range(ctx.width * ctx.height // 2500):
            x, y = drops.randrange(ctx.width), drops.randrange(ctx.height)
            r = max(1, ctx.height // 240) * drops.choice((1, 1, 2))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255, 220))
    if "fog" in ctx.weather:
        band = Image.new("RGBA", img.size, (0, 0, 0, 0))
        fd = ImageDraw.Draw(band)
        for y in range(ctx.height):
            a = round(150 * max(0.0, 1 - abs(y - ctx.horizon) / (ctx.height * 0.45)))
            fd.line((0, y, ctx.width, y), fill=(210, 214, 220, a))
        img.alpha_composite(band)
    img.alpha_composite(layer)

"""The backdrop of a keyframe: the sky, the horizon's far background and the ground, or,
indoors, a room with a window onto the sky.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from sparkle.adapters.scene_canvas import (
    SKIES,
    SceneContext,
    draw_gradient,
    mix,
    rng,
    scaled,
)
from sparkle.adapters.scene_layout import SceneLayout


def draw_sky(img: Image.Image, ctx: SceneContext, layout: SceneLayout) -> None:
    draw = ImageDraw.Draw(img)
    top, mid, low = SKIES[ctx.time]
    if "storm" in ctx.weather:
        top, mid, low = scaled(top, 0.55), scaled(mid, 0.6), scaled(low, 0.7)
    draw_gradient(draw, (0, 0, ctx.width, ctx.horizon), (top, mid, low))
    layout.boxes["sky"] = (0, 0, ctx.width, ctx.horizon)
    r = max(3, ctx.py(0.055))
    if ctx.time == "night":
        stars = rng("stars", ctx.rnd.random())
        # Clouds hide most stars when it rains or snows.
        cloudy = bool({"storm", "rain", "snow"} & set(ctx.weather))
        for _ in range(max(12, ctx.width // 16) // (4 if cloudy else 1)):
            x, y = stars.randrange(ctx.width), stars.randrange(max(1, int(ctx.horizon * 0.8)))
            s = max(1, ctx.height // 360) * stars.choice((1, 1, 2))
            draw.ellipse((x - s, y - s, x + s, y + s), fill=(235, 235, 210))
        if not ({"storm", "rain"} & set(ctx.weather)):
            cx, cy = ctx.px(ctx.rnd.uniform(0.62, 0.86)), ctx.py(ctx.rnd.uniform(0.1, 0.2))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(246, 242, 214))
            draw.ellipse((cx - r + r // 2, cy - r, cx + r + r // 2, cy + r), fill=top)
            layout.boxes["moon"] = (cx - r, cy - r, cx + r, cy + r)
            layout.elements.append("moon")
    elif ctx.time in ("dusk", "dawn", "day") and "storm" not in ctx.weather:
        cx = ctx.px(ctx.rnd.uniform(0.2, 0.8))
        if ctx.time == "day":
            cy, colour = ctx.py(0.14), (255, 250, 220)
        else:
            cy, colour = (
                ctx.horizon - r // 3,
                (255, 120, 60) if ctx.time == "dusk" else (255, 210, 120),
            )
        glow = mix(colour, low, 0.5)
        draw.ellipse((cx - 2 * r, cy - 2 * r, cx + 2 * r, cy + 2 * r), fill=glow)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        layout.boxes["sun"] = (cx - r, cy - r, cx + r, cy + r)
        layout.elements.append("sun")
    if ctx.time == "overcast" or {"storm", "rain", "snow"} & set(ctx.weather):
        grey = (70, 72, 82) if "storm" in ctx.weather else mix(mid, (150, 150, 156), 0.6)
        for _ in range(7):
            cx, cy = ctx.px(ctx.rnd.uniform(-0.1, 1.1)), ctx.py(ctx.rnd.uniform(0.02, 0.18))
            w, h = ctx.px(ctx.rnd.uniform(0.15, 0.3)), ctx.py(ctx.rnd.uniform(0.05, 0.1))
            draw.ellipse((cx - w, cy - h, cx + w, cy + h), fill=mix(grey, top, 0.15))
        if "storm" in ctx.weather and ctx.which == "end":
            x = ctx.px(ctx.rnd.uniform(0.2, 0.8))
            points = [(x, ctx.py(0.08))]
            for step in range(1, 5):
                points.append(
                    (
                        x + ctx.px(ctx.rnd.uniform(-0.03, 0.03)),
                        ctx.py(0.08) + step * (ctx.horizon - ctx.py(0.08)) // 6,
                    )
                )
            draw.line(points, fill=(240, 240, 255), width=max(2, ctx.height // 180))


def draw_far(img: Image.Image, ctx: SceneContext, places: list[str], layout: SceneLayout) -> None:
    """Background on the horizon: mountains, a city skyline, a tree line or dunes."""
    draw = ImageDraw.Draw(img)
    h = ctx.horizon
    if "mountains" in places:
        x = -ctx.px(0.1)
        while x < ctx.width:
            w = ctx.px(ctx.rnd.uniform(0.18, 0.32))
            peak = h - ctx.py(ctx.rnd.uniform(0.18, 0.32))
            rock = ctx.lit((96, 100, 118))
            draw.polygon([(x, h), (x + w // 2, peak), (x + w, h)], fill=rock)
            cap = peak + (h - peak) // 4
            draw.polygon(
                [(x + w // 2, peak), (x + w // 2 - w // 8, cap), (x + w // 2 + w // 8, cap)],
                fill=ctx.lit((240, 242, 248)),
            )
            x += w // 2 + ctx.px(ctx.rnd.uniform(0.02, 0.08))
        layout.boxes["mountains"] = (0, h - ctx.py(0.32), ctx.width, h)
    if "city" in places or "rooftop" in places:
        x = 0
        top = h
        lit_windows = ctx.time in ("night", "dusk", "overcast") or "storm" in ctx.weather
        while x < ctx.width:
            w = ctx.px(ctx.rnd.uniform(0.04, 0.09))
            tall = ctx.py(ctx.rnd.uniform(0.1, 0.32))
            top = min(top, h - tall)
            body = ctx.lit((70, 78, 96)) if ctx.time != "night" else (26, 30, 48)
            draw.rectangle((x, h - tall, x + w, h), fill=body)
            if lit_windows:
                step = max(3, ctx.height // 60)
                for wy in range(h - tall + step, h - step, step * 2):
                    for wx in range(x + step // 2, x + w - step, step * 2):
                        if ctx.rnd.random() < 0.45:
                            draw.rectangle(
                                (wx, wy, wx + step - 1, wy + step - 1), fill=(255, 214, 120)
                            )
            x += w + ctx.px(ctx.rnd.uniform(0.0, 0.015))
        layout.boxes["city"] = (0, top, ctx.width, h)
    if "forest" in places:
        for _ in range(max(12, ctx.width // 40)):
            x = ctx.rnd.randrange(ctx.width)
            tall = ctx.py(ctx.rnd.uniform(0.08, 0.2))
            w = tall // 3
            green = ctx.lit((34, 92, 52))
            draw.polygon([(x - w, h), (x, h - tall), (x + w, h)], fill=green)
        layout.boxes["forest"] = (0, h - ctx.py(0.2), ctx.width, h)
    if "desert" in places:
        for i in range(3):
            cx = ctx.px(ctx.rnd.uniform(0, 1))
            w, tall = ctx.px(ctx.rnd.uniform(0.3, 0.6)), ctx.py(0.04 + 0.03 * i)
            draw.ellipse((cx - w, h - tall, cx + w, h + tall), fill=ctx.lit((214, 170, 110)))


def draw_ground(
    img: Image.Image, ctx: SceneContext, places: list[str], layout: SceneLayout
) -> None:
    draw = ImageDraw.Draw(img)
    h, w, bottom = ctx.horizon, ctx.width, ctx.height
    if "sea" in places:
        # Water keeps its blue under any light: half the scene's light falls on it.
        deep = mix((22, 66, 124), ctx.lit((22, 66, 124)), 0.5)
        near = mix((40, 100, 156), ctx.lit((40, 100, 156)), 0.5)
        if "storm" in ctx.weather:
            deep, near = scaled(deep, 0.8), scaled(near, 0.8)
        draw_gradient(draw, (0, h, w, bottom), (deep, near))
        foam = mix(near, (230, 236, 240), 0.55 if "storm" in ctx.weather else 0.35)
        rows = 9 if "storm" in ctx.weather else 6
        for i in range(rows):
            y = h + (bottom - h) * (i + 1) // (rows + 1)
            amp = max(2, (y - h) // 12)
            phase = ctx.rnd.uniform(0, math.tau)
            points = [
                (x, y + round(amp * math.sin(x / max(8, w / 14) + phase)))
                for x in range(0, w + 8, 8)
            ]
            draw.line(points, fill=foam, width=max(1, ctx.height // 240))
        layout.boxes["sea"] = (0, h, w, bottom)
        if "cliff" in layout.elements or (ctx.rnd.random() < 0.5 and "lighthouse" in places):
            side = ctx.rnd.choice((0, 1))
            cw = ctx.px(0.42)
            x0 = 0 if side == 0 else w - cw
            top = h - ctx.py(0.08)
            rock = ctx.lit((70, 62, 58))
            pts = (
                [(0, top), (cw - ctx.px(0.06), top), (cw, bottom), (0, bottom)]
                if side == 0
                else [(w, top), (w - cw + ctx.px(0.06), top), (w - cw, bottom), (w, bottom)]
            )
            draw.polygon(pts, fill=rock)
            draw.line(pts[:2], fill=ctx.lit((60, 110, 60)), width=max(2, ctx.height // 90))
            layout.boxes["cliff"] = (x0, top, x0 + cw, bottom)
    elif "desert" in places:
        draw_gradient(draw, (0, h, w, bottom), (ctx.lit((222, 184, 124)), ctx.lit((196, 150, 96))))
        layout.boxes["desert"] = (0, h, w, bottom)
    elif "street" in places:
        draw_gradient(draw, (0, h, w, bottom), (ctx.lit((70, 72, 78)), ctx.lit((50, 52, 58))))
        draw.polygon(
            [
                (w // 2 - ctx.px(0.03), h),
                (w // 2 + ctx.px(0.03), h),
                (w // 2 + ctx.px(0.45), bottom),
                (w // 2 - ctx.px(0.45), bottom),
            ],
            fill=ctx.lit((40, 42, 48)),
        )
        for i in range(5):
            t0, t1 = (i + 0.2) / 5, (i + 0.6) / 5
            y0, y1 = h + round((bottom - h) * t0**1.5), h + round((bottom - h) * t1**1.5)
            draw.line(
                (w // 2, y0, w // 2, y1),
                fill=(230, 210, 110),
                width=max(1, round(ctx.height / 140 * (0.3 + t1))),
            )
        layout.boxes["street"] = (0, h, w, bottom)
    elif "forest" in places:
        draw_gradient(draw, (0, h, w, bottom), (ctx.lit((52, 96, 52)), ctx.lit((36, 70, 40))))
    elif "mountains" in places:
        draw_gradient(draw, (0, h, w, bottom), (ctx.lit((96, 120, 84)), ctx.lit((70, 92, 62))))
    else:
        draw_gradient(draw, (0, h, w, bottom), (ctx.lit((110, 126, 86)), ctx.lit((80, 96, 62))))
    if "rooftop" in places:
        top = ctx.horizon + ctx.py(0.06)
        draw_gradient(draw, (0, top, w, bottom), (ctx.lit((92, 90, 96)), ctx.lit((62, 60, 66))))
        draw.rectangle((0, top - ctx.py(0.04), w, top), fill=ctx.lit((120, 114, 110)))
        for x in range(0, w, ctx.px(0.08)):
            draw.line((x, top - ctx.py(0.04), x, top), fill=ctx.lit((90, 86, 84)))
        if "rain" in ctx.weather:
            for _ in range(6):
                px, py = ctx.px(ctx.rnd.uniform(0, 1)), ctx.rnd.randrange(top + 4, bottom)
                pw = ctx.px(ctx.rnd.uniform(0.04, 0.1))
                draw.ellipse(
                    (px - pw, py - pw // 5, px + pw, py + pw // 5), fill=ctx.lit((120, 130, 150))
                )
        layout.boxes["rooftop"] = (0, top - ctx.py(0.04), w, bottom)
    if "bridge" in places:
        deck = h + ctx.py(0.02)
        colour = ctx.lit((150, 60, 48))
        draw.rectangle((0, deck, w, deck + ctx.py(0.025)), fill=colour)
        for tx in (ctx.px(0.25), ctx.px(0.75)):
            draw.rectangle(
                (tx - ctx.px(0.012), deck - ctx.py(0.3), tx + ctx.px(0.012), deck + 1), fill=colour
            )
        for x0, x1 in ((0, ctx.px(0.25)), (ctx.px(0.25), ctx.px(0.75)), (ctx.px(0.75), w)):
            mid = (x0 + x1) // 2
            sag = deck - ctx.py(0.05) if x1 - x0 > w // 3 else deck - ctx.py(0.15)
            draw.line(
                [
                    (x0, deck - ctx.py(0.3) if x0 else deck - ctx.py(0.12)),
                    (mid, sag),
                    (x1, deck - ctx.py(0.3) if x1 < w else deck - ctx.py(0.12)),
                ],
                fill=colour,
                width=max(1, ctx.height // 200),
            )
        layout.boxes["bridge"] = (0, deck - ctx.py(0.3), w, deck + ctx.py(0.025))


def draw_room(img: Image.Image, ctx: SceneContext, layout: SceneLayout, lamp: bool) -> None:
    """An interior: back wall, floor, a window onto the sky, and a lamp."""
    draw = ImageDraw.Draw(img)
    w, bottom = ctx.width, ctx.height
    floor_y = ctx.py(0.66)
    warm = lamp or ctx.time in ("night", "dusk")
    wall = (150, 118, 92) if warm else (176, 170, 160)
    if ctx.time == "night":
        wall = scaled(wall, 0.72)
    draw_gradient(draw, (0, 0, w, floor_y), (scaled(wall, 0.8), wall))
    draw_gradient(draw, (0, floor_y, w, bottom), (scaled(wall, 0.55), scaled(wall, 0.4)))
    draw.line((0, floor_y, w, floor_y), fill=scaled(wall, 0.45), width=max(1, ctx.height // 200))
    wx = ctx.px(ctx.rnd.choice((0.08, 0.62)))
    ww, wy, wh = ctx.px(0.28), ctx.py(0.1), ctx.py(0.36)
    sky = SKIES[ctx.time]
    draw_gradient(draw, (wx, wy, wx + ww, wy + wh), sky)
    if ctx.time == "night":
        for _ in range(6):
            sx, sy = wx + ctx.rnd.randrange(ww), wy + ctx.rnd.randrange(wh)
            draw.point((sx, sy), fill=(240, 240, 220))
    frame = max(2, ctx.height // 90)
    draw.rectangle((wx, wy, wx + ww, wy + wh), outline=(70, 52, 40), width=frame)
    draw.line((wx + ww // 2, wy, wx + ww // 2, wy + wh), fill=(70, 52, 40), width=frame)
    draw.line((wx, wy + wh // 2, wx + ww, wy + wh // 2), fill=(70, 52, 40), width=frame)
    layout.boxes["window"] = (wx, wy, wx + ww, wy + wh)
    if "window" not in layout.elements:
        layout.elements.append("window")
    if "rain" in ctx.weather:
        for _ in range(20):
            sx, sy = wx + ctx.rnd.randrange(ww), wy + ctx.rnd.randrange(wh)
            draw.line((sx, sy, sx - 2, sy + ctx.py(0.03)), fill=(190, 200, 220))
    layout.boxes["room"] = (0, 0, w, bottom)

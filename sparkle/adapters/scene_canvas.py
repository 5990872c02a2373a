"""The drawing context of a keyframe: its size and horizon, the light of its time of day,
and the seeded randomness that places things the same way for the same plan and seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from sparkle.adapters.scene_layout import RGB, Box

#: Sky colours (top, middle, horizon) per time of day.
SKIES: dict[str, tuple[RGB, RGB, RGB]] = {
    "night": ((14, 20, 52), (28, 38, 88), (52, 66, 120)),
    "dusk": ((52, 40, 104), (196, 92, 112), (252, 164, 84)),
    "dawn": ((104, 136, 200), (236, 176, 168), (255, 214, 150)),
    "day": ((62, 132, 222), (120, 178, 236), (186, 222, 246)),
    "overcast": ((112, 118, 130), (150, 154, 162), (182, 186, 192)),
}

#: Light on the ground per time of day: (brightness factor, tint colour, tint amount).
LIGHT: dict[str, tuple[float, RGB, float]] = {
    "night": (0.45, (40, 60, 140), 0.35),
    "dusk": (0.75, (250, 140, 90), 0.25),
    "dawn": (0.9, (255, 200, 170), 0.2),
    "day": (1.0, (255, 255, 255), 0.0),
    "overcast": (0.8, (150, 155, 165), 0.25),
}


def rng(*parts: object) -> random.Random:
    """A generator seeded by a SHA-256 of ``parts`` (stable across processes)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """The colour ``t`` (0-1) of the way from ``a`` to ``b``."""
    t = min(max(t, 0.0), 1.0)
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def scaled(c: RGB, k: float) -> RGB:
    """``c`` with its brightness times ``k``."""
    return (min(255, round(c[0] * k)), min(255, round(c[1] * k)), min(255, round(c[2] * k)))


@dataclass
class SceneContext:
    """What every layer of one keyframe is drawn with."""

    width: int
    height: int
    #: Bottom of the picture that matters (the caption band lies below).
    floor: int
    horizon: int
    time: str
    weather: list[str]
    rnd: random.Random
    which: str
    #: What ``rnd`` is seeded from, with each element's name: an element is placed the same
    #: way in both keyframes whatever else was drawn before it.
    base: str = ""

    def reseed(self, element: str) -> SceneContext:
        """Seed ``rnd`` for drawing ``element``; return self."""
        self.rnd = rng(self.base, element)
        return self

    def lit(self, colour: RGB) -> RGB:
        """``colour`` under the light of the time of day."""
        factor, tint, amount = LIGHT[self.time]
        return mix(scaled(colour, factor), scaled(tint, factor), amount)

    def px(self, fx: float) -> int:
        """The fraction ``fx`` of the width, in pixels."""
        return round(self.width * fx)

    def py(self, fy: float) -> int:
        """The fraction ``fy`` of the height, in pixels."""
        return round(self.height * fy)


def draw_gradient(draw: ImageDraw.ImageDraw, box: Box, stops: tuple[RGB, ...]) -> None:
    """Fill ``box`` top to bottom through the colours ``stops``."""
    x0, y0, x1, y1 = box
    span = max(1, y1 - y0 - 1)
    for y in range(y0, y1):
        t = (y - y0) / span * (len(stops) - 1)
        i = min(int(t), len(stops) - 2)
        draw.line((x0, y, x1, y), fill=mix(stops[i], stops[i + 1], t - i))


def draw_glow(img: Image.Image, centre: tuple[int, int], radius: int, colour: RGB) -> None:
    """A soft round light: concentric translucent discs."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cx, cy = centre
    for i in range(6, 0, -1):
        r = radius * i // 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*colour, 22))
    img.alpha_composite(layer)

"""Scene composition: a keyframe picture drawn from the words of a shot.

The words of the shot (setting, visual description, the frame's prompt, and as weak hints
the plan's title and earlier shots) choose elements from a fixed vocabulary
(:data:`VOCABULARY`, documented in ``docs/MEDIA.md``): a time of day and sky, weather, a
place, objects, and the plan's characters as figures. Everything is drawn with Pillow in
layers (sky, far background, place, objects, figures, weather) and placed with a random
generator seeded from the plan's seed, so the same plan and seed give the same picture.

:func:`compose` returns the picture and a :class:`SceneLayout`: which elements were drawn,
their boxes, and for every face where its mouth is. The lipsync stage draws moving mouths
there; tests check that a lighthouse is where the layout says.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from sparkle.schemas import CharacterSpec, MoviePlan, ShotSpec

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

#: Vocabulary of scene elements: element -> (kind, words that select it). A word matches
#: as a whole word or as the start of one ("raining" matches "rain"); several words may
#: select the same element. Kinds: ``time`` (one per picture), ``weather``, ``place``
#: (the first place found is the main one), ``object``.
VOCABULARY: dict[str, tuple[str, tuple[str, ...]]] = {
    # time of day and sky
    "night": ("time", ("night", "midnight", "moon", "starry", "stars", "dark", "neon")),
    "dusk": ("time", ("dusk", "sunset", "evening", "twilight", "golden hour", "sundown")),
    "dawn": ("time", ("dawn", "sunrise", "daybreak", "morning")),
    "day": ("time", ("day", "noon", "afternoon", "sunny", "sunlit", "bright", "sun")),
    "overcast": ("time", ("overcast", "cloudy", "grey", "gray", "gloomy", "drizzle")),
    # weather
    "rain": ("weather", ("rain", "raining", "rainy", "downpour", "drizzle", "wet")),
    "snow": ("weather", ("snow", "snowy", "snowing", "blizzard", "frost", "winter")),
    "fog": ("weather", ("fog", "foggy", "mist", "misty", "haze", "hazy", "smoke")),
    "storm": ("weather", ("storm", "stormy", "thunder", "lightning", "tempest", "gale")),
    # places
    "sea": (
        "place",
        (
            "sea",
            "ocean",
            "waves",
            "wave",
            "coast",
            "shore",
            "beach",
            "bay",
            "harbor",
            "harbour",
            "cliff",
            "tide",
            "sail",
        ),
    ),
    "lighthouse": ("place", ("lighthouse",)),
    "rooftop": ("place", ("rooftop", "roof", "terrace", "balcony")),
    "city": (
        "place",
        ("city", "skyline", "downtown", "skyscraper", "town", "metropolis", "buildings"),
    ),
    "street": (
        "place",
        ("street", "road", "alley", "avenue", "sidewalk", "crossing", "highway", "parking"),
    ),
    "room": (
        "place",
        (
            "room",
            "interior",
            "inside",
            "indoors",
            "kitchen",
            "bedroom",
            "office",
            "apartment",
            "house",
            "hall",
            "library",
            "studio",
            "bar",
            "cafe",
            "table",
            "desk",
            "attic",
            "cabin",
        ),
    ),
    "forest": (
        "place",
        ("forest", "woods", "wood", "trees", "tree", "jungle", "grove", "park", "garden"),
    ),
    "mountains": (
        "place",
        ("mountain", "mountains", "peak", "peaks", "alps", "hills", "valley", "summit"),
    ),
    "desert": ("place", ("desert", "dunes", "dune", "sand", "sahara", "canyon")),
    "bridge": ("place", ("bridge", "river", "viaduct", "canal")),
    # objects
    "boat": ("object", ("boat", "ship", "sailboat", "yacht", "ferry", "vessel", "sailing")),
    "car": ("object", ("car", "taxi", "cab", "truck", "van", "vehicle", "driving")),
    "lamp": (
        "object",
        (
            "lamp",
            "lantern",
            "streetlight",
            "candle",
            "lens",
            "glow",
            "glowing",
            "beam",
            "light",
            "lights",
        ),
    ),
    "window": ("object", ("window", "windows", "glass", "pane")),
    "neon": ("object", ("neon", "sign", "signs", "billboard")),
}

#: Kinds of place that are drawn indoors.
INDOOR_PLACES = frozenset({"room"})

#: Mood words that decide the time of day when no time word is found: word -> time.
MOOD_TIMES: tuple[tuple[str, str], ...] = (
    ("sad", "overcast"),
    ("lonely", "overcast"),
    ("quiet", "dusk"),
    ("warm", "dusk"),
    ("romantic", "dusk"),
    ("happy", "day"),
    ("cheerful", "day"),
    ("tense", "night"),
    ("scary", "night"),
    ("mysterious", "night"),
    ("calm", "dawn"),
    ("hope", "dawn"),
)

#: Places for a shot whose words name none, by mood: chosen from the seed.
FALLBACK_PLACES = ("mountains", "forest", "city", "sea")

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

#: Skin tones and hair colours for characters; a character keeps its own across shots.
SKIN_TONES: tuple[RGB, ...] = (
    (241, 200, 170),
    (224, 172, 136),
    (198, 140, 100),
    (160, 104, 72),
    (112, 74, 52),
)
HAIR_COLOURS: tuple[RGB, ...] = (
    (40, 30, 24),
    (92, 60, 36),
    (170, 120, 60),
    (210, 200, 190),
    (150, 40, 30),
    (20, 20, 24),
)
CLOTHES: tuple[RGB, ...] = (
    (60, 80, 140),
    (140, 50, 50),
    (50, 110, 80),
    (110, 90, 60),
    (90, 60, 120),
    (70, 70, 80),
)

#: Colour of lips drawn on a face, and of the inside of an open mouth.
LIP_COLOUR: RGB = (150, 62, 66)
MOUTH_INSIDE: RGB = (60, 16, 22)

#: Brightness of the end keyframe relative to the start, per time of day (light changes
#: as the shot goes on: dawn brightens, dusk darkens).
END_LIGHT_SHIFT: dict[str, float] = {"dawn": 1.04, "day": 0.98, "dusk": 0.95, "night": 0.97}

#: Words of a frame prompt meaning the camera is close on a face.
CLOSE_WORDS = ("close-up", "closeup", "close up", "portrait", "face", "in close")


@dataclass
class Face:
    """Where a character's face is in a keyframe, in pixels."""

    character_id: str
    #: Centre and radius of the head.
    cx: int
    cy: int
    r: int
    #: Centre, width and height of the mouth at its widest open.
    mouth_x: int
    mouth_y: int
    mouth_w: int
    mouth_h: int
    skin: RGB
    lip: RGB = LIP_COLOUR


@dataclass
class SceneLayout:
    """What a keyframe shows: the elements drawn, their boxes and the faces."""

    time: str
    elements: list[str]
    framing: str
    boxes: dict[str, Box] = field(default_factory=dict)
    faces: list[Face] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SceneLayout:
        """Read a record written by :meth:`as_json`."""
        faces = [
            Face(**{**f, "skin": tuple(f["skin"]), "lip": tuple(f["lip"])})
            for f in data.get("faces", [])
        ]
        boxes = {k: (v[0], v[1], v[2], v[3]) for k, v in data.get("boxes", {}).items()}
        return cls(data["time"], list(data["elements"]), data["framing"], boxes, faces)


def speaking_faces(
    layouts: dict[str, SceneLayout], keyframe: str | None, speakers: set[str]
) -> list[Face]:
    """The faces of ``speakers`` in the keyframe at path ``keyframe`` (none if unknown)."""
    layout = layouts.get(keyframe or "")
    return [face for face in layout.faces if face.character_id in speakers] if layout else []


def rng(*parts: object) -> random.Random:
    """A generator seeded by a SHA-256 of ``parts`` (stable across processes)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


#: Endings a vocabulary word may carry and still match ("raining", "stormy", "towers").
WORD_ENDINGS = r"(?:s|es|ing|ed|y|ly)?"


def _word_re(word: str) -> re.Pattern[str]:
    body = re.escape(word).replace(r"\ ", r"[\s-]+")
    return re.compile(rf"(?<![a-z]){body}{WORD_ENDINGS}(?![a-z])")


_PATTERNS = {element: [_word_re(w) for w in words] for element, (_, words) in VOCABULARY.items()}


def find_elements(text: str) -> list[str]:
    """Vocabulary elements named in ``text``, in the order of the vocabulary."""
    lowered = text.lower()
    return [e for e, patterns in _PATTERNS.items() if any(p.search(lowered) for p in patterns)]


def _kind(element: str) -> str:
    return VOCABULARY[element][0]


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    t = min(max(t, 0.0), 1.0)
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _scale(c: RGB, k: float) -> RGB:
    return (min(255, round(c[0] * k)), min(255, round(c[1] * k)), min(255, round(c[2] * k)))


@dataclass
class _Ctx:
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

    def reseed(self, element: str) -> _Ctx:
        """Seed ``rnd`` for drawing ``element``; return self."""
        self.rnd = rng(self.base, element)
        return self

    def lit(self, colour: RGB) -> RGB:
        """``colour`` under the light of the time of day."""
        factor, tint, amount = LIGHT[self.time]
        return _mix(_scale(colour, factor), _scale(tint, factor), amount)

    def px(self, fx: float) -> int:
        return round(self.width * fx)

    def py(self, fy: float) -> int:
        return round(self.height * fy)


def characters_in(plan: MoviePlan, shot: ShotSpec, text: str) -> list[CharacterSpec]:
    """Characters a frame shows: named (by id or a name word) in ``text``, or speaking."""
    lowered = text.lower()
    found: list[CharacterSpec] = []
    for character in plan.characters:
        words = [character.id.lower()] + [
            w for w in re.findall(r"[a-z]+", character.name.lower()) if len(w) >= 3
        ]
        if any(re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", lowered) for w in words):
            found.append(character)
    for line in shot.dialogue:
        character = plan.character(line.character_id)
        if character not in found:
            found.append(character)
    return found


def _shot_time(plan: MoviePlan, shot: ShotSpec) -> str:
    """Time of day: the shot's words, else the title, earlier shots, mood, the seed."""
    text = " ".join(
        [
            shot.setting or "",
            shot.visual_description,
            shot.start_frame_prompt,
            shot.end_frame_prompt,
        ]
    )
    for source in (text, plan.title):
        times = [e for e in find_elements(source) if _kind(e) == "time"]
        if times:
            return times[0]
    index = next((i for i, s in enumerate(plan.shots) if s.id == shot.id), 0)
    for earlier in reversed(plan.shots[:index]):
        words = " ".join(
            [
                earlier.setting or "",
                earlier.visual_description,
                earlier.start_frame_prompt,
                earlier.end_frame_prompt,
            ]
        )
        times = [e for e in find_elements(words) if _kind(e) == "time"]
        if times:
            return times[0]
    lowered = text.lower()
    for word, time in MOOD_TIMES:
        if word in lowered:
            return time
    if "storm" in find_elements(text):
        return "overcast"
    return rng("time", plan.seed, shot.id).choice(("day", "day", "dusk", "dawn"))


def _gradient(draw: ImageDraw.ImageDraw, box: Box, stops: tuple[RGB, ...]) -> None:
    x0, y0, x1, y1 = box
    span = max(1, y1 - y0 - 1)
    for y in range(y0, y1):
        t = (y - y0) / span * (len(stops) - 1)
        i = min(int(t), len(stops) - 2)
        draw.line((x0, y, x1, y), fill=_mix(stops[i], stops[i + 1], t - i))


def _sky(img: Image.Image, ctx: _Ctx, layout: SceneLayout) -> None:
    draw = ImageDraw.Draw(img)
    top, mid, low = SKIES[ctx.time]
    if "storm" in ctx.weather:
        top, mid, low = _scale(top, 0.55), _scale(mid, 0.6), _scale(low, 0.7)
    _gradient(draw, (0, 0, ctx.width, ctx.horizon), (top, mid, low))
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
        glow = _mix(colour, low, 0.5)
        draw.ellipse((cx - 2 * r, cy - 2 * r, cx + 2 * r, cy + 2 * r), fill=glow)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        layout.boxes["sun"] = (cx - r, cy - r, cx + r, cy + r)
        layout.elements.append("sun")
    if ctx.time == "overcast" or {"storm", "rain", "snow"} & set(ctx.weather):
        grey = (70, 72, 82) if "storm" in ctx.weather else _mix(mid, (150, 150, 156), 0.6)
        for _ in range(7):
            cx, cy = ctx.px(ctx.rnd.uniform(-0.1, 1.1)), ctx.py(ctx.rnd.uniform(0.02, 0.18))
            w, h = ctx.px(ctx.rnd.uniform(0.15, 0.3)), ctx.py(ctx.rnd.uniform(0.05, 0.1))
            draw.ellipse((cx - w, cy - h, cx + w, cy + h), fill=_mix(grey, top, 0.15))
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


def _far(img: Image.Image, ctx: _Ctx, places: list[str], layout: SceneLayout) -> None:
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


def _ground(img: Image.Image, ctx: _Ctx, places: list[str], layout: SceneLayout) -> None:
    draw = ImageDraw.Draw(img)
    h, w, bottom = ctx.horizon, ctx.width, ctx.height
    if "sea" in places:
        # Water keeps its blue under any light: half the scene's light falls on it.
        deep = _mix((22, 66, 124), ctx.lit((22, 66, 124)), 0.5)
        near = _mix((40, 100, 156), ctx.lit((40, 100, 156)), 0.5)
        if "storm" in ctx.weather:
            deep, near = _scale(deep, 0.8), _scale(near, 0.8)
        _gradient(draw, (0, h, w, bottom), (deep, near))
        foam = _mix(near, (230, 236, 240), 0.55 if "storm" in ctx.weather else 0.35)
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
        _gradient(draw, (0, h, w, bottom), (ctx.lit((222, 184, 124)), ctx.lit((196, 150, 96))))
        layout.boxes["desert"] = (0, h, w, bottom)
    elif "street" in places:
        _gradient(draw, (0, h, w, bottom), (ctx.lit((70, 72, 78)), ctx.lit((50, 52, 58))))
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
        _gradient(draw, (0, h, w, bottom), (ctx.lit((52, 96, 52)), ctx.lit((36, 70, 40))))
    elif "mountains" in places:
        _gradient(draw, (0, h, w, bottom), (ctx.lit((96, 120, 84)), ctx.lit((70, 92, 62))))
    else:
        _gradient(draw, (0, h, w, bottom), (ctx.lit((110, 126, 86)), ctx.lit((80, 96, 62))))
    if "rooftop" in places:
        top = ctx.horizon + ctx.py(0.06)
        _gradient(draw, (0, top, w, bottom), (ctx.lit((92, 90, 96)), ctx.lit((62, 60, 66))))
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


def _room(img: Image.Image, ctx: _Ctx, layout: SceneLayout, lamp: bool) -> None:
    """An interior: back wall, floor, a window onto the sky, and a lamp."""
    draw = ImageDraw.Draw(img)
    w, bottom = ctx.width, ctx.height
    floor_y = ctx.py(0.66)
    warm = lamp or ctx.time in ("night", "dusk")
    wall = (150, 118, 92) if warm else (176, 170, 160)
    if ctx.time == "night":
        wall = _scale(wall, 0.72)
    _gradient(draw, (0, 0, w, floor_y), (_scale(wall, 0.8), wall))
    _gradient(draw, (0, floor_y, w, bottom), (_scale(wall, 0.55), _scale(wall, 0.4)))
    draw.line((0, floor_y, w, floor_y), fill=_scale(wall, 0.45), width=max(1, ctx.height // 200))
    wx = ctx.px(ctx.rnd.choice((0.08, 0.62)))
    ww, wy, wh = ctx.px(0.28), ctx.py(0.1), ctx.py(0.36)
    sky = SKIES[ctx.time]
    _gradient(draw, (wx, wy, wx + ww, wy + wh), sky)
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


def _glow(img: Image.Image, centre: tuple[int, int], radius: int, colour: RGB) -> None:
    """A soft round light: concentric translucent discs."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cx, cy = centre
    for i in range(6, 0, -1):
        r = radius * i // 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*colour, 22))
    img.alpha_composite(layer)


def _lighthouse(img: Image.Image, ctx: _Ctx, layout: SceneLayout, beam: bool) -> None:
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
        _glow(img, (cx, ly), ctx.py(0.04), (255, 240, 170))
    layout.boxes["lighthouse"] = (round(cx - bw), top - lamp_h, round(cx + bw), base)


def _boat(img: Image.Image, ctx: _Ctx, layout: SceneLayout) -> None:
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


def _car(img: Image.Image, ctx: _Ctx, layout: SceneLayout) -> None:
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
        _glow(img, (x + w, y - hh // 2), ctx.py(0.03), (255, 240, 200))
    layout.boxes["car"] = (x, y - 2 * hh, x + w, y + r)


def _street_lamp(img: Image.Image, ctx: _Ctx, layout: SceneLayout, indoor: bool) -> None:
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
        _glow(img, (x, top), ctx.py(0.08), (255, 220, 150))
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
        _glow(img, (lx, top + r), ctx.py(0.06), (255, 220, 140))
        layout.boxes["lamp"] = (x - r, top, lx + r, base)


def _neon(img: Image.Image, ctx: _Ctx, layout: SceneLayout) -> None:
    draw = ImageDraw.Draw(img)
    colour = ctx.rnd.choice(((255, 60, 200), (60, 230, 255), (255, 80, 120)))
    x = ctx.px(ctx.rnd.uniform(0.55, 0.75))
    y = ctx.py(ctx.rnd.uniform(0.12, 0.22))
    w, hh = ctx.px(0.2), ctx.py(0.1)
    draw.rectangle((x, y, x + w, y + hh), fill=(30, 20, 40))
    _glow(img, (x + w // 2, y + hh // 2), hh, colour)
    draw = ImageDraw.Draw(img)
    width = max(2, ctx.height // 120)
    draw.rectangle((x, y, x + w, y + hh), outline=colour, width=width)
    bars = 4
    for i in range(bars):
        bx = x + w * (i + 0.5) // (bars + 0.5) + width * 2
        draw.line(
            (bx, y + hh // 4, bx, y + hh * 3 // 4),
            fill=_mix(colour, (255, 255, 255), 0.4),
            width=width,
        )
    layout.boxes["neon"] = (x, y, x + w, y + hh)


def _weather(img: Image.Image, ctx: _Ctx, layout: SceneLayout, density: float = 1.0) -> None:
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


def _look(character: CharacterSpec, seed: int) -> tuple[RGB, RGB, RGB]:
    r = rng("look", seed, character.id, character.name)
    return r.choice(SKIN_TONES), r.choice(HAIR_COLOURS), r.choice(CLOTHES)


def _figure_close(
    img: Image.Image, ctx: _Ctx, character: CharacterSpec, seed: int, cx: int, r: int
) -> Face:
    """Head and shoulders large enough to see the mouth."""
    draw = ImageDraw.Draw(img)
    skin, hair, clothes = _look(character, seed)
    # Faces are lit for the camera: only half the scene's light falls on them.
    skin, hair, clothes = (_mix(c, ctx.lit(c), 0.5) for c in (skin, hair, clothes))
    cy = ctx.floor - round(r * 2.25)
    # shoulders and neck
    draw.rounded_rectangle(
        (cx - round(r * 1.9), cy + round(r * 1.45), cx + round(r * 1.9), ctx.floor + r),
        radius=r,
        fill=clothes,
    )
    draw.rectangle(
        (cx - r // 3, cy + r // 2, cx + r // 3, cy + round(r * 1.5)), fill=_scale(skin, 0.85)
    )
    # hair behind, head, hair on top
    draw.ellipse(
        (cx - round(r * 1.08), cy - round(r * 1.12), cx + round(r * 1.08), cy + round(r * 0.7)),
        fill=hair,
    )
    draw.ellipse(
        (cx - round(r * 0.85), cy - r, cx + round(r * 0.85), cy + round(r * 1.05)), fill=skin
    )
    draw.chord(
        (cx - round(r * 0.9), cy - round(r * 1.1), cx + round(r * 0.9), cy + round(r * 0.1)),
        180,
        360,
        fill=hair,
    )
    # eyes, brows, nose
    ey, ex, er = cy + round(r * 0.12), round(r * 0.36), max(2, round(r * 0.09))
    for side in (-1, 1):
        x = cx + side * ex
        draw.ellipse((x - er * 2, ey - er, x + er * 2, ey + er), fill=(250, 250, 250))
        draw.ellipse((x - er, ey - er, x + er, ey + er), fill=(40, 34, 30))
        draw.line(
            (x - er * 2, ey - er * 3, x + er * 2, ey - er * 3 - side * 0),
            fill=_scale(hair, 0.8),
            width=max(1, er),
        )
    draw.line(
        (cx, ey + er, cx - r // 10, cy + round(r * 0.5), cx, cy + round(r * 0.52)),
        fill=_scale(skin, 0.75),
        width=max(1, er // 2),
    )
    mouth_w, mouth_h = round(r * 0.62), round(r * 0.42)
    my = cy + round(r * 0.74)
    face = Face(
        character.id,
        cx,
        cy,
        r,
        cx,
        my,
        mouth_w,
        mouth_h,
        skin,
        _mix(LIP_COLOUR, ctx.lit(LIP_COLOUR), 0.5),
    )
    draw_mouth(draw, face, "rest", 1.0, (0.0, 0.0))
    return face


def _figure_small(
    img: Image.Image, ctx: _Ctx, character: CharacterSpec, seed: int, cx: int, base: int, tall: int
) -> None:
    draw = ImageDraw.Draw(img)
    skin, hair, clothes = _look(character, seed)
    head = tall // 6
    draw.rounded_rectangle(
        (cx - tall // 7, base - tall + head * 2, cx + tall // 7, base),
        radius=tall // 12,
        fill=ctx.lit(clothes),
    )
    draw.ellipse(
        (cx - head // 2 - 1, base - tall, cx + head // 2 + 1, base - tall + head + 2),
        fill=ctx.lit(hair),
    )
    draw.ellipse(
        (cx - head // 2, base - tall + head // 4, cx + head // 2, base - tall + head + head // 4),
        fill=ctx.lit(skin),
    )


#: Mouth shapes (visemes): name -> (opening width, opening height) as fractions of the
#: face's mouth box, and whether teeth show along the top.
MOUTH_SHAPES: dict[str, tuple[float, float, bool]] = {
    "rest": (0.0, 0.0, False),
    "MBP": (0.0, 0.0, False),
    "FV": (0.8, 0.22, True),
    "etc": (0.8, 0.34, True),
    "E": (0.95, 0.48, True),
    "AI": (0.88, 1.0, True),
    "O": (0.5, 0.78, False),
}


#: Colour of teeth showing in an open mouth.
TEETH_COLOUR: RGB = (236, 232, 222)


def mouth_box(face: Face, scale: float, offset: tuple[float, float]) -> Box:
    """The box :func:`draw_mouth` paints, in frame pixels."""
    x = face.mouth_x * scale + offset[0]
    y = face.mouth_y * scale + offset[1]
    w, h = face.mouth_w * scale, face.mouth_h * scale
    return (round(x - w * 0.6), round(y - h * 0.55), round(x + w * 0.6), round(y + h * 0.7))


def draw_mouth(
    draw: ImageDraw.ImageDraw,
    face: Face,
    shape: str,
    scale: float,
    offset: tuple[float, float],
    inside: RGB = MOUTH_INSIDE,
    teeth_colour: RGB = TEETH_COLOUR,
) -> Box:
    """Draw ``shape`` on ``face``: keyframe coordinates times ``scale`` plus ``offset``.

    Paints skin over the whole mouth box first, so any shape replaces the one before.
    The colours are drawn as given (the lipsync stage passes video YCbCr values).
    Returns the box painted.
    """
    fw, fh, teeth = MOUTH_SHAPES.get(shape, MOUTH_SHAPES["etc"])
    x = face.mouth_x * scale + offset[0]
    y = face.mouth_y * scale + offset[1]
    w = face.mouth_w * scale
    h = face.mouth_h * scale
    box = mouth_box(face, scale, offset)
    draw.ellipse(box, fill=face.skin)
    lip = max(1.0, h * 0.12)
    if fh == 0:
        thick = lip * (1.6 if shape == "MBP" else 1.0)
        draw.rounded_rectangle(
            (x - w / 2, y - thick, x + w / 2, y + thick), radius=thick, fill=face.lip
        )
        return box
    ow, oh = w * fw, max(2.0, h * fh)
    top = y - oh * 0.35
    draw.ellipse((x - ow / 2 - lip, top - lip, x + ow / 2 + lip, top + oh + lip), fill=face.lip)
    draw.ellipse((x - ow / 2, top, x + ow / 2, top + oh), fill=inside)
    if teeth:
        draw.chord(
            (x - ow / 2, top, x + ow / 2, top + min(oh, h * 0.6)), 180, 360, fill=teeth_colour
        )
    return box


def compose(
    plan: MoviePlan, shot: ShotSpec, which: str, size: tuple[int, int], picture_floor: int
) -> tuple[Image.Image, SceneLayout]:
    """Draw the ``which`` ("start" or "end") keyframe of ``shot`` at ``size``.

    ``picture_floor`` is the lowest row the caption band leaves free; faces stay above it.
    """
    width, height = size
    prompt = shot.start_frame_prompt if which == "start" else shot.end_frame_prompt
    shot_text = " ".join([shot.setting or "", shot.visual_description])
    frame_text = f"{shot_text} {prompt}"
    found = find_elements(frame_text)
    time = _shot_time(plan, shot)
    weather = [e for e in find_elements(frame_text + " " + plan.title) if _kind(e) == "weather"]
    # Weather belongs to the whole shot: the other frame's prompt counts too.
    other = shot.end_frame_prompt if which == "start" else shot.start_frame_prompt
    weather += [e for e in find_elements(other) if _kind(e) == "weather" and e not in weather]
    places = [e for e in found if _kind(e) == "place"]
    objects = [e for e in found if _kind(e) == "object"]
    if "lighthouse" in places and "sea" not in places:
        places.append("sea")
    if "boat" in objects and "sea" not in places:
        places.append("sea")
    if "lamp" in objects and "sea" in places and "lighthouse" not in places:
        places.append("lighthouse")  # a light at sea is a lighthouse's
    if "car" in objects and not places:
        places.append("street")
    indoor = bool(INDOOR_PLACES & set(places)) and not ({"rooftop", "street", "sea"} & set(places))
    if not places:
        places = [rng("place", plan.seed, shot_text).choice(FALLBACK_PLACES)]
    elements = [time, *weather, *places, *[o for o in objects if o not in places]]
    if re.search(r"(?<![a-z])cliff", frame_text.lower()):
        elements.append("cliff")
    close = shot.is_talking_closeup or any(w in prompt.lower() for w in CLOSE_WORDS)
    layout = SceneLayout(time=time, elements=elements, framing="close" if close else "wide")
    # Placement depends on the seed and the shot, not on which frame: what does not change
    # between the two keyframes stays put, so the dissolve does not show ghosts.
    rnd = rng("scene", plan.seed, shot.id, shot_text)
    horizon = round(height * rnd.uniform(0.5, 0.6))
    base = f"{plan.seed}\x1f{shot.id}\x1f{shot_text}"
    ctx = _Ctx(width, height, picture_floor, horizon, time, weather, rnd, which, base)
    img = Image.new("RGBA", size, (0, 0, 0, 255))
    if indoor:
        _room(img, ctx.reseed("room"), layout, "lamp" in objects)
    else:
        _sky(img, ctx.reseed("sky"), layout)
        _far(img, ctx.reseed("far"), places, layout)
        _ground(img, ctx.reseed("ground"), places, layout)
    if "lighthouse" in places and not indoor:
        beam = "lamp" in objects or time == "night"
        _lighthouse(img, ctx.reseed("lighthouse"), layout, beam)
    if "boat" in objects and not indoor:
        _boat(img, ctx.reseed("boat"), layout)
    if "car" in objects and not indoor:
        _car(img, ctx.reseed("car"), layout)
    if "neon" in objects:
        _neon(img, ctx.reseed("neon"), layout)
    if "lamp" in objects and "lighthouse" not in places:
        _street_lamp(img, ctx.reseed("street_lamp"), layout, indoor)
    if not indoor:
        _weather(img, ctx.reseed("weather"), layout)
    people = characters_in(plan, shot, f"{shot.visual_description} {prompt}")
    if close and people:
        shown = people[:3]
        r = round(min(picture_floor * 0.26, width / (len(shown) * 2.6 + 0.4)))
        slots = (
            [rnd.choice((0.36, 0.64))]
            if len(shown) == 1
            else [(i + 0.5) / len(shown) for i in range(len(shown))]
        )
        for character, fx in zip(shown, slots, strict=False):
            layout.faces.append(_figure_close(img, ctx, character, plan.seed, round(width * fx), r))
    elif people:
        feet = ctx.horizon + (picture_floor - ctx.horizon) * 3 // 4
        tall = round(height * 0.3)
        for i, character in enumerate(people[:4]):
            fx = 0.3 + 0.4 * (i + 0.5) / max(1, len(people[:4])) + rnd.uniform(-0.04, 0.04)
            _figure_small(img, ctx, character, plan.seed, round(width * fx), feet, tall)
    if close and people and "rain" in weather:
        _weather(
            img,
            _Ctx(
                width,
                height,
                picture_floor,
                horizon,
                time,
                ["rain"],
                rng("rain-front", plan.seed, shot.id),
                which,
            ),
            layout,
            density=0.25,  # a few drops in front of the face, which must stay readable
        )
    picture = img.convert("RGB")
    if which == "end":
        # Time passes between the keyframes: the light shifts a little, so even a shot whose
        # two prompts draw the same scene is not a still picture.
        gain = END_LIGHT_SHIFT.get(time, 0.97)
        picture = picture.point([min(255, round(v * gain)) for v in range(256)] * 3)
    return picture, layout

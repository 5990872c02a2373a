"""Scene composition: a keyframe picture drawn from the words of a shot.

The words of the shot (setting, visual description, the frame's prompt, and as weak hints
the plan's title and earlier shots) choose elements from a fixed vocabulary
(:mod:`sparkle.adapters.scene_words`): a time of day and sky, weather, a place, objects,
and the plan's characters as figures. Everything is drawn with Pillow in layers (sky, far
background, place, objects, figures, weather) and placed with a random generator seeded
from the plan's seed, so the same plan and seed give the same picture.

:func:`compose` returns the picture and a :class:`~sparkle.adapters.scene_layout.SceneLayout`:
which elements were drawn, their boxes, and for every face where its mouth is.
"""

from __future__ import annotations

import re

from PIL import Image

from sparkle.adapters.scene_backdrop import draw_far, draw_ground, draw_room, draw_sky
from sparkle.adapters.scene_canvas import SceneContext, rng
from sparkle.adapters.scene_figures import draw_close_figure, draw_small_figure
from sparkle.adapters.scene_layout import SceneLayout
from sparkle.adapters.scene_props import (
    draw_boat,
    draw_car,
    draw_lighthouse,
    draw_neon,
    draw_street_lamp,
    draw_weather,
)
from sparkle.adapters.scene_words import (
    CLOSE_WORDS,
    FALLBACK_PLACES,
    INDOOR_PLACES,
    characters_in,
    element_kind,
    find_elements,
    shot_time,
)
from sparkle.schemas import MoviePlan, ShotSpec

#: Brightness of the end keyframe relative to the start, per time of day (light changes
#: as the shot goes on: dawn brightens, dusk darkens).
END_LIGHT_SHIFT: dict[str, float] = {"dawn": 1.04, "day": 0.98, "dusk": 0.95, "night": 0.97}


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
    time = shot_time(plan, shot)
    weather = [
        e for e in find_elements(frame_text + " " + plan.title) if element_kind(e) == "weather"
    ]
    # Weather belongs to the whole shot: the other frame's prompt counts too.
    other = shot.end_frame_prompt if which == "start" else shot.start_frame_prompt
    weather += [
        e for e in find_elements(other) if element_kind(e) == "weather" and e not in weather
    ]
    places = [e for e in found if element_kind(e) == "place"]
    objects = [e for e in found if element_kind(e) == "object"]
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
    ctx = SceneContext(width, height, picture_floor, horizon, time, weather, rnd, which, base)
    img = Image.new("RGBA", size, (0, 0, 0, 255))
    if indoor:
        draw_room(img, ctx.reseed("room"), layout, "lamp" in objects)
    else:
        draw_sky(img, ctx.reseed("sky"), layout)
        draw_far(img, ctx.reseed("far"), places, layout)
        draw_ground(img, ctx.reseed("ground"), places, layout)
    if "lighthouse" in places and not indoor:
        beam = "lamp" in objects or time == "night"
        draw_lighthouse(img, ctx.reseed("lighthouse"), layout, beam)
    if "boat" in objects and not indoor:
        draw_boat(img, ctx.reseed("boat"), layout)
    if "car" in objects and not indoor:
        draw_car(img, ctx.reseed("car"), layout)
    if "neon" in objects:
        draw_neon(img, ctx.reseed("neon"), layout)
    if "lamp" in objects and "lighthouse" not in places:
        draw_street_lamp(img, ctx.reseed("street_lamp"), layout, indoor)
    if not indoor:
        draw_weather(img, ctx.reseed("weather"), layout)
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
            layout.faces.append(
                draw_close_figure(img, ctx, character, plan.seed, round(width * fx), r)
            )
    elif people:
        feet = ctx.horizon + (picture_floor - ctx.horizon) * 3 // 4
        tall = round(height * 0.3)
        for i, character in enumerate(people[:4]):
            fx = 0.3 + 0.4 * (i + 0.5) / max(1, len(people[:4])) + rnd.uniform(-0.04, 0.04)
            draw_small_figure(img, ctx, character, plan.seed, round(width * fx), feet, tall)
    if close and people and "rain" in weather:
        draw_weather(
            img,
            SceneContext(
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

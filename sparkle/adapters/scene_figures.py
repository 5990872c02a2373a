"""The plan's characters in a keyframe: head and shoulders with a readable face in a
close shot, small full figures in a wide one. A character keeps its looks across shots.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from sparkle.adapters.scene_canvas import SceneContext, mix, rng, scaled
from sparkle.adapters.scene_layout import LIP_COLOUR, RGB, Face, draw_mouth
from sparkle.schemas import CharacterSpec

#: Skin tones, hair colours and clothes for characters; a character keeps its own across
#: shots.
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


def look_of(character: CharacterSpec, seed: int) -> tuple[RGB, RGB, RGB]:
    r = rng("look", seed, character.id, character.name)
    return r.choice(SKIN_TONES), r.choice(HAIR_COLOURS), r.choice(CLOTHES)


def draw_close_figure(
    img: Image.Image, ctx: SceneContext, character: CharacterSpec, seed: int, cx: int, r: int
) -> Face:
    """Head and shoulders large enough to see the mouth."""
    draw = ImageDraw.Draw(img)
    skin, hair, clothes = look_of(character, seed)
    # Faces are lit for the camera: only half the scene's light falls on them.
    skin, hair, clothes = (mix(c, ctx.lit(c), 0.5) for c in (skin, hair, clothes))
    cy = ctx.floor - round(r * 2.25)
    # shoulders and neck
    draw.rounded_rectangle(
        (cx - round(r * 1.9), cy + round(r * 1.45), cx + round(r * 1.9), ctx.floor + r),
        radius=r,
        fill=clothes,
    )
    draw.rectangle(
        (cx - r // 3, cy + r // 2, cx + r // 3, cy + round(r * 1.5)), fill=scaled(skin, 0.85)
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
            fill=scaled(hair, 0.8),
            width=max(1, er),
        )
    draw.line(
        (cx, ey + er, cx - r // 10, cy + round(r * 0.5), cx, cy + round(r * 0.52)),
        fill=scaled(skin, 0.75),
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
        mix(LIP_COLOUR, ctx.lit(LIP_COLOUR), 0.5),
    )
    draw_mouth(draw, face, "rest", 1.0, (0.0, 0.0))
    return face


def draw_small_figure(
    img: Image.Image,
    ctx: SceneContext,
    character: CharacterSpec,
    seed: int,
    cx: int,
    base: int,
    tall: int,
) -> None:
    draw = ImageDraw.Draw(img)
    skin, hair, clothes = look_of(character, seed)
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

"""What a keyframe shows, and the mouths drawn on its faces.

The images stage writes a :class:`SceneLayout` per keyframe (``frames/layout.json``): the
elements drawn, their boxes, and for every face where its mouth is. The lipsync stage reads
it to draw moving mouths there (:func:`draw_mouth`, in the shapes of :data:`MOUTH_SHAPES`);
tests check that a lighthouse is where the layout says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import ImageDraw

#: A colour as red, green, blue (0-255), and a box as left, top, right, bottom in pixels.
RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

#: Colour of lips drawn on a face, and of the inside of an open mouth.
LIP_COLOUR: RGB = (150, 62, 66)
MOUTH_INSIDE: RGB = (60, 16, 22)

#: Colour of teeth showing in an open mouth.
TEETH_COLOUR: RGB = (236, 232, 222)

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

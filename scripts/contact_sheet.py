"""Draw the keyframe contact sheet of docs/MEDIA.md: a dozen varied prompts, one panel each.

Every panel is the start keyframe the ``images`` stage draws for one shot of a plan made of
the prompts below (caption band on, so each panel shows its own prompt), tiled 4 x 3.

Usage::

    .venv/bin/python scripts/contact_sheet.py                     # docs/keyframes.png
    .venv/bin/python scripts/contact_sheet.py --out /tmp/sheet.png --size 480x270
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

from sparkle.adapters.images import images_stage
from sparkle.schemas import AssetRefs, MoviePlan

#: Where the sheet goes by default.
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "keyframes.png"

#: (setting, prompt, talking close-up) of every panel.
PANELS: tuple[tuple[str, str, bool], ...] = (
    ("cliff at dusk", "Wide view of a lighthouse at dusk, stormy sea", False),
    ("", "A neon-lit rooftop at night, rain falling, city lights below", False),
    ("forest", "A foggy forest path at dawn", False),
    ("desert", "A car on a desert road at noon", False),
    ("mountains", "Snowy peaks under an overcast sky", False),
    ("river", "A bridge over the river at sunset, a boat below", False),
    ("city", "The city skyline at night under the moon", False),
    ("kitchen", "A lamp over the kitchen table, rain on the window", False),
    ("street", "A street at dusk, street lamps, a taxi waiting", False),
    ("beach at dawn", "Close-up of Mira by the sea", True),
    ("cafe", "Tom and Mira talking in a cafe", True),
    ("", "An abstract feeling of longing", False),
)

#: Panels per row.
COLUMNS = 4


def sheet_plan(size: str) -> MoviePlan:
    """One plan whose shots are the panels."""
    return MoviePlan.model_validate(
        {
            "title": "Vocabulary",
            "characters": [
                {"id": "mira", "name": "Mira"},
                {"id": "tom", "name": "Tom"},
            ],
            "shots": [
                {
                    "id": f"p{i:02d}",
                    "duration_sec": 1,
                    "setting": setting or None,
                    "visual_description": prompt,
                    "start_frame_prompt": prompt,
                    "end_frame_prompt": prompt,
                    "is_talking_closeup": close,
                }
                for i, (setting, prompt, close) in enumerate(PANELS, start=1)
            ],
            "metadata": {"seed": "7", "resolution": size},
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--size", default="320x180", help="panel size, WIDTHxHEIGHT")
    args = parser.parse_args()
    plan = sheet_plan(args.size)
    width, height = plan.resolution
    with tempfile.TemporaryDirectory(prefix="sparkle-sheet-") as tmp:
        refs, _ = images_stage(plan, AssetRefs(), Path(tmp))
        rows = -(-len(plan.shots) // COLUMNS)
        sheet = Image.new("RGB", (COLUMNS * width, rows * height))
        for i, shot in enumerate(plan.shots):
            panel = Image.open(Path(tmp) / str(refs.shots[shot.id].start_frame))
            sheet.paste(panel, ((i % COLUMNS) * width, (i // COLUMNS) * height))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

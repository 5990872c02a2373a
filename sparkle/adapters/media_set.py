"""The real CPU adapter set (``SPARKLE_ADAPTERS=media``): Pillow, ffmpeg and espeak-ng.

Registered under the ``sparkle.adapters`` entry point group as ``media``.
"""

from __future__ import annotations

from sparkle.adapters.assemble import assemble_stage
from sparkle.adapters.images import images_stage
from sparkle.adapters.lipsync import lipsync_stage
from sparkle.adapters.qa import qa_stage
from sparkle.adapters.script import script_stage
from sparkle.adapters.tts import tts_stage
from sparkle.adapters.videos import videos_stage
from sparkle.stages import StageFn

#: Stage name -> adapter, for every stage in ``sparkle.schemas.STAGES``.
ADAPTERS: dict[str, StageFn] = {
    "script": script_stage,
    "images": images_stage,
    "videos": videos_stage,
    "tts": tts_stage,
    "lipsync": lipsync_stage,
    "assemble": assemble_stage,
    "qa": qa_stage,
}

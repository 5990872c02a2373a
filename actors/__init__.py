"""The seven stage actors. Declarations only: each hands its message to the engine.

Importing this module installs the broker first (``setup_broker``), so ``dramatiq actors``,
``sparkle worker`` and the CLI's in-process workers all declare the actors on the broker the
settings choose. Each stage has its own queue, ``sparkle.<stage>``, so heavy stages can get
their own worker pool (``sparkle worker --queues sparkle.videos``).
"""

from __future__ import annotations

from typing import Any

import dramatiq

from sparkle.broker import MESSAGE_MAX_RETRIES, setup_broker
from sparkle.engine import StageFailed, get_engine
from sparkle.keys import actor_name, queue_name, stage_queue_names
from sparkle.schemas import STAGES
from sparkle.settings import get_settings

setup_broker()


def _declare(stage: str) -> Any:
    settings = get_settings()
    limit_sec = settings.stage_time_limits.get(stage, settings.stage_time_limit_sec)

    def run_stage(run_id: str) -> None:
        get_engine().execute(stage, run_id)

    run_stage.__name__ = run_stage.__qualname__ = actor_name(stage)
    run_stage.__doc__ = f"Execute the {stage} stage of a run."
    broker = dramatiq.get_broker()
    for name in stage_queue_names(stage):
        if name != queue_name(stage):
            broker.declare_queue(name)
    return dramatiq.actor(
        actor_name=actor_name(stage),
        queue_name=queue_name(stage),
        max_retries=MESSAGE_MAX_RETRIES,
        time_limit=int(limit_sec * 1000),
        # A permanently failed stage is dead-lettered at once: its attempts were already
        # retried inside the message by the engine.
        throws=(StageFailed,),
    )(run_stage)


#: Stage name → its actor.
ACTORS: dict[str, Any] = {stage: _declare(stage) for stage in STAGES}

script = ACTORS["script"]
images = ACTORS["images"]
videos = ACTORS["videos"]
tts = ACTORS["tts"]
lipsync = ACTORS["lipsync"]
assemble = ACTORS["assemble"]
qa = ACTORS["qa"]

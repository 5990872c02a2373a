"""The seven stage actors. Declarations only: each hands its message to the engine.

The actors are declared on the broker of the installed App (:func:`sparkle.app.installed`:
the one ``App.declare_actors`` installed, or for ``dramatiq actors`` one built from the
environment), and each hands its message to that App's engine. Each stage has its own
queue, ``sparkle.<stage>``, so heavy stages can get
their own worker pool (``sparkle worker --queues sparkle.videos``).
"""

from __future__ import annotations

from typing import Any

import dramatiq

from sparkle.app import installed
from sparkle.broker import MESSAGE_MAX_RETRIES
from sparkle.keys import actor_name, queue_name, stage_queue_names
from sparkle.outcomes import StageFailed
from sparkle.schemas import STAGES

#: The broker the actors below are declared on.
BROKER = installed().backend.broker


def _declare(stage: str) -> Any:
    settings = installed().settings
    limit_sec = settings.stage_time_limits.get(stage, settings.stage_time_limit_sec)

    def run_stage(run_id: str) -> None:
        installed().engine.execute(stage, run_id)

    run_stage.__name__ = run_stage.__qualname__ = actor_name(stage)
    run_stage.__doc__ = f"Execute the {stage} stage of a run."
    for name in stage_queue_names(stage):
        if name != queue_name(stage):
            BROKER.declare_queue(name)
    return dramatiq.actor(
        broker=BROKER,
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

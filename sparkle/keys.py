"""Every Redis key and dramatiq name Sparkle uses, in one place.

dramatiq's own keys live under the broker namespace (``<namespace>:sparkle.<stage>``,
``…XQ`` for dead letters); Sparkle's coordination keys sit beside them.
"""

from __future__ import annotations


def queue_name(stage: str) -> str:
    """The dramatiq queue of a stage: each stage has its own, so it can have its own pool."""
    return f"sparkle.{stage}"


def actor_name(stage: str) -> str:
    """The dramatiq actor name of a stage."""
    return f"sparkle_{stage}"


def lease(namespace: str, run_id: str) -> str:
    """STRING holding the token of the worker that owns the run (``SET NX PX``)."""
    return f"{namespace}:lease:{run_id}"


def pending(namespace: str, run_id: str) -> str:
    """STRING ``<stage> <unix time>``: the stage whose message was sent and not yet taken."""
    return f"{namespace}:pending:{run_id}"


def dramatiq_queue(namespace: str, stage: str) -> str:
    """dramatiq's LIST of ready message ids of a stage's queue."""
    return f"{namespace}:{queue_name(stage)}"


def dramatiq_messages(namespace: str, stage: str) -> str:
    """dramatiq's HASH message id → encoded message (until acked) of a stage's queue."""
    return f"{namespace}:{queue_name(stage)}.msgs"


def dead_letters(namespace: str, stage: str) -> str:
    """dramatiq's ZSET (score = time of death, ms) of a stage's dead-lettered message ids."""
    return f"{namespace}:{queue_name(stage)}.XQ"


def dead_letter_messages(namespace: str, stage: str) -> str:
    """dramatiq's HASH id → encoded message of a stage's dead letters."""
    return f"{namespace}:{queue_name(stage)}.XQ.msgs"

"""Every Redis key and dramatiq name Sparkle uses, in one place.

dramatiq's own keys live under the broker namespace (``<namespace>:sparkle.<stage>``,
``…XQ`` for dead letters); Sparkle's coordination keys sit beside them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sparkle.names import STAGES
from sparkle.priority import NORMAL, PRIORITIES, queue_suffix


def queue_name(stage: str, priority: str = NORMAL) -> str:
    """The dramatiq queue of a stage at a priority level: each stage has its own, so it can
    have its own pool, and one per level (``sparkle.videos``, ``sparkle.videos.high``,
    ``sparkle.videos.low``: :mod:`sparkle.priority`)."""
    return f"sparkle.{stage}{queue_suffix(priority)}"


def stage_queue_names(stage: str) -> list[str]:
    """The queues of every priority level of ``stage``, highest first."""
    return [queue_name(stage, level) for level in PRIORITIES]


def worker_queues(names: Sequence[str]) -> list[str]:
    """The queues a worker given ``names`` (``sparkle worker -Q``) consumes: a stage's name
    or queue (``videos``, ``sparkle.videos``) means every priority level of it; one level's
    queue (``sparkle.videos.high``) means that level only.

    Raises:
      ValueError: a name is none of those (the message lists the stage queues).
    """
    chosen: list[str] = []
    for name in names:
        stage = name.removeprefix("sparkle.")
        if stage in STAGES:
            chosen += stage_queue_names(stage)
        elif any(name in stage_queue_names(s) for s in STAGES):
            chosen.append(name)
        else:
            raise ValueError(
                f"unknown queue(s) {name}; the stage queues are "
                f"{', '.join(queue_name(s) for s in STAGES)} (each also with a .high and a "
                ".low priority level)")
    return list(dict.fromkeys(chosen))


def actor_name(stage: str) -> str:
    """The dramatiq actor name of a stage."""
    return f"sparkle_{stage}"


def lease(namespace: str, run_id: str) -> str:
    """STRING holding the token of the worker that owns the run (``SET NX PX``)."""
    return f"{namespace}:lease:{run_id}"


def pending(namespace: str, run_id: str) -> str:
    """STRING ``<stage> <unix time>``: the stage whose message was sent and not yet taken."""
    return f"{namespace}:pending:{run_id}"


def dramatiq_queue(namespace: str, stage: str, priority: str = NORMAL) -> str:
    """dramatiq's LIST of ready message ids of a stage's queue."""
    return f"{namespace}:{queue_name(stage, priority)}"


def dramatiq_messages(namespace: str, stage: str, priority: str = NORMAL) -> str:
    """dramatiq's HASH message id → encoded message (until acked) of a stage's queue."""
    return f"{namespace}:{queue_name(stage, priority)}.msgs"


def dead_letters(namespace: str, stage: str, priority: str = NORMAL) -> str:
    """dramatiq's ZSET (score = time of death, ms) of a stage's dead-lettered message ids."""
    return f"{namespace}:{queue_name(stage, priority)}.XQ"


def dead_letter_messages(namespace: str, stage: str, priority: str = NORMAL) -> str:
    """dramatiq's HASH id → encoded message of a stage's dead letters."""
    return f"{namespace}:{queue_name(stage, priority)}.XQ.msgs"


def redrive_guard(namespace: str, run_id: str) -> str:
    """STRING set (``SET NX PX``) for a lease TTL after a re-drive, so two reapers running at
    the same time (in ``sparkle watch`` and in ``sparkle worker``) never both re-drive a run."""
    return f"{namespace}:redrive:{run_id}"


def retention_guard(namespace: str) -> str:
    """STRING set (``SET NX PX``) for an hour by the reaper that applies ``SPARKLE_RETENTION``,
    so the reapers of all workers together prune at most once an hour."""
    return f"{namespace}:retention"


def stage_slots(namespace: str, stage: str) -> str:
    """ZSET holder → expiry (ms, Redis clock) of the executions of ``stage`` running now,
    for ``SPARKLE_STAGE_CONCURRENCY`` (:mod:`sparkle.stagelimits`)."""
    return f"{namespace}:slots:{stage}"


def unfinished_runs(namespace: str) -> str:
    """SET of the ids of runs that may be unfinished: what the reaper looks at
    (:mod:`sparkle.runindex`)."""
    return f"{namespace}:unfinished"


def unfinished_runs_fresh(namespace: str) -> str:
    """STRING set (``SET NX PX``) when the unfinished-run index was last rebuilt from the run
    folders; its absence (expired, or Redis restarted) makes the next reaper rebuild it."""
    return f"{namespace}:unfinished:fresh"


def delayed_queue_name(stage: str, priority: str = NORMAL) -> str:
    """dramatiq's delay queue of a stage (messages waiting for their ``eta``: retries)."""
    return f"{queue_name(stage, priority)}.DQ"


def delayed_messages(namespace: str, stage: str, priority: str = NORMAL) -> str:
    """dramatiq's HASH id → encoded message of a stage's delayed messages."""
    return f"{namespace}:{delayed_queue_name(stage, priority)}.msgs"


def heartbeats(namespace: str) -> str:
    """dramatiq's ZSET broker process id → time of its last Redis call (ms)."""
    return f"{namespace}:__heartbeats__"


def unacked(namespace: str, broker_id: str, queue: str) -> str:
    """dramatiq's SET of message ids one broker process fetched from ``queue`` and has not
    acknowledged yet (``queue`` is a full queue name such as ``sparkle.videos.DQ``)."""
    return f"{namespace}:__acks__.{broker_id}.{queue}"


def doorbell(namespace: str, queue: str) -> str:
    """LIST of tokens pushed with each message sent to ``queue`` (a full queue name): an
    idle consumer of the queue waits on it (:mod:`sparkle.doorbell`)."""
    return f"{namespace}:{queue}.bell"

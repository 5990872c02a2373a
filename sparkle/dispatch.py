"""Sending stage messages, and remembering which stage of a run has a message on its way.

When a stage message is sent, the run's **pending** key records the stage and the time.
The engine clears it when the message is taken. So "is the next stage already queued?" is
one GET instead of a scan of the queue, and a replayed or duplicate message that finds its
stage done does not start a second chain: it re-sends the next stage only when nothing is
pending for it. A pending record whose message was lost is the reaper's business.

Each message goes to the queue of its run's priority level (:mod:`sparkle.priority`): given
by the caller, else the level of the message being handled in this thread (so the engine's
next stage keeps the run's level without reading anything), else normal.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage

from sparkle import keys, lease, priority
from sparkle.roundtrip import Command
from sparkle.runlayout import PLAN_FILE, REVIEW_FILE
from sparkle.runstore import Run

if TYPE_CHECKING:
    from sparkle.backends import Backend

log = logging.getLogger(__name__)

_CLEAR_IF_STAGE = """
local value = redis.call('get', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Dispatcher:
    """Sends stage messages on a broker and tracks the pending stage of each run."""

    def __init__(self, backend: Backend, namespace: str) -> None:
        self.backend = backend
        self.broker: dramatiq.Broker = backend.broker
        self.client: redis.Redis = backend.client
        self.namespace = namespace

    def send(
        self, run_id: str, stage: str, delay_ms: int | None = None,
        options: dict[str, Any] | None = None, level: str | None = None,
    ) -> dramatiq.Message[Any]:
        """Enqueue ``stage`` of ``run_id`` and mark it pending.

        The mark is written before the message, so a worker that takes the message at once
        always finds a mark to clear. Raises the broker's connection errors.
        """
        self.mark(run_id, stage)
        return self.enqueue(run_id, stage, delay_ms, options, level)

    def mark(self, run_id: str, stage: str) -> None:
        """Record that ``stage`` of ``run_id`` has a message on its way (before sending it),
        and put the run in the unfinished-run index (:mod:`sparkle.runindex`), in one
        round trip."""
        _, key, value = self.mark_command(run_id, stage)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, value)
        pipe.sadd(keys.unfinished_runs(self.namespace), run_id)
        pipe.execute()

    def mark_command(self, run_id: str, stage: str) -> Command:
        """The command of :meth:`mark`, to send with others in one round trip."""
        return ("SET", keys.pending(self.namespace, run_id), f"{stage} {time.time():.3f}")

    def enqueue(
        self, run_id: str, stage: str, delay_ms: int | None = None,
        options: dict[str, Any] | None = None, level: str | None = None,
    ) -> dramatiq.Message[Any]:
        """Enqueue ``stage`` of ``run_id`` without marking it: :meth:`mark` it first.
        ``options`` travel with the message (the engine's count of infrastructure failures
        in a row). ``level``: the run's priority (default: see the module)."""
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=keys.queue_name(stage, level or current_level()),
            actor_name=keys.actor_name(stage),
            args=(run_id,),
            kwargs={},
            options=dict(options or {}),
        )
        return self.broker.enqueue(message, delay=delay_ms)

    def pending(self, run_id: str) -> tuple[str, float] | None:
        """The stage with a message on its way for ``run_id`` and when it was sent."""
        value = self.client.get(keys.pending(self.namespace, run_id))
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        stage, _, sent = text.partition(" ")
        return stage, float(sent or 0)

    def taken_command(self, run_id: str, stage: str) -> Command:
        """A worker took ``stage``'s message: the command that clears the mark if it names
        that stage (whatever the worker then does with it, that message is no longer on
        its way). Sent with the lease's round trip."""
        return ("EVAL", _CLEAR_IF_STAGE, 1, keys.pending(self.namespace, run_id), stage)

    def kick(self, run: Run) -> str | None:
        """Make sure the run's first unfinished stage is queued. Returns the stage sent.

        Sends nothing when the run is done, cancelled or waiting for a review decision (or
        rejected), when that stage already has a message on its way, or when a worker (or
        another process, by the backend's own means) holds the run. Used by ``submit``, the
        inbox, ``resume`` and the reaper.
        """
        if run.cancelled or os.path.exists(f"{run.dir}/{REVIEW_FILE}"):
            return None
        stage = run.next_stage()
        if stage is None:
            return None
        pending = self.pending(run.run_id)
        if pending is not None and pending[0] == stage:
            log.debug("run %s: %s already queued", run.run_id, stage)
            return None
        if lease.holder(self.client, self.namespace, run.run_id) is not None:
            log.debug("run %s: a worker holds it; it will continue the chain", run.run_id)
            return None
        other = self.backend.other_process(run.dir)
        if other is not None:
            log.info("run %s: process %s works it; leaving it to that process",
                     run.run_id, other.describe())
            return None
        # (added before the message, so a reader dropping the run as finished just then
        # keeps it)
        self.backend.remember_unfinished(run.dir.parent, run.run_id)
        self.send(run.run_id, stage, level=run_level(run))
        return stage


def current_level() -> str:
    """The priority level of the message this thread is handling; normal outside one."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return priority.NORMAL
    return priority.priority_of_queue(message.queue_name)


def run_level(run: Run) -> str:
    """The priority level of ``run``: its ``priority.txt``, else its plan's
    ``metadata.priority`` (read once per message sent from outside a chain: new run,
    resume, re-drive, replay; never per hop)."""
    return priority.of_run_dir(run.dir, PLAN_FILE)

"""Dead letters: stage messages dramatiq gave up on, listed, replayed and purged.

A stage that fails for good raises ``StageFailed`` and dramatiq moves its message to the
stage queue's dead-letter set: ``<ns>:sparkle.<stage>.XQ`` (ZSET, score = time of death in
ms) and ``…XQ.msgs`` (HASH id → message). The message does not say why it died, so the
listing reads the error from the run's ``failed`` checkpoint.

Replay follows the recipe in notes/dramatiq.md: send the stage again as a new message
(retries start from zero), record a ``redrive`` event, then remove the dead entry. Sending
before removing means a crash in between replays twice, never zero times; the engine's skip
rule makes the second one harmless. A stage that is already done is not sent again: its
entry is simply removed.

Embedded mode keeps no dead-letter queue (StubBroker holds it in the memory of the process
that failed the stage): failed runs are found with ``sparkle runs --status failed`` and
continued with ``sparkle resume``.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from sparkle import keys, lease, metrics
from sparkle.dispatch import Dispatcher, run_level
from sparkle.presence import message_run_id
from sparkle.priority import NORMAL, PRIORITIES
from sparkle.runstore import Run, RunStore
from sparkle.schemas import ID_RE, STAGES

log = logging.getLogger(__name__)

#: What to tell a user of the embedded mode, where no dead-letter queue outlives a process.
EMBEDDED_NOTICE = (
    "embedded mode (no SPARKLE_REDIS_URL) keeps no persistent dead-letter queue: a failed "
    "stage's message lives only in the memory of the process that failed it. Find failed "
    "runs with `sparkle runs --status failed` and continue one with `sparkle resume RUN`."
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered stage message."""

    stage: str
    #: dramatiq's id of the entry (``redis_message_id``), the key in ``…XQ``.
    entry_id: str
    #: The message's own id (the same across retries).
    message_id: str | None
    run_id: str | None
    #: When the message was dead-lettered, seconds since the epoch.
    failed_at: float
    #: The error of the stage's ``failed`` checkpoint (or last ``fail`` event), if any.
    error: str | None
    #: The priority level of the queue it died on (:mod:`sparkle.priority`).
    level: str = NORMAL

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "stage": self.stage,
            "failed_at": self.failed_at,
            "failed_at_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.failed_at)),
            "error": self.error,
            "message_id": self.message_id,
            "entry_id": self.entry_id,
            "priority": self.level,
        }


class ReplayResult(enum.StrEnum):
    """What replaying one dead letter did."""

    #: Sent again (retries reset); the entry was removed.
    replayed = "replayed"
    #: The stage is done already: nothing sent; the entry was removed.
    already_done = "already_done"
    #: The run is cancelled: nothing sent; the entry was kept (``sparkle resume`` first).
    cancelled = "cancelled"
    #: No such run folder: nothing sent; the entry was kept (``dlq purge`` removes it).
    missing = "missing"
    #: A worker holds the run (its lease): nothing sent; the entry was kept.
    busy = "busy"


@dataclass(frozen=True)
class Replay:
    letter: DeadLetter
    result: ReplayResult


class DeadLetterQueue:
    """The dead-lettered stage messages of one namespace on Redis."""

    def __init__(self, client: redis.Redis, store: RunStore, namespace: str,
                 dispatcher: Dispatcher | None = None) -> None:
        self.client = client
        self.store = store
        self.namespace = namespace
        self.dispatcher = dispatcher

    def letters(self, run_id: str | None = None, stage: str | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first, optionally only those of one run and/or stage."""
        letters: list[DeadLetter] = []
        for name, level in itertools.product([stage] if stage else STAGES, PRIORITIES):
            entries: list[tuple[bytes | str, float]] = self.client.zrange(  # type: ignore[assignment]
                keys.dead_letters(self.namespace, name, level), 0, -1, withscores=True)
            if not entries:
                continue
            ids = [_text(entry_id) for entry_id, _ in entries]
            bodies = self.client.hmget(keys.dead_letter_messages(self.namespace, name, level),
                                       ids)
            for (entry_id, score), body in zip(entries, bodies, strict=True):
                letter = self._letter(name, _text(entry_id), float(score) / 1000, body, level)
                if run_id is None or letter.run_id == run_id:
                    letters.append(letter)
        return sorted(letters, key=lambda letter: letter.failed_at)

    def replay(self, run_id: str | None = None, stage: str | None = None,
               rate: float | None = None,
               report: Callable[[Replay], None] | None = None) -> list[Replay]:
        """Send the dead-lettered stages again and remove their entries.

        Parameters:
          run_id, stage: only these (both None: every dead letter).
          rate: at most this many messages sent per second.
          report: called after each entry, for progress output.
        """
        if self.dispatcher is None:
            raise ValueError("replaying needs a dispatcher")
        done: list[Replay] = []
        for letter in self.letters(run_id, stage):
            result = self._replay_one(letter)
            done.append(Replay(letter, result))
            if report is not None:
                report(done[-1])
            if result is ReplayResult.replayed and rate:
                time.sleep(1.0 / rate)
        return done

    def purge(self, older_than_sec: float) -> int:
        """Remove dead letters older than ``older_than_sec``. Returns how many."""
        cutoff_ms = (time.time() - older_than_sec) * 1000
        removed = 0
        for stage, level in itertools.product(STAGES, PRIORITIES):
            xq = keys.dead_letters(self.namespace, stage, level)
            ids = [_text(i) for i in self.client.zrangebyscore(xq, "-inf", cutoff_ms)]
            if ids:
                self._remove(stage, ids, level)
                removed += len(ids)
        return removed

    # -- helpers -------------------------------------------------------------------------

    def _letter(self, stage: str, entry_id: str, failed_at: float,
                body: bytes | str | None, level: str = NORMAL) -> DeadLetter:
        run_id = message_run_id(body) if body is not None else None
        message_id = None
        if body is not None:
            try:
                message_id = json.loads(body).get("message_id")
            except (ValueError, AttributeError):
                message_id = None
        return DeadLetter(stage, entry_id, message_id, run_id, failed_at,
                          self._error(run_id, stage), level)

    def _error(self, run_id: str | None, stage: str) -> str | None:
        run = self._run(run_id)
        if run is None:
            return None
        state = run.state()
        checkpoint = state.checkpoint(stage)
        if checkpoint is not None and checkpoint.status == "failed":
            return checkpoint.error
        for event in reversed(state.events):
            if event.stage == stage and event.status == "fail":
                return event.error
        return None

    def _run(self, run_id: str | None) -> Run | None:
        if run_id is None or not ID_RE.fullmatch(run_id) or ".." in run_id:
            return None
        run = Run(self.store.root, run_id)
        return run if run.exists() else None

    def _replay_one(self, letter: DeadLetter) -> ReplayResult:
        assert self.dispatcher is not None
        run = self._run(letter.run_id)
        if run is None:
            log.warning("dead letter %s (%s): run %s not found; kept", letter.entry_id,
                        letter.stage, letter.run_id)
            return ReplayResult.missing
        if run.cancelled:
            return ReplayResult.cancelled
        if run.stage_done(letter.stage):
            self._remove(letter.stage, [letter.entry_id], letter.level)
            return ReplayResult.already_done
        # (holding the run's lease, as every write to a run's files is)
        with lease.for_a_write(self.client, self.namespace, run.run_id) as ours:
            if not ours:
                log.warning("dead letter %s (%s): run %s is held by a worker; kept for a "
                            "later replay", letter.entry_id, letter.stage, letter.run_id)
                return ReplayResult.busy
            run.append_event(letter.stage, "redrive", max(1, run.attempts(letter.stage)),
                             metadata={"reason": "dlq_replay", "dead_letter": letter.entry_id,
                                       "message_id": letter.message_id})
        # (on the run's level: the same as the queue it died on, unless the plan says else)
        self.dispatcher.send(run.run_id, letter.stage, level=run_level(run))
        self._remove(letter.stage, [letter.entry_id], letter.level)
        metrics.redriven(letter.stage, "dlq_replay")
        log.info("run %s stage %s: replayed from the dead-letter queue", run.run_id,
                 letter.stage)
        return ReplayResult.replayed

    def _remove(self, stage: str, entry_ids: list[str], level: str = NORMAL) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(keys.dead_letters(self.namespace, stage, level), *entry_ids)
        pipe.hdel(keys.dead_letter_messages(self.namespace, stage, level), *entry_ids)
        pipe.execute()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

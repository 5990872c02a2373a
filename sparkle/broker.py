"""How Sparkle's dramatiq brokers are made: the middleware every broker gets, and the
RedisBroker's doorbells and per-thread script connections. Which broker a process uses is
its backend's choice (:mod:`sparkle.backends`); the App installs it (:mod:`sparkle.app`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    CurrentMessage,
    Middleware,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from sparkle import doorbell, roundtrip
from sparkle.doorbell import DoorbellBroker
from sparkle.settings import Settings

log = logging.getLogger(__name__)

#: Retries of a message that failed for a reason outside the stage (a Redis blip while
#: writing, an unexpected bug). Stage failures are retried inside the message by the engine
#: and then dead-lettered at once.
MESSAGE_MAX_RETRIES = 3

#: Backoff of those message retries, in milliseconds.
MESSAGE_MIN_BACKOFF_MS = 1_000
MESSAGE_MAX_BACKOFF_MS = 30_000

def middleware() -> list[Middleware]:
    """The broker's middleware, listed explicitly rather than taken from dramatiq's defaults.

    Not dramatiq's ``Callbacks`` and ``Pipelines``: stages chain themselves through the
    engine and use neither, and each would run on every message. Not ``Prometheus``
    either: Sparkle's own metrics cover the workers (:mod:`sparkle.metrics`).
    """
    return [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Retries(
            max_retries=MESSAGE_MAX_RETRIES,
            min_backoff=MESSAGE_MIN_BACKOFF_MS,
            max_backoff=MESSAGE_MAX_BACKOFF_MS,
        ),
        CurrentMessage(),
    ]


def build_redis_broker(settings: Settings, client: redis.Redis | None = None
                       ) -> dramatiq.Broker:
    """A RedisBroker on ``settings.redis_url`` (or ``client``) with Sparkle's namespace,
    recovery settings, doorbells (:mod:`sparkle.doorbell`) and per-thread script
    connections. Without ``client`` it has its own connection pool, apart from the
    coordination client's: its connections carry no socket timeout."""
    broker = DoorbellBroker(  # type: ignore[no-untyped-call]
        url=None if client is not None else settings.redis_url_value(),
        client=client,
        namespace=settings.namespace,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        maintenance_chance=settings.maintenance_chance,
        dead_message_ttl=int(settings.dead_letter_days * 86_400_000),
        middleware=middleware(),
    )
    use_thread_connections(broker)
    return broker


class _ThreadScript:
    """Stands in for one of RedisBroker's redis-py ``Script`` objects (the broker calls them
    as ``script(keys=..., args=...)``): ``EVALSHA`` on the calling thread's own connection
    (:mod:`sparkle.roundtrip`), and ``EVAL`` with the text when Redis lost its script cache
    (a restart), which caches it again."""

    def __init__(self, client: redis.Redis, text: str | bytes, sha: str) -> None:
        self.client = client
        self.text = text
        self.sha = sha

    def __call__(self, keys: Sequence[object] = (), args: Sequence[object] = (),
                 client: object = None) -> Any:
        rest = [str(len(keys)), *map(_arg, keys), *map(_arg, args)]
        # (an ack only removes the message from its queue's ack set: safe to send twice)
        idempotent = bool(args) and args[0] == "ack"
        # An enqueue (args: command, time, queue, ...) rings the queue's doorbell after it.
        also = (doorbell.ring_commands(str(keys[0]), str(args[2]))
                if args and args[0] == "enqueue" else ())
        try:
            try:
                return roundtrip.execute(self.client, ("EVALSHA", self.sha, *rest), *also,
                                         idempotent=idempotent)[0]
            except redis.exceptions.NoScriptError:
                return roundtrip.execute(self.client, ("EVAL", self.text, *rest), *also,
                                         idempotent=idempotent)[0]
        except redis.exceptions.TimeoutError as exc:
            # dramatiq tries an ack or nack again until Redis answers only after a lost
            # connection; a timeout it takes for a bug and drops the ack, leaving the
            # message in this process's ack set (dramatiq #894). Both are safe to send
            # twice. Not a fetch: after a lost connection the consumer forgets the delayed
            # messages it holds, where after any other error it gives them back.
            if args and args[0] in ("ack", "nack"):
                raise redis.exceptions.ConnectionError(f"no reply from Redis: {exc}") from exc
            raise


def _arg(value: object) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    return bytes(value) if isinstance(value, memoryview | bytearray) else str(value)


def use_thread_connections(broker: RedisBroker) -> None:
    """Have ``broker`` send its Lua calls (enqueue, fetch, ack, ...) on a connection each
    thread keeps, instead of through redis-py's client: about half the CPU per call, and
    one poll less (see :mod:`sparkle.roundtrip`). Every message costs a worker thread one
    such call to send the next and a consumer thread one to fetch and one to ack it."""
    broker.scripts = {
        name: _ThreadScript(broker.client, _arg(script.script), script.sha)
        for name, script in broker.scripts.items()
    }

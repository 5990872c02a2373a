"""Waking an idle stage queue's consumers when a message is sent to it, instead of waiting
for their next poll.

Each stage has its own queue, so the next stage's message nearly always lands on a queue
that was idle. dramatiq's Redis consumer polls an idle queue with a growing backoff, up to
the worker's ``worker_timeout`` (``SPARKLE_WORKER_POLL_MS``): with one run in flight, a hop
waited half that on average (92 ms p50 at 250 ms). A shorter poll would cut the wait by
making every idle worker send more commands, all the time.

Instead, every enqueue also pushes a token on the queue's **doorbell**, a Redis list
(:func:`sparkle.keys.doorbell`), and a consumer that found its queue empty waits for the
next poll in a ``BLPOP`` on that list, whose timeout is the backoff it would have slept.
A token wakes one waiting consumer at once; with none waiting, the next consumer to look
takes it and fetches once more, for nothing. So:

- a hop's wait is a round trip, not a poll interval;
- an idle consumer sends two commands per poll (the fetch and the ``BLPOP``) where it sent
  one; the poll interval can then be longer for the same traffic, since it no longer
  bounds a hop. It still bounds the pick-up of messages sent without a token (by a client
  other than Sparkle's broker, or put back by dramatiq's maintenance);
- a consumer holding as many messages as it may prefetch cannot fetch: it sleeps instead
  (below), taking no token that another process's consumer could use.

Tokens are few and short-lived: the list is cut to :data:`MAX_TOKENS` and expires
:data:`TOKEN_TTL_MS` after the last push, so queues nobody consumes keep no growing list.
The token is pushed in the enqueue's own round trip, right after the script that stores the
message: a consumer woken by it always finds the message (or a faster consumer took it),
and ringing costs no round trip of its own.

A consumer holding as many messages as it may prefetch sleeps at most
:data:`FULL_SLEEP_SEC` at a time, however long its backoff: it acknowledges the messages
its threads finished only between two sleeps, so a long sleep there would hold back the
next fetch (no command is sent while it sleeps).
"""

from __future__ import annotations

import time

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from sparkle import keys, roundtrip
from sparkle.roundtrip import Command

#: Tokens a doorbell keeps at most: more than enough to wake every consumer of a queue
#: (one fetch takes up to a whole prefetch of messages).
MAX_TOKENS = 64

#: A doorbell with no new token for this long is deleted (its tokens would only cost a
#: useless fetch each).
TOKEN_TTL_MS = 60_000

#: Longest sleep, in seconds, of a consumer that may not fetch more (see the module).
FULL_SLEEP_SEC = 0.02

#: A ``BLPOP`` waits at most this share of the connection's socket timeout, if it has one,
#: so that the wait ends before the socket gives up on the reply.
_SOCKET_SHARE = 0.5


class DoorbellBroker(RedisBroker):
    """dramatiq's RedisBroker whose consumers wait on their queue's doorbell while it is
    empty. :func:`sparkle.broker.build_broker` makes every enqueue ring it."""

    @property
    def consumer_class(self) -> type[DoorbellConsumer]:
        return DoorbellConsumer


def ring_commands(namespace: str, queue: str) -> tuple[Command, ...]:
    """The commands that ring ``queue``'s doorbell: sent in the round trip of each enqueue,
    after dramatiq's script stored the message (:class:`sparkle.broker._ThreadScript`)."""
    bell = keys.doorbell(namespace, queue)
    return (("LPUSH", bell, b"1"), ("LTRIM", bell, 0, MAX_TOKENS - 1),
            ("PEXPIRE", bell, TOKEN_TTL_MS))


class DoorbellConsumer(_RedisConsumer):
    """dramatiq 2.2's Redis consumer, waiting on its queue's doorbell instead of sleeping
    when it found the queue empty."""

    def __init__(self, broker: DoorbellBroker, queue_name: str, prefetch: int,
                 timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.bell = keys.doorbell(broker.namespace, queue_name)
        pool = broker.client.connection_pool
        # (from a connection, not the pool's settings: redis-py's default is in the class)
        socket_timeout = getattr(pool.connection_class(**pool.connection_kwargs),
                                 "socket_timeout", None)
        #: Longest wait of one BLPOP, in seconds (None: the backoff decides alone).
        self.max_wait = socket_timeout * _SOCKET_SHARE if socket_timeout else None

    def __next__(self) -> MessageProxy | None:
        # dramatiq 2.2's _RedisConsumer.__next__ (pinned <2.3), but for the wait at the end.
        try:
            while True:
                try:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                except IndexError:
                    messages: list[bytes] = []
                    fetched = self.outstanding_message_count < self.prefetch
                    if fetched:
                        self.message_cache = messages = self.broker.do_fetch(
                            self.queue_name, self.prefetch - self.outstanding_message_count)
                    if not messages:
                        self.misses, backoff_ms = compute_backoff(self.misses,
                                                                  max_backoff=self.timeout)
                        if fetched:
                            self.wait(backoff_ms / 1000)
                        else:  # full: a token is of no use here, leave it to others
                            time.sleep(min(backoff_ms / 1000, FULL_SLEEP_SEC))
                        return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a token on the doorbell; whether one came."""
        if self.max_wait is not None:
            seconds = min(seconds, self.max_wait)
        # Redis takes fractions of a second; 0 would mean "wait for ever".
        timeout = f"{max(seconds, 0.001):.3f}"
        reply = roundtrip.execute(self.broker.client, ("BLPOP", self.bell, timeout),
                                  idempotent=True)[0]
        return reply is not None

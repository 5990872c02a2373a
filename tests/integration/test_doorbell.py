"""Doorbells (sparkle.doorbell) on a real redis-server: a message sent through Sparkle's
broker wakes a consumer waiting on its idle queue, instead of leaving the message until
the consumer's next poll."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import pytest
from redis_server import RedisServer

from sparkle import keys
from sparkle.broker import build_redis_broker
from sparkle.doorbell import MAX_TOKENS, DoorbellBroker, DoorbellConsumer
from sparkle.settings import Settings

pytestmark = pytest.mark.redis

#: A poll far longer than any wait of these tests: only the doorbell can end one early.
LONG_POLL_MS = 120_000

#: How long the tests give a woken consumer (a failure, not a measurement).
GRACE_SEC = 30


def _broker(server: RedisServer) -> DoorbellBroker:
    broker = build_redis_broker(Settings(redis_url=server.url))  # type: ignore[call-arg]
    assert isinstance(broker, DoorbellBroker)
    broker.declare_queue("q")
    return broker


def _message() -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name="q", actor_name="a", args=(1,), kwargs={}, options={})


def test_a_message_sent_wakes_a_consumer_waiting_on_its_idle_queue(redis_server: RedisServer):
    # Given a consumer whose queue was empty, waiting for its next poll (a minute or two
    # away; its connection waits longer for a reply than that)
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=600)
    broker = build_redis_broker(Settings(), client=client)
    broker.declare_queue("q")
    consumer = broker.consume("q", prefetch=1, timeout=LONG_POLL_MS)
    assert isinstance(consumer, DoorbellConsumer)
    consumer.misses = 30  # its backoff grown to the longest
    woken: list[bool] = []
    asleep = threading.Event()
    wait = consumer.wait

    def waits(seconds: float) -> bool:
        asleep.set()
        woken.append(wait(seconds))
        return woken[-1]

    consumer.wait = waits  # type: ignore[method-assign]
    received: list[Any] = []
    waiting = threading.Thread(target=lambda: received.extend([next(consumer), next(consumer)]))
    try:
        waiting.start()
        # (sent once it waits: sent before, the message is simply fetched, no doorbell needed)
        assert asleep.wait(GRACE_SEC), "the consumer never went to wait on its empty queue"
        # When a message is sent to that queue
        sent = broker.enqueue(_message())
        # Then the consumer wakes up at the doorbell (not at the end of its wait) and
        # takes it
        waiting.join(GRACE_SEC)
        assert not waiting.is_alive(), "the consumer slept through the doorbell"
        assert woken == [True]
        assert [m.message_id for m in received if m is not None] == [sent.message_id]
    finally:
        waiting.join()
        consumer.close()
        broker.close()


def test_every_enqueue_rings_and_the_doorbell_stays_small(redis_server: RedisServer):
    # Given Sparkle's broker on a real Redis
    broker = _broker(redis_server)
    client = redis_server.client()
    bell = keys.doorbell(broker.namespace, "q")
    try:
        # When more messages are sent than a doorbell keeps tokens, to nobody
        for _ in range(MAX_TOKENS + 10):
            broker.enqueue(_message())
        # Then each rang, up to the cap, and the doorbell expires if nobody answers
        assert client.llen(bell) == MAX_TOKENS
        assert 0 < client.pttl(bell) <= 60_000
        # and a delayed message (a retry) rings its delay queue's doorbell
        broker.enqueue(_message(), delay=60_000)
        assert client.llen(keys.doorbell(broker.namespace, "q.DQ")) == 1
    finally:
        broker.close()


def test_a_consumer_that_cannot_take_more_leaves_the_token_to_others(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch):
    # Given a consumer holding as many messages as it may prefetch, a token waiting, and
    # a backoff grown to a long poll
    from sparkle import doorbell

    broker = _broker(redis_server)
    client = redis_server.client()
    consumer = broker.consume("q", prefetch=1, timeout=LONG_POLL_MS)
    slept: list[float] = []
    monkeypatch.setattr(doorbell.time, "sleep", slept.append)
    try:
        broker.enqueue(_message())
        held = next(consumer)
        assert held is not None
        client.delete(keys.doorbell(broker.namespace, "q"))
        broker.enqueue(_message())
        consumer.misses = 30
        # When it looks for more
        assert next(consumer) is None
        # Then it slept rather than took the token another process's consumer can use,
        # and briefly: it acknowledges finished messages only between two sleeps
        assert client.llen(keys.doorbell(broker.namespace, "q")) == 1
        assert slept and max(slept) <= doorbell.FULL_SLEEP_SEC
        consumer.ack(held)
    finally:
        consumer.close()
        broker.close()


def test_a_wait_ends_before_the_socket_timeout(redis_server: RedisServer):
    # Given a broker whose Redis connections time out after half a second
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=0.5)
    broker = build_redis_broker(Settings(), client=client)
    broker.declare_queue("q")
    consumer = broker.consume("q", prefetch=1, timeout=LONG_POLL_MS)
    try:
        # When its consumer waits on an idle queue for longer than that
        assert isinstance(consumer, DoorbellConsumer)
        # Then the wait gives up first, without a timeout error
        assert consumer.wait(LONG_POLL_MS / 1000) is False
    finally:
        consumer.close()
        broker.close()


def test_a_wait_longer_than_redis_pys_default_socket_timeout_ends_in_time(
        redis_server: RedisServer):
    # Given a broker built from a URL alone (redis-py then times a reply out after 5 s)
    broker = _broker(redis_server)
    consumer = broker.consume("q", prefetch=1, timeout=LONG_POLL_MS)
    try:
        # When its consumer would wait longer than that on an idle queue
        assert isinstance(consumer, DoorbellConsumer)
        # Then the wait is cut short of the socket's timeout, and ends without an error
        assert consumer.max_wait is not None and consumer.max_wait < 5
    finally:
        consumer.close()
        broker.close()

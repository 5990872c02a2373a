"""Round trips on a connection each thread keeps (sparkle.roundtrip), against a real
redis-server: replies in order, errors that keep the connection in step, and recovery
from a connection Redis closed meanwhile."""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from typing import Any

import dramatiq
import pytest
import redis
from redis_server import RedisServer

from sparkle import roundtrip

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


class IdleProxy:
    """A TCP proxy that forgets a connection idle for ``idle`` seconds without telling
    either end, and resets it at the client's next request: what a NAT or a cloud load
    balancer with an idle timeout does."""

    def __init__(self, upstream: tuple[str, int], idle: float) -> None:
        self.upstream = upstream
        self.idle = idle
        self.resets = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def _pipe(self, client: socket.socket, server: socket.socket) -> None:
        last = time.monotonic()
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 0.05)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client and time.monotonic() - last > self.idle:
                        self.resets += 1  # forgotten: reset the client, drop the request
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
                        return
                    (server if sock is client else client).sendall(data)
                    last = time.monotonic()
        finally:
            client.close()
            server.close()


def test_replies_come_back_in_order(client: redis.Redis):
    """Several commands in one round trip return one reply each, in the order sent."""
    replies = roundtrip.execute(client, ("SET", "k", "1", "NX", "PX", 60000), ("GET", "k"),
                                ("SET", "k", "2", "NX"), ("INCR", "n"))
    assert replies == [b"OK", b"1", None, 1]


def test_an_error_reply_is_raised_after_every_reply_is_read(client: redis.Redis):
    """An error in the middle is raised, the commands around it still run, and the next
    round trip on the same connection gets its own replies, not the leftovers."""
    client.set("text", "x")
    own_id = roundtrip.execute(client, ("CLIENT", "ID"))[0]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        roundtrip.execute(client, ("SET", "before", "1"), ("HGET", "text", "f"),
                          ("SET", "after", "1"))
    assert client.get("before") == b"1" and client.get("after") == b"1"
    assert roundtrip.execute(client, ("GET", "text"), ("CLIENT", "ID")) == [b"x", own_id]


def test_a_connection_closed_by_redis_is_replaced(client: redis.Redis):
    """After Redis drops the thread's connection (a restart, an idle timeout, CLIENT KILL)
    the next round trip reconnects instead of failing."""
    assert roundtrip.execute(client, ("CLIENT", "ID"))[0]
    own_id = roundtrip.execute(client, ("CLIENT", "ID"))[0]
    client.execute_command("CLIENT", "KILL", "ID", own_id)
    assert roundtrip.execute(client, ("SET", "k", "v"), ("GET", "k")) == [b"OK", b"v"]
    assert roundtrip.execute(client, ("CLIENT", "ID"))[0] != own_id


def test_each_thread_keeps_its_own_connection(client: redis.Redis):
    """Threads never share a connection (their replies would mix); one thread reuses its
    own across round trips."""
    ids: dict[str, list[int]] = {}

    def work(name: str) -> None:
        ids[name] = [roundtrip.execute(client, ("CLIENT", "ID"))[0] for _ in range(3)]

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(set(found)) == 1 for found in ids.values())
    assert len({found[0] for found in ids.values()}) == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_use_its_parents_connection(client: redis.Redis):
    """A worker process forked after its parent made a round trip opens its own
    connection: sharing the socket would interleave both processes' replies."""
    parent_id = roundtrip.execute(client, ("CLIENT", "ID"))[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            child_id = roundtrip.execute(client, ("CLIENT", "ID"))[0]
            os.write(write, str(child_id).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = int(os.read(read, 100) or b"0")
    os.waitpid(pid, 0)
    assert child_id and child_id != parent_id
    assert roundtrip.execute(client, ("CLIENT", "ID"))[0] == parent_id


def test_the_broker_reloads_its_scripts_when_redis_lost_them(redis_server: RedisServer):
    """The broker's Lua calls go through the threads' own connections; after Redis forgets
    its scripts (a restart, SCRIPT FLUSH) the next enqueue, fetch and ack send the script
    text again instead of failing with NOSCRIPT."""
    import dramatiq

    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    broker = build_redis_broker(Settings(redis_url=redis_server.url))  # type: ignore[call-arg]
    client = redis_server.client()
    broker.declare_queue("q")
    sent = dramatiq.Message(queue_name="q", actor_name="a", args=(1,), kwargs={}, options={})
    client.script_flush()
    broker.enqueue(sent)
    client.script_flush()
    consumer = broker.consume("q", prefetch=1, timeout=1000)
    try:
        received = next(consumer)
        assert received is not None and received.message_id == sent.message_id
        client.script_flush()
        consumer.ack(received)
    finally:
        consumer.close()
    assert client.llen(f"{broker.namespace}:q") == 0
    assert client.hlen(f"{broker.namespace}:q.msgs") == 0


def test_an_ack_redis_does_not_answer_in_time_is_a_lost_connection_to_dramatiq(
        redis_server: RedisServer):
    """Redis stalls past the socket timeout while a consumer acks: dramatiq handles a lost
    connection (ConnectionClosed: the ack is tried again until Redis answers) but takes
    any other error for a bug and never acks the message (dramatiq #894). The broker's
    calls raise a timeout as a lost connection; once Redis answers, the ack goes through."""
    import signal

    from dramatiq.errors import ConnectionClosed

    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=0.5)
    broker = build_redis_broker(Settings(), client=client)
    broker.declare_queue("q")
    broker.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(1,), kwargs={},
                                    options={}))
    consumer = broker.consume("q", prefetch=1, timeout=1000)
    assert redis_server.process is not None
    try:
        received = next(consumer)
        assert received is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(ConnectionClosed):
                consumer.ack(received)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        consumer.ack(received)  # what dramatiq's retry does
    finally:
        consumer.close()
    assert redis_server.client().hlen(f"{broker.namespace}:q.msgs") == 0


def test_a_connection_idle_too_long_is_replaced_before_a_middlebox_resets_it(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch):
    """A thread's connection sits idle while its stage runs; a NAT or load balancer may
    forget it meanwhile and reset the next request after it was sent, when it can no
    longer be resent (the fencing check would fail and the stage's work be lost). A
    connection idle longer than IDLE_RECONNECT_SEC is replaced before it is used."""
    proxy = IdleProxy(("127.0.0.1", redis_server.port), idle=0.5)
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=5)
    monkeypatch.setattr(roundtrip, "IDLE_RECONNECT_SEC", 0.3)
    assert roundtrip.execute(client, ("SET", "k", "v")) == [b"OK"]
    time.sleep(1.0)  # a stage runs; the proxy forgets the connection
    assert roundtrip.execute(client, ("GET", "k")) == [b"v"]
    assert proxy.resets == 0
    proxy.listener.close()


def test_a_read_is_sent_again_when_its_connection_fails_after_sending(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch):
    """A connection dropped sooner than IDLE_RECONNECT_SEC (a NAT evicting flows early, a
    load balancer failing over) fails a request after it was sent. A read, such as the
    fencing check at the end of a stage, is sent again on a new connection instead of
    failing the stage; a write is not, as it may have run."""
    proxy = IdleProxy(("127.0.0.1", redis_server.port), idle=0.5)
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=5)
    monkeypatch.setattr(roundtrip, "IDLE_RECONNECT_SEC", 30.0)
    assert roundtrip.execute(client, ("SET", "k", "v")) == [b"OK"]
    time.sleep(1.0)
    assert roundtrip.execute(client, ("GET", "k"), idempotent=True) == [b"v"]
    assert proxy.resets == 1
    time.sleep(1.0)
    with pytest.raises(redis.ConnectionError):
        roundtrip.execute(client, ("INCR", "n"))
    assert proxy.resets == 2
    proxy.listener.close()


def test_the_socket_timeout_still_holds_without_polling(redis_server: RedisServer):
    """The connection's socket timeout is enforced by the kernel (``SO_RCVTIMEO``) on a
    blocking socket, which spares a poll before every send and receive: a reply slower
    than the timeout still fails the call after about that long, as a TimeoutError."""
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=0.3)
    assert roundtrip.execute(client, ("PING",)) == [b"PONG"]
    sock = roundtrip._connections(client).connection._sock
    assert sock.gettimeout() is None  # blocking: Python does not poll before each call
    assert struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)) \
        == (0, 300_000)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError, match="socket timeout"):
        roundtrip.execute(client, ("BLPOP", "never-pushed", "5"))  # Redis answers after 5 s
    assert time.monotonic() - started < 3
    assert roundtrip.execute(client, ("PING",)) == [b"PONG"]  # a new connection works


def test_requests_safe_to_repeat_skip_the_open_check_and_survive_a_killed_connection(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch):
    """Only a request that must not run twice pays a poll to check its connection is
    still open; one safe to repeat (the fencing read, the lease release, an ack) goes
    straight out and, when Redis had closed the connection, is sent again on a new one:
    either way the caller sees no error."""
    polls: list[object] = []
    real_closed = roundtrip._closed
    monkeypatch.setattr(roundtrip, "_closed", lambda c: polls.append(c) or real_closed(c))
    assert roundtrip.execute(client, ("SET", "k", "v")) == [b"OK"]  # (connects)
    assert roundtrip.execute(client, ("INCR", "n")) == [1]
    assert len(polls) == 1  # checked before the write
    assert roundtrip.execute(client, ("GET", "k"), idempotent=True) == [b"v"]
    assert len(polls) == 1  # not before the read
    own_id = roundtrip.execute(client, ("CLIENT", "ID"))[0]
    client.execute_command("CLIENT", "KILL", "ID", own_id)
    assert roundtrip.execute(client, ("GET", "k"), idempotent=True) == [b"v"]
    assert roundtrip.execute(client, ("CLIENT", "ID"))[0] != own_id
    # The lease release (with the next stage's mark) on a killed connection
    from sparkle.lease import Lease

    lease = Lease(client, "sparkle", "run-1", 10)
    assert lease.acquire()
    before = len(polls)
    own_id = roundtrip.execute(client, ("CLIENT", "ID"))[0]
    client.execute_command("CLIENT", "KILL", "ID", own_id)
    assert lease.release(also=(("SET", "mark", "images 1"),))
    assert len(polls) == before + 1  # (only the CLIENT ID above)
    assert client.get(lease.key) is None and client.get("mark") == b"images 1"


def test_the_brokers_ack_is_sent_as_safe_to_repeat(redis_server: RedisServer,
                                                   monkeypatch: pytest.MonkeyPatch):
    """Of the broker's Lua calls only the ack is sent as safe to repeat (it removes a
    message from its queue's ack set); an enqueue or a fetch is not."""
    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    broker = build_redis_broker(Settings(redis_url=redis_server.url, namespace="ack-test"))
    sent: list[tuple[str, bool]] = []
    real_execute = roundtrip.execute

    def execute(client: redis.Redis, *commands: Any, idempotent: bool = False) -> Any:
        command = commands[0]  # (EVALSHA sha 1 namespace command ...)
        if command[0] == "EVALSHA":
            sent.append((command[4], idempotent))
        return real_execute(client, *commands, idempotent=idempotent)

    monkeypatch.setattr(roundtrip, "execute", execute)
    message = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    broker.declare_queue("q")
    broker.enqueue(message)
    consumer = broker.consume("q", prefetch=1, timeout=1000)
    received = next(consumer)
    consumer.ack(received)
    consumer.close()
    broker.close()
    assert ("enqueue", False) in sent and ("fetch", False) in sent and ("ack", True) in sent


def test_a_send_that_times_out_is_not_sent_again(redis_server: RedisServer,
                                                 monkeypatch: pytest.MonkeyPatch):
    """A request whose sending timed out may be partly in Redis's buffer, whole commands
    of it included; sending it again on a new connection could run those twice. It is
    raised as a timeout instead, and no new connection is made for it."""
    import signal

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=0.5)
    assert roundtrip.execute(client, ("DEL", "n", "big")) == [0]
    connects: list[object] = []
    real_connect = roundtrip._connect
    monkeypatch.setattr(roundtrip, "_connect", lambda c: connects.append(c) or real_connect(c))
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # Redis stops reading
    try:
        with pytest.raises(redis.TimeoutError):
            roundtrip.execute(client, ("INCR", "n"), ("APPEND", "big", b"x" * 50_000_000))
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert connects == []
    assert roundtrip.execute(client, ("PING",)) == [b"PONG"]  # then a new connection
    assert len(connects) == 1

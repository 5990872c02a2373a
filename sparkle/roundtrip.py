"""A few Redis commands in one round trip, on a connection the calling thread keeps.

Every stage hop makes three round trips of its own (take the lease, fence, release and
mark the next stage). Through redis-py's client each one takes a connection from the pool
and gives it back, polls it for stray replies and updates observability counters: about
85 µs of CPU for a two-command pipeline and 46 µs for a ``GET`` on this machine, against
29 µs and 22 µs on a connection the thread holds (redis-py 8.1, hiredis; see
docs/BENCHMARKS.md). So each thread that runs stages keeps one connection, made by the
client's own pool settings (host, TLS, password, timeouts, or fakeredis in embedded mode).

Before a request that must not run twice goes out, a non-blocking poll checks the
connection is still open (Redis may have closed it: a restart, an idle timeout); a closed
one is replaced, and so is one found closed or reset while the request is being *sent*:
Redis never read it. A send that times out is raised instead, since Redis may yet read
part of it. A connection idle for more than :data:`IDLE_RECONNECT_SEC` is replaced too,
unchecked: a thread's connection sits idle while its stage runs, and a NAT or cloud load
balancer may have forgotten it meanwhile without telling either end (the first request
would then be reset after it was sent, when it can no longer be safely resent). A failure
while reading replies is raised, since the commands may have run; the connection is
dropped, as its replies would be out of step.

A request that is safe to run twice (``idempotent``: the fencing read, the lease release,
dramatiq's ack) skips the poll and, after any failure, is sent once more on a new
connection.

Socket timeouts are enforced by the kernel on plain TCP and Unix sockets (see
:func:`_kernel_timeouts`). The savings quoted assume redis-py 8.1; older versions reset a
socket's Python timeout on every readiness check, which is still correct, only slower.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import weakref
from typing import Any

import hiredis
import redis

#: One Redis command: its name and arguments, as ``redis-cli`` takes them.
Command = tuple[Any, ...]


#: A thread's connection idle longer than this is replaced before its next request. Well
#: under the idle timeouts of NATs and load balancers (30 s and more), and long enough
#: that a busy worker keeps its connections.
IDLE_RECONNECT_SEC = 10.0


class _Connections(threading.local):
    # A redis.connection.AbstractConnection; its methods are untyped, hence Any.
    connection: Any = None
    #: When the connection was last used (time.monotonic()).
    used: float = 0.0


_local: weakref.WeakKeyDictionary[redis.Redis, _Connections] = weakref.WeakKeyDictionary()
_local_lock = threading.Lock()


def execute(client: redis.Redis, *commands: Command, idempotent: bool = False) -> list[Any]:
    """Send ``commands`` in one round trip and return their replies, in order.

    With ``idempotent`` (reads, such as the fencing check), a connection that fails after
    the request was sent is replaced and the request sent once more: running it twice
    does no harm. Otherwise that failure is raised, as the commands may have run; such a
    request is sent only after a poll found its connection still open, where an
    idempotent one skips the poll (a system call) and is simply sent again when the
    connection turns out closed.

    Raises the first error reply (``redis.ResponseError``) once every reply is read, and
    ``redis.ConnectionError``/``redis.TimeoutError`` when Redis cannot be reached.
    """
    # hiredis packs directly; redis-py's packer checks and copies every argument first.
    request = [b"".join([hiredis.pack_command(command) for command in commands])]
    connections = _connections(client)
    try:
        try:
            return _round_trip(client, connections, request, len(commands),
                               check=not idempotent)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            if not idempotent:
                raise
            return _round_trip(client, connections, request, len(commands), check=False)
    except redis.ConnectionError as exc:
        if _timed_out(exc):  # a kernel timeout, raised by redis-py as a ConnectionError
            raise redis.TimeoutError(
                f"Redis did not answer within the socket timeout ({exc})"
            ) from exc
        raise


def _round_trip(client: redis.Redis, connections: _Connections, request: list[bytes],
                count: int, check: bool) -> list[Any]:
    connection = connections.connection
    now = time.monotonic()
    if (connection is None or connection.pid != os.getpid()
            or now - connections.used > IDLE_RECONNECT_SEC or (check and _closed(connection))):
        if connection is not None and connection.pid == os.getpid():
            connection.disconnect()
        connection = connections.connection = _connect(client)
    connections.used = now
    try:
        connection.send_packed_command(request, check_health=False)
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        connection.disconnect()
        connections.connection = None
        if _timed_out(exc):
            raise  # part of the request may be in Redis's buffer: not safe to send again
        connection = connections.connection = _connect(client)
        connection.send_packed_command(request, check_health=False)
    replies: list[Any] = []
    error: redis.ResponseError | None = None
    try:
        for _ in range(count):
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                error = error or exc
                replies.append(exc)
    except BaseException:
        connections.connection = None
        connection.disconnect()
        raise
    if error is not None:
        raise error
    return replies


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a socket timeout: Python's, or the kernel's ``EAGAIN``."""
    return isinstance(exc, redis.TimeoutError | TimeoutError) or isinstance(
        exc.__context__, BlockingIOError)


def _connections(client: redis.Redis) -> _Connections:
    found = _local.get(client)
    if found is None:
        with _local_lock:
            found = _local.setdefault(client, _Connections())
    return found


def _closed(connection: Any) -> bool:
    """Whether Redis closed the idle ``connection`` (it reads as ready: end of file)."""
    try:
        if not connection.can_read(timeout=0):
            return False
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        pass
    connection.disconnect()  # closed, or stray bytes that would be read as our replies
    return True


def _connect(client: redis.Redis) -> Any:
    pool = client.connection_pool
    connection: Any = pool.connection_class(**pool.connection_kwargs)
    connection.connect()
    _kernel_timeouts(connection)
    return connection


def _kernel_timeouts(connection: Any) -> None:
    """Have the kernel enforce the connection's socket timeout, not Python.

    A Python socket with a timeout polls before every send and every receive: a system
    call each, and each hands the GIL to another thread. A blocking socket with
    ``SO_SNDTIMEO``/``SO_RCVTIMEO`` fails after the same time without the polls (the
    call returns ``EAGAIN``; :func:`execute` raises that as a ``redis.TimeoutError``).
    Other sockets (TLS, fakeredis) are left as they are: they keep Python's timeouts.
    """
    sock = getattr(connection, "_sock", None)
    # Exactly a kernel socket: not TLS, whose blocking reads retry the kernel's EAGAIN
    # inside OpenSSL (want-read) and would then never time out.
    if type(sock) is not socket.socket:
        return
    timeout = sock.gettimeout()
    if not timeout:
        return
    seconds = int(timeout)
    packed = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, packed)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, packed)
    sock.settimeout(None)

"""tests/unit holds tests that touch no server and no worker: no dramatiq Worker started
(nor ``pipeline.work``, which starts one), no redis-server (the ``redis_server`` fixture,
``RedisServer``), no TCP connection to a Redis, no ``sparkle worker`` or ``dramatiq``
process. fakeredis and a StubBroker without a worker are fine. Tests that need more live in
tests/integration.

The fixture below, autouse from tests/conftest.py, makes such a unit test fail, even where
the code under test catches the error it raises (the engine does, for Redis errors).
tests/integration/test_unit_guard.py shows it trips.

(It is not a tests/unit/conftest.py: a second module named ``conftest`` would replace the
first in ``sys.modules``, and the tests that ``from conftest import make_pipeline`` at run
time would get the wrong one.)
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis.connection
from redis_server import RedisServer

UNIT = Path(__file__).parent / "unit"
RULE = ("tests/unit is for tests that touch no server and no worker "
        "(see tests/unit_guard.py): move this test to tests/integration")


class ServerOrWorkerInUnitTest(AssertionError):
    """A unit test started a worker or a server, or opened a connection to Redis."""


def _is_worker_or_server(argv: Any) -> str | None:
    """What a child process with this command line would be, if a worker or a server."""
    if isinstance(argv, str | bytes | Path):
        argv = [argv]
    words = [Path(str(word)).name for word in argv]
    if "redis-server" in words[:1]:
        return "a redis-server process"
    if "dramatiq" in words[:3]:
        return "a dramatiq worker process"
    if "worker" in words and any(word.startswith("sparkle") for word in words[:3]):
        return "a `sparkle worker` process"
    return None


@pytest.fixture(autouse=True)
def no_server_and_no_worker_in_unit_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """In tests/unit, refuse, and fail the test for, any worker, server or Redis connection
    it starts."""
    if not request.path.is_relative_to(UNIT):
        yield
        return
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _guard(monkeypatch, request)


def _guard(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[None]:
    trips: list[str] = []
    # Threads an earlier test left running (a stage slot's renewer, say) are not this
    # test's doing: their connections go through as they would without the guard.
    earlier = set(threading.enumerate()) - {threading.main_thread()}

    def refuse(what: str) -> None:
        message = f"{request.node.nodeid} {what}: {RULE}"
        trips.append(message)
        raise ServerOrWorkerInUnitTest(message)

    def worker_start(self: dramatiq.Worker) -> None:
        refuse("started a dramatiq Worker")

    def server_start(self: RedisServer) -> None:
        refuse("started a redis-server")

    real_connect = redis.connection.Connection._connect

    def connect(self: redis.connection.Connection) -> Any:
        if threading.current_thread() in earlier:
            return real_connect(self)
        refuse(f"opened a TCP connection to Redis at {self.host}:{self.port}")

    popen_init = subprocess.Popen.__init__

    def popen(self: subprocess.Popen[Any], args: Any, *rest: Any, **options: Any) -> None:
        what = _is_worker_or_server(args)
        if what is not None:
            refuse(f"started {what}")
        popen_init(self, args, *rest, **options)

    monkeypatch.setattr(dramatiq.Worker, "start", worker_start)
    monkeypatch.setattr(RedisServer, "start", server_start)
    monkeypatch.setattr(redis.connection.Connection, "_connect", connect)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    yield
    if trips:
        pytest.fail(trips[0], pytrace=False)

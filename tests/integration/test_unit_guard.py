"""The guard of tests/unit (tests/unit_guard.py) trips: a unit test that starts a dramatiq
Worker or a redis-server, opens a connection to Redis or starts a `sparkle worker` process
fails with the rule in its message, even if it swallows the error; fakeredis and a
StubBroker without a worker pass, a thread an earlier test left running is not held against
the next one, and the same code outside tests/unit is left alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parents[1]

UNIT_TESTS = '''
import sys
import threading
import time
from pathlib import Path

import dramatiq
import fakeredis
import redis
from dramatiq.brokers.stub import StubBroker
from redis_server import RedisServer, free_port


def test_starts_a_worker():
    dramatiq.Worker(StubBroker(), worker_threads=1).start()


def test_swallows_the_refused_worker():
    try:
        dramatiq.Worker(StubBroker(), worker_threads=1).start()
    except Exception:
        pass


def test_starts_a_redis_server(tmp_path):
    RedisServer(tmp_path).start()


def test_uses_the_redis_server_fixture(redis_server):
    pass


def test_connects_to_redis():
    redis.Redis(port=free_port(), socket_connect_timeout=1).ping()


def test_starts_a_sparkle_worker_process():
    import subprocess

    subprocess.run([str(Path(sys.executable).parent / "sparkle"), "worker", "--help"])


def test_fakeredis_and_a_stub_broker_without_a_worker_are_fine():
    client = fakeredis.FakeRedis()
    client.set("k", "v")
    broker = StubBroker()
    broker.declare_queue("q")
    broker.enqueue(dramatiq.Message("q", "a", (), {}, {}))
    assert client.get("k") == b"v" and broker.queues["q"].qsize() == 1


go, seen = threading.Event(), []


def connect_later():
    go.wait(30)
    try:
        redis.Redis(port=free_port(), socket_connect_timeout=1).ping()
    except Exception as exc:
        seen.append(type(exc).__name__)


def test_leaves_a_thread_behind():
    threading.Thread(target=connect_later, daemon=True).start()


def test_a_thread_an_earlier_test_left_is_not_this_tests_doing():
    go.set()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == ["ConnectionError"]
'''

INTEGRATION_TEST = '''
import dramatiq
from dramatiq.brokers.stub import StubBroker


def test_a_worker_is_fine_here():
    worker = dramatiq.Worker(StubBroker(), worker_threads=1)
    worker.start()
    worker.stop()
'''

TRIPPED = {
    "test_starts_a_worker": "started a dramatiq Worker",
    "test_swallows_the_refused_worker": "started a dramatiq Worker",
    "test_starts_a_redis_server": "started a redis-server",
    "test_uses_the_redis_server_fixture": "started a redis-server",
    "test_connects_to_redis": "opened a TCP connection to Redis",
    "test_starts_a_sparkle_worker_process": "started a `sparkle worker` process",
}


def test_the_unit_guard_fails_unit_tests_that_start_a_worker_or_a_server(tmp_path: Path):
    # Given a copy of the tests' conftest and guard, a unit test of each forbidden kind,
    # and an integration test that starts a worker
    tests = tmp_path / "tests"
    (tests / "unit").mkdir(parents=True)
    (tests / "integration").mkdir()
    for name in ("conftest.py", "unit_guard.py", "redis_server.py"):
        shutil.copy(TESTS / name, tests / name)
    (tests / "unit" / "test_forbidden.py").write_text(UNIT_TESTS)
    (tests / "integration" / "test_allowed.py").write_text(INTEGRATION_TEST)
    # When pytest runs them
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEp", "--tb=short",
         "--rootdir", str(tmp_path), "-c", "/dev/null", str(tests)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    out = result.stdout + result.stderr
    # Then each forbidden test fails, naming itself, what it did, and the rule
    assert result.returncode == 1, out
    for test, did in TRIPPED.items():
        failed = [line for line in out.splitlines()
                  if line.startswith(("FAILED", "ERROR")) and f"::{test}" in line]
        assert failed, f"{test} did not fail:\n{out}"
        assert f"unit/test_forbidden.py::{test} {did}" in out, out
    assert "tests/unit is for tests that touch no server and no worker" in out
    assert "move this test to tests/integration" in out
    # And the allowed ones pass, a thread an earlier test left connecting as well
    for test in ("test_fakeredis_and_a_stub_broker_without_a_worker_are_fine",
                 "test_leaves_a_thread_behind",
                 "test_a_thread_an_earlier_test_left_is_not_this_tests_doing"):
        assert f"PASSED tests/unit/test_forbidden.py::{test}" in out, out
    assert "PASSED tests/integration/test_allowed.py::test_a_worker_is_fine_here" in out, out

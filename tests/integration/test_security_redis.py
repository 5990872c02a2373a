"""The security surfaces that need a real Redis, a worker or whole runs (the others are in
tests/unit/test_security.py).

What each test protects is written in docs/SECURITY.md. In short:

- with a Redis password (in the URL's user part or its query), no log or output shows
  it, and password-protected and TLS (``rediss://``) Redis work, with certificate and
  host name checks on, and TLS reads still time out;
- stage messages are JSON; a pickled message planted in a queue is never unpickled;
- the only listener (the Prometheus endpoint) binds to loopback unless told otherwise,
  and nothing listens when it is off;
- files and folders a run creates are never writable by others, and a private umask is
  respected.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import redis
from redis_server import RedisServer, free_port
from security_helpers import BIN, PLAIN_SECRET, SECRET, SECRET_IN_URL, sparkle, sparkle_env

from sparkle.settings import Settings

REPO = Path(__file__).parents[2]
PLANS = REPO / "tests" / "data" / "plans"


# -- a password-protected Redis --------------------------------------------------------------


def start_redis(folder: Path, *extra: str, tls: bool = False) -> RedisServer:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server binary missing: apt-get install -y redis-server")
    server = RedisServer(folder, extra=extra, tls=tls)
    server.start()
    return server


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that requires SECRET as its password."""
    server = start_redis(tmp_path / "redis", "--requirepass", SECRET)
    yield server
    server.stop()


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    assert secret not in text
    assert quote(secret, safe="") not in text


@pytest.mark.redis
def test_a_password_protected_redis_works_and_no_log_shows_the_password(
    password_redis: RedisServer, tmp_path: Path
):
    """With the password in SPARKLE_REDIS_URL, `sparkle run` and `sparkle submit` plus a
    `dramatiq actors` worker render runs; debug logs (text and JSON) of all of them, and
    the worker processes' command lines, never contain the password."""
    # Given a Redis that needs a password, and its URL with the password in it
    url = f"redis://:{SECRET_IN_URL}@127.0.0.1:{password_redis.port}/0"
    plan = str(PLANS / "lighthouse.json")
    # When I render a plan in the foreground with debug logs
    ran = sparkle(tmp_path, url, "--log-level", "debug", "run", plan)
    # Then it succeeded (the password worked) and the output does not show it
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert_no_secret(ran.stdout + ran.stderr)
    # When a verbose dramatiq worker works a submitted plan, logging JSON
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [str(BIN / "dramatiq"), "actors", "-p", "1", "-t", "2", "-v"],
            env=sparkle_env(tmp_path, url),
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        other = tmp_path / "rooftop.json"
        other.write_bytes((PLANS / "rooftop.json").read_bytes())
        submitted = sparkle(
            tmp_path, url, "--log-level", "debug", "--log-format", "json", "submit", str(other)
        )
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        run_id = submitted.stdout.split()[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = sparkle(tmp_path, None, "status", run_id, "--json")
            if json.loads(status.stdout)["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.3)
        assert json.loads(status.stdout)["status"] == "succeeded"
        # Then no worker process has the password on its command line
        for process in [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(True)]:
            assert_no_secret(" ".join(process.cmdline()))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    # And no log line of the submitter or the worker shows it
    assert_no_secret(submitted.stdout + submitted.stderr)
    worker_log = log_path.read_text(errors="replace")
    assert "sparkle_script" in worker_log or "Worker" in worker_log  # it did log
    assert_no_secret(worker_log)


@pytest.mark.redis
@pytest.mark.parametrize(
    "make_url",
    [
        pytest.param(
            lambda port: f"redis://:wrong-{PLAIN_SECRET}@127.0.0.1:{port}/0", id="wrong-password"
        ),
        pytest.param(
            lambda port: f"redis://:{PLAIN_SECRET}@127.0.0.1:{free_port()}/0",
            id="nothing-listening",
        ),
        pytest.param(
            lambda port: f"redis://:{PLAIN_SECRET}@127.0.0.1:notaport/0", id="malformed-port"
        ),
        pytest.param(
            lambda port: f"redis://:{PLAIN_SECRET}@127.0.0.1:{port}/0?socket_timeout=x",
            id="malformed-query",
        ),
    ],
)
def test_connection_errors_do_not_show_the_password(
    password_redis: RedisServer, tmp_path: Path, make_url: Any
):
    """A wrong password, a server that is not there or a malformed URL makes `sparkle
    submit` fail with a message, and neither the message nor any log shows the password."""
    url = make_url(password_redis.port)
    result = sparkle(
        tmp_path, url, "--log-level", "debug", "submit", str(PLANS / "lighthouse.json"), timeout=60
    )
    assert result.returncode != 0
    assert result.stderr.strip()
    assert PLAIN_SECRET not in result.stdout + result.stderr


# -- TLS -------------------------------------------------------------------------------------


@dataclass
class TlsRedis:
    server: RedisServer
    ca: Path

    def url(self, host: str = "127.0.0.1", ca: bool = True) -> str:
        query = f"?ssl_ca_certs={self.ca}" if ca else ""
        return f"rediss://:{SECRET_IN_URL}@{host}:{self.server.port}/0{query}"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """A redis-server speaking only TLS, with a certificate for 127.0.0.1 (not localhost)
    signed by a throwaway CA, and a password."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Sparkle test CA",
        cwd=certs,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=certs,
    )
    (certs / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        cwd=certs,
    )
    try:
        server = start_redis(
            tmp_path / "redis",
            "--tls-cert-file",
            str(certs / "server.pem"),
            "--tls-key-file",
            str(certs / "server.key"),
            "--tls-ca-cert-file",
            str(certs / "ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            SECRET,
            tls=True,
        )
    except RuntimeError as exc:
        pytest.skip(f"this redis-server cannot serve TLS: {exc}")
    yield TlsRedis(server, certs / "ca.pem")
    server.stop()


@pytest.mark.redis
def test_rediss_works_through_build_client_and_build_broker(tls_redis: TlsRedis):
    """A rediss:// URL with the CA given connects the coordination client and the dramatiq
    broker over TLS: a key round-trips and an actor on that broker runs a message."""
    import dramatiq

    from sparkle.backends.redis import coordination_client as build_client
    from sparkle.broker import build_redis_broker

    settings = Settings(redis_url=tls_redis.url(), namespace="tls-test")
    # When I use the coordination client
    client = build_client(settings)
    client.set("tls-test:probe", b"over tls")
    # Then it reached the TLS server
    assert client.get("tls-test:probe") == b"over tls"
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    # When I send a message through a broker built from the same settings
    broker = build_redis_broker(settings)
    seen: list[str] = []

    def record(value: str) -> None:
        seen.append(value)

    actor = dramatiq.actor(
        record, broker=broker, actor_name="tls_record", queue_name="tls-test", max_retries=0
    )
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        actor.send("hello")
        broker.join("tls-test", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
        broker.close()
        client.close()
    # Then the actor ran it
    assert seen == ["hello"]


@pytest.mark.redis
@pytest.mark.parametrize(
    ("host", "ca", "reason"),
    [
        pytest.param("127.0.0.1", False, "certificate verify failed", id="unknown-ca"),
        pytest.param("localhost", True, "Hostname mismatch", id="wrong-host-name"),
    ],
)
def test_rediss_checks_the_certificate_and_the_host_name(
    tls_redis: TlsRedis, host: str, ca: bool, reason: str
):
    """Certificate verification and host name checking are on by default: a server whose
    CA is not trusted, or whose certificate names another host, is refused (and the error
    does not show the password)."""
    from sparkle.backends.redis import coordination_client as build_client

    client = build_client(Settings(redis_url=tls_redis.url(host=host, ca=ca)))
    with pytest.raises(redis.ConnectionError) as info:
        client.ping()
    assert reason in str(info.value)
    assert_no_secret(str(info.value))


@pytest.mark.redis
def test_a_whole_run_over_tls(tls_redis: TlsRedis, tmp_path: Path):
    """`sparkle run` renders a plan with its stages queued on a TLS Redis, and its debug
    output does not show the password."""
    result = sparkle(
        tmp_path, tls_redis.url(), "--log-level", "debug", "run", str(PLANS / "lighthouse.json")
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "succeeded" in result.stdout
    assert_no_secret(result.stdout + result.stderr)


# -- the message encoder ---------------------------------------------------------------------


@pytest.fixture
def redis_pipeline(redis_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The actors on a RedisBroker on a private real redis-server."""
    from conftest import _teardown_pipeline, make_pipeline

    from sparkle.backends.redis import coordination_client as build_client
    from sparkle.broker import build_redis_broker

    settings = Settings(redis_url=redis_server.url)
    pipeline = make_pipeline(
        tmp_path,
        monkeypatch,
        broker=build_redis_broker(settings),
        client=build_client(settings),
        SPARKLE_REDIS_URL=redis_server.url,
    )
    yield pipeline
    _teardown_pipeline()


@pytest.mark.redis
def test_stage_messages_are_stored_as_json(redis_pipeline: Any, redis_server: Any, plans_dir):
    """The encoder installed with the broker is dramatiq's JSONEncoder, and a stage message
    in Redis is a JSON document naming the actor and the run."""
    import dramatiq
    from dramatiq.encoder import JSONEncoder

    from sparkle import keys

    assert type(dramatiq.get_encoder()) is JSONEncoder
    run = redis_pipeline.create(plans_dir / "lighthouse.json")
    redis_pipeline.engine.dispatcher.send(run.run_id, "script")
    stored = redis_server.client().hgetall(keys.dramatiq_messages("sparkle", "script"))
    (body,) = stored.values()
    message = json.loads(body)
    assert message["actor_name"] == "sparkle_script"
    assert message["args"] == [run.run_id]


class _Exploit:
    """Unpickling this creates the file named by ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


@pytest.mark.redis
def test_a_pickled_message_planted_in_a_queue_is_never_unpickled(
    redis_pipeline: Any, redis_server: Any, tmp_path: Path
):
    """Someone who can write to Redis plants a pickle in a stage queue; the worker treats
    it as an undecodable message and never unpickles it (no code of the sender runs)."""
    import pickle

    import dramatiq

    from sparkle import keys

    # Given a pickle that would create a file when unpickled, queued like a real message
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(str(marker)))
    client = redis_server.client()
    client.hset(keys.dramatiq_messages("sparkle", "script"), "planted-1", payload)
    client.rpush(keys.dramatiq_queue("sparkle", "script"), "planted-1")
    # When a worker consumes the queue for a while
    worker = dramatiq.Worker(redis_pipeline.broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while client.llen(keys.dramatiq_queue("sparkle", "script")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        worker.stop()
    # Then it took the message and nothing was unpickled
    assert client.llen(keys.dramatiq_queue("sparkle", "script")) == 0
    assert not marker.exists()


# -- listeners -------------------------------------------------------------------------------


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of ``pid`` and its children."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    found = []
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def _start(tmp_path: Path, args: list[str], url: str | None, **env: str) -> Any:
    return subprocess.Popen(
        [str(BIN / "sparkle"), *args],
        env={**sparkle_env(tmp_path, url), **env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.redis
def test_the_metrics_endpoint_listens_on_loopback_only_by_default(
    redis_server: Any, tmp_path: Path
):
    """`sparkle worker` with a metrics port and no metrics host: the endpoint answers on
    127.0.0.1, and every listening socket of the supervisor and its worker processes is on
    a loopback address."""
    assert Settings().metrics_host == "127.0.0.1"
    port = free_port()
    process = _start(
        tmp_path, ["worker", "-p", "1", "-t", "1"], redis_server.url, SPARKLE_METRICS_PORT=str(port)
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    assert r.status == 200
                break
            except OSError:
                assert process.poll() is None, "sparkle worker exited"
                assert time.monotonic() < deadline, "the metrics endpoint never answered"
                time.sleep(0.1)
        time.sleep(1.0)  # let the worker processes finish starting
        listeners = _listening(process.pid)
    finally:
        _stop(process)
    assert port in {p for _, p in listeners}
    assert all(ipaddress.ip_address(address).is_loopback for address, _ in listeners), listeners


@pytest.mark.redis
@pytest.mark.parametrize(
    "command", [["serve"], ["worker", "-p", "1", "-t", "1"]], ids=["serve", "worker"]
)
def test_nothing_listens_when_metrics_are_off(
    redis_server: Any, tmp_path: Path, command: list[str]
):
    """Without SPARKLE_METRICS_PORT, `sparkle serve` and `sparkle worker` (all their
    processes) open no listening socket at all."""
    url = None if command[0] == "serve" else redis_server.url
    process = _start(tmp_path, [*command, "--adapters", "test"] if url is None else command, url)
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(process.pid).children(recursive=True)) < (url is not None):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        while not (tmp_path / "inbox").is_dir() and url is None:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2.0)  # past start-up
        assert process.poll() is None
        listeners = _listening(process.pid)
    finally:
        _stop(process)
    assert listeners == []


# -- file permissions ------------------------------------------------------------------------


def _modes(root: Path) -> dict[str, int]:
    modes = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(dirpath) / name
            modes[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return modes


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for the test; restored after."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


@pytest.mark.parametrize(
    ("mask", "forbidden"),
    [
        pytest.param(0o022, stat.S_IWGRP | stat.S_IWOTH, id="umask-022-nothing-writable-by-others"),
        pytest.param(0o077, 0o077, id="umask-077-nothing-for-group-or-others"),
    ],
)
def test_files_a_run_creates_are_never_open_to_others(
    pipeline: Any, plans_dir: Path, umask: Any, mask: int, forbidden: int
):
    """Under the common umask nothing a run creates (folders, JSON state, media, locks,
    the summary cache) is writable by group or others; under a private umask nothing is
    readable by them either: Sparkle never widens permissions."""
    from sparkle.runstore import RunStore

    # Given a process umask
    umask(mask)
    # When a run is created, rendered to the end and listed
    run = pipeline.create(plans_dir / "lighthouse.json")
    assert pipeline.work(run).status.value == "succeeded"
    RunStore(pipeline.runs_dir).summaries()
    # Then no file or folder in the runs folder has a forbidden permission bit
    modes = _modes(pipeline.runs_dir.parent)
    assert any(name.endswith(".summary.json") for name in modes)
    assert {name: oct(mode) for name, mode in modes.items() if mode & forbidden} == {}


# -- TLS timeouts ----------------------------------------------------------------------------


@pytest.mark.redis
def test_a_silent_tls_connection_still_times_out(tls_redis: TlsRedis):
    """Over TLS a request Redis does not answer in time fails after the socket timeout:
    a thread's own connection (sparkle.roundtrip) keeps Python's timeout there, since a
    blocking TLS read retries the kernel's timeout forever instead of failing."""
    import threading

    import redis

    from sparkle import roundtrip

    client = redis.Redis.from_url(tls_redis.url(), socket_timeout=0.5)
    assert roundtrip.execute(client, ("PING",)) == [b"PONG"]
    outcome: list[BaseException | None] = []

    def blocked_read() -> None:
        try:
            roundtrip.execute(client, ("BLPOP", "never-pushed", "30"))  # answered in 30 s
            outcome.append(None)
        except BaseException as exc:  # (checked below)
            outcome.append(exc)

    reader = threading.Thread(target=blocked_read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "the read over TLS did not time out"
    assert isinstance(outcome[0], redis.TimeoutError)

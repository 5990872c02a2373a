"""A private ``redis-server`` on a free port in a temporary folder, for tests that must stop,
restart or fill Redis. The session's shared Redis on 6379 is never touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server child process with no persistence, restartable on the same port.

    ``extra`` arguments go to redis-server (``--requirepass``, TLS files); with ``tls`` the
    port is its TLS port and the plain one is off.
    """

    def __init__(self, folder: Path, port: int | None = None, extra: Sequence[str] = (),
                 tls: bool = False) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.extra = list(extra)
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        ports = ["--port", "0", "--tls-port", str(self.port)] if self.tls else [
            "--port", str(self.port)]
        log = self.folder / "redis.log"
        self.process = subprocess.Popen(
            [binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(log), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A TCP accept, not a PING: that would need the password or TLS of some servers.
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                text = log.read_text() if log.exists() else ""
                self.process = None
                raise RuntimeError(f"redis-server exited: {text[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from redis_server import RedisServer
from unit_guard import no_server_and_no_worker_in_unit_tests  # noqa: F401 (autouse)

PLANS = Path(__file__).parent / "data" / "plans"


@pytest.fixture
def plans_dir() -> Path:
    """The example plans shipped with the tests (copies of shared/examples)."""
    return PLANS


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free port, stopped at the end of the test."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server binary missing: apt-get install -y redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@dataclass
class Pipeline:
    """An in-process pipeline on a fresh broker: its App, engine, broker, runs folder."""

    app: Any
    engine: Any
    broker: Any
    runs_dir: Path

    def create(self, plan_path: Path, **metadata: str) -> Any:
        """Create a run from a plan file, with extra metadata (e.g. faults)."""
        from sparkle.plans import load_plan_file

        plan = load_plan_file(plan_path, 1 << 20)
        plan.metadata.update(metadata)
        run, _ = self.engine.store.create(plan)
        return run

    def work(self, run: Any, threads: int = 2) -> Any:
        """Queue the run's first unfinished stage and work the chain until it rests."""
        from rich.console import Console

        from sparkle.runner import work_in_foreground

        return work_in_foreground(run, self.app, threads, Console(file=io.StringIO()))


def make_pipeline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    broker: Any = None,
    client: Any = None,
    **env: str,
) -> Pipeline:
    """A pipeline on the test adapters: embedded, or with ``broker`` and ``client`` (a
    RedisBroker and its Redis client, real or fakeredis) on the Redis backend."""
    from sparkle.app import App
    from sparkle.backends.redis import RedisBackend
    from sparkle.settings import load_settings

    settings_env = {
        "SPARKLE_RUNS_DIR": str(tmp_path / "runs"),
        "SPARKLE_INBOX_DIR": str(tmp_path / "inbox"),
        "SPARKLE_ADAPTERS": "test",
        "SPARKLE_RETRY_BASE_SEC": "0.01",
        "SPARKLE_RETRY_MAX_SEC": "0.05",
        **env,
    }
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    if broker is None:
        monkeypatch.delenv("SPARKLE_REDIS_URL", raising=False)
    settings = load_settings()
    backend = None if broker is None else RedisBackend(broker, client, "redis (test)")
    app = App(settings, backend)
    loaded = app.declare_actors()
    return Pipeline(app, app.engine, loaded, tmp_path / "runs")


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """An embedded pipeline (StubBroker, in-process fakeredis leases) with the test adapters."""
    yield make_pipeline(tmp_path, monkeypatch)
    _teardown_pipeline()


@pytest.fixture
def fake_redis_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """A pipeline whose broker is a RedisBroker on fakeredis (leases on the same server)."""
    import fakeredis

    from sparkle.broker import build_redis_broker
    from sparkle.settings import Settings

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    broker = build_redis_broker(Settings(), client=client)
    yield make_pipeline(tmp_path, monkeypatch, broker=broker, client=client)
    _teardown_pipeline()


def _teardown_pipeline() -> None:
    from sparkle.app import uninstall

    app = uninstall()
    if app is not None:
        app.close()

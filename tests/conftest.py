from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from redis_server import RedisServer  # noqa: E402

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

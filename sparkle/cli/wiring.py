"""Where the CLI gets its settings, engine and Redis connection.

Every command asks here, so how a process is assembled can change in this one module.
The modules behind these functions (pydantic settings, dramatiq, redis, the engine) take
100-300 ms to import: they are imported when a command first asks for them, not when
``sparkle --help`` loads the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkle.cli.exits import fail
from sparkle.errors import ConfigError

if TYPE_CHECKING:
    import dramatiq
    import redis

    from sparkle.dispatch import Dispatcher
    from sparkle.engine import Engine
    from sparkle.runstore import RunStore
    from sparkle.settings import Settings


def configure(**overrides: Any) -> None:
    """Read the settings with the command line's ``overrides`` (None: not given); an
    invalid one is printed and exits 2."""
    from sparkle.settings import configure as read_settings  # (pydantic: see module doc)

    try:
        read_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc))


def settings() -> Settings:
    """The process's settings (read on first use when :func:`configure` was not called)."""
    from sparkle.settings import get_settings  # (pydantic: see module doc)

    return get_settings()


def store() -> RunStore:
    """The run store of the configured runs folder, without the engine."""
    from sparkle.runstore import RunStore  # (pydantic models: see module doc)

    return RunStore(settings().runs_dir)


def runs_dir() -> Path:
    """The configured runs folder."""
    return settings().runs_dir


def engine() -> tuple[Engine, dramatiq.Broker]:
    """The process's engine and its broker, with the stage actors declared on it."""
    from sparkle.broker import load_actors  # (dramatiq: see module doc)
    from sparkle.engine import get_engine

    broker = load_actors()
    return get_engine(), broker


def embedded() -> bool:
    """True without SPARKLE_REDIS_URL: messages live in this process's memory."""
    from sparkle.broker import is_embedded  # (dramatiq: see module doc)

    return is_embedded()


def client() -> redis.Redis:
    """The configured Redis client (only when not :func:`embedded`)."""
    from sparkle.broker import get_client  # (dramatiq: see module doc)

    return get_client()


def redis_parts() -> tuple[Settings, dramatiq.Broker, redis.Redis, Dispatcher]:
    """(settings, broker, client, dispatcher) of the configured Redis."""
    from sparkle.broker import get_client, setup_broker  # (dramatiq: see module doc)
    from sparkle.dispatch import Dispatcher
    from sparkle.settings import get_settings

    settings = get_settings()
    broker = setup_broker(settings)
    client = get_client()
    return settings, broker, client, Dispatcher(broker, client, settings.namespace)

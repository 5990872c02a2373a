"""The composition root: one :class:`App` per process, built from settings, owns the
wiring — the backend (broker and coordination client, :mod:`sparkle.backends`), the run
store, the dispatcher, the adapters, the engine, the reaper and the dead letters.

Every entry point builds one and passes it on: ``sparkle run``/``serve``/``worker``/``ui``,
each worker process, the dashboard, the tests, the benchmarks. Parts are built on first use,
so a command that only lists runs never loads an adapter or opens a connection.

dramatiq declares actors when their module is imported, on the broker installed then; so
the one process-wide place is :func:`install` / :func:`installed`: :meth:`App.declare_actors`
installs the App and imports ``actors``, whose actors ask :func:`installed` for the engine.
``dramatiq actors`` (no App installed yet) gets one built from the environment.
"""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from sparkle.settings import Settings, load_settings

# The parts are imported where they are built: ``sparkle --help``, ``runs`` and ``status``
# build an App too, and must not pay for dramatiq, the engine and the adapters (about
# 0.4 s of start-up) that they never use.
if TYPE_CHECKING:
    import dramatiq

    from sparkle.backends import Backend
    from sparkle.dispatch import Dispatcher
    from sparkle.dlq import DeadLetterQueue
    from sparkle.engine import Engine
    from sparkle.redrive import Reaper
    from sparkle.runstore import RunStore
    from sparkle.stages import Adapter

#: The module declaring the stage actors (imported by name: ``sparkle`` never imports it).
ACTORS_MODULE = "actors"


@dataclass(eq=False)
class App:
    """The wiring of one process."""

    settings: Settings
    #: Set to build on a given backend (tests: a RedisBroker on fakeredis); else the one
    #: the settings choose, on first use.
    given_backend: Backend | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, **overrides: object) -> App:
        """An App on the settings of the environment with ``overrides`` (CLI options).

        Raises:
          ConfigError: a setting is invalid.
        """
        return cls(load_settings(**overrides))

    @cached_property
    def backend(self) -> Backend:
        """``SPARKLE_REDIS_URL`` set: Redis; unset: embedded, in this process."""
        if self.given_backend is not None:
            return self.given_backend
        if self.settings.redis_url_value() is None:
            from sparkle.backends.embedded import EmbeddedBackend

            return EmbeddedBackend()
        from sparkle.backends.redis import RedisBackend

        return RedisBackend.from_settings(self.settings)

    @cached_property
    def store(self) -> RunStore:
        from sparkle.runstore import RunStore

        return RunStore(self.settings.runs_dir)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        from sparkle.dispatch import Dispatcher

        return Dispatcher(self.backend, self.settings.namespace)

    @cached_property
    def adapters(self) -> dict[str, Adapter]:
        """The adapter set (loaded on first use: a bad ``SPARKLE_ADAPTER_*`` raises here)."""
        from sparkle.stages import load_adapters

        return load_adapters(self.settings.adapters)

    @cached_property
    def engine(self) -> Engine:
        from sparkle.engine import Engine

        return Engine(store=self.store, dispatcher=self.dispatcher, client=self.backend.client,
                      adapters=self.adapters, settings=self.settings)

    @cached_property
    def reaper(self) -> Reaper:
        from sparkle.redrive import Reaper

        return Reaper(self.store, self.dispatcher, self.settings)

    def dead_letters(self) -> DeadLetterQueue:
        """The dead-letter queue.

        Raises:
          DeadLettersUnavailable: the backend keeps none (embedded); the message says what
            to do instead.
        """
        return self.backend.dead_letters(self.store, self.settings.namespace, self.dispatcher)

    @property
    def works_in_process(self) -> bool:
        """Whether this process's own worker threads must work the stages it queues."""
        return self.backend.works_in_process

    def declare_actors(self) -> dramatiq.Broker:
        """Install this App, make its broker dramatiq's global broker and declare the stage
        actors on it. Returns the broker."""
        install(self)
        self.use_broker()
        actors = sys.modules.get(ACTORS_MODULE)
        if actors is not None and getattr(actors, "BROKER", None) is not self.backend.broker:
            del sys.modules[ACTORS_MODULE]  # declared for an earlier App (tests)
        importlib.import_module(ACTORS_MODULE)
        return self.backend.broker

    def use_broker(self) -> None:
        """Make this App's broker dramatiq's global broker (the one ``dramatiq.actor`` and
        dramatiq's own CLI use)."""
        import dramatiq
        from dramatiq.encoder import JSONEncoder

        dramatiq.set_encoder(JSONEncoder())
        dramatiq.set_broker(self.backend.broker)

    def close(self) -> None:
        """Close the broker, if it was built."""
        if "backend" in self.__dict__:
            self.backend.close()


_installed: App | None = None
_installing = threading.Lock()


def install(app: App) -> App:
    """Make ``app`` the one whose engine this process's actors call."""
    global _installed
    with _installing:
        _installed = app
    return app


def uninstall() -> App | None:
    """Forget the installed App and the actors declared for it (between tests); returns
    the App forgotten."""
    global _installed
    with _installing:
        app, _installed = _installed, None
    sys.modules.pop(ACTORS_MODULE, None)
    return app


def installed() -> App:
    """The installed App; one built from the environment when none is (``dramatiq actors``)."""
    with _installing:
        app = _installed
    if app is None:
        app = install(App.from_environment())
        app.use_broker()
    return app


__all__ = ["App", "install", "installed", "uninstall"]

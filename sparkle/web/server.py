"""Running the dashboard: in the foreground (``sparkle ui``) or on a thread of ``sparkle
serve --ui``, with uvicorn."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from sparkle.errors import ConfigError
from sparkle.web.app import create_app
from sparkle.web.config import UiConfig
from sparkle.web.site import Site

log = logging.getLogger(__name__)

#: Seconds open streams (server-sent events) get to end when the dashboard stops.
GRACEFUL_SHUTDOWN_SEC = 2.0

#: Seconds to wait for the dashboard to listen before giving up.
STARTUP_TIMEOUT_SEC = 15.0


def _server(site: Site, config: UiConfig) -> uvicorn.Server:
    app = create_app(site, config)
    app.state.index.warm()
    return uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_SEC), server_header=False,
        proxy_headers=False, lifespan="off"))


def url(config: UiConfig) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{config.port}"


def run_foreground(site: Site, config: UiConfig) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn handles both)."""
    server = _server(site, config)
    log.warning("dashboard on %s (%s%s)", url(config), site.mode.value,
                ", read-only" if config.read_only else "")
    server.run()
    if not server.started:
        raise ConfigError(f"cannot listen on {config.host}:{config.port} (in use? see above)")


class Background:
    """The dashboard on a thread of this process (``sparkle serve --ui``)."""

    def __init__(self, site: Site, config: UiConfig) -> None:
        self.config = config
        self.server = _server(site, config)
        self.thread = threading.Thread(target=self.server.run, name="sparkle-ui", daemon=True)

    def start(self) -> Background:
        """Start serving; returns once listening.

        Raises:
          ConfigError: the address cannot be listened on.
        """
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SEC
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the dashboard cannot listen on {self.config.host}:"
                                  f"{self.config.port} (in use?)")
            time.sleep(0.02)
        log.warning("dashboard on %s", url(self.config))
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(GRACEFUL_SHUTDOWN_SEC + 5)


def start_in_background(site: Site, config: UiConfig) -> Background:
    return Background(site, config).start()

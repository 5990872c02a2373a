"""How the dashboard is served: address, token, read-only mode.

The address and port come from the command line (``sparkle ui --host --port``) or, for
``sparkle serve --ui``, from ``SPARKLE_UI_HOST`` / ``SPARKLE_UI_PORT``; the token only from
``SPARKLE_UI_TOKEN`` (never a command-line argument, which ``ps`` would show).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from sparkle.errors import ConfigError

#: Address the dashboard binds to unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"

#: Port of the dashboard unless told otherwise.
DEFAULT_PORT = 8321

#: Environment variable holding the access token (required off loopback).
TOKEN_ENV = "SPARKLE_UI_TOKEN"

#: Shortest token accepted: a guessable token is no protection.
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class UiConfig:
    """Where and how the dashboard is served."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: The access token; None means no login (allowed on loopback only).
    token: str | None = None
    #: No actions: pages and GET routes only (wall displays).
    read_only: bool = False

    @classmethod
    def from_environment(cls, host: str | None = None, port: int | None = None,
                         read_only: bool = False) -> UiConfig:
        """The configuration for ``host``/``port`` (else ``SPARKLE_UI_HOST``/``_PORT``, else
        the defaults) with the token of ``SPARKLE_UI_TOKEN``; checked (:meth:`check`)."""
        host = host or os.environ.get("SPARKLE_UI_HOST") or DEFAULT_HOST
        if port is None:
            text = os.environ.get("SPARKLE_UI_PORT") or str(DEFAULT_PORT)
            try:
                port = int(text)
            except ValueError:
                raise ConfigError(f"SPARKLE_UI_PORT={text!r} is not a port number; "
                                  f"set it to e.g. {DEFAULT_PORT}") from None
        config = cls(host, port, os.environ.get(TOKEN_ENV) or None, read_only)
        config.check()
        return config

    def check(self) -> None:
        """Refuse a configuration that would expose the dashboard unprotected.

        Raises:
          ConfigError: a non-loopback address without a token, a short token, a bad port.
        """
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range (1-65535)")
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{TOKEN_ENV} is {len(self.token)} characters; use at least "
                              f"{MIN_TOKEN_CHARS} random ones (e.g. `openssl rand -hex 24`)")
        if not is_loopback(self.host) and self.token is None:
            raise ConfigError(
                f"refusing to serve the dashboard on {self.host}: any address other than "
                f"loopback needs {TOKEN_ENV} set (e.g. `export {TOKEN_ENV}=$(openssl rand "
                f"-hex 24)`), or bind to {DEFAULT_HOST}")

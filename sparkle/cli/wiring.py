"""Where a command gets its :class:`~sparkle.app.App`: built once per command from the
environment and the command's options, and kept on the root click context.

:mod:`sparkle.app` imports the pydantic settings (about 100 ms): it is imported when a
command first asks for its App, not when ``sparkle --help`` loads the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sparkle.cli.exits import fail
from sparkle.errors import ConfigError

if TYPE_CHECKING:
    from sparkle.app import App
    from sparkle.engine import Engine


def configure(**overrides: object) -> App:
    """Build this command's App from the environment and ``overrides`` (its options; None:
    not given); an invalid setting is printed and exits 2."""
    from sparkle.app import App  # (pydantic settings: see module doc)

    try:
        app = App.from_environment(**overrides)
    except ConfigError as exc:
        fail(str(exc))
    click.get_current_context().find_root().obj = app
    return app


def app() -> App:
    """This command's App (built by :func:`configure`, else from the environment)."""
    from sparkle.app import App  # (pydantic settings: see module doc)

    root = click.get_current_context().find_root()
    if not isinstance(root.obj, App):
        configure()
    built: App = root.obj
    return built


def engine() -> Engine:
    """This command's engine, with the stage actors declared on its broker."""
    built = app()
    built.declare_actors()
    return built.engine

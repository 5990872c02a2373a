"""Operator commands of the ``sparkle`` CLI: re-drive, dead letters, cancel, timeline.

Registered on the main group by :mod:`sparkle.cli` from :data:`COMMANDS`.
"""

from __future__ import annotations

import click

#: Commands added to the ``sparkle`` group.
COMMANDS: list[click.Command] = []

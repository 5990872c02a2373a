"""The ``sparkle`` command line: the click group, with the commands of each area added.

One module per area: :mod:`~sparkle.cli.runs` (validate, schema, run, submit, resume,
status, runs), :mod:`~sparkle.cli.services` (watch, serve, ui, worker),
:mod:`~sparkle.cli.operations` (redrive, dlq, cancel, timeline, prune, outbox) and
:mod:`~sparkle.cli.review` (approve, redo, reject, takes). They share the exit codes,
:func:`~sparkle.cli.exits.fail` and the error guard of :mod:`~sparkle.cli.exits`, the
options of :mod:`~sparkle.cli.options` and the settings, engine and Redis connection of
:mod:`~sparkle.cli.wiring`. A command parses its arguments, calls a service below
(:mod:`sparkle.lifecycle`, :mod:`sparkle.review`, ...), and prints the outcome.

To add a command: write it in its area's module and list it in that module's
``COMMANDS``.
"""

from __future__ import annotations

import click

from sparkle import __version__
from sparkle.cli import operations, review, runs, services
from sparkle.cli.exits import EXIT_CODES_HELP
from sparkle.logs import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="sparkle")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity.")
@click.option("--log-format", default="text", show_default=True,
              type=click.Choice(["text", "json"]), help="Log line format.")
def main(log_level: str, log_format: str) -> None:
    """Sparkle Motion: MoviePlan JSON in, playable movie out.

    Without SPARKLE_REDIS_URL everything runs embedded, in one process; with it, stages
    are dramatiq messages on Redis worked by `sparkle worker` processes.
    """
    configure_logging(log_level, log_format)


for _command in [*runs.COMMANDS, *services.COMMANDS, *operations.COMMANDS, *review.COMMANDS]:
    main.add_command(_command)

__all__ = ["main"]

"""Options and parameter types several ``sparkle`` commands share, declared once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sparkle.durations import parse_duration
from sparkle.names import STAGES, RunStatus
from sparkle.priority import PRIORITIES

#: The command function an option decorator is applied to (and returns).
F = TypeVar("F", bound=Callable[..., Any])

#: Any stage, by name (``--from``, ``--only``, ``--stage``).
STAGE_CHOICE = click.Choice(list(STAGES))

#: The stages a review re-rolls per shot (``redo --stage``, ``takes --stage``).
PER_SHOT_STAGE_CHOICE = click.Choice(["images", "videos", "tts", "lipsync"])

#: A run's priority level (:mod:`sparkle.priority`).
PRIORITY_CHOICE = click.Choice(list(PRIORITIES))

#: Statuses a run can have, as ``sparkle runs --status`` filters them.
STATUS_CHOICE = click.Choice([status.value for status in RunStatus])


class Duration(click.ParamType[float]):
    """A click parameter holding a duration such as ``30s``, ``5m`` or ``7d``, in seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: The :class:`Duration` parameter type.
DURATION = Duration()

#: ``--runs-dir DIR``: the runs folder, overriding SPARKLE_RUNS_DIR.
runs_dir_option = click.option("--runs-dir", type=click.Path(path_type=Path),
                               help="Runs folder (default ./runs).")

#: ``--adapters NAME``: the adapter set, overriding SPARKLE_ADAPTERS.
adapters_option = click.option("--adapters",
                               help="Adapter set (default: SPARKLE_ADAPTERS or 'media').")

#: ``--stage STAGE``: narrow a listing or an action to one stage.
stage_option = click.option("--stage", type=STAGE_CHOICE, help="Only this stage.")

#: ``--from STAGE``: re-run a stage and all after it.
from_stage_option = click.option("--from", "from_stage", type=STAGE_CHOICE,
                                 help="Re-run this stage and all after it.")

#: ``--only STAGE``: re-run one stage.
only_stage_option = click.option("--only", type=STAGE_CHOICE,
                                 help="Re-run just this stage (earlier ones must be done).")


def threads_option(embedded_only: bool = False) -> Callable[[F], F]:
    """``--threads N``: worker threads of a command that works runs in this process
    (``embedded_only``: only when there is no Redis, as ``resume`` and the decisions)."""
    note = " (embedded)" if embedded_only else ""
    return click.option("--threads", default=2, show_default=True,
                        help=f"In-process worker threads{note}.")


def json_option(help: str = "Print JSON.") -> Callable[[F], F]:
    """``--json``: print machine-readable output (``help`` says in which shape)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def priority_option(help: str) -> Callable[[F], F]:
    """``--priority LEVEL``: the priority of the runs a command creates."""
    return click.option("--priority", "level", type=PRIORITY_CHOICE, help=help)

"""The ``sparkle`` executable: a fast path for ``sparkle status RUN``, else the full CLI.

Python start-up plus importing click, pydantic and the models takes about 180 ms, a hundred
times the work of showing one run. ``sparkle status RUN [--json] [--runs-dir DIR]`` is
answered here from the run's summary cache (:mod:`sparkle.statuscache`) with the standard
library only, when the cache is fresh. Anything else goes to :mod:`sparkle.cli`, which
prints the same text from the same cache, deriving it (and refreshing the cache) first
when it is stale: so the fast path changes how quickly, never what, ``status`` answers.

The fast path steps aside (to the full CLI) for any other option, ``--help``, an id that is
not path-safe, a run folder it cannot vouch for, a ``.env`` file it would have to parse, or
text that click would print differently (escape sequences, non-ASCII characters).
Unlike the full CLI it does not check unrelated ``SPARKLE_*`` settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

RUNS_DIR_VARIABLE = "sparkle_runs_dir"


def main() -> None:
    """Entry point of the ``sparkle`` console script."""
    argv = sys.argv[1:]
    if argv[:1] == ["status"]:
        try:
            cwd = os.getcwd()
        except OSError:  # the working folder was removed: the full CLI copes or explains
            cwd = None
        shown = None if cwd is None else fast_status(argv[1:], os.environ, cwd)
        if shown is not None:
            sys.stdout.write(shown + "\n")
            sys.exit(0)
    from sparkle.cli import main as cli_main
    from sparkle.cli.exits import EXIT_USAGE
    from sparkle.errors import ConfigError

    try:
        cli_main()
    except ConfigError as exc:  # an invalid SPARKLE_* setting, wherever it was first read
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(EXIT_USAGE)


def fast_status(args: Sequence[str], environ: Mapping[str, str], cwd: str) -> str | None:
    """What ``sparkle status`` prints for ``args``, or None when the full CLI must answer."""
    from sparkle import statuscache
    from sparkle.names import is_safe_id

    parsed = _parse(args)
    if parsed is None:
        return None
    run_id, as_json, runs_dir = parsed
    if runs_dir is None:
        runs_dir = _runs_dir_from_environment(environ, cwd)
        if runs_dir is None:
            return None
    if not is_safe_id(run_id):
        return None
    entry = statuscache.fresh(os.path.join(runs_dir, run_id))
    if entry is None or entry.view is None or entry.view["run_id"] != run_id:
        return None
    if as_json:
        shown = statuscache.render_json(entry.view)
    else:  # (the run folder named as the full CLI names it, from its settings' Path)
        from pathlib import PurePath

        shown = statuscache.render_text(entry.view, str(PurePath(runs_dir, run_id)))
    # click.echo strips escape sequences when stdout is not a terminal and re-encodes for
    # the terminal: text that would be touched goes to the full CLI, so output never differs.
    if not shown.isascii() or "\x1b" in shown:
        return None
    return shown


def _parse(args: Sequence[str]) -> tuple[str, bool, str | None] | None:
    """``RUN_ID [--json] [--runs-dir DIR]`` in any order, or None for anything else."""
    run_id: str | None = None
    as_json = False
    runs_dir: str | None = None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--json" and not as_json:
            as_json = True
        elif arg == "--runs-dir" and runs_dir is None and rest:
            runs_dir = rest.pop(0)
        elif arg.startswith("--runs-dir=") and runs_dir is None:
            runs_dir = arg.removeprefix("--runs-dir=")
        elif not arg.startswith("-") and run_id is None:
            run_id = arg
        else:
            return None
    if run_id is None or runs_dir == "":
        return None
    return run_id, as_json, runs_dir


def _runs_dir_from_environment(environ: Mapping[str, str], cwd: str) -> str | None:
    """SPARKLE_RUNS_DIR as pydantic-settings reads it (any case), else the default;
    None when a ``.env`` file might say otherwise or the variable is ambiguous."""
    values = [value for key, value in environ.items() if key.lower() == RUNS_DIR_VARIABLE]
    if len(values) > 1 or (values and not values[0]):
        return None
    if values:
        return values[0]
    if os.path.lexists(os.path.join(cwd, ".env")):
        return None
    return "runs"

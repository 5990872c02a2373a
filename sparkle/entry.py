"""The ``sparkle`` executable: fast paths for ``sparkle status RUN`` and ``sparkle runs
--status queued|running``, else the full CLI.

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

``sparkle runs --status queued|running [--json] [--runs-dir DIR]`` likewise lists the runs
in flight from the unfinished-run index and their summary caches
(:mod:`sparkle.runindex_fast`), under the same conditions, and when no cache is stale and
no rebuild of the index is due.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import PurePath

RUNS_DIR_VARIABLE = "sparkle_runs_dir"
REDIS_URL_VARIABLE = "sparkle_redis_url"
NAMESPACE_VARIABLE = "sparkle_namespace"


def main() -> None:
    """Entry point of the ``sparkle`` console script."""
    argv = sys.argv[1:]
    fast = {"status": fast_status, "runs": fast_runs}.get(argv[0]) if argv else None
    if fast is not None:
        try:
            cwd = os.getcwd()
        except OSError:  # the working folder was removed: the full CLI copes or explains
            cwd = None
        shown = None if cwd is None else fast(argv[1:], os.environ, cwd)
        if shown is not None:
            sys.stdout.write(shown + "\n" if shown else "")  # (no runs, as JSON lines)
            sys.exit(0)
    from sparkle.cli import main as cli_main
    from sparkle.errors import ConfigError
    from sparkle.exit_codes import EXIT_USAGE

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
        shown = statuscache.render_text(entry.view, str(PurePath(runs_dir, run_id)))
    return _as_click_prints(shown)


def fast_runs(args: Sequence[str], environ: Mapping[str, str], cwd: str) -> str | None:
    """What ``sparkle runs`` prints for ``args``, or None when the full CLI must answer."""
    from sparkle import runindex_fast, runs_table

    parsed = _parse_runs(args)
    if parsed is None:
        return None
    status, as_json, runs_dir = parsed
    if runs_dir is None:
        runs_dir = _runs_dir_from_environment(environ, cwd)
    redis_url = _setting(environ, REDIS_URL_VARIABLE)
    namespace = _setting(environ, NAMESPACE_VARIABLE)
    # (a .env file may set any of them: the full CLI reads it)
    if runs_dir is None or redis_url == "" or namespace == "" \
            or os.path.lexists(os.path.join(cwd, ".env")):
        return None
    try:
        listed = runindex_fast.unfinished_entries(runs_dir, redis_url, namespace or "sparkle")
    except runindex_fast.StepAside:
        return None
    listed = [(run_id, entry) for run_id, entry in listed if entry.status.value == status]
    if as_json:
        lines = [json.dumps({"run_id": run_id, "status": entry.status.value,
                             "qa_decision": entry.qa_decision, "next_stage": entry.next_stage})
                 for run_id, entry in listed]
        return _as_click_prints("\n".join(lines))
    now = time.time()
    rows = [runs_table.header_row()]
    rows += [runs_table.entry_row(run_id, PurePath(runs_dir, run_id), entry, now)
             for run_id, entry in listed]
    return _as_click_prints("\n".join(rows))


def _as_click_prints(shown: str) -> str | None:
    """``shown``, or None when click.echo would print it differently: it strips escape
    sequences when stdout is not a terminal and re-encodes for the terminal, so text it
    would touch goes to the full CLI and output never differs."""
    if not shown.isascii() or "\x1b" in shown:
        return None
    return shown


def _parse(args: Sequence[str]) -> tuple[str, bool, str | None] | None:
    """``RUN_ID [--json] [--runs-dir DIR]`` in any order, or None for anything else."""
    parsed = _arguments(args, ("--runs-dir",), positional=True)
    if parsed is None:
        return None
    run_id, as_json, options = parsed
    return None if run_id is None else (run_id, as_json, options.get("--runs-dir"))


def _parse_runs(args: Sequence[str]) -> tuple[str, bool, str | None] | None:
    """``--status queued|running [--json] [--runs-dir DIR]`` in any order, or None for
    anything else."""
    parsed = _arguments(args, ("--status", "--runs-dir"), positional=False)
    if parsed is None:
        return None
    _, as_json, options = parsed
    status = options.get("--status")
    if status not in ("queued", "running"):
        return None
    return status, as_json, options.get("--runs-dir")


def _arguments(args: Sequence[str], valued: tuple[str, ...], positional: bool
               ) -> tuple[str | None, bool, dict[str, str]] | None:
    """A fast path's arguments, in any order: each option of ``valued`` at most once
    (``--opt V`` or ``--opt=V``), ``--json`` at most once and, with ``positional``, one
    argument not starting with ``-``. Returns that argument, whether ``--json`` was given
    and the options' values; None for anything else (or an empty ``--runs-dir``): the full
    CLI answers then."""
    found: dict[str, str] = {}
    argument: str | None = None
    as_json = False
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, equals, value = arg.partition("=")
        if arg == "--json" and not as_json:
            as_json = True
        elif name in valued and name not in found and (equals or rest):
            found[name] = value if equals else rest.pop(0)
        elif positional and not arg.startswith("-") and argument is None:
            argument = arg
        else:
            return None
    if found.get("--runs-dir") == "":
        return None
    return argument, as_json, found


def _setting(environ: Mapping[str, str], variable: str) -> str | None:
    """The value of ``variable`` as pydantic-settings reads it (any case); None when unset,
    "" when ambiguous or empty (the full CLI decides what either means)."""
    values = [value for key, value in environ.items() if key.lower() == variable]
    if len(values) > 1:
        return ""
    return values[0] if values else None


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

"""The unfinished-run index read without pydantic or click: its names, the folder index's
file operations, and the fast path of ``sparkle runs --status queued|running``.

Python start-up plus importing the models and the CLI costs several times what listing the
hundred runs in flight does. So :mod:`sparkle.entry` answers ``sparkle runs --status
queued|running`` here, from the index (the runs folder's ``.unfinished/`` embedded, the
Redis SET on Redis) and each named run's summary cache, as long as every cache it needs is
fresh and the index is not due for a rebuild. Otherwise it steps aside and the full CLI,
which derives stale summaries and rebuilds the index (:mod:`sparkle.runindex`,
:mod:`sparkle.runindex_folder`), answers: the fast path changes how quickly, never what,
the command prints. Like the full listing, it drops from the index the runs it finds
finished or gone, unless a stage message was sent for them since it looked.

Standard library, :mod:`sparkle.statuscache`, and redis-py only when a Redis URL is set
(imported then: embedded listings never pay for it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Final

from sparkle import keys, statuscache
from sparkle.names import RunStatus, is_safe_id
from sparkle.runlayout import PLAN_FILE

#: Seconds between two full rebuilds of the index from the run folders (by any reaper).
REBUILD_INTERVAL_SEC: Final = 300.0

#: Statuses whose runs the reaper must keep watching.
UNFINISHED: Final = (RunStatus.queued, RunStatus.running)

#: Folder, inside the runs folder, of the embedded index: one empty file per run id.
INDEX_DIR: Final = ".unfinished"

#: File in it whose modification time is the last full rebuild.
REBUILT_FILE: Final = ".rebuilt"

#: SREM the run unless its pending mark was written at or after ARGV[2] (seconds).
DISCARD_IF_QUIET: Final = """
local mark = redis.call('GET', KEYS[2])
if mark then
  local sent = tonumber(string.match(mark, ' (.*)$') or '0') or 0
  if sent >= tonumber(ARGV[2]) then return 0 end
end
return redis.call('SREM', KEYS[1], ARGV[1])
"""

#: Drops a run from the index unless it was added again at or after the time given.
Discard = Callable[[str, float], None]

#: A run the index names: its id and its fresh summary cache entry (with its status view).
Listed = tuple[str, statuscache.Entry]


class StepAside(Exception):
    """The fast path cannot answer: a cache to derive, a rebuild due, Redis unreachable."""


def folder_members(index_dir: str) -> set[str]:
    """The run ids the embedded index in ``index_dir`` names."""
    try:
        with os.scandir(index_dir) as entries:
            return {e.name for e in entries if is_safe_id(e.name)}
    except FileNotFoundError:
        return set()


def folder_rebuild_due(index_dir: str) -> bool:
    """Whether the embedded index is missing or was last rebuilt too long ago."""
    try:
        rebuilt = os.stat(f"{index_dir}/{REBUILT_FILE}").st_mtime
    except OSError:
        return True
    return time.time() - rebuilt >= REBUILD_INTERVAL_SEC


def folder_discard_if_quiet(index_dir: str, run_id: str, looked_at: float) -> None:
    """Remove ``run_id`` from the embedded index unless it was added again at or after
    ``looked_at`` (a resume just then touched its file)."""
    path = f"{index_dir}/{run_id}"
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_mtime < looked_at:
            os.unlink(path)


def unfinished_entries(runs_dir: str, redis_url: str | None, namespace: str) -> list[Listed]:
    """The queued and running runs the index names, sorted by id, each with its fresh
    summary cache entry; finished or gone ones are dropped from the index on the way.

    Raises:
      StepAside: the full CLI must answer (see the module's docstring).
    """
    if redis_url is None:
        index_dir = f"{runs_dir}/{INDEX_DIR}"
        if folder_rebuild_due(index_dir):
            raise StepAside("the runs folder's index is due for a rebuild")
        return _look(runs_dir, folder_members(index_dir),
                     lambda run_id, looked_at: folder_discard_if_quiet(index_dir, run_id,
                                                                       looked_at))
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        # (the full CLI claims and does a due rebuild; this path only reads)
        if not client.exists(keys.unfinished_runs_fresh(namespace)):
            raise StepAside("the Redis index is due for a rebuild")
        key = keys.unfinished_runs(namespace)
        members = {m.decode() if isinstance(m, bytes) else str(m)
                   for m in client.smembers(key)}

        def discard(run_id: str, looked_at: float) -> None:
            client.eval(DISCARD_IF_QUIET, 2, key, keys.pending(namespace, run_id), run_id,
                        f"{looked_at:.3f}")

        return _look(runs_dir, members, discard)
    except redis.RedisError as exc:
        raise StepAside(f"Redis: {exc}") from exc


def _look(runs_dir: str, members: set[str], discard: Discard) -> list[Listed]:
    found: list[Listed] = []
    for run_id in sorted(members):
        if not is_safe_id(run_id):  # not a path-safe id: not a run (the full path drops it)
            raise StepAside(f"index names {run_id!r}")
        looked_at = time.time()
        run_dir = f"{runs_dir}/{run_id}"
        entry = statuscache.fresh(run_dir)
        if entry is None:
            if os.path.lexists(f"{run_dir}/{PLAN_FILE}"):
                raise StepAside(f"run {run_id}: its summary cache is stale")
            discard(run_id, looked_at)  # gone
            continue
        if entry.view is None or entry.view["run_id"] != run_id:
            raise StepAside(f"run {run_id}: its summary cache names another run")
        if entry.status in UNFINISHED:
            found.append((run_id, entry))
        else:
            discard(run_id, looked_at)
    return found

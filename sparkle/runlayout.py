"""The layout of a run folder, ``runs/<run_id>/``: the names of the files Sparkle keeps there.

::

    movie_plan.json            the plan as received; its presence is what makes the run exist
    asset_refs.json            AssetRefs, replaced atomically after each stage
    manifest.json              RunManifest {"run_id", "events": [StageEvent...]}: the history
    manifest.jsonl             the history as Sparkle wrote it before manifest.json
    checkpoints/<stage>.json   Checkpoint: the state
    cancelled                  present while the run is cancelled
    review.json                present while a person has to decide (sparkle.review_state)
    takes.json                 every take of every re-rolled shot (sparkle.takes)
    .summary.json              a cache of the derived summary (sparkle.statuscache)
    .lock, .manifest.lock      file locks: the run folder's, and its manifest's alone
    .lease                     held by the process working the run (sparkle.runlock)

Checkpoints are the state; the manifest is the history (:mod:`sparkle.run`). What a stage's
adapter writes (frames, clips, the movie) lives beside these under names of its own.

Standard library only: the fast path of ``sparkle status`` (:mod:`sparkle.statuscache`)
uses these names without importing pydantic.
"""

from __future__ import annotations

PLAN_FILE = "movie_plan.json"
ASSET_REFS_FILE = "asset_refs.json"
MANIFEST_FILE = "manifest.json"

#: The manifest as Sparkle wrote it before ``manifest.json``: one event per line, appended.
#: Still read (after ``manifest.json``, whose events come first); the next event moves its
#: events into ``manifest.json`` and removes it.
LEGACY_LOG_FILE = "manifest.jsonl"

#: The folder of the checkpoints, one file per stage (:func:`checkpoint_file`).
CHECKPOINTS_DIR = "checkpoints"

#: Present (empty) while the run is cancelled.
CANCELLED_FILE = "cancelled"

#: The cached summary and status view of the run (:mod:`sparkle.statuscache`).
SUMMARY_FILE = ".summary.json"

#: Present while a person has to decide (:mod:`sparkle.review_state`).
REVIEW_FILE = "review.json"

#: Every take of every re-rolled shot (:mod:`sparkle.takes`).
TAKES_FILE = "takes.json"

#: The run folder's file lock (:meth:`sparkle.run.Run.locked`).
LOCK_FILE = ".lock"

#: The lock of the manifest alone (not ``.lock``: a writer may add an event while it
#: holds the run folder's lock for something else).
MANIFEST_LOCK_FILE = ".manifest.lock"

#: Held by the process that works the run (:mod:`sparkle.runlock`).
LEASE_FILE = ".lease"

#: Resume requests left for the holder of the run's lease (:mod:`sparkle.handover`).
REQUESTS_DIR = ".requests"


def checkpoint_file(stage: str) -> str:
    """The checkpoint of ``stage``, relative to the run folder."""
    return f"{CHECKPOINTS_DIR}/{stage}.json"

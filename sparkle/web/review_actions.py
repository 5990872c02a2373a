"""The dashboard's review decisions: :mod:`sparkle.review`'s service functions (the ones
``sparkle approve``/``redo``/``reject``/``takes`` call) as HTTP outcomes, and what the run
page shows of a review.

Each action returns ``(status, JSON body)`` like :mod:`sparkle.web.actions`:
200 applied; 400 the request names something the run does not have (a shot, a stage not
reached, a take) while the run waits; 409 the run is not waiting, another person decided
first (the body names who), the run stayed held by a worker (try again), or no queue is
reachable from this process; 422 a field is
missing or malformed; 503 Redis is down.

A decision holds the run's lease while it applies (it may wait up to
``SPARKLE_DECISION_WAIT_SEC`` for a worker to let go), so the routes call these in a thread.
The next stage is queued through the site's dispatcher: on Redis for the workers, or on the
in-memory broker that a ``sparkle serve --ui`` process works with its own threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from sparkle import review
from sparkle.dispatch import Dispatcher
from sparkle.errors import DecisionConflictError, ReviewError, RunBusyError
from sparkle.runstore import Run, RunStatus, RunStore
from sparkle.settings import Settings
from sparkle.takes import PER_SHOT_STAGES
from sparkle.web.details import file_versions
from sparkle.web.site import Site

#: Longest name a person may give as who decides (beside the dashboard's own label).
MAX_WHO_CHARS = 64


@dataclass
class SiteServices:
    """What :mod:`sparkle.review` needs (:class:`sparkle.review.Services`), from the site."""

    store: RunStore
    dispatcher: Dispatcher
    client: redis.Redis
    settings: Settings


def services(site: Site) -> SiteServices | None:
    """The site's services, or None when no queue (and no lease store) is reachable."""
    if site.dispatcher is None:
        return None
    return SiteServices(site.store, site.dispatcher, site.dispatcher.client, site.settings)


def who(label: str, named: object) -> str:
    """Who decided, as the manifest records it: the name the person typed (if any) with
    the dashboard's label, else the label alone."""
    if isinstance(named, str) and named.strip():
        return f"{named.strip()[:MAX_WHO_CHARS]} via {label}"
    return label


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _shots(value: object) -> list[str] | None:
    """``["s1", "s2"]`` or ``"s1,s2"`` as a list; None when malformed."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    return None


def _standalone(run: Run, verb: str) -> dict[str, Any]:
    return {"error": f"no queue reachable from this `sparkle ui` (no SPARKLE_REDIS_URL): run "
                     f"`sparkle {verb} {run.run_id}`, or use `sparkle serve --ui`"}


def decide(site: Site, run: Run, kind: str, fields: dict[str, Any],
           by: str) -> tuple[int, dict[str, Any]]:
    """Apply the decision ``kind`` (``approve``, ``redo``, ``reject`` or ``take``) that the
    posted ``fields`` describe, as ``by``."""
    verb = {"approve": "approve", "redo": "redo", "reject": "reject", "take": "takes"}[kind]
    found = services(site)
    if found is None:
        return 409, _standalone(run, verb)
    note = _text(fields.get("note"))
    review_id = _text(fields.get("review_id"))
    stage = _text(fields.get("stage"))
    if stage is not None and stage not in PER_SHOT_STAGES:
        return 422, {"error": f"stage {stage!r} cannot be re-rolled per shot; choose one of "
                              f"{', '.join(PER_SHOT_STAGES)}"}
    try:
        if kind == "approve":
            decision = review.approve(found, run.run_id, who=by, note=note, review_id=review_id)
        elif kind == "reject":
            if note is None:
                return 422, {"error": "a rejection needs a note saying why (field note)"}
            decision = review.reject(found, run.run_id, note, who=by, review_id=review_id)
        elif kind == "redo":
            shots = _shots(fields.get("shots"))
            if not shots:
                return 422, {"error": "name the shots to re-roll: shots, a list of shot ids "
                                      "(or \"s1,s2\")"}
            decision = review.redo(found, run.run_id, shots, stage=stage, who=by, note=note,
                                   review_id=review_id)
        else:
            shot = _text(fields.get("shot"))
            take = fields.get("take")
            number = int(take) if isinstance(take, int | str) and str(take).isdigit() else 0
            if shot is None or number < 1:
                return 422, {"error": "say which take to use: shot (a shot id) and take "
                                      "(a take number from 1)"}
            decision = review.use_take(found, run.run_id, shot, number, stage=stage, who=by,
                                       note=note, review_id=review_id)
    except DecisionConflictError as exc:
        return 409, {"error": str(exc), "conflict": True}
    except RunBusyError as exc:
        return 409, {"error": str(exc), "busy": True}
    except ReviewError as exc:
        # (while the run still waits, the request named something it does not have)
        waiting = run.status() is RunStatus.awaiting_review
        return (400 if waiting else 409), {"error": str(exc)}
    except redis.RedisError as exc:
        return 503, {"error": f"Redis: {exc}"}
    return 200, {**decision.as_dict(), "status": run.status().value}


def takes(site: Site, run: Run, shot: str | None) -> tuple[int, dict[str, Any]]:
    """Every take of every shot (or of ``shot``), as ``sparkle takes --json`` prints them."""
    try:
        found = review.takes_of(site.store, run.run_id, shot)
    except ReviewError as exc:
        return 400, {"error": str(exc)}
    except ValueError as exc:  # a damaged takes.json
        return 500, {"error": str(exc)}
    return 200, {"run_id": run.run_id, "shots": found}


def panel(site: Site, run: Run) -> dict[str, Any]:
    """What the run page shows of reviews: the review waiting (with how long it has waited
    and the files to look at) or None, the decision history, every take of every shot with
    the versions of their files, and the per-shot stages the run has reached (the ones a
    re-roll may name)."""
    view = review.review_view(site.store, run.run_id)
    try:
        kept = review.takes_of(site.store, run.run_id)
    except ValueError:
        kept = {}
    paths = [path for stages in kept.values() for versions in stages.values()
             for take in versions for path in take["files"]]
    waiting = view["review"] if view["review"] and view["review"]["status"] == \
        "awaiting_review" else None
    return {"waiting": waiting, "history": view["history"], "takes": kept,
            "versions": file_versions(run, paths),
            "reached": [stage for stage in PER_SHOT_STAGES if run.stage_done(stage)],
            "can_decide": site.dispatcher is not None and not site.read_only}

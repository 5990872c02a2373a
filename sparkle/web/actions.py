"""The dashboard's actions: the CLI's service functions, their outcomes as HTTP statuses.

Each returns ``(status, JSON body)``; the API returns them as they are, the pages turn them
into a redirect with a notice or a page with the problems.
"""

from __future__ import annotations

from typing import Any

import redis

from sparkle import lifecycle
from sparkle.errors import ConfigError, PlanError, Problem, ReviewError, RunConflictError
from sparkle.names import STAGES
from sparkle.plans import parse_plan_bytes
from sparkle.runstore import Run, run_id_for
from sparkle.web.site import Site


def _problems(exc: PlanError) -> list[dict[str, str]]:
    return [{"path": p.path, "message": p.message} for p in exc.problems]


def submit_plan(site: Site, data: bytes, source: str) -> tuple[int, dict[str, Any]]:
    """Validate plan bytes as the inbox does and create and queue the run: (HTTP status,
    JSON body). 201 created (200: the same plan made that run before), 202 handed to the
    inbox (standalone mode), 413 too large, 422 invalid (every problem, as `sparkle
    validate` prints them), 409 run id taken by another plan, 503 the queue is down."""
    limit = site.settings.max_plan_bytes
    try:
        if len(data) > limit:
            raise PlanError(source, [Problem("", f"is {len(data)} bytes, over the {limit}-byte "
                                                 "limit (SPARKLE_MAX_PLAN_BYTES)")])
        plan = parse_plan_bytes(data, source)
    except PlanError as exc:
        status = 413 if len(data) > limit else 422
        return status, {"error": str(exc), "problems": _problems(exc)}
    if site.dispatcher is None:
        name = lifecycle.hand_to_inbox(site.settings.inbox_dir, data)
        return 202, {"run_id": run_id_for(plan), "inbox": name,
                     "note": "handed to the inbox: a running `sparkle serve` takes it"}
    try:
        done = lifecycle.create_run(site.store, site.dispatcher, plan)
    except RunConflictError as exc:
        return 409, {"error": str(exc)}
    except redis.RedisError as exc:
        return 503, {"error": f"Redis: {exc}; the run may exist, not queued: resume it"}
    return (201 if done.created else 200), {"run_id": done.run.run_id, "created": done.created,
                                            "queued": done.queued}


def resume(site: Site, run: Run, from_stage: str | None) -> tuple[int, dict[str, Any]]:
    """Resume ``run`` (from a stage): the service `sparkle resume` calls with Redis."""
    if from_stage is not None and from_stage not in STAGES:
        return 422, {"error": f"unknown stage {from_stage!r}; stages are {', '.join(STAGES)}"}
    if site.dispatcher is None:
        return 409, {"error": "no queue reachable from this `sparkle ui` (no SPARKLE_REDIS_URL):"
                              f" run `sparkle resume {run.run_id}`, or use `sparkle serve --ui`"}
    try:
        # (not waiting for a worker holding the run: it carries the resume out itself)
        done = lifecycle.resume_run(run, site.dispatcher, from_stage, wait_sec=0)
    except ReviewError as exc:  # (a person decides: approve, redo or reject)
        return 409, {"error": str(exc)}
    except ConfigError as exc:
        return 422, {"error": str(exc)}
    except redis.RedisError as exc:
        return 503, {"error": f"Redis: {exc}"}
    body: dict[str, Any] = {"run_id": run.run_id, "reset": done.reset, "queued": done.queued}
    if done.handed_over:  # (a worker holds the run: it resets the stages and goes on)
        body["handed_over"] = True
    return 200, body


def cancel(site: Site, run: Run, by: str) -> tuple[int, dict[str, Any]]:
    """Cancel ``run``: what `sparkle cancel` does (its notification sent in the background).
    ``recorded`` False: a worker holds the run and records the cancel when its stage ends;
    the run is cancelled all the same."""
    leases = (lifecycle.Leases.of(site.dispatcher) if site.dispatcher is not None
              else lifecycle.Leases.without_redis(site.settings.namespace))
    done = lifecycle.cancel_run(run, by=by, settings=site.settings, leases=leases, wait_sec=0)
    return 200, {"run_id": run.run_id, "result": done.result.value, "stage": done.stage,
                 "recorded": done.recorded}


def replay(site: Site, run_id: str | None, stage: str | None,
           replay_all: bool) -> tuple[int, dict[str, Any]]:
    """Replay dead letters: what `sparkle dlq replay` does."""
    dead = site.dead_letters()
    if dead is None:
        from sparkle.dlq import EMBEDDED_NOTICE

        return 409, {"error": EMBEDDED_NOTICE}
    if not (replay_all or run_id or stage):
        return 422, {"error": "say what to replay: all, or run_id and/or stage"}
    if stage is not None and stage not in STAGES:
        return 422, {"error": f"unknown stage {stage!r}"}
    try:
        done = dead.replay(run_id, stage)
    except redis.RedisError as exc:
        return 503, {"error": f"Redis: {exc}"}
    results = [{"run_id": item.letter.run_id, "stage": item.letter.stage,
                "result": item.result.value} for item in done]
    return 200, {"replayed": sum(1 for r in results if r["result"] == "replayed"),
                 "results": results}

"""Run ids: the id a plan's run gets, and the canonical text of a plan it is made from.

A run's id is ``metadata.run_id`` when the plan gives one, else the slug of its title and
the start of the plan's hash, so that the same plan submitted twice finds the same run.
"""

from __future__ import annotations

import hashlib
import json
import re

from sparkle.schemas import MoviePlan

#: Length of the title slug in a derived run id.
SLUG_CHARS = 40

#: Hex digits of the plan hash in a derived run id.
HASH_CHARS = 10


def canonical_plan_json(plan: MoviePlan) -> str:
    """The plan as received (in whichever format), as JSON with sorted keys and no
    whitespace: equal plans give equal text."""
    return json.dumps(plan.received_json(), sort_keys=True, separators=(",", ":"))


def plan_digest(plan: MoviePlan) -> str:
    """SHA-256 (hex) of the canonical plan JSON."""
    return hashlib.sha256(canonical_plan_json(plan).encode("utf-8")).hexdigest()


def slugify(title: str) -> str:
    """A path-safe, lower-case slug of ``title`` (``"run"`` when nothing is left)."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:SLUG_CHARS].strip("-")
    return slug or "run"


def run_id_for(plan: MoviePlan) -> str:
    """``metadata.run_id`` when given, else ``<slug of title>-<10 hex of the plan hash>``."""
    if "run_id" in plan.metadata:
        return plan.metadata["run_id"]
    return f"{slugify(plan.title)}-{plan_digest(plan)[:HASH_CHARS]}"

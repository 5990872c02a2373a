"""The data model: plans in, asset references and reports out, checkpoints and events between.

The models live by concept: :mod:`sparkle.plan_models` (the plan a user writes),
:mod:`sparkle.run_records` (what a run writes: asset references, checkpoints, its history,
the QA report) and :mod:`sparkle.schema_base` (what they share). This module gathers them
under one name, the one most of Sparkle imports them by, and lists the models whose JSON
Schemas ``sparkle schema`` exports into ``schemas/``.
"""

from __future__ import annotations

from pydantic import BaseModel

from sparkle.names import ID_RE as ID_RE
from sparkle.names import REVIEW_EVENTS as REVIEW_EVENTS
from sparkle.names import STAGES as STAGES
from sparkle.names import CheckpointStatus as CheckpointStatus
from sparkle.names import EventKind as EventKind
from sparkle.names import StageName as StageName
from sparkle.plan_models import FPS_RANGE as FPS_RANGE
from sparkle.plan_models import FPS_RE as FPS_RE
from sparkle.plan_models import KNOWN_IDS_SHOWN as KNOWN_IDS_SHOWN
from sparkle.plan_models import MAX_REFERENCE_PROBLEMS as MAX_REFERENCE_PROBLEMS
from sparkle.plan_models import MAX_SHOT_SECONDS as MAX_SHOT_SECONDS
from sparkle.plan_models import METADATA_JSON_SCHEMA as METADATA_JSON_SCHEMA
from sparkle.plan_models import NARROWED_FROM as NARROWED_FROM
from sparkle.plan_models import RESOLUTION_RANGE as RESOLUTION_RANGE
from sparkle.plan_models import RESOLUTION_RE as RESOLUTION_RE
from sparkle.plan_models import SEED_RE as SEED_RE
from sparkle.plan_models import SEED_VARIABLE as SEED_VARIABLE
from sparkle.plan_models import CharacterSpec as CharacterSpec
from sparkle.plan_models import DialogueLine as DialogueLine
from sparkle.plan_models import MoviePlan as MoviePlan
from sparkle.plan_models import ShotSpec as ShotSpec
from sparkle.plan_models import _quoted as _quoted
from sparkle.plan_models import reference_problems as reference_problems
from sparkle.plan_models import split_stages as split_stages
from sparkle.run_records import AssetRefs as AssetRefs
from sparkle.run_records import AssetRefsShot as AssetRefsShot
from sparkle.run_records import Checkpoint as Checkpoint
from sparkle.run_records import QADecision as QADecision
from sparkle.run_records import QAReport as QAReport
from sparkle.run_records import QAShotReport as QAShotReport
from sparkle.run_records import RunManifest as RunManifest
from sparkle.run_records import ShotsView as ShotsView
from sparkle.run_records import StageEvent as StageEvent
from sparkle.schema_base import ID_JSON_PATTERN as ID_JSON_PATTERN
from sparkle.schema_base import SafeId as SafeId
from sparkle.schema_base import _Model as _Model
from sparkle.schema_base import check_id as check_id

#: Models whose JSON Schemas are exported by ``sparkle schema`` (and ``BaseImagePlan``,
#: added by :mod:`sparkle.base_image_plan` when imported).
EXPORTED_MODELS: dict[str, type[BaseModel]] = {
    "MoviePlan": MoviePlan,
    "AssetRefs": AssetRefs,
    "QAReport": QAReport,
    "Checkpoint": Checkpoint,
    "StageEvent": StageEvent,
    "RunManifest": RunManifest,
}

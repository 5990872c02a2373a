"""The stage order and the adapters that do each stage's work.

An adapter follows the seed contract::

    def stage_fn(movie_plan: MoviePlan, asset_refs: AssetRefs, run_dir: Path) -> AssetRefs
    # or -> (AssetRefs, metadata: dict)

An **adapter set** maps each of the seven stages to an adapter. Sets come from the entry
point group ``sparkle.adapters`` (an installed package adds its own), and Sparkle's built-in
``media`` and ``test`` sets. ``SPARKLE_ADAPTERS`` picks the set; one stage can be swapped with
``SPARKLE_ADAPTER_<STAGE>=module:function``. An adapter may declare the exceptions worth
retrying in a ``transient_errors`` attribute; :class:`TransientStageError` always is.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkle.errors import ConfigError, TransientStageError
from sparkle.schemas import STAGES, AssetRefs, MoviePlan

StageResult = AssetRefs | dict[str, Any] | tuple[AssetRefs | dict[str, Any], dict[str, Any]]
StageFn = Callable[[MoviePlan, AssetRefs, Path], StageResult]

#: Entry point group through which installed packages add adapter sets.
ENTRY_POINT_GROUP = "sparkle.adapters"

#: Sets shipped with Sparkle, found even when the package's entry points are not installed.
BUILTIN_SETS: dict[str, str] = {
    "media": "sparkle.adapters.media_set:ADAPTERS",
    "test": "sparkle.adapters.testing:ADAPTERS",
}

#: Environment variable prefix of single-stage overrides.
OVERRIDE_PREFIX = "SPARKLE_ADAPTER_"


@dataclass(frozen=True)
class Adapter:
    """A stage's adapter, with where it came from and which of its errors are transient."""

    stage: str
    name: str
    fn: StageFn
    transient: tuple[type[BaseException], ...]

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, (TransientStageError, *self.transient))


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    return stage


def import_object(spec: str) -> Any:
    """Import ``module:attribute`` (``module.attribute`` also works)."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{spec!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for adapter {spec!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no {attr!r} (adapter {spec!r})") from None


def available_sets() -> dict[str, str]:
    """Adapter set names and where each comes from."""
    sets = dict(BUILTIN_SETS)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        sets[ep.name] = ep.value
    return sets


def load_adapters(set_name: str, environ: Mapping[str, str] | None = None) -> dict[str, Adapter]:
    """The adapters of ``set_name`` with ``SPARKLE_ADAPTER_<STAGE>`` overrides applied.

    Raises:
      ConfigError: unknown set, a set missing a stage, or an override that cannot be imported.
    """
    environ = os.environ if environ is None else environ
    sets = available_sets()
    if set_name not in sets:
        raise ConfigError(
            f"unknown adapter set {set_name!r} (SPARKLE_ADAPTERS / --adapters); "
            f"available: {', '.join(sorted(sets))}"
        )
    table = import_object(sets[set_name])
    if not isinstance(table, Mapping):
        raise ConfigError(f"adapter set {set_name!r} ({sets[set_name]}) is not a mapping")
    adapters: dict[str, Adapter] = {}
    for stage in STAGES:
        override = environ.get(f"{OVERRIDE_PREFIX}{stage.upper()}")
        if override:
            fn, name = import_object(override), override
        elif stage in table:
            fn = table[stage]
            fn = import_object(fn) if isinstance(fn, str) else fn
            name = f"{set_name}:{getattr(fn, '__name__', stage)}"
        else:
            raise ConfigError(f"adapter set {set_name!r} has no adapter for stage {stage!r}")
        if not callable(fn):
            raise ConfigError(f"adapter {name!r} for stage {stage!r} is not callable")
        transient = tuple(getattr(fn, "transient_errors", ()))
        adapters[stage] = Adapter(stage, name, fn, transient)
    return adapters


def normalize_result(result: StageResult) -> tuple[AssetRefs, dict[str, Any]]:
    """An adapter's return value as ``(AssetRefs, metadata)``."""
    metadata: dict[str, Any] = {}
    if isinstance(result, tuple):
        result, metadata = result
    refs = result if isinstance(result, AssetRefs) else AssetRefs.model_validate(result)
    return refs, dict(metadata)

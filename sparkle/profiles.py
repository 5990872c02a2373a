"""Watch-folder profiles: sub-folders of the inbox with their own settings.

A sub-folder of the inbox holding a ``profile.toml`` is a **profile**: a plan dropped into
``inbox/rush/`` becomes a run with the ``rush`` profile's settings. ``sparkle serve`` and
``sparkle watch`` watch each profile folder as a hot folder of its own (with its own
``.claimed/``, ``processed/`` and ``rejected/``). The inbox's ``processed/``, ``rejected/``
and ``.claimed/`` are never profiles; a sub-folder without a ``profile.toml`` is not watched
(a warning at start says so).

``profile.toml``, every key optional::

    priority = "high"                  # high, normal or low (sparkle.priority)
    review_after = ["images", "qa"]    # stages to stop after for a review (or "images,qa")
    webhook = "https://example.com/hook"  # also notified of the run's end (besides
                                       # SPARKLE_WEBHOOK_URL)

The settings reach the run through its plan: when the plan is received they are merged into
its ``metadata`` where the plan does not set that key itself (the plan wins), so the run's
``movie_plan.json`` says what it ran with. The run id follows the usual rule on that merged
plan: ``metadata.run_id`` when set, else the title's slug and the hash of the plan *with*
the profile's values, so the same file dropped into two profiles with different settings
makes two runs.

Any other key, a value of the wrong kind, or ``adapters`` (an adapter set per profile is not
supported yet: the adapter set is the process's, ``SPARKLE_ADAPTERS`` / ``--adapters``) is a
:class:`ConfigError` at start naming the file and the key.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sparkle import inbox, inbox_names
from sparkle.errors import ConfigError
from sparkle.priority import PRIORITIES
from sparkle.schemas import STAGES, split_stages
from sparkle.webhooks import check_url

if TYPE_CHECKING:
    from sparkle.runstore import Run, RunStore
    from sparkle.settings import Settings

log = logging.getLogger(__name__)

#: The settings file that makes an inbox sub-folder a profile.
PROFILE_FILE: Final = inbox_names.PROFILE_FILE

#: Sub-folders of the inbox that are the hot folder's own, never profiles.
RESERVED_NAMES: Final = frozenset(
    {inbox_names.CLAIMED_DIR, inbox_names.PROCESSED_DIR, inbox_names.REJECTED_DIR})

#: A profile's name (its folder's): never mistaken for a plan file by the inbox above it.
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

#: The keys of ``profile.toml``.
KNOWN_KEYS: Final = ("priority", "review_after", "webhook")

#: Keys that are understood but not supported yet, with what to do instead.
NOT_YET: Final = {
    "adapters": "an adapter set per profile is not supported yet; the adapter set is the "
                "process's (SPARKLE_ADAPTERS / --adapters): run another `sparkle serve "
                "--adapters NAME` on its own inbox for that set, and remove the key",
}


@dataclass(frozen=True)
class Profile:
    """One profile folder and the plan metadata it gives where the plan says nothing."""

    name: str
    folder: Path
    metadata: dict[str, str] = field(default_factory=dict)


def load_profile(folder: Path) -> Profile:
    """The profile of ``folder`` (which holds a ``profile.toml``).

    Raises:
      ConfigError: one line naming the file, the key and what to do.
    """
    path = folder / PROFILE_FILE
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    metadata: dict[str, str] = {}
    for key, value in table.items():
        if key in NOT_YET:
            raise ConfigError(f"{path}: key {key!r}: {NOT_YET[key]}")
        if key not in KNOWN_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; a profile's keys are "
                              f"{', '.join(KNOWN_KEYS)}")
        metadata[key] = _value(path, key, value)
    return Profile(folder.name, folder, metadata)


def _value(path: Path, key: str, value: Any) -> str:
    """A profile value as the plan metadata string it becomes (checked as a plan's is)."""
    if key == "priority":
        if value not in PRIORITIES:
            raise ConfigError(f"{path}: key 'priority' must be one of {', '.join(PRIORITIES)} "
                              f"(got {value!r})")
        return str(value)
    if key == "review_after":
        names = split_stages(value) if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{path}: key 'review_after' must be a list of stages or a "
                              f"comma-separated string, e.g. [\"images\", \"qa\"] (got {value!r})")
        unknown = [name for name in names if name.strip() not in STAGES]
        if unknown:
            raise ConfigError(f"{path}: key 'review_after' names no stage: "
                              f"{', '.join(map(repr, unknown))}; stages are {', '.join(STAGES)}")
        named = {name.strip() for name in names}
        return ",".join(stage for stage in STAGES if stage in named)
    # webhook
    if not isinstance(value, str):
        raise ConfigError(f"{path}: key 'webhook' must be a URL string (got {value!r})")
    try:
        return check_url(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: key 'webhook': {exc}") from None


def discover(inbox_dir: Path) -> list[Profile]:
    """The profiles of the inbox, by name; every ``profile.toml`` is checked.

    Raises:
      ConfigError: a profile's file is wrong, or its folder's name is not a usable name.
    """
    profiles: list[Profile] = []
    try:
        entries = sorted(os.scandir(inbox_dir), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name in RESERVED_NAMES or entry.name.startswith(".") \
                or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        if not (folder / PROFILE_FILE).is_file():
            log.warning("inbox: %s has no %s; plans dropped there are not taken (add one to "
                        "make it a profile)", folder, PROFILE_FILE)
            continue
        if not NAME_RE.fullmatch(entry.name):
            raise ConfigError(f"{folder / PROFILE_FILE}: the folder name {entry.name!r} cannot "
                              "name a profile; use letters, digits, '-' and '_'")
        profiles.append(load_profile(folder))
    return profiles


def inbox_for(profile: Profile, enqueue: Callable[[Run], object], store: RunStore,
              settings: Settings, poll: bool = False) -> inbox.Inbox:
    """The hot folder of ``profile``, creating runs in ``store``: the inbox's settings,
    the profile's plan metadata."""
    return inbox.Inbox(profile.folder, store, enqueue, poll=poll,
                 stable_seconds=settings.stable_seconds, glob=settings.inbox_glob,
                 max_plan_bytes=settings.max_plan_bytes, metadata_defaults=profile.metadata)

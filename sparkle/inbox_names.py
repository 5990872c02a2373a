"""The hot folder's layout and the names of the files in it, defined once.

Layout::

    inbox/
      plan.json                          dropped by a user
      .claimed/<owner>-<n>_plan.json     being processed by the watcher <owner>
      .claimed/.owner-<owner>.lock       flock held while the watcher <owner> is alive
      processed/plan.json                became a run (plan-1.json, ... on a name collision)
      rejected/plan.json                 invalid; beside plan.json.error.json
      <profile>/profile.toml             a hot folder of its own (:mod:`sparkle.profiles`)

Standard library only: the dashboard lists these folders without loading the watcher.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from typing import Final

#: Sub-folder holding files being processed (a dotfile, so it never looks like a plan).
CLAIMED_DIR: Final = ".claimed"
#: Sub-folder receiving plans that became runs.
PROCESSED_DIR: Final = "processed"
#: Sub-folder receiving invalid plans and their error records.
REJECTED_DIR: Final = "rejected"
#: A profile's settings file (:mod:`sparkle.profiles`): never a plan, and a sub-folder
#: holding one is a hot folder of its own, never taken as a file of this one.
PROFILE_FILE: Final = "profile.toml"
#: Appended to a rejected file's name to name its error record.
ERROR_SUFFIX: Final = ".error.json"

#: Name endings of files still being written (downloads, rsync, editors); taken once renamed.
TEMP_SUFFIXES: Final = (".part", ".tmp", ".crdownload")
#: Name beginnings of temporary files (office lock files); taken once renamed.
TEMP_PREFIXES: Final = ("~$",)

#: Longest file name, in bytes, kept as it is when claimed. A longer one is shortened
#: (its start, ``~``, 8 hex digits of its hash, its extension) so that the claim, its
#: place in processed/ or rejected/ with a ``-N`` suffix, and the error record's temporary
#: name all stay within the 255 bytes a file name may have.
MAX_KEPT_NAME_BYTES: Final = 160

_CLAIM_RE: Final = re.compile(r"(?P<owner>[0-9a-f]{12})-(?P<seq>[0-9]+)_(?P<name>.+)", re.S)
#: An owner lock's name, or the temporary name it is locked under before it is published.
_OWNER_LOCK_RE: Final = re.compile(r"\.owner-(?P<owner>[0-9a-f]{12})\.lock(\.tmp)?")


def is_plan_name(name: str, glob: str = "*.json") -> bool:
    """Whether a file named ``name`` in the inbox is a plan to take.

    Dotfiles, temporary names (``*.part``, ``*.tmp``, ``*.crdownload``, ``~$*``) and the
    inbox's own sub-folders are never taken; other names must match ``glob``, ignoring case.
    """
    if not name or name.startswith(".") or name.startswith(TEMP_PREFIXES):
        return False
    lower = name.lower()
    if lower.endswith(TEMP_SUFFIXES) or name in (PROCESSED_DIR, REJECTED_DIR, PROFILE_FILE):
        return False
    return fnmatch.fnmatchcase(lower, glob.lower())


def fitted_name(name: str) -> str:
    """``name``, or a shorter name standing for it when it is longer than
    :data:`MAX_KEPT_NAME_BYTES` (see there); the extension is kept."""
    raw = os.fsencode(name)
    if len(raw) <= MAX_KEPT_NAME_BYTES:
        return name
    dot = raw.rfind(b".")
    suffix = raw[dot:] if dot > 0 and len(raw) - dot <= 16 else b""
    digest = hashlib.sha256(raw).hexdigest()[:8]
    room = MAX_KEPT_NAME_BYTES - len(suffix) - len(digest) - 1
    # (whole characters only, and never a dotfile, which the inbox's folders hide)
    stem = raw[:room].decode("utf-8", "ignore").lstrip(".")
    return f"{stem}~{digest}{os.fsdecode(suffix)}"


def claim_name(owner: str, seq: int, name: str) -> str:
    """The name of ``name`` once claimed by watcher ``owner`` (``seq`` keeps it unique)."""
    return f"{owner}-{seq}_{name}"


def parse_claim_name(claimed: str) -> tuple[str | None, str]:
    """``(owner, original name)`` of a file in ``.claimed/``; owner is None when unknown."""
    match = _CLAIM_RE.fullmatch(claimed)
    if match is None:
        return None, claimed
    return match["owner"], match["name"]


def owner_lock_name(owner: str) -> str:
    """The name, in ``.claimed/``, of the lock file watcher ``owner`` holds while alive."""
    return f".owner-{owner}.lock"


def parse_owner_lock_name(name: str) -> str | None:
    """The watcher whose lock (or lock being published) ``name`` is; None for other names."""
    match = _OWNER_LOCK_RE.fullmatch(name)
    return None if match is None else match["owner"]


def candidate_names(name: str) -> Iterator[str]:
    """``name``, then ``stem-1.ext``, ``stem-2.ext``, ...: names to try on a collision."""
    yield name
    dot = name.rfind(".")
    stem, suffix = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    for n in itertools.count(1):
        yield f"{stem}-{n}{suffix}"

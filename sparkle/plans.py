"""Loading plan files: bytes from disk to a validated MoviePlan, or one PlanError saying why not.

Whatever is in the file, loading never raises anything but PlanError (and never follows a
symlink), so the hot folder and the CLI can hand any file to :func:`load_plan_file`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sparkle import base_image_plan
from sparkle.errors import PlanError, Problem
from sparkle.schemas import MoviePlan, reference_problems
from sparkle.wording import house_wording

#: Offending values are shown in error messages up to this many characters.
MAX_SHOWN_VALUE = 60


def load_plan_file(path: Path, max_bytes: int,
                   metadata_defaults: Mapping[str, str] | None = None) -> MoviePlan:
    """Read, parse and validate the plan at ``path``.

    Parameters:
      path: the plan file; a symlink is refused, never followed.
      max_bytes: files larger than this are refused before they are read.
      metadata_defaults: metadata given to the plan where it sets none of its own (an
        inbox profile's, :mod:`sparkle.profiles`); part of the plan from then on.

    Raises:
      PlanError: listing every problem found, each with a JSON path where one applies.
    """
    source = str(path)
    data = _read_regular_file(path, max_bytes)
    return parse_plan_bytes(data, source, metadata_defaults)


def parse_plan_bytes(data: bytes, source: str,
                     metadata_defaults: Mapping[str, str] | None = None) -> MoviePlan:
    """Decode, parse and validate plan bytes; ``source`` names them in errors.
    ``metadata_defaults``: see :func:`load_plan_file`."""
    if not data.strip():
        raise PlanError(source, [Problem("", "the file is empty; expected a JSON object")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(
            source,
            [Problem("", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}")],
        ) from None
    duplicates: list[str] = []
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicate_keys(duplicates))
    except json.JSONDecodeError as exc:
        raise PlanError(
            source,
            [Problem("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")],
        ) from None
    except RecursionError:
        raise PlanError(
            source, [Problem("", "JSON nested too deeply; a plan needs only a few levels")]
        ) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python will convert
        raise PlanError(source, [Problem("", f"unusable JSON value: {exc}")]) from None
    if duplicates:
        raise PlanError(
            source,
            [Problem("", f"key {key!r} appears twice in one object; keep one")
             for key in duplicates],
        )
    if metadata_defaults:
        document = with_metadata_defaults(document, metadata_defaults)
    return validate_plan(document, source)


def with_metadata_defaults(document: Any, defaults: Mapping[str, str]) -> Any:
    """``document`` with ``defaults`` in its ``metadata`` where it has no such key (a plan
    in either format keeps ``metadata`` at the top). Anything else is left for validation
    to report."""
    if not isinstance(document, dict):
        return document
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        return document
    return {**document, "metadata": {**defaults, **metadata}}


def _no_duplicate_keys(found: list[str]) -> Any:
    """A json ``object_pairs_hook`` noting keys repeated in one object (JSON allows them;
    a plan with two titles is a mistake, not a choice)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen and key not in found:
                found.append(key)
            seen[key] = value
        return seen

    return hook


def validate_plan(document: Any, source: str) -> MoviePlan:
    """Validate an already-parsed JSON value as a MoviePlan."""
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise PlanError(
            source, [Problem("", f"top level is a JSON {_json_kind(kind)}; expected an object")]
        )
    if base_image_plan.is_this_format(document):
        return _validate_base_image_plan(document, source)
    try:
        return MoviePlan.model_validate(document)
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        if not any(error["type"] == "plan_references" for error in exc.errors()):
            # pydantic skips the plan-wide checks once a field is wrong: run them on what
            # can be read, so that one pass reports every problem
            problems += [Problem(path, message) for path, message in _raw_references(document)]
        raise PlanError(source, problems) from None
    except RecursionError:
        raise PlanError(source, [Problem("", "plan nested too deeply")]) from None


def _validate_base_image_plan(document: dict[str, Any], source: str) -> MoviePlan:
    """Validate a plan in the base-image format (:mod:`sparkle.base_image_plan`) and make
    it Sparkle's plan; every problem is named, as for Sparkle's own format."""
    try:
        received = base_image_plan.BaseImagePlan.model_validate(document)
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        if not any(error["type"] == "plan_references" for error in exc.errors()):
            problems += [Problem(path, message)
                         for path, message in base_image_plan.cross_problems(document)]
        raise PlanError(source, problems) from None
    except RecursionError:
        raise PlanError(source, [Problem("", "plan nested too deeply")]) from None
    try:
        return base_image_plan.to_movie_plan(received)
    except ValidationError as exc:
        raise PlanError(source, problems_from_validation(exc)) from None


def _raw_references(document: dict[str, Any]) -> list[list[str]]:
    """:func:`~sparkle.schemas.reference_problems` of a plan that failed its field checks,
    read as far as its JSON allows."""

    def items(value: object) -> list[Any]:
        return value if isinstance(value, list) else []

    def field(value: object, name: str) -> object:
        return value.get(name) if isinstance(value, dict) else None

    characters = document.get("characters", [])
    if not isinstance(characters, list):
        characters = [None]  # unreadable: no dialogue check
    shots = [(field(shot, "id"), [field(line, "character_id")
                                  for line in items(field(shot, "dialogue"))])
             for shot in items(document.get("shots"))]
    return reference_problems([field(c, "id") for c in characters], shots)


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into Problems with JSON paths, shortened values and the rule."""
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        if "problems" in ctx:
            problems.extend(Problem(path, message) for path, message in ctx["problems"])
            continue
        path = json_path(error["loc"])
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see `sparkle schema`)"
        elif error["type"] == "string_pattern_mismatch" and ctx.get("pattern") == r"\S":
            message = "must not be blank"
        else:
            message = f"{house_wording(error['type'], ctx) or message} " \
                      f"(got {shorten(error.get('input'))})"
        problems.append(Problem(path, message))
    return problems


def json_path(loc: tuple[int | str, ...]) -> str:
    """``('shots', 2, 'id')`` → ``shots[2].id``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def shorten(value: Any) -> str:
    """A short printable form of an offending value."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > MAX_SHOWN_VALUE:
        text = text[: MAX_SHOWN_VALUE - 3] + "..."
    return text


def _json_kind(python_type: str) -> str:
    return {"list": "array", "str": "string", "int": "number", "float": "number"}.get(
        python_type, "null" if python_type == "NoneType" else python_type
    )


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    """Read a regular file without following symlinks, refusing it when too big."""
    source = str(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except ValueError:  # a NUL byte in the path
        raise PlanError(source, [Problem("", "is not a usable path (NUL byte)")]) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "is a symbolic link; copy the file itself into place"
        elif exc.errno == errno.ENOENT:
            reason = "does not exist"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            reason = "cannot be read (permission denied)"
        else:
            reason = f"cannot be opened ({exc.strerror})"
        raise PlanError(source, [Problem("", reason)]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PlanError(source, [Problem("", "is not a regular file")])
        if info.st_size > max_bytes:
            raise PlanError(
                source,
                [
                    Problem(
                        "",
                        f"is {info.st_size} bytes, over the {max_bytes}-byte limit "
                        "(SPARKLE_MAX_PLAN_BYTES)",
                    )
                ],
            )
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > max_bytes:  # the file grew while we read it
                raise PlanError(
                    source, [Problem("", f"is over the {max_bytes}-byte limit")]
                )
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise PlanError(source, [Problem("", f"cannot be read ({exc.strerror})")]) from None
    finally:
        os.close(fd)

"""A small JSON Schema checker for the schemas pydantic emits (shared by the tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: The committed schemas (``sparkle schema --out schemas``).
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"

#: Keywords that only describe; they never make an instance invalid.
ANNOTATIONS = {"title", "description", "default", "examples"}


def committed(name: str) -> dict[str, Any]:
    """The committed schema of model ``name``."""
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text("utf-8"))
    return schema


def schema_errors(instance: Any, schema: dict[str, Any], where: str = "$",
                  root: dict[str, Any] | None = None) -> list[str]:
    """Check ``instance`` against the JSON Schema keywords pydantic emits for flat models.

    A small stand-in for the ``jsonschema`` package (not a dependency of this project). It
    fails loudly on any keyword it does not know, so it cannot pass a schema by ignoring it.
    """
    root = schema if root is None else root
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    errors: list[str] = []
    for keyword, expected in schema.items():
        if keyword in ANNOTATIONS or keyword in ("properties", "$defs"):
            continue
        if keyword == "$ref":
            name = expected.removeprefix("#/$defs/")
            errors += schema_errors(instance, root["$defs"][name], where, root)
        elif keyword == "items":
            if isinstance(instance, list):
                for index, item in enumerate(instance):
                    errors += schema_errors(item, expected, f"{where}[{index}]", root)
        elif keyword == "type":
            if expected == "integer":
                ok = isinstance(instance, int) and not isinstance(instance, bool)
            elif expected == "number":
                ok = isinstance(instance, int | float) and not isinstance(instance, bool)
            else:
                ok = isinstance(instance, types[expected])
            if not ok:
                errors.append(f"{where}: {instance!r} is not of type {expected}")
        elif keyword == "enum":
            if instance not in expected:
                errors.append(f"{where}: {instance!r} is not one of {expected}")
        elif keyword == "minimum":
            if isinstance(instance, int | float) and instance < expected:
                errors.append(f"{where}: {instance!r} is below {expected}")
        elif keyword in ("minLength", "maxLength"):
            if isinstance(instance, str):
                too_short = keyword == "minLength" and len(instance) < expected
                if too_short or (keyword == "maxLength" and len(instance) > expected):
                    errors.append(f"{where}: {instance!r} breaks {keyword} {expected}")
        elif keyword == "pattern":
            # Python's re understands the ECMA-262 subset pydantic emits (incl. lookahead).
            if isinstance(instance, str) and not re.search(expected, instance):
                errors.append(f"{where}: {instance!r} does not match {expected}")
        elif keyword == "anyOf":
            if all(schema_errors(instance, option, where, root) for option in expected):
                errors.append(f"{where}: {instance!r} matches no option of anyOf")
        elif keyword == "required":
            if isinstance(instance, dict):
                errors += [f"{where}: missing {key!r}" for key in expected if key not in instance]
        elif keyword == "additionalProperties":
            if isinstance(instance, dict):
                known = schema.get("properties", {})
                for key, value in instance.items():
                    if key in known:
                        continue
                    if expected is False:
                        errors.append(f"{where}: unexpected key {key!r}")
                    elif isinstance(expected, dict):
                        errors += schema_errors(value, expected, f"{where}.{key}", root)
        else:
            raise AssertionError(
                f"schema keyword {keyword!r} at {where} is not understood by "
                "this checker; extend schema_errors() to cover it"
            )
    if isinstance(instance, dict):
        for key, subschema in schema.get("properties", {}).items():
            if key in instance:
                errors += schema_errors(instance[key], subschema, f"{where}.{key}", root)
    return errors

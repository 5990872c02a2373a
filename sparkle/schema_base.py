"""What every wire-format model shares: unknown keys refused, path-safe ids, pydantic-v1
style ``json()``, and enums published as their values.

Every model of :mod:`sparkle.plan_models` and :mod:`sparkle.run_records` is the format of
something written to disk or read from a user, so each one forbids unknown keys: a typo in
a plan is an error, not a silently ignored field.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError

from sparkle.names import ID_RE


def check_id(value: str) -> str:
    """Return ``value`` when it is a path-safe id, else raise a ValueError saying why."""
    if not ID_RE.fullmatch(value):
        raise PydanticCustomError(
            "unsafe_id",
            "must be 1-64 characters of letters, digits, '_', '-' or '.', "
            "starting with a letter or digit",
        )
    if ".." in value:
        raise PydanticCustomError("unsafe_id", "must not contain '..'")
    return value


#: The id rule as a JSON Schema pattern (ECMA-262), for tools that validate with the schemas.
ID_JSON_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

SafeId = Annotated[
    str,
    AfterValidator(check_id),
    WithJsonSchema({"type": "string", "pattern": ID_JSON_PATTERN, "minLength": 1, "maxLength": 64}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    def json(self, **kwargs: Any) -> str:
        """The model as JSON, pydantic-v1 style (the seed contract's adapters call
        ``checkpoint.json()``); the same as ``model_dump_json``, without v2's warning."""
        return self.model_dump_json(**kwargs)


def values_schema(kind: type[enum.StrEnum]) -> WithJsonSchema:
    """The JSON Schema of a field of enum ``kind``: its values, inline (``{"enum": [...],
    "type": "string"}``), as a ``Literal`` field's would be. The published schemas list
    the values in place; pydantic's own form for an enum is a ``$ref`` to a definition."""
    return WithJsonSchema({"enum": [member.value for member in kind], "type": "string"})


def problems_error(kind: str, problems: Sequence[Sequence[str]]) -> PydanticCustomError:
    """One validation error carrying several ``(path, message)`` problems: reported one by
    one, each at its own path (:func:`sparkle.plans.problems_from_validation`)."""
    return PydanticCustomError(
        kind, "{summary}",
        {"summary": "; ".join(f"{path}: {message}" for path, message in problems),
         "problems": problems})

"""pydantic's validation errors in the words of Sparkle's own messages ("must be ..."), so
that a plan's or a setting's problems read alike whoever wrote the rule."""

from __future__ import annotations

from typing import Any

#: pydantic's error types in the words of Sparkle's own messages ("must be ...").
WORDING: dict[str, str] = {
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} character(s)",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be {ge} or more",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be {le} or less",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
}


def house_wording(error_type: str, ctx: dict[str, Any]) -> str | None:
    """The rule an error of pydantic's ``error_type`` broke, worded as Sparkle's own
    messages are; None for a type without a wording here (pydantic's text is kept)."""
    template = WORDING.get(error_type)
    if template is None:
        return None
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return None

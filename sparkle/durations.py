"""Durations as operators write them: ``90s``, ``15m``, ``1h30m``, ``7d``.

Standard library only: settings (``SPARKLE_RETENTION``) and the CLI (``--older-than``)
read the same text the same way.
"""

from __future__ import annotations

import re

#: Seconds per duration unit (``90s``, ``15m``, ``2h``, ``7d``; no unit = seconds).
DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``15m``, ``1h30m``, ``1.5h``, ``7d``.

    Raises:
      ValueError: the text is not a duration.
    """
    compact = text.strip().lower()
    if not compact:
        raise ValueError("empty duration")
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match.group(1)) * DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 15m, 1h30m, 7d)")
    return total

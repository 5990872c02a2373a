"""Text from outside (inbox file names) made safe for a log line and a terminal."""

from __future__ import annotations

import pytest

from sparkle.logs import printable


@pytest.mark.parametrize(("raw", "shown"), [
    ("plan.json", "plan.json"),
    ("My Movie (final) café.json", "My Movie (final) café.json"),
    ("a\nb.json", "a\\x0ab.json"),  # a newline would forge a log line
    ("a\r\tb", "a\\x0d\\x09b"),
    ("\x1b[2Jwipe.json", "\\x1b[2Jwipe.json"),  # a terminal escape sequence
    ("\x9bcsi.json", "\\x9bcsi.json"),  # the C1 control introducer
    ("rtl\u202egnp.json", "rtl\\u202egnp.json"),  # a bidirectional override
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("bad\udcffbyte.json", "bad\\udcffbyte.json"),  # an undecodable byte (surrogateescape)
    ("back\\x0aslash", "back\\\\x0aslash"),  # a backslash cannot forge an escape
])
def test_control_characters_are_escaped(raw: str, shown: str) -> None:
    assert printable(raw) == shown

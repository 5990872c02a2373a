"""Log formatting and context: every line logged while a stage runs names its run and stage.

The engine wraps each stage message in :func:`log_context`; :class:`ContextFilter`, installed
on a handler, copies the run id and stage of the current context onto every record that
passes through it, whichever logger made it (the engine, the lease, an adapter, dramatiq).
``--log-format json`` (:class:`JsonFormatter`) gives one JSON object per line for log
shippers; the text format appends ``[run=… stage=…]`` when the message does not already
name the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TextIO

#: Characters escaped by :func:`printable` besides control characters: the backslash (so an
#: escape cannot be forged) and the invisible ones that reorder or hide text on a terminal.
_ESCAPED = frozenset("\\\u061c\u200b\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
                     "\u2066\u2067\u2068\u2069\ufeff")


def printable(text: str) -> str:
    """``text`` safe to put in a log line or on a terminal: control characters (newlines,
    escape sequences), bidirectional overrides, undecodable bytes (surrogates) and the
    backslash are written as escapes (``\\x0a``, ``\\x1b``, ``\\u202e``, ``\\\\``).
    A file name from the inbox can hold any of them: raw, a newline forges a log line and an
    escape sequence rewrites the operator's terminal."""
    if text.isprintable() and "\\" not in text:
        return text  # (the common case, at C speed)
    out = []
    for char in text:
        if char in _ESCAPED or not char.isprintable():
            code = ord(char)
            out.append("\\\\" if char == "\\" else f"\\x{code:02x}" if code < 0x100
                       else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


#: Log formats the CLI offers (``--log-format``).
FORMATS = ("text", "json")

#: Text log line layout (the run/stage suffix is added by :class:`TextFormatter`).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "sparkle_log_context", default=(None, None)
)


@contextlib.contextmanager
def log_context(run_id: str | None, stage: str | None = None) -> Iterator[None]:
    """Within the block, log records of this thread (or task) carry ``run_id`` and ``stage``."""
    token = _context.set((run_id, stage))
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Sets ``record.run_id`` and ``record.stage`` from :func:`log_context`; drops nothing.

    Values a caller passed explicitly (``extra={"run_id": …}``) are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        run_id, stage = _context.get()
        if getattr(record, "run_id", None) is None:
            record.run_id = run_id
        if getattr(record, "stage", None) is None:
            record.stage = stage
        return True


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> [run=<id> stage=<stage>]``.

    The suffix is left out when there is no context or the message already names the run
    (the engine's own lines start ``run <id> stage <stage>:``).
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        run_id = getattr(record, "run_id", None)
        if run_id is None or f"run {run_id}" in record.getMessage():
            return line
        stage = getattr(record, "stage", None)
        suffix = f" [run={run_id} stage={stage}]" if stage else f" [run={run_id}]"
        first, newline, rest = line.partition("\n")  # keep tracebacks below the line
        return first + suffix + newline + rest


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "run_id"?, "stage"?, "exc"?}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run_id", "stage"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr) in ``fmt``, with run context.

    Parameters:
      level: ``debug``, ``info``, ``warning`` or ``error``.
      fmt: ``text`` or ``json``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

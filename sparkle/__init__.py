"""Sparkle Motion: a hot-folder movie pipeline.

``sparkle.retry`` is the seed contract's retry decorator (:mod:`sparkle.retrying`); it is
imported on first use, so that commands which never need it start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkle.retrying import retry as retry

__version__ = '0.1.0'

__all__ = ["__version__", "retry"]


def __getattr__(name: str) -> Any:
    if name == "retry":
        from sparkle.retrying import retry

        return retry
    raise AttributeError(f"module 'sparkle' has no attribute {name!r}")

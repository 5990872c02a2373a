"""Random names and tokens that must be unique, not secret, at no system call each.

They come from a generator of their own, seeded by the OS at import and again in every
forked child, and out of reach of code that seeds the global ``random`` for reproducible
output: an adapter calling ``random.seed(plan_seed)`` must not make two workers draw the
same lease token, nor the same temp file name.
"""

from __future__ import annotations

import os
import random

_generator = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_generator.seed)


def hex_token(bits: int) -> str:
    """``bits`` random bits as lower-case hex (``bits`` a multiple of 4)."""
    return f"{_generator.getrandbits(bits):0{bits // 4}x}"

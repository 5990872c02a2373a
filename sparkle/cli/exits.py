"""How a ``sparkle`` command ends: the exit codes, :func:`fail` and the one error guard.

Every command exits with one of the codes of :mod:`sparkle.exit_codes`; ``sparkle --help``
lists them (:data:`EXIT_CODES_HELP`) and README's command table says which ones each
command uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

import click

from sparkle.errors import (
    ConfigError,
    PlanError,
    RunConflictError,
    RunNotFoundError,
    SparkleError,
    UnsafePathError,
)
from sparkle.exit_codes import (
    EXIT_AWAITING_REVIEW,
    EXIT_FAILED,
    EXIT_INFRASTRUCTURE,
    EXIT_OK,
    EXIT_USAGE,
)
from sparkle.infrastructure import InfrastructureError, from_os_error, is_infrastructure

#: What each exit code means, in the words of ``sparkle --help``.
EXIT_CODE_MEANINGS: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "done"),
    (EXIT_FAILED, "a stage failed, the run was cancelled, or a decision was refused"),
    (EXIT_USAGE, "bad input or setting (the file, the field and what to do are named)"),
    (EXIT_INFRASTRUCTURE, "the storage failed (full, read-only, I/O error; the path is named) "
                          "or Redis cannot be reached"),
    (EXIT_AWAITING_REVIEW, "the run stopped at a review gate and waits for a person"),
)

#: Shown under ``sparkle --help`` (``\b`` keeps click from re-wrapping the lines).
EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def redis_unreachable(exc: Exception) -> str:
    """What to say when a command cannot reach Redis."""
    return f"Redis: {exc} (is SPARKLE_REDIS_URL right, and the server up?)"


def guard(body: Callable[[], int | None]) -> NoReturn:
    """Run a command's body and exit with the code it returns (None: :data:`EXIT_OK`),
    turning Sparkle's errors, a full or read-only disk and a Redis that cannot be reached
    into one message and the exit code of :data:`EXIT_CODE_MEANINGS`.

    Raises:
      OSError: one that is not an infrastructure failure (a bug: its traceback helps).
    """
    # (redis pulls in about 100 ms of imports: only a command that runs needs it, so it
    # is imported here rather than when `sparkle --help` loads this module)
    import redis

    try:
        code = body()
    except redis.RedisError as exc:
        fail(redis_unreachable(exc), EXIT_INFRASTRUCTURE)
    except InfrastructureError as exc:
        fail(f"{exc}; {exc.advice}", EXIT_INFRASTRUCTURE)
    except OSError as exc:
        if not is_infrastructure(exc):
            raise
        failure = from_os_error(exc)
        fail(f"{failure}; {failure.advice}", EXIT_INFRASTRUCTURE)
    except PlanError as exc:  # (its message lists every problem, one per line)
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    except (ConfigError, RunConflictError, RunNotFoundError, UnsafePathError) as exc:
        fail(str(exc))
    except SparkleError as exc:
        fail(str(exc), EXIT_FAILED)
    sys.exit(code or EXIT_OK)

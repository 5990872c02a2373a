"""``sparkle.retry``: bounded retries for an adapter's calls to remote or model services,
each retried attempt recorded in the run's manifest.

The seed contract provides a ``retry`` decorator that "records attempts in the manifest";
this is Sparkle's. Wrap the function that makes one call::

    import sparkle

    @sparkle.retry(attempts=4, on=(urllib.error.URLError, TimeoutError))
    def generate(prompt: str) -> bytes:
        ...  # one HTTP request to the model server

Each call runs up to ``attempts`` times, waiting between attempts with exponential backoff
and jitter (tenacity's ``wait_exponential_jitter``), for exceptions of the ``on`` types
only; anything else, or the last attempt's error, is raised to the adapter (and from
there to the engine, which decides about the stage). Inside a stage every failed attempt
is recorded as a ``retry`` event of the stage's current attempt: the call's name, its
attempt number and the error, and, when the call then succeeds, one more with
``outcome: success``. ``sparkle timeline`` shows them. A call that succeeds at once
records nothing, so a stage making many calls does not fill the manifest.

The engine tells the decorator which run and stage it is in through a context variable set
around the adapter call (:func:`stage_context`), so it works in every worker thread, in
embedded and Redis modes. Threads an adapter starts itself do not inherit it: submit the
work with ``contextvars.copy_context().run`` (see README). Outside a stage (a script, a
test) the decorator retries the same way and records nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import tenacity

if TYPE_CHECKING:
    from sparkle.runstore import Run
    from sparkle.settings import Settings

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Attempts per call when not given.
DEFAULT_ATTEMPTS = 3

#: First backoff in seconds when not given; it doubles each attempt.
DEFAULT_BASE_SEC = 0.5

#: Longest backoff in seconds when not given.
DEFAULT_MAX_SEC = 30.0

#: Exceptions retried when ``on`` is not given: a connection that failed or timed out.
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)

#: Error texts recorded in retry events are cut to this many characters.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class StageContext:
    """The run, stage and attempt an adapter is running for."""

    run: Run
    stage: str
    attempt: int
    #: Set once the run's lease is lost: nothing more is recorded (only the lease holder
    #: writes a run's files).
    lease_lost: threading.Event | None = None
    #: The settings of the App running the stage (built-in adapters read theirs here).
    settings: Settings | None = None


_current: contextvars.ContextVar[StageContext | None] = contextvars.ContextVar(
    "sparkle_stage", default=None)


@contextlib.contextmanager
def stage_context(run: Run, stage: str, attempt: int,
                  lease_lost: threading.Event | None = None,
                  settings: Settings | None = None) -> Iterator[None]:
    """Make ``run``/``stage``/``attempt`` the current stage while the block runs (the
    engine wraps each adapter call in it, with its lease's ``lost`` event)."""
    token = _current.set(StageContext(run, stage, attempt, lease_lost, settings))
    try:
        yield
    finally:
        _current.reset(token)


def current_stage() -> StageContext | None:
    """The stage the calling code runs in, None outside one."""
    return _current.get()


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def _record(call: str, attempt: int, attempts: int, outcome: str,
            error: BaseException | None = None, wait_sec: float | None = None) -> None:
    """One ``retry`` event in the current stage's manifest; nothing outside a stage. A
    manifest that cannot be written is logged: the call's own result matters more."""
    where = _current.get()
    meta: dict[str, Any] = {"call": call, "call_attempt": attempt, "attempts": attempts,
                            "outcome": outcome}
    if wait_sec is not None:
        meta["retry_in_sec"] = round(wait_sec, 3)
    if where is not None and where.lease_lost is not None and where.lease_lost.is_set():
        log.warning("run %s stage %s: lease lost; retry of %s not recorded", where.run.run_id,
                    where.stage, call)
        return
    if where is None:
        log.info("call %s attempt %d/%d: %s%s", call, attempt, attempts, outcome,
                 f" ({_error_text(error)})" if error else "")
        return
    try:
        where.run.append_event(where.stage, "retry", where.attempt,
                               error=_error_text(error) if error else None, metadata=meta,
                               durable=False)
    except OSError as exc:
        log.warning("run %s stage %s: retry of %s not recorded (%s)", where.run.run_id,
                    where.stage, call, exc)


@overload
def retry(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retry(*, attempts: int = ..., on: tuple[type[BaseException], ...] = ...,
          base_sec: float = ..., max_sec: float = ..., jitter_sec: float | None = ...,
          name: str | None = ...) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retry(fn: Callable[P, R] | None = None, /, *, attempts: int = DEFAULT_ATTEMPTS,
          on: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT,
          base_sec: float = DEFAULT_BASE_SEC, max_sec: float = DEFAULT_MAX_SEC,
          jitter_sec: float | None = None, name: str | None = None,
          ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry the decorated call on transient errors, recording each retried attempt.

    Parameters:
      attempts: at most this many attempts per call (1 means no retry).
      on: the exception types worth another attempt; others are raised at once.
      base_sec: the first wait; each later one doubles, up to ``max_sec``.
      jitter_sec: a random 0..jitter_sec added to each wait (default: ``base_sec``), so
        that workers failing together do not retry together.
      name: the call's name in the manifest (default: the function's qualified name).

    Usable bare (``@sparkle.retry``) or with arguments (``@sparkle.retry(attempts=5)``).
    """
    if attempts < 1:
        raise ValueError(f"sparkle.retry: attempts must be at least 1, not {attempts}")
    if base_sec < 0 or max_sec < 0:
        raise ValueError("sparkle.retry: base_sec and max_sec must not be negative")

    def decorate(call: Callable[P, R]) -> Callable[P, R]:
        label: str = name or str(getattr(call, "__qualname__", repr(call)))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else None
            _record(label, state.attempt_number, attempts, "retrying", error, wait)

        @functools.wraps(call)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(attempts),
                wait=tenacity.wait_exponential_jitter(
                    multiplier=base_sec, max=max_sec,
                    jitter=base_sec if jitter_sec is None else jitter_sec),
                retry=tenacity.retry_if_exception_type(on),
                before_sleep=before_sleep,
                reraise=True,
            )
            try:
                result = retrying(call, *args, **kwargs)
            except Exception as exc:
                number = int(retrying.statistics.get("attempt_number", 1))
                _record(label, number, attempts, "gave_up" if isinstance(exc, on)
                        else "permanent", exc)
                raise
            number = int(retrying.statistics.get("attempt_number", 1))
            if number > 1:
                _record(label, number, attempts, "success")
            return result

        return wrapper

    return decorate(fn) if fn is not None else decorate

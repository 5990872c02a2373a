"""Error types. Each carries a message a person can act on: which file, which field, what to do."""

from __future__ import annotations

from dataclasses import dataclass


class SparkleError(Exception):
    """Base of every error Sparkle raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (a JSON path such as ``shots[2].id``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PlanError(SparkleError):
    """A plan file cannot be used. ``problems`` lists every reason found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: invalid plan ({len(problems)} problem(s))\n{lines}")


class RunConflictError(SparkleError):
    """A different plan already owns this run id."""


class RunNotFoundError(SparkleError):
    """No run folder exists for this run id."""


class UnsafePathError(SparkleError):
    """A path would lie outside its run folder."""


class StageError(SparkleError):
    """A stage adapter failed. Subclasses say whether retrying can help."""


class TransientStageError(StageError):
    """A failure that may pass (a busy resource, a timeout): the engine retries it."""


class PermanentStageError(StageError):
    """A failure retrying cannot fix (bad input, a missing prerequisite): fails at once."""


class LeaseLostError(SparkleError):
    """The run's lease was taken by another worker while this one held it."""


class ConfigError(SparkleError):
    """A setting or a configuration file is wrong."""


class ReviewError(SparkleError):
    """A review decision cannot apply: the run is not waiting, a shot id is unknown, a stage
    was not reached. The message says what the run is doing and what can be done."""


class DecisionConflictError(ReviewError):
    """Another decision on the same review won; this one was not applied."""


class RunBusyError(ReviewError):
    """A decision could not take the run: a worker or another decision held it for longer
    than ``SPARKLE_DECISION_WAIT_SEC``. Nothing was applied; trying again may work."""

"""Settings, read from ``SPARKLE_*`` environment variables (and a ``.env`` file if present).

Every setting is documented in the README's settings table; keep the two in step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from sparkle.errors import ConfigError
from sparkle.retention_policy import parse_policy
from sparkle.webhooks import webhook_urls
from sparkle.wording import house_wording


class Settings(BaseSettings):
    """Process-wide configuration, read with :func:`load_settings`."""

    model_config = SettingsConfigDict(env_prefix="SPARKLE_", env_file=".env", extra="ignore")

    #: Folder holding one sub-folder per run.
    runs_dir: Path = Path("runs")
    #: The hot folder watched for plan files.
    inbox_dir: Path = Path("inbox")
    #: ``redis://`` or ``rediss://`` URL; unset means the embedded in-process broker.
    redis_url: SecretStr | None = None
    #: Name of the adapter set (``media`` renders real movies, ``test`` is fast and tiny).
    adapters: str = "media"
    #: Seconds a run's lease lives without a heartbeat; a dead worker's run is free after it.
    lease_ttl_sec: float = Field(default=15.0, gt=0)
    #: Attempts of a stage adapter within one message (transient errors only).
    retry_attempts: int = Field(default=3, ge=1, le=20)
    #: First backoff between attempts, in seconds (doubles each time, with jitter).
    retry_base_sec: float = Field(default=0.5, ge=0)
    #: Largest backoff between attempts, in seconds.
    retry_max_sec: float = Field(default=10.0, ge=0)
    #: Hard time limit of one stage message, in seconds (dramatiq TimeLimit).
    stage_time_limit_sec: float = Field(default=900.0, gt=0)
    #: Per-stage time limits in seconds overriding the one above, as JSON:
    #: ``SPARKLE_STAGE_TIME_LIMITS='{"videos": 1800}'``.
    stage_time_limits: dict[str, float] = Field(default_factory=dict)
    #: Plans larger than this many bytes are refused before parsing.
    max_plan_bytes: int = Field(default=1024 * 1024, gt=0)
    #: A file in the inbox without a close event is taken after its size and mtime
    #: have been unchanged for this many seconds.
    stable_seconds: float = Field(default=0.5, ge=0)
    #: Glob of files the inbox takes.
    inbox_glob: str = "*.json"
    #: Key prefix (dramatiq namespace and Sparkle's own keys) in Redis.
    namespace: str = "sparkle"
    #: dramatiq RedisBroker: milliseconds without a heartbeat before a worker is taken for
    #: dead and its unacked messages are requeued.
    heartbeat_timeout_ms: int = Field(default=30_000, gt=0)
    #: dramatiq RedisBroker: per-million chance that a broker call runs maintenance.
    maintenance_chance: int = Field(default=10_000, ge=0, le=1_000_000)
    #: dramatiq RedisBroker: days a dead-lettered stage message is kept (``sparkle dlq``)
    #: before maintenance deletes it (7 in dramatiq). The run's ``failed`` checkpoint stays
    #: either way, and ``sparkle resume`` continues it.
    dead_letter_days: float = Field(default=30.0, gt=0)
    #: QA policy file (JSON or YAML); unset means the policy shipped with Sparkle.
    qa_policy: Path | None = None
    #: Re-run from the earliest stage QA names, once, when QA decides ``regenerate``.
    qa_auto_regenerate: bool = False
    #: Stages after which a run stops for a person's review (comma-separated, e.g.
    #: ``images,qa``), for plans whose ``metadata.review_after`` says nothing; empty: none.
    review_after: str = ""
    #: Times per run that QA's ``regenerate`` may re-roll the shots it names (with
    #: ``SPARKLE_QA_AUTO_REGENERATE``); after that the run waits for a person instead.
    qa_regenerate_limit: int = Field(default=2, ge=0, le=100)
    #: Seconds a review decision waits for a worker to let go of the run before refusing.
    decision_wait_sec: float = Field(default=10.0, gt=0)
    #: Seconds between reaper passes in ``sparkle watch`` and ``sparkle serve``.
    reaper_interval_sec: float = Field(default=10.0, gt=0)
    #: ``begin`` checkpoints without an outcome before a stage is failed as a crash loop.
    crash_loop_limit: int = Field(default=3, ge=1)
    #: Port of the Prometheus endpoint (``http://<metrics_host>:<port>/metrics``) served by
    #: ``sparkle worker`` (all its processes together), ``sparkle watch`` and ``sparkle serve``;
    #: unset means no endpoint.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: Address the metrics endpoint binds to: loopback unless you mean to expose it.
    metrics_host: str = "127.0.0.1"
    #: Seconds ``sparkle worker`` waits before replacing a worker process that died; doubles
    #: with each death in a row.
    worker_restart_min_sec: float = Field(default=1.0, gt=0)
    #: Longest wait, in seconds, before replacing a worker process that keeps dying.
    worker_restart_max_sec: float = Field(default=30.0, gt=0)
    #: Seconds a stopping worker process (SIGTERM) waits for its running stages to finish;
    #: stages still running then are left to the reaper, which re-drives them.
    worker_shutdown_timeout_sec: float = Field(default=600.0, gt=0)
    #: Longest wait, in milliseconds, between two polls of an idle stage queue by a worker
    #: process (dramatiq's ``worker_timeout``). Messages sent by Sparkle wake an idle
    #: queue's consumer at once (:mod:`sparkle.doorbell`), so this only bounds the pick-up
    #: of messages sent otherwise (by another dramatiq client, or put back by dramatiq's
    #: maintenance) and how long a stopping worker's idle threads take to notice; lower
    #: polls more while idle (42 consumers a worker process: 7 stages x 3 priority levels,
    #: each with its delay queue).
    worker_poll_ms: int = Field(default=3000, ge=10, le=60_000)
    #: Retention applied by the reaper at most once an hour: ``30d`` removes runs finished
    #: (succeeded, failed, rejected, cancelled) more than 30 days ago, ``30d:final`` only
    #: their intermediate media (see ``sparkle prune``). Unset: nothing is removed.
    retention: str | None = None
    #: Webhook URLs (comma-separated) that get a signed JSON POST when a run succeeds,
    #: fails, is cancelled, awaits review or is rejected (:mod:`sparkle.notifications`).
    webhook_url: str | None = None
    #: Key of the webhooks' HMAC-SHA256 signature (``X-Sparkle-Signature``); unset means
    #: unsigned requests.
    webhook_secret: SecretStr | None = None
    #: Seconds one webhook request may take.
    webhook_timeout_sec: float = Field(default=10.0, gt=0)
    #: First wait, in seconds, before a failed notification is tried again (doubles).
    webhook_retry_base_sec: float = Field(default=5.0, gt=0)
    #: Longest wait between two tries of a notification, in seconds.
    webhook_retry_max_sec: float = Field(default=300.0, gt=0)
    #: Seconds after which an undelivered notification is given up (7 days).
    webhook_give_up_sec: float = Field(default=7 * 86400.0, gt=0)
    #: Most executions of a stage at once across all workers (GPU pools), e.g.
    #: ``videos=2,lipsync=1``; stages not named are not limited.
    stage_concurrency: str | None = None
    #: About how long, in milliseconds, a message of a limited stage that found every slot
    #: taken waits before trying again (±50 % at random). Not counted as a retry.
    stage_concurrency_retry_ms: int = Field(default=500, ge=10, le=600_000)

    @model_validator(mode="after")
    def _review_after_names_stages(self) -> Settings:
        from sparkle.schemas import STAGES, split_stages

        unknown = [name for name in split_stages(self.review_after) if name not in STAGES]
        if unknown:
            raise ValueError(f"SPARKLE_REVIEW_AFTER names no stage: {', '.join(unknown)}; "
                             f"stages are {', '.join(STAGES)} (e.g. images,qa)")
        return self

    @property
    def review_after_stages(self) -> tuple[str, ...]:
        """``review_after`` as stage names in pipeline order."""
        from sparkle.schemas import STAGES, split_stages

        named = set(split_stages(self.review_after))
        return tuple(stage for stage in STAGES if stage in named)

    @model_validator(mode="after")
    def _poll_within_heartbeat(self) -> Settings:
        if self.worker_poll_ms >= self.heartbeat_timeout_ms:
            raise ValueError(
                f"SPARKLE_WORKER_POLL_MS ({self.worker_poll_ms}) must be less than "
                f"SPARKLE_HEARTBEAT_TIMEOUT_MS ({self.heartbeat_timeout_ms}): a worker that "
                "polls less often than that looks dead to the broker"
            )
        return self

    @field_validator("retention")
    @classmethod
    def _retention_policy(cls, value: str | None) -> str | None:
        if value:
            parse_policy(value)  # raises a ValueError naming the problem
        return value or None

    @field_validator("webhook_url")
    @classmethod
    def _webhook_urls(cls, value: str | None) -> str | None:
        if value:
            webhook_urls(value)  # raises a ValueError naming the bad URL
        return value or None

    @field_validator("stage_concurrency")
    @classmethod
    def _stage_limits(cls, value: str | None) -> str | None:
        from sparkle.stagelimits import parse_limits

        parse_limits(value)  # raises a ValueError naming the problem
        return value or None

    def redis_url_value(self) -> str | None:
        """The Redis URL in clear text (never log it: see :func:`redacted_redis_url`)."""
        return self.redis_url.get_secret_value() if self.redis_url else None

    def redacted_redis_url(self) -> str:
        """The Redis URL with every secret replaced by ``***``, safe for logs.

        Hides the password of the user part and any ``*password*`` query value (redis-py
        reads ``?password=`` and ``?ssl_password=`` too). A URL that cannot be taken apart
        unambiguously (say, a password with an unencoded ``#``, ``?`` or ``/``) is shown as
        its scheme only.
        """
        url = self.redis_url_value()
        if not url:
            return "embedded"
        return redact_url(url)


def redact_url(url: str) -> str:
    """``url`` with its password and ``*password*`` query values replaced by ``***``."""
    from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

    scheme = url.split("://", 1)[0] if "://" in url else "redis"
    hidden = f"{scheme}://*** (not shown: cannot be redacted safely)"
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return hidden
    if url.count("@") != parts.netloc.count("@"):
        return hidden  # an "@" outside the host part: the user part was cut short
    netloc = parts.netloc
    secrets = [parts.password or ""]
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if has_password else f"{user}@{host}"
    secrets += [value for key, value in query if "password" in key.lower()]
    redacted_query = urlencode(
        [(key, "***" if "password" in key.lower() else value) for key, value in query],
        safe="*/",
    )
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    shown += f"?{redacted_query}" if redacted_query else ""
    shown += f"#{parts.fragment}" if parts.fragment else ""
    # Belt and braces: whatever redis-py would send as a password must not be in the text.
    for secret in filter(None, secrets):
        if secret in shown or unquote(secret) in shown:
            return hidden
    return shown


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and ``.env``), with ``overrides`` (CLI options; None
    values are ignored) taking precedence. The App keeps the result (:mod:`sparkle.app`).

    Raises:
      ConfigError: a setting is invalid; the message names its environment variable.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid setting: {describe_error(exc)}") from None
    except SettingsError as exc:  # a JSON setting that does not parse
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"SPARKLE_{found.group(1).upper()}" if found else "a SPARKLE_* setting"
        raise ConfigError(f"invalid setting: {name}: not valid JSON ({exc.__cause__ or exc})"
                          ) from None


def describe_error(exc: ValidationError) -> str:
    """Settings that failed validation, by environment variable: ``SPARKLE_LEASE_TTL_SEC:
    must be a number (got 'abc')``. (The CLI options that set some of them
    carry the same names.)"""
    parts = []
    for error in exc.errors(include_url=False):
        message = house_wording(error["type"], error.get("ctx") or {}) \
            or error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            field = str(error["loc"][0])
            info = Settings.model_fields.get(field)
            annotation = info.annotation if info is not None else None
            secret = annotation is SecretStr or SecretStr in get_args(annotation)
            shown = "" if secret else f" (got {error.get('input')!r})"  # never echo a secret
            parts.append(f"SPARKLE_{field.upper()}: {message}{shown}")
        else:
            parts.append(message)
    return "; ".join(parts)

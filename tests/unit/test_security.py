"""The security surfaces a test can check without a server or a worker: Redis URLs and
secrets in text, the message encoder's sources, hostile names from outside.

What each test protects is written in docs/SECURITY.md, with what was checked by reading
rather than by a test. The surfaces that need a real Redis (password, TLS), a worker or
whole runs (stored messages, listeners, file modes) are tested in
tests/integration/test_security_redis.py. In short, here:

- a Redis password (in the URL's user part or its query) never appears in the URL shown
  in logs or in the settings' text, whatever the URL looks like;
- no module deserializes with pickle, marshal or unsafe YAML;
- a hostile run id in a stage message or on the command line touches nothing, and an
  invalid secret setting is named but never shown.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from security_helpers import PLAIN_SECRET, SECRET_IN_URL, sparkle

from sparkle.settings import Settings

REPO = Path(__file__).parents[2]


# -- redaction -------------------------------------------------------------------------------


REDACTION_CASES: list[Any] = [
    pytest.param(f"redis://:{PLAIN_SECRET}@cache.internal:6379/0", "cache.internal", id="password"),
    pytest.param(
        f"rediss://app:{PLAIN_SECRET}@cache.internal:6380/1?ssl_cert_reqs=required",
        "cache.internal",
        id="user-and-password-tls",
    ),
    pytest.param(f"redis://:{SECRET_IN_URL}@10.0.0.5:6379/0", "10.0.0.5", id="percent-encoded"),
    pytest.param(
        f"redis://cache.internal:6379/0?password={PLAIN_SECRET}",
        "cache.internal",
        id="password-in-query",
    ),
    pytest.param(
        f"rediss://cache.internal/0?ssl_password={PLAIN_SECRET}&db=2",
        "cache.internal",
        id="key-password-in-query",
    ),
    pytest.param(
        f"unix:///run/redis.sock?db=0&password={PLAIN_SECRET}",
        "redis.sock",
        id="unix-socket-query-password",
    ),
    pytest.param(f"redis://:{PLAIN_SECRET}#x@cache.internal:6379/0", None, id="unencoded-hash"),
    pytest.param(
        f"redis://:pa?{PLAIN_SECRET}@cache.internal:6379/0", None, id="unencoded-question"
    ),
    pytest.param(f"redis://:pa/{PLAIN_SECRET}@cache.internal:6379/0", None, id="unencoded-slash"),
    pytest.param(f"redis://:{PLAIN_SECRET}@[::1:6379/0", None, id="broken-ipv6"),
]


@pytest.mark.parametrize(("url", "host"), REDACTION_CASES)
def test_the_redacted_url_never_shows_a_password(url: str, host: str | None):
    """Whatever the URL holds (password in the user part or the query, encoded or not,
    or a URL too malformed to take apart), the text shown in logs has no password; the
    host is still shown when the URL can be read."""
    shown = Settings(redis_url=url).redacted_redis_url()
    assert PLAIN_SECRET not in shown
    assert "s3cr3t" not in shown and "Sp4rk" not in shown
    if host is not None:
        assert host in shown


def test_the_settings_never_print_the_url():
    """repr, str and JSON of the settings show the Redis URL masked."""
    settings = Settings(redis_url=f"redis://:{PLAIN_SECRET}@h:6379/0")
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert PLAIN_SECRET not in text


# -- the CLI as a child process --------------------------------------------------------------


# -- deserialization -------------------------------------------------------------------------


#: Modules whose use deserializes arbitrary objects.
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "jsonpickle"}


def _unsafe_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            UNSAFE_MODULES
        ):
            found.append(str(node.module))
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                found.append(f"{func.id}() at line {node.lineno}")
            unsafe_yaml = ("load", "unsafe_load", "full_load", "load_all")
            if (
                isinstance(func, ast.Attribute)
                and func.attr in unsafe_yaml
                and isinstance(func.value, ast.Name)
                and func.value.id == "yaml"
            ):
                found.append(f"yaml.{func.attr}() at line {node.lineno}")
            if isinstance(func, ast.Name) and func.id == "PickleEncoder":
                found.append(f"PickleEncoder at line {node.lineno}")
            if isinstance(func, ast.Attribute) and func.attr == "PickleEncoder":
                found.append(f"PickleEncoder at line {node.lineno}")
    return found


def test_no_module_deserializes_with_pickle_marshal_eval_or_unsafe_yaml():
    """No module of sparkle/ or actors/ imports pickle (or kin), calls eval/exec, loads YAML
    unsafely or installs dramatiq's PickleEncoder."""
    sources = sorted([*(REPO / "sparkle").rglob("*.py"), *(REPO / "actors").rglob("*.py")])
    assert sources
    offenders = {str(p.relative_to(REPO)): _unsafe_uses(p) for p in sources}
    assert {k: v for k, v in offenders.items() if v} == {}


# -- hostile names from outside --------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["../outside", "/etc", "a/../../b", "x" * 300, ".hidden"])
def test_a_stage_message_naming_a_hostile_run_id_touches_nothing(
    pipeline: Any, tmp_path: Path, run_id: str
):
    """A stage message (from a replay, or planted in Redis) whose run id is not path-safe
    is refused by the engine before any file is read or written."""
    from sparkle.errors import UnsafePathError

    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafePathError):
        pipeline.engine.execute("script", run_id)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("run_id", ["../outside", "/etc/passwd", "a" * 65, "r\u0131n"])
@pytest.mark.parametrize("command", ["status", "resume"])
def test_the_cli_refuses_hostile_run_ids_without_a_traceback(
    tmp_path: Path, run_id: str, command: str
):
    """`sparkle status` and `sparkle resume` with a run id that is not path-safe fail with
    a one-line message (no traceback) and create nothing."""
    result = sparkle(tmp_path, None, command, run_id, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "not a path-safe id" in result.stderr
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "outside").exists()


def test_an_invalid_secret_setting_is_named_but_its_value_never_shown():
    """The one-line message for an invalid setting shows the value given, except for a
    secret (the Redis URL holds a password): named, never echoed."""
    from pydantic import ValidationError

    from sparkle.settings import Settings, describe_error

    with pytest.raises(ValidationError) as info:
        Settings(redis_url={"password": "hunter2"}, lease_ttl_sec="abc")  # type: ignore[arg-type]
    text = describe_error(info.value)
    assert "SPARKLE_REDIS_URL: " in text and "hunter2" not in text
    assert "SPARKLE_LEASE_TTL_SEC: " in text and "(got 'abc')" in text

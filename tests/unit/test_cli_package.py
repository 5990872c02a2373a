"""The CLI package: one error guard with one exit-code convention, and a shape that keeps
`sparkle --help` fast (no heavy import at load, no import cycle dodged inside a function)."""

from __future__ import annotations

import ast
import errno
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from sparkle.cli import exits, main
from sparkle.errors import (
    ConfigError,
    PlanError,
    Problem,
    ReviewError,
    RunConflictError,
    RunNotFoundError,
    UnsafePathError,
)

CLI_DIR = Path(__file__).parents[2] / "sparkle" / "cli"

#: Modules that cost 50-300 ms to import each; `sparkle --help` needs none of them.
HEAVY = ("dramatiq", "redis", "pydantic", "sparkle.settings", "sparkle.schemas",
         "sparkle.runstore", "sparkle.engine", "rich", "starlette")


def _raise(exc: BaseException) -> Callable[[], int | None]:
    def body() -> int | None:
        raise exc
    return body


@pytest.mark.parametrize(("error", "code", "says"), [
    (redis.ConnectionError("Connection refused"), exits.EXIT_INFRASTRUCTURE,
     "error: Redis: Connection refused (is SPARKLE_REDIS_URL right, and the server up?)"),
    (OSError(errno.ENOSPC, "No space left on device", "/srv/runs/r1/checkpoints/x.json"),
     exits.EXIT_INFRASTRUCTURE, "error: cannot write /srv/runs/r1/checkpoints/x.json: No space "
                                "left on device (ENOSPC)"),
    (OSError(errno.EROFS, "Read-only file system", "/srv/runs"), exits.EXIT_INFRASTRUCTURE,
     "make it writable (remount it read-write) or choose another folder"),
    (ConfigError("SPARKLE_LEASE_TTL_SEC: must be > 0"), exits.EXIT_USAGE,
     "error: SPARKLE_LEASE_TTL_SEC: must be > 0"),
    (RunNotFoundError("no run 'r9' in runs"), exits.EXIT_USAGE, "error: no run 'r9' in runs"),
    (RunConflictError("run id r1 belongs to another plan"), exits.EXIT_USAGE, "error: run id"),
    (UnsafePathError("../x is outside the run folder"), exits.EXIT_USAGE, "error: ../x"),
    (ReviewError("r1 is not waiting for a review"), exits.EXIT_FAILED,
     "error: r1 is not waiting for a review"),
])
def test_the_guard_turns_each_error_into_its_message_and_exit_code(
        error: BaseException, code: int, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    # When a command's body raises
    with pytest.raises(SystemExit) as exited:
        exits.guard(_raise(error))
    # Then the command exits with the convention's code and one line saying what and where
    assert exited.value.code == code
    err = capsys.readouterr().err
    assert says in err
    assert "Traceback" not in err


def test_the_guard_prints_every_problem_of_a_plan_and_exits_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    problems = [Problem("shots[0].id", "is missing"), Problem("title", "is empty")]
    with pytest.raises(SystemExit) as exited:
        exits.guard(_raise(PlanError("plan.json", problems)))
    assert exited.value.code == exits.EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        "plan.json: invalid plan (2 problem(s))", "  - shots[0].id: is missing",
        "  - title: is empty"]


@pytest.mark.parametrize(("returned", "code"), [(None, exits.EXIT_OK), (0, exits.EXIT_OK),
                                                (exits.EXIT_AWAITING_REVIEW, 5)])
def test_the_guard_exits_with_the_code_the_body_returns(returned: int | None, code: int) -> None:
    with pytest.raises(SystemExit) as exited:
        exits.guard(lambda: returned)
    assert exited.value.code == code


def test_an_os_error_that_is_not_the_storage_is_a_bug_and_keeps_its_traceback() -> None:
    with pytest.raises(FileNotFoundError):
        exits.guard(_raise(FileNotFoundError(errno.ENOENT, "No such file", "x")))


def test_help_lists_every_exit_code_of_the_convention() -> None:
    shown = CliRunner().invoke(main, ["--help"]).output
    codes = {name: value for name, value in vars(exits).items()
             if name.startswith("EXIT_") and isinstance(value, int)}
    assert set(codes.values()) == {0, 1, 2, 3, 5}
    for value in codes.values():
        meaning = dict(exits.EXIT_CODE_MEANINGS)[value]
        assert f"  {value}  {meaning}" in shown


def test_loading_the_cli_imports_no_heavy_module() -> None:
    # Given a fresh interpreter, when it loads the CLI as `sparkle --help` does
    probe = f"import sys, sparkle.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    # Then pydantic, redis, dramatiq and the engine are left for the command that needs them
    assert done.stdout.strip() == "[]"


def _imports_inside_functions(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    found.append((inner.lineno, inner.module))
                elif isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
    return found


def test_no_cli_module_imports_another_inside_a_function() -> None:
    """A lazy import of the CLI itself only ever dodges an import cycle: the modules of
    sparkle.cli import each other at the top, in one direction."""
    lazy = {f"{path.name}:{line}": module for path in sorted(CLI_DIR.glob("*.py"))
            for line, module in _imports_inside_functions(path)
            if module == "sparkle.cli" or module.startswith("sparkle.cli.")}
    assert lazy == {}


def test_every_lazy_import_in_the_cli_says_why() -> None:
    """Imports inside a command are for start-up time only, and say so: a comment on the
    line above a function's first import, or on one of its import lines."""
    unexplained = []
    for path in sorted(CLI_DIR.glob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef):
                continue
            imports = [inner.lineno for inner in node.body
                       if isinstance(inner, ast.Import | ast.ImportFrom)]
            if imports and not any("#" in lines[number - 1]
                                   for number in [imports[0] - 1, *imports]):
                unexplained.append(f"{path.name}:{imports[0]} in {node.name}()")
    assert unexplained == []


def test_no_cli_module_is_over_500_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in CLI_DIR.glob("*.py")}
    assert {name: size for name, size in sizes.items() if size > 500} == {}


@pytest.mark.parametrize("command", ["status", "resume", "timeline", "cancel"])
def test_a_hostile_run_id_is_bad_input_for_every_command(command: str, tmp_path: Path) -> None:
    """docs/SECURITY.md §7: a run id that is not path-safe exits 2 with one line, whichever
    area's command reads it (they share the one guard)."""
    result = CliRunner().invoke(main, [command, "../outside", "--runs-dir", str(tmp_path)])
    assert result.exit_code == exits.EXIT_USAGE
    assert "error: run id '../outside' is not a path-safe id" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert list(tmp_path.iterdir()) == []

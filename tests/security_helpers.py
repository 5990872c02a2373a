"""The secrets and the CLI child process that the security tests share (tests/unit and
tests/integration)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

BIN = Path(sys.executable).parent

#: A password with every character that needs quoting in a URL.
SECRET = "Sp4rk:le@pass#w/rd?x%"
#: The same, as it stands in a redis:// URL.
SECRET_IN_URL = quote(SECRET, safe="")
#: A password with nothing to quote, found verbatim if it leaks.
PLAIN_SECRET = "s3cr3tPlainPassw0rd"


def sparkle_env(tmp_path: Path, url: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "SPARKLE_RUNS_DIR": str(tmp_path / "runs"),
        "SPARKLE_INBOX_DIR": str(tmp_path / "inbox"),
        "SPARKLE_ADAPTERS": "test",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("SPARKLE_REDIS_URL", None)
    if url is not None:
        env["SPARKLE_REDIS_URL"] = url
    return env


def sparkle(tmp_path: Path, url: str | None, *args: str, timeout: float = 120) -> Any:
    """``sparkle ARGS`` as a child process on ``url`` (None: embedded)."""
    return subprocess.run(
        [str(BIN / "sparkle"), *args],
        env=sparkle_env(tmp_path, url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

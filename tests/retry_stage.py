"""An images adapter that asks an HTTP "model service" for each keyframe through
``sparkle.retry``, as the README's example does: for tests that plug it in with
``SPARKLE_ADAPTER_IMAGES=retry_stage:images``. The service's URL comes from
``RETRY_STAGE_URL``; :class:`FlakyModelServer` is such a service, failing its first calls.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image

import sparkle
from sparkle.adapters.testing import fixed_images
from sparkle.schemas import AssetRefs, MoviePlan

#: Environment variable naming the model service's URL.
URL_VARIABLE = "RETRY_STAGE_URL"


@sparkle.retry(attempts=4, on=(urllib.error.URLError, TimeoutError), base_sec=0.01,
               max_sec=0.05, name="generate_image")
def generate_image(prompt: str, seed: int) -> bytes:
    body = json.dumps({"prompt": prompt, "seed": seed}).encode()
    request = urllib.request.Request(os.environ[URL_VARIABLE], body,
                                      {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        data: bytes = response.read()
        return data


def images(movie_plan: MoviePlan, asset_refs: AssetRefs, run_dir: Path) -> Any:
    """The test set's keyframes, after one call to the model service per shot (whose answer
    goes into a file of its own)."""
    for shot in movie_plan.shots:
        path = run_dir / "model" / f"{shot.id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(generate_image(shot.start_frame_prompt, movie_plan.seed))
        asset_refs["extras"][f"model_{shot.id}"] = str(path)
    refs, meta = fixed_images(movie_plan, asset_refs, run_dir)
    for shot in movie_plan.shots:
        refs.extras[f"model_{shot.id}"] = f"model/{shot.id}.png"
    return refs, meta


class FlakyModelServer:
    """A real HTTP server on a free local port that answers its first ``failures`` POSTs
    with 503 and the rest with a small PNG."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    server.calls += 1
                    failing = server.calls <= server.failures
                if failing:
                    self.send_error(503, "model warming up")
                    return
                buffer = io.BytesIO()
                Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(buffer.getvalue())))
                self.end_headers()
                self.wfile.write(buffer.getvalue())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/generate"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> FlakyModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

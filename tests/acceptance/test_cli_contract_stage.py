"""Adapters written to the seed contract (../shared/seed-contract.md) work unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "sparkle"
TESTS = Path(__file__).resolve().parents[1]


def sparkle(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKLE_")}
    return subprocess.run([str(BIN), *args], cwd=cwd, env={**clean, "PYTHONPATH": str(TESTS),
                                                           **env},
                          capture_output=True, text=True, timeout=120)


def test_the_contracts_example_stage_completes_a_run(tmp_path, plans_dir):
    """The contract's section-8 stage (dict-style refs, absolute paths, its own checkpoint
    built without an attempt) plugged in for images: the run completes, the paths it stored
    are kept relative to the run folder, and the images checkpoint is the engine's record."""
    # Given the example stage in place of the test set's images adapter
    # When the rooftop plan runs
    done = sparkle("run", str(plans_dir / "rooftop.json"), "--adapters", "test", cwd=tmp_path,
                   SPARKLE_ADAPTER_IMAGES="contract_stage:stage_images")
    # Then every stage succeeded, later stages reading the frames the example stored
    assert done.returncode == 0, done.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    refs = json.loads((run_dir / "asset_refs.json").read_text())
    assert refs["shots"]["shot_001"]["start_frame"] == "s1_start.png"
    assert refs["shots"]["shot_001"]["end_frame"] == "s1_end.png"
    assert (run_dir / refs["shots"]["shot_001"]["raw_clip"]).is_file()
    checkpoint = json.loads((run_dir / "checkpoints" / "images.json").read_text())
    assert checkpoint["status"] == "success"
    assert checkpoint["metadata"]["adapter"] == "contract_stage:stage_images"

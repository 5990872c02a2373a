"""The hot folder takes plans in the base-image format (the script agent's) too."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sparkle.inbox import Inbox
from sparkle.runstore import Run, RunStore

PLAN = Path(__file__).parents[2] / "data" / "plans" / "harbour-base-images.json"


def test_a_base_image_plan_dropped_in_the_inbox_becomes_a_run(tmp_path: Path) -> None:
    # Protects: the inbox validates and creates runs from the second plan format.
    # Given a running inbox
    store = RunStore(tmp_path / "runs")
    enqueued: list[str] = []
    inbox = Inbox(tmp_path / "inbox", store, lambda run: enqueued.append(run.run_id),
                  stable_seconds=0.05, glob="*.json", max_plan_bytes=1 << 20,
                  retry_initial=0.05, retry_max=0.2)
    inbox.start()
    try:
        # When the harbour plan is dropped in
        shutil.copy(PLAN, tmp_path / "inbox" / "harbour.json")
        deadline = time.monotonic() + 30
        while inbox.processed < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inbox.wait_idle(5)
    finally:
        inbox.stop()
    # Then it was taken, not refused, and its run keeps the plan as received
    assert inbox.rejected == 0 and len(enqueued) == 1
    run = Run(store.root, enqueued[0])
    assert json.loads((run.dir / "movie_plan.json").read_text()) == json.loads(PLAN.read_text())
    assert run.plan().keyframe_names(run.plan().shots[0]) == ("frame_000", "frame_001")

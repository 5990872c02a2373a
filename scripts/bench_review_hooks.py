"""What the review hooks cost a stage hop: the engine with them against the engine without.

The review gates add to every stage the engine runs: a look for ``review.json``, a look at
whether the stage before was gated (the plan's gates, cached per run), whether the stage
runs for some shots only (from the history already read), and the gate check after
success. This runs runs of seven no-op stages through :meth:`Engine.execute` in this
process (embedded: StubBroker, fakeredis lease), alternating trials with the hooks as
shipped and with them replaced by no-ops, and prints the median microseconds per hop of
each and their ratio; and the hooks' own time per hop, called alone. No gate is configured:
it measures what every run pays.

    python scripts/bench_review_hooks.py [--runs 200] [--repeat 5] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sparkle import review_gates, takes
from sparkle.schemas import STAGES, MoviePlan

PLAN = Path(__file__).parents[1] / "tests" / "data" / "plans" / "lighthouse.json"


def build_engine(runs_dir: Path) -> Any:
    from sparkle.app import App
    from sparkle.stages import Adapter

    os.environ.pop("SPARKLE_REDIS_URL", None)
    app = App.from_environment(runs_dir=runs_dir, adapters="test")
    app.declare_actors()
    engine = app.engine
    for stage in STAGES:
        engine.adapters[stage] = Adapter(stage, "noop", lambda plan, refs, run_dir: refs, ())
    return engine


def trial(engine: Any, runs: int, tag: str) -> float:
    """Microseconds per hop over ``runs`` runs of seven stages."""
    base = json.loads(PLAN.read_text())
    plans = []
    for index in range(runs):
        base["title"] = f"bench {tag} {index} {time.monotonic_ns()}"
        plans.append(MoviePlan.model_validate(base))
    created = [engine.store.create(plan)[0] for plan in plans]
    started = time.perf_counter()
    for run in created:
        for stage in STAGES:
            engine.execute(stage, run.run_id)
    elapsed = time.perf_counter() - started
    engine.dispatcher.broker.flush_all()
    return 1e6 * elapsed / (runs * len(STAGES))


def hooks_alone(engine: Any, calls: int) -> float:
    """Microseconds the three hooks take for one hop, called on their own (a run between
    its stages: every stage's state read fresh, as the engine does)."""
    run = engine.store.create(MoviePlan.model_validate(json.loads(PLAN.read_text())))[0]
    for stage in STAGES:
        engine.execute(stage, run.run_id)
    engine.dispatcher.broker.flush_all()
    settings = engine.settings
    started = time.perf_counter()
    for index in range(calls):
        stage = STAGES[index % len(STAGES)]
        state = run.state(history_first=True)
        review_gates.holds(run, state, stage, settings)
        takes.narrowed_shots(state.events, stage)
        review_gates.after_success(run, stage, settings)
    return 1e6 * (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per trial")
    parser.add_argument("--repeat", type=int, default=5, help="trials of each; medians")
    parser.add_argument("--dir", type=Path, default=None, help="where the runs folder goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        engine = build_engine(Path(folder) / "runs")
        shipped = (review_gates.holds, review_gates.after_success, takes.narrowed_shots)
        without = (lambda *a: False, lambda *a: (False, None), lambda *a: None)
        results: dict[str, list[float]] = {"with hooks": [], "without": []}
        trial(engine, 20, "warm")
        for _ in range(args.repeat):
            for name, hooks in (("with hooks", shipped), ("without", without)):
                review_gates.holds, review_gates.after_success, takes.narrowed_shots = hooks  # type: ignore[assignment]
                results[name].append(trial(engine, args.runs, name))
        review_gates.holds, review_gates.after_success, takes.narrowed_shots = shipped
        alone = statistics.median(hooks_alone(engine, 700) for _ in range(args.repeat))
        state = statistics.median(_state_reads(engine, 700) for _ in range(args.repeat))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:<11} {value:8.1f} us/hop  (trials: "
              f"{', '.join(f'{v:.0f}' for v in results[name])})")
    print(f"ratio with/without: {medians['with hooks'] / medians['without']:.3f}")
    print(f"the hooks alone: {alone - state:.1f} us per hop "
          f"({100 * (alone - state) / medians['without']:.1f} % of a hop without them)")


def _state_reads(engine: Any, calls: int) -> float:
    """The part of :func:`hooks_alone` that is only its fresh look at the run (the engine
    has that look anyway), to subtract."""
    run = next(iter(engine.store.runs()))
    started = time.perf_counter()
    for _ in range(calls):
        run.state(history_first=True)
    return 1e6 * (time.perf_counter() - started) / calls


if __name__ == "__main__":
    main()

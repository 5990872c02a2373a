"""Stage hops per second: Sparkle's actors against a bare dramatiq chain, on real Redis.

Starts a private redis-server, then for each side one worker process with 8 threads
(``dramatiq … -p 1 -t 8``): Sparkle with no-op adapters for all seven stages (so what is
measured is the engine: lease, checkpoints, manifest, pending marks, dispatch), and a bare
chain of 7 dramatiq actors that each send the next. Prints both rates and the ratio.

    python scripts/bench_hops.py [--runs 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from redis_server import RedisServer  # noqa: E402

from sparkle.schemas import STAGES, AssetRefs, MoviePlan  # noqa: E402

BIN = Path(sys.executable).parent


def noop(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> AssetRefs:
    """An adapter that does nothing, so a hop costs only the engine's own work."""
    return refs


def _worker(module: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(BIN / "dramatiq"), module, "-p", "1", "-t", "8"], env=env,
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def bench_sparkle(server: RedisServer, runs: int, folder: Path) -> float:
    """Hops per second through Sparkle's seven stage actors."""
    env = {**os.environ, "SPARKLE_REDIS_URL": server.url, "SPARKLE_RUNS_DIR": str(folder),
           "PYTHONPATH": str(ROOT / "scripts"), "SPARKLE_LOG_LEVEL": "warning"}
    env.update({f"SPARKLE_ADAPTER_{s.upper()}": "bench_hops:noop" for s in STAGES})
    os.environ.update(env)
    from sparkle import broker as broker_module
    from sparkle import engine as engine_module
    from sparkle.settings import configure

    configure()
    broker_module.reset()
    engine_module.set_engine(None)
    broker_module.load_actors()
    engine = engine_module.get_engine()
    plan = json.loads((ROOT / "tests/data/plans/rooftop.json").read_text())
    created = []
    for index in range(runs):
        plan["title"] = f"hop {index}"
        created.append(engine.store.create(MoviePlan.model_validate(plan))[0])
    worker = _worker("actors", env, folder)
    time.sleep(2)  # let the worker connect before the clock starts
    try:
        started = time.perf_counter()
        for run in created:
            engine.dispatcher.kick(run)
        while sum(1 for _ in folder.glob("*/checkpoints/qa.json")) < runs:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        _stop(worker)
    broker_module.reset()
    return runs * len(STAGES) / elapsed


def bench_bare(server: RedisServer, chains: int, folder: Path) -> float:
    """Hops per second through a bare chain of 7 dramatiq actors."""
    env = {**os.environ, "BENCH_REDIS_URL": server.url, "PYTHONPATH": str(ROOT / "scripts")}
    os.environ["BENCH_REDIS_URL"] = server.url
    sys.path.insert(0, str(ROOT / "scripts"))
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=server.url, namespace="bare")
    dramatiq.set_broker(broker)
    client = server.client()
    client.delete("bare:done")
    worker = _worker("bench_hops_bare", env, folder)
    time.sleep(2)
    try:
        message = dramatiq.Message(queue_name="bare", actor_name="hop", args=(0, 0), kwargs={},
                                   options={})
        broker.declare_queue("bare")
        started = time.perf_counter()
        for chain in range(chains):
            broker.enqueue(message.copy(args=(chain, 0)))
        while int(client.get("bare:done") or 0) < chains:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        _stop(worker)
    return chains * 7 / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs (and bare chains) per trial")
    parser.add_argument("--repeat", type=int, default=3, help="trials; the median is reported")
    args = parser.parse_args()
    sparkle_rates, bare_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            for trial in range(args.repeat):
                bare_rates.append(bench_bare(server, args.runs, Path(tmp)))
                runs_dir = Path(tmp) / f"runs-{trial}"
                runs_dir.mkdir()
                sparkle_rates.append(bench_sparkle(server, args.runs, runs_dir))
                print(f"trial {trial + 1}: bare {bare_rates[-1]:.0f} hops/s, "
                      f"sparkle {sparkle_rates[-1]:.0f} hops/s", file=sys.stderr)
        finally:
            server.stop()
    bare, ours = statistics.median(bare_rates), statistics.median(sparkle_rates)
    print(f"| chain | hops/s (median of {args.repeat}) | ratio to bare |")
    print("|---|---:|---:|")
    print(f"| bare dramatiq, 7 actors | {bare:.0f} | 1.00 |")
    print(f"| Sparkle, 7 stages, no-op adapters | {ours:.0f} | {ours / bare:.2f} |")


if __name__ == "__main__":
    main()

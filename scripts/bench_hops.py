"""Stage hops per second: Sparkle's actors against a bare dramatiq chain, on real Redis.

Starts a private redis-server, then measures, each with one worker process of 8 threads:

- **bare, 1 queue** (the baseline): 7 dramatiq actors on one queue, each sending the next,
  run by ``dramatiq bench_hops_bare -p 1 -t 8`` with dramatiq's defaults;
- **bare, 7 queues**: the same chain with one queue per actor, as Sparkle's stages have,
  polled every 250 ms at most (:data:`BARE_POLL_MS`);
- **bare, 7 queues, Sparkle's broker connections**: as above, the broker sending its Lua
  calls on a connection each thread keeps, as Sparkle's broker does: the share of
  Sparkle's rate that comes from that, not from the engine;
- **bare, 7 queues, DESIGN's records by hand** (the floor): as above, each hop first doing
  by hand, with nothing else, the Redis commands and file records that DESIGN's "Stage
  execution" asks of every stage (lease, fencing, release; a ``begin`` checkpoint and
  event; durable asset refs and ``success`` checkpoint, and the ``success`` event), the
  events in DESIGN's ``manifest.json``, without any of the engine's checks, validation,
  logs or metrics. It shows how much of the gap to the baseline is the design's contract
  and how much is Sparkle's engine;
- **the floor as it was**: the same, its events appended to a ``manifest.jsonl`` as the
  floor did until 2026-12-06 (written before Sparkle's manifest became DESIGN's
  ``manifest.json``, rewritten whole per event): printed so that the ratio to either can
  be read;
- **Sparkle**: ``sparkle worker --processes 1 --threads 8`` as shipped, with no-op adapters
  for all seven stages, so a hop costs only the engine's work (lease, checkpoints, manifest,
  asset refs, pending marks, dispatch).

Prints the median rate of each and its ratios to the baseline and to the floor.

Then, in the same run, the **hop latency**: ``sparkle worker --processes 1 --threads 4``
with no-op adapters and one run in flight at a time (``--latency-runs`` runs, submitted one
after the other); for each hop, the time from a stage's ``success`` event to the next
stage's ``begin`` event in the run's manifest. Prints its p50 and p90. And the **idle
traffic**: the Redis commands per second that worker sends while no run is in flight
(``INFO commandstats`` of the private server, before and after ``--idle-sec`` seconds).

    python scripts/bench_hops.py [--runs 200] [--repeat 3] [--dir /dev/shm]
                                 [--latency-runs 10] [--idle-sec 10]

``--dir`` puts the runs folders (and Redis's files) in another folder: on a tmpfs the
result shows the engine's own cost without the disk's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
#: For the worker processes: this tree's sparkle (a copy of the tree benchmarks its own
#: code, whichever tree the virtualenv was installed from) and the bench's modules.
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "scripts")])

from redis_server import RedisServer  # noqa: E402

from sparkle.schemas import STAGES, AssetRefs, MoviePlan  # noqa: E402

if TYPE_CHECKING:
    from sparkle.engine import Engine
    from sparkle.runstore import Run

BIN = Path(sys.executable).parent


def noop(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> AssetRefs:
    """An adapter that does nothing, so a hop costs only the engine's own work."""
    return refs


THREADS = 8

#: Poll of the bare 7-queue chains, in milliseconds: what Sparkle's workers polled at before
#: their queues had doorbells (``SPARKLE_WORKER_POLL_MS`` was 250), kept so that the floor
#: is not made slower by the longer poll that the doorbells allow Sparkle.
BARE_POLL_MS = 250


def _worker(module: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return _start([str(BIN / "dramatiq"), module, "-p", "1", "-t", str(THREADS)], env, cwd)


def _start(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def _succeeded(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` says success (not just ``begin``: the stage is still running)."""
    try:
        return json.loads(checkpoint.read_bytes()).get("status") == "success"
    except (OSError, ValueError):  # missing, or being replaced right now
        return False


def engine_with_runs(server: RedisServer, folder: Path, runs: int, title: str,
                     **env: str) -> tuple[Engine, list[Run]]:
    """This process's engine on ``server`` with its runs folder in ``folder``, and ``runs``
    new runs of the rooftop plan, titled ``title`` and a number. ``env``: more variables
    (SPARKLE_* settings, ...) put in this process's environment."""
    os.environ.update({"SPARKLE_REDIS_URL": server.url, "SPARKLE_RUNS_DIR": str(folder),
                       "SPARKLE_LOG_LEVEL": "warning", **env})
    from sparkle.app import App, uninstall

    previous = uninstall()
    if previous is not None:
        previous.close()
    app = App.from_environment()
    app.declare_actors()
    engine = app.engine
    plan = json.loads((ROOT / "tests/data/plans/rooftop.json").read_text())
    created = []
    for index in range(runs):
        plan["title"] = f"{title} {index}"
        created.append(engine.store.create(MoviePlan.model_validate(plan))[0])
    return engine, created


def bench_sparkle(server: RedisServer, runs: int, folder: Path) -> float:
    """Hops per second through Sparkle's seven stage actors."""
    engine, created, worker = _worker_with_noop_adapters(server, folder, runs, "hop", THREADS)
    try:
        started = time.perf_counter()
        for run in created:
            engine.dispatcher.kick(run)
        # Waiting must not take CPU from the worker: runs finish roughly in the order they
        # were kicked, so each poll looks at the first unfinished one, and those after it
        # only once it is done (a glob of every run each time cost the machine more).
        waiting = [run.dir / "checkpoints" / "qa.json" for run in created]
        while waiting:
            while waiting and _succeeded(waiting[0]):
                waiting.pop(0)
            if waiting:
                time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        _stop(worker)
    engine.dispatcher.broker.close()
    return runs * len(STAGES) / elapsed


def _worker_with_noop_adapters(server: RedisServer, folder: Path, runs: int, title: str,
                               threads: int) -> tuple[Engine, list[Run],
                                                      subprocess.Popen[bytes]]:
    """``runs`` new runs (see :func:`engine_with_runs`) and a ``sparkle worker`` of one
    process with ``threads`` threads, no-op adapters for every stage, started and given
    time to connect."""
    adapters = {f"SPARKLE_ADAPTER_{s.upper()}": "bench_hops:noop" for s in STAGES}
    engine, created = engine_with_runs(server, folder, runs, title,
                                       PYTHONPATH=PYTHONPATH, **adapters)
    worker = _start([str(BIN / "sparkle"), "worker", "--processes", "1", "--threads",
                     str(threads)], dict(os.environ), folder)
    time.sleep(3)  # let the worker connect before the clock starts
    return engine, created, worker


def idle_commands(server: RedisServer, seconds: float) -> tuple[float, float]:
    """Commands per second that clients send to ``server`` over ``seconds`` (``MONITOR``),
    and those plus the commands their Lua scripts run (what ``INFO commandstats`` counts)."""
    import redis

    sent = in_scripts = 0
    client = redis.Redis.from_url(server.url, socket_timeout=1)
    with client.monitor() as monitor:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                command = monitor.next_command()
            except redis.TimeoutError:
                continue
            if command["client_type"] == "lua":
                in_scripts += 1
            else:
                sent += 1
    client.close()
    return sent / seconds, (sent + in_scripts) / seconds


def bench_latency(server: RedisServer, runs: int, folder: Path,
                  idle_sec: float) -> tuple[list[float], tuple[float, float]]:
    """Hop latencies in seconds (a stage's ``success`` event to the next stage's ``begin``
    event) of ``runs`` runs submitted one at a time to ``sparkle worker -p 1 -t 4``; and
    the Redis commands per second that worker sends while idle (:func:`idle_commands`)."""
    engine, created, worker = _worker_with_noop_adapters(server, folder, runs, "latency", 4)
    latencies: list[float] = []
    try:
        for run in created:
            engine.dispatcher.kick(run)
            done = run.dir / "checkpoints" / "qa.json"
            while not _succeeded(done):
                time.sleep(0.01)
            succeeded: dict[str, float] = {}
            begun: dict[str, float] = {}
            for event in run.events():
                if event.status == "success":
                    succeeded.setdefault(event.stage, event.timestamp)
                elif event.status == "begin":
                    begun.setdefault(event.stage, event.timestamp)
            latencies += [begun[after] - succeeded[stage]
                          for stage, after in itertools.pairwise(STAGES)]
            time.sleep(0.3)  # every queue idle again, as between two submissions by hand
        time.sleep(5)  # the consumers' backoff grows to its longest (2 polls or so)
        idle_rate = idle_commands(server, idle_sec)
    finally:
        _stop(worker)
    engine.dispatcher.broker.close()
    return latencies, idle_rate


def bench_bare(server: RedisServer, chains: int, folder: Path, queues: int = 1,
               thread_connections: bool = False, records: bool = False,
               jsonl: bool = False) -> float:
    """Hops per second through a bare chain of 7 dramatiq actors on 1 or 7 queues. With 7:
    ``thread_connections`` has the broker send its calls as Sparkle's does, and ``records``
    has each hop do DESIGN's per-stage records by hand (``jsonl``: its events appended to a
    ``manifest.jsonl``, as the floor did before)."""
    module, namespace = ("bench_hops_bare", "bare") if queues == 1 else ("bench_hops_bare7",
                                                                          "bare7")
    env = {**os.environ, "BENCH_REDIS_URL": server.url, "PYTHONPATH": PYTHONPATH}
    if queues > 1:
        env["dramatiq_worker_timeout"] = str(BARE_POLL_MS)
    if thread_connections:
        env["BENCH_THREAD_CONNECTIONS"] = "1"
    if records:
        env["BENCH_RECORDS_DIR"] = str(folder / f"bare-records-{time.time_ns()}")
    if jsonl:
        env["BENCH_RECORDS_JSONL"] = "1"
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=server.url, namespace=namespace)
    client = server.client()
    client.delete(f"{namespace}:done")
    worker = _worker(module, env, folder)
    time.sleep(2)
    try:
        queue = "bare" if queues == 1 else "bare7.0"
        broker.declare_queue(queue)
        message = dramatiq.Message(queue_name=queue, actor_name="hop", args=(0, 0), kwargs={},
                                   options={})
        started = time.perf_counter()
        for chain in range(chains):
            if queues == 1:
                broker.enqueue(message.copy(args=(chain, 0)))
            else:
                broker.enqueue(message.copy(actor_name="hop0", args=(chain,)))
        while int(client.get(f"{namespace}:done") or 0) < chains:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        _stop(worker)
        broker.close()
    return chains * 7 / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs (and bare chains) per trial")
    parser.add_argument("--repeat", type=int, default=3, help="trials; the median is reported")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the runs folders (default: the system's temp folder)")
    parser.add_argument("--latency-runs", type=int, default=10,
                        help="runs submitted one at a time to measure the hop latency")
    parser.add_argument("--idle-sec", type=float, default=10.0,
                        help="seconds the idle worker's Redis commands are counted over")
    parser.add_argument("--latency-only", action="store_true",
                        help="measure only the hop latency and the idle traffic")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"bare": [], "bare7": [], "bare7_conn": [], "floor": [],
                                     "floor_jsonl": [], "sparkle": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            for trial in range(0 if args.latency_only else args.repeat):
                rates["bare"].append(bench_bare(server, args.runs, Path(tmp)))
                rates["bare7"].append(bench_bare(server, args.runs, Path(tmp), queues=7))
                rates["bare7_conn"].append(bench_bare(server, args.runs, Path(tmp), queues=7,
                                                      thread_connections=True))
                rates["floor"].append(bench_bare(server, args.runs, Path(tmp), queues=7,
                                                 thread_connections=True, records=True))
                rates["floor_jsonl"].append(bench_bare(server, args.runs, Path(tmp), queues=7,
                                                       thread_connections=True, records=True,
                                                       jsonl=True))
                runs_dir = Path(tmp) / f"runs-{trial}"
                runs_dir.mkdir()
                rates["sparkle"].append(bench_sparkle(server, args.runs, runs_dir))
                print(f"trial {trial + 1}: " + ", ".join(
                    f"{name} {values[-1]:.0f} hops/s" for name, values in rates.items()),
                    file=sys.stderr)
            latency_dir = Path(tmp) / "runs-latency"
            latency_dir.mkdir()
            latencies, idle_rate = bench_latency(server, args.latency_runs, latency_dir,
                                                 args.idle_sec)
        finally:
            server.stop()
    if not args.latency_only:
        _print_rates(rates, args.repeat)
    cuts = statistics.quantiles(latencies, n=10)
    print(f"hop latency, one run in flight, `sparkle worker -p 1 -t 4` "
          f"({len(latencies)} hops of {args.latency_runs} runs): "
          f"p50 {statistics.median(latencies) * 1000:.1f} ms, p90 {cuts[8] * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    print(f"idle worker (with its reaper): {idle_rate[0]:.1f} Redis commands/s sent, "
          f"{idle_rate[1]:.1f} counting those its Lua scripts run (over {args.idle_sec:.0f} s)")


def _print_rates(rates: dict[str, list[float]], repeat: int) -> None:
    bare = statistics.median(rates["bare"])
    rows = [
        ("bare dramatiq, 7 actors on 1 queue (baseline)", "bare"),
        ("bare dramatiq, 7 actors on 7 queues, 250 ms polling", "bare7"),
        ("the same, with Sparkle's broker connections", "bare7_conn"),
        ("the same, each hop doing DESIGN's per-stage records by hand (the floor)", "floor"),
        ("the floor as it was (events appended to a manifest.jsonl)", "floor_jsonl"),
        ("Sparkle, 7 stages, no-op adapters, `sparkle worker`", "sparkle"),
    ]
    floor = statistics.median(rates["floor"])
    print(f"| chain | hops/s (median of {repeat}) | ratio to baseline | ratio to floor |")
    print("|---|---:|---:|---:|")
    for label, key in rows:
        rate = statistics.median(rates[key])
        print(f"| {label} | {rate:.0f} | {rate / bare:.2f} | {rate / floor:.2f} |")
    sparkle = statistics.median(rates["sparkle"])
    print(f"\nSparkle / floor: {sparkle / floor:.2f} (target >= 0.5); Sparkle / the floor as "
          f"it was: {sparkle / statistics.median(rates['floor_jsonl']):.2f}")
    print()


if __name__ == "__main__":
    main()

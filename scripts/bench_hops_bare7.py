"""Reference chains of scripts/bench_hops.py: 7 dramatiq actors, each on its own queue as
Sparkle's stages are, each sending the next, on the Redis at BENCH_REDIS_URL. Imported by
``dramatiq bench_hops_bare7``.

With BENCH_THREAD_CONNECTIONS set, the broker sends its Lua calls as Sparkle's does, on a
connection each thread keeps (:func:`sparkle.broker.use_thread_connections`).

With BENCH_RECORDS_DIR set, each hop first does, by hand and with nothing else, what
DESIGN's "Stage execution" asks of every stage: the floor under any implementation of it.

- Redis: take the lease (``SET NX PX``) and clear the pending mark, in one round trip;
  check the lease before writing results; release it and mark the next stage, in one.
- Files: read the plan, the asset refs, the manifest and this stage's checkpoint (the
  manifest's last events say whether the earlier stages are done: the seed contract's
  resume rule takes a success checkpoint or a last success event);
  write a ``begin`` checkpoint and the manifest with a ``begin`` event (both atomic, not
  fsynced); then ``asset_refs.json`` and the ``success`` checkpoint (atomic and durable:
  temp file, fsync, rename, fsync of the folder) and the manifest with a ``success`` event
  (atomic). The fsyncs are Sparkle's, no more: DESIGN asks every JSON write to be durable,
  and Sparkle flushes neither a ``begin`` nor the manifest (a lost ``begin`` only leaves a
  crash uncounted; the success checkpoint, flushed first, is what a resume needs).

The manifest is DESIGN's ``manifest.json``, ``{"run_id", "events": [...]}``, rewritten whole
with each event as DESIGN's "All JSON is written atomically" asks; the event is spliced in
as bytes, the cheapest way to rewrite it. (Until Sparkle's manifest became this file, the
floor appended each event to a ``manifest.jsonl``, the success event with an ``fdatasync``:
not DESIGN's record; kept with ``BENCH_RECORDS_JSONL`` set, to compare.)

It uses Sparkle's own atomic writer and round-trip helper (both a few lines over the
system calls), and none of the engine: no validation, no lock for shared storage, no
checks for cancelled, stale or out-of-order runs, no logs or metrics.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from sparkle import atomic, roundtrip, unique
from sparkle.broker import use_thread_connections

URL = os.environ["BENCH_REDIS_URL"]
broker = RedisBroker(url=URL, namespace="bare7")
if os.environ.get("BENCH_THREAD_CONNECTIONS"):  # as Sparkle's broker does
    use_thread_connections(broker)
dramatiq.set_broker(broker)
client = redis.Redis.from_url(URL)
RECORDS = os.environ.get("BENCH_RECORDS_DIR")
#: Append events to a manifest.jsonl instead, as the floor did before (see the module).
JSONL = bool(os.environ.get("BENCH_RECORDS_JSONL"))
MANIFEST = "manifest.jsonl" if JSONL else "manifest.json"

HOPS = 7
ACTORS: list[Any] = []


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def _append(path: str, record: bytes, durable: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, record)
        if durable:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def _add_event(run: str, chain: int, manifest: bytes | None, event: bytes,
               durable: bool) -> bytes:
    """Record ``event`` in the run's manifest, whose bytes are ``manifest`` (None: none yet).
    Returns the new bytes."""
    if JSONL:
        _append(f"{run}/{MANIFEST}", event + b"\n", durable=durable)
        return b""
    if not manifest:
        manifest = b'{"run_id":"%d","events":[]}' % chain
    front = manifest[:-2]  # (without the closing "]}")
    manifest = front + (b"" if front.endswith(b"[") else b",") + event + b"]}"
    atomic.write_bytes(f"{run}/{MANIFEST}", manifest, durable=durable)
    return manifest


def records(chain: int, step: int) -> None:
    """One hop's Redis commands and file records, as DESIGN asks and nothing more."""
    run = f"{RECORDS}/{chain}"
    if step == 0:
        os.makedirs(f"{run}/checkpoints", exist_ok=True)
    lease, token = f"bare7:lease:{chain}", unique.hex_token(128)
    roundtrip.execute(client, ("SET", lease, token, "NX", "PX", "60000"),
                      ("DEL", f"bare7:pending:{chain}"))
    for name in ("movie_plan.json", "asset_refs.json", f"checkpoints/{step}.json"):
        _read(f"{run}/{name}")
    manifest = _read(f"{run}/{MANIFEST}")
    begin = json.dumps({"stage": step, "status": "begin", "attempt": 1,
                        "timestamp": time.time()}).encode()
    atomic.write_bytes(f"{run}/checkpoints/{step}.json", begin, durable=False)
    manifest = _add_event(run, chain, manifest, begin, durable=False)
    roundtrip.execute(client, ("GET", lease))
    atomic.write_bytes(f"{run}/asset_refs.json", b'{"shots": {}, "extras": {}}')
    success = begin.replace(b'"begin"', b'"success"')
    atomic.write_bytes(f"{run}/checkpoints/{step}.json", success)
    _add_event(run, chain, manifest, success, durable=JSONL)
    roundtrip.execute(client, ("DEL", lease), ("SET", f"bare7:pending:{chain}", str(step + 1)))


def _declare(step: int) -> Any:
    def hop(chain: int) -> None:
        if RECORDS:
            records(chain, step)
        if step + 1 < HOPS:
            ACTORS[step + 1].send(chain)
        else:
            client.incr("bare7:done")

    return dramatiq.actor(hop, actor_name=f"hop{step}", queue_name=f"bare7.{step}",
                          max_retries=0)


ACTORS.extend(_declare(step) for step in range(HOPS))

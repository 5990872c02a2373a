"""Peak memory of ``sparkle run`` on a long plan: does memory grow with a shot or the movie?

Writes a plan of ``--shots`` shots (4 s each, every other one with a line of dialogue),
renders it with ``sparkle run`` (the ``test`` adapters by default) into a temporary runs
folder, and samples the resident memory of the whole process tree every ``--every``
seconds with psutil, noting which stage was running (from the manifest's last ``begin``).
Also reports the kernel's own peak for the largest process (``ru_maxrss`` of the children),
which no sampling can miss. Prints a Markdown table for ``docs/BENCHMARKS.md``.

With ``--before REF`` each length is also rendered with the ``assemble`` and ``qa`` of the
test adapters as they were at git revision REF (through ``SPARKLE_ADAPTER_ASSEMBLE``/``_QA``),
so the baseline is measured in the same run, on the same machine.

Usage::

    .venv/bin/python scripts/bench_memory.py                 # 2,000 shots, test adapters
    .venv/bin/python scripts/bench_memory.py --shots 200 --shots 2000   # growth with length
    .venv/bin/python scripts/bench_memory.py --before 298cf16   # and the old assemble/qa
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

#: The ``sparkle`` console script beside this interpreter.
SPARKLE = Path(sys.executable).parent / "sparkle"

#: Bytes read from the end of the manifest to find the stage running now.
MANIFEST_TAIL_BYTES = 4096


def long_plan(shots: int) -> dict[str, object]:
    """A valid plan of ``shots`` shots of 4 s; every other shot has one line of dialogue."""
    return {
        "title": f"Memory bench {shots} shots",
        "characters": [{"id": "keeper", "name": "Old Tom", "voice_profile": {"voice": "en+m3"}}],
        "shots": [
            {
                "id": f"s{i:05d}",
                "duration_sec": 4,
                "visual_description": f"shot {i}",
                "start_frame_prompt": f"start of shot {i}",
                "end_frame_prompt": f"end of shot {i}",
                "motion_prompt": "slow push in",
                "dialogue": [{"character_id": "keeper",
                              "text": "Because someone out there is still sailing home."}]
                if i % 2 else [],
            }
            for i in range(shots)
        ],
        "metadata": {"seed": "7"},
    }


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def running_stage(manifest: Path) -> str | None:
    """The stage of the manifest's last ``begin`` event (None before the first)."""
    try:
        with open(manifest, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - MANIFEST_TAIL_BYTES))
            tail = handle.read().splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            # (manifest.json holds one event per line, each but the last ending in a comma)
            event = json.loads(line.rstrip(b","))
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("status") == "begin":
            return str(event["stage"])
    return None


def measure(shots: int, adapters: str, every: float, folder: Path,
            extra_env: dict[str, str] | None = None, label: str = "") -> dict[str, object]:
    """Render a plan of ``shots`` shots; return peaks (bytes) overall and per stage."""
    plan_path = folder / f"plan-{shots}.json"
    plan_path.write_text(json.dumps(long_plan(shots)))
    runs = folder / f"runs-{shots}{label}"
    env = {**os.environ, "SPARKLE_MAX_PLAN_BYTES": str(64 << 20), **(extra_env or {})}
    log = folder / f"run-{shots}{label}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        child = subprocess.Popen([str(SPARKLE), "run", str(plan_path), "--adapters", adapters,
                                  "--runs-dir", str(runs)], env=env, stdout=out, stderr=out)
    process = psutil.Process(child.pid)
    peaks: dict[str, int] = {}
    manifest: Path | None = None
    while True:
        # (wait4, not Popen.poll: it also gives the child's own peak, ru_maxrss)
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if manifest is None or not manifest.exists():
            # (not the hidden folder a run is built in before it is renamed into place)
            found = [p for p in runs.glob("*/manifest.json") if not p.parent.name.startswith(".")
                     ] if runs.is_dir() else []
            manifest = found[0] if found else None
        stage = (running_stage(manifest) if manifest else None) or "setup"
        try:
            rss = tree_rss(process)
        except psutil.NoSuchProcess:
            rss = 0
        peaks[stage] = max(peaks.get(stage, 0), rss)
        time.sleep(every)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"sparkle run exited {child.returncode}:\n{log.read_text()[-2000:]}")
    elapsed = time.monotonic() - started
    run_dir = next(runs.iterdir())
    sizes = {p.name: p.stat().st_size for p in (run_dir / "final").iterdir()}
    return {"shots": f"{shots}{label}", "seconds": elapsed, "peaks": peaks,
            "maxrss": usage.ru_maxrss * 1024, "final_files": sizes}


def mb(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 20):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, action="append",
                        help="plan length; repeat to compare (default 2000)")
    parser.add_argument("--adapters", default="test", help="adapter set (default: test)")
    parser.add_argument("--every", type=float, default=0.05,
                        help="seconds between samples (default 0.05)")
    parser.add_argument("--before", metavar="REF",
                        help="also measure the test set's assemble and qa of git revision REF")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="sparkle-mem-") as tmp:
        before_env = None
        if args.before:
            old = subprocess.run(["git", "show", f"{args.before}:sparkle/adapters/testing.py"],
                                 cwd=Path(__file__).resolve().parent.parent, check=True,
                                 capture_output=True).stdout
            (Path(tmp) / "testing_before.py").write_bytes(old)
            before_env = {"PYTHONPATH": tmp,
                          "SPARKLE_ADAPTER_ASSEMBLE": "testing_before:fixed_assemble",
                          "SPARKLE_ADAPTER_QA": "testing_before:fixed_qa"}
        for shots in args.shots or [2000]:
            if before_env is not None:
                results.append(measure(shots, args.adapters, args.every, Path(tmp), before_env,
                                       f" ({args.before})"))
            results.append(measure(shots, args.adapters, args.every, Path(tmp)))
    stages = ["setup", "script", "images", "videos", "tts", "lipsync", "assemble", "qa"]
    print(f"adapters: {args.adapters}; peak resident memory of the `sparkle run` process "
          "tree, MB (sampled every {:.2f} s; ru_maxrss: the kernel's peak)".format(args.every))
    print()
    print("| shots | " + " | ".join(stages) + " | peak | ru_maxrss | wall s | final files |")
    print("|---" * (len(stages) + 5) + "|")
    for result in results:
        peaks = result["peaks"]
        assert isinstance(peaks, dict)
        files = ", ".join(f"{name} {size / (1 << 20):.1f} MB"
                          for name, size in sorted(result["final_files"].items()))  # type: ignore[attr-defined]
        row = [str(result["shots"]), *(mb(peaks.get(s)) for s in stages),
               mb(max(peaks.values())), mb(result["maxrss"]),  # type: ignore[arg-type]
               f"{result['seconds']:.0f}", files]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

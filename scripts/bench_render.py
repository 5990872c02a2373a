"""Benchmark the media adapters: render plans in-process (no broker) and compare with ffmpeg.

For each plan it runs the seven stage adapters in order on a temporary run folder, and, in
the same run, times ffmpeg alone encoding the same number of frames at the same size, rate
and x264 settings from a flat ``color`` source: the floor no pipeline can beat. It prints
Markdown tables ready for ``docs/BENCHMARKS.md``.

Usage::

    .venv/bin/python scripts/bench_render.py                 # the example plans, 3 rounds
    .venv/bin/python scripts/bench_render.py --repeat 5 plan.json
    .venv/bin/python scripts/bench_render.py --resolution 640x360
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sparkle.adapters.ffmpeg import ffmpeg_exe, run_ffmpeg
from sparkle.adapters.media import VIDEO_CODEC_ARGS, X264_PRESET, fps_fraction, frame_count
from sparkle.adapters.media_set import ADAPTERS
from sparkle.schemas import STAGES, AssetRefs, MoviePlan

#: Folder of the example plans (the repository's copy).
PLANS_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "plans"

#: Plans rendered when none are named: the two example plans.
DEFAULT_PLANS = [PLANS_DIR / "lighthouse.json", PLANS_DIR / "rooftop.json"]


def render_once(plan: MoviePlan, run_dir: Path) -> dict[str, float]:
    """Run every stage; return wall seconds per stage."""
    refs = AssetRefs()
    timings: dict[str, float] = {}
    for stage in STAGES:
        began = time.perf_counter()
        refs, metadata = ADAPTERS[stage](plan, refs, run_dir)
        timings[stage] = time.perf_counter() - began
        if stage == "qa" and metadata["decision"] != "approve":
            print(f"warning: QA decided {metadata['decision']} for {plan.title}", file=sys.stderr)
    return timings


def floor_once(plan: MoviePlan, out: Path) -> float:
    """Wall seconds for ffmpeg alone to encode the plan's frame count at its settings."""
    width, height = plan.resolution
    frames = sum(frame_count(shot.duration_sec, plan.fps) for shot in plan.shots)
    source = f"color=c=gray:s={width}x{height}:r={fps_fraction(plan.fps)}"
    began = time.perf_counter()
    run_ffmpeg(
        ["-f", "lavfi", "-i", source, "-frames:v", str(frames), *VIDEO_CODEC_ARGS, str(out)],
        doing="timing the encode floor",
    )
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plans", nargs="*", type=Path, default=DEFAULT_PLANS)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per plan (median kept)")
    parser.add_argument("--resolution", help="override metadata.resolution, e.g. 640x360")
    args = parser.parse_args()

    rows: list[tuple[str, str, float, float, float, dict[str, float]]] = []
    for path in args.plans:
        plan = MoviePlan.model_validate_json(path.read_text("utf-8"))
        if args.resolution:
            plan.metadata["resolution"] = args.resolution
        movie_sec = sum(frame_count(s.duration_sec, plan.fps) for s in plan.shots) / plan.fps
        walls: list[float] = []
        floors: list[float] = []
        stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for _ in range(max(1, args.repeat)):
            with tempfile.TemporaryDirectory(prefix="sparkle-bench-") as tmp:
                timings = render_once(plan, Path(tmp) / "run")
                floors.append(floor_once(plan, Path(tmp) / "floor.mp4"))
            walls.append(sum(timings.values()))
            for stage, seconds in timings.items():
                stages[stage].append(seconds)
        width, height = plan.resolution
        rows.append(
            (
                path.name,
                f"{width}x{height}@{plan.fps:g}",
                movie_sec,
                statistics.median(walls),
                statistics.median(floors),
                {stage: statistics.median(values) for stage, values in stages.items()},
            )
        )

    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python "
        f"{platform.python_version()}; ffmpeg {Path(ffmpeg_exe()).name}; "
        f"libx264 -preset {X264_PRESET}; median of {max(1, args.repeat)} round(s).\n"
    )
    print(
        "| plan | size@fps | movie s | pipeline s | x real time | videos stage s "
        "| ffmpeg floor s | pipeline / floor | videos / floor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    total_movie = total_wall = 0.0
    for name, size, movie_sec, wall, floor, per_stage in rows:
        total_movie += movie_sec
        total_wall += wall
        print(
            f"| {name} | {size} | {movie_sec:.2f} | {wall:.2f} | {movie_sec / wall:.2f} "
            f"| {per_stage['videos']:.2f} | {floor:.2f} | {wall / floor:.2f} "
            f"| {per_stage['videos'] / floor:.2f} |"
        )
    print(
        f"| **all** | | {total_movie:.2f} | {total_wall:.2f} | "
        f"**{total_movie / total_wall:.2f}** | | | | |\n"
    )
    print("Per-stage wall seconds (median):\n")
    print("| stage | " + " | ".join(name for name, *_ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for stage in STAGES:
        print(f"| {stage} | " + " | ".join(f"{row[5][stage]:.3f}" for row in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

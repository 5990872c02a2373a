"""How well does QA catch what goes wrong? Inject defects into good runs and count.

Each plan (the repository's example plans plus generated ones covering places, times,
weather, camera moves, close-ups and wide shots) is rendered once through every media
adapter. QA then judges the clean run and, on a fresh copy each time, the run with one
defect injected after the fact:

==================  =========================================================  ==========
defect              how it is injected                                        expected
==================  =========================================================  ==========
black_frames        a shot's picture replaced by black, audio kept             black_frames
frozen_clip         a shot's picture replaced by its first frame, held         frozen_picture
missing_dialogue    the dialogue shot's audio stream removed                   missing_stream
silent_dialogue     the dialogue shot's audio replaced by its bed alone        dialogue_below_bed
wrong_duration      a shot cut to 60 % of its length                           duration_mismatch
audio_desync        the dialogue shot's audio laid on 0.5 s late               audio_desync
undecodable_clip    a shot's file cut in half                                  decode_error
missing_cue         the last cue removed from the .srt, .vtt and MP4 track     subtitle_mismatch
==================  =========================================================  ==========

A defect is *caught* when QA does not approve the run, and *named* when the expected
finding is among QA's findings. A clean run is *wrongly flagged* when QA does not approve
it. Prints Markdown for ``docs/BENCHMARKS.md``.

Usage::

    .venv/bin/python scripts/qa_defects.py                 # 12 plans at 320x180
    .venv/bin/python scripts/qa_defects.py --plans 1 --json-out result.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparkle.adapters.ambience import bed_filter, bed_for
from sparkle.adapters.assemble import MOVIE_PATH, SRT_PATH, VTT_PATH
from sparkle.adapters.ffmpeg import run_ffmpeg
from sparkle.adapters.media import AUDIO_CODEC_ARGS, VIDEO_CODEC_ARGS
from sparkle.adapters.media_set import ADAPTERS
from sparkle.adapters.probe import probe
from sparkle.adapters.qa import qa_stage
from sparkle.adapters.subtitles import parse_cues, srt_text, vtt_text
from sparkle.schemas import STAGES, AssetRefs, MoviePlan, QAReport

#: The repository's example plans, used first.
PLANS_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "plans"
EXAMPLE_PLANS = ("lighthouse.json", "rooftop.json", "long_line.json")

#: Resolution of every render (small: the point is QA, not the picture).
RESOLUTION = "320x180"

#: Generated plans: (title, setting, visual, start prompt, end prompt, motion, close-up,
#: lines, quiet shot's setting and prompt).
GENERATED: tuple[tuple[str, str, str, str, str, str, bool, list[str], str], ...] = (
    (
        "Fog Walk",
        "forest at dawn",
        "Two hikers among misty trees",
        "A foggy forest path",
        "The hikers stop under tall trees",
        "pan left",
        False,
        ["Did you hear that?", "Only the wind."],
        "mountains above the fog",
    ),
    (
        "Desert Run",
        "desert at noon",
        "A car on a dune road",
        "A dusty car in the desert",
        "Close-up of the driver squinting",
        "zoom out",
        True,
        ["We are almost out of water."],
        "sand dunes under a bright sky",
    ),
    (
        "Neon Alley",
        "city street at night",
        "Rain on neon signs",
        "A wet street, neon lights",
        "Close-up of Kai under the neon sign",
        "push in",
        True,
        ["You should not have come here.", "I had no choice."],
        "an empty street, rain",
    ),
    (
        "Snow Pass",
        "snowy mountains, overcast",
        "A climber near the summit",
        "Snow blowing over the peaks",
        "The climber looks up",
        "tilt up",
        True,
        ["The summit is just there."],
        "mountain peaks in a blizzard",
    ),
    (
        "Kitchen Talk",
        "kitchen at night",
        "Two friends at a table under a lamp",
        "A lamp over the kitchen table",
        "Rain on the window behind them",
        "static",
        True,
        ["More tea?", "Please. It is cold tonight."],
        "the kitchen window, rain",
    ),
    (
        "River Crossing",
        "bridge over a river at dusk",
        "A ferry passes under the bridge",
        "The bridge at sunset",
        "A boat under the bridge",
        "dolly",
        False,
        ["There it goes."],
        "the river at dusk",
    ),
    (
        "Longing",
        "somewhere",
        "An abstract feeling of longing",
        "A quiet feeling of hope",
        "Someone remembers",
        "handheld",
        True,
        ["I keep thinking about that summer."],
        "a calm memory",
    ),
    (
        "Storm Boat",
        "open sea in a storm",
        "A small boat in a gale",
        "Close-up of the sailor, spray on his face",
        "The boat climbs a wave",
        "pan right",
        True,
        ["Hold on to the rope!"],
        "lightning over the sea",
    ),
    (
        "Office Day",
        "office on a sunny afternoon",
        "Two colleagues by the window",
        "A bright office window",
        "They turn to each other",
        "tilt down",
        True,
        ["Is the report done?", "Almost."],
        "the office, sunny",
    ),
)

#: Defect name -> the finding QA should name for it.
EXPECTED: dict[str, tuple[str, ...]] = {
    "black_frames": ("black_frames",),
    "frozen_clip": ("frozen_picture",),
    "missing_dialogue": ("missing_stream", "no_dialogue_audio"),
    "silent_dialogue": ("dialogue_below_bed", "no_dialogue_audio"),
    "wrong_duration": ("duration_mismatch",),
    "audio_desync": ("audio_desync",),
    "undecodable_clip": ("decode_error",),
    "missing_cue": ("subtitle_mismatch",),
}


def generated_plan(index: int) -> MoviePlan:
    """Plan number ``index`` of ``GENERATED``: a dialogue shot and a quiet shot."""
    title, setting, visual, start, end, motion, close, lines, quiet = GENERATED[index]
    speakers = [("kai", "Kai", "en-us+m3"), ("ana", "Ana", "en-us+f3")]
    dialogue = [
        {"character_id": speakers[i % 2][0], "text": text, "start_time_sec": 0.2 + 1.6 * i}
        for i, text in enumerate(lines)
    ]
    return MoviePlan.model_validate(
        {
            "title": title,
            "characters": [
                {"id": cid, "name": name, "voice_profile": {"voice": voice}}
                for cid, name, voice in speakers
            ],
            "shots": [
                {
                    "id": "talk",
                    "duration_sec": 1.2 + 1.8 * len(lines),
                    "setting": setting,
                    "visual_description": f"{visual}, Kai and Ana",
                    "start_frame_prompt": start,
                    "end_frame_prompt": end,
                    "motion_prompt": motion,
                    "is_talking_closeup": close,
                    "dialogue": dialogue,
                },
                {
                    "id": "quiet",
                    "duration_sec": 2.5,
                    "setting": quiet,
                    "visual_description": quiet,
                    "start_frame_prompt": quiet,
                    "end_frame_prompt": f"{quiet}, later",
                    "motion_prompt": "slow push in",
                },
            ],
            "metadata": {"seed": str(100 + index), "resolution": RESOLUTION},
        }
    )


def plans(count: int) -> list[tuple[str, MoviePlan]]:
    """The first ``count`` plans: the examples, then generated ones."""
    found: list[tuple[str, MoviePlan]] = []
    for name in EXAMPLE_PLANS:
        plan = MoviePlan.model_validate_json((PLANS_DIR / name).read_text("utf-8"))
        plan.metadata["resolution"] = RESOLUTION
        found.append((name, plan))
    found += [(f"generated:{GENERATED[i][0]}", generated_plan(i)) for i in range(len(GENERATED))]
    return found[:count]


def render(plan: MoviePlan, run_dir: Path) -> AssetRefs:
    """Every stage but QA."""
    refs = AssetRefs()
    for stage in STAGES:
        if stage != "qa":
            refs, _ = ADAPTERS[stage](plan, refs, run_dir)
    return refs


def judge(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> QAReport:
    """Run QA; return its report."""
    qa_stage(plan, refs, run_dir)
    return QAReport.model_validate_json((run_dir / "qa_report.json").read_text("utf-8"))


def measures(report: QAReport) -> dict[str, float | None]:
    """The report's closest calls: smallest speech margin, largest offset, stillest shot."""
    margins = [s.dialogue_margin_db for s in report.per_shot if s.dialogue_margin_db is not None]
    offsets = [abs(s.audio_offset_sec) for s in report.per_shot if s.audio_offset_sec is not None]
    stills = [
        s.longest_still_sec / s.expected_duration_sec
        for s in report.per_shot
        if s.longest_still_sec is not None and s.expected_duration_sec
    ]
    return {
        "min_margin_db": min(margins, default=None),
        "max_offset_sec": max(offsets, default=None),
        "max_still_ratio": max(stills, default=None),
    }


def findings_of(report: QAReport) -> set[str]:
    """Every finding of a report, shots and movie."""
    found = {f for shot in report.per_shot for f in shot.findings}
    return found | set(report.movie.get("findings", []))


# --- defects ---------------------------------------------------------------------------


def _replace(path: Path, args: list[str]) -> None:
    tmp = path.with_name(f"injected-{path.name}")
    run_ffmpeg([*args, str(tmp)], doing=f"injecting a defect into {path}")
    tmp.replace(path)


def _clip(plan: MoviePlan, refs: AssetRefs, run_dir: Path, talking: bool) -> tuple[str, Path]:
    for shot in plan.shots if talking else reversed(plan.shots):
        if bool(shot.dialogue) == talking:
            return shot.id, run_dir / str(refs.shots[shot.id].final_video_clip)
    shot = plan.shots[-1 if not talking else 0]
    return shot.id, run_dir / str(refs.shots[shot.id].final_video_clip)


def _duration(path: Path) -> float:
    info = probe(path)
    return info.duration_sec or 1.0


def black_frames(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> None:
    _, clip = _clip(plan, refs, run_dir, talking=False)
    width, height = plan.resolution
    source = f"color=c=black:s={width}x{height}:r={plan.fps:g}"
    _replace(
        clip,
        [
            "-i",
            str(clip),
            "-f",
            "lavfi",
            "-i",
            source,
            "-map",
            "1:v",
            "-map",
            "0:a",
            "-t",
            f"{_duration(clip):.3f}",
            *VIDEO_CODEC_ARGS,
            "-c:a",
            "copy",
        ],
    )


def frozen_clip(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> None:
    _, clip = _clip(plan, refs, run_dir, talking=False)
    frames = round(_duration(clip) * plan.fps)
    hold = f"trim=end_frame=1,tpad=stop_mode=clone:stop={frames - 1}"
    _replace(
        clip,
        [
            "-i",
            str(clip),
            "-vf",
            hold,
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-frames:v",
            str(frames),
            *VIDEO_CODEC_ARGS,
            "-c:a",
            "copy",
        ],
    )


def missing_dialogue(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> None:
    _, clip = _clip(plan, refs, run_dir, talking=True)
    _replace(clip, ["-i", str(clip), "-map", "0:v", "-c:v", "copy", "-an"])


def silent_dialogue(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> None:
    shot_id, clip = _clip(plan, refs, run_dir, talking=True)
    shot = next(s for s in plan.shots if s.id == shot_id)
    seconds = _duration(clip)
    graph = ";".join(bed_filter(bed_for(plan, shot), seconds, [], "bed"))
    _replace(
        clip,
        [
            "-i",
            str(clip),
            "-filter_complex",
            graph,
            "-map",
            "0:v",
            "-map",
            "[bed]",
            "-c:v",
            "copy",
            *AUDIO_CODEC_ARGS,
            "-t",
            f"{seconds:.3f}",
        ],
    )


def wrong_duration(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> None:
    _, clip = _clip(plan, refs, run_dir, talking=False)
    _replace(
        clip,
        [
            "-i",
            str(clip),
            "-t",
            f"{_duration(clip) * 0.6:.3f}",
            *VIDEO_CODEC_ARGS,
            *AUDIO_CODEC_ARGS,
        ],
    )


def audio_desync(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> None:
    _, clip = _clip(plan, refs, run_dir, talking=True)
    seconds = _duration(clip)
    late = f"adelay=delays=500:all=1,atrim=end={seconds:.3f}"
    _replace(
        clip,
        [
            "-i",
            str(clip),
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-c:v",
            "copy",
            "-af",
            late,
            *AUDIO_CODEC_ARGS,
        ],
    )


def undecodable_clip(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> None:
    _, clip = _clip(plan, refs, run_dir, talking=False)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])


def missing_cue(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> None:
    cues = parse_cues((run_dir / SRT_PATH).read_text("utf-8"))[:-1]
    (run_dir / SRT_PATH).write_text(srt_text(cues), "utf-8")
    (run_dir / VTT_PATH).write_text(vtt_text(cues), "utf-8")
    movie = run_dir / MOVIE_PATH
    args = ["-i", str(movie)]
    if cues:
        args += ["-i", str(run_dir / SRT_PATH), "-map", "0:v", "-map", "0:a", "-map", "1:s"]
        args += ["-c:v", "copy", "-c:a", "copy", "-c:s", "mov_text"]
    else:
        args += ["-map", "0:v", "-map", "0:a", "-c", "copy"]
    _replace(movie, args)


#: Every defect kind and how to inject it.
DEFECTS: dict[str, Callable[[MoviePlan, AssetRefs, Path], None]] = {
    "black_frames": black_frames,
    "frozen_clip": frozen_clip,
    "missing_dialogue": missing_dialogue,
    "silent_dialogue": silent_dialogue,
    "wrong_duration": wrong_duration,
    "audio_desync": audio_desync,
    "undecodable_clip": undecodable_clip,
    "missing_cue": missing_cue,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=len(EXAMPLE_PLANS) + len(GENERATED))
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    began = time.perf_counter()
    clean: list[dict[str, Any]] = []
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in DEFECTS}
    with tempfile.TemporaryDirectory(prefix="sparkle-defects-") as tmp:
        for index, (name, plan) in enumerate(plans(args.plans)):
            good = Path(tmp) / f"plan{index}"
            refs = render(plan, good)
            report = judge(plan, refs, good)
            clean.append(
                {
                    "plan": name,
                    "decision": report.decision,
                    "findings": sorted(findings_of(report)),
                    **measures(report),
                }
            )
            for defect, inject in DEFECTS.items():
                run_dir = Path(tmp) / f"plan{index}-{defect}"
                shutil.copytree(good, run_dir)
                inject(plan, refs, run_dir)
                damaged = judge(plan, refs, run_dir)
                found = findings_of(damaged)
                results[defect].append(
                    {
                        "plan": name,
                        "decision": damaged.decision,
                        "caught": damaged.decision != "approve",
                        "named": bool(found & set(EXPECTED[defect])),
                        "findings": sorted(found),
                        **measures(damaged),
                    }
                )
                shutil.rmtree(run_dir)
            print(f"plan {index + 1}: {name} done", file=sys.stderr)
    seconds = time.perf_counter() - began

    n = len(clean)
    flagged = [c for c in clean if c["decision"] != "approve"]
    print(f"{n} plans at {RESOLUTION}, {len(DEFECTS)} defect kinds, {seconds:.0f} s wall.\n")
    print("| defect | injected | caught (not approved) | named (expected finding) | expected |")
    print("|---|---:|---:|---:|---|")
    total = caught = named = 0
    for defect, rows in results.items():
        c = sum(r["caught"] for r in rows)
        m = sum(r["named"] for r in rows)
        total, caught, named = total + len(rows), caught + c, named + m
        print(
            f"| {defect} | {len(rows)} | {c} ({100 * c / len(rows):.0f} %) "
            f"| {m} ({100 * m / len(rows):.0f} %) | {', '.join(EXPECTED[defect])} |"
        )
    print(
        f"| **all** | {total} | **{caught} ({100 * caught / max(1, total):.0f} %)** "
        f"| {named} ({100 * named / max(1, total):.0f} %) | |\n"
    )
    print(
        f"Clean runs wrongly flagged: **{len(flagged)} of {n}**"
        + (f": {flagged}" if flagged else "")
    )

    def extreme(rows: list[dict[str, Any]], key: str, pick: Any) -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        return f"{pick(values):.2f}" if values else "-"

    print("\nClosest calls (thresholds: margin >= 8 dB, |offset| <= 0.2 s, still <= 0.75):\n")
    print("| runs | smallest speech margin dB | largest offset s | largest still ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| clean | {extreme(clean, 'min_margin_db', min)} "
        f"| {extreme(clean, 'max_offset_sec', max)} | {extreme(clean, 'max_still_ratio', max)} |"
    )
    silent = extreme(results["silent_dialogue"], "min_margin_db", max)
    late = extreme(results["audio_desync"], "max_offset_sec", min)
    frozen = extreme(results["frozen_clip"], "max_still_ratio", min)
    print(f"| silent_dialogue (largest margin where the lines should be) | {silent} | | |")
    print(f"| audio_desync (smallest offset) | | {late} | |")
    print(f"| frozen_clip (smallest still ratio) | | | {frozen} |")
    misses = [(d, r) for d, rows in results.items() for r in rows if not r["caught"]]
    for defect, row in misses:
        print(f"missed: {defect} in {row['plan']} (findings {row['findings']})")
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"clean": clean, "defects": results, "wall_sec": seconds}, indent=2),
            "utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

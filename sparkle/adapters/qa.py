"""The ``qa`` stage: measure every lipsynced clip and the movie, then judge with the QA policy.

Each file is decoded once (see :func:`sparkle.adapters.analysis.analyze`). Per shot the
findings are: it decodes, it has video and audio, its length matches the plan (or the
length the lipsync stage extended it to, read from ``lipsync/timing.json``), it is not
mostly black, its picture does not stand still, a shot with dialogue is audible, above its
ambience bed and on time (:mod:`sparkle.adapters.dialogue_check`), and its size and frame
rate are the plan's. The movie must decode, last the sum of its clips, and carry one
subtitle cue per line at its audio's times (in ``final/movie.srt``, ``final/movie.vtt`` and,
unless burned in, the MP4's subtitle track).

The policy (:mod:`sparkle.qa_policy`, ``SPARKLE_QA_POLICY`` or the packaged default) turns
the findings into ``approve``, ``regenerate`` or ``escalate``. The stage only reports the
decision; acting on it is the engine's job.

Output: ``qa_report.json`` (:class:`sparkle.schemas.QAReport`, ``extras["qa_report"]``).
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sparkle.adapters.analysis import MediaAnalysis, analyze
from sparkle.adapters.assemble import SRT_PATH, VTT_PATH
from sparkle.adapters.dialogue_check import best_alignment, dialogue_margin_db, speech_levels
from sparkle.adapters.ffmpeg import run_ffmpeg
from sparkle.adapters.lipsync import TIMING_EXTRA
from sparkle.adapters.run_files import os_error, relative_to_run
from sparkle.adapters.subtitles import Cue, cues_from_timing, parse_cues
from sparkle.atomic import write_json
from sparkle.errors import ConfigError, PermanentStageError
from sparkle.qa_policy import INFORMATIONAL_FINDINGS, QAPolicy, Thresholds, load_policy
from sparkle.retrying import current_stage
from sparkle.schemas import AssetRefs, MoviePlan, QAReport, QAShotReport, ShotSpec
from sparkle.settings import load_settings

#: The report, relative to the run folder.
REPORT_PATH = "qa_report.json"

#: Files decoded at the same time (one ffmpeg each).
QA_WORKERS = int(os.environ.get("SPARKLE_QA_WORKERS", "2"))


def _inside(run_dir: Path, relative: str, what: str) -> Path:
    root = run_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise PermanentStageError(f"{what} {relative!r} lies outside the run folder {root}")
    return path


def _timing(run_dir: Path, refs: AssetRefs) -> dict[str, Any]:
    """The lipsync stage's timing file (empty when there is none)."""
    relative = refs.extras.get(TIMING_EXTRA)
    if not relative:
        return {}
    path = _inside(run_dir, relative, "lipsync timing")
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PermanentStageError(f"cannot read the lipsync timing {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _extended_durations(timing: dict[str, Any]) -> dict[str, float]:
    """Shot id -> extended length in seconds, from the lipsync stage's timing."""
    return {
        shot_id: float(record["duration_sec"])
        for shot_id, record in timing.get("shots", {}).items()
        if record.get("extended")
    }


def _line_starts(timing: dict[str, Any], shot_id: str) -> list[float]:
    record = timing.get("shots", {}).get(shot_id, {})
    return [float(line["start_sec"]) for line in record.get("lines", [])]


def _format_findings(analysis: MediaAnalysis, plan: MoviePlan, limits: Thresholds) -> list[str]:
    findings: list[str] = []
    video = analysis.info.video
    if video and (video.width, video.height) != plan.resolution:
        findings.append("resolution_mismatch")
    if video and (video.fps is None or abs(video.fps - plan.fps) > limits.fps_tolerance):
        findings.append("fps_mismatch")
    return findings


def check_shot(
    shot: ShotSpec,
    path: Path,
    plan: MoviePlan,
    limits: Thresholds,
    extended_to: float | None,
    speech: list[tuple[float, Path]] | None = None,
) -> tuple[QAShotReport, float | None]:
    """Measure one lipsynced clip; return its report and its measured length.

    ``speech`` holds each line's start in the shot and its WAV, for the checks that the
    dialogue is above the bed and on time (none without it).
    """
    report = QAShotReport(
        shot_id=shot.id,
        expected_duration_sec=shot.duration_sec,
        has_dialogue=bool(shot.dialogue),
        extended=extended_to is not None,
    )
    if not path.is_file():
        report.decodes = False
        report.findings.append("missing_file")
        return report, None
    analysis = analyze(path, signals=True)
    info = analysis.info
    report.decodes = analysis.decodes
    if not analysis.decodes:
        report.findings.append("decode_error")
    if info.video is None or info.audio is None:
        report.findings.append("missing_stream")
    duration = analysis.duration_sec
    report.duration_sec = round(duration, 4) if duration is not None else None
    if info.video:
        report.width, report.height, report.fps = (
            info.video.width,
            info.video.height,
            info.video.fps,
        )
    report.black_ratio = analysis.black_ratio
    report.mean_volume_db = analysis.mean_volume_db
    if extended_to is not None:
        report.findings.append("extended")
    expected = extended_to if extended_to is not None else shot.duration_sec
    if duration is None or abs(duration - expected) > limits.duration_tolerance_sec:
        report.findings.append("duration_mismatch")
    if analysis.black_ratio is not None and analysis.black_ratio > limits.max_black_ratio:
        report.findings.append("black_frames")
    still = analysis.longest_still_sec
    report.longest_still_sec = round(still, 3) if still is not None else None
    # A black picture is still too; it is reported as black only.
    if (
        still is not None
        and duration is not None
        and shot.duration_sec >= 1.0
        and "black_frames" not in report.findings
    ):
        # A picture held while dialogue outlasts the clip is not a frozen clip.
        held = max(0.0, (extended_to or 0.0) - shot.duration_sec)
        if still - held > limits.max_still_ratio * shot.duration_sec:
            report.findings.append("frozen_picture")
    if shot.dialogue:
        mean = analysis.mean_volume_db
        if mean is None or mean < limits.min_dialogue_mean_db:
            report.findings.append("no_dialogue_audio")
        elif speech and analysis.envelope_db:
            levels = speech_levels(speech, len(analysis.envelope_db))
            mask = [level is not None for level in levels]
            margin = dialogue_margin_db(analysis.envelope_db, mask)
            aligned = best_alignment(analysis.envelope_db, levels)
            report.dialogue_margin_db = round(margin, 2) if margin is not None else None
            if aligned is not None:
                offset, best_margin = aligned
                report.audio_offset_sec = round(offset, 3)
                # Heard nowhere above the bed: missing; heard clearly but shifted: desync.
                if best_margin < limits.min_dialogue_margin_db:
                    report.findings.append("dialogue_below_bed")
                elif abs(offset) > limits.max_audio_offset_sec:
                    report.findings.append("audio_desync")
    report.findings += _format_findings(analysis, plan, limits)
    return report, duration


def check_movie(path: Path, plan: MoviePlan, limits: Thresholds) -> dict[str, Any]:
    """Measure the movie; return the report's ``movie`` record (with ``findings``).

    The comparison with the sum of the clips is made by the caller, which knows it.
    """
    record: dict[str, Any] = {"decodes": False, "duration_sec": None, "findings": []}
    findings: list[str] = record["findings"]
    if not path.is_file():
        findings.append("missing_file")
        return record
    analysis = analyze(path)
    info = analysis.info
    duration = analysis.duration_sec
    record.update(
        decodes=analysis.decodes,
        duration_sec=round(duration, 4) if duration is not None else None,
        video_codec=info.video.codec if info.video else None,
        audio_codec=info.audio.codec if info.audio else None,
        width=info.video.width if info.video else None,
        height=info.video.height if info.video else None,
        fps=info.video.fps if info.video else None,
        black_ratio=analysis.black_ratio,
        mean_volume_db=analysis.mean_volume_db,
    )
    if not analysis.decodes:
        findings.append("decode_error")
        record["errors"] = analysis.errors
    if info.video is None or info.audio is None:
        findings.append("missing_stream")
    findings += _format_findings(analysis, plan, limits)
    return record


def _track_cues(movie: Path) -> list[Cue] | None:
    """The cues of the movie's first subtitle track; None when it has none."""
    with tempfile.TemporaryDirectory(prefix="sparkle-qa-") as tmp:
        out = Path(tmp) / "track.srt"
        args = ["-i", str(movie), "-map", "0:s:0", "-f", "srt", str(out)]
        code, _ = run_ffmpeg(args, doing=f"reading the subtitles of {movie}", check=False)
        if code != 0 or not out.is_file():
            return None
        return parse_cues(out.read_text("utf-8", "replace"))


def check_subtitles(
    run_dir: Path, movie: Path, expected: list[Cue], burned: bool, limits: Thresholds
) -> dict[str, Any]:
    """Compare the subtitle files and track with the cues the dialogue calls for.

    Returns ``{"expected": n, "srt": n, "vtt": n, "track": n | None, "ok": bool}``.
    """

    def read(path: Path) -> list[Cue] | None:
        try:
            return parse_cues(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return None

    def same(found: list[Cue] | None) -> bool:
        if found is None or len(found) != len(expected):
            return False
        tol = limits.subtitle_tolerance_sec
        return all(
            abs(a.start - b.start) <= tol and abs(a.end - b.end) <= tol and a.text == b.text
            for a, b in zip(found, expected, strict=True)
        )

    srt, vtt = read(run_dir / SRT_PATH), read(run_dir / VTT_PATH)
    track = None if burned or not expected else _track_cues(movie)
    ok = same(srt) and same(vtt) and (burned or not expected or same(track))
    return {
        "expected": len(expected),
        "srt": None if srt is None else len(srt),
        "vtt": None if vtt is None else len(vtt),
        "track": None if track is None else len(track),
        "burned": burned,
        "ok": ok,
    }


def qa_stage(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> tuple[AssetRefs, dict[str, Any]]:
    """Measure the clips and the movie, write ``qa_report.json`` and report the decision."""
    refs = refs.model_copy(deep=True)
    # (SPARKLE_QA_POLICY: from the settings of the App running the stage; called outside
    # one, as a function, from the environment)
    where = current_stage()
    settings = where.settings if where is not None and where.settings else load_settings()
    policy_path = settings.qa_policy
    try:
        policy: QAPolicy = load_policy(policy_path)
    except ConfigError as exc:
        raise PermanentStageError(str(exc)) from exc
    limits = policy.thresholds
    timing = _timing(run_dir, refs)
    extended = _extended_durations(timing)
    jobs: list[tuple[ShotSpec, Path]] = []
    for shot in plan.shots:
        relative = refs.shot(shot.id).final_video_clip
        if not relative:
            raise PermanentStageError(
                f"missing prerequisite: no lipsynced clip of shot {shot.id} in asset refs; "
                "run the lipsync stage first"
            )
        jobs.append((shot, _inside(run_dir, relative, f"lipsynced clip of shot {shot.id}")))
    movie_rel = refs.extras.get("final_movie")
    if not movie_rel:
        raise PermanentStageError(
            "missing prerequisite: no final movie in asset refs; run the assemble stage first"
        )
    movie_path = _inside(run_dir, movie_rel, "final movie")

    def measure(job: tuple[ShotSpec, Path]) -> tuple[QAShotReport, float | None]:
        shot = job[0]
        starts = _line_starts(timing, shot.id)
        wavs = [
            _inside(run_dir, rel, "dialogue audio") for rel in refs.shot(shot.id).dialogue_audio
        ]
        speech = list(zip(starts, wavs, strict=True)) if len(starts) == len(wavs) else None
        return check_shot(shot, job[1], plan, limits, extended.get(shot.id), speech)

    expected_cues = cues_from_timing(timing, [shot.id for shot in plan.shots]) if timing else []
    burned = bool(timing.get("subtitles_burned"))
    with ThreadPoolExecutor(max_workers=max(1, QA_WORKERS)) as pool:
        movie_future = pool.submit(check_movie, movie_path, plan, limits)
        subtitles_future = pool.submit(
            check_subtitles, run_dir, movie_path, expected_cues, burned, limits
        )
        results = list(pool.map(measure, jobs))
        movie = movie_future.result()
        subtitles = subtitles_future.result()
    movie["subtitles"] = subtitles
    if timing and not subtitles["ok"]:
        movie["findings"].append("subtitle_mismatch")
    durations = [duration for _, duration in results]
    clips_total = sum(d for d in durations if d is not None)
    movie["path"] = movie_rel
    movie["clips_total_sec"] = round(clips_total, 4)
    # Only comparable when every clip and the movie could be measured.
    if None not in durations and movie["decodes"]:
        measured = movie["duration_sec"]
        if measured is None or abs(measured - clips_total) > limits.movie_duration_tolerance_sec:
            movie["findings"].append("movie_duration_mismatch")

    per_shot = [report for report, _ in results]
    all_findings = [f for report in per_shot for f in report.findings] + list(movie["findings"])
    issues = [f for f in all_findings if f not in INFORMATIONAL_FINDINGS]
    rule = policy.decide(all_findings)
    flagged = {
        report.shot_id: [f for f in report.findings if f not in INFORMATIONAL_FINDINGS]
        for report in per_shot
        if any(f not in INFORMATIONAL_FINDINGS for f in report.findings)
    }
    parts = [f"{len(per_shot)} shot(s) checked, {len(issues)} issue(s)"]
    parts += [f"shot {shot_id}: {', '.join(codes)}" for shot_id, codes in flagged.items()]
    if extended:
        parts.append(f"extended to fit dialogue: {', '.join(sorted(extended))}")
    if movie["findings"]:
        parts.append(f"movie: {', '.join(movie['findings'])}")
    parts.append(f"decision {rule.decision} by rule '{rule.name}'")
    summary = "; ".join(parts)
    report = QAReport(
        movie_title=plan.title,
        per_shot=per_shot,
        summary=summary,
        decision=rule.decision,
        regenerate_stages=list(rule.stages),
        rule=rule.name,
        issues_found=len(issues),
        movie=movie,
    )
    report_path = run_dir / REPORT_PATH
    try:
        write_json(report_path, report)
    except OSError as exc:
        raise os_error(exc, f"cannot write {report_path}") from exc
    refs.extras["qa_report"] = relative_to_run(run_dir, report_path)
    return refs, {
        "decision": rule.decision,
        "rule": rule.name,
        "issues_found": len(issues),
        "regenerate_stages": list(rule.stages),
        "shots_checked": len(per_shot),
        "findings": sorted(set(all_findings)),
        "flagged_shots": flagged,
        "extended_shots": sorted(extended),
        "policy": str(policy_path) if policy_path else "default",
    }

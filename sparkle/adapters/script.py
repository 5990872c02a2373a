"""The ``script`` stage: a readable screenplay of the plan and the dialogue order per shot.

Outputs (relative to the run folder):

- ``script/screenplay.md``: title, cast, then one scene block per shot with its setting,
  camera move, the start and end frames and the dialogue in screenplay layout.
- ``script/timing.json``: per shot, its lines in speaking order with the planned start
  time (or ``null`` for "right after the previous line") and a rough spoken length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparkle.adapters.run_files import os_error
from sparkle.adapters.videos import camera_move
from sparkle.atomic import write_bytes, write_json
from sparkle.schemas import AssetRefs, MoviePlan, ShotSpec

#: Where the screenplay goes, relative to the run folder.
SCREENPLAY_PATH = "script/screenplay.md"

#: Where the dialogue timing goes, relative to the run folder.
TIMING_PATH = "script/timing.json"

#: Rough speaking rate in words per second used for the estimate in ``timing.json``.
WORDS_PER_SECOND = 2.6


def estimate_speech_sec(text: str) -> float:
    """A rough spoken length of ``text`` in seconds (the TTS stage measures the real one)."""
    return round(max(1, len(text.split())) / WORDS_PER_SECOND, 2)


def _scene_heading(index: int, shot: ShotSpec) -> str:
    place = (shot.setting or shot.visual_description).upper()
    return f"## {index}. {place} — shot `{shot.id}`, {shot.duration_sec:g} s"


def render_screenplay(plan: MoviePlan) -> str:
    """The plan as a Markdown screenplay."""
    out = [f"# {plan.title}", ""]
    if plan.characters:
        out += ["**Cast**", ""]
        for character in plan.characters:
            voice = character.voice_profile.get("voice", "default voice")
            about = f" — {character.description}" if character.description else ""
            out.append(f"- **{character.name.upper()}** (`{character.id}`, {voice}){about}")
        out.append("")
    for index, shot in enumerate(plan.shots, start=1):
        move = camera_move(shot.motion_prompt).replace("_", " ")
        motion = shot.motion_prompt or "none given"
        out += [
            _scene_heading(index, shot),
            "",
            f"*{shot.visual_description}*",
            "",
            f"- Camera: {move} (motion prompt: {motion})",
            f"- Opens on: {shot.start_frame_prompt}",
            f"- Ends on: {shot.end_frame_prompt}",
        ]
        if shot.is_talking_closeup:
            out.append("- Talking close-up")
        out.append("")
        for line in shot.dialogue:
            name = plan.character(line.character_id).name.upper()
            cue = f" *(at {line.start_time_sec:g} s)*" if line.start_time_sec is not None else ""
            out += [f"> **{name}**{cue}", f"> {line.text}", ""]
    return "\n".join(out).rstrip() + "\n"


def dialogue_timing(plan: MoviePlan) -> dict[str, Any]:
    """Per shot, its dialogue lines in order with planned start times and rough lengths."""
    shots: list[dict[str, Any]] = []
    for shot in plan.shots:
        lines = [
            {
                "index": i,
                "character_id": line.character_id,
                "character_name": plan.character(line.character_id).name,
                "text": line.text,
                "start_time_sec": line.start_time_sec,
                "estimated_sec": estimate_speech_sec(line.text),
            }
            for i, line in enumerate(shot.dialogue)
        ]
        shots.append({"shot_id": shot.id, "duration_sec": shot.duration_sec, "lines": lines})
    return {"title": plan.title, "shots": shots}


def script_stage(
    plan: MoviePlan, refs: AssetRefs, run_dir: Path
) -> tuple[AssetRefs, dict[str, Any]]:
    """Write the screenplay and dialogue timing of ``plan``."""
    try:
        write_bytes(run_dir / SCREENPLAY_PATH, render_screenplay(plan).encode("utf-8"))
        write_json(run_dir / TIMING_PATH, dialogue_timing(plan))
    except OSError as exc:
        raise os_error(exc, f"cannot write the script into {run_dir / 'script'}") from exc
    refs = refs.model_copy(deep=True)
    refs.extras["screenplay"] = SCREENPLAY_PATH
    refs.extras["script_timing"] = TIMING_PATH
    return refs, {
        "shots": len(plan.shots),
        "lines": sum(len(shot.dialogue) for shot in plan.shots),
        "characters": len(plan.characters),
    }

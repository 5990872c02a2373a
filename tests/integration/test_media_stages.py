"""The real media adapters, called directly in stage order on real files (no broker).

Most renders use 320x180 (``metadata.resolution``) to stay fast; one renders the lighthouse
plan at its default settings (1280x720, 24 fps). Defects are injected into copies of a
rendered run and the QA stage must find them and decide as the policy says.
"""

from __future__ import annotations

import json
import re
import shutil
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkle.adapters.analysis import analyze
from sparkle.adapters.ffmpeg import FFmpegError, run_ffmpeg
from sparkle.adapters.images import images_stage
from sparkle.adapters.lipsync import lipsync_stage
from sparkle.adapters.media import AUDIO_CODEC_ARGS, VIDEO_CODEC_ARGS
from sparkle.adapters.media_set import ADAPTERS
from sparkle.adapters.probe import AudioStream, VideoStream, parse_probe, probe
from sparkle.adapters.qa import qa_stage
from sparkle.adapters.videos import CameraMove, camera_move, videos_stage
from sparkle.errors import PermanentStageError
from sparkle.qa_policy import load_policy
from sparkle.schemas import STAGES, AssetRefs, MoviePlan, QAReport

PLANS = Path(__file__).resolve().parent.parent / "data" / "plans"

#: Resolution of the fast renders.
SMALL = "320x180"

#: Seconds a clip's or the movie's length may differ from what is expected.
TOLERANCE_SEC = 0.1

Rendered = tuple[MoviePlan, AssetRefs, dict[str, dict[str, Any]], Path]


def load_plan(name: str, **metadata: str) -> MoviePlan:
    plan = MoviePlan.model_validate_json((PLANS / name).read_text(encoding="utf-8"))
    plan.metadata.update(metadata)
    return plan


def render(plan: MoviePlan, run_dir: Path) -> tuple[AssetRefs, dict[str, dict[str, Any]]]:
    """Run every stage's adapter in order, as the engine would."""
    refs = AssetRefs()
    metadata: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        refs, metadata[stage] = ADAPTERS[stage](plan, refs, run_dir)
    return refs, metadata


def read_report(run_dir: Path) -> QAReport:
    return QAReport.model_validate_json((run_dir / "qa_report.json").read_text("utf-8"))


def audio_stream_sec(path: Path) -> float:
    """Decode only the audio of ``path`` and return how long it lasts."""
    _, stderr = run_ffmpeg(["-i", str(path), "-map", "0:a", "-f", "null", "-"], doing="test")
    hours, minutes, seconds = re.findall(r"time=\s*(\d+):(\d+):([\d.]+)", stderr)[-1]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def mean_volume(path: Path, start: float, length: float) -> float:
    """Mean level in dB of ``length`` seconds of audio from ``start``."""
    args = ["-ss", f"{start}", "-t", f"{length}", "-i", str(path), "-map", "0:a"]
    _, stderr = run_ffmpeg([*args, "-af", "volumedetect", "-f", "null", "-"], doing="test")
    return float(re.findall(r"mean_volume:\s*(-?[\d.]+) dB", stderr)[-1])


@pytest.fixture(scope="module", autouse=True)
def default_settings() -> Iterator[None]:
    """Every test here uses the packaged QA policy unless it says otherwise."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SPARKLE_QA_POLICY", raising=False)
        yield


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """The example plans and the long-line plan, rendered once at 320x180."""
    runs: dict[str, Rendered] = {}
    for name in ("lighthouse.json", "rooftop.json", "long_line.json"):
        plan = load_plan(name, resolution=SMALL)
        run_dir = tmp_path_factory.mktemp(name.removesuffix(".json"))
        refs, metadata = render(plan, run_dir)
        runs[name] = (plan, refs, metadata, run_dir)
    return runs


@pytest.fixture(scope="module")
def default_lighthouse(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """lighthouse.json rendered at its default settings (1280x720, 24 fps)."""
    plan = load_plan("lighthouse.json")
    run_dir = tmp_path_factory.mktemp("lighthouse-default")
    refs, metadata = render(plan, run_dir)
    return plan, refs, metadata, run_dir


@pytest.fixture
def run_copy(small_runs: dict[str, Rendered], tmp_path: Path) -> Callable[[str], Rendered]:
    """A private copy of a small rendered run, safe to damage."""

    def copy(name: str) -> Rendered:
        plan, refs, metadata, run_dir = small_runs[name]
        target = tmp_path / "run"
        shutil.copytree(run_dir, target)
        return plan, refs.model_copy(deep=True), metadata, target

    return copy


@pytest.fixture
def qa_policy_file(tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """Point ``SPARKLE_QA_POLICY`` at a policy written by the test."""
    with pytest.MonkeyPatch.context() as patch:

        def use(text: str) -> None:
            path = tmp_path / "policy.yaml"
            path.write_text(text, encoding="utf-8")
            patch.setenv("SPARKLE_QA_POLICY", str(path))

        yield use


# --- end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lighthouse.json", "rooftop.json"])
def test_example_plan_renders_end_to_end(small_runs: dict[str, Rendered], name: str) -> None:
    """Protects: every example plan goes through all seven stages to an approved movie."""
    # Given an example plan rendered through every adapter in stage order
    plan, refs, metadata, run_dir = small_runs[name]
    # Then every file the asset refs name exists inside the run folder
    for shot in plan.shots:
        entry = refs.shots[shot.id]
        files = [entry.start_frame, entry.end_frame, entry.raw_clip, entry.final_video_clip]
        for relative in [*files, *entry.dialogue_audio]:
            assert relative is not None
            assert not Path(relative).is_absolute()
            assert (run_dir / relative).is_file(), relative
        assert len(entry.dialogue_audio) == len(shot.dialogue)
    for key in ("screenplay", "final_movie", "qa_report"):
        assert (run_dir / refs.extras[key]).is_file()
    # And the screenplay tells the story
    screenplay = (run_dir / "script" / "screenplay.md").read_text("utf-8")
    assert plan.title in screenplay
    assert all(line.text in screenplay for shot in plan.shots for line in shot.dialogue)
    # And each stage reported its counts
    assert metadata["images"]["frames_written"] == 2 * len(plan.shots)
    assert metadata["videos"]["clips_written"] == len(plan.shots)
    assert metadata["tts"]["lines_synthesized"] == sum(len(s.dialogue) for s in plan.shots)
    assert metadata["assemble"]["shots_used"] == [shot.id for shot in plan.shots]
    # And QA approves the clean run
    assert metadata["qa"]["decision"] == "approve"
    assert metadata["qa"]["issues_found"] == 0
    assert read_report(run_dir).decision == "approve"


def test_lighthouse_at_default_settings(default_lighthouse: Rendered) -> None:
    """Protects: the default 1280x720 24 fps render has the promised streams and timing."""
    # Given lighthouse.json rendered without any metadata override
    plan, refs, metadata, run_dir = default_lighthouse
    # Then the keyframes, clips and movie are 1280x720 H.264 at 24 fps with AAC audio
    keyframe = probe(run_dir / str(refs.shots["s1"].start_frame)).video
    assert keyframe is not None and (keyframe.width, keyframe.height) == (1280, 720)
    clips = [run_dir / str(refs.shots[shot.id].final_video_clip) for shot in plan.shots]
    for path in [*clips, run_dir / "final" / "movie.mp4"]:
        info = probe(path)
        assert info.video is not None and info.audio is not None, path
        assert (info.video.codec, info.video.pix_fmt) == ("h264", "yuv420p")
        assert (info.video.width, info.video.height, info.video.fps) == (1280, 720, 24.0)
        assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 48000, 1)
    # And the movie lasts the sum of the planned shots
    assert metadata["assemble"]["duration_sec"] == pytest.approx(12.0, abs=TOLERANCE_SEC)
    # And the camera moves follow the motion prompts
    assert metadata["videos"]["motions"] == {"s1": "push_in", "s2": "pan_right", "s3": "static"}
    assert metadata["qa"]["decision"] == "approve"


@pytest.mark.parametrize("name", ["lighthouse.json", "rooftop.json"])
def test_clips_and_movie_have_expected_streams(small_runs: dict[str, Rendered], name: str) -> None:
    """Protects: raw clips are video-only and every later file has the same stream layout."""
    # Given a rendered plan
    plan, refs, _, run_dir = small_runs[name]
    for shot in plan.shots:
        # Then the raw clip is H.264 without audio
        raw = probe(run_dir / str(refs.shots[shot.id].raw_clip))
        assert raw.video is not None and raw.video.codec == "h264" and raw.audio is None
    # And every lipsynced clip and the movie have one H.264 and one AAC stream, alike
    layouts = set()
    for relative in [*(refs.shots[s.id].final_video_clip for s in plan.shots), "final/movie.mp4"]:
        info = probe(run_dir / str(relative))
        assert (info.video_streams, info.audio_streams) == (1, 1)
        assert info.video is not None and info.audio is not None
        layouts.add(
            (
                info.video.codec,
                info.video.pix_fmt,
                info.video.width,
                info.video.height,
                info.video.fps,
                info.audio.codec,
                info.audio.sample_rate,
                info.audio.channels,
            )
        )
    assert layouts == {("h264", "yuv420p", 320, 180, 24.0, "aac", 48000, 1)}


@pytest.mark.parametrize("name", ["lighthouse.json", "rooftop.json", "long_line.json"])
def test_durations_match_plan_and_movie_is_their_sum(
    small_runs: dict[str, Rendered], name: str
) -> None:
    """Protects: each shot lasts as planned (or as extended) and the movie is their sum."""
    # Given a rendered plan and the lipsync stage's durations
    plan, refs, metadata, run_dir = small_runs[name]
    expected = metadata["lipsync"]["durations_sec"]
    measured = []
    for shot in plan.shots:
        analysis = analyze(run_dir / str(refs.shots[shot.id].final_video_clip))
        assert analysis.decodes and analysis.duration_sec is not None
        measured.append(analysis.duration_sec)
        # Then every shot not extended lasts its planned duration
        if shot.id not in metadata["lipsync"]["extended_shots"]:
            assert analysis.duration_sec == pytest.approx(shot.duration_sec, abs=TOLERANCE_SEC)
        assert analysis.duration_sec == pytest.approx(expected[shot.id], abs=TOLERANCE_SEC)
    # And the movie lasts the sum of its clips
    movie = analyze(run_dir / "final" / "movie.mp4")
    assert movie.duration_sec == pytest.approx(sum(measured), abs=TOLERANCE_SEC)
    assert movie.info.duration_sec == pytest.approx(sum(measured), abs=TOLERANCE_SEC)


def test_movie_of_one_and_two_frame_shots_keeps_its_length(tmp_path: Path) -> None:
    """Protects: joining clips of one or two frames at an NTSC rate loses no time."""
    # Given a plan at 23.976 fps whose first shots last one and two frames
    shots = [
        {"id": "one", "duration_sec": 0.04, "motion_prompt": "pan left"},
        {"id": "two", "duration_sec": 0.09, "motion_prompt": "push in"},
        {"id": "three", "duration_sec": 1.5, "motion_prompt": "tilt up"},
    ]
    plan = MoviePlan.model_validate(
        {
            "title": "Short shots",
            "shots": [
                {
                    **shot,
                    "visual_description": "v",
                    "start_frame_prompt": "a",
                    "end_frame_prompt": "b",
                }
                for shot in shots
            ],
            "metadata": {"fps": "23.976", "resolution": SMALL},
        }
    )
    # When it is rendered
    _, metadata = render(plan, tmp_path)
    # Then the movie lasts its 1 + 2 + 36 frames, at the plan's rate, and QA approves
    movie = analyze(tmp_path / "final" / "movie.mp4")
    assert movie.frames == 39
    assert movie.info.duration_sec == pytest.approx(39 / 23.976, abs=TOLERANCE_SEC)
    assert movie.info.video is not None and movie.info.video.fps == pytest.approx(23.98)
    assert metadata["qa"]["decision"] == "approve"


def test_dialogue_is_loud_and_other_shots_have_an_ambience_bed(
    small_runs: dict[str, Rendered],
) -> None:
    """Protects: speech lands in the dialogue shot, and the other shots are not silent but
    carry a quiet bed well below the speech."""
    # Given the lighthouse plan, where only s2 has dialogue
    plan, refs, _, run_dir = small_runs["lighthouse.json"]
    levels = {
        shot.id: analyze(run_dir / str(refs.shots[shot.id].final_video_clip)) for shot in plan.shots
    }
    # Then the dialogue shot is loud
    talking = levels["s2"].mean_volume_db
    assert talking is not None and talking > -35
    for quiet in ("s1", "s3"):
        mean, peak = levels[quiet].mean_volume_db, levels[quiet].max_volume_db
        assert mean is not None and peak is not None
        # And the shots without dialogue are audible (the bed), not silent
        assert mean > -55 and peak > -45
        # And the bed stays more than 10 dB under the speech
        assert talking - mean > 10


def test_keyframes_are_byte_identical_across_renders(tmp_path: Path) -> None:
    """Protects: the same plan and seed give byte-identical keyframes; another seed does not."""
    # Given the lighthouse plan at its default resolution
    plan = load_plan("lighthouse.json")
    # When I draw its keyframes twice into two run folders
    first, _ = images_stage(plan, AssetRefs(), tmp_path / "a")
    images_stage(plan, AssetRefs(), tmp_path / "b")
    # Then every PNG, and the layout of what they show, is the same, byte for byte
    names = sorted(p.name for p in (tmp_path / "a" / "frames").iterdir())
    assert len([name for name in names if name.endswith(".png")]) == 2 * len(plan.shots)
    assert "layout.json" in names
    for name in names:
        assert (tmp_path / "a" / "frames" / name).read_bytes() == (
            tmp_path / "b" / "frames" / name
        ).read_bytes()
    # And a different seed draws different pictures
    reseeded = load_plan("lighthouse.json", seed="43")
    images_stage(reseeded, AssetRefs(), tmp_path / "c")
    start = first.shots["s1"].start_frame
    assert start is not None
    assert (tmp_path / "a" / start).read_bytes() != (tmp_path / "c" / start).read_bytes()


# --- dialogue longer than its shot ---------------------------------------------------


def test_long_line_extends_its_shot_without_cutting(small_runs: dict[str, Rendered]) -> None:
    """Protects: a line longer than its shot extends the shot; no speech is cut."""
    # Given a plan whose 1.5 s shot holds a line of several seconds
    _, refs, metadata, run_dir = small_runs["long_line.json"]
    wav = run_dir / refs.shots["answer"].dialogue_audio[0]
    with wave.open(str(wav), "rb") as reader:
        speech_sec = reader.getnframes() / reader.getframerate()
    assert speech_sec > 3
    # Then the lipsync stage reports the shot as extended, and only that shot
    assert metadata["lipsync"]["extended_shots"] == ["answer"]
    clip = run_dir / str(refs.shots["answer"].final_video_clip)
    # And the clip's audio and picture both last at least as long as the speech
    assert audio_stream_sec(clip) >= speech_sec
    assert analyze(clip).duration_sec >= speech_sec  # type: ignore[operator]
    # And the end of the line is still audible in the clip
    assert mean_volume(clip, speech_sec - 0.7, 0.6) > -40
    # And QA reports the extension without calling it a defect
    report = read_report(run_dir)
    answer = next(shot for shot in report.per_shot if shot.shot_id == "answer")
    assert answer.extended and answer.findings == ["extended"]
    assert "answer" in (report.summary or "")
    assert report.decision == "approve"
    # And the unknown voice fell back to the default, with a warning
    assert metadata["tts"]["voices"]["bo"] == "en-us"
    assert any("no-such-voice" in warning for warning in metadata["tts"]["warnings"])


# --- QA finds injected defects ---------------------------------------------------------


def _replace_clip(run_dir: Path, relative: str | None, args: list[str]) -> Path:
    assert relative is not None
    path = run_dir / relative
    tmp = path.with_name("injected.mp4")
    run_ffmpeg([*args, *AUDIO_CODEC_ARGS, str(tmp)], doing="injecting a defect")
    tmp.replace(path)
    return path


def _silence(seconds: float) -> list[str]:
    return ["-f", "lavfi", "-t", f"{seconds}", "-i", "anullsrc=r=48000:cl=mono"]


def _judge(plan: MoviePlan, refs: AssetRefs, run_dir: Path) -> tuple[QAReport, dict[str, Any]]:
    _, metadata = qa_stage(plan, refs, run_dir)
    return read_report(run_dir), metadata


def _findings(report: QAReport) -> dict[str, list[str]]:
    found = {shot.shot_id: shot.findings for shot in report.per_shot if shot.findings}
    if report.movie.get("findings"):
        found["movie"] = report.movie["findings"]
    return found


def test_qa_finds_a_black_clip(run_copy: Callable[[str], Rendered]) -> None:
    """Protects: a black shot is found and the policy's black-frames rule decides."""
    # Given a rendered run whose first clip is replaced by black picture of the same length
    plan, refs, _, run_dir = run_copy("lighthouse.json")
    black = ["-f", "lavfi", "-t", "4", "-i", "color=c=black:s=320x180:r=24"]
    _replace_clip(
        run_dir, refs.shots["s1"].final_video_clip, [*black, *_silence(4), *VIDEO_CODEC_ARGS]
    )
    # When QA runs
    report, metadata = _judge(plan, refs, run_dir)
    # Then it finds black frames in that shot only
    assert _findings(report) == {"s1": ["black_frames"]}
    assert report.per_shot[0].black_ratio == pytest.approx(1.0, abs=0.05)
    # And decides what the policy says for black frames
    rule = load_policy(None).decide(["black_frames"])
    assert (
        (report.decision, report.rule)
        == (rule.decision, rule.name)
        == ("regenerate", "black-frames")
    )
    assert metadata["regenerate_stages"] == report.regenerate_stages == rule.stages
    assert metadata["issues_found"] == report.issues_found == 1


@pytest.mark.parametrize(
    ("damage", "findings", "rule", "stages"),
    [
        ("silenced", ["no_dialogue_audio"], "silent-dialogue", ["tts", "lipsync", "assemble"]),
        (
            "stream removed",
            ["missing_stream", "no_dialogue_audio"],
            "broken-media",
            ["videos", "lipsync", "assemble"],
        ),
    ],
)
def test_qa_finds_dialogue_without_audio(
    run_copy: Callable[[str], Rendered],
    damage: str,
    findings: list[str],
    rule: str,
    stages: list[str],
) -> None:
    """Protects: a dialogue shot whose speech is gone is found and regenerated per policy."""
    # Given a rendered run whose dialogue shot's audio is silenced or removed
    plan, refs, _, run_dir = run_copy("lighthouse.json")
    relative = refs.shots["s2"].final_video_clip
    original = run_dir / str(relative)
    kept = original.with_name("kept.mp4")
    shutil.copy(original, kept)
    if damage == "silenced":
        args = ["-i", str(kept), *_silence(5), "-map", "0:v", "-map", "1:a", "-c:v", "copy"]
    else:
        args = ["-i", str(kept), "-map", "0:v", "-c:v", "copy", "-an"]
    _replace_clip(run_dir, relative, args)
    # When QA runs
    report, metadata = _judge(plan, refs, run_dir)
    # Then it finds the missing dialogue audio in that shot only
    assert _findings(report) == {"s2": findings}
    # And the policy's first matching rule decides
    assert (report.decision, report.rule) == ("regenerate", rule)
    assert metadata["regenerate_stages"] == stages


def test_qa_finds_a_clip_of_the_wrong_length(run_copy: Callable[[str], Rendered]) -> None:
    """Protects: a too-short clip is found, and so is the movie that no longer adds up."""
    # Given a rendered run whose 3 s shot is cut to 1.5 s after the movie was assembled
    plan, refs, _, run_dir = run_copy("lighthouse.json")
    relative = refs.shots["s3"].final_video_clip
    kept = (run_dir / str(relative)).with_name("kept.mp4")
    shutil.copy(run_dir / str(relative), kept)
    _replace_clip(run_dir, relative, ["-i", str(kept), "-t", "1.5", *VIDEO_CODEC_ARGS])
    # When QA runs
    report, _ = _judge(plan, refs, run_dir)
    # Then the shot's length and the movie's length are both findings
    assert _findings(report) == {"s3": ["duration_mismatch"], "movie": ["movie_duration_mismatch"]}
    assert report.per_shot[2].duration_sec == pytest.approx(1.5, abs=TOLERANCE_SEC)
    # And the first matching rule of the policy decides
    assert (report.decision, report.rule) == ("regenerate", "wrong-duration")
    assert report.regenerate_stages == ["videos", "lipsync", "assemble"]


def test_qa_follows_a_custom_policy(
    run_copy: Callable[[str], Rendered], qa_policy_file: Callable[[str], None]
) -> None:
    """Protects: SPARKLE_QA_POLICY replaces the default rules and thresholds."""
    # Given a policy that escalates black frames, and a run with a black clip
    qa_policy_file(
        "rules:\n"
        "  - {name: no-black, if_any: [black_frames], decision: escalate}\n"
        "  - {name: ok, decision: approve}\n"
    )
    plan, refs, _, run_dir = run_copy("rooftop.json")
    black = ["-f", "lavfi", "-t", "8", "-i", "color=c=black:s=320x180:r=24"]
    _replace_clip(
        run_dir, refs.shots["shot_001"].final_video_clip, [*black, *_silence(8), *VIDEO_CODEC_ARGS]
    )
    # When QA runs (the black clip is also silent, so dialogue is missing too)
    report, metadata = _judge(plan, refs, run_dir)
    # Then the custom policy's first matching rule decides
    assert (report.decision, report.rule) == ("escalate", "no-black")
    assert metadata["policy"].endswith("policy.yaml")


def test_qa_with_an_invalid_policy_fails_naming_the_field(
    small_runs: dict[str, Rendered], qa_policy_file: Callable[[str], None]
) -> None:
    """Protects: a broken policy stops QA with a permanent error naming file and field."""
    # Given a policy whose second rule has a misspelt decision
    qa_policy_file(
        "rules:\n"
        "  - {name: a, if_any: [black_frames], decision: escalate}\n"
        "  - {name: b, decision: aprove}\n"
    )
    plan, refs, _, run_dir = small_runs["rooftop.json"]
    # When QA runs, then it fails at once with the field in the message
    with pytest.raises(
        PermanentStageError, match=r"policy\.yaml.*\n.*rules\[1\]\.decision: must be one of"
    ):
        qa_stage(plan, refs, run_dir)


# --- contract details ------------------------------------------------------------------


def test_rerunning_a_stage_overwrites_and_leaves_no_temp_files(
    run_copy: Callable[[str], Rendered],
) -> None:
    """Protects: stages are idempotent and write through temp files that never linger."""
    # Given a rendered run
    plan, refs, metadata, run_dir = run_copy("lighthouse.json")
    # When the videos and lipsync stages run again
    refs2, _ = videos_stage(plan, refs, run_dir)
    refs3, again = lipsync_stage(plan, refs2, run_dir)
    # Then they produce the same references and durations
    assert refs3 == refs
    assert again["durations_sec"] == metadata["lipsync"]["durations_sec"]
    # And no temp file is left anywhere
    assert [p for p in run_dir.rglob(".*") if p.is_file()] == []


def test_missing_prerequisite_is_permanent_and_names_the_file(tmp_path: Path) -> None:
    """Protects: a stage whose input file is gone fails permanently, naming that file."""
    # Given keyframes drawn, then one deleted
    plan = load_plan("rooftop.json", resolution=SMALL)
    refs, _ = images_stage(plan, AssetRefs(), tmp_path)
    (tmp_path / str(refs.shots["shot_001"].end_frame)).unlink()
    # When the videos stage runs, then it fails naming the missing file
    with pytest.raises(PermanentStageError, match=r"shot_001_end\.png does not exist"):
        videos_stage(plan, refs, tmp_path)
    # And with no refs at all it says which stage output is missing
    with pytest.raises(PermanentStageError, match="no start keyframe of shot shot_001"):
        videos_stage(plan, AssetRefs(), tmp_path)


def test_ffmpeg_failure_carries_command_and_stderr(tmp_path: Path) -> None:
    """Protects: an ffmpeg failure is permanent and quotes the command and its stderr."""
    # Given a file that is not media
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("not a video", encoding="utf-8")
    # When ffmpeg is asked to transcode it
    with pytest.raises(FFmpegError) as caught:
        run_ffmpeg(["-i", str(bogus), str(tmp_path / "out.mp4")], doing="testing")
    # Then the error carries the command and the end of stderr
    assert str(bogus) in caught.value.command
    assert "Invalid data" in caught.value.stderr_tail
    assert "command:" in str(caught.value) and "while testing" in str(caught.value)
    # And analysing it reports a decode failure instead of raising
    assert analyze(bogus).decodes is False


@pytest.mark.parametrize(
    ("prompt", "move"),
    [
        ("slow push in", CameraMove.PUSH_IN),
        ("A slow dolly from wide to close", CameraMove.PUSH_IN),
        ("Zoom in on the lamp", CameraMove.PUSH_IN),
        ("zoom out to reveal the bay", CameraMove.ZOOM_OUT),
        ("pull back", CameraMove.ZOOM_OUT),
        ("dolly out", CameraMove.ZOOM_OUT),
        ("Pan Left", CameraMove.PAN_LEFT),
        ("pan right", CameraMove.PAN_RIGHT),
        ("tilt up to the sky", CameraMove.TILT_UP),
        ("tilt down", CameraMove.TILT_DOWN),
        ("static", CameraMove.STATIC),
        ("handheld wobble", CameraMove.CROSSFADE),
        (None, CameraMove.CROSSFADE),
    ],
)
def test_motion_prompt_maps_to_camera_move(prompt: str | None, move: CameraMove) -> None:
    """Protects: the documented motion_prompt -> camera move mapping."""
    # Given a motion prompt, then it selects the documented move
    assert camera_move(prompt) is move


def test_probe_parses_ffmpeg_stream_lines() -> None:
    """Protects: probing reads codec, size, rate and channels from ffmpeg's summary."""
    # Given stderr of `ffmpeg -i` for an MP4 and a WAV
    stderr = (
        "  Duration: 00:01:02.50, start: 0.000000, bitrate: 19 kb/s\n"
        "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), "
        "yuv420p(tv, bt709, progressive), 1280x720 [SAR 1:1 DAR 16:9], 5 kb/s, "
        "23.98 fps, 23.98 tbr, 24k tbn (default)\n"
        "  Stream #0:1: Audio: pcm_s16le ([1][0][0][0] / 0x0001), 22050 Hz, 1 channels, s16\n"
    )
    # When I parse it
    info = parse_probe(Path("x.mp4"), stderr)
    # Then every field is read
    assert info.duration_sec == pytest.approx(62.5)
    assert info.video == VideoStream("h264", 1280, 720, 23.98, "yuv420p", "High")
    assert info.audio == AudioStream("pcm_s16le", 22050, 1)


def _mean_volume_db(path: Path, start: float, length: float) -> float:
    """Mean audio level of ``path`` from ``start`` for ``length`` seconds (dBFS)."""
    import re

    from sparkle.adapters.ffmpeg import run_ffmpeg

    _, out = run_ffmpeg(
        ["-ss", str(start), "-t", str(length), "-i", str(path), "-vn", "-af", "volumedetect",
         "-f", "null", "-"],
        doing=f"measuring {path.name}",
    )
    match = re.search(r"mean_volume: (-?[\d.]+) dB", out)
    assert match, out[-500:]
    return float(match.group(1))


def test_both_voices_are_heard_in_the_lighthouse_movie(default_lighthouse: Rendered) -> None:
    """Protects the must-show: in final/movie.mp4 both of s2's lines are audible, each in
    its own voice, above the quiet ambience of s1 and s3."""
    _, _, metadata, run_dir = default_lighthouse
    movie = run_dir / "final" / "movie.mp4"
    # s2 runs from 4 s to 9 s in the movie; Mira speaks at +0.3 s, Tom at +2.4 s
    assert metadata["tts"]["voices"] == {"girl": "en-us+f3", "keeper": "en+m3"}
    mira = _mean_volume_db(movie, 4.0 + 0.4, 1.5)
    tom = _mean_volume_db(movie, 4.0 + 2.6, 2.0)
    bed = _mean_volume_db(movie, 0.5, 3.0)
    assert mira > -35 and tom > -35, (mira, tom)
    assert -60 < bed < min(mira, tom) - 10


def test_a_reroll_of_one_shot_keeps_the_others_media_and_qa_still_passes(
    run_copy: Callable[[str], Rendered],
) -> None:
    """Protects: a re-roll narrowed to one shot (sparkle.takes) through the real images,
    videos and lipsync adapters changes only that shot's files, keeps the other shots'
    lipsync timings (an extended shot stays extended), and the whole movie still passes QA."""
    from sparkle.adapters.assemble import assemble_stage
    from sparkle.takes import run_narrowed

    # Given a rendered run whose shot 'ask' was extended to fit its dialogue
    plan, refs, _, run_dir = run_copy("long_line.json")
    timing = (run_dir / "lipsync" / "timing.json").read_text()
    before = {p.name: p.read_bytes() for p in (run_dir / "lipsync").glob("*.mp4")}
    # When shot 'after' is re-rolled from images on, each stage narrowed to it
    for stage, adapter in (("images", images_stage), ("videos", videos_stage),
                           ("lipsync", lipsync_stage)):
        refs, metadata = run_narrowed(adapter, stage, plan, refs, run_dir, ["after"])
        assert metadata["shots"] == ["after"]
    refs, _ = assemble_stage(plan, refs, run_dir)
    report, _ = _judge(plan, refs, run_dir)
    # Then only 'after' changed, the timings of the others are kept, and QA approves
    after = {p.name: p.read_bytes() for p in (run_dir / "lipsync").glob("*.mp4")}
    assert after["ask.mp4"] == before["ask.mp4"] and after["answer.mp4"] == before["answer.mp4"]
    assert after["after.mp4"] != before["after.mp4"]
    kept, now = json.loads(timing)["shots"], json.loads(
        (run_dir / "lipsync" / "timing.json").read_text())["shots"]
    assert now["ask"] == kept["ask"] and now["answer"] == kept["answer"]
    assert (report.decision, report.issues_found) == ("approve", 0), report.summary

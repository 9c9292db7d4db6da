"""MP4 export and the animate/render commands: streams read back, motion in the right places,
atomic output, and one clear line for each bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from animator import Animator
from animator.audio import load_audio
from avatar.builder import load_avatar
from avatar.errors import TalkingAvatarError
from avatar.paths import asset_path
from avatar.render import render
from avatar.sheet import head_camera
from viewer.cli import main as cli_main
from viewer.export import export_mp4, read_video_info

SAMPLE = asset_path("speech", "sample.wav")


@pytest.fixture(scope="module")
def anim(head) -> Animator:
    return Animator.load(head=head)


@pytest.fixture(scope="module")
def avatar(head):
    return load_avatar(None, head)


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory):
    audio = load_audio(SAMPLE)
    path = tmp_path_factory.mktemp("speech") / "short.wav"
    sf.write(path, audio.samples[: int(2.5 * 16000)], 16000)
    return path


def test_exported_clip_has_video_and_aac_audio(anim, avatar, head, short_speech, tmp_path) -> None:
    perf = anim.animate(short_speech, {"happy": 0.5}, fps=24)
    out = export_mp4(
        perf, avatar, tmp_path / "clip.mp4", head=head, width=63, height=48, progress=False
    )
    info = read_video_info(out)
    assert info["audio"] and info["audio_codec"] == "aac" and info["video_codec"] == "h264"
    assert (info["width"], info["height"]) == (64, 48)  # odd width padded to even
    assert info["frames"] == perf.num_frames == 60
    assert abs(info["duration"] - 2.5) < 1 / 24 + 0.03  # AAC priming adds a few ms at most
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_frames_follow_the_speech_and_the_emotion(anim, avatar, head) -> None:
    timings = json.loads(SAMPLE.with_suffix(".json").read_text())["phonemes"]
    perf = anim.animate(SAMPLE, fps=30, idle=False)

    def centre(sym: str) -> int:
        return next(
            int(round((p["start"] + p["end"]) / 2 * 30)) for p in timings if p["phoneme"] == sym
        )

    bilabial, vowel = centre("m"), centre("aI")
    verts = head(perf.params)
    cam = head_camera("front", 128, 128)
    shot = lambda v: render(avatar.pose(v), cam, backend="cpu").color  # noqa: E731
    diff = (shot(verts[bilabial]) - shot(verts[vowel])).abs().sum(-1)  # [H, W]
    mouth, upper = diff[70:100, 40:88].mean(), diff[20:55, 30:98].mean()
    assert mouth > 0.02 and mouth > 5 * upper
    happy = anim.animate(SAMPLE, {"surprised": 1.0}, fps=30, idle=False)
    emotional = head(happy.params.slice(bilabial, bilabial + 1))[0]
    diff = (shot(emotional) - shot(verts[bilabial])).abs().sum(-1)
    assert diff[20:55, 30:98].mean() > 0.01  # the brows and eyes change


def test_interrupted_export_leaves_nothing(anim, avatar, head, short_speech, tmp_path) -> None:
    perf = anim.animate(short_speech, fps=10)

    def stop(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_mp4(
            perf,
            avatar,
            tmp_path / "x.mp4",
            head=head,
            width=32,
            height=32,
            progress=False,
            on_progress=stop,
        )
    assert os.listdir(tmp_path) == []


def test_unwritable_and_bad_outputs(anim, avatar, head, short_speech, tmp_path) -> None:
    perf = anim.animate(short_speech, fps=10)
    with pytest.raises(TalkingAvatarError, match="does not exist; create it"):
        export_mp4(perf, avatar, tmp_path / "missing" / "x.mp4", head=head, progress=False)
    with pytest.raises(TalkingAvatarError, match="must be an .mp4"):
        export_mp4(perf, avatar, tmp_path / "x.avi", head=head, progress=False)
    with pytest.raises(TalkingAvatarError, match="unknown camera 'top'"):
        export_mp4(perf, avatar, tmp_path / "x.mp4", head=head, camera="top", progress=False)


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = cli_main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--emotion", "joyful=0.5"], "unknown emotion 'joyful'; choose from neutral, happy, sad"),
        (["--emotion", "happy=1.2"], "intensity of 'happy' is 1.2; it must be in [0, 1]"),
        (["--fps", "0"], "fps 0.0 is out of range"),
    ],
)
def test_cli_bad_emotion_input(short_speech, tmp_path, capsys, extra, match) -> None:
    code, _, err = run_cli(
        ["animate", "--audio", str(short_speech), *extra, "--out", str(tmp_path / "p.npz")], capsys
    )
    assert code == 2 and match in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "p.npz").exists()


def test_cli_track_out_of_order(short_speech, tmp_path, capsys) -> None:
    track = tmp_path / "t.json"
    track.write_text(json.dumps([{"t": 2, "mix": {"happy": 1}}, {"t": 1, "mix": {}}]))
    code, _, err = run_cli(
        [
            "animate",
            "--audio",
            str(short_speech),
            "--track",
            str(track),
            "--out",
            str(tmp_path / "p.npz"),
        ],
        capsys,
    )
    assert code == 2 and 'key 1: field "t" = 1.0 is not after key 0' in err


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "does not exist"), (b"", "is empty"), (b"not audio" * 50, "cannot read audio file")],
)
def test_cli_bad_audio(tmp_path, capsys, content, match) -> None:
    audio = tmp_path / "speech.wav"
    if content is not None:
        audio.write_bytes(content)
    code, _, err = run_cli(
        ["render", "--audio", str(audio), "--out", str(tmp_path / "o.mp4")], capsys
    )
    assert code == 2 and match in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


def test_cli_silent_audio_renders_a_closed_neutral_face(tmp_path, capsys, head) -> None:
    audio = tmp_path / "quiet.wav"
    sf.write(audio, np.zeros(16000, dtype=np.float32), 16000)
    code, out, _ = run_cli(
        [
            "animate",
            "--audio",
            str(audio),
            "--no-idle",
            "--out",
            str(tmp_path / "p.npz"),
            "--vertices",
        ],
        capsys,
    )
    assert code == 0 and "no speech found" in out
    data = np.load(tmp_path / "p.npz")
    assert data["vertices"].shape == (30, head.num_vertices, 3)
    assert np.abs(data["vertices"] - head.v_template.numpy()).max() < 1e-6
    assert float(data["audio_duration"]) == 1.0 and data["jaw_pose"].shape == (30, 3)


def test_cli_render_from_saved_performance(short_speech, tmp_path, capsys) -> None:
    perf = tmp_path / "p.npz"
    assert (
        run_cli(
            ["animate", "--audio", str(short_speech), "--emotion", "sad=0.7", "--out", str(perf)],
            capsys,
        )[0]
        == 0
    )
    code, out, _ = run_cli(
        [
            "render",
            "--audio",
            str(short_speech),
            "--performance",
            str(perf),
            "--size",
            "32",
            "--camera",
            "orbit",
            "--out",
            str(tmp_path / "o.mp4"),
        ],
        capsys,
    )
    assert code == 0 and read_video_info(tmp_path / "o.mp4")["frames"] == 75
    other = tmp_path / "other.wav"
    sf.write(other, np.zeros(8000, dtype=np.float32), 16000)
    code, _, err = run_cli(
        [
            "render",
            "--audio",
            str(other),
            "--performance",
            str(perf),
            "--out",
            str(tmp_path / "p.mp4"),
        ],
        capsys,
    )
    assert code == 2 and "pass the same --audio" in err

"""MP4 export and the animate/render commands: streams read back, motion in the right places,
atomic output, and one clear line for each bad input."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from animator import Animator
from animator.audio import load_audio
from avatar.avatars import load_avatar
from avatar.camera import head_camera
from avatar.errors import TalkingAvatarError
from avatar.paths import asset_path
from avatar.render import render
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


def test_mp4_carries_the_users_own_audio(anim, avatar, head, tmp_path) -> None:
    """The sound is re-encoded from the user's file at its own rate, not the models' 16 kHz."""
    audio = load_audio(SAMPLE)
    t = np.arange(int(1.5 * 44100)) / 44100
    left = np.interp(t, np.arange(audio.samples.size) / 16000, audio.samples)
    right = 0.3 * np.sin(2 * np.pi * 9000 * t)  # above 8 kHz: lost if resampled to 16 kHz
    source = tmp_path / "stereo.flac"
    sf.write(source, np.stack([left, right], axis=1), 44100)
    perf = anim.animate(source, fps=10, idle=False)
    out = export_mp4(
        perf, avatar, tmp_path / "o.mp4", head=head, width=32, height=32, progress=False
    )
    info = read_video_info(out)
    assert info["audio_codec"] == "aac" and info["audio_rate"] == 44100
    assert info["audio_channels"] == 2 and info["audio_kbps"] >= 128
    # the 9 kHz tone survives in the file's audio
    import subprocess

    import imageio_ffmpeg

    raw = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(out), "-f", "f32le",
         "-ac", "2", "-ar", "44100", "-"], capture_output=True, check=True,
    ).stdout  # fmt: skip
    decoded = np.frombuffer(raw, np.float32).reshape(-1, 2)[:, 1]
    spectrum = np.abs(np.fft.rfft(decoded))
    freqs = np.fft.rfftfreq(decoded.size, 1 / 44100)
    assert freqs[np.argmax(spectrum)] == pytest.approx(9000, abs=20)


def test_a_16khz_mono_file_is_kept_at_16khz(anim, avatar, head, short_speech, tmp_path) -> None:
    perf = anim.animate(short_speech, fps=10, idle=False)
    out = export_mp4(
        perf, avatar, tmp_path / "o.mp4", head=head, width=32, height=32, progress=False
    )
    info = read_video_info(out)
    assert (info["audio_rate"], info["audio_channels"]) == (16000, 1)


def test_unwritable_and_bad_outputs(anim, avatar, head, short_speech, tmp_path) -> None:
    perf = anim.animate(short_speech, fps=10)
    out = export_mp4(
        perf, avatar, tmp_path / "new" / "x.mp4", head=head, width=32, height=32, progress=False
    )
    assert out.is_file()  # a missing folder is created
    (tmp_path / "file").write_text("x")
    with pytest.raises(TalkingAvatarError, match="file is a file, not a folder"):
        export_mp4(perf, avatar, tmp_path / "file" / "x.mp4", head=head, progress=False)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(TalkingAvatarError, match="is a folder; give a file name"):
        export_mp4(perf, avatar, tmp_path / "dir.mp4", head=head, progress=False)
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


@pytest.mark.parametrize("command", ["animate", "render"])
def test_cli_outputs_that_cannot_be_written(short_speech, tmp_path, capsys, command) -> None:
    """Checked before the slow work: one line, exit 2, and nothing left on disk."""
    (tmp_path / "plain").write_text("a file")
    (tmp_path / "folder").mkdir()
    suffix = ".npz" if command == "animate" else ".mp4"
    for out, match in (
        (tmp_path / "plain" / f"x{suffix}", "plain is a file, not a folder"),
        (tmp_path / "folder", "is a folder; give a file name"),
    ):
        code, _, err = run_cli([command, "--audio", str(short_speech), "--out", str(out)], capsys)
        assert code == 2 and match in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "plain"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_cli_frames_under_a_file(short_speech, tmp_path, capsys) -> None:
    (tmp_path / "plain").write_text("a file")
    code, _, err = run_cli(
        ["render", "--audio", str(short_speech), "--frames", str(tmp_path / "plain" / "f"),
         "--out", str(tmp_path / "o.mp4")], capsys,
    )  # fmt: skip
    assert code == 2 and "cannot create folder" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_cli_deeply_nested_track(short_speech, tmp_path, capsys) -> None:
    track = tmp_path / "t.json"
    track.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run_cli(
        ["animate", "--audio", str(short_speech), "--track", str(track), "--out",
         str(tmp_path / "p.npz")], capsys,
    )  # fmt: skip
    assert code == 2 and "nested too deeply" in err and err.count("\n") == 1


def test_outputs_follow_the_umask_and_leave_no_temporary(short_speech, tmp_path, capsys) -> None:
    old = os.umask(0o027)
    try:
        out = tmp_path / "p.npz"
        assert run_cli(["animate", "--audio", str(short_speech), "--out", str(out)], capsys)[0] == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]


def test_vertices_are_streamed_into_the_npz(anim, head, short_speech, tmp_path) -> None:
    perf = anim.animate(short_speech, {"happy": 0.5}, fps=30)
    path = perf.save(tmp_path / "p.npz", vertices=True, chunk=7)  # chunks that do not divide T
    with np.load(path) as data:
        vertices = data["vertices"]
        assert vertices.shape == (75, head.num_vertices, 3) and vertices.dtype == np.float32
        np.testing.assert_allclose(vertices, head(perf.params).numpy(), atol=1e-6)
        assert data["expr"].shape[0] == 75 and float(data["fps"]) == 30.0


def test_failed_writes_leave_the_old_file_and_no_temporary(tmp_path, monkeypatch) -> None:
    from avatar.atomic import atomic_path

    target = tmp_path / "a.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.npz"]


def test_frames_are_posed_where_the_backend_draws() -> None:
    from avatar.render import render_device

    assert render_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert render_device("auto") == torch.device("cpu")
    with pytest.raises(TalkingAvatarError, match="unknown render backend 'vulkan'"):
        render_device("vulkan")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for gsplat")
def test_gsplat_export_poses_on_the_gpu(head, avatar, tmp_path, monkeypatch) -> None:
    """With gsplat, FLAME and the binding run on the GPU: pose() sees CUDA vertices."""
    from animator import Animator

    seen = []
    original = type(avatar).pose

    def spy(self, vertices):
        seen.append(vertices.device.type)
        return original(self, vertices)

    monkeypatch.setattr(type(avatar), "pose", spy)
    perf = Animator.load(head=head).animate(asset_path("speech", "sample.wav"), idle=False)
    perf = replace(perf, params=perf.params.slice(0, 3))
    export_mp4(perf, avatar, tmp_path / "g.mp4", head=head, width=64, height=64,
               backend="gsplat", progress=False)  # fmt: skip
    assert seen == ["cuda"] * 3
    assert head.v_template.device.type == "cpu"  # the caller's head was not moved


def test_a_performance_carries_its_head(anim, head, avatar, short_speech, tmp_path) -> None:
    """A performance knows the head it drives: from the animator, through save and load, and
    into export, which needs no separate head (the same frames as when one is passed)."""
    from animator.animator import load_performance

    perf = anim.animate(short_speech, {"sad": 1.0}, fps=10, idle=False)
    assert perf.head is anim.head
    loaded = load_performance(perf.save(tmp_path / "p.npz"), short_speech)
    assert loaded.head.num_vertices == head.num_vertices
    torch.testing.assert_close(loaded.head(loaded.params), head(perf.params), atol=1e-6, rtol=0)
    own = export_mp4(
        loaded, avatar, tmp_path / "own.mp4", width=32, height=32, progress=False,
        frames_dir=tmp_path / "own",
    )  # fmt: skip
    given = export_mp4(
        loaded, avatar, tmp_path / "given.mp4", head=head, width=32, height=32, progress=False,
        frames_dir=tmp_path / "given",
    )  # fmt: skip
    assert own.exists() and given.exists()
    own_frames = sorted((tmp_path / "own").iterdir())
    given_frames = sorted((tmp_path / "given").iterdir())
    assert len(own_frames) == loaded.num_frames
    for a, b in zip(own_frames, given_frames, strict=True):
        assert a.read_bytes() == b.read_bytes()
    perf.head = None
    with pytest.raises(TalkingAvatarError, match="needs the performance's head"):
        export_mp4(perf, avatar, tmp_path / "none.mp4", width=32, height=32, progress=False)

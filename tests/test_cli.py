"""The console script end to end: demo, train (with --resume), and its defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from viewer.cli import _build_parser, main
from viewer.export import read_video_info


def test_viewer_binds_to_loopback_by_default() -> None:
    from viewer.app import ViewerConfig

    args = _build_parser().parse_args(["view"])
    assert args.host == "127.0.0.1" and ViewerConfig().host == "127.0.0.1"


def test_demo_without_the_viewer(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["demo", "--no-view", "--out", str(out), "--size", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "avatar_sheet.png",
        "demo.mp4",
        "head_preview.png",
    ]
    info = read_video_info(out / "demo.mp4")
    assert info["audio_codec"] == "aac" and (info["width"], info["height"]) == (64, 64)
    assert info["frames"] > 100  # the whole sample speech at 30 fps
    assert "wrote" in capsys.readouterr().out


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory, head) -> tuple[Path, Path]:
    from animator.data.expressions import generate_expression_set
    from animator.data.talking import generate_talking_set

    root = tmp_path_factory.mktemp("sets")
    generate_talking_set(root / "talking", small=True, head=head, progress=False, log=None)
    generate_expression_set(root / "expr", small=True, head=head, progress=False, log=None)
    return root / "talking", root / "expr"


def test_train_end_to_end_and_resume(small_sets, tmp_path: Path, capsys) -> None:
    from animator import Animator

    talking, expr = small_sets
    base = ["train", "--talking", str(talking), "--expressions", str(expr), "--threads", "1",
            "--stage1-steps", "6", "--stage2-steps", "6", "--batch", "4"]  # fmt: skip
    first, second = tmp_path / "first", tmp_path / "second"
    assert main([*base, "--out", str(first)]) == 0
    assert main([*base, "--out", str(second), "--resume", str(first), "--sparsity", "0"]) == 0
    assert "resuming from" in capsys.readouterr().out
    a = load_file(str(first / "weights.safetensors"))
    b = load_file(str(second / "weights.safetensors"))
    speech = [k for k in a if k.startswith("speech.")]
    fusion = [k for k in a if k.startswith("fusion.")]
    assert speech and fusion
    assert all((a[k] == b[k]).all() for k in speech)  # stage 1 reused as it was
    assert any((a[k] != b[k]).any() for k in fusion)  # stage 2 trained again (no sparsity)
    assert first.stat().st_mode & 0o777 == 0o777 & ~_umask()  # the umask, not 0700
    anim = Animator.load(second)
    perf = anim.animate(_some_audio(talking), fps=30)
    assert perf.num_frames > 10 and perf.params.expr.isfinite().all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]  # nothing else left


def test_resume_keeps_the_speech_models_basis(small_sets, tmp_path: Path, head) -> None:
    """The resumed speech model speaks coefficients of its own basis: resuming on data that
    differ (here another expression set, which a refit would rotate the basis by) keeps it."""
    from animator.data.expressions import generate_expression_set

    talking, expr = small_sets
    other = tmp_path / "other_expr"
    generate_expression_set(other, small=True, head=head, seed=5, progress=False, log=None)
    base = ["train", "--talking", str(talking), "--threads", "1", "--stage1-steps", "4",
            "--stage2-steps", "4", "--batch", "4"]  # fmt: skip
    first, second = tmp_path / "first", tmp_path / "second"
    assert main([*base, "--expressions", str(expr), "--out", str(first)]) == 0
    assert (
        main([*base, "--expressions", str(other), "--out", str(second), "--resume", str(first)])
        == 0
    )
    a = load_file(str(first / "weights.safetensors"))["basis.basis"]
    b = load_file(str(second / "weights.safetensors"))["basis.basis"]
    assert (a == b).all()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _some_audio(talking: Path):
    from animator.data.vocaset import load_vocaset

    sample = next(iter(load_vocaset(talking)))
    from animator.audio import load_audio

    return load_audio(sample.audio, sample.sample_rate)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stage1-steps", "0"], "--stage1-steps must be at least 1, got 0"),
        (["--stage2-steps", "-3"], "--stage2-steps must be at least 1, got -3"),
        (["--batch", "1"], "--batch must be at least 2, got 1"),
        (["--augment", "-1"], "--augment must be at least 0, got -1"),
        (["--fusion-renditions", "-2"], "--fusion-renditions must be at least 0, got -2"),
        (["--speech-blendshapes", "0"], "--speech-blendshapes must be at least 1, got 0"),
        (["--sparsity", "-0.1"], "--sparsity must be a weight >= 0, got -0.1"),
        (["--phone-weight", "nan"], "--phone-weight must be a weight >= 0, got nan"),
    ],
)
def test_train_refuses_settings_it_cannot_run_with(flags, message, tmp_path, capsys) -> None:
    """Checked before any data is read: one line naming the flag, exit 2, nothing written."""
    out = tmp_path / "ckpt"
    code = main(
        ["train", "--talking", str(tmp_path / "none"), "--expressions", str(tmp_path / "none"),
         "--out", str(out), *flags]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()

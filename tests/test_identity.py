"""Imported avatars keep who they are: GaussianAvatars' shape and static offset drive the head."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from animator import Animator
from animator.audio import SAMPLE_RATE, Audio, load_audio
from avatar.avatars import DEFAULT_AVATAR, load_avatar
from avatar.binding import triangle_frames
from avatar.errors import TalkingAvatarError
from avatar.flame.identity import Identity
from avatar.paths import asset_path
from avatar.ply import read_avatar_ply, write_ply
from viewer.cli import main
from viewer.export import export_mp4

POSE_KEYS = ("rotation", "neck_pose", "jaw_pose", "translation")


def ga_folder(root: Path, head, *, shape=None, static_offset=None) -> Path:
    """A GaussianAvatars output: the default avatar's Gaussians, bound to the head's triangles,
    and a flame_param.npz holding an identity (FLAME's 300 shape slots, zero past the head's)."""
    folder = root / "point_cloud" / "iteration_30000"
    write_ply(folder / "point_cloud.ply", read_avatar_ply(DEFAULT_AVATAR, faces=head.faces))
    rng = np.random.default_rng(0)
    params = {
        "shape": np.zeros(300, np.float32) if shape is None else shape,
        "expr": rng.normal(size=(3, 100)).astype(np.float32),
        "eyes_pose": np.zeros((3, 6), np.float32),
        **{k: np.zeros((3, 3), np.float32) for k in POSE_KEYS},
    }
    if static_offset is not None:
        params["static_offset"] = static_offset
    np.savez(folder / "flame_param.npz", **params)
    return root


def an_identity(head) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    shape = np.zeros(300, np.float32)
    shape[: head.num_shape] = rng.normal(0.0, 2.0, head.num_shape)
    offset = rng.normal(0.0, 0.5e-3, (1, head.num_vertices, 3)).astype(np.float32)
    return {"shape": shape, "static_offset": offset}


def test_gaussian_avatars_identity_shapes_the_posed_head(head, tmp_path) -> None:
    ident = an_identity(head)
    avatar = load_avatar(ga_folder(tmp_path, head, **ident), head)
    assert avatar.identity is not None
    np.testing.assert_array_equal(avatar.identity.shape.numpy(), ident["shape"][: head.num_shape])
    np.testing.assert_array_equal(avatar.identity.static_offset.numpy(), ident["static_offset"][0])

    params = head.neutral_params(2)
    params.jaw_pose[1, 0] = 0.2  # a performance: mouth shut, then open
    dressed = avatar.dress(params)
    shaped = head(dressed)  # [2, V, 3]
    template = head(params)
    # the shaped head is the template + shape basis @ betas + static offset (rest frame)
    betas = torch.as_tensor(ident["shape"][: head.num_shape])
    expected = head.v_template + head.dirs[:, :, : head.num_shape] @ betas
    expected = expected + torch.as_tensor(ident["static_offset"][0])
    torch.testing.assert_close(shaped[0], expected, atol=1e-6, rtol=0)
    assert float((shaped[0] - template[0]).norm(dim=-1).max()) > 3e-3  # another person
    # the performance's motion plays on it: the jaw opens this head's mouth
    assert float((shaped[1] - shaped[0]).norm(dim=-1).max()) > 5e-3
    # and the Gaussians follow the shaped triangles (centroid + frame of each parent)
    gaussians = avatar.pose(shaped[0])
    centres, rotations, scales = triangle_frames(shaped[0], head.faces)
    b = avatar.binding
    want = (rotations[b] @ avatar.local_means[:, :, None])[:, :, 0] * scales[b, None] + centres[b]
    torch.testing.assert_close(gaussians.means, want, atol=1e-6, rtol=0)
    assert float((gaussians.means - avatar.pose(template[0]).means).norm(dim=-1).max()) > 3e-3


def test_export_plays_the_performance_on_the_avatars_identity(head, tmp_path) -> None:
    anim = Animator.load(head=head)
    audio = load_audio(asset_path("speech", "sample.wav"))
    perf = anim.animate(Audio(audio.samples[: SAMPLE_RATE // 5]), idle=False)  # 6 frames
    ident = an_identity(head)
    avatar = load_avatar(ga_folder(tmp_path / "ga", head, **ident), head)
    plain = replace(avatar, identity=None)
    frames = {}
    for name, who in (("shaped", avatar), ("plain", plain)):
        out = tmp_path / f"{name}.mp4"
        export_mp4(perf, who, out, head=head, width=96, height=96, backend="cpu",
                   frames_dir=tmp_path / name, progress=False)  # fmt: skip
        frames[name] = sorted((tmp_path / name).glob("*.png"))
    import imageio.v3 as iio

    shaped, plain_img = iio.imread(frames["shaped"][0]), iio.imread(frames["plain"][0])
    assert np.abs(shaped.astype(int) - plain_img.astype(int)).max() > 60  # not the mean head
    from avatar.camera import camera_for_frame
    from avatar.render import render

    # frame 0 of the video is the dressed performance's frame 0, rendered the same way
    cam = camera_for_frame("front", 0, perf.fps, 96, 96)
    want = render(avatar.pose(head(avatar.dress(perf.params.slice(0, 1)))[0]), cam, backend="cpu")
    want = (want.color.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    # (within one level: FLAME batched over 6 frames or 1 rounds differently)
    assert np.abs(shaped.astype(int) - want.astype(int)).max() <= 1


def test_identity_errors_are_one_line(head, tmp_path, capsys) -> None:
    wrong = np.zeros((1, head.num_vertices + 7, 3), np.float32)
    folder = ga_folder(tmp_path / "a", head, static_offset=wrong)
    with pytest.raises(TalkingAvatarError, match="static_offset is .* has 4784 vertices"):
        load_avatar(folder, head)
    wide = np.zeros(300, np.float32)
    wide[250] = 1.0  # a shape component this head does not have
    folder = ga_folder(tmp_path / "b", head, shape=wide)
    with pytest.raises(TalkingAvatarError, match="shape has 300 coefficients"):
        load_avatar(folder, head)
    out = tmp_path / "x.mp4"
    speech = str(asset_path("speech", "sample.wav"))
    assert main(["render", "--audio", speech, "--avatar", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--flame" in err and not out.exists()


def test_apply_keeps_the_motion_and_sets_the_identity(head) -> None:
    ident = Identity(shape=torch.ones(head.num_shape), static_offset=None)
    params = head.neutral_params(3)
    params.expr[:, 0] = 1.0
    out = ident.apply(params)
    assert out.expr is params.expr and out.jaw_pose is params.jaw_pose
    assert torch.equal(out.shape, torch.ones(head.num_shape)) and out.static_offset is None
    assert params.shape.abs().sum() == 0  # the performance itself is untouched

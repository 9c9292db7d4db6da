"""Tests for avatar.ply: 3DGS PLY round trips, malformed files, GaussianAvatars folder import."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from avatar import ply as ply_module
from avatar.binding import GaussianAvatar
from avatar.errors import TalkingAvatarError
from avatar.gaussians import Gaussians
from avatar.ply import load_gaussian_avatars_dir, read_avatar_ply, read_ply, write_ply
from avatar.quaternion import quat_normalize

NUM_FACES = 50


def make_avatar(n: int = 64, sh_degree: int = 3, seed: int = 0) -> GaussianAvatar:
    g = torch.Generator().manual_seed(seed)
    return GaussianAvatar(
        faces=None,
        binding=torch.randint(0, NUM_FACES, (n,), generator=g),
        local_means=torch.randn(n, 3, generator=g),
        local_quats=torch.randn(n, 4, generator=g),
        local_log_scales=torch.randn(n, 3, generator=g) - 3,
        opacity_logits=torch.randn(n, generator=g) * 4,
        sh=torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g),
    )


def make_gaussians(n: int = 64, sh_degree: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(1)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 0.1,
        quats=quat_normalize(torch.randn(n, 4, generator=g)),
        scales=torch.rand(n, 3, generator=g) * 0.01 + 1e-4,
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        sh=torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g),
        normals=quat_normalize(torch.randn(n, 3, generator=g)),
    )


def write_raw(path: Path, columns: dict[str, np.ndarray], text: bool = False) -> None:
    """A PLY with exactly the given vertex properties, written independently of avatar.ply."""
    n = len(next(iter(columns.values())))
    rows = np.empty(n, dtype=[(name, value.dtype.str) for name, value in columns.items()])
    for name, value in columns.items():
        rows[name] = value
    PlyData([PlyElement.describe(rows, "vertex")], text=text).write(str(path))


def raw_columns(path: Path) -> dict[str, np.ndarray]:
    vertex = PlyData.read(str(path))["vertex"]
    return {p.name: np.asarray(vertex[p.name]) for p in vertex.properties}


def assert_avatars_equal(a: GaussianAvatar, b: GaussianAvatar) -> None:
    for name in ("binding", "local_means", "local_quats", "local_log_scales", "opacity_logits"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.sh, b.sh)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_avatar_round_trip_is_bit_exact(tmp_path, sh_degree):
    avatar = make_avatar(sh_degree=sh_degree)
    write_ply(tmp_path / "a.ply", avatar)
    back = read_ply(tmp_path / "a.ply")
    assert isinstance(back, GaussianAvatar) and back.faces is None
    assert back.binding.dtype == torch.int64
    assert_avatars_equal(avatar, back)
    write_ply(tmp_path / "b.ply", back)
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


def test_layout_is_the_3dgs_one_with_binding(tmp_path):
    avatar = make_avatar(sh_degree=3)
    write_ply(tmp_path / "a.ply", avatar)
    header = (tmp_path / "a.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    assert f"element vertex {len(avatar)}" in header
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    assert all(line.startswith("property float ") for line in header.splitlines()[3:])
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(45)]
    expected += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert names == expected + ["binding_0"]
    columns = raw_columns(tmp_path / "a.ply")
    # f_rest is channel-major: the 15 red coefficients, then the green ones, then the blue ones.
    for channel in range(3):
        for k in range(1, 16):
            stored = columns[f"f_rest_{channel * 15 + k - 1}"]
            assert np.array_equal(stored, avatar.sh[:, k, channel].numpy())
    assert np.array_equal(columns["binding_0"], avatar.binding.numpy().astype(np.float32))
    assert np.array_equal(columns["opacity"], avatar.opacity_logits.numpy())
    assert not columns["nx"].any()


def test_world_gaussians_round_trip(tmp_path):
    gaussians = make_gaussians(sh_degree=3)
    write_ply(tmp_path / "g.ply", gaussians)
    back = read_ply(tmp_path / "g.ply")
    assert isinstance(back, Gaussians)
    assert "binding_0" not in raw_columns(tmp_path / "g.ply")
    assert torch.equal(back.means, gaussians.means) and torch.equal(back.sh, gaussians.sh)
    assert torch.equal(back.normals, gaussians.normals)
    for name in ("quats", "scales", "opacities"):
        assert torch.allclose(getattr(back, name), getattr(gaussians, name), rtol=1e-6), name
    # A second trip keeps positions and colours exactly; opacities in [0, 1] as float32 cannot
    # hold every logit, so those are close, not equal (an avatar keeps logits: exact).
    write_ply(tmp_path / "h.ply", back)
    first, second = raw_columns(tmp_path / "g.ply"), raw_columns(tmp_path / "h.ply")
    for name in ("x", "nz", "f_dc_0", "f_rest_44", "rot_3"):
        assert np.array_equal(first[name], second[name]), name
    for name in ("scale_0", "opacity"):
        assert np.allclose(first[name], second[name], rtol=0, atol=1e-5), name


def test_reads_files_written_the_gaussian_avatars_way(tmp_path):
    # GaussianAvatars' save_ply: every property 'f4', binding as a float; some writers are ASCII.
    avatar = make_avatar(sh_degree=1)
    columns = {"x": avatar.local_means[:, 0], "y": avatar.local_means[:, 1]}
    columns |= {"z": avatar.local_means[:, 2], "nx": torch.zeros(len(avatar))}
    columns |= {"ny": torch.zeros(len(avatar)), "nz": torch.zeros(len(avatar))}
    columns |= {f"f_dc_{c}": avatar.sh[:, 0, c] for c in range(3)}
    rest = avatar.sh[:, 1:].transpose(1, 2).reshape(len(avatar), -1)
    columns |= {f"f_rest_{i}": rest[:, i] for i in range(9)}
    columns |= {"opacity": avatar.opacity_logits}
    columns |= {f"scale_{i}": avatar.local_log_scales[:, i] for i in range(3)}
    columns |= {f"rot_{i}": avatar.local_quats[:, i] for i in range(4)}
    columns |= {"binding_0": avatar.binding.float()}
    for text in (False, True):
        path = tmp_path / f"ga_{text}.ply"
        write_raw(path, {k: v.numpy().astype("<f4") for k, v in columns.items()}, text=text)
        back = read_avatar_ply(path, num_faces=NUM_FACES)
        assert torch.equal(back.binding, avatar.binding)
        assert torch.allclose(back.local_means, avatar.local_means)
        assert torch.allclose(back.sh, avatar.sh)
    # An integer binding column (other exporters) reads the same.
    columns["binding_0"] = avatar.binding.int()
    write_raw(tmp_path / "int.ply", {k: v.numpy() for k, v in columns.items()})
    assert torch.equal(read_avatar_ply(tmp_path / "int.ply").binding, avatar.binding)


def test_faces_are_attached_and_checked(tmp_path):
    write_ply(tmp_path / "a.ply", make_avatar())
    faces = torch.randint(0, 30, (NUM_FACES, 3))
    avatar = read_ply(tmp_path / "a.ply", faces=faces)
    assert torch.equal(avatar.faces, faces)
    with pytest.raises(TalkingAvatarError, match="head model"):
        read_ply(tmp_path / "a.ply", faces=faces[:10])


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.ply"
    write_ply(path, make_avatar(seed=1))
    before = path.read_bytes()
    bad = make_gaussians()
    bad.means[3, 1] = float("nan")
    with pytest.raises(TalkingAvatarError, match="NaN"):
        write_ply(path, bad)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ply_module.PlyData, "write", fail)
    with pytest.raises(TalkingAvatarError, match=r"cannot write PLY file .*a\.ply \(disk full\)"):
        write_ply(path, make_avatar(seed=2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"]  # no temporary left behind


def test_write_creates_the_folder_and_refuses_bad_input(tmp_path):
    write_ply(tmp_path / "new" / "a.ply", make_avatar())
    assert (tmp_path / "new" / "a.ply").is_file()
    with pytest.raises(TalkingAvatarError, match="no Gaussians"):
        write_ply(tmp_path / "e.ply", make_avatar(n=0))
    flat = dataclasses.replace(make_gaussians(), scales=torch.zeros(64, 3))
    with pytest.raises(TalkingAvatarError, match="positive"):
        write_ply(tmp_path / "f.ply", flat)
    assert not (tmp_path / "e.ply").exists() and not (tmp_path / "f.ply").exists()


# --- malformed files -----------------------------------------------------------------------


def good_columns(tmp_path: Path) -> dict[str, np.ndarray]:
    write_ply(tmp_path / "good.ply", make_avatar(sh_degree=1))
    return raw_columns(tmp_path / "good.ply")


def break_file(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.ply"
    columns = good_columns(tmp_path)
    if case == "not_a_ply":
        path.write_text("solid cube\nfacet normal 0 0 1\n")
        return path
    if case == "empty_file":
        path.write_bytes(b"")
        return path
    if case == "truncated":
        path.write_bytes((tmp_path / "good.ply").read_bytes()[:-10])
        return path
    if case == "huge_count":  # a tiny file whose header claims 4e9 Gaussians
        good = (tmp_path / "good.ply").read_bytes()
        head, _, body = good.partition(b"end_header\n")
        head = re.sub(rb"element vertex \d+", b"element vertex 4000000000", head)
        path.write_bytes(head + b"end_header\n" + body[:100])
        return path
    if case == "missing_opacity":
        del columns["opacity"]
    elif case == "two_scales":
        del columns["scale_2"]
    elif case == "extra_rotation":
        columns["rot_4"] = columns["rot_0"]
    elif case == "bad_rest_count":
        del columns["f_rest_8"]
    elif case == "rest_gap":
        columns["f_rest_9"] = columns.pop("f_rest_3")
        columns["f_rest_3"] = columns.pop("f_rest_8")
    elif case == "nan":
        columns["scale_1"][5] = np.nan
    elif case == "inf":
        columns["x"][0] = np.inf
    elif case == "binding_out_of_range":
        columns["binding_0"][7] = NUM_FACES
    elif case == "binding_fraction":
        columns["binding_0"][7] = 2.5
    elif case == "binding_negative":
        columns["binding_0"][7] = -1
    elif case == "no_gaussians":
        columns = {k: v[:0] for k, v in columns.items()}
    elif case == "no_vertex_element":
        rows = np.zeros(3, dtype=[("x", "<f4")])
        PlyData([PlyElement.describe(rows, "points")]).write(str(path))
        return path
    write_raw(path, columns)
    return path


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("not_a_ply", "not a valid PLY"),
        ("empty_file", "not a valid PLY"),
        ("truncated", "the file is truncated or corrupt"),
        ("huge_count", "claims 4000000000 'vertex' rows"),
        ("missing_opacity", "missing the 3DGS properties opacity"),
        ("two_scales", "missing the 3DGS properties scale_2"),
        ("extra_rotation", "5 rot_* properties, expected 4"),
        ("bad_rest_count", "8 f_rest_"),
        ("rest_gap", "numbered"),
        ("nan", "NaN or infinite values in scale_1"),
        ("inf", "NaN or infinite values in x"),
        ("binding_out_of_range", "refers to triangle 50 but the head has 50"),
        ("binding_fraction", "whole numbers"),
        ("binding_negative", "whole numbers"),
        ("no_gaussians", "no Gaussians"),
        ("no_vertex_element", "no 'vertex' element"),
    ],
)
def test_malformed_file_gives_one_clear_line(tmp_path, case, words):
    path = break_file(tmp_path, case)
    with pytest.raises(TalkingAvatarError) as raised:
        read_ply(path, num_faces=NUM_FACES)
    message = str(raised.value)
    assert words in message
    assert str(path) in message and "\n" not in message


def test_missing_file_and_plain_splat_as_avatar(tmp_path):
    with pytest.raises(TalkingAvatarError, match="no such PLY file"):
        read_ply(tmp_path / "absent.ply")
    write_ply(tmp_path / "g.ply", make_gaussians())
    with pytest.raises(TalkingAvatarError, match="no binding_0 column"):
        read_avatar_ply(tmp_path / "g.ply")


# --- GaussianAvatars output folders --------------------------------------------------------


def flame_params(frames: int = 4, vertices: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    params = {"shape": rng.normal(size=300), "expr": rng.normal(size=(frames, 100))}
    for key in ("rotation", "neck_pose", "jaw_pose", "translation"):
        params[key] = rng.normal(size=(frames, 3))
    params["eyes_pose"] = rng.normal(size=(frames, 6))
    params["static_offset"] = rng.normal(size=(1, vertices, 3))
    params["dynamic_offset"] = np.zeros((frames, vertices, 3))
    return {k: v.astype(np.float32) for k, v in params.items()}


def gaussian_avatars_folder(root: Path) -> dict[int, GaussianAvatar]:
    """A training output as GaussianAvatars lays it out, with two saved iterations."""
    saved = {}
    for iteration, seed in ((7000, 1), (30000, 2), (600, 3)):
        folder = root / "point_cloud" / f"iteration_{iteration}"
        saved[iteration] = make_avatar(seed=seed)
        write_ply(folder / "point_cloud.ply", saved[iteration])
        np.savez(folder / "flame_param.npz", **flame_params(frames=seed))
    (root / "cameras.json").write_text("[]")
    (root / "point_cloud" / "notes").mkdir()  # not an iteration: ignored
    return saved


def test_load_gaussian_avatars_dir_takes_the_latest_iteration(tmp_path):
    saved = gaussian_avatars_folder(tmp_path)
    faces = torch.randint(0, 30, (NUM_FACES, 3))
    avatar, params = load_gaussian_avatars_dir(tmp_path, faces=faces)
    assert_avatars_equal(avatar, saved[30000])
    assert torch.equal(avatar.faces, faces)
    expected = flame_params(frames=2)
    assert sorted(params) == sorted(expected)
    for key, value in expected.items():
        assert np.array_equal(params[key], value) and params[key].dtype == value.dtype, key

    avatar, params = load_gaussian_avatars_dir(tmp_path, iteration=7000)
    assert_avatars_equal(avatar, saved[7000])
    assert params["expr"].shape == (1, 100)
    avatar, _ = load_gaussian_avatars_dir(tmp_path / "point_cloud" / "iteration_600")
    assert_avatars_equal(avatar, saved[600])


def test_load_gaussian_avatars_dir_errors(tmp_path):
    with pytest.raises(TalkingAvatarError, match="no such folder"):
        load_gaussian_avatars_dir(tmp_path / "absent")
    with pytest.raises(TalkingAvatarError, match="no point_cloud/iteration_<N>"):
        load_gaussian_avatars_dir(tmp_path)
    gaussian_avatars_folder(tmp_path)
    with pytest.raises(TalkingAvatarError, match="saved iterations are 600, 7000, 30000"):
        load_gaussian_avatars_dir(tmp_path, iteration=5)
    with pytest.raises(TalkingAvatarError, match="head has 10 triangles"):
        load_gaussian_avatars_dir(tmp_path, num_faces=10)
    latest = tmp_path / "point_cloud" / "iteration_30000"
    params = flame_params()
    del params["jaw_pose"]
    np.savez(latest / "flame_param.npz", **params)
    with pytest.raises(TalkingAvatarError, match="missing the FLAME parameters jaw_pose"):
        load_gaussian_avatars_dir(tmp_path)
    params = flame_params()
    params["expr"] = params["expr"][:2]
    np.savez(latest / "flame_param.npz", **params)
    with pytest.raises(TalkingAvatarError, match="one T for all"):
        load_gaussian_avatars_dir(tmp_path)
    np.savez(latest / "flame_param.npz", **{**flame_params(), "shape": np.array([np.nan])})
    with pytest.raises(TalkingAvatarError, match="'shape' is not a finite"):
        load_gaussian_avatars_dir(tmp_path)
    (latest / "flame_param.npz").write_bytes(b"garbage")
    with pytest.raises(TalkingAvatarError, match="is not a readable flame_param.npz"):
        load_gaussian_avatars_dir(tmp_path)
    (latest / "flame_param.npz").unlink()
    with pytest.raises(TalkingAvatarError, match="flame_param.npz: missing"):
        load_gaussian_avatars_dir(tmp_path)

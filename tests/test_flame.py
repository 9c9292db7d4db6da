"""The FLAME-format head: loading (ours, smplx, chumpy pickles), forward pass, regions, errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import smplx
import torch

from avatar.errors import TalkingAvatarError
from avatar.flame import FlameModel, FlameParams, load_flame
from avatar.flame.export import export_smplx_folder, flame_pickle_dict
from viewer.cli import main as cli_main


def random_params(head: FlameModel, num_frames: int = 3, seed: int = 0) -> FlameParams:
    g = torch.Generator().manual_seed(seed)
    p = head.neutral_params(num_frames)
    p.shape = torch.randn(head.num_shape, generator=g) * 0.5
    p.expr = torch.randn(num_frames, head.num_expr, generator=g)
    p.rotation = torch.randn(num_frames, 3, generator=g) * 0.1
    p.neck_pose = torch.randn(num_frames, 3, generator=g) * 0.1
    p.jaw_pose = torch.rand(num_frames, 3, generator=g) * torch.tensor([0.3, 0.02, 0.02])
    p.eyes_pose = torch.randn(num_frames, 6, generator=g) * 0.1
    p.translation = torch.randn(num_frames, 3, generator=g) * 0.01
    return p


def test_bundled_head_layout(head: FlameModel) -> None:
    assert head.num_vertices == head.v_template.shape[0] > 4000
    assert head.num_expr >= 50 and head.num_shape >= 10
    assert head.J_regressor.shape == (5, head.num_vertices)
    assert head.lmk_face_idx.shape == (51,)
    for name in ("lips", "lip_upper_inner", "lip_lower_inner", "upper_face", "eyes", "teeth"):
        assert len(head.region(name)) > 0, name
    assert len(head.region("lip_upper_inner")) == len(head.region("lip_lower_inner"))
    # contours run right (-x) to left (+x), matched column by column
    v = head.v_template.numpy()
    up, lo = head.region("lip_upper_inner"), head.region("lip_lower_inner")
    assert np.all(np.diff(v[up, 0]) > 0)
    assert np.abs(v[up, 0] - v[lo, 0]).max() < 0.004
    # joints regress to sensible places: eyes at the eyeballs, jaw behind and below them
    joints = (head.J_regressor @ head.v_template).numpy()
    assert joints[3, 0] > 0.02 and joints[4, 0] < -0.02  # left eye on +x
    assert joints[2, 1] < joints[3, 1] and joints[2, 2] < joints[3, 2]


def test_zero_params_give_template(head: FlameModel) -> None:
    verts = head(head.neutral_params(2))
    assert torch.allclose(verts, head.v_template.expand(2, -1, -1), atol=1e-7)


def test_smplx_loads_bundled_head_and_agrees(head: FlameModel, tmp_path) -> None:
    export_smplx_folder(head, tmp_path)
    model = smplx.FLAME(
        str(tmp_path), num_betas=head.num_shape, num_expression_coeffs=head.num_expr, batch_size=3
    )
    p = random_params(head)
    out = model(
        betas=p.shape.expand(3, -1),
        expression=p.expr,
        global_orient=p.rotation,
        neck_pose=p.neck_pose,
        jaw_pose=p.jaw_pose,
        leye_pose=p.eyes_pose[:, :3],
        reye_pose=p.eyes_pose[:, 3:],
        transl=p.translation,
    )
    ours = head(p)
    assert (out.vertices - ours).abs().max().item() < 1e-6
    # smplx appends the 51 static landmarks after the 5 joints
    assert (out.joints[:, 5:] - head.landmarks(ours)).abs().max().item() < 1e-6


def test_exported_pickle_round_trips_through_our_loader(head: FlameModel, tmp_path) -> None:
    export_smplx_folder(head, tmp_path)
    again = load_flame(tmp_path / "FLAME_NEUTRAL.pkl")
    p = random_params(head, seed=1)
    assert (again(p) - head(p)).abs().max().item() < 1e-6
    assert again.face_unit_names == head.face_unit_names
    assert set(again.regions) == set(head.regions)


def write_chumpy_style_pickle(head: FlameModel, path, monkeypatch) -> None:
    """A FLAME 2020-layout pickle whose arrays are chumpy-like objects (made by a stand-in class)."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:  # pickles as chumpy.ch.Ch, with the array in its state under "x", as chumpy does
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    data = flame_pickle_dict(head)
    del data["talking_avatar"]
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        data[key] = Ch(data[key].astype(np.float64))
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)
    monkeypatch.delitem(sys.modules, "chumpy")
    monkeypatch.delitem(sys.modules, "chumpy.ch")


def test_chumpy_pickle_loads_without_chumpy(head: FlameModel, tmp_path, monkeypatch) -> None:
    path = tmp_path / "generic_model.pkl"
    write_chumpy_style_pickle(head, path, monkeypatch)
    assert "chumpy" not in sys.modules
    model = load_flame(path)
    # FLAME's published layout: 300 shape, 100 expression, 5 joints
    assert (model.num_shape, model.num_expr) == (300, 100)
    assert model.J_regressor.shape[0] == 5 and model.parents.tolist() == [-1, 0, 1, 1, 1]
    p = random_params(head, seed=2)
    assert (model(p) - head(p)).abs().max().item() < 1e-6  # shorter vectors are zero-padded


def test_restricted_unpickler_refuses_code(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(
        TalkingAvatarError, match=r"names builtins\.print, which plain data never needs"
    ):
        load_flame(path)


def test_jaw_opens_inner_lips_monotonically(head: FlameModel) -> None:
    angles = torch.linspace(0.0, 0.3, 7)
    p = head.neutral_params(len(angles))
    p.jaw_pose[:, 0] = angles
    v = head(p)
    up, lo = head.region("lip_upper_inner"), head.region("lip_lower_inner")
    gap = (v[:, up, 1] - v[:, lo, 1]).mean(dim=1)  # [T] metres
    assert gap[0] < 0.001
    assert torch.all(torch.diff(gap) > 0.001)
    assert gap[-1] > 0.015
    # the upper teeth and skull stay, the lower teeth follow the jaw
    assert (v[-1, head.region("teeth_upper")] - v[0, head.region("teeth_upper")]).abs().max() < 1e-6
    assert (v[-1, head.region("teeth_lower")] - v[0, head.region("teeth_lower")]).norm(
        dim=-1
    ).min() > 0.005


def test_jaw_pose_reproduces_jaw_open_face_unit(head: FlameModel) -> None:
    w = torch.zeros(1, len(head.face_unit_names))
    w[0, head.face_unit_names.index("jawOpen")] = 1.0
    expr, jaw = head.face_units_to_params(w)
    assert expr.abs().max() == 0 and 0.3 < jaw[0, 0] < 0.4
    p = head.neutral_params(1)
    p.jaw_pose = jaw
    opened = head(p)[0]
    lower = head.region("teeth_lower")
    assert (opened[lower] - head.v_template[lower]).norm(dim=-1).max() > 0.01


def test_expressions_move_the_face_not_the_back_of_the_skull(head: FlameModel) -> None:
    v0 = head.v_template
    back = (v0[:, 2] < v0[:, 2].min() + 0.05).nonzero().squeeze(1)  # the rear 5 cm of the head
    for k in range(head.num_expr):
        p = head.neutral_params(1)
        p.expr[0, k] = 1.0
        d = (head(p)[0] - v0).norm(dim=-1)
        assert d.max() > 2e-5, k  # PCA-scaled: the last components are small, as in FLAME
        assert d[back].max() < 1e-5, k  # float32 noise only


def test_params_validation() -> None:
    p = FlameParams.zeros(4, 10, 10)
    p.jaw_pose = torch.zeros(3, 3)
    with pytest.raises(TalkingAvatarError, match=r"jaw_pose must be \[4, 3\]"):
        p.validate()
    q = FlameParams.zeros(2, 10, 10)
    q.expr[0, 0] = float("nan")
    with pytest.raises(TalkingAvatarError, match="NaN"):
        q.validate()


def test_flame_param_npz_round_trip(head: FlameModel, tmp_path) -> None:
    p = random_params(head)
    p.save_npz(tmp_path / "flame_param.npz")
    q = FlameParams.load_npz(tmp_path / "flame_param.npz")
    assert torch.equal(head(p), head(q))


def test_long_clips_are_skinned_in_chunks(head: FlameModel) -> None:
    p = random_params(head, num_frames=10)
    assert torch.allclose(head(p, chunk=3), head(p, chunk=256), atol=1e-7)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        (b"\x80\x02}q\x00(X\x01", "not a readable FLAME model pickle"),
        (pickle.dumps({"v_template": np.zeros((3, 3))}, protocol=2), "lacks f, shapedirs"),
        (pickle.dumps([1, 2, 3], protocol=2), "does not hold a FLAME model dictionary"),
    ],
)
def test_bad_model_files(tmp_path, content, match) -> None:
    path = tmp_path / "model.pkl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TalkingAvatarError, match=match):
        load_flame(path)


def test_bad_model_file_cli_exits_2_with_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"not a pickle at all")
    assert cli_main(["avatar", "info", "--flame", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("talking-avatar: error:") and "\n" not in err and "Traceback" not in err


def test_env_var_selects_model(head: FlameModel, tmp_path, monkeypatch) -> None:
    export_smplx_folder(head, tmp_path)
    monkeypatch.setenv("TALKING_AVATAR_FLAME", str(tmp_path / "FLAME_NEUTRAL.pkl"))
    assert load_flame().source.endswith("FLAME_NEUTRAL.pkl")


def test_import_starts_nothing() -> None:
    code = (
        "import sys, threading; import avatar, animator, viewer, avatar.flame, avatar.gaussians;"
        "bad = [m for m in sys.modules if m.startswith(('gsplat', 'viser', 'torch.cuda._lazy'))];"
        "assert not bad, bad; assert threading.active_count() == 1, threading.enumerate();"
        "import torch; assert not torch.cuda.is_initialized()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

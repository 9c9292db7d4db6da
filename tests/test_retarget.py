"""Retargeting the animator to FLAME heads it was not trained on, and avatars' identities.

The heads are made here from the bundled one (avatar/flame/derive.py) by operations whose
effect on motion is known, so the retargeted performance is checked against the truth: the
user's own head driven by the parameters that give the bundled motion on it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from animator import Animator
from animator.audio import SAMPLE_RATE, Audio, load_audio
from animator.data.lips import inner_lip_gap
from animator.retarget import CACHE_ENV, cache_path, retarget
from avatar.errors import TalkingAvatarError
from avatar.flame.derive import (
    arrays_of,
    build,
    drop,
    expected_params,
    reshape,
    rotate_expressions,
    scale,
    shuffle,
    subdivide,
)
from avatar.flame.export import export_smplx_folder
from avatar.flame.register import register
from avatar.paths import asset_path
from viewer.cli import main


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def anim() -> Animator:
    return Animator.load()


@pytest.fixture(scope="module")
def clip(anim):
    """Two seconds of the sample speech, surprised (the jaw opens wide) and neutral."""
    audio = load_audio(asset_path("speech", "sample.wav"))
    audio = Audio(audio.samples[: 2 * SAMPLE_RATE])
    return {
        label: anim.animate(audio, emotion, idle=False).params
        for label, emotion in (("neutral", None), ("surprised", {"surprised": 1.0}))
    }


def motion_error_mm(user, got, want, vertices) -> torch.Tensor:
    """`[T, N]` distance (mm) between two drives of the user's head at some vertices."""
    return 1000.0 * (user(got)[:, vertices] - user(want)[:, vertices]).norm(dim=-1)


# --- registration ------------------------------------------------------------------------


def test_a_subdivided_shuffled_head_is_registered_exactly(head) -> None:
    sub, _ = subdivide(arrays_of(head))
    shuffled, where = shuffle(sub)
    user = build(shuffled, "user")
    corr, report = register(head, user)
    assert report["landmark_mm"] < 1e-6 and report["surface_mm_p95"] < 1e-6
    dirs = head.dirs[:, :, head.num_shape :].permute(2, 0, 1).double()  # [E, V, 3]
    moved = corr.transfer(dirs)
    old = torch.as_tensor(where[: head.num_vertices])
    torch.testing.assert_close(moved[:, old], dirs, atol=1e-9, rtol=0)
    # the new vertices (edge midpoints) carry the average of their edge's ends
    assert corr.transfer(head.v_template.double()[None]).shape == (1, user.num_vertices, 3)


def test_a_bigger_head_elsewhere_gets_the_motion_scaled(head) -> None:
    user = build(scale(arrays_of(head), 1.1, offset=(0.01, -0.02, 0.005)), "user")
    corr, report = register(head, user)
    assert report["scale"] == pytest.approx(1.1, abs=1e-6)
    dirs = head.dirs[:, :, head.num_shape :].permute(2, 0, 1).double()
    torch.testing.assert_close(corr.transfer(dirs), 1.1 * dirs, atol=1e-7, rtol=0)


def test_register_needs_landmarks(head) -> None:
    a = arrays_of(head)
    a["lmk_face_idx"], a["lmk_b_coords"] = np.zeros(0, np.int64), np.zeros((0, 3))
    with pytest.raises(TalkingAvatarError, match="flame_static_embedding.pkl"):
        register(head, build(a, "bare"))


# --- the retargeted performance ----------------------------------------------------------


@pytest.fixture(scope="module")
def foreign(head):
    """Another topology (subdivided, shuffled), size and place, and a 100-wide expression
    basis turned by Q: with R right, the motion is the bundled one exactly."""
    a = scale(arrays_of(head), 1.08, offset=(0.0, 0.01, -0.004))
    a, _ = subdivide(a)
    a, where = shuffle(a, seed=3)
    a, q = rotate_expressions(a, width=100)
    user = build(a, "foreign")
    rt, _ = retarget(head, user)
    return user, rt, q, torch.as_tensor(where[: head.num_vertices])


def test_retargeted_performance_reproduces_the_bundled_motion(head, foreign, clip) -> None:
    user, rt, q, old = foreign
    assert rt.params.shape == (head.num_expr + 3, 103)
    skin = old[torch.as_tensor(head.region("skin"))]
    for params in clip.values():
        err = motion_error_mm(user, rt.carry(params, user), expected_params(params, user, q), skin)
        assert float(err.max()) < 0.1, float(err.max())  # mm, over every frame and vertex
        # and it is the bundled motion, 1.08 times larger
        moved = user(rt.carry(params, user))[:, old] - user.v_template[old]
        bundled = head(params) - head.v_template
        assert float((moved - 1.08 * bundled).norm(dim=-1).max()) < 1e-4  # metres


def test_another_identity_keeps_the_motion_within_a_fraction_of_a_millimetre(head, clip) -> None:
    user = build(reshape(arrays_of(head), sigma=2.0), "identity")
    rt, _ = retarget(head, user)
    skin = torch.as_tensor(head.region("skin"))
    err = motion_error_mm(
        user, rt.carry(clip["surprised"], user), expected_params(clip["surprised"], user), skin
    )
    # per frame, the mean over the face; the rest is the size ratio (the landmarks say this
    # person is 3 % smaller, and motion is carried at that scale)
    assert float(err.mean(dim=1).max()) < 0.15, float(err.mean(dim=1).max())


def test_a_head_without_teeth_or_tongue(head, clip) -> None:
    parts = np.concatenate([head.region("teeth"), head.region("tongue")])
    a, where = drop(arrays_of(head), parts)
    user = build(a, "no teeth")
    rt, _ = retarget(head, user)
    assert "teeth" not in rt.regions or len(rt.regions["teeth"]) == 0
    skin = torch.as_tensor(where[head.region("skin")])
    skin = skin[skin >= 0]
    err = motion_error_mm(
        user, rt.carry(clip["neutral"], user), expected_params(clip["neutral"], user), skin
    )
    assert float(err.max()) < 0.1


def test_retargeted_head_keeps_the_lip_closures(head, foreign, clip) -> None:
    user, rt, q, old = foreign
    rt.apply(head, user)
    for name in ("lip_upper_inner", "lip_lower_inner", "skin", "teeth_upper"):
        assert len(user.region(name)) > 0
    # the carried contours are the bundled ones (old vertices exist in the subdivided head)
    assert set(user.region("lip_upper_inner")) == set(old[head.region("lip_upper_inner")].tolist())

    def gap(model, params):
        return 1000.0 * inner_lip_gap(
            model(params).numpy(), model.region("lip_upper_inner"),
            model.region("lip_lower_inner"), anchors=model.region("teeth_upper"),
            reference=model.v_template.numpy(),
        )  # fmt: skip

    params = clip["surprised"]
    bundled = gap(head, params)
    carried = gap(user, rt.carry(params, user))
    np.testing.assert_allclose(carried, 1.08 * bundled, atol=0.05)
    rest = float(gap(head, head.neutral_params(1))[0])
    assert (bundled < rest + 0.5).sum() >= 3  # the clip has closures, and they stay shut


def test_face_units_and_blinks_come_along(head, foreign) -> None:
    user, rt, q, old = foreign
    rt.apply(head, user)
    assert user.face_unit_names == head.face_unit_names
    w = torch.zeros(1, len(head.face_unit_names))
    w[0, head.face_unit_names.index("eyeBlinkLeft")] = 1.0
    p_b, p_u = head.neutral_params(1), user.neutral_params(1)
    p_b.expr, p_b.jaw_pose = head.face_units_to_params(w)
    p_u.expr, p_u.jaw_pose = user.face_units_to_params(w)
    moved = user(p_u)[0, old] - user.v_template[old]
    torch.testing.assert_close(moved, 1.08 * (head(p_b)[0] - head.v_template), atol=1e-4, rtol=0)


# --- loading, caching, the command line ---------------------------------------------------


@pytest.fixture(scope="module")
def user_flame(head, tmp_path_factory):
    """The foreign head written as a FLAME folder (FLAME_NEUTRAL.pkl + landmark embedding),
    without regions or face units, as a user's file has neither."""
    a = scale(arrays_of(head), 1.05)
    a, _ = subdivide(a)
    a, _ = shuffle(a, seed=5)
    a, _ = rotate_expressions(a, width=100)
    folder = tmp_path_factory.mktemp("flame")
    export_smplx_folder(build(a, "user"), folder)
    return folder / "FLAME_NEUTRAL.pkl"


def test_animator_retargets_once_then_reads_the_cache(user_flame, cache, monkeypatch, capsys):
    anim = Animator.load(flame=user_flame)
    assert anim.retarget is not None and anim.mapping.shape[1] == 103
    assert "retargeting the animator" in capsys.readouterr().err
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")
    doc = json.loads((cache / files[0]).read_text())
    assert doc["format"] == "talking-avatar-retarget" and "lip_upper_inner" in doc["regions"]

    import animator.retarget as module

    def no(*args, **kwargs):
        raise AssertionError("retargeted again instead of reading the cache")

    monkeypatch.setattr(module, "retarget", no)
    again = Animator.load(flame=user_flame)
    torch.testing.assert_close(again.mapping, anim.mapping)
    perf = again.animate(asset_path("speech", "sample.wav"), {"happy": 1.0})
    assert perf.params.expr.shape[1] == 100 and torch.isfinite(perf.params.expr).all()
    # a damaged cache is computed again
    monkeypatch.undo()
    monkeypatch.setenv(CACHE_ENV, str(cache))
    (cache / files[1]).write_bytes(b"garbage")
    Animator.load(flame=user_flame)
    assert (cache / files[1]).read_bytes() != b"garbage"


def test_cli_retarget_reports_and_caches(user_flame, cache, head, capsys) -> None:
    assert main(["retarget", "--flame", str(user_flame)]) == 0
    out = capsys.readouterr().out
    assert "blendshapes on the target" in out and "wrote" in out
    from avatar.flame import load_flame

    stem = cache_path(head, load_flame(user_flame))
    report = json.loads(stem.with_suffix(".json").read_text())["report"]
    assert len(report["residual_mm"]) == 64 and max(report["residual_mm"]) < 0.2


def test_cli_retarget_bad_input_is_one_line(tmp_path, capsys) -> None:
    assert main(["retarget"]) == 2  # the bundled head: nothing to do
    assert "nothing to retarget" in capsys.readouterr().err
    (tmp_path / "FLAME_NEUTRAL.pkl").write_bytes(b"not a pickle")
    assert main(["retarget", "--flame", str(tmp_path / "FLAME_NEUTRAL.pkl")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_plain_flame_pickle_as_the_readme_writes_it_animates(head, tmp_path) -> None:
    """The layout README's GaussianAvatars snippet writes (plain pickle.dump of numpy arrays,
    FLAME's 300 + 100 shapedirs, no extras) loads, retargets and animates from the CLI."""
    import pickle

    a, _ = shuffle(scale(arrays_of(head), 0.95), seed=7)
    a, _ = rotate_expressions(a, width=100)
    num_v = len(a["v_template"])
    shapedirs = np.zeros((num_v, 3, 400), np.float32)
    shapedirs[:, :, : a["shapedirs"].shape[2]] = a["shapedirs"]
    shapedirs[:, :, 300:] = a["exprdirs"]
    parents = a["parents"].astype(np.int64)
    parents[0] = 2**32 - 1
    model = {
        "v_template": a["v_template"].astype(np.float32),
        "f": a["faces"].astype(np.int64),
        "shapedirs": shapedirs,
        "posedirs": a["posedirs"].astype(np.float32),
        "J_regressor": a["J_regressor"].astype(np.float32),
        "weights": a["weights"].astype(np.float32),
        "kintree_table": np.stack([parents, np.arange(len(parents))]),
    }
    with open(tmp_path / "flame_ga.pkl", "wb") as f:
        pickle.dump(model, f)
    embedding = {"lmk_face_idx": a["lmk_face_idx"], "lmk_b_coords": a["lmk_b_coords"]}
    with open(tmp_path / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump(embedding, f)
    out = tmp_path / "perf.npz"
    speech = str(asset_path("speech", "sample.wav"))
    flame = str(tmp_path / "flame_ga.pkl")
    assert main(["animate", "--flame", flame, "--audio", speech, "--out", str(out)]) == 0
    with np.load(out) as perf:
        assert perf["expr"].shape[1] == 100 and np.isfinite(perf["expr"]).all()
        assert np.abs(perf["jaw_pose"][:, 0]).max() > 0.05  # the mouth moves


def test_arkit_curves_of_a_retargeted_head_match_the_bundled_ones(head, foreign, clip) -> None:
    """The retarget carries the face units over, so the ARKit fit on the user's head gives the
    bundled head's curves (motion 1.08x, units 1.08x: the same weights)."""
    from avatar.flame.arkit import fit_arkit

    user, rt, _, _ = foreign
    rt.apply(head, user)
    params = clip["surprised"]
    bundled = fit_arkit(head, params, 30.0)
    carried = fit_arkit(user, rt.carry(params, user), 30.0)
    # the same motion, sampled by 4x the vertices: the least squares weighs regions a little
    # differently where the units cannot reach the motion exactly (eyes wide, at the bound)
    np.testing.assert_allclose(carried.weights, bundled.weights, atol=0.05)
    assert float(carried.weights.max()) > 0.3  # the face moves

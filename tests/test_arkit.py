"""ARKit-52 export: the fit recovers known weights and clips what the units cannot reach, the
angles follow Live Link Face's signs, the CSV / JSON / glb files read back as written (the glb
plays the performance), and `talking-avatar animate --out` writes each format."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pygltflib
import pytest
import soundfile as sf
import torch
from smplx.lbs import batch_rodrigues

from animator.audio import load_audio
from avatar.errors import TalkingAvatarError
from avatar.flame import FlameModel, FlameParams
from avatar.flame.arkit import (
    ARKIT_UNIT_NAMES,
    _box_least_squares,
    arkit_columns,
    fit_arkit,
    llf_angles,
)
from avatar.flame.arkit_export import (
    llf_timecode,
    load_arkit_json,
    write_arkit_glb,
    write_arkit_json,
    write_llf_csv,
)
from avatar.flame.gltf_reader import GlbPlayer
from avatar.paths import asset_path
from viewer.cli import main as cli_main

N = ARKIT_UNIT_NAMES.index
#: The header row of a take recorded by Epic's Live Link Face app, as the app writes it.
LLF_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,"
    "EyeLookUpLeft,EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,"
    "EyeLookOutRight,EyeLookUpRight,EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,"
    "JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft,"
    "MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,"
    "MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,"
    "MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,"
    "BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,"
    "TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,"
    "RightEyePitch,RightEyeRoll"
)


def params_of(head: FlameModel, weights: torch.Tensor) -> FlameParams:
    """FLAME parameters `[T]` of ARKit weights `[T, 52]` (the head's other units at 0)."""
    full = torch.zeros(len(weights), len(head.face_unit_names))
    full[:, arkit_columns(head)] = weights
    params = head.neutral_params(len(weights))
    params.expr, params.jaw_pose = head.face_units_to_params(full)
    return params


def rotation(axis: int, angle: float) -> torch.Tensor:
    """R `[3, 3]`: `angle` radians about FLAME's x (0), y (1) or z (2) axis."""
    return batch_rodrigues(angle * torch.eye(3, dtype=torch.float64)[axis : axis + 1])[0]


@pytest.fixture(scope="module")
def posed(head) -> tuple[FlameParams, torch.Tensor]:
    """45 frames of known weights in [0, 0.6] with head, neck and eye motion, and the weights."""
    g = torch.Generator().manual_seed(3)
    weights = torch.rand(45, 52, generator=g) * 0.6
    params = params_of(head, weights)
    params.rotation[:, 1] = torch.linspace(-0.3, 0.3, 45)
    params.neck_pose[:, 0] = torch.linspace(0.15, -0.1, 45)
    params.translation[:, 2] = 0.02
    params.eyes_pose[:, [1, 4]] = torch.linspace(-0.1, 0.1, 45)[:, None]
    return params, weights


def test_fit_recovers_known_weights(head) -> None:
    weights = torch.rand(60, 52, generator=torch.Generator().manual_seed(0))
    curves = fit_arkit(head, params_of(head, weights), fps=30)
    assert curves.weights.shape == (60, 52) and curves.num_frames == 60
    np.testing.assert_allclose(curves.weights, weights.numpy(), atol=1e-4)
    assert curves.error_mm.max() < 1e-3  # through the real FLAME forward pass
    assert np.abs(np.concatenate([curves.head, curves.left_eye, curves.right_eye])).max() == 0


def test_fit_clips_motion_the_units_cannot_reach(head) -> None:
    """Beyond a unit's range the weight stops at its bound and the rest is fit error."""
    weights = torch.full((4, 52), 0.0)
    weights[:, N("eyeBlinkLeft")] = 0.5
    weights[1, N("jawOpen")] = 1.5
    weights[2, N("mouthSmileLeft")] = 2.0
    weights[3, N("browInnerUp")] = -0.5
    curves = fit_arkit(head, params_of(head, weights), fps=30)
    assert curves.weights.min() >= 0 and curves.weights.max() <= 1
    assert curves.weights[1, N("jawOpen")] == 1 and curves.weights[2, N("mouthSmileLeft")] == 1
    assert curves.weights[3, N("browInnerUp")] == 0
    assert curves.error_mm[0] < 1e-3 and (curves.error_mm[1:] > 0.05).all()
    assert abs(curves.weights[0, N("eyeBlinkLeft")] - 0.5) < 1e-4


def test_solver_matches_scipy_lsq_linear() -> None:
    """The batched projected-Newton solver against scipy's bounded least squares, frame by frame."""
    from scipy.optimize import lsq_linear

    g = torch.Generator().manual_seed(1)
    m = torch.randn(80, 12, generator=g, dtype=torch.float64)  # a least squares |m w - y|^2
    y = torch.randn(25, 80, generator=g, dtype=torch.float64) * 3
    w = _box_least_squares(m.T @ m, y @ m)
    for row, target in zip(w, y, strict=True):
        ref = lsq_linear(m.numpy(), target.numpy(), bounds=(0, 1), method="bvls", tol=1e-12)
        np.testing.assert_allclose(row.numpy(), ref.x, atol=1e-7)
    assert ((w == 0) | (w == 1)).any() and ((w > 0) & (w < 1)).any()  # both kinds were tested


def test_angles_follow_live_link_face(head) -> None:
    """Live Link Face's takes: LeftEyeYaw < 0 with EyeLookOutLeft, pitch > 0 looking down."""
    params = head.neutral_params(3)
    params.eyes_pose[0, [1, 4]] = 0.2  # both eyes turn about +y: to the subject's left
    params.eyes_pose[1, [0, 3]] = 0.2  # about +x: down
    params.rotation[2, 1], params.neck_pose[2, 0] = 0.3, 0.2  # head to the left, neck down
    curves = fit_arkit(head, params, fps=30)
    w = curves.weights
    assert curves.left_eye[0, 0] == pytest.approx(-0.2) == curves.right_eye[0, 0]
    assert w[0, N("eyeLookOutLeft")] > 0.3 and w[0, N("eyeLookInRight")] > 0.3
    assert w[0, N("eyeLookInLeft")] == 0 and w[0, N("eyeLookOutRight")] == 0
    assert curves.left_eye[1, 1] == pytest.approx(0.2) and w[1, N("eyeLookDownLeft")] > 0.3
    np.testing.assert_allclose(curves.head[2], [-0.3, 0.2, 0.0], atol=1e-6)
    a, b, c = 0.3, -0.2, 0.1  # R_y(a) R_x(b) R_z(c) -> (-a, b, -c)
    angles = llf_angles(rotation(1, a) @ rotation(0, b) @ rotation(2, c))
    np.testing.assert_allclose(angles.numpy(), [-a, b, -c], atol=1e-9)


def test_a_head_without_face_units_is_refused(head) -> None:
    own = copy.copy(head)
    own.face_unit_names = None
    with pytest.raises(TalkingAvatarError, match="ARKit export needs face units"):
        fit_arkit(own, own.neutral_params(2), fps=30)


def test_llf_timecode() -> None:
    assert llf_timecode(0, 30) == "00:00:00:00.000"
    assert llf_timecode(45, 30) == "00:00:01:15.000"
    assert llf_timecode(30 * 3661 + 29, 30) == "01:01:01:29.000"
    assert llf_timecode(30, 29.97) == "00:00:01:00.030"  # a fractional fps: sub-frame fraction
    codes = [llf_timecode(i, 29.97) for i in range(200)]
    assert all(0 <= int(c.split(":")[3][:2]) < 30 for c in codes) and codes == sorted(codes)


def test_csv_is_live_link_face_layout(head, posed, tmp_path) -> None:
    params, _ = posed
    curves = fit_arkit(head, params, fps=30)
    lines = write_llf_csv(tmp_path / "p.csv", curves).read_text().splitlines()
    assert lines[0] == LLF_HEADER and len(lines) == 1 + curves.num_frames
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    assert all(len(r) == 63 and r[1] == "61" for r in rows)
    for i, row in enumerate(rows):
        hh, mm, ss, ff = row[0].split(":")
        assert ((int(hh) * 60 + int(mm)) * 60 + int(ss)) * 30 + float(ff) == i
    column = lambda name: np.array([float(r[header.index(name)]) for r in rows])  # noqa: E731
    np.testing.assert_allclose(column("JawLeft"), curves.weights[:, N("jawLeft")], atol=1e-6)
    np.testing.assert_allclose(column("MouthRight"), curves.weights[:, N("mouthRight")], atol=1e-6)
    np.testing.assert_allclose(column("HeadYaw"), curves.head[:, 0], atol=1e-6)
    np.testing.assert_allclose(column("RightEyeYaw"), curves.right_eye[:, 0], atol=1e-6)


def test_json_round_trip(head, posed, tmp_path) -> None:
    params, _ = posed
    curves = fit_arkit(head, params, fps=24)
    path = write_arkit_json(tmp_path / "p.json", curves)
    back = load_arkit_json(path)
    assert back.fps == 24 and back.num_frames == 45
    for name in ("weights", "head", "left_eye", "right_eye", "error_mm"):
        np.testing.assert_allclose(getattr(back, name), getattr(curves, name), atol=1e-6)
    doc = json.loads(path.read_text())
    assert doc["names"] == list(ARKIT_UNIT_NAMES) and doc["angles"]["units"] == "radians"
    np.testing.assert_allclose(doc["times"], np.arange(45) / 24, atol=1e-6)
    assert doc["fit_error_mm"]["max"] == pytest.approx(curves.error_mm.max(), abs=1e-6)
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(TalkingAvatarError, match="not a talking-avatar ARKit file"):
        load_arkit_json(tmp_path / "other.json")


def test_glb_round_trip(head, posed, tmp_path) -> None:
    params, _ = posed
    curves = fit_arkit(head, params, fps=30)
    gltf = pygltflib.GLTF2().load(str(write_arkit_glb(tmp_path / "p.glb", curves, head, params)))
    blob = gltf.binary_blob()
    mesh = gltf.meshes[0]
    prim = mesh.primitives[0]
    assert mesh.extras["targetNames"] == list(ARKIT_UNIT_NAMES) and len(prim.targets) == 52
    position = gltf.accessors[prim.attributes.POSITION]
    assert position.count == head.num_vertices
    assert gltf.accessors[prim.indices].count == 3 * head.faces.shape[0]

    def data(index: int) -> np.ndarray:
        a = gltf.accessors[index]
        view = gltf.bufferViews[a.bufferView]
        return np.frombuffer(blob, np.float32, view.byteLength // 4, view.byteOffset)

    xyz = data(prim.attributes.POSITION).reshape(-1, 3)
    assert position.min == xyz.min(0).tolist() and position.max == xyz.max(0).tolist()
    assert all(gltf.accessors[t["POSITION"]].count == head.num_vertices for t in prim.targets)
    anim = gltf.animations[0]
    assert {(c.target.node, c.target.path) for c in anim.channels} == {
        (2, "weights"), (0, "rotation"), (0, "translation"), (1, "rotation")
    }  # fmt: skip
    for sampler in anim.samplers:
        assert sampler.interpolation == "LINEAR"
        np.testing.assert_allclose(data(sampler.input), np.arange(45) / 30, atol=1e-6)
    weights_out = next(c.sampler for c in anim.channels if c.target.path == "weights")
    w = data(anim.samplers[weights_out].output)
    assert w.shape == (45 * 52,) and w.min() >= 0 and w.max() <= 1
    np.testing.assert_allclose(w.reshape(45, 52), curves.weights)


def test_glb_plays_the_performance(head, posed, tmp_path) -> None:
    """Morph targets plus the root/neck skin give FLAME's vertices, head pose included: any
    weights with the jaw shut, and the jaw's secant target alone at weight 1. (With the jaw open
    the other targets do not turn with it: docs/arkit.md measures that.)"""
    params, weights = posed
    weights = weights.clone()
    weights[:, N("jawOpen")] = 0
    weights[1::2] = 0
    weights[1::2, N("jawOpen")] = 1
    face = params_of(head, weights)
    params = replace(params, expr=face.expr, jaw_pose=face.jaw_pose, eyes_pose=face.eyes_pose)
    curves = fit_arkit(head, params, fps=30)
    player = GlbPlayer(write_arkit_glb(tmp_path / "p.glb", curves, head, params))
    target = head(params).numpy()
    for k in range(0, 45, 3):  # even frames: jaw shut; odd: jawOpen alone at 1
        gap = np.linalg.norm(player.vertices(k) - target[k], axis=1)  # [V], metres
        assert gap.mean() < 1e-4 and gap.max() < 5e-4  # the max: neck x jaw on shared vertices


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory):
    audio = load_audio(asset_path("speech", "sample.wav"))
    path = tmp_path_factory.mktemp("speech") / "short.wav"
    sf.write(path, audio.samples[: int(1.5 * 16000)], 16000)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".json", ".glb"])
def test_cli_writes_arkit_curves(short_speech, tmp_path, capsys, suffix) -> None:
    out = tmp_path / f"perf{suffix}"
    code = cli_main(["animate", "--audio", str(short_speech), "--emotion", "happy=1", "--out",
                     str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "45 frames at 30 fps" in printed and "ARKit fit error" in printed
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left
    if suffix == ".csv":
        assert out.read_text().splitlines()[0] == LLF_HEADER
    elif suffix == ".json":
        assert load_arkit_json(out).num_frames == 45
    else:
        assert GlbPlayer(out).times.shape == (45,)


def test_cli_refuses_an_unknown_suffix(short_speech, tmp_path, capsys) -> None:
    code = cli_main(["animate", "--audio", str(short_speech), "--out", str(tmp_path / "p.fbx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert all(s in err for s in (".npz", ".csv", ".json", ".glb")) and "'.fbx'" in err
    code = cli_main(["animate", "--audio", str(short_speech), "--out", str(tmp_path / "perf")])
    assert code == 2 and "no file type" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_head_without_arkit_units(head, short_speech, tmp_path, capsys) -> None:
    """A FLAME model of the user's own has no face units: one line before any slow work."""
    from avatar.flame.export import flame_pickle_dict
    from avatar.flame.pickle_io import write_pickle

    model = flame_pickle_dict(head)
    for key in ("face_unit_names", "face_unit_expr", "face_unit_jaw"):
        del model["talking_avatar"][key]
    write_pickle(tmp_path / "own.pkl", model)
    out = tmp_path / "perf.csv"
    code = cli_main(["animate", "--audio", str(short_speech), "--flame", str(tmp_path / "own.pkl"),
                     "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "ARKit export needs face units" in err and err.count("\n") == 1
    assert not out.exists()

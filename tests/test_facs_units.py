"""The bundled head's FACS units and open lids: amplitudes, symmetry, exactness, no intersections."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull, cKDTree

from animator.data.driving import face_unit_vertices
from animator.data.expressions import EMOTIONS, Expressiveness, emotion_weights
from animator.data.face_units import FACE_UNIT_NAMES, FACS_UNIT_NAMES, weights_from_targets
from animator.data.lips import inner_lip_gap
from animator.expression_metrics import (
    expression_measures,
    eyeball_visible,
    lid_aperture,
    surface_depths,
)
from avatar.builder import IRIS_DEG

#: Peak skin displacement (mm) of the units the build scales (scripts/facs_units.py RECIPES).
PEAKS_MM = {
    "AU01": 12.0,
    "AU02": 12.0,
    "AU04": 11.0,
    "AU05": 4.5,
    "AU07": 3.5,
    "AU09": 8.0,
    "AU10": 7.5,
    "AU15": 14.0,
    "AU16": 7.0,
    "AU17": 8.0,
    "AU20": 11.0,
}
#: The strongest identity the expression set draws: every unit x1.15, one side 15 % stronger.
STRONGEST = Expressiveness(gain=1.15, asymmetry=0.15)
MIXES = [
    {"happy": 0.7, "surprised": 0.7},
    {"sad": 0.8, "angry": 0.6},
    {"fearful": 0.6, "disgusted": 0.6, "sad": 0.6},
    {"happy": 1.0, "contempt": 0.6},
    {"angry": 1.0, "disgusted": 1.0},
    {"surprised": 1.0, "fearful": 1.0},
]


def drive(head, weights: np.ndarray) -> np.ndarray:
    """Vertices `[V, 3]` (float64) of the rest identity for face-unit weights `[U]`."""
    zero = np.zeros(head.num_shape, dtype=np.float32)
    return face_unit_vertices(head, zero, weights[None])[0].astype(np.float64)


def unit(head, name: str, weight: float = 1.0) -> np.ndarray:
    """Displacement `[V, 3]` of one face unit (or Left/Right pair name) at a weight."""
    return drive(head, weights_from_targets({name: weight})) - head.v_template.numpy()


def lid_intrusion(head, vertices: np.ndarray) -> float:
    """How deep (m) the lids reach into an eyeball; <= 0 when they stay outside.

    The lids are the skin in front of the eyeball centre within 25 mm of it that lies outside
    the eyeball at rest (the lid's back surface tucked behind the eyeball is not a lid); the
    eyeball is the convex hull of its vertices.
    """
    rest = head.v_template.numpy().astype(np.float64)
    skin = head.region("skin")
    worst = -np.inf
    for eye in ("eye_left", "eye_right"):
        ids = head.region(eye)
        planes = ConvexHull(vertices[ids]).equations  # [P, 4] outward normals, offsets
        rest_planes = ConvexHull(rest[ids]).equations
        centre = rest[ids].mean(axis=0)
        near = (np.linalg.norm(rest[skin] - centre, axis=1) < 0.025) & (rest[skin, 2] > centre[2])
        lids = skin[near]
        outside_at_rest = (rest[lids] @ rest_planes[:, :3].T + rest_planes[:, 3]).max(axis=1) > 0
        depth = -(vertices[lids] @ planes[:, :3].T + planes[:, 3]).max(axis=1)
        worst = max(worst, float(depth[outside_at_rest].max()))
    return worst


def teeth_through_lips(head, vertices: np.ndarray) -> float:
    """How far (m) a tooth stands in front of a lip triangle that covers it seen from the front;
    < 0 while every tooth stays behind the lips."""
    faces = head.faces.numpy()
    on_lips = np.zeros(len(vertices), dtype=bool)
    on_lips[head.region("lips")] = True
    teeth = vertices[head.region("teeth")]  # [K, 3]
    lip_z = surface_depths(teeth[:, :2], vertices[faces[on_lips[faces].all(axis=1)]])  # [K, T]
    return float(np.where(np.isfinite(lip_z), teeth[:, 2:3] - lip_z, -np.inf).max())


def lip_gap(head, vertices: np.ndarray) -> float:
    """Smallest inner-lip opening (m) across the central mouth; < 0 where the lips cross."""
    up, lo = head.region("lip_upper_inner"), head.region("lip_lower_inner")
    return float(inner_lip_gap(vertices[None], up, lo, smallest=True)[0])


def test_the_head_has_every_unit_the_generators_drive(head) -> None:
    assert set(head.face_unit_names) == set(FACE_UNIT_NAMES)
    assert head.num_expr <= 100  # a FLAME pickle holds at most 100 expression components
    for name in FACS_UNIT_NAMES:
        i = head.face_unit_names.index(name)
        assert head.face_unit_expr[i].abs().max() > 0, name  # in the expression basis
        assert head.face_unit_jaw[i].abs().max() == 0, name  # no jaw in an expression unit


def test_expression_basis_reproduces_every_unit_exactly(head) -> None:
    # The build measures the reconstruction of every unit (metres -> mm) through the basis.
    assert head.meta["expr_recon_max_mm"] < 1e-6
    assert head.meta["expr_components"] == head.num_expr
    # Each basis column moves the face: none is a numerical leftover.
    moves = head.dirs[:, :, head.num_shape :].norm(dim=1).max(dim=0).values  # [E] metres
    assert moves.min() > 2e-5


@pytest.mark.parametrize("name", sorted(PEAKS_MM))
def test_unit_peaks_are_real_amplitudes(head, name: str) -> None:
    side = name if name in head.face_unit_names else name + "Left"
    d = unit(head, side)[head.region("skin")]
    assert np.linalg.norm(d, axis=1).max() * 1000 == pytest.approx(PEAKS_MM[name], abs=0.05)


def test_units_move_their_landmarks(head) -> None:
    def measure(name: str) -> dict[str, float]:
        return expression_measures(head, unit(head, name))

    assert measure("AU01")["inner_brow"] > 10.0  # mm, both sides
    assert measure("AU02")["outer_brow"] > 8.0
    assert measure("AU04")["inner_brow"] < -7.0 and measure("AU04")["outer_brow"] < -6.0
    assert measure("AU12")["mouth_corner_up"] > 10.0
    assert measure("AU15")["mouth_corner_up"] < -7.0
    assert measure("AU09")["nose"] > 5.0
    assert measure("AU10")["upper_lip"] > 4.0
    assert measure("AU20")["mouth_corner_out"] > 5.0
    rest = lid_aperture(head.v_template, head).mean() * 1000
    assert measure("AU05")["lid_aperture"] > rest + 2.5  # upper lid up
    assert measure("AU07")["lid_aperture"] < rest - 2.5  # lids tightened


def test_left_and_right_units_mirror_each_other(head) -> None:
    rest = head.v_template.numpy().astype(np.float64)
    dist, partner = cKDTree(rest * [-1.0, 1.0, 1.0]).query(rest)
    assert dist.max() < 1e-6  # the head is mirror-symmetric, vertex for vertex
    for name in FACS_UNIT_NAMES:
        if not name.endswith("Left"):
            continue
        left = unit(head, name)
        right = unit(head, name.removesuffix("Left") + "Right")[partner] * [-1.0, 1.0, 1.0]
        peak = np.linalg.norm(left, axis=1).max()
        # as symmetric as the CC0 sources (their left and right units differ by up to 0.6 mm)
        assert np.linalg.norm(left - right, axis=1).max() < 0.08 * peak, name


def test_rest_lids_are_open_with_white_either_side_of_the_iris(head) -> None:
    rest = head.v_template.numpy()
    aperture = lid_aperture(rest, head) * 1000  # mm
    assert np.all((aperture > 9.0) & (aperture < 11.0)), aperture
    for eye in ("eye_left", "eye_right"):
        ids = head.region(eye)
        centre = rest[ids].mean(axis=0)
        radius = np.linalg.norm(rest[ids] - centre, axis=1).mean()
        iris = radius * np.sin(np.radians(IRIS_DEG))  # the painted iris's half-width
        xs = centre[0] + np.arange(-2 * radius, 2 * radius, 1e-4)
        row = np.stack([xs, np.full_like(xs, centre[1])], axis=1)
        seen = xs[eyeball_visible(rest, head, eye, row)] - centre[0]
        assert seen.min() < -iris - 0.002 and seen.max() > iris + 0.002, eye  # 2 mm of white


def test_blinks_close_fully_and_half_blinks_half(head) -> None:
    rest = lid_aperture(head.v_template, head)
    closed = lid_aperture(drive(head, weights_from_targets({"eyeBlink": 1.0})), head)
    half = lid_aperture(drive(head, weights_from_targets({"eyeBlink": 0.5})), head)
    assert np.all(closed == 0.0)
    assert np.all((half > 0.2 * rest) & (half < 0.6 * rest))
    # the closed lid rests on the eyeball instead of sinking into it
    assert lid_intrusion(head, drive(head, weights_from_targets({"eyeBlink": 1.0}))) <= 0


@pytest.mark.parametrize("emotion", EMOTIONS[1:])
def test_emotions_at_full_strength_do_not_intersect(head, emotion: str) -> None:
    for style in (Expressiveness(), STRONGEST):
        verts = drive(head, emotion_weights(emotion, 1.0, style=style))
        assert lip_gap(head, verts) >= 0.0, emotion  # the lips meet, never cross
        assert lid_intrusion(head, verts) <= 0.0, emotion
        assert teeth_through_lips(head, verts) < 0.0, emotion


@pytest.mark.parametrize("mix", MIXES, ids=lambda m: "+".join(m))
def test_mixes_of_emotions_stay_plausible(head, mix: dict[str, float]) -> None:
    weights = np.clip(sum(emotion_weights(e, x) for e, x in mix.items()), 0.0, 1.0)
    verts = drive(head, weights)
    assert lip_gap(head, verts) >= 0.0
    assert lid_intrusion(head, verts) <= 0.0
    assert teeth_through_lips(head, verts) < 0.0


def test_intensity_scales_the_prototype(head) -> None:
    for emotion in EMOTIONS[1:]:
        full = emotion_weights(emotion, 1.0)
        np.testing.assert_allclose(emotion_weights(emotion, 0.5), 0.5 * full)
        assert full.max() <= 1.0 and full.max() > 0.5, emotion
    np.testing.assert_array_equal(emotion_weights("neutral", 1.0), np.zeros(len(FACE_UNIT_NAMES)))


def test_lid_checks_catch_a_lid_pushed_into_the_eye(head) -> None:
    # The helpers above must be able to fail: sink the left upper lid 3 mm straight back.
    rest = head.v_template.numpy().astype(np.float64)
    ids = head.region("eye_left")
    centre = rest[ids].mean(axis=0)
    skin = head.region("skin")
    lid = skin[
        (np.linalg.norm(rest[skin] - centre, axis=1) < 0.02)
        & (rest[skin, 1] > centre[1] + 0.003)
        & (rest[skin, 2] > centre[2] + 0.01)
    ]
    sunk = rest.copy()
    sunk[lid, 2] -= 0.003
    assert lid_intrusion(head, rest) <= 0.0 < lid_intrusion(head, sunk)
    crossed = rest.copy()
    crossed[head.region("lip_lower_inner"), 1] += 0.003  # lower lip 3 mm up through the upper
    assert lip_gap(head, crossed) < 0.0
    ahead = rest.copy()
    ahead[head.region("teeth_upper"), 2] += 0.02  # teeth 2 cm forward, through the lips
    assert teeth_through_lips(head, ahead) > 0.0

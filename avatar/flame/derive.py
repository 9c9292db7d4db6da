"""FLAME-format heads derived from another, for checking retargets against a known truth.

Each is made from a head (the bundled one, say) by an operation whose effect on motion is known
exactly, so a retargeted performance can be checked against the truth (tests/test_retarget.py,
benchmarks/retarget.py):

- `subdivide`: every triangle split in four at its edge midpoints (the surface, the bases and the
  rig unchanged on the old vertices; new vertices carry the average of their edge's ends);
- `shuffle`: vertex order permuted (triangles, landmarks, regions and joints follow);
- `reshape`: another identity (the shape basis applied to the template);
- `scale`: the head bigger and elsewhere;
- `drop`: parts removed (FLAME 2020 has no teeth or tongue);
- `rotate_expressions`: the expression basis turned by an orthogonal matrix and widened to
  `width` components (the new ones point elsewhere), as FLAME's 100.
"""

from __future__ import annotations

import numpy as np

from avatar.flame import FlameModel


def arrays_of(model: FlameModel, *, keep_regions: bool = False) -> dict:
    """A head model's arrays in `FlameModel`'s constructor layout (float64 numpy); regions and
    face units are dropped unless keep_regions (a user's FLAME has neither)."""
    num_s = model.num_shape
    dirs = model.dirs.double().numpy()
    out = {
        "v_template": model.v_template.double().numpy(),
        "faces": model.faces.numpy(),
        "shapedirs": dirs[:, :, :num_s],
        "exprdirs": dirs[:, :, num_s:],
        "posedirs": model.posedirs.double().numpy().T.reshape(model.num_vertices, 3, -1),
        "J_regressor": model.J_regressor.double().numpy(),
        "weights": model.lbs_weights.double().numpy(),
        "parents": model.parents.numpy(),
        "lmk_face_idx": model.lmk_face_idx.numpy(),
        "lmk_b_coords": model.lmk_b_coords.double().numpy(),
        "regions": dict(model.regions) if keep_regions else {},
    }
    return out


def build(arrays: dict, source: str) -> FlameModel:
    """A head model from arrays in the constructor layout (`arrays_of`)."""
    return FlameModel(arrays, source=source)


def subdivide(a: dict) -> tuple[dict, np.ndarray]:
    """1-to-4 split; returns (arrays, old vertex -> new index, the identity here)."""
    faces = a["faces"]
    num_v = len(a["v_template"])
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    mid = num_v + inverse.reshape(-1).reshape(3, -1).T  # [F, 3]: midpoints of edges 01, 12, 20
    v0, v1, v2 = faces.T
    m01, m12, m20 = mid.T
    new_faces = np.concatenate(
        [
            np.stack([v0, m01, m20], 1),
            np.stack([m01, v1, m12], 1),
            np.stack([m20, m12, v2], 1),
            np.stack([m01, m12, m20], 1),
        ]
    )
    avg = lambda x: np.concatenate([x, 0.5 * (x[unique[:, 0]] + x[unique[:, 1]])])  # noqa: E731
    out = dict(a)
    for key in ("v_template", "shapedirs", "exprdirs", "posedirs", "weights"):
        out[key] = avg(a[key])
    out["J_regressor"] = np.concatenate(
        [a["J_regressor"], np.zeros((len(a["J_regressor"]), len(unique)))], axis=1
    )
    out["faces"] = new_faces
    # Landmarks: the sub-triangle holding each point, and its barycentrics there.
    nf = len(faces)
    idx, bary = [], []
    for f, b in zip(a["lmk_face_idx"], a["lmk_b_coords"], strict=True):
        b0, b1, b2 = b
        if b0 >= 0.5:
            idx.append(f), bary.append([2 * b0 - 1, 2 * b1, 2 * b2])
        elif b1 >= 0.5:
            idx.append(nf + f), bary.append([2 * b0, 2 * b1 - 1, 2 * b2])
        elif b2 >= 0.5:
            idx.append(2 * nf + f), bary.append([2 * b0, 2 * b1, 2 * b2 - 1])
        else:  # centre triangle (m01, m12, m20)
            idx.append(3 * nf + f), bary.append([1 - 2 * b2, 1 - 2 * b0, 1 - 2 * b1])
    out["lmk_face_idx"] = np.asarray(idx)
    out["lmk_b_coords"] = np.asarray(bary)
    return out, np.arange(num_v)


def shuffle(a: dict, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Permute the vertices; returns (arrays, old index -> new index)."""
    num_v = len(a["v_template"])
    order = np.random.default_rng(seed).permutation(num_v)  # new i holds old order[i]
    where = np.empty(num_v, dtype=np.int64)
    where[order] = np.arange(num_v)
    out = dict(a)
    for key in ("v_template", "shapedirs", "exprdirs", "posedirs", "weights"):
        out[key] = a[key][order]
    out["J_regressor"] = a["J_regressor"][:, order]
    out["faces"] = where[a["faces"]]
    out["regions"] = {k: where[v] for k, v in a["regions"].items()}
    return out, where


def reshape(a: dict, *, seed: int = 1, sigma: float = 2.0) -> dict:
    """Another person: the template moved along the shape basis by random betas (`sigma` std).
    As in FLAME, the expression basis is the same for every identity."""
    betas = np.random.default_rng(seed).normal(0.0, sigma, a["shapedirs"].shape[2])
    return {**a, "v_template": a["v_template"] + a["shapedirs"] @ betas}


def scale(a: dict, factor: float, offset=(0.0, 0.0, 0.0)) -> dict:
    """The head `factor` times bigger (bases and rig alike) and moved by `offset` (metres):
    the same motion, `factor` times larger."""
    out = {**a, "v_template": factor * a["v_template"] + np.asarray(offset)}
    for key in ("shapedirs", "exprdirs", "posedirs"):
        out[key] = factor * a[key]
    return out


def rotate_expressions(a: dict, *, width: int = 100, seed: int = 2) -> tuple[dict, np.ndarray]:
    """Expression basis E' = E Q (Q orthogonal), widened to `width` components with random
    directions; returns (arrays, Q) so that expr' = expr Q gives the same motion."""
    e = a["exprdirs"].shape[2]
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(e, e)))
    turned = a["exprdirs"] @ q  # [V, 3, E]
    extra = rng.normal(0.0, 1e-4, size=(*turned.shape[:2], width - e))
    out = dict(a)
    out["exprdirs"] = np.concatenate([turned, extra], axis=2)
    return out, q


def drop(a: dict, vertices: np.ndarray) -> tuple[dict, np.ndarray]:
    """The head without some vertices (and their triangles): FLAME 2020 has no teeth or
    tongue. Returns (arrays, old index -> new index, -1 where dropped)."""
    num_v = len(a["v_template"])
    keep = np.ones(num_v, dtype=bool)
    keep[vertices] = False
    where = np.full(num_v, -1, dtype=np.int64)
    where[keep] = np.arange(keep.sum())
    faces = a["faces"][keep[a["faces"]].all(axis=1)]
    out = dict(a)
    for key in ("v_template", "shapedirs", "exprdirs", "posedirs", "weights"):
        out[key] = a[key][keep]
    j = a["J_regressor"][:, keep]
    out["J_regressor"] = j / j.sum(axis=1, keepdims=True)
    face_index = {tuple(f): i for i, f in enumerate(faces.tolist())}
    out["lmk_face_idx"] = np.asarray([face_index[tuple(a["faces"][f])] for f in a["lmk_face_idx"]])
    out["faces"] = where[faces]
    out["regions"] = {k: where[v][where[v] >= 0] for k, v in a["regions"].items()}
    return out, where


def expected_params(params, target: FlameModel, q: np.ndarray | None = None):
    """The truth for a derived head: the `FlameParams` that give `target` the motion `params`
    gave the head it was derived from: expressions turned by Q (`rotate_expressions`) and
    zero-padded to its width, the jaw as it is, the rest neutral."""
    import torch

    out = target.neutral_params(params.num_frames)
    expr = params.expr.double() if q is None else params.expr.double() @ torch.as_tensor(q)
    out.expr = torch.nn.functional.pad(expr.float(), (0, target.num_expr - expr.shape[1]))
    out.jaw_pose = params.jaw_pose.clone()
    return out

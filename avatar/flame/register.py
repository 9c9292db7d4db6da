"""Register one FLAME-format head to another and carry motion across: a dense correspondence.

Two heads of FLAME's kind (the bundled one and a user's FLAME 2020/2023, say) differ in vertex
count, triangle list, proportions and identity. `register(source, target)` finds where each
target vertex sits on the source's surface, in three steps:

1. similarity: scale, rotation and translation that carry the source's 51 static landmarks onto
   the target's (Umeyama's closed form, from the flame_static_embedding of each head);
2. non-rigid: the source's skin is pulled onto the target's surface by closest points (pairs
   whose normals disagree or that lie far apart are dropped) while a Laplacian keeps its
   displacement field smooth and the landmarks keep matching; the stiffness is lowered over
   a few rounds, each one sparse linear solve (scipy);
3. sampling: every target vertex is projected onto the registered source surface, giving a
   source triangle and barycentric coordinates; its motion is the source's motion there,
   turned by the similarity's rotation and scaled by the local size ratio (the similarity's
   scale times how much the non-rigid step stretched that triangle).

`Correspondence.transfer` moves displacement fields `[K, V_source, 3]` to `[K, V_target, 3]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

from avatar.errors import TalkingAvatarError
from avatar.flame.model import FlameModel
from avatar.mesh import face_normals, vertex_normals

#: Stiffness of the displacement field per round of the non-rigid step (relative to the data
#: term's weight of 1 per vertex), from a near-rigid start to a close fit.
STIFFNESS = (100.0, 30.0, 10.0, 3.0, 1.0, 0.3)
#: Weight of the landmarks against the data term (per landmark).
LANDMARK_WEIGHT = 10.0
#: Closest-point pairs farther than this (metres) or with normals apart by more than
#: acos(MIN_NORMAL_DOT) are not pulled together.
MAX_PAIR_DISTANCE = 0.01
MIN_NORMAL_DOT = 0.5
#: A local size ratio outside [1 / LIMIT, LIMIT] of the similarity's is clamped.
STRETCH_LIMIT = 1.5
#: Each closest-point query searches the triangles around its nearest vertices and the
#: triangles with the nearest centroids (large triangles have far centroids: teeth).
NEAR_VERTICES, NEAR_CENTROIDS = 4, 8
#: Metres added to a candidate's distance per unit of (1 - normal agreement): among surfaces
#: that touch or cross (teeth rows, lips at rest), the one facing the same way wins.
NORMAL_PENALTY = 0.002


@dataclass
class Correspondence:
    """Where each target vertex lies on the source surface, and how to carry motion there.

    Attributes:
        triangles: source triangle of each target vertex `[V_t]`.
        barycentric: its barycentric coordinates `[V_t, 3]`.
        scale: local size ratio target / source at each target vertex `[V_t]`.
        rotation: the similarity's rotation `[3, 3]` (source -> target directions).
        distance: target vertex to the registered source surface `[V_t]`, metres.
        source_faces: the source's triangles `[F_s, 3]`.
        registered: the source's vertices after registration, on the target `[V_s, 3]`.
    """

    triangles: np.ndarray
    barycentric: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    distance: np.ndarray
    source_faces: np.ndarray
    registered: np.ndarray

    def transfer(self, displacements: torch.Tensor) -> torch.Tensor:
        """Source displacement fields `[..., V_s, 3]` (metres) -> target ones `[..., V_t, 3]`."""
        corners = torch.as_tensor(self.source_faces[self.triangles])  # [V_t, 3]
        bary = torch.as_tensor(self.barycentric).to(displacements)  # [V_t, 3]
        picked = displacements[..., corners.reshape(-1), :]  # [..., 3 V_t, 3]
        picked = picked.reshape(*displacements.shape[:-2], -1, 3, 3)  # [..., V_t, corner, 3]
        sampled = (bary[..., None] * picked).sum(dim=-2)  # [..., V_t, 3]
        turn = torch.as_tensor(self.rotation).to(displacements)
        scale = torch.as_tensor(self.scale).to(displacements)[:, None]
        return (sampled @ turn.T) * scale

    def nearest_source_vertex(self) -> np.ndarray:
        """The source vertex each target vertex is closest to in its triangle `[V_t]`."""
        corner = self.barycentric.argmax(axis=1)
        return self.source_faces[self.triangles, corner]


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising |s R source + t - target|^2 over points `[N, 3]` (Umeyama 1991)."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / (a**2).sum(axis=1).mean())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def closest_on_triangles(
    p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closest points on triangles (a, b, c) to points p, all `[N, 3]`: (points, barycentric
    `[N, 3]`), by projection onto the plane and clamping to the nearest edge outside it."""
    ab, ac, ap = b - a, c - a, p - a
    d00 = (ab * ab).sum(1)
    d01 = (ab * ac).sum(1)
    d11 = (ac * ac).sum(1)
    d20 = (ap * ab).sum(1)
    d21 = (ap * ac).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.stack([1.0 - v - w, v, w], axis=1)
    inside = (bary >= 0).all(axis=1)
    if not inside.all():
        out = ~inside
        best = None
        for i, j in ((0, 1), (1, 2), (2, 0)):
            corners = (a, b, c)
            e0, e1 = corners[i][out], corners[j][out]
            seg = e1 - e0
            t = ((p[out] - e0) * seg).sum(1) / np.maximum((seg * seg).sum(1), 1e-30)
            t = np.clip(t, 0.0, 1.0)
            q = e0 + t[:, None] * seg
            dist = ((p[out] - q) ** 2).sum(1)
            cand = np.zeros((out.sum(), 3))
            cand[:, i], cand[:, j] = 1.0 - t, t
            if best is None:
                best, best_d = cand, dist
            else:
                take = dist < best_d
                best[take], best_d[take] = cand[take], dist[take]
        bary[out] = best
    points = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    return points, bary


def closest_points(
    queries: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    query_normals: np.ndarray | None = None,
    min_normal_dot: float = MIN_NORMAL_DOT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For points `[N, 3]`, the closest point on a mesh: (triangle `[N]`, barycentric `[N, 3]`,
    distance `[N]`), among the triangles around the nearest vertices and those with the nearest
    centroids (`_candidate_triangles`). With normals, triangles facing away (normal dot below
    min_normal_dot) are skipped unless nothing else is near, and among near ties the one facing
    the query's way wins (`NORMAL_PENALTY`)."""
    near = _candidate_triangles(queries, vertices, faces)  # [N, k]
    k = near.shape[1]
    n = len(queries)
    q = np.repeat(queries, k, axis=0)
    flat = faces[near.reshape(-1)]
    pts, bary = closest_on_triangles(q, *(vertices[flat[:, j]] for j in range(3)))
    dist = np.linalg.norm(pts - q, axis=1).reshape(n, k)
    if query_normals is not None:
        normals = face_normals(vertices, faces)[near]  # [N, k, 3]
        agree = (normals * query_normals[:, None, :]).sum(-1)  # [N, k]
        facing = agree >= min_normal_dot
        dist_pick = dist + NORMAL_PENALTY * (1.0 - agree)
        dist_pick = np.where(facing | ~facing.any(axis=1, keepdims=True), dist_pick, np.inf)
    else:
        dist_pick = dist
    best = dist_pick.argmin(axis=1)
    rows = np.arange(n)
    return (
        near[rows, best],
        bary.reshape(n, k, 3)[rows, best],
        dist[rows, best],
    )


def _candidate_triangles(
    queries: np.ndarray, vertices: np.ndarray, faces: np.ndarray
) -> np.ndarray:
    """Triangle ids `[N, k]` worth testing for each query: those around its `NEAR_VERTICES`
    nearest vertices (padded by repeating) and its `NEAR_CENTROIDS` nearest centroids."""
    order = np.argsort(faces.reshape(-1), kind="stable")
    vert_of = faces.reshape(-1)[order]
    counts = np.bincount(vert_of, minlength=len(vertices))
    width = max(int(counts.max()), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(order)) - starts[vert_of]
    first = (order // 3)[starts.clip(0, len(order) - 1)]  # a triangle of each vertex
    ring = np.repeat(first[:, None], width, axis=1)  # [V, width], short rows padded
    ring[vert_of, slot] = order // 3
    n = len(queries)
    kv = min(NEAR_VERTICES, len(vertices))
    kc = min(NEAR_CENTROIDS, len(faces))
    _, nv = cKDTree(vertices).query(queries, k=kv)
    _, nc = cKDTree(vertices[faces].mean(axis=1)).query(queries, k=kc)
    return np.concatenate([ring[nv.reshape(n, kv)].reshape(n, -1), nc.reshape(n, kc)], axis=1)


def _landmark_matrix(model: FlameModel) -> sp.csr_matrix:
    """B `[L, V]`: landmark l = sum_v B[l, v] vertex_v (barycentric rows)."""
    faces = model.faces.cpu().numpy()
    idx = model.lmk_face_idx.cpu().numpy()
    bary = model.lmk_b_coords.cpu().numpy().astype(np.float64)
    rows = np.repeat(np.arange(len(idx)), 3)
    return sp.csr_matrix(
        (bary.reshape(-1), (rows, faces[idx].reshape(-1))), shape=(len(idx), model.num_vertices)
    )


def _laplacian(num_vertices: int, faces: np.ndarray) -> sp.csr_matrix:
    """The uniform graph Laplacian I - D^-1 A of a mesh `[V, V]`."""
    i = np.concatenate(
        [faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]]
    )
    j = np.concatenate(
        [faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]]
    )
    adj = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(num_vertices, num_vertices))
    adj.data[:] = 1.0  # duplicates (edges shared by two triangles) count once
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = sp.diags(1.0 / np.maximum(degree, 1.0))
    return (sp.identity(num_vertices) - inv @ adj).tocsr()


def _check_landmarks(source: FlameModel, target: FlameModel) -> None:
    for model in (source, target):
        if model.lmk_face_idx.numel() == 0:
            raise TalkingAvatarError(
                f"the head model {model.source} has no landmark embedding; put FLAME's "
                "flame_static_embedding.pkl beside it to register it"
            )
    if source.lmk_face_idx.numel() != target.lmk_face_idx.numel():
        raise TalkingAvatarError(
            f"the head models have {source.lmk_face_idx.numel()} and "
            f"{target.lmk_face_idx.numel()} static landmarks; both need FLAME's 51 "
            "(flame_static_embedding.pkl)"
        )


def _skin(model: FlameModel) -> np.ndarray:
    """Vertices the non-rigid step pulls onto the other surface: `skin` when the model names
    it (not teeth, tongue, eyeballs or the mouth's inside), else every vertex."""
    if "skin" in model.regions:
        return np.asarray(model.regions["skin"])
    return np.arange(model.num_vertices)


@torch.no_grad()
def register(
    source: FlameModel, target: FlameModel, *, progress=None
) -> tuple[Correspondence, dict[str, float]]:
    """Register `source`'s template onto `target`'s (see the module docstring).

    Returns:
        (correspondence for target vertices, report): the report holds the similarity's scale,
        the landmark error before and after, and how far the registered source skin lies
        from the target surface (median and 95th percentile, mm).
    """
    _check_landmarks(source, target)
    src_v = source.v_template.cpu().double().numpy()
    src_f = source.faces.cpu().numpy()
    tgt_v = target.v_template.cpu().double().numpy()
    tgt_f = target.faces.cpu().numpy()
    b_src = _landmark_matrix(source)
    lmk_t = _landmark_matrix(target) @ tgt_v  # [L, 3]
    s, rot, t = similarity(b_src @ src_v, lmk_t)
    x0 = src_v @ rot.T * s + t  # [V_s, 3] similarity-aligned source
    lmk_rigid = float(np.linalg.norm(b_src @ x0 - lmk_t, axis=1).mean())

    skin = _skin(source)
    lap = _laplacian(len(x0), src_f)
    ltl = (lap.T @ lap).tocsc()
    btb = (b_src.T @ b_src).tocsc()
    reg = 1e-3 * sp.identity(len(x0), format="csc")  # pins parts no term reaches (eyeballs)
    x = x0.copy()
    for round_, alpha in enumerate(STIFFNESS):
        normals = vertex_normals(x, src_f)[skin]
        tri, bary, dist = closest_points(x[skin], tgt_v, tgt_f, query_normals=normals)
        hit = bary[:, :1] * tgt_v[tgt_f[tri, 0]] + bary[:, 1:2] * tgt_v[tgt_f[tri, 1]]
        hit = hit + bary[:, 2:] * tgt_v[tgt_f[tri, 2]]
        keep = dist < MAX_PAIR_DISTANCE
        w = np.zeros(len(x0))
        w[skin[keep]] = 1.0
        c = np.zeros_like(x0)
        c[skin[keep]] = hit[keep]
        a = sp.diags(w) + alpha * ltl + LANDMARK_WEIGHT * btb + reg
        rhs = w[:, None] * c + alpha * (ltl @ x0) + LANDMARK_WEIGHT * (b_src.T @ lmk_t) + 1e-3 * x0
        x = splu(a.tocsc()).solve(rhs)
        if progress is not None:
            progress(round_ + 1, len(STIFFNESS))

    # How well the registered source skin now lies on the target surface.
    _, _, fit = closest_points(x[skin], tgt_v, tgt_f, query_normals=vertex_normals(x, src_f)[skin])
    # Every target vertex on the registered source surface.
    tri, bary, dist = closest_points(
        tgt_v, x, src_f, query_normals=vertex_normals(tgt_v, tgt_f), min_normal_dot=0.0
    )
    area = lambda v: np.linalg.norm(  # noqa: E731
        np.cross(v[src_f[:, 1]] - v[src_f[:, 0]], v[src_f[:, 2]] - v[src_f[:, 0]]), axis=1
    )
    stretch = np.sqrt(area(x) / np.maximum(area(x0), 1e-30))
    stretch = np.clip(stretch, 1.0 / STRETCH_LIMIT, STRETCH_LIMIT)
    corr = Correspondence(
        triangles=tri,
        barycentric=bary,
        scale=s * stretch[tri],
        rotation=rot,
        distance=dist,
        source_faces=src_f,
        registered=x,
    )
    report = {
        "scale": s,
        "landmark_mm_similarity": 1000.0 * lmk_rigid,
        "landmark_mm": 1000.0 * float(np.linalg.norm(b_src @ x - lmk_t, axis=1).mean()),
        "surface_mm_median": 1000.0 * float(np.median(fit)),
        "surface_mm_p95": 1000.0 * float(np.quantile(fit, 0.95)),
        "target_mm_median": 1000.0 * float(np.median(dist)),
    }
    return corr, report

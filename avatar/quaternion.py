"""Unit-quaternion helpers (wxyz, Hamilton product) in plain, batched, differentiable torch.

Torch has no rotation helpers and the usual libraries (pytorch3d, roma) are heavy or CUDA-bound,
so the few functions the Gaussian binding needs live here. Every function takes any number of
leading batch dimensions. Conventions: quaternions are `[..., 4]` as (w, x, y, z); a quaternion
q rotates a vector v as q v q*, which equals `quat_to_matrix(q) @ v`; `quat_multiply(a, b)`
rotates by b first, then by a, matching `quat_to_matrix(a) @ quat_to_matrix(b)`.
"""

from __future__ import annotations

import torch


def quat_normalize(q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit quaternions `[..., 4]` of any non-zero quaternions `[..., 4]`.

    A zero quaternion stays zero instead of turning into NaN (eps guards the division).
    """
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    """Conjugates `[..., 4]`: the inverse rotation of unit quaternions `[..., 4]`."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b `[..., 4]` of quaternions `[..., 4]` (broadcasting).

    As rotations: first b, then a.
    """
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        dim=-1,
    )


def quat_right_matrix(q: torch.Tensor) -> torch.Tensor:
    """Matrices M `[..., 4, 4]` with `p * q == M @ p` for every quaternion p.

    Multiplying by a fixed q on the right is linear in p; precomputing M turns a per-frame
    Hamilton product into one batched matrix-vector product (what `GaussianAvatar.pose` caches).
    """
    w, x, y, z = q.unbind(-1)
    rows = (
        (w, -x, -y, -z),
        (x, w, z, -y),
        (y, -z, w, x),
        (z, y, -x, w),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `[..., 3, 3]` of quaternions `[..., 4]` (normalised here first)."""
    w, x, y, z = quat_normalize(q).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    return torch.stack(
        (
            1 - 2 * (yy + zz),
            2 * (xy - wz),
            2 * (xz + wy),
            2 * (xy + wz),
            1 - 2 * (xx + zz),
            2 * (yz - wx),
            2 * (xz - wy),
            2 * (yz + wx),
            1 - 2 * (xx + yy),
        ),
        dim=-1,
    ).unflatten(-1, (3, 3))


def _matrix_to_quat_map() -> tuple[torch.Tensor, torch.Tensor]:
    """(W `[9, 16]`, b `[16]`) with `flat(m) @ W + b` = the symmetric 4x4 matrix 4 q q^T."""
    # Entries of 4 q q^T as +-1 combinations of the matrix entries m_ij (index 3 i + j), plus a
    # constant 1 on the diagonal; textbook identities, e.g. 4 w x = m21 - m12.
    entries = {
        (0, 0): {0: 1, 4: 1, 8: 1},
        (1, 1): {0: 1, 4: -1, 8: -1},
        (2, 2): {0: -1, 4: 1, 8: -1},
        (3, 3): {0: -1, 4: -1, 8: 1},
        (0, 1): {7: 1, 5: -1},
        (0, 2): {2: 1, 6: -1},
        (0, 3): {3: 1, 1: -1},
        (1, 2): {3: 1, 1: 1},
        (1, 3): {2: 1, 6: 1},
        (2, 3): {5: 1, 7: 1},
    }
    weights = torch.zeros(9, 16, dtype=torch.float64)
    for (row, col), terms in entries.items():
        for index, sign in terms.items():
            weights[index, 4 * row + col] = sign
            weights[index, 4 * col + row] = sign
    bias = torch.eye(4, dtype=torch.float64).flatten()
    return weights, bias


_MATRIX_TO_QUAT = _matrix_to_quat_map()


def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """Unit quaternions `[..., 4]` (w >= 0) of rotation matrices `[..., 3, 3]`.

    The matrix is linear in the outer product 4 q q^T, whose row k is 4 q_k q. We take the row
    with the largest diagonal entry 4 q_k^2 (at least 1, as the four sum to 4) and normalise it:
    accurate, one matmul, and a finite gradient for every rotation, 180-degree turns included.
    """
    weights, bias = (t.to(m) for t in _MATRIX_TO_QUAT)
    outer = (m.flatten(-2) @ weights + bias).unflatten(-1, (4, 4))  # [..., 4, 4]: 4 q q^T
    # max().indices: argmax over the strided diagonal is ten times slower on CPU.
    best = outer.diagonal(dim1=-2, dim2=-1).max(dim=-1).indices  # [...]
    row = torch.gather(outer, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = quat_normalize(row)  # [..., 4]: +-q
    # Pick the w >= 0 hemisphere so that equal rotations give equal quaternions.
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0)

"""`GaussianAvatar.pose` as numba kernels, for frames that need no gradient (viewer, export).

The same maths as the torch code in `avatar.binding` (triangle frames, GaussianAvatars' rule)
and `avatar.quaternion.matrix_to_quat`, written per triangle and per Gaussian: torch spends a
frame of the default avatar in some forty small operators on one intra-op thread (4-5 ms,
several [N, 17] temporaries), where one pass over the triangles and one over the Gaussians
take a fraction of that, on the rasterizer's thread pool and without the GIL.
tests/test_binding.py holds the two paths to each other.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from avatar import threads

# on the rasterizer's pool (TBB) when it is installed; must precede the first parallel kernel
threads.use_tbb()

#: Triangle frame columns, per triangle: R (row-major 3x3: columns a0, a1, a2), its unit
#: quaternion wxyz (w >= 0), the triangle's scale, its centroid.
FRAME_WIDTH = 17
_ROT, _QUAT, _SCALE, _CENTRE = 0, 9, 13, 14


@njit(inline="always", cache=True, nogil=True)
def _unit(x, y, z, eps2):
    """(x, y, z) / max(|(x, y, z)|, sqrt(eps2)) and that length (GaussianAvatars' clamp)."""
    length = math.sqrt(max(x * x + y * y + z * z, eps2))
    return x / length, y / length, z / length, length


def _frames_py(vertices, faces, eps2, out):
    """Each triangle's frame into `out` [F, FRAME_WIDTH] (see `triangle_frames`)."""
    for f in prange(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        v0x, v0y, v0z = vertices[i0, 0], vertices[i0, 1], vertices[i0, 2]
        e1x, e1y, e1z = vertices[i1, 0] - v0x, vertices[i1, 1] - v0y, vertices[i1, 2] - v0z
        e2x, e2y, e2z = vertices[i2, 0] - v0x, vertices[i2, 1] - v0y, vertices[i2, 2] - v0z
        ax, ay, az, edge = _unit(e1x, e1y, e1z, eps2)
        # a1 = unit(a0 x e2), the normal; a2 = unit(a0 x a1), in the plane
        nx, ny, nz, _ = _unit(ay * e2z - az * e2y, az * e2x - ax * e2z, ax * e2y - ay * e2x, eps2)
        px, py, pz, _ = _unit(ay * nz - az * ny, az * nx - ax * nz, ax * ny - ay * nx, eps2)
        row = out[f]
        row[_ROT + 0], row[_ROT + 1], row[_ROT + 2] = ax, nx, px
        row[_ROT + 3], row[_ROT + 4], row[_ROT + 5] = ay, ny, py
        row[_ROT + 6], row[_ROT + 7], row[_ROT + 8] = az, nz, pz
        # matrix_to_quat: the row of 4 q q^T with the largest diagonal entry, normalised, w >= 0
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = ax, nx, px, ay, ny, py, az, nz, pz
        d0 = 1.0 + m00 + m11 + m22
        d1 = 1.0 + m00 - m11 - m22
        d2 = 1.0 - m00 + m11 - m22
        d3 = 1.0 - m00 - m11 + m22
        if d0 >= d1 and d0 >= d2 and d0 >= d3:
            qw, qx, qy, qz = d0, m21 - m12, m02 - m20, m10 - m01
        elif d1 >= d2 and d1 >= d3:
            qw, qx, qy, qz = m21 - m12, d1, m10 + m01, m02 + m20
        elif d2 >= d3:
            qw, qx, qy, qz = m02 - m20, m10 + m01, d2, m21 + m12
        else:
            qw, qx, qy, qz = m10 - m01, m02 + m20, m21 + m12, d3
        norm = max(math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)
        if qw < 0.0:
            norm = -norm
        row[_QUAT], row[_QUAT + 1] = qw / norm, qx / norm
        row[_QUAT + 2], row[_QUAT + 3] = qy / norm, qz / norm
        height = abs(px * e2x + py * e2y + pz * e2z)
        row[_SCALE] = 0.5 * (edge + height)
        for c in range(3):
            row[_CENTRE + c] = (vertices[i0, c] + vertices[i1, c] + vertices[i2, c]) / 3.0


def _gaussians_py(
    frames, binding, local_means, unit_quats, local_scales, means, quats, scales, normals
):
    """World means, unit quaternions (face * local), scales and normals of every Gaussian."""
    for i in prange(binding.shape[0]):
        fr = frames[binding[i]]
        s = fr[_SCALE]
        lx, ly, lz = local_means[i, 0], local_means[i, 1], local_means[i, 2]
        for r in range(3):
            rot = _ROT + 3 * r  # row r of R
            means[i, r] = (fr[rot] * lx + fr[rot + 1] * ly + fr[rot + 2] * lz) * s + fr[_CENTRE + r]
            scales[i, r] = local_scales[i, r] * s
            normals[i, r] = fr[rot + 1]  # R's second column, the normal
        aw, ax, ay, az = fr[_QUAT], fr[_QUAT + 1], fr[_QUAT + 2], fr[_QUAT + 3]
        bw, bx, by, bz = unit_quats[i, 0], unit_quats[i, 1], unit_quats[i, 2], unit_quats[i, 3]
        quats[i, 0] = aw * bw - ax * bx - ay * by - az * bz
        quats[i, 1] = aw * bx + ax * bw + ay * bz - az * by
        quats[i, 2] = aw * by - ax * bz + ay * bw + az * bx
        quats[i, 3] = aw * bz + ax * by - ay * bx + az * bw


_opts = dict(parallel=True, cache=True, nogil=True)
frames_kernel = njit(**_opts)(_frames_py)
gaussians_kernel = njit(**_opts)(_gaussians_py)


def pose_arrays(
    vertices: np.ndarray,
    faces: np.ndarray,
    binding: np.ndarray,
    local_means: np.ndarray,
    unit_quats: np.ndarray,
    local_scales: np.ndarray,
    eps2: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(means [N, 3], quats [N, 4], scales [N, 3], normals [N, 3]) float32 of a posed avatar.

    Arrays are C-contiguous: vertices [V, 3] f32, faces [F, 3] i64, binding [N] i64, local
    means [N, 3], unit local quaternions [N, 4] and local scales exp(log-scales) [N, 3], f32.
    """
    frames = np.empty((faces.shape[0], FRAME_WIDTH), np.float32)
    frames_kernel(vertices, faces, eps2, frames)
    n = binding.shape[0]
    means = np.empty((n, 3), np.float32)
    quats = np.empty((n, 4), np.float32)
    scales = np.empty((n, 3), np.float32)
    normals = np.empty((n, 3), np.float32)
    gaussians_kernel(
        frames, binding, local_means, unit_quats, local_scales, means, quats, scales, normals
    )
    return means, quats, scales, normals

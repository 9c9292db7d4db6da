"""Triangle-mesh geometry shared by the preview renderer, registration and the glTF writer."""

from __future__ import annotations

import numpy as np


def _cross(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """`[F, 3]` (v1 - v0) x (v2 - v0) per triangle: its normal, twice its area long."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    return np.cross(v1 - v0, v2 - v0)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals `[F, 3]` of a mesh's triangles (following the winding)."""
    n = _cross(vertices, faces)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def vertex_normals(
    vertices: np.ndarray, faces: np.ndarray, *, default: tuple[float, float, float] | None = None
) -> np.ndarray:
    """Area-weighted unit vertex normals `[V, 3]`; a vertex no triangle uses gets `default`
    (zeros when None; glTF wants a unit vector there)."""
    n = _cross(vertices, faces)
    out = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    unit = out / np.maximum(length, 1e-20)
    return unit if default is None else np.where(length > 0, unit, default)

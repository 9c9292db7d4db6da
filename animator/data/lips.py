"""Measure the inner-lip aperture of mesh frames: the ground-truth check for closures and vowels."""

from __future__ import annotations

import numpy as np

__all__ = ["rigid_align", "inner_lip_gap"]


def rigid_align(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame rotation and translation mapping `points` onto `reference` (Kabsch, no scale).

    Args:
        points: `[T, K, 3]` the same K anchor vertices in every frame.
        reference: `[K, 3]` their rest positions.

    Returns:
        (R `[T, 3, 3]`, t `[T, 3]`) such that `points @ R^T + t` best matches `reference`.
    """
    p_mean = points.mean(axis=1, keepdims=True)  # [T, 1, 3]
    r_mean = reference.mean(axis=0)  # [3]
    cov = np.einsum("tki,kj->tij", points - p_mean, reference - r_mean)  # [T, 3, 3]
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(np.einsum("tij,tjk->tik", u, vt)))  # [T]
    fix = np.ones((points.shape[0], 3))
    fix[:, 2] = d
    rot = np.einsum("tji,tj,tkj->tik", vt, fix, u)  # [T, 3, 3] = V diag U^T
    trans = r_mean[None] - np.einsum("tij,tj->ti", rot, p_mean[:, 0])  # [T, 3]
    return rot, trans


def inner_lip_gap(
    vertices: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
    *,
    anchors: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    central: float = 0.6,
    smallest: bool = False,
) -> np.ndarray:
    """Largest vertical opening between the inner-lip contours, per frame, in metres.

    The contours are compared at the same x (the lower one interpolated at the upper one's
    points), over the central `central` fraction of the mouth width, and the largest
    `upper.y - lower.y` is returned: the aperture seen from the front. Closed lips give about 0
    (or less: pressed), an open mouth the opening's height.

    Args:
        vertices: `[T, V, 3]` frames (metres, +y up).
        upper, lower: vertex indices of the inner upper and lower lip contours, ordered across
            the mouth.
        anchors: optional vertex indices that move rigidly with the skull (the upper teeth);
            frames are then rigidly aligned to `reference[anchors]` first, so head motion does
            not tilt the measurement.
        reference: `[V, 3]` rest mesh for the alignment (needed with `anchors`).
        central: fraction of the mouth width measured, centred.
        smallest: return the smallest opening over the measured width instead: below 0 where
            the lips pass through each other somewhere.

    Returns:
        `[T]` aperture in metres.
    """
    verts = np.asarray(vertices, dtype=np.float64)
    if anchors is not None:
        if reference is None:
            raise ValueError("inner_lip_gap: anchors need a reference mesh")
        rot, trans = rigid_align(verts[:, anchors], np.asarray(reference, np.float64)[anchors])
        idx = np.concatenate([upper, lower])
        part = np.einsum("tij,tkj->tki", rot, verts[:, idx]) + trans[:, None]  # [T, K, 3]
        up, low = part[:, : len(upper)], part[:, len(upper) :]
    else:
        up, low = verts[:, upper], verts[:, lower]
    gaps = np.empty(verts.shape[0])
    for t in range(verts.shape[0]):
        ux, uy = up[t, :, 0], up[t, :, 1]
        order = np.argsort(low[t, :, 0])
        lx, ly = low[t, order, 0], low[t, order, 1]
        centre = 0.5 * (ux.min() + ux.max())
        half = 0.5 * central * (ux.max() - ux.min())
        keep = np.abs(ux - centre) <= half
        opening = uy[keep] - np.interp(ux[keep], lx, ly)
        gaps[t] = opening.min() if smallest else opening.max()
    return gaps  # [T]

"""Smooth ramps for numpy arrays, shared by the avatar painter, the stand-in data generators and
the head's FACS units (the animator's torch twin is `animator.closure.smoothstep`)."""

from __future__ import annotations

import numpy as np

__all__ = ["smoothstep"]


def smoothstep(x: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """0 at `lo`, 1 at `hi` (either order), zero slope at both ends, constant outside."""
    t = np.clip((np.asarray(x) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)

"""Drive a head with face-unit weights: identity shape + ARKit weights + poses -> vertices."""

from __future__ import annotations

import numpy as np
import torch

from animator.data.face_units import FACE_UNIT_NAMES, reorder_columns
from avatar.errors import TalkingAvatarError

__all__ = ["require_face_units", "identity_template", "face_unit_vertices"]


def require_face_units(head: torch.nn.Module) -> None:
    """Raise unless `head` has ARKit face units (the bundled head does; real FLAME has none)."""
    names = getattr(head, "face_unit_names", None)
    if not names:
        raise TalkingAvatarError(
            f"the data generators need a head with ARKit face units (the bundled head); "
            f"{getattr(head, 'source', 'this head model')} has none, so drop --flame"
        )
    missing = sorted(set(FACE_UNIT_NAMES) - set(names))
    if missing:
        raise TalkingAvatarError(
            f"the head's face units lack {', '.join(missing[:4])}; use the bundled head"
        )


def _neutral(head: torch.nn.Module, num_frames: int):
    from avatar.flame import FlameParams

    return FlameParams.zeros(num_frames, head.num_shape, head.num_expr)


def identity_template(head: torch.nn.Module, shape: np.ndarray) -> np.ndarray:
    """The neutral mesh `[V, 3]` float32 of an identity with shape coefficients `[S]`."""
    params = _neutral(head, 1)
    params.shape = torch.as_tensor(shape, dtype=torch.float32)
    with torch.no_grad():
        return head(params)[0].numpy().astype(np.float32)


def face_unit_vertices(
    head: torch.nn.Module,
    shape: np.ndarray,
    weights: np.ndarray,
    *,
    neck_pose: np.ndarray | None = None,
) -> np.ndarray:
    """Vertices for face-unit weights.

    Args:
        head: a head with face units (see `require_face_units`).
        shape: identity coefficients `[S]`.
        weights: face-unit weights `[T, U]` in `FACE_UNIT_NAMES` order, in [0, 1].
        neck_pose: optional head motion, axis-angle radians `[T, 3]`.

    Returns:
        `[T, V, 3]` float32, metres.
    """
    num_frames = weights.shape[0]
    ordered = reorder_columns(np.asarray(weights, dtype=np.float32), head.face_unit_names)
    with torch.no_grad():
        expr, jaw = head.face_units_to_params(torch.from_numpy(ordered))  # [T, E], [T, 3]
        params = _neutral(head, num_frames)
        params.shape = torch.as_tensor(shape, dtype=torch.float32)
        params.expr = expr.float()
        params.jaw_pose = jaw.float()
        if neck_pose is not None:
            params.neck_pose = torch.as_tensor(neck_pose, dtype=torch.float32)
        return head(params).numpy().astype(np.float32, copy=False)

"""Who an avatar is: its FLAME shape coefficients and per-vertex static offset.

GaussianAvatars fits both to its subject and saves them in flame_param.npz beside the point
cloud (`shape` `[S]`, `static_offset` `[1, V, 3]`); its Gaussians are bound to the triangles of
that shaped head. A performance (expressions, jaw, eyes, head motion) is the same for anyone;
`Identity.apply` puts it on this person's head.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from avatar.errors import TalkingAvatarError
from avatar.flame.params import FlameParams


@dataclass(frozen=True)
class Identity:
    """FLAME identity: `shape` `[S]` coefficients and an optional `static_offset` `[V, 3]`
    (metres) added to the template."""

    shape: torch.Tensor
    static_offset: torch.Tensor | None = None

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], head, *, source: str) -> Identity:
        """The identity in flame_param.npz arrays, checked against the head model `head`:
        a shape wider than the head's basis must be zero beyond it, and a static offset must
        have one row per vertex of the head."""
        params = FlameParams.from_arrays(arrays, source=source)
        # GaussianAvatars' shape is shared by every frame: [S] (or the first row of [T, S])
        shape = params.shape if params.shape.dim() == 1 else params.shape[0]
        shape = head._fit_width(shape, head.num_shape, "shape")
        static = params.static_offset  # [V, 3] or None
        if static is not None and tuple(static.shape) != (head.num_vertices, 3):
            raise TalkingAvatarError(
                f"{source}: static_offset is {tuple(static.shape)} but the head model "
                f"{head.source} has {head.num_vertices} vertices; use the FLAME model the "
                "avatar was trained with (--flame PATH)"
            )
        return cls(shape=shape.to(head.v_template.device), static_offset=static)

    def apply(self, params: FlameParams) -> FlameParams:
        """params on this identity: the same motion, this shape and static offset."""
        device, dtype = params.expr.device, params.expr.dtype
        offset = None if self.static_offset is None else self.static_offset.to(device, dtype)
        return replace(params, shape=self.shape.to(device, dtype), static_offset=offset)

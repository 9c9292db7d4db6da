"""Images as the project writes them: float colour in [0, 1] -> uint8, one rounding everywhere."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(color: torch.Tensor | np.ndarray) -> np.ndarray:
    """`[..., C]` colour in [0, 1] (clamped) -> uint8 `[..., C]`, rounded to the nearest level.

    Export, the viewer, the contact sheet and the figures all use this, so the same colour
    gives the same pixel everywhere (a truncating conversion would sit half a level darker)."""
    if isinstance(color, torch.Tensor):
        color = color.detach().cpu().numpy()
    return (np.clip(color, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

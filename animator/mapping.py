"""Blendshapes -> FLAME: every learned blendshape as FLAME expression coefficients plus jaw pose.

For the head model in use, FLAME's vertices are linear in the expression coefficients and, near
the rest pose, almost linear in the jaw rotation. We take the jaw's columns as secants over a
typical speaking range (0 -> 0.15 rad for opening, +-0.05 rad sideways), solve one least-squares
fit per blendshape, and stack the solutions into one matrix M `[K, E + 3]`, so that
(expr, jaw_pose) = [w_A, w_E] @ M for every frame. The fit residual (through the real, nonlinear
FLAME forward pass) is reported per blendshape in millimetres.
"""

from __future__ import annotations

import torch

from avatar.errors import TalkingAvatarError
from avatar.flame import FlameModel

JAW_OPEN_SECANT = 0.15  # rad
JAW_SIDE_SECANT = 0.05  # rad


def flame_jacobian(model: FlameModel) -> torch.Tensor:
    """Columns `[3V, E + 3]`: vertex motion per unit of each expression coefficient and jaw axis."""
    e = model.num_expr
    expr_cols = model.dirs[:, :, model.num_shape :].reshape(-1, e)  # [3V, E]
    jaw_cols = []
    base = model(model.neutral_params(1))[0]
    for axis, step in ((0, JAW_OPEN_SECANT), (1, JAW_SIDE_SECANT), (2, JAW_SIDE_SECANT)):
        p = model.neutral_params(1)
        p.jaw_pose[0, axis] = step
        jaw_cols.append(((model(p)[0] - base) / step).reshape(-1))
    return torch.cat([expr_cols, torch.stack(jaw_cols, dim=1)], dim=1)


@torch.no_grad()
def fit_flame_mapping(
    model: FlameModel, blendshapes: torch.Tensor, amplitudes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit each blendshape `[K, V, 3]` (metres at weight 1) with FLAME expression + jaw.

    Args:
        amplitudes: `[K]` typical weights of each blendshape, at which the residual is measured
            (default 1).

    Returns:
        mapping `[K, E + 3]` (expression coefficients, then jaw pose, per unit weight) and the
        residual `[K]`: mean vertex distance in millimetres between the blendshape and FLAME
        driven by its mapping, at the typical amplitude.
    """
    if blendshapes.shape[1] != model.num_vertices:
        raise TalkingAvatarError(
            f"the animator's blendshapes have {blendshapes.shape[1]} vertices but the head model "
            f"{model.source} has {model.num_vertices}; use the head the animator was trained on, "
            "or train on data in your model's topology"
        )
    jac = flame_jacobian(model).double()  # [3V, E + 3]
    targets = blendshapes.reshape(blendshapes.shape[0], -1).double().T  # [3V, K]
    mapping = torch.linalg.lstsq(jac, targets).solution.T.float()  # [K, E + 3]
    amps = torch.ones(len(mapping)) if amplitudes is None else amplitudes.float()
    residual = []
    for k in range(len(mapping)):
        p = model.neutral_params(1)
        p.expr[0] = mapping[k, : model.num_expr] * amps[k]
        p.jaw_pose[0] = mapping[k, model.num_expr :] * amps[k]
        got = model(p)[0] - model.v_template
        err = (got - blendshapes[k] * amps[k]).norm(dim=-1).mean()
        residual.append(float(err) * 1000.0)
    return mapping, torch.tensor(residual)


def weights_to_flame(
    model: FlameModel, mapping: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(expr `[T, E]`, jaw_pose `[T, 3]`) for blend weights `[T, K]` through mapping `[K, E + 3]`."""
    out = weights @ mapping.to(weights)
    return out[:, : model.num_expr], out[:, model.num_expr :]

"""A tiny, obviously correct Gaussian renderer: every pixel against every Gaussian.

The verification code the CPU rasterizer is held to (tests/test_cpu_raster.py, and the speed-up
benchmarks/raster.py prints). float64 torch, no tiles, no culling beyond what the maths needs
(depth outside the near/far planes, a singular 2D covariance); the EWA projection is
`avatar.raster_torch`'s. It states gsplat's classic forward pass directly:

    alpha_i(p) = min(0.99, o_i exp(-1/2 d^T S_i^-1 d)),  d = p + 0.5 - mean2d_i
    skipped where alpha_i < 1/255; blended front to back (depth order) while
    T_i (1 - alpha_i) > 1e-4, with T_i the product of (1 - alpha_j) over the earlier Gaussians;
    colour = sum_i alpha_i T_i c_i + T_final * background.

Since T only falls, "still above 1e-4 after this Gaussian" is true for a prefix of the depth
order, which is exactly the pixels' early termination. The order is a stable sort on float32
depth, as the fast renderer's packed (float32 depth bits, index) keys give: sorting on float64
swaps near-equal neighbours and moves a few pixels by up to 0.05 (shared/notes/cpu-raster.md).
`random_scene` makes scenes that exercise every culling path.
"""

from __future__ import annotations

import math

import torch

from avatar.cpu_raster import (
    ALPHA_MAX,
    ALPHA_MIN,
    EPS2D,
    FAR_PLANE,
    NEAR_PLANE,
    T_MIN,
    sh_to_color,
)
from avatar.raster_torch import (
    perspective_projection,
    quat_scale_to_covariance,
    world_to_camera,
)


def render_reference(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    sh: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int = 0,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    normals: torch.Tensor | None = None,
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    chunk_pixels: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colour `[H, W, 3]`, alpha `[H, W]` and expected depth `[H, W]`, all float64.

    Arguments as `avatar.cpu_raster.rasterize`; with `normals`, Gaussians whose normal faces
    away from the camera are dropped (the back-face culling rule).
    """
    f64 = torch.float64
    means, quats, scales = means.to(f64), quats.to(f64), scales.to(f64)  # [N, 3], [N, 4], [N, 3]
    opacities, viewmat, K = opacities.to(f64), viewmat.to(f64), K.to(f64)  # [N], [4, 4], [3, 3]
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]  # [3, 3], [3]
    covars = quat_scale_to_covariance(quats, scales)  # [N, 3, 3]
    means_c, cov_c = world_to_camera(means, covars, viewmat)  # [N, 3], [N, 3, 3] camera frame
    mean2d, cov2d = perspective_projection(means_c, cov_c, K, width, height)  # [N, 2], [N, 2, 2]
    cov2d = cov2d + eps2d * torch.eye(2, dtype=f64)  # [N, 2, 2]
    det = torch.linalg.det(cov2d)  # [N]
    z = means_c[:, 2]  # [N]

    valid = (z >= near_plane) & (z <= far_plane) & (det > 0)  # [N]
    if normals is not None:
        center = -rot.T @ trans  # [3]
        valid &= (normals.to(f64) * (means - center)).sum(-1) <= 0
    idx = torch.nonzero(valid).squeeze(1)  # [M]
    order = idx[torch.sort(z[idx].to(torch.float32), stable=True).indices]  # [M]

    dirs = means[order] - (-rot.T @ trans)  # [M, 3]
    color = sh_to_color(sh[order].to(f64), dirs, sh_degree)  # [M, 3]
    conic = torch.linalg.inv(cov2d[order])  # [M, 2, 2]
    return composite_reference(
        mean2d[order], conic, z[order], color, opacities[order], width, height,
        background=background, chunk_pixels=chunk_pixels,
    )  # fmt: skip


def composite_reference(
    mean2d: torch.Tensor,
    conic: torch.Tensor,
    depth: torch.Tensor,
    color: torch.Tensor,
    opacity: torch.Tensor,
    width: int,
    height: int,
    *,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    chunk_pixels: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blend projected Gaussians, already in depth order, front to back (the module's rule).

    Args: 2D means `[M, 2]` (pixels), inverse 2D covariances `[M, 2, 2]`, depths `[M]`,
    colours `[M, 3]`, opacities `[M]`. Returns float64 colour, alpha and depth images.
    """
    f64 = torch.float64
    center2d, conic, depth = mean2d.to(f64), conic.to(f64), depth.to(f64)
    color, opac = color.to(f64), opacity.to(f64)
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=f64), torch.arange(width, dtype=f64), indexing="ij"
    )
    pixels = torch.stack([cols.reshape(-1), rows.reshape(-1)], -1) + 0.5  # [P, 2]
    out_rgb, out_alpha, out_depth = [], [], []
    for start in range(0, pixels.shape[0], chunk_pixels):
        d = pixels[start : start + chunk_pixels, None, :] - center2d[None]  # [p, M, 2]
        sigma = 0.5 * torch.einsum("pmi,mij,pmj->pm", d, conic, d)  # [p, M]
        alpha = torch.clamp(opac * torch.exp(-sigma), max=ALPHA_MAX)  # [p, M]
        alpha = torch.where(alpha < ALPHA_MIN, torch.zeros_like(alpha), alpha)
        after = torch.cumprod(1.0 - alpha, dim=1)  # [p, M] T after each Gaussian
        included = after > T_MIN  # [p, M] a prefix of each row
        before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], 1)  # [p, M]
        weight = torch.where(included, alpha * before, torch.zeros_like(alpha))  # [p, M]
        acc = weight.sum(1)  # [p]
        out_rgb.append(weight @ color + (1.0 - acc)[:, None] * torch.tensor(background, dtype=f64))
        out_alpha.append(acc)
        out_depth.append((weight @ depth) / acc.clamp_min(1e-10))
    rgb = torch.cat(out_rgb).reshape(height, width, 3)
    return (
        rgb,
        torch.cat(out_alpha).reshape(height, width),
        torch.cat(out_depth).reshape(height, width),
    )


def random_scene(
    n: int, seed: int, *, sh_degree: int = 0, width: int = 64, height: int = 48
) -> dict[str, torch.Tensor | int]:
    """A random scene that exercises every path: Gaussians spread over and beyond the view,
    some behind the camera, some off screen, some nearly transparent, big and tiny, with SH
    coefficients of `sh_degree`. Camera at the origin looking down +z (identity viewmat).
    """
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    depth = 0.5 + 2.0 * rand(n)  # [n]
    depth[: n // 10] *= -1.0  # behind the camera
    spread = 1.6 * depth.abs()  # [n] reaches well past the image edges (fov ~ 60 degrees)
    means = torch.stack(
        [(rand(n) - 0.5) * spread, (rand(n) - 0.5) * spread * height / width, depth], -1
    )  # [n, 3]
    quats = torch.randn(n, 4, generator=gen)  # [n, 4]
    scales = 0.01 * torch.exp(1.2 * torch.randn(n, 3, generator=gen))  # [n, 3]
    opacities = rand(n)  # [n]
    opacities[n // 10 : n // 10 + n // 20] *= 0.01  # some below 1/255 (in front of the camera)
    k = (sh_degree + 1) ** 2
    sh = 0.6 * torch.randn(n, k, 3, generator=gen)  # [n, K, 3]
    sh[:, 1:] *= 0.5
    focal = 0.5 * width / math.tan(math.radians(30))
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return dict(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        sh=sh,
        viewmat=torch.eye(4),
        K=K,
        width=width,
        height=height,
    )

"""Torch twins of the CPU rasterizer's projection and binning stages: slow, vectorised, readable.

gsplat keeps a plain-torch twin of each CUDA kernel (`gsplat/cuda/_torch_impl.py`) and tests the
two against each other; these are the twins of `avatar.cpu_raster`'s numba stages. Each function
states, tensor by tensor, what one stage computes, on any device, in float64 (as the projection
kernel computes). tests/test_raster_torch.py holds every numba stage to its twin on random
scenes, and `avatar.raster_reference` (the brute-force renderer) builds on the projection maths.

- `project`: EWA projection and culling, twin of `cpu_raster.project`: per Gaussian its camera
  depth, pixel centre, conic, log alpha threshold, pixel box and culling status.
- `depth_order`: the visible Gaussians sorted by float32 depth, ties by index, twin of
  `cpu_raster.depth_order` (a radix sort there).
- `isect_tiles`: the (tile, Gaussian) pairs, by tile and in depth order within a tile, built as
  gsplat's `_isect_tiles` builds them, one sort on (tile << 32 | float32 depth bits) keys; twin of
  `cpu_raster.depth_order` followed by `cpu_raster.bin_tiles` (a parallel counting sort there).

A Gaussian lands in every tile its pixel box touches: the box is the opacity-aware extent of its
alpha >= 1/255 ellipse, so binning needs no other test (the compositing kernel skips the rows
of a tile the ellipse misses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avatar.cpu_raster import (
    ALPHA_MIN,
    CULL_BACKFACE,
    CULL_DEPTH,
    CULL_OFFSCREEN,
    CULL_TRANSPARENT,
    EPS2D,
    FAR_PLANE,
    NEAR_PLANE,
    TILE,
    VISIBLE,
)
from avatar.quaternion import quat_to_matrix

#: The pixel box is this much wider than the exact ellipse (relative, then px), so the
#: per-pixel test, not the box, decides at the rim: the kernel's margin.
BOX_MARGIN = (1.0001, 1e-3)


def quat_scale_to_covariance(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariances R diag(s)^2 R^T `[..., 3, 3]` from wxyz quaternions `[..., 4]` (any
    length) and linear scales `[..., 3]`. A zero quaternion gives NaN (the kernel culls it)."""
    rot = quat_to_matrix(quats / quats.norm(dim=-1, keepdim=True))  # [..., 3, 3]
    m = rot * scales[..., None, :]  # [..., 3, 3] = R diag(s)
    return m @ m.transpose(-1, -2)


def world_to_camera(
    means: torch.Tensor, covars: torch.Tensor, viewmat: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres `[N, 3]` and covariances `[N, 3, 3]` moved by the world-to-camera `[4, 4]`."""
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]  # [3, 3], [3]
    means_c = means @ rot.T + trans  # [N, 3]
    covars_c = rot @ covars @ rot.T  # [N, 3, 3]
    return means_c, covars_c


def perspective_projection(
    means_c: torch.Tensor, covars_c: torch.Tensor, K: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres `[N, 2]` and 2D covariances `[N, 2, 2]` (EWA, no blur added) of camera-frame
    Gaussians. The Jacobian is taken at the centre clamped to the image plus 30 % of the half
    field of view on each side (gsplat's clamp), so Gaussians far off screen stay finite."""
    x, y, z = means_c.unbind(-1)  # [N] each
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z * torch.clamp(x / z, min=-lim_x_neg, max=lim_x_pos)  # [N]
    ty = z * torch.clamp(y / z, min=-lim_y_neg, max=lim_y_pos)  # [N]
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [
            torch.stack([fx / z, zero, -fx * tx / z**2], -1),
            torch.stack([zero, fy / z, -fy * ty / z**2], -1),
        ],
        dim=-2,
    )  # [N, 2, 3]
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)  # [N, 2, 2]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)  # [N, 2]
    return means2d, cov2d


def pixel_box_edges(
    means2d: torch.Tensor, cov2d: torch.Tensor, thresholds: torch.Tensor
) -> torch.Tensor:
    """`[N, 4]` the unrounded edges (left, right, top, bottom) of each Gaussian's pixel box.

    The alpha >= 1/255 ellipse is 1/2 d^T S^-1 d <= thr (thr = ln(255 o)); its half-widths are
    sqrt(2 thr S_xx) and sqrt(2 thr S_yy), widened by `BOX_MARGIN`. Pixel centres sit at
    (col + 0.5, row + 0.5), so the box's pixels are ceil(left) .. floor(right) (rows alike).
    """
    extent = torch.sqrt(2.0 * thresholds)  # [N]
    scale, pad = BOX_MARGIN
    rx = extent * torch.sqrt(cov2d[..., 0, 0]) * scale + pad  # [N]
    ry = extent * torch.sqrt(cov2d[..., 1, 1]) * scale + pad  # [N]
    mx, my = means2d.unbind(-1)  # [N] each
    return torch.stack([mx - rx - 0.5, mx + rx - 0.5, my - ry - 0.5, my + ry - 0.5], -1)


@dataclass
class Projection:
    """What the projection stage gives per Gaussian (`project`).

    Attributes:
        depths: `[N]` camera-space z, metres.
        means2d: `[N, 2]` pixel centres.
        conics: `[N, 3]` (a, b, c): the inverse 2D covariance [[a, b], [b, c]], blur included.
        opacities: `[N]` in [0, 1].
        thresholds: `[N]` ln(o / (1/255)): a pixel is drawn where 1/2 d^T S^-1 d <= this.
        rects: `[N, 4]` int64 first and last pixel column, first and last pixel row
            (inclusive) of each visible Gaussian's box; zero for culled ones.
        status: `[N]` int8 `VISIBLE` or the `CULL_*` reason (the first rule that applies).
    """

    depths: torch.Tensor  # [N]
    means2d: torch.Tensor  # [N, 2]
    conics: torch.Tensor  # [N, 3]
    opacities: torch.Tensor  # [N]
    thresholds: torch.Tensor  # [N]
    rects: torch.Tensor  # [N, 4]
    status: torch.Tensor  # [N]


def project(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    *,
    normals: torch.Tensor | None = None,
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
) -> Projection:
    """The projection stage of `cpu_raster.project`, in float64 torch.

    Arguments as `cpu_raster.project`; `normals` given means back-face culling is on.
    Culling, in this order: depth outside [near_plane, far_plane] (or NaN), opacity below
    1/255, a normal facing away from the camera, a zero quaternion, a 2D covariance that is
    not positive definite, a pixel box that holds no pixel centre (off screen, or too small).
    """
    f64 = torch.float64
    means, opac = means.to(f64), opacities.to(f64).reshape(-1)  # [N, 3], [N]
    viewmat, K = viewmat.to(means.device, f64), K.to(means.device, f64)  # [4, 4], [3, 3]
    covars = quat_scale_to_covariance(quats.to(f64), scales.to(f64))  # [N, 3, 3]
    means_c, covars_c = world_to_camera(means, covars, viewmat)  # [N, 3], [N, 3, 3]
    means2d, cov2d = perspective_projection(means_c, covars_c, K, width, height)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=f64, device=means.device)  # [N, 2, 2]
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]  # [N] each
    det = a * c - b * b  # [N]
    conics = torch.stack([c, -b, a], -1) / det[..., None]  # [N, 3]
    depths = means_c[..., 2]  # [N]
    thresholds = torch.log(opac / ALPHA_MIN)  # [N]

    edges = pixel_box_edges(means2d, cov2d, thresholds)  # [N, 4]
    first = torch.clamp_min(torch.ceil(edges[..., 0::2]), 0.0)  # [N, 2] first column, row
    size = torch.tensor([width, height], dtype=f64, device=means.device)  # [2]
    last = torch.minimum(torch.floor(edges[..., 1::2]), size - 1.0)  # [N, 2] last column, row
    holds_pixels = (first <= last).all(-1)  # [N] False for NaN too

    rules = [  # (culled, reason), in the kernel's order: the first that applies is reported
        (~((depths >= near_plane) & (depths <= far_plane)), CULL_DEPTH),
        (~(opac >= ALPHA_MIN), CULL_TRANSPARENT),
    ]
    if normals is not None:
        center = -viewmat[:3, :3].T @ viewmat[:3, 3]  # [3] camera centre, world
        rules.append(((normals.to(f64) * (means - center)).sum(-1) > 0, CULL_BACKFACE))
    rules += [
        (~((quats.float() ** 2).sum(-1) > 0), CULL_OFFSCREEN),  # |q|^2 in float32, as there
        (~(det > 0), CULL_OFFSCREEN),
        (~holds_pixels, CULL_OFFSCREEN),
    ]
    status = torch.full_like(depths, VISIBLE, dtype=torch.int8)  # [N]
    for culled, reason in reversed(rules):
        status = torch.where(culled, reason, status)
    visible = (status == VISIBLE)[:, None]  # [N, 1]
    box = torch.stack([first[:, 0], last[:, 0], first[:, 1], last[:, 1]], -1)  # [N, 4]
    rects = torch.where(visible, box, torch.zeros_like(box)).to(torch.int64)  # [N, 4]
    return Projection(depths, means2d, conics, opac, thresholds, rects, status)


def depth_order(depths: torch.Tensor, status: torch.Tensor) -> torch.Tensor:
    """`[M]` int64 indices of the visible Gaussians sorted by float32 depth, ties by index.

    Args:
        depths: `[N]` camera-space z (rounded to float32 first, as the kernels compare it).
        status: `[N]` `VISIBLE` or a `CULL_*` reason.
    """
    visible = torch.nonzero(status == VISIBLE).squeeze(1)  # [M]
    keys = depths[visible].to(torch.float32)  # [M]
    return visible[torch.sort(keys, stable=True).indices]


@torch.no_grad()
def isect_tiles(
    rects: torch.Tensor,
    depths: torch.Tensor,
    status: torch.Tensor,
    tiles_x: int,
    tiles_y: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tile lists: every (tile, visible Gaussian) pair whose pixel box touches the tile.

    Args:
        rects: `[N, 4]` pixel boxes (first/last column, first/last row, inclusive).
        depths: `[N]` camera-space z (rounded to float32 for the order).
        status: `[N]` `VISIBLE` or a `CULL_*` reason; only visible Gaussians are binned.
        tiles_x, tiles_y: the grid of `TILE` x `TILE` pixel tiles, row-major.

    Returns:
        (offsets `[tiles_x * tiles_y + 1]` int64, ids `[P]` int64): tile t's Gaussians are
        ids[offsets[t]:offsets[t + 1]], in depth order (float32 depth, ties by index).
    """
    visible = torch.nonzero(status == VISIBLE).squeeze(1)  # [M]
    tiles = rects[visible].to(torch.int64) // TILE  # [M, 4] first/last tile column, row
    cols = tiles[:, 1] - tiles[:, 0] + 1  # [M]
    per_gauss = cols * (tiles[:, 3] - tiles[:, 2] + 1)  # [M] tiles each Gaussian touches
    # one pair per (Gaussian, tile of its box), the box's tiles row-major
    ids = torch.repeat_interleave(visible, per_gauss)  # [P]
    first = torch.cumsum(per_gauss, 0) - per_gauss  # [M] where each Gaussian's pairs start
    k = torch.arange(len(ids), device=ids.device) - torch.repeat_interleave(first, per_gauss)
    width = torch.repeat_interleave(cols, per_gauss)  # [P]
    tx = torch.repeat_interleave(tiles[:, 0], per_gauss) + k % width  # [P]
    ty = torch.repeat_interleave(tiles[:, 2], per_gauss) + k // width  # [P]
    tile_ids = ty * tiles_x + tx  # [P]
    # positive float32 depths order as their bits; a stable sort keeps index order for ties
    depth_bits = depths.to(torch.float32)[ids].view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    keys = (tile_ids << 32) | depth_bits  # [P]
    perm = torch.sort(keys, stable=True).indices  # [P]
    counts = torch.bincount(tile_ids, minlength=tiles_x * tiles_y)  # [T]
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])  # [T + 1]
    return offsets, ids[perm]

"""Each numba stage of the CPU rasterizer, alone, against its torch twin (avatar/raster_torch.py).

As gsplat tests its CUDA kernels against `gsplat/cuda/_torch_impl.py`: the projection kernel
against `raster_torch.project` on random scenes (every culling rule, rotated cameras, an
off-centre principal point, back faces, NaN and zero parameters) to float tolerance; the depth
sort and the binning, both fed the numba projection's own output, against `depth_order` and
`isect_tiles`, to the exact (tile, Gaussian) pair and order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar import cpu_raster, raster_torch
from avatar.quaternion import quat_to_matrix
from avatar.raster_reference import random_scene

#: How close (px) a box edge may come to a pixel-centre boundary before the kernel, whose
#: contracted and reassociated float64 maths differs from torch's in the last bits, may round it
#: the other way. Only Gaussians with such an edge may differ in box or visibility.
EDGE_TIE_PX = 1e-6

#: Largest conic error relative to sqrt(a c) (see `_assert_projections_match`).
CONIC_TOLERANCE = 2e-5

CAMERA_KEYS = ("viewmat", "K", "width", "height")


def _scene(seed: int, n: int = 600, *, width: int = 64, height: int = 48, rotate: bool = False):
    """`random_scene`, optionally seen by a camera turned up to ~15 degrees, with its principal
    point off centre (the Jacobian clamp is asymmetric then)."""
    scene = random_scene(n, seed, width=width, height=height)
    gen = torch.Generator().manual_seed(1000 + seed)
    if rotate:
        q = torch.cat([torch.ones(1), 0.13 * torch.randn(3, generator=gen)])  # [4] near identity
        scene["viewmat"][:3, :3] = quat_to_matrix(q)
        scene["viewmat"][:3, 3] = 0.05 * torch.randn(3, generator=gen)
        scene["K"][0, 2] *= 0.7
        scene["K"][1, 2] *= 1.2
    return scene


def _project_both(scene: dict, normals: torch.Tensor | None = None):
    gaussians = [scene[k] for k in ("means", "quats", "scales", "opacities")]
    camera = [scene[k] for k in CAMERA_KEYS]
    fast = cpu_raster.project(
        *gaussians, *camera, normals=normals, backface_culling=normals is not None
    )
    twin = raster_torch.project(*gaussians, *camera, normals=normals)
    return fast, twin


def _edge_ties(scene: dict, twin: raster_torch.Projection) -> np.ndarray:
    """`[N]` bool: Gaussians with a box edge within EDGE_TIE_PX of a pixel-centre boundary."""
    covars = raster_torch.quat_scale_to_covariance(
        scene["quats"].double(), scene["scales"].double()
    )
    means_c, covars_c = raster_torch.world_to_camera(
        scene["means"].double(), covars, scene["viewmat"].double()
    )
    means2d, cov2d = raster_torch.perspective_projection(
        means_c, covars_c, scene["K"].double(), scene["width"], scene["height"]
    )
    cov2d = cov2d + cpu_raster.EPS2D * torch.eye(2, dtype=torch.float64)
    edges = raster_torch.pixel_box_edges(means2d, cov2d, twin.thresholds)  # [N, 4]
    return ((edges - edges.round()).abs() < EDGE_TIE_PX).any(-1).numpy()


def _assert_projections_match(scene: dict, fast: cpu_raster.Projection, twin) -> None:
    ties = _edge_ties(scene, twin)
    assert ties.sum() <= 2, "more edge ties than chance allows: a real difference"
    status = twin.status.numpy()
    same = ~ties
    np.testing.assert_array_equal(fast.status[same], status[same])
    finite = np.isfinite(twin.depths.numpy())
    np.testing.assert_allclose(fast.depth[finite], twin.depths.numpy()[finite], rtol=1e-6)

    vis = (fast.status == cpu_raster.VISIBLE) & (status == cpu_raster.VISIBLE)  # [N]
    assert vis.sum() > 50
    np.testing.assert_array_equal(fast.rect[vis & same], twin.rects.numpy()[vis & same])
    rec = fast.record[vis].astype(np.float64)  # [M, 7]
    t = {k: getattr(twin, k)[torch.from_numpy(vis)].numpy() for k in ("means2d", "conics")}
    # float32 records of float64 maths: a few float32 ulps
    np.testing.assert_allclose(rec[:, 0:2], t["means2d"], rtol=1e-6, atol=1e-4)
    # The kernel multiplies quaternion components in float32, so the covariance is float32-exact
    # in its norm, not entry by entry: an off-diagonal b that nearly cancels is only as exact as
    # sqrt(a c) (>= |b|, the conic being positive definite), the scale it is compared to.
    conics = rec[:, 2:5] * [2.0, 1.0, 2.0]  # [M, 3] (a, b, c)
    scale = np.sqrt(t["conics"][:, 0] * t["conics"][:, 2])[:, None]  # [M, 1]
    assert (np.abs(conics - t["conics"]) / scale).max() < CONIC_TOLERANCE
    np.testing.assert_array_equal(rec[:, 5], twin.opacities.numpy()[vis].astype(np.float32))
    np.testing.assert_allclose(rec[:, 6], twin.thresholds.numpy()[vis], rtol=1e-6)


@pytest.mark.parametrize(
    ("seed", "width", "height", "rotate"),
    [(0, 64, 48, False), (1, 37, 23, False), (2, 96, 80, True), (3, 50, 71, True)],
)
def test_projection_matches_its_twin(seed: int, width: int, height: int, rotate: bool) -> None:
    scene = _scene(seed, width=width, height=height, rotate=rotate)
    fast, twin = _project_both(scene)
    _assert_projections_match(scene, fast, twin)
    for reason in (cpu_raster.CULL_DEPTH, cpu_raster.CULL_OFFSCREEN, cpu_raster.CULL_TRANSPARENT):
        assert (fast.status == reason).any()


def test_projection_with_back_faces_matches_its_twin() -> None:
    scene = _scene(4, rotate=True)
    gen = torch.Generator().manual_seed(4)
    normals = torch.nn.functional.normalize(torch.randn(600, 3, generator=gen), dim=1)
    fast, twin = _project_both(scene, normals)
    _assert_projections_match(scene, fast, twin)
    assert (fast.status == cpu_raster.CULL_BACKFACE).sum() > 100


def test_projection_of_broken_gaussians_matches_its_twin() -> None:
    """NaN anywhere and zero quaternions or scales are culled by the same rule in both."""
    scene = _scene(5)
    scene["means"][20, 0] = float("nan")
    scene["scales"][21, 1] = float("nan")
    scene["opacities"][22] = float("nan")
    scene["quats"][23] = float("nan")
    scene["quats"][24] = 0.0
    scene["scales"][25] = 0.0  # a point: the blur alone keeps it drawable
    scene["means"][26, 2] = cpu_raster.NEAR_PLANE / 2
    fast, twin = _project_both(scene)
    _assert_projections_match(scene, fast, twin)
    assert (fast.status[20:25] != cpu_raster.VISIBLE).all()


def _bin_both(scene: dict, fast: cpu_raster.Projection):
    """Tile lists of the numba stages (depth sort, gather's boxes, binning) and of the twin, as
    original Gaussian indices, from the same projection."""
    width, height = scene["width"], scene["height"]
    order = cpu_raster.depth_order(fast.depth, fast.status)  # [M]
    offsets, ids = cpu_raster.bin_tiles(fast.rect[order], width, height)
    tiles_x, tiles_y = -(-width // cpu_raster.TILE), -(-height // cpu_raster.TILE)
    twin_offsets, twin_ids = raster_torch.isect_tiles(
        torch.from_numpy(fast.rect),
        torch.from_numpy(fast.depth),
        torch.from_numpy(fast.status),
        tiles_x,
        tiles_y,
    )
    return (offsets, order[ids]), (twin_offsets.numpy(), twin_ids.numpy())


@pytest.mark.parametrize(
    ("seed", "width", "height", "rotate"),
    [(0, 64, 48, False), (6, 37, 23, False), (7, 200, 120, True)],
)
def test_binning_matches_its_twin(seed: int, width: int, height: int, rotate: bool) -> None:
    scene = _scene(seed, n=1500, width=width, height=height, rotate=rotate)
    scene["scales"][:20] *= 8.0  # a few large Gaussians spanning many tiles
    fast, _ = _project_both(scene)
    (offsets, ids), (twin_offsets, twin_ids) = _bin_both(scene, fast)
    np.testing.assert_array_equal(offsets, twin_offsets)  # the same count in every tile
    np.testing.assert_array_equal(ids, twin_ids)  # the same Gaussians, in the same order
    assert offsets[-1] > 1.2 * (fast.status == cpu_raster.VISIBLE).sum()  # many span tiles


def test_depth_ties_keep_index_order_in_both() -> None:
    """Equal float32 depths (a flat layer of Gaussians) come out by index in the sort and in
    every tile list, in the kernels and in the twins."""
    scene = _scene(8, n=1000)
    z = scene["means"][:, 2]
    scene["means"][:, 2] = torch.where(z > 0, torch.round(z * 4) / 4, z)  # [N] many exact ties
    fast, _ = _project_both(scene)
    order = cpu_raster.depth_order(fast.depth, fast.status)
    twin_order = raster_torch.depth_order(
        torch.from_numpy(fast.depth), torch.from_numpy(fast.status)
    )
    np.testing.assert_array_equal(order, twin_order.numpy())
    depths = fast.depth[order]
    assert (np.diff(depths) == 0).sum() > 500  # the ties are really there
    (offsets, ids), (twin_offsets, twin_ids) = _bin_both(scene, fast)
    np.testing.assert_array_equal(offsets, twin_offsets)
    np.testing.assert_array_equal(ids, twin_ids)


def test_twins_run_in_float32_inputs_and_give_float64() -> None:
    scene = _scene(9, n=50)
    twin = raster_torch.project(*[scene[k] for k in ("means", "quats", "scales", "opacities")],
                                *[scene[k] for k in CAMERA_KEYS])  # fmt: skip
    assert twin.means2d.dtype == torch.float64 and twin.rects.dtype == torch.int64
    assert twin.status.dtype == torch.int8 and twin.status.shape == (50,)

"""The CPU rasterizer against the brute-force float64 reference (avatar/raster_reference.py)."""

from __future__ import annotations

import gc
import math
import os
import threading

import numpy as np
import pytest
import torch

from avatar import cpu_raster, threads
from avatar.cpu_raster import rasterize, sh_basis, sh_to_color
from avatar.raster_kernels import KERNELS
from avatar.raster_reference import random_scene, render_reference

#: Largest colour error allowed against the reference (shared/notes/cpu-raster.md).
TOLERANCE = 1e-3


def _render_both(scene: dict, **kwargs) -> tuple[cpu_raster.RasterResult, tuple]:
    fast = rasterize(**scene, return_depth=True, **kwargs)
    ref_kwargs = {k: v for k, v in kwargs.items() if k not in ("backface_culling",)}
    if not kwargs.get("backface_culling"):
        ref_kwargs.pop("normals", None)
    ref = render_reference(**scene, **ref_kwargs)
    return fast, ref


def _assert_close(fast: cpu_raster.RasterResult, ref: tuple) -> None:
    rgb, alpha, depth = ref
    assert fast.color.shape == rgb.shape and fast.alpha.shape == alpha.shape
    assert (fast.color.double() - rgb).abs().max() < TOLERANCE
    assert (fast.alpha.double() - alpha).abs().max() < TOLERANCE
    # expected depth is a ratio: compare where the pixel is clearly covered
    covered = alpha > 0.05
    rel = ((fast.depth.double() - depth).abs() / depth.abs().clamp_min(1e-6))[covered]
    assert rel.numel() == 0 or rel.max() < 1e-3


@pytest.mark.parametrize(
    ("width", "height", "sh_degree", "seed"),
    [
        (64, 64, 0, 0),  # square
        (80, 48, 1, 1),  # non-square, SH 1
        (37, 23, 2, 2),  # odd sizes, partial tiles, SH 2
        (50, 71, 3, 3),  # portrait, SH 3
    ],
)
def test_matches_reference_on_random_scenes(width: int, height: int, sh_degree: int, seed: int):
    scene = random_scene(300, seed, sh_degree=sh_degree, width=width, height=height)
    fast, ref = _render_both(scene, sh_degree=sh_degree, background=(0.2, 0.5, 0.9))
    _assert_close(fast, ref)
    # the scene really has culled Gaussians of each kind, and some that are drawn
    status = fast.status
    assert (status == cpu_raster.CULL_DEPTH).any()
    assert (status == cpu_raster.CULL_OFFSCREEN).any()
    assert (status == cpu_raster.CULL_TRANSPARENT).any()
    assert fast.n_visible > 50


def test_matches_reference_on_dense_head():
    """Many overlapping layers, so early termination and the 1e-4 stop matter."""
    gen = torch.Generator().manual_seed(7)
    n = 2000
    u = torch.randn(n, 3, generator=gen)
    means = u / u.norm(dim=1, keepdim=True) * torch.tensor([0.08, 0.11, 0.10])  # [n, 3]
    normals = means / torch.tensor([0.08, 0.11, 0.10]) ** 2
    normals = normals / normals.norm(dim=1, keepdim=True)  # [n, 3]
    viewmat = torch.eye(4)
    viewmat[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # OpenCV camera on +z
    viewmat[2, 3] = 0.6
    focal = 0.5 * 48 / math.tan(math.radians(10))
    scene = dict(
        means=means,
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.tensor([6e-3, 6e-3, 6e-4]) * torch.exp(0.2 * torch.randn(n, 3, generator=gen)),
        opacities=0.9 + 0.09 * torch.rand(n, generator=gen),
        sh=torch.randn(n, 1, 3, generator=gen),
        viewmat=viewmat,
        K=torch.tensor([[focal, 0, 24.0], [0, focal, 24.0], [0, 0, 1]]),
        width=48,
        height=48,
    )
    for culling in (False, True):
        fast, ref = _render_both(scene, normals=normals, backface_culling=culling)
        _assert_close(fast, ref)
        assert fast.alpha.max() > 0.999  # pixels did end early
    assert (fast.status == cpu_raster.CULL_BACKFACE).sum() > n // 4


def test_depth_is_a_separate_kernel_that_draws_the_same_image():
    """Asking for depth compiles a kernel with a fifth sum per pixel; colour and alpha are the
    same arithmetic in both, on image sizes that end in partial tiles and partial bands."""
    scene = random_scene(400, 11, width=61, height=45)
    with_depth = rasterize(**scene, return_depth=True)
    without = rasterize(**scene)
    assert without.depth is None and with_depth.depth.shape == (45, 61)
    assert torch.equal(with_depth.color, without.color)
    assert torch.equal(with_depth.alpha, without.alpha)
    assert with_depth.n_visible > 100 and (with_depth.alpha[-1] > 0.5).any()


def test_exp2_polynomial_holds_its_error_bound():
    """Compositing's alpha = 2^x uses EXP2_POLY for 2^f, f in [-1/2, 1/2]: within 2.7e-6 of
    2^f (relative), evaluated in float32 as the kernel does."""
    from avatar.raster_kernels import EXP2_POLY

    f = np.linspace(-0.5, 0.5, 100_001, dtype=np.float32)
    p = np.float32(EXP2_POLY[-1])
    for c in reversed(EXP2_POLY[:-1]):
        p = p * f + np.float32(c)
    assert np.abs(p.astype(np.float64) / np.exp2(f.astype(np.float64)) - 1.0).max() < 2.8e-6


def test_empty_and_fully_culled_scenes_give_the_background():
    scene = random_scene(0, 0)
    out = rasterize(**scene, background=(0.1, 0.2, 0.3))
    assert torch.allclose(out.color, torch.tensor([0.1, 0.2, 0.3]).expand(48, 64, 3))
    assert out.alpha.abs().max() == 0.0 and out.n_visible == 0

    scene = random_scene(50, 1)
    scene["means"][:, 2] = -1.0  # everything behind the camera
    out = rasterize(**scene, background=(0.0, 0.0, 0.0))
    assert out.color.abs().max() == 0.0
    assert (out.status == cpu_raster.CULL_DEPTH).all()


def test_sh_basis_matches_gsplat_torch_implementation():
    """Our SH constants and ordering against gsplat's readable torch twin (CPU-only code)."""
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(100, 3, generator=gen, dtype=torch.float64)
    coeffs = torch.randn(100, 16, 3, generator=gen, dtype=torch.float64)
    for degree in range(4):
        ours = sh_to_color(coeffs, dirs, degree)  # max(SH + 0.5, 0)
        theirs = torch.clamp_min(torch_impl._spherical_harmonics(degree, dirs, coeffs) + 0.5, 0)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    unit = dirs / dirs.norm(dim=1, keepdim=True)
    assert sh_basis(3, unit).shape == (100, 16)


def test_backface_culling_needs_normals_and_only_drops_back_faces():
    scene = random_scene(200, 5)
    plain = rasterize(**scene)
    # without normals the flag is ignored
    same = rasterize(**scene, backface_culling=True)
    assert torch.equal(plain.color, same.color)
    # normals all facing the camera (which looks down +z): nothing is dropped
    towards = torch.tensor([0.0, 0.0, -1.0]).expand(200, 3)
    kept = rasterize(**scene, normals=towards, backface_culling=True)
    assert torch.equal(plain.color, kept.color)
    away = rasterize(**scene, normals=-towards, backface_culling=True)
    assert away.n_visible == 0


def test_depth_is_none_unless_asked_and_output_types():
    scene = random_scene(100, 3)
    out = rasterize(**scene)
    assert out.depth is None
    assert out.color.dtype == torch.float32 and out.color.shape == (48, 64, 3)
    assert out.alpha.dtype == torch.float32 and out.alpha.shape == (48, 64)
    assert isinstance(out.status, np.ndarray) and out.status.shape == (100,)


def test_depth_order_equals_a_sort_on_packed_keys():
    """The radix sort gives the order of (float32 depth bits << 32 | index), ties included."""
    rng = np.random.default_rng(0)
    n = 5000
    depth = rng.choice(np.float32([0.5, 0.50000006, 0.7, 3.0, 1e-2]), n)  # many exact ties
    depth = np.where(rng.random(n) < 0.5, depth, rng.uniform(0.1, 5, n)).astype(np.float32)
    status = (rng.random(n) < 0.2).astype(np.int8)  # some culled
    visible = np.flatnonzero(status == cpu_raster.VISIBLE)
    keys = (depth[visible].view(np.uint32).astype(np.uint64) << np.uint64(32)) | visible.astype(
        np.uint64
    )
    expected = (np.sort(keys) & np.uint64(0xFFFFFFFF)).astype(np.int64)
    np.testing.assert_array_equal(cpu_raster.depth_order(depth, status), expected)


def test_non_finite_gaussians_are_culled_not_drawn():
    scene = random_scene(50, 0)
    scene["means"][20, 0] = float("nan")
    scene["scales"][21, 1] = float("nan")
    scene["opacities"][22] = float("nan")
    scene["quats"][23] = float("nan")
    out = rasterize(**scene)
    assert (out.status[20:24] != cpu_raster.VISIBLE).all()
    assert torch.isfinite(out.color).all() and torch.isfinite(out.alpha).all()


def test_clamp_writes_what_render_returns():
    scene = random_scene(300, 4)
    scene["sh"] = scene["sh"] * 4.0  # colours well outside [0, 1]
    plain = rasterize(**scene, background=(0.2, 0.5, 0.9))
    clamped = rasterize(**scene, background=(0.2, 0.5, 0.9), clamp=True)
    assert plain.color.max() > 1.0 or plain.color.min() < 0.0
    assert torch.equal(clamped.color, plain.color.clamp(0.0, 1.0))
    assert torch.equal(clamped.alpha, plain.alpha.clamp(0.0, 1.0))


def test_kernels_run_on_a_pool_safe_for_concurrent_callers():
    """numba's "workqueue" layer is not safe when several threads launch kernels at once (the
    viewer renders one frame per tab at once); TBB is what the policy picks when installed."""
    layer = threads.threading_layer()
    assert layer in ("tbb", "omp")
    if threads._find_tbb() is not None and not os.environ.get("NUMBA_THREADING_LAYER"):
        assert layer == "tbb"


def test_concurrent_renders_from_several_threads_give_identical_images():
    scenes = [random_scene(400, seed, width=96, height=80) for seed in (11, 12, 13)]
    expected = [rasterize(**s, return_depth=True) for s in scenes]
    results: dict[tuple[int, int], cpu_raster.RasterResult] = {}

    def work(worker: int) -> None:
        for rep in range(4):
            k = (worker + rep) % len(scenes)
            results[(worker, rep)] = rasterize(**scenes[k], return_depth=True)

    workers = [threading.Thread(target=work, args=(w,)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == 12
    for (worker, rep), out in results.items():
        ref = expected[(worker + rep) % len(scenes)]
        assert torch.equal(out.color, ref.color) and torch.equal(out.alpha, ref.alpha)
        assert torch.equal(out.depth, ref.depth)


def test_tile_lists_are_exact_and_in_depth_order():
    """Binning against a direct rule: tile t lists every Gaussian whose pixel box touches it,
    in depth (index) order."""
    rng = np.random.default_rng(3)
    m, tiles_x, tiles_y = 500, 5, 4
    x0 = rng.integers(0, 80, m)
    y0 = rng.integers(0, 64, m)
    rect = np.stack(
        [
            x0,
            np.minimum(x0 + rng.integers(0, 40, m), 79),
            y0,
            np.minimum(y0 + rng.integers(0, 40, m), 63),
        ],
        axis=1,
    ).astype(np.int32)  # [M, 4]
    offsets, ids = KERNELS.bin(rect, tiles_x, tiles_y, 3)  # three runs, merged
    for t in range(tiles_x * tiles_y):
        tx, ty = t % tiles_x, t // tiles_x
        hit = (
            (rect[:, 0] // 16 <= tx)
            & (rect[:, 1] // 16 >= tx)
            & (rect[:, 2] // 16 <= ty)
            & (rect[:, 3] // 16 >= ty)
        )
        np.testing.assert_array_equal(ids[offsets[t] : offsets[t + 1]], np.flatnonzero(hit))


def test_kept_log_thresholds_follow_the_opacities_however_they_change():
    """The projection's ln(opacity / ALPHA_MIN) are kept per opacity tensor across frames;
    numbers changed behind torch's back (through a numpy view: no version bump) are seen."""
    scene = random_scene(300, 5)
    opacities = scene["opacities"].clone()
    scene["opacities"] = opacities
    first = rasterize(**scene)
    assert torch.equal(rasterize(**scene).color, first.color)  # the kept entry, same image
    opacities.numpy()[:150] *= 0.25
    changed = rasterize(**scene)
    fresh = rasterize(**{**scene, "opacities": opacities.clone()})  # a tensor never seen
    assert not torch.equal(changed.color, first.color)
    assert torch.equal(changed.color, fresh.color)
    expected = np.log(opacities.numpy().astype(np.float64) / cpu_raster.ALPHA_MIN)
    kept = cpu_raster._THRESHOLDS.get(opacities, opacities.numpy())
    np.testing.assert_allclose(kept, expected, rtol=1e-15)
    key = id(opacities)
    assert key in cpu_raster._THRESHOLDS._entries
    del scene, opacities
    gc.collect()
    assert key not in cpu_raster._THRESHOLDS._entries  # an entry leaves with its tensor

"""The project's own CPU Gaussian rasterizer: gsplat's classic forward pass, compiled with numba.

Same contract and maths as `gsplat.rasterization(..., rasterize_mode="classic", eps2d=0.3)`:

- EWA projection: the 3D covariance R S S^T R^T goes to camera space and through the Jacobian
  of the pinhole projection, with gsplat's clamp of x/z and y/z to 1.3x the field of view so
  Gaussians far off screen do not blow up; then +eps2d px^2 on the 2D covariance diagonal.
- Pixel (i, j) is sampled at (j + 0.5, i + 0.5). alpha = min(ALPHA_MAX, o exp(-1/2 d^T S^-1 d));
  contributions with alpha < 1/255 are skipped; a Gaussian that would bring the transmittance T
  to <= 1e-4 is not blended and ends that pixel; colour = sum_i c_i alpha_i T_i + T bg.
- One difference on purpose: alpha is clamped at 0.99 (the original 3DGS rasterizer, which
  trained the avatars we load) where gsplat 1.5.3 clamps at 0.999; only Gaussians with opacity
  above 0.99 at their centre see it.

The pipeline, per frame, one function per stage (each callable on its own): `project` and cull
every Gaussian (numba, parallel); `depth_order`, one global depth sort of the visible ones;
colours from spherical harmonics (degree 0 inline, higher degrees in torch for the visible
Gaussians only); `bin_tiles`, binning into 16x16 tiles whose lists come out in depth order;
compositing tiles in parallel. The kernels, and why they are fast, are in
`avatar.raster_kernels`; their plain-torch twins (projection, binning) in `avatar.raster_torch`.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numba
import numpy as np
import torch

from avatar.errors import TalkingAvatarError
from avatar.raster_kernels import (
    ALPHA_MAX,
    ALPHA_MIN,
    CULL_BACKFACE,
    CULL_DEPTH,
    CULL_OFFSCREEN,
    CULL_TRANSPARENT,
    EPS2D,
    FAR_PLANE,
    KERNELS,
    NEAR_PLANE,
    NREC,
    SH_C0,
    T_MIN,
    TILE,
    VISIBLE,
)

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "CULL_BACKFACE",
    "CULL_DEPTH",
    "CULL_OFFSCREEN",
    "CULL_TRANSPARENT",
    "EPS2D",
    "FAR_PLANE",
    "NEAR_PLANE",
    "T_MIN",
    "TILE",
    "VISIBLE",
    "Projection",
    "RasterResult",
    "bin_tiles",
    "depth_order",
    "project",
    "rasterize",
    "sh_basis",
    "sh_to_color",
]


# Work items a thread takes at a time (numba's parallel chunk size): small chunks let an idle
# thread take work from one the OS has descheduled (another process on its core), so a frame
# degrades with the CPU time it gets instead of waiting on its slower half. Also faster on a
# quiet machine: tiles differ in cost, and 4 tiles per chunk measured best (docs/performance.md).
_TILES_PER_CHUNK = 4
_GAUSSIANS_PER_CHUNK = 4096


# Real spherical-harmonic constants (degree 1..3; SH_C0 for 0) in 3DGS / gsplat ordering.
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792)
_SH_C2_4 = 0.5462742152960396
_SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real SH basis functions `[..., (degree + 1) ** 2]` at unit directions `[..., 3]`.

    The polynomial forms below hold for unit vectors only; the caller normalises.
    """
    if not 0 <= degree <= 3:
        raise TalkingAvatarError(f"SH degree {degree} is not supported; use 0, 1, 2 or 3")
    x, y, z = dirs.unbind(-1)  # each [...]
    basis = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [
            _SH_C2[0] * x * y,
            _SH_C2[1] * y * z,
            _SH_C2[2] * (2.0 * zz - xx - yy),
            _SH_C2[3] * x * z,
            _SH_C2_4 * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            _SH_C3[0] * y * (3.0 * xx - yy),
            _SH_C3[1] * x * y * z,
            _SH_C3[2] * y * (4.0 * zz - xx - yy),
            _SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _SH_C3[4] * x * (4.0 * zz - xx - yy),
            _SH_C3[5] * z * (xx - yy),
            _SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(basis, dim=-1)  # [..., K]


def sh_to_color(sh: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """View-dependent colour `[N, 3]` as gsplat computes it: max(SH(dir) . coeffs + 0.5, 0).

    Args:
        sh: SH coefficients `[N, K, 3]` with K >= (degree + 1) ** 2.
        dirs: view directions `[N, 3]`, world frame, camera centre -> Gaussian (any length).
        degree: the SH degree to evaluate (higher coefficients are ignored).
    """
    num_bases = (degree + 1) ** 2
    if degree == 0:
        color = SH_C0 * sh[:, 0, :]  # [N, 3]
    else:
        unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [N, 3]
        basis = sh_basis(degree, unit.to(sh.dtype))  # [N, K']
        color = torch.einsum("nk,nkc->nc", basis, sh[:, :num_bases, :])  # [N, 3]
    return torch.clamp_min(color + 0.5, 0.0)


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


@dataclass
class Projection:
    """What the projection stage gives per Gaussian (`project`): the arrays the later kernels
    read. Entries of culled Gaussians other than `depth` and `status` are left unset.

    Attributes:
        depth: `[N]` float32 camera-space z, metres.
        record: `[N, 7]` float32: centre (mx, my) in pixels, conic halves (a / 2, b, c / 2) of
            the inverse 2D covariance [[a, b], [b, c]], opacity, log threshold ln(255 o).
        rect: `[N, 4]` int32 first/last pixel column, first/last pixel row (inclusive).
        status: `[N]` int8 VISIBLE or the CULL_* reason it was dropped.
    """

    depth: np.ndarray  # [N]
    record: np.ndarray  # [N, 7]
    rect: np.ndarray  # [N, 4]
    status: np.ndarray  # [N]


class _Thresholds:
    """ln(opacity / ALPHA_MIN) per Gaussian, kept for the opacity tensors of recent frames.

    A posed avatar hands the rasterizer the same opacity tensor every frame (`GaussianAvatar`
    caches it), so the projection need not take a log per Gaussian per frame (a quarter of its
    time). An entry is used only while its tensor lives and holds the same numbers (compared
    in full: 100k in ~0.05 ms, a tenth of the logs, and right however the numbers changed).
    Safe for the viewer's tabs rendering at once: each step is one dict operation, atomic in
    Python, and a race at worst computes an entry twice. (No lock: the weak reference's
    callback may run from the garbage collector inside any allocation, a held lock included.)
    """

    def __init__(self) -> None:
        # id(tensor) -> (weak reference, float32 numbers, thresholds); by identity, since a
        # tensor's == is elementwise; an entry leaves with its tensor
        self._entries: dict[int, tuple] = {}

    def get(self, tensor: torch.Tensor, values: np.ndarray) -> np.ndarray:
        """The thresholds `[N]` float64 of `values` (`tensor`'s numbers as float32 `[N]`)."""
        key = id(tensor)
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry[0]() is tensor
            and entry[1].shape == values.shape
            and np.array_equal(entry[1], values)
        ):
            return entry[2]
        out = np.empty(values.shape[0], np.float64)
        with numba.parallel_chunksize(_GAUSSIANS_PER_CHUNK):
            KERNELS.thresholds(values, out)
        entries = self._entries
        ref = weakref.ref(tensor, lambda _, key=key: entries.pop(key, None))
        entries[key] = (ref, values.copy(), out)
        return out


_THRESHOLDS = _Thresholds()


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
    backface_culling: bool = False,
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
) -> Projection:
    """The projection stage: EWA-project and cull every Gaussian (arguments as `rasterize`).

    A Gaussian is culled for its depth (outside [near_plane, far_plane], or NaN), its opacity
    (below 1/255), its normal (facing away, with `backface_culling`), a zero quaternion or a 2D
    covariance that is not positive definite, or a pixel box (its alpha >= 1/255 ellipse, a hair
    wider) that holds no pixel centre. `avatar.raster_torch.project` is its torch twin.
    """
    n = int(means.shape[0])
    use_normals = bool(backface_culling and normals is not None)
    normals_np = _f32(normals) if use_normals else np.zeros((1, 3), np.float32)  # [N, 3]
    K64 = K.detach().to("cpu", torch.float64)
    intr = np.array([K64[0, 0], K64[1, 1], K64[0, 2], K64[1, 2]], np.float64)  # [4]
    opacities_np = _f32(opacities).reshape(-1)  # [N]
    out = Projection(
        depth=np.empty(n, np.float32),  # [N]
        record=np.empty((n, 7), np.float32),  # [N, 7]
        rect=np.empty((n, 4), np.int32),  # [N, 4]
        status=np.empty(n, np.int8),  # [N]
    )
    with numba.parallel_chunksize(_GAUSSIANS_PER_CHUNK):
        KERNELS.project(
            _f32(means),
            _f32(quats),
            _f32(scales),
            opacities_np,
            _THRESHOLDS.get(opacities, opacities_np),
            normals_np,
            use_normals,
            viewmat.detach().to("cpu", torch.float64).numpy(),  # [4, 4]
            intr,
            float(width),
            float(height),
            float(eps2d),
            float(near_plane),
            float(far_plane),
            out.depth,
            out.record,
            out.rect,
            out.status,
        )
    return out


def depth_order(depth: np.ndarray, status: np.ndarray) -> np.ndarray:
    """`[M]` int64 indices of the visible Gaussians sorted by float32 depth, ties by index.

    Args:
        depth: `[N]` float32 camera-space z (`Projection.depth`).
        status: `[N]` int8 VISIBLE or a CULL_* reason (`Projection.status`).
    """
    n = len(status)
    m, order = KERNELS.depth_order(
        depth.view(np.uint32),
        status,
        np.empty(n, np.uint32),
        np.empty(n, np.uint32),
        np.empty(n, np.int64),
        np.empty(n, np.int64),
    )
    return order[:m]  # [M]


def _colors(
    sh: torch.Tensor, sh_degree: int, order: np.ndarray, means: torch.Tensor, viewmat: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """(degree-0 coefficients `[N, 3]`, unused `[1, 3]`) for degree 0, else (unused `[1, 3]`,
    colours `[M, 3]` of the visible Gaussians in depth order), as `gather` reads them."""
    sh_cpu = sh.detach().to("cpu", torch.float32)  # [N, K, 3]
    if sh_degree == 0:
        return np.ascontiguousarray(sh_cpu[:, 0, :].numpy()), np.empty((1, 3), np.float32)
    viewmat_np = viewmat.detach().to("cpu", torch.float64).numpy()  # [4, 4]
    center = -viewmat_np[:3, :3].T @ viewmat_np[:3, 3]  # [3] camera centre, world
    dirs = torch.from_numpy(_f32(means)[order] - center.astype(np.float32))  # [M, 3]
    sh_vis = sh_cpu.index_select(0, torch.from_numpy(order))  # [M, K, 3]
    colors = np.ascontiguousarray(sh_to_color(sh_vis, dirs, sh_degree).numpy())  # [M, 3]
    return np.empty((1, 3), np.float32), colors


def _gather(
    projection: Projection,
    order: np.ndarray,
    sh_dc: np.ndarray,
    colors: np.ndarray,
    use_sh_dc: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The visible Gaussians' packed records `[M, NREC]` (what compositing reads) and pixel
    boxes `[M, 4]`, in depth order."""
    m = len(order)
    packed = np.empty((m, NREC), np.float32)  # [M, 12]
    rect_sorted = np.empty((m, 4), np.int32)  # [M, 4]
    with numba.parallel_chunksize(_GAUSSIANS_PER_CHUNK):
        KERNELS.gather(
            order,
            projection.record,
            projection.depth,
            sh_dc,
            colors,
            use_sh_dc,
            projection.rect,
            packed,
            rect_sorted,
        )
    return packed, rect_sorted


def bin_tiles(rect_sorted: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The binning stage: tile lists of Gaussians already in depth order.

    Args:
        rect_sorted: `[M, 4]` int32 pixel boxes (`Projection.rect`) in depth order.
        width, height: the image size; tiles are TILE x TILE pixels, row-major.

    Returns:
        (offsets `[n_tiles + 1]` int64, ids `[pairs]` int32): tile t lists positions
        ids[offsets[t]:offsets[t + 1]] of `rect_sorted`, ascending (depth order): every
        Gaussian whose box touches the tile. `avatar.raster_torch.isect_tiles` is its twin.
    """
    tiles_x = (width + TILE - 1) // TILE
    tiles_y = (height + TILE - 1) // TILE
    # one run per thread: more runs (for balance) measured 2x slower, more counters to merge
    return KERNELS.bin(rect_sorted, tiles_x, tiles_y, max(1, numba.get_num_threads()))


def _composite(
    packed: np.ndarray,
    rect_sorted: np.ndarray,
    tiles: tuple[np.ndarray, np.ndarray],
    width: int,
    height: int,
    background: tuple[float, float, float] | torch.Tensor,
    return_depth: bool,
    clamp: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blend every tile's list front to back: colour `[H, W, 3]`, alpha `[H, W]` and depth
    `[H, W]` (`[0]` unless `return_depth`), float32."""
    offsets, ids = tiles
    bg = np.asarray(torch.as_tensor(background, dtype=torch.float32).reshape(3), np.float32)
    out_color = np.empty((height, width, 3), np.float32)  # [H, W, 3]
    out_alpha = np.empty((height, width), np.float32)  # [H, W]
    # a 2-D depth image makes the kernel keep depth sums (its own compiled variant); without
    # one it carries four sums per pixel instead of five
    out_depth = np.empty((height, width) if return_depth else (0,), np.float32)  # [H, W]
    with numba.parallel_chunksize(_TILES_PER_CHUNK):
        KERNELS.composite(
            packed,
            rect_sorted,
            offsets,
            ids,
            (width + TILE - 1) // TILE,
            width,
            height,
            bg,
            bool(clamp),
            out_color,
            out_alpha,
            out_depth,
        )
    return out_color, out_alpha, out_depth


class _Laps:
    """Wall time of each stage in ms, lap by lap."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = 1e3 * (now - self._last)
        self._last = now


@dataclass
class RasterResult:
    """What `rasterize` returns.

    Attributes:
        color: `[H, W, 3]` float32, background blended in, not clamped (SH colours may exceed 1).
        alpha: `[H, W]` float32 accumulated opacity, 1 - final transmittance.
        depth: `[H, W]` float32 expected camera-space z in metres (sum w z / sum w, zero where
            nothing was drawn), or None when not asked for.
        status: `[N]` int8 per Gaussian: VISIBLE or the CULL_* reason it was dropped.
        n_visible: Gaussians that reached binning.
        n_tile_pairs: (tile, Gaussian) pairs composited.
        stage_ms: wall time of each stage (project, sort, color, bin incl. gather, composite).
    """

    color: torch.Tensor  # [H, W, 3]
    alpha: torch.Tensor  # [H, W]
    depth: torch.Tensor | None  # [H, W]
    status: np.ndarray  # [N]
    n_visible: int
    n_tile_pairs: int
    stage_ms: dict[str, float]


def rasterize(
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
    background: tuple[float, float, float] | torch.Tensor = (1.0, 1.0, 1.0),
    normals: torch.Tensor | None = None,
    backface_culling: bool = False,
    return_depth: bool = False,
    clamp: bool = False,
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
) -> RasterResult:
    """Render N Gaussians into one image on the CPU (gsplat's classic forward pass).

    Inputs are trusted to be well formed (`avatar.render.render` checks them).

    Args:
        means: centres `[N, 3]`, world frame, metres.
        quats: rotations `[N, 4]` wxyz (normalised here).
        scales: linear standard deviations `[N, 3]`, metres.
        opacities: `[N]` in [0, 1].
        sh: SH coefficients `[N, K, 3]`, K >= (sh_degree + 1) ** 2.
        viewmat: world-to-camera `[4, 4]`, OpenCV camera axes.
        K: pinhole intrinsics `[3, 3]`, pixels.
        width, height: image size.
        sh_degree: SH degree to evaluate, 0..3.
        background: RGB blended behind the Gaussians.
        normals: unit surface normals `[N, 3]`, used only with `backface_culling`.
        backface_culling: drop Gaussians whose normal faces away from the camera. Faster, but
            not lossless: where the front layer leaves T above 1e-4, back surfels show.
        return_depth: also return the expected depth image.
        clamp: clamp colour and alpha to [0, 1] as they are written (what `render` returns),
            which leaves no pass over the image to torch's threads.
        eps2d, near_plane, far_plane: as in gsplat.
    """
    lap = _Laps()
    camera = (viewmat, K, width, height)
    projection = project(
        means, quats, scales, opacities, *camera, normals=normals,
        backface_culling=backface_culling, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane,
    )  # fmt: skip
    lap("project")
    order = depth_order(projection.depth, projection.status)  # [M]
    lap("sort")
    sh_dc, colors = _colors(sh, sh_degree, order, means, viewmat)
    lap("color")
    packed, rect_sorted = _gather(projection, order, sh_dc, colors, sh_degree == 0)
    tiles = bin_tiles(rect_sorted, width, height)
    lap("bin")
    color, alpha, depth = _composite(
        packed, rect_sorted, tiles, width, height, background, return_depth, clamp
    )
    lap("composite")
    return RasterResult(
        color=torch.from_numpy(color),
        alpha=torch.from_numpy(alpha),
        depth=torch.from_numpy(depth) if return_depth else None,
        status=projection.status,
        n_visible=len(order),
        n_tile_pairs=int(tiles[0][-1]),
        stage_ms=lap.ms,
    )

"""The CPU rasterizer's numba kernels: projection, depth sort, gather, binning, compositing.

Plain Python functions over numpy arrays, compiled by `Kernels` on first use (then loaded from
numba's cache). `avatar.cpu_raster` allocates their arrays, calls them stage by stage and holds
the contract; `avatar.raster_torch` states the projection and binning in plain torch, and
tests/test_raster_torch.py holds these kernels to it.

Why they are fast: the sort gives exactly the order of sorting packed (float32 depth bits << 32 |
index) uint64 keys, but as a stable LSD radix sort on the 32 depth bits: 0.48 ms for 97k
Gaussians where np.sort on the packed keys took 3.8 ms on this machine. Compositing is 75-90 %
of a frame; its inner loop runs over whole 16-pixel tile rows, branch-free, with a polynomial
exp, so LLVM turns each row into a few SIMD instructions (pip's llvmlite has no vector `exp`).
See shared/notes/cpu-raster.md.

Threads: the kernels run on numba's TBB layer (avatar/threads.py: one work-stealing pool shared
by every calling thread, idle workers asleep), and the projection, gather and compositing loops
hand out small chunks rather than one half per thread, so a frame degrades in proportion to the
CPU time it gets when another process takes a core. Safe to call from several threads at once
(the viewer renders one frame per tab). The binning stays one run per thread (faster).

Vector width is LLVM's choice for the host CPU (numba compiles for the machine it runs on, so
nothing here assumes AVX-512). On AMD Zen 4 it already picks 512-bit vectors; on Intel AVX-512
parts LLVM prefers 256-bit, which the note measured 1.5x slower on the kernels. Changing that
needs NUMBA_CPU_FEATURES, a process-wide numba setting, so this module leaves it to the user.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from avatar import threads

# numba's kernels run on TBB (one pool for every calling thread); must precede their first call.
threads.use_tbb()

#: Tile side in pixels (gsplat's default; the compositing kernel is written for 16).
TILE = 16
#: Largest alpha one Gaussian may have at a pixel (3DGS; gsplat uses 0.999).
ALPHA_MAX = 0.99
#: Contributions below this alpha are skipped.
ALPHA_MIN = 1.0 / 255.0
#: A pixel ends when blending the next Gaussian would bring its transmittance to this or below.
T_MIN = 1e-4
#: Added to the diagonal of every 2D covariance, px^2 (gsplat's eps2d, classic mode).
EPS2D = 0.3
#: Gaussians whose camera-space depth lies outside [NEAR_PLANE, FAR_PLANE] metres are culled.
NEAR_PLANE = 0.01
FAR_PLANE = 1e10

# Why a Gaussian was culled (RasterResult.status).
VISIBLE, CULL_DEPTH, CULL_OFFSCREEN, CULL_TRANSPARENT, CULL_BACKFACE = 0, 1, 2, 3, 4

# Columns of the per-Gaussian projected record: centre (px), conic halves, opacity, log threshold,
# colour, depth. One float32 row per visible Gaussian keeps the compositing loads contiguous.
_MX, _MY, _CA, _CB, _CC, _OP, _THR, _RED, _GREEN, _BLUE, _DEPTH, _INV2A = range(12)
#: Columns of the packed record (`gather`'s output).
NREC = 12

# float32 constants: a bare Python float would promote numba's arithmetic to float64.
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_FHALF = np.float32(0.5)
_F_ALPHA_MAX = np.float32(ALPHA_MAX)
_F_T_MIN = np.float32(T_MIN)
_F_SMAX = np.float32(8.0)  # exp argument clamp: beyond ln(255) = 5.5 every lane is masked out
_F_M16 = np.float32(-1.0 / 16.0)
_F_1_2 = np.float32(1.0 / 2.0)
_F_1_6 = np.float32(1.0 / 6.0)
_F_1_24 = np.float32(1.0 / 24.0)
_F_1_120 = np.float32(1.0 / 120.0)

#: Degree-0 spherical-harmonic constant (3DGS / gsplat), for colours from the DC term.
SH_C0 = 0.28209479177387814


# ----------------------------------------------------------------------------------------------
# numba kernels: plain Python functions, compiled by `Kernels` on first use.


def _project_py(
    means,  # [N, 3] f32
    quats,  # [N, 4] f32, wxyz
    scales,  # [N, 3] f32
    opacities,  # [N] f32
    normals,  # [N, 3] f32 (or [1, 3] when unused)
    use_normals,
    viewmat,  # [4, 4] f64
    intr,  # [4] f64: fx, fy, cx, cy
    width,
    height,
    eps2d,
    near,
    far,
    depth,  # [N] f32 out
    record,  # [N, 7] f32 out: mx, my, conic/2 a, conic b, conic/2 c, opacity, log threshold
    rect,  # [N, 4] i32 out: first/last pixel column, first/last pixel row (inclusive)
    status,  # [N] i8 out
):
    n = means.shape[0]
    fx, fy, cx, cy = intr[0], intr[1], intr[2], intr[3]
    # gsplat's Jacobian clamp: x/z and y/z limited to the image plus 30 % of the half-fov
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    w00, w01, w02 = viewmat[0, 0], viewmat[0, 1], viewmat[0, 2]
    w10, w11, w12 = viewmat[1, 0], viewmat[1, 1], viewmat[1, 2]
    w20, w21, w22 = viewmat[2, 0], viewmat[2, 1], viewmat[2, 2]
    t0, t1, t2 = viewmat[0, 3], viewmat[1, 3], viewmat[2, 3]
    # camera centre in the world, -R^T t, for back-face culling
    cam_x = -(w00 * t0 + w10 * t1 + w20 * t2)
    cam_y = -(w01 * t0 + w11 * t1 + w21 * t2)
    cam_z = -(w02 * t0 + w12 * t1 + w22 * t2)
    for i in prange(n):
        px, py, pz = np.float64(means[i, 0]), np.float64(means[i, 1]), np.float64(means[i, 2])
        x = w00 * px + w01 * py + w02 * pz + t0
        y = w10 * px + w11 * py + w12 * pz + t1
        z = w20 * px + w21 * py + w22 * pz + t2
        depth[i] = np.float32(z)
        if not (z >= near and z <= far):  # also catches NaN
            status[i] = CULL_DEPTH
            continue
        opac = np.float64(opacities[i])
        if not (opac >= ALPHA_MIN):
            status[i] = CULL_TRANSPARENT
            continue
        if use_normals:
            facing = (
                normals[i, 0] * (px - cam_x)
                + normals[i, 1] * (py - cam_y)
                + normals[i, 2] * (pz - cam_z)
            )
            if facing > 0.0:
                status[i] = CULL_BACKFACE
                continue
        # world covariance M M^T with M = R(q) diag(s)
        qw, qx, qy, qz = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
        qn2 = qw * qw + qx * qx + qy * qy + qz * qz
        if not qn2 > 0.0:
            status[i] = CULL_OFFSCREEN
            continue
        # 2 / |q|^2 folds the normalisation into the rotation matrix (no sqrt, no divides)
        two = 2.0 / qn2
        sx, sy, sz = np.float64(scales[i, 0]), np.float64(scales[i, 1]), np.float64(scales[i, 2])
        m00 = (1.0 - two * (qy * qy + qz * qz)) * sx
        m01 = (two * (qx * qy - qw * qz)) * sy
        m02 = (two * (qx * qz + qw * qy)) * sz
        m10 = (two * (qx * qy + qw * qz)) * sx
        m11 = (1.0 - two * (qx * qx + qz * qz)) * sy
        m12 = (two * (qy * qz - qw * qx)) * sz
        m20 = (two * (qx * qz - qw * qy)) * sx
        m21 = (two * (qy * qz + qw * qx)) * sy
        m22 = (1.0 - two * (qx * qx + qy * qy)) * sz
        # V = W M (camera-space factor); camera covariance is V V^T
        v00 = w00 * m00 + w01 * m10 + w02 * m20
        v01 = w00 * m01 + w01 * m11 + w02 * m21
        v02 = w00 * m02 + w01 * m12 + w02 * m22
        v10 = w10 * m00 + w11 * m10 + w12 * m20
        v11 = w10 * m01 + w11 * m11 + w12 * m21
        v12 = w10 * m02 + w11 * m12 + w12 * m22
        v20 = w20 * m00 + w21 * m10 + w22 * m20
        v21 = w20 * m01 + w21 * m11 + w22 * m21
        v22 = w20 * m02 + w21 * m12 + w22 * m22
        rz = 1.0 / z
        tx = z * min(lim_x_pos, max(-lim_x_neg, x * rz))
        ty = z * min(lim_y_pos, max(-lim_y_neg, y * rz))
        # U = J V with J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]; 2D covariance U U^T
        j02 = -fx * tx * rz * rz
        j12 = -fy * ty * rz * rz
        u00 = fx * rz * v00 + j02 * v20
        u01 = fx * rz * v01 + j02 * v21
        u02 = fx * rz * v02 + j02 * v22
        u10 = fy * rz * v10 + j12 * v20
        u11 = fy * rz * v11 + j12 * v21
        u12 = fy * rz * v12 + j12 * v22
        ca = u00 * u00 + u01 * u01 + u02 * u02 + eps2d
        cb = u00 * u10 + u01 * u11 + u02 * u12
        cc = u10 * u10 + u11 * u11 + u12 * u12 + eps2d
        det = ca * cc - cb * cb
        if not det > 0.0:
            status[i] = CULL_OFFSCREEN
            continue
        mx = fx * x * rz + cx
        my = fy * y * rz + cy
        # alpha >= 1/255  <=>  1/2 d^T S^-1 d <= ln(255 o): the exact ellipse a pixel must be in
        thr = math.log(opac / ALPHA_MIN)
        extent = math.sqrt(2.0 * thr)
        # a hair wider than exact, so the per-pixel test (not the box) decides at the rim
        rx = extent * math.sqrt(ca) * 1.0001 + 1e-3
        ry = extent * math.sqrt(cc) * 1.0001 + 1e-3
        col0 = max(math.ceil(mx - rx - 0.5), 0.0)
        col1 = min(math.floor(mx + rx - 0.5), width - 1.0)
        row0 = max(math.ceil(my - ry - 0.5), 0.0)
        row1 = min(math.floor(my + ry - 0.5), height - 1.0)
        if not (col0 <= col1 and row0 <= row1):  # off screen, or covers no pixel centre
            status[i] = CULL_OFFSCREEN
            continue
        status[i] = VISIBLE
        record[i, 0] = mx
        record[i, 1] = my
        inv_det = 1.0 / det
        record[i, 2] = 0.5 * cc * inv_det
        record[i, 3] = -cb * inv_det
        record[i, 4] = 0.5 * ca * inv_det
        record[i, 5] = opac
        record[i, 6] = thr
        rect[i, 0] = np.int32(col0)
        rect[i, 1] = np.int32(col1)
        rect[i, 2] = np.int32(row0)
        rect[i, 3] = np.int32(row1)


def _depth_order_py(depth_bits, status, keys, scratch_keys, order, scratch_order):
    """Indices of the visible Gaussians sorted by float32 depth, ties by index; returns M.

    `depth_bits` [N] u32 are the float32 depths' bits: for positive floats they order like the
    values. LSD radix sort, 3 passes of 11 bits, stable, so equal depths keep index order (the
    same order as a sort on packed (depth bits << 32 | index) keys). A pass whose digit is the
    same for every key is skipped: a head's depths share their top bits.
    """
    m = 0
    for i in range(depth_bits.shape[0]):
        if status[i] == VISIBLE:
            keys[m] = depth_bits[i]
            order[m] = i
            m += 1
    hist = np.empty(2048, np.int64)
    for p in range(3):
        shift = np.uint32(11 * p)
        hist[:] = 0
        for i in range(m):
            hist[(keys[i] >> shift) & np.uint32(2047)] += 1
        if hist.max() == m:
            continue
        running = 0
        for d in range(2048):
            c = hist[d]
            hist[d] = running
            running += c
        for i in range(m):
            d = (keys[i] >> shift) & np.uint32(2047)
            dst = hist[d]
            hist[d] = dst + 1
            scratch_keys[dst] = keys[i]
            scratch_order[dst] = order[i]
        keys, scratch_keys = scratch_keys, keys
        order, scratch_order = scratch_order, order
    return m, order


def _gather_py(order, record, depth, sh_dc, colors, use_sh_dc, rect, packed, rect_sorted):
    """Visible Gaussians in depth order: packed [M, NREC] f32 records and their pixel boxes.

    Colours come from `colors` [M, 3] (already in depth order), or, when `use_sh_dc`, straight
    from the degree-0 coefficients `sh_dc` [N, 3]: max(SH_C0 * dc + 0.5, 0).
    """
    for j in prange(order.shape[0]):
        i = order[j]
        for c in range(7):
            packed[j, c] = record[i, c]
        for c in range(3):
            if use_sh_dc:
                packed[j, _RED + c] = max(SH_C0 * sh_dc[i, c] + 0.5, 0.0)
            else:
                packed[j, _RED + c] = colors[j, c]
        packed[j, _DEPTH] = depth[i]
        packed[j, _INV2A] = 0.5 / record[i, _CA]
        for c in range(4):
            rect_sorted[j, c] = rect[i, c]


def _bin_py(rect_sorted, tiles_x, tiles_y, n_chunks):
    """Tile lists in depth order: offsets [n_tiles + 1] i64 and Gaussian ids [pairs] i32.

    The depth-sorted Gaussians are split into `n_chunks` contiguous runs counted and filled in
    parallel; a tile's entries from run k follow those from run k - 1, so each list stays sorted.
    (Fusing the gather into the counting pass saves a parallel region but measured 1.3x slower.)
    """
    m = rect_sorted.shape[0]
    n_tiles = tiles_x * tiles_y
    counts = np.zeros((n_chunks, n_tiles), np.int64)
    for ch in prange(n_chunks):
        lo, hi = (m * ch) // n_chunks, (m * (ch + 1)) // n_chunks
        for j in range(lo, hi):
            tx0, tx1 = rect_sorted[j, 0] // TILE, rect_sorted[j, 1] // TILE
            ty0, ty1 = rect_sorted[j, 2] // TILE, rect_sorted[j, 3] // TILE
            for ty in range(ty0, ty1 + 1):
                for tx in range(tx0, tx1 + 1):
                    counts[ch, ty * tiles_x + tx] += 1
    offsets = np.empty(n_tiles + 1, np.int64)
    running = 0
    for t in range(n_tiles):
        offsets[t] = running
        for ch in range(n_chunks):
            c = counts[ch, t]
            counts[ch, t] = running  # becomes this run's write cursor for tile t
            running += c
    offsets[n_tiles] = running
    ids = np.empty(running, np.int32)
    for ch in prange(n_chunks):
        lo, hi = (m * ch) // n_chunks, (m * (ch + 1)) // n_chunks
        for j in range(lo, hi):
            tx0, tx1 = rect_sorted[j, 0] // TILE, rect_sorted[j, 1] // TILE
            ty0, ty1 = rect_sorted[j, 2] // TILE, rect_sorted[j, 3] // TILE
            for ty in range(ty0, ty1 + 1):
                for tx in range(tx0, tx1 + 1):
                    t = ty * tiles_x + tx
                    ids[counts[ch, t]] = j
                    counts[ch, t] += 1
    return offsets, ids


def _composite_py(
    packed,  # [M, NREC] f32, depth order
    rect_sorted,  # [M, 4] i32
    offsets,  # [n_tiles + 1] i64
    ids,  # [pairs] i32
    tiles_x,
    width,
    height,
    background,  # [3] f32
    with_depth,
    clamp,
    out_color,  # [H, W, 3] f32 out
    out_alpha,  # [H, W] f32 out
    out_depth,  # [H, W] f32 out (expected depth; zero where nothing was drawn)
):
    n_tiles = offsets.shape[0] - 1
    npx = TILE * TILE
    for t in prange(n_tiles):
        ty = t // tiles_x
        tx = t - ty * tiles_x
        x0 = tx * TILE
        y0 = ty * TILE
        # One flat state array: T, R, G, B, D for 256 pixels (separate arrays would make LLVM
        # add alias checks and keep more pointers live). A pixel that has ended stores -T, its
        # final transmittance negated, so the lane loop needs no mask array.
        state = np.empty(5 * npx, np.float32)
        for k in range(npx):
            state[k] = _F1
        for k in range(npx, 5 * npx):
            state[k] = _F0
        # Ended pixels per column, summed once per Gaussian to see whether the whole tile is
        # done: a horizontal sum per row, or per-row skipping, measured slower.
        lane_done = np.zeros(TILE, np.float32)
        for e in range(offsets[t], offsets[t + 1]):
            j = ids[e]
            # centre relative to the tile's first pixel centre, so dx = col - mx, dy = row - my
            mx = packed[j, _MX] - np.float32(x0) - _FHALF
            my = packed[j, _MY] - np.float32(y0) - _FHALF
            ca = packed[j, _CA]
            cb = packed[j, _CB]
            cc = packed[j, _CC]
            opac = packed[j, _OP]
            thr = packed[j, _THR]
            red = packed[j, _RED]
            green = packed[j, _GREEN]
            blue = packed[j, _BLUE]
            dep = packed[j, _DEPTH]
            inv2a = packed[j, _INV2A]
            hi_x = np.float32(TILE - 1) - mx
            # a hair above thr, so rounding in the row test never skips a lane the exact
            # per-lane test would draw
            thr_row = thr * np.float32(1.0001) + np.float32(1e-5)
            row0 = max(rect_sorted[j, 2] - y0, 0)
            row1 = min(rect_sorted[j, 3] - y0, TILE - 1)
            for row in range(row0, row1 + 1):
                dy = np.float32(row) - my
                s_row = cc * dy * dy
                b_row = cb * dy
                # Skip rows the ellipse misses inside this tile: the smallest s along the row,
                # over the tile's columns, is at the clamped minimiser of a convex quadratic.
                dx_min = min(max(-b_row * inv2a, -mx), hi_x)
                if (ca * dx_min + b_row) * dx_min + s_row > thr_row:
                    continue
                base = np.uint64(row * TILE)
                # 16 lanes, branch-free: LLVM makes this one 512-bit (or two 256-bit) vector body
                for col in range(TILE):
                    dx = np.float32(col) - mx
                    s = (ca * dx + b_row) * dx + s_row  # 1/2 d^T S^-1 d
                    # exp(-s) as (Taylor5(-s/16))^16; s >= 0 up to rounding, and clamped from
                    # above so lanes far outside the ellipse stay finite
                    u = min(s, _F_SMAX) * _F_M16
                    p = _F1 + u * (_F1 + u * (_F_1_2 + u * (_F_1_6 + u * (_F_1_24 + u * _F_1_120))))
                    p = p * p
                    p = p * p
                    p = p * p
                    p = p * p
                    alpha = min(_F_ALPHA_MAX, opac * p)
                    k = base + np.uint64(col)  # unsigned: no negative-index wraparound code
                    trans = state[k]
                    next_t = trans - alpha * trans
                    # the alpha >= 1/255 test is on s against ln(255 o), exact, not on the
                    # polynomial exp, so threshold flips do not depend on the exp's error
                    inside = s <= thr
                    blend = inside & (next_t > _F_T_MIN)
                    ends = inside & (next_t <= _F_T_MIN) & (trans > _F0)
                    weight = alpha * trans if blend else _F0
                    state[k] = -trans if ends else trans - weight
                    state[k + np.uint64(npx)] += weight * red
                    state[k + np.uint64(2 * npx)] += weight * green
                    state[k + np.uint64(3 * npx)] += weight * blue
                    if with_depth:  # loop-invariant: LLVM unswitches it
                        state[k + np.uint64(4 * npx)] += weight * dep
                    lane_done[col] += _F1 if ends else _F0
            n_done = _F0
            for col in range(TILE):
                n_done += lane_done[col]
            if n_done >= npx:  # every pixel of the tile has ended
                break
        for row in range(TILE):
            yy = y0 + row
            if yy >= height:
                break
            for col in range(TILE):
                xx = x0 + col
                if xx >= width:
                    break
                k = row * TILE + col
                trans = abs(state[k])
                acc = _F1 - trans
                red = state[npx + k] + trans * background[0]
                green = state[2 * npx + k] + trans * background[1]
                blue = state[3 * npx + k] + trans * background[2]
                if clamp:
                    red = min(max(red, _F0), _F1)
                    green = min(max(green, _F0), _F1)
                    blue = min(max(blue, _F0), _F1)
                    acc = min(max(acc, _F0), _F1)
                out_color[yy, xx, 0] = red
                out_color[yy, xx, 1] = green
                out_color[yy, xx, 2] = blue
                out_alpha[yy, xx] = acc
                if with_depth:
                    out_depth[yy, xx] = state[4 * npx + k] / max(acc, np.float32(1e-10))


class Kernels:
    """The kernels as numba dispatchers: compiled on first call, then loaded from numba's cache
    (`__pycache__`), so only the first process on a machine pays the ~8 s compile."""

    def __init__(self) -> None:
        opts = dict(parallel=True, cache=True, nogil=True)
        # The projection may contract and reassociate (18 % faster) but keeps NaN/inf
        # semantics ("nnan"/"ninf" left out), so its `not (x >= y)` tests still cull NaN input.
        self.project = njit(fastmath={"contract", "arcp", "afn", "reassoc", "nsz"}, **opts)(
            _project_py
        )
        self.gather = njit(**opts)(_gather_py)
        self.bin = njit(**opts)(_bin_py)
        self.depth_order = njit(cache=True, nogil=True)(_depth_order_py)  # serial: 0.5 ms
        # fastmath (reassociation, no NaN/inf guards) only for the compositing lanes, whose
        # data are finite; the projection keeps strict IEEE maths so NaN inputs are culled.
        self.composite = njit(fastmath=True, **opts)(_composite_py)


#: Creating dispatchers compiles nothing, so this costs nothing at import.
KERNELS = Kernels()

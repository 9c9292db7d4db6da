"""The CPU rasterizer's numba kernels: projection, depth sort, gather, binning, compositing.

Plain Python functions over numpy arrays, compiled by `Kernels` on first use (then loaded from
numba's cache). `avatar.cpu_raster` allocates their arrays, calls them stage by stage and holds
the contract; `avatar.raster_torch` states the projection and binning in plain torch, and
tests/test_raster_torch.py holds these kernels to it.

Why they are fast: the sort gives exactly the order of sorting packed (float32 depth bits << 32 |
index) uint64 keys, but as a stable LSD radix sort on the 32 depth bits: 0.48 ms for 97k
Gaussians where np.sort on the packed keys took 3.8 ms on this machine. Compositing is most of
a frame. It walks each tile's list once per band of BAND = 4 rows and blends a Gaussian into
the band's 4 rows of 16 pixels as <16 x float> vectors (numba intrinsics, below): the band's
transmittance and colour sums stay in registers for the whole list instead of being loaded and
stored per step, and the 4 rows are 4 independent dependency chains. alpha is 2^x with x a
quadratic in the pixel offset (the opacity folded in) and a polynomial 2^f (pip's llvmlite has
no vector `exp`); the alpha >= 1/255 test is exact, on x. Records are read by id, so the next
ones are prefetched. See shared/notes/cpu-raster.md and docs/performance.md.

Threads: the kernels run on numba's TBB layer (avatar/threads.py: one work-stealing pool shared
by every calling thread, idle workers asleep), and the projection, gather and compositing loops
hand out small chunks rather than one half per thread, so a frame degrades in proportion to the
CPU time it gets when another process takes a core. Safe to call from several threads at once
(the viewer renders one frame per tab). The binning stays one run per thread (faster).

Vector width is LLVM's choice for the host CPU (numba compiles for the machine it runs on): a
<16 x float> is one AVX-512 register, two AVX2 registers or four NEON ones, so nothing here
assumes AVX-512 (compiled for AVX2 only, the band kernel measured 1.5x faster than the
previous one as well). On Intel AVX-512 parts LLVM may split the vectors into 256-bit halves
(its prefer-vector-width); changing that needs NUMBA_CPU_FEATURES, a process-wide numba
setting, so this module leaves it to the user.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from avatar import threads

# numba's kernels run on TBB (one pool for every calling thread); must precede their first call.
threads.use_tbb()

#: Tile side in pixels (gsplat's default; the compositing kernel is written for 16).
TILE = 16
_TILE_SHIFT = 4
assert TILE == 1 << _TILE_SHIFT
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

# Columns of the packed record compositing reads (`gather`'s output), one float32 row per visible
# Gaussian in depth order: centre (px); log2 alpha as a quadratic in the pixel offset (qa, qb, qc
# = -log2(e) times the conic halves, and log2 opacity); colour; depth.
_MX, _MY, _QA, _QB, _QC, _LOG2_OP, _RED, _GREEN, _BLUE, _DEPTH = range(10)
#: Columns of the packed record.
NREC = 10
_LOG2_E = 1.0 / math.log(2.0)
_LN_ALPHA_MIN = math.log(ALPHA_MIN)

# float32 constants: a bare Python float would promote numba's arithmetic to float64.
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_FHALF = np.float32(0.5)

#: Degree-0 spherical-harmonic constant (3DGS / gsplat), for colours from the DC term.
SH_C0 = 0.28209479177387814


# ----------------------------------------------------------------------------------------------
# numba kernels: plain Python functions, compiled by `Kernels` on first use.


def _project_py(
    means,  # [N, 3] f32
    quats,  # [N, 4] f32, wxyz
    scales,  # [N, 3] f32
    opacities,  # [N] f32
    thresholds,  # [N] f64: ln(opacity / ALPHA_MIN), from `_thresholds_py`
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
        thr = thresholds[i]  # math.log(opac / ALPHA_MIN), a quarter of this loop's time
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


def _thresholds_py(opacities, out):
    """out[i] = ln(opacity_i / ALPHA_MIN) (float64): what the projection compares the conic
    quadratic with. They change only when the opacities do, so `avatar.cpu_raster.project`
    keeps them across frames; the log was a quarter of the projection's time."""
    for i in prange(opacities.shape[0]):
        opac = np.float64(opacities[i])
        out[i] = math.log(opac / ALPHA_MIN) if opac > 0.0 else -np.inf


def _depth_order_py(depth_bits, status, keys, scratch_keys, order, scratch_order):
    """Indices of the visible Gaussians sorted by float32 depth, ties by index; returns M.

    `depth_bits` [N] u32 are the float32 depths' bits: for positive floats they order like the
    values. LSD radix sort, 3 passes of 11 bits, stable, so equal depths keep index order (the
    same order as a sort on packed (depth bits << 32 | index) keys). A pass whose digit is the
    same for every key is skipped: a head's depths share their top bits. The keys are the bits
    less the smallest visible one (the same order): a head whose depth bits span less than
    2^22 but cross a multiple of it (the default avatar's do) needs two passes, not three.
    """
    low = np.uint32(0xFFFFFFFF)
    for i in range(depth_bits.shape[0]):
        if status[i] == VISIBLE and depth_bits[i] < low:
            low = depth_bits[i]
    m = 0
    for i in range(depth_bits.shape[0]):
        if status[i] == VISIBLE:
            keys[m] = depth_bits[i] - low
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


#: How many Gaussians ahead the gather asks for the records it reads by id. Right after the
#: projection those lines sit in the cache of whichever core wrote them, and each read waited
#: for one: 100k visible Gaussians, 2.9-3.3 -> 1.8-2.2 ms in a frame (16-32 alike, 64 worse).
#: Measured in isolation, on warm caches, it made no difference, which is how it was missed.
_GATHER_PREFETCH = 24


def _gather_py(order, record, depth, sh_dc, colors, use_sh_dc, rect, packed, rect_sorted):
    """Visible Gaussians in depth order: packed [M, NREC] f32 records and their pixel boxes.

    From the projection's record (centre, conic halves, opacity, ln(255 opacity)) it writes what
    compositing evaluates: log2 alpha = log2 opacity - log2(e) (conic quadratic). Colours come
    from `colors` [M, 3] (already in depth order), or, when `use_sh_dc`, straight from the
    degree-0 coefficients `sh_dc` [N, 3]: max(SH_C0 * dc + 0.5, 0).
    """
    m = order.shape[0]
    for j in prange(m):
        i = order[j]
        if j + _GATHER_PREFETCH < m:  # reads by id: ask for them ahead (see _GATHER_PREFETCH)
            ahead = order[j + _GATHER_PREFETCH]
            _prefetch_row(record, ahead)
            _prefetch_row(rect, ahead)
            if use_sh_dc:
                _prefetch_row(sh_dc, ahead)
        packed[j, _MX] = record[i, 0]
        packed[j, _MY] = record[i, 1]
        for c in range(3):
            packed[j, _QA + c] = -_LOG2_E * record[i, 2 + c]
        # ln(opacity) = ln(255 opacity) - ln(255), from the projection's threshold
        packed[j, _LOG2_OP] = _LOG2_E * (record[i, 6] + _LN_ALPHA_MIN)
        for c in range(3):
            if use_sh_dc:
                packed[j, _RED + c] = max(SH_C0 * sh_dc[i, c] + 0.5, 0.0)
            else:
                packed[j, _RED + c] = colors[j, c]
        packed[j, _DEPTH] = depth[i]
        for c in range(4):
            rect_sorted[j, c] = rect[i, c]


def _bin_py(rect_sorted, tiles_x, tiles_y, n_chunks):
    """Tile lists in depth order: offsets [n_tiles + 1] i64 and Gaussian ids [pairs] i32.

    The depth-sorted Gaussians are split into `n_chunks` contiguous runs counted and filled in
    parallel; a tile's entries from run k follow those from run k - 1, so each list stays sorted.
    Counting adds each box to a difference grid (four updates per Gaussian, not one per tile:
    the loops over a box's tiles mispredict their exits) whose prefix sums are the counts.
    (Fusing the gather into the counting pass saves a parallel region but measured 1.3x slower.)
    """
    m = rect_sorted.shape[0]
    n_tiles = tiles_x * tiles_y
    # per run: +1 at a box's first tile, -1 past its last column and past its last row, +1
    # past both; boxes hold pixels >= 0, so a shift is the floor division (numba's // on
    # signed integers adds the negative-case fix-up)
    diff = np.zeros((n_chunks, tiles_y + 1, tiles_x + 1), np.int64)
    for ch in prange(n_chunks):
        grid = diff[ch]
        lo, hi = (m * ch) // n_chunks, (m * (ch + 1)) // n_chunks
        for j in range(lo, hi):
            tx0, tx1 = rect_sorted[j, 0] >> _TILE_SHIFT, (rect_sorted[j, 1] >> _TILE_SHIFT) + 1
            ty0, ty1 = rect_sorted[j, 2] >> _TILE_SHIFT, (rect_sorted[j, 3] >> _TILE_SHIFT) + 1
            grid[ty0, tx0] += 1
            grid[ty0, tx1] -= 1
            grid[ty1, tx0] -= 1
            grid[ty1, tx1] += 1
    counts = np.empty((n_chunks, n_tiles), np.int64)
    for ch in range(n_chunks):
        for ty in range(tiles_y):
            along = 0
            for tx in range(tiles_x):
                along += diff[ch, ty, tx]
                above = counts[ch, (ty - 1) * tiles_x + tx] if ty > 0 else 0
                counts[ch, ty * tiles_x + tx] = along + above
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
        cursors = counts[ch]
        lo, hi = (m * ch) // n_chunks, (m * (ch + 1)) // n_chunks
        for j in range(lo, hi):
            tx0, tx1 = rect_sorted[j, 0] >> _TILE_SHIFT, rect_sorted[j, 1] >> _TILE_SHIFT
            ty0, ty1 = rect_sorted[j, 2] >> _TILE_SHIFT, rect_sorted[j, 3] >> _TILE_SHIFT
            for ty in range(ty0, ty1 + 1):
                row = ty * tiles_x
                for tx in range(tx0, tx1 + 1):
                    t = row + tx
                    ids[cursors[t]] = j
                    cursors[t] += 1
    return offsets, ids


# ----------------------------------------------------------------------------------------------
# 16-lane float32 vectors as numba values: LLVM's <16 x float>, kept in registers.
#
# numba's auto-vectoriser turns a loop over 16 pixels into SIMD code, but the loop's state must
# live in an array, so every step loads and stores it. A value of type `f32x16` is an SSA value
# instead: a numba local holding one stays in a register across a loop, and a tuple of them is a
# set of registers. The compositing step is written as an `@intrinsic` over these values with the
# helpers below (they build LLVM IR). LLVM lowers <16 x float> to one AVX-512 register, two AVX2
# registers or four NEON ones, so nothing here is x86-specific.
#
# They live in this file on purpose: numba's cache is keyed by the hash of the file that defines a
# kernel, and code an intrinsic generates is compiled into the kernel, so a helper in another
# module could change without invalidating the cached kernels.

#: Lanes of one vector: a tile row of 16 pixels.
LANES = 16

_VECTOR = ir.VectorType(ir.FloatType(), LANES)
_INT_VECTOR = ir.VectorType(ir.IntType(32), LANES)
_I32 = ir.IntType(32)

#: Fast-math flags for vector arithmetic: contraction into FMAs and reassociation, but no
#: "nnan"/"ninf", so LLVM keeps the selects that mask lanes holding inf or NaN.
_FAST = ("contract", "reassoc", "nsz", "arcp", "afn")


class F32x16(types.Type):
    """numba type of a <16 x float> value."""

    def __init__(self) -> None:
        super().__init__(name="f32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _VECTOR)


def _vconst(value: float) -> ir.Constant:
    """Every lane `value` (rounded to float32)."""
    return ir.Constant(_VECTOR, [float(np.float32(value))] * LANES)


#: Lane i holds i: the column offsets of a tile row.
_LANE_INDEX = ir.Constant(_VECTOR, [float(i) for i in range(LANES)])


def _splat(builder: ir.IRBuilder, scalar: ir.Value) -> ir.Value:
    """Every lane the float `scalar`."""
    undef = ir.Constant(_VECTOR, ir.Undefined)
    first = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(first, undef, ir.Constant(_INT_VECTOR, [0] * LANES))


def _vmin(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """a < b ? a : b per lane (numba's `min` on floats)."""
    return builder.select(builder.fcmp_ordered("<", a, b), a, b)


def _negative(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """-|v| per lane: the sign bit set."""
    bits = builder.or_(
        builder.bitcast(v, _INT_VECTOR), ir.Constant(_INT_VECTOR, [-(2**31)] * LANES)
    )
    return builder.bitcast(bits, _VECTOR)


def _any_positive(builder: ir.IRBuilder, vectors: list[ir.Value]) -> ir.Value:
    """i1: whether any lane of any of `vectors` is > 0."""
    mask = None
    for v in vectors:
        m = builder.fcmp_ordered(">", v, _vconst(0.0))
        mask = m if mask is None else builder.or_(mask, m)
    bits = builder.bitcast(mask, ir.IntType(LANES))
    return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(LANES), 0))


@intrinsic
def _store(typingctx, vectors, array):
    """Write a UniTuple of f32x16 into a contiguous float32 `array`, vector k at 16 k."""
    if not (
        isinstance(vectors, types.UniTuple)
        and vectors.dtype == f32x16
        and isinstance(array, types.Array)
        and array.dtype == types.float32
    ):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[1])(context, builder, args[1]).data
        for k in range(sig.args[0].count):
            ptr = builder.gep(data, [ir.Constant(ir.IntType(64), LANES * k)])
            builder.store(
                builder.extract_value(args[0], k), builder.bitcast(ptr, _VECTOR.as_pointer()), 4
            )
        return context.get_dummy_value()

    return types.none(vectors, array), codegen


@intrinsic
def _prefetch_row(typingctx, array, row):
    """Hint the CPU to fetch the cache line where row `row` of a 2-D C-contiguous `array` starts
    (no effect on results). For the kernels' random reads of Gaussian records by id, which the
    hardware prefetcher cannot predict. (Also fetching the row's last line measured slower.)"""
    if not (isinstance(array, types.Array) and array.ndim == 2 and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        stride = builder.extract_value(ary.strides, 0)
        offset = builder.mul(context.cast(builder, args[1], sig.args[1], types.intp), stride)
        byte_ptr = ir.IntType(8).as_pointer()
        address = builder.gep(builder.bitcast(ary.data, byte_ptr), [offset])
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, _I32, _I32, _I32])
        prefetch = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, high temporal locality (keep in all cache levels), data cache
        flags = [ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)]
        builder.call(prefetch, [address, *flags])
        return context.get_dummy_value()

    return types.none(array, row), codegen


def _exp2(builder: ir.IRBuilder, x: ir.Value, poly: tuple[float, ...]) -> ir.Value:
    """2^x per lane: 2^round(x) (exponent bits) times `poly` at x - round(x).

    `poly` holds the coefficients (constant first) of a polynomial for 2^f on [-1/2, 1/2].
    Exact for -126 <= x <= 1; lanes below give garbage (possibly inf or NaN, never poison), so
    callers mask them rather than read them. Rounding uses the 1.5 * 2^23 trick: adding it
    leaves round(x) in the low mantissa bits, and those bits shifted by 23 are 2^round(x)'s
    exponent increment (the constant's own bits shift out), so no call and no integer constant.
    """
    b = builder
    magic = _vconst(1.5 * 2**23)
    # (x + magic) - magic must not be simplified to x: these two carry "nsz" alone, which also
    # keeps numba's fastmath pass (it flags every float operation that has no flags) off them
    shifted = b.fadd(x, magic, flags=("nsz",))
    n = b.fsub(shifted, magic, flags=("nsz",))
    f = b.fsub(x, n, flags=_FAST)
    p = _vconst(poly[-1])
    for c in reversed(poly[:-1]):
        p = b.fadd(b.fmul(p, f, flags=_FAST), _vconst(c), flags=_FAST)
    scale = b.shl(b.bitcast(shifted, _INT_VECTOR), ir.Constant(_INT_VECTOR, [23] * LANES))
    return b.bitcast(b.add(b.bitcast(p, _INT_VECTOR), scale), _VECTOR)


# ----------------------------------------------------------------------------------------------
# Compositing: four tile rows at a time, their state in registers.

#: Tile rows blended together. Four rows give four independent transmittance chains in flight
#: per Gaussian (one row's chain is latency-bound), and their accumulators (T, R, G, B and
#: optionally depth: 16 or 20 vectors) still fit AVX-512's 32 registers. 1 and 2 rows measured
#: slower, with AVX2 code too (docs/performance.md).
BAND = 4

#: How many list entries ahead compositing asks for a Gaussian's record (10-15 % faster at 100k).
_PREFETCH = 8

#: 2^f on [-1/2, 1/2] to 2.7e-6 relative error: a degree-4 polynomial (coefficients of f^0..f^4),
#: fitted here for minimax relative error (Lawson's iteration on Chebyshev nodes);
#: tests/test_cpu_raster.py checks the bound. alpha = 2^x is this times 2^round(x).
EXP2_POLY = (
    0.9999992614421646,
    0.6931218147436673,
    0.2402474483964618,
    0.05591786028196627,
    0.009570101434044305,
)
#: alpha >= 1/255  <=>  log2(alpha) >= -log2(255): the exact test compositing makes on x.
_LOG2_ALPHA_MIN = math.log2(ALPHA_MIN)


def _accumulators(out_depth: types.Array) -> int:
    """Vectors per row: T, R, G, B, plus depth when `out_depth` is a 2-D image."""
    return 5 if out_depth.ndim == 2 else 4


@intrinsic
def _band_start(typingctx, out_depth):
    """A band's state: per row T = 1 and zero sums, as a UniTuple of f32x16."""
    n = _accumulators(out_depth)

    def codegen(context, builder, sig, args):
        rows = [_vconst(1.0)] + [_vconst(0.0)] * (n - 1)
        return context.make_tuple(builder, sig.return_type, rows * BAND)

    return types.UniTuple(f32x16, n * BAND)(out_depth), codegen


@intrinsic
def _band_alive(typingctx, band):
    """Whether any pixel of the band has not ended (T > 0; an ended pixel holds -T)."""
    n = band.count // BAND

    def codegen(context, builder, sig, args):
        ts = [builder.extract_value(args[0], n * r) for r in range(BAND)]
        return _any_positive(builder, ts)

    return types.boolean(band), codegen


@intrinsic
def _band_blend(typingctx, band, dy0, mx, qa, qb, qc, lo, red, green, blue, dep):
    """Blend one Gaussian over the band's BAND rows of 16 pixels; returns the new state.

    dy0 = first row - centre row and mx = centre column, in pixels from the tile's first pixel
    centre. The Gaussian's log2 alpha before the clamp is x = lo + qa dx^2 + qb dx dy + qc dy^2
    (lo = log2 opacity, q = -log2(e) times the conic halves; `gather` writes them). Per pixel,
    the rule of the module docstring: a pixel is drawn where x >= log2(1/255) (exactly alpha >=
    1/255, decided on x, never on the polynomial); alpha = min(ALPHA_MAX, 2^x); a pixel whose T
    would fall to T_MIN or below ends and keeps -T. Writing alpha as 2^x folds the opacity and
    the exp's scale into x, which leaves 4 multiply-adds for the exp (the exp was 9 and the
    opacity 1): the multiply units are what a band keeps busy.
    """
    n = band.count // BAND
    f32 = ir.FloatType()

    def codegen(context, builder, sig, args):
        b = builder
        st, dy0, mx, qa, qb, qc, lo = args[:7]
        colors = [_splat(b, c) for c in args[7 : 7 + n - 1]]
        dx = b.fsub(_LANE_INDEX, _splat(b, mx), flags=_FAST)
        qb_dx = b.fmul(_splat(b, qb), dx, flags=_FAST)
        qa_dx2 = b.fmul(b.fmul(_splat(b, qa), dx, flags=_FAST), dx, flags=_FAST)
        # x on the first row, then forward differences down the rows:
        # x(dy + 1) - x(dy) = qb dx + qc (2 dy + 1), whose own step is 2 qc
        row0 = b.fadd(b.fmul(b.fmul(qc, dy0), dy0), lo)
        x = b.fadd(
            b.fadd(qa_dx2, b.fmul(qb_dx, _splat(b, dy0), flags=_FAST), flags=_FAST),
            _splat(b, row0),
            flags=_FAST,
        )
        step = b.fadd(dy0, b.fadd(dy0, ir.Constant(f32, 1.0)))
        dx_step = b.fadd(qb_dx, _splat(b, b.fmul(qc, step)), flags=_FAST)
        dx_step2 = _splat(b, b.fadd(qc, qc))
        out = []
        for r in range(BAND):
            if r:
                x = b.fadd(x, dx_step, flags=_FAST)
                dx_step = b.fadd(dx_step, dx_step2, flags=_FAST)
            trans = b.extract_value(st, n * r)
            alpha = _vmin(b, _exp2(b, x, EXP2_POLY), _vconst(ALPHA_MAX))
            weight = b.fmul(alpha, trans, flags=_FAST)
            next_t = b.fsub(trans, weight, flags=_FAST)
            inside = b.fcmp_ordered(">=", x, _vconst(_LOG2_ALPHA_MIN))
            above = b.fcmp_ordered(">", next_t, _vconst(T_MIN))
            blend = b.and_(inside, above)
            ends = b.and_(inside, b.not_(above))  # an ended pixel's -T stays as it is
            out.append(b.select(ends, _negative(b, trans), b.select(blend, next_t, trans)))
            for c, color in enumerate(colors, start=1):
                acc = b.extract_value(st, n * r + c)
                summed = b.fadd(acc, b.fmul(weight, color, flags=_FAST), flags=_FAST)
                out.append(b.select(blend, summed, acc))
        return context.make_tuple(b, sig.return_type, out)

    return band(band, dy0, mx, qa, qb, qc, lo, red, green, blue, dep), codegen


def _put_depth(out_depth, y, x, state, k, acc):
    """out_depth[y, x] = expected depth from the band's stored sums, when depth is asked for."""


@overload(_put_depth)
def _put_depth_impl(out_depth, y, x, state, k, acc):
    if out_depth.ndim != 2:
        return lambda out_depth, y, x, state, k, acc: None

    def put(out_depth, y, x, state, k, acc):
        out_depth[y, x] = state[k] / max(acc, np.float32(1e-10))

    return put


def _composite_py(
    packed,  # [M, NREC] f32, depth order
    rect_sorted,  # [M, 4] i32
    offsets,  # [n_tiles + 1] i64
    ids,  # [pairs] i32
    tiles_x,
    width,
    height,
    background,  # [3] f32
    clamp,
    out_color,  # [H, W, 3] f32 out
    out_alpha,  # [H, W] f32 out
    out_depth,  # [H, W] f32 out (expected depth; zero where nothing was drawn), or [0] for none
):
    n_tiles = offsets.shape[0] - 1
    for t in prange(n_tiles):
        ty = t // tiles_x
        tx = t - ty * tiles_x
        x0 = tx * TILE
        y0 = ty * TILE
        # the tile's first pixel centre
        cx0 = np.float32(x0) + _FHALF
        cy0 = np.float32(y0) + _FHALF
        state = np.empty(5 * BAND * TILE, np.float32)
        for r0 in range(0, TILE, BAND):
            ya = y0 + r0
            if ya >= height:
                break
            yb = ya + BAND - 1
            band = _band_start(out_depth)
            n_acc = len(band) // BAND
            # the tile's list, keeping the Gaussians whose pixel box meets the band's rows
            end = offsets[t + 1]
            for e in range(offsets[t], end):
                if e + _PREFETCH < end:  # records are read by id, out of the prefetcher's sight
                    ahead = ids[e + _PREFETCH]
                    _prefetch_row(rect_sorted, ahead)
                    _prefetch_row(packed, ahead)
                j = ids[e]
                if rect_sorted[j, 2] > yb or rect_sorted[j, 3] < ya:
                    continue
                band = _band_blend(
                    band,
                    np.float32(r0) - (packed[j, _MY] - cy0),
                    packed[j, _MX] - cx0,
                    packed[j, _QA],
                    packed[j, _QB],
                    packed[j, _QC],
                    packed[j, _LOG2_OP],
                    packed[j, _RED],
                    packed[j, _GREEN],
                    packed[j, _BLUE],
                    packed[j, _DEPTH],
                )
                if not _band_alive(band):
                    break
            _store(band, state)
            for r in range(BAND):
                yy = ya + r
                if yy >= height:
                    break
                base = n_acc * TILE * r
                for col in range(TILE):
                    xx = x0 + col
                    if xx >= width:
                        break
                    trans = abs(state[base + col])
                    acc = _F1 - trans
                    red = state[base + TILE + col] + trans * background[0]
                    green = state[base + 2 * TILE + col] + trans * background[1]
                    blue = state[base + 3 * TILE + col] + trans * background[2]
                    if clamp:
                        red = min(max(red, _F0), _F1)
                        green = min(max(green, _F0), _F1)
                        blue = min(max(blue, _F0), _F1)
                        acc = min(max(acc, _F0), _F1)
                    out_color[yy, xx, 0] = red
                    out_color[yy, xx, 1] = green
                    out_color[yy, xx, 2] = blue
                    out_alpha[yy, xx] = acc
                    _put_depth(out_depth, yy, xx, state, base + 4 * TILE + col, acc)


class Kernels:
    """The kernels as numba dispatchers: compiled on first call, then loaded from numba's cache
    (`__pycache__`), so only the first process on a machine pays the ~10 s compile."""

    def __init__(self) -> None:
        opts = dict(parallel=True, cache=True, nogil=True)
        # The projection may contract and reassociate (18 % faster) but keeps NaN/inf
        # semantics ("nnan"/"ninf" left out), so its `not (x >= y)` tests still cull NaN input.
        # The thresholds it reads take the same flags: the log they compute is the one the
        # projection used to compute itself.
        projection_math = {"contract", "arcp", "afn", "reassoc", "nsz"}
        self.project = njit(fastmath=projection_math, **opts)(_project_py)
        self.thresholds = njit(fastmath=projection_math, **opts)(_thresholds_py)
        self.gather = njit(**opts)(_gather_py)
        self.bin = njit(**opts)(_bin_py)
        self.depth_order = njit(cache=True, nogil=True)(_depth_order_py)  # serial: 0.5 ms
        # The compositing maths is `_band_blend`'s IR, with the same flags (_FAST): lanes
        # outside a Gaussian's ellipse may hold inf, and its selects must stay selects.
        self.composite = njit(fastmath=set(_FAST), **opts)(_composite_py)


#: Creating dispatchers compiles nothing, so this costs nothing at import.
KERNELS = Kernels()

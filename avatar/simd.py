"""16-lane float32 vectors as numba values: LLVM's <16 x float>, kept in registers.

numba's auto-vectoriser turns a loop over 16 pixels into SIMD code, but the loop's state must
live in an array, so every step loads and stores it. A value of type `f32x16` is an SSA value
instead: a numba local holding one keeps it in a register across a loop (LLVM promotes the
local), and a tuple of them is a set of registers. The compositing kernel
(`avatar.raster_kernels`) writes its per-step maths as an `@intrinsic` over these values with
the helpers below; LLVM lowers <16 x float> to one AVX-512 register, two AVX2 registers or
four NEON registers, so nothing here is x86-specific.

The helpers build LLVM IR (`llvmlite.ir`); they are called from intrinsic code generators.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

#: Lanes of one vector: a tile row of 16 pixels.
LANES = 16

VECTOR = ir.VectorType(ir.FloatType(), LANES)
_INT_VECTOR = ir.VectorType(ir.IntType(32), LANES)
_I32 = ir.IntType(32)

#: Fast-math flags for vector arithmetic: contraction into FMAs and reassociation, but no
#: "nnan"/"ninf", so LLVM keeps the selects that mask lanes holding inf or NaN.
FAST = ("contract", "reassoc", "nsz", "arcp", "afn")


class F32x16(types.Type):
    """numba type of a <16 x float> value."""

    def __init__(self) -> None:
        super().__init__(name="f32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, VECTOR)


def const(value: float) -> ir.Constant:
    """Every lane `value` (rounded to float32)."""
    return ir.Constant(VECTOR, [float(np.float32(value))] * LANES)


#: Lane i holds i: the column offsets of a tile row.
LANE_INDEX = ir.Constant(VECTOR, [float(i) for i in range(LANES)])


def splat(builder: ir.IRBuilder, scalar: ir.Value) -> ir.Value:
    """Every lane the float `scalar`."""
    undef = ir.Constant(VECTOR, ir.Undefined)
    first = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(first, undef, ir.Constant(_INT_VECTOR, [0] * LANES))


def minimum(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """a < b ? a : b per lane (numba's `min` on floats)."""
    return builder.select(builder.fcmp_ordered("<", a, b), a, b)


def negative(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """-|v| per lane: the sign bit set."""
    bits = builder.or_(
        builder.bitcast(v, _INT_VECTOR), ir.Constant(_INT_VECTOR, [-(2**31)] * LANES)
    )
    return builder.bitcast(bits, VECTOR)


def any_positive(builder: ir.IRBuilder, vectors: list[ir.Value]) -> ir.Value:
    """i1: whether any lane of any of `vectors` is > 0."""
    mask = None
    for v in vectors:
        m = builder.fcmp_ordered(">", v, const(0.0))
        mask = m if mask is None else builder.or_(mask, m)
    bits = builder.bitcast(mask, ir.IntType(LANES))
    return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(LANES), 0))


@intrinsic
def store(typingctx, vectors, array):
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
                builder.extract_value(args[0], k), builder.bitcast(ptr, VECTOR.as_pointer()), 4
            )
        return context.get_dummy_value()

    return types.none(vectors, array), codegen


@intrinsic
def prefetch_row(typingctx, array, row):
    """Hint the CPU to fetch row `row` of a 2-D C-contiguous `array` into cache (no effect on
    results). For the kernels' random reads of Gaussian records by id, which the hardware
    prefetcher cannot predict."""
    if not (isinstance(array, types.Array) and array.ndim == 2 and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        offset = builder.mul(
            context.cast(builder, args[1], sig.args[1], types.intp),
            builder.extract_value(ary.strides, 0),
        )
        byte_ptr = ir.IntType(8).as_pointer()
        address = builder.gep(builder.bitcast(ary.data, byte_ptr), [offset])
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, _I32, _I32, _I32])
        prefetch = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, high temporal locality (keep in all cache levels), data cache
        builder.call(
            prefetch, [address, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)]
        )
        return context.get_dummy_value()

    return types.none(array, row), codegen

r"""16-bit floating point for the kernels: float16 and bfloat16 bits <-> float32, in Numba.

Numba has no float16 or bfloat16 arithmetic, so a kernel over 16-bit storage gets the buffers as
``uint16`` views, converts every value it reads to float32 and every value it stores back. The
four conversions here are exact, branch-free (selects, not jumps, so loops that use them
vectorize) and agree bit for bit with NumPy's ``float16`` casts and ``ml_dtypes``' ``bfloat16``
casts (``tests/test_lowp.py`` checks all 65,536 16-bit patterns, every float32 pattern for
bfloat16, and for float16 every tie, subnormal and overflow edge plus random patterns):

    f16_to_f32(h)    exact (every float16 is a float32): normals, subnormals (m * 2**-24), +-0,
                     +-inf; a NaN keeps its sign and its payload in the top mantissa bits
                     (``0x7f800000 | m << 13``, as NumPy: a signalling NaN stays signalling)
    f32_to_f16(x)    round to nearest, ties to even; below 2**-14 to float16's subnormals (by
                     the same rounding); |x| >= 65520 to inf; a NaN stays NaN with its sign and
                     the top 10 payload bits (``0x7c00 | m >> 13``, or ``0x7c01`` when those
                     bits are 0 so it does not become inf), as NumPy
    bf16_to_f32(b)   exact: the 16 bits become the top half of the float32 (payload kept)
    f32_to_bf16(x)   round to nearest, ties to even (the largest finite float32s round to inf);
                     a NaN becomes the quiet NaN ``0x7fc0`` with its sign (payload dropped, as
                     ml_dtypes)

Storage formats are small ints that kernels take as compile-time constants:

    NATIVE  the buffer holds float32 or float64 values (no conversion)
    F16     the buffer is a uint16 view of float16 values
    BF16    the buffer is a uint16 view of bfloat16 values

:func:`load` / :func:`store` convert one element for a format and :func:`round_to` rounds a
float32 value to a format's precision and back (``per_op`` rounding). They are intrinsics that
pick the conversion from the literal format while typing, so no branch reaches the kernel. The
bit casts are two tiny LLVM intrinsics.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = [
    "NATIVE",
    "F16",
    "BF16",
    "f16_to_f32",
    "f32_to_f16",
    "bf16_to_f32",
    "f32_to_bf16",
    "load",
    "store",
    "round_to",
    "storage_format",
]

NATIVE, F16, BF16 = 0, 1, 2


def storage_format(dtype: np.dtype) -> int:
    """The format constant of a buffer dtype: ``F16``, ``BF16`` or ``NATIVE`` (float32/64)."""
    from minnet.dtypes import bfloat16

    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return F16
    if dtype == bfloat16:
        return BF16
    return NATIVE


# -- bit casts --------------------------------------------------------------------------------


@intrinsic
def _bits_f32(typingctx, x):  # type: ignore[no-untyped-def]
    """The float32 whose bits are the low 32 bits of the integer ``x``."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        v = args[0]
        i32 = ir.IntType(32)
        if v.type.width > 32:
            v = builder.trunc(v, i32)
        elif v.type.width < 32:
            v = builder.zext(v, i32)
        return builder.bitcast(v, ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def _f32_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The bits of the float32 ``x``, as a non-negative int64."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))

    return types.int64(x), codegen


# -- the four conversions ---------------------------------------------------------------------

_F16_SUB_SCALE = np.float32(2.0**-24)  # float16's subnormal spacing
_HALF = np.float32(0.5)  # adding it rounds |x| < 2**-14 to a multiple of 2**-24 (RNE)
_HALF_BITS = 0x3F000000


@numba.njit(error_model="numpy")
def f16_to_f32(h):  # pragma: no cover - compiled
    """float16 bits (any integer holding 16 bits) -> the float32 of the same value."""
    h = np.int64(h) & 0xFFFF
    sign = (h & 0x8000) << 16
    e = h & 0x7C00
    m = h & 0x03FF
    normal = ((h & 0x7FFF) << 13) + (112 << 23)  # rebias the exponent by 127 - 15
    infnan = 0x7F800000 | (m << 13)
    sub = _f32_bits(np.float32(m) * _F16_SUB_SCALE)  # exact: m < 2**10
    bits = normal if e != 0 else sub
    bits = infnan if e == 0x7C00 else bits
    return _bits_f32(bits | sign)


@numba.njit(error_model="numpy")
def f32_to_f16(x):  # pragma: no cover - compiled
    """float32 -> float16 bits (uint16), round to nearest even; see the module docstring."""
    u = _f32_bits(np.float32(x))
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    # Normal range: drop 13 mantissa bits with RNE; a carry rolls into the exponent (to inf).
    normal = (a - (112 << 23) + 0xFFF + ((a >> 13) & 1)) >> 13
    # Below 2**-14: let float32 addition round |x| to a multiple of 2**-24.
    sub = _f32_bits(_bits_f32(a) + _HALF) - _HALF_BITS
    nan = 0x7C00 | ((a >> 13) & 0x3FF)
    nan = nan if nan != 0x7C00 else 0x7C01
    out = normal if a >= 0x38800000 else sub
    out = 0x7C00 if a >= 0x47800000 else out
    out = nan if a > 0x7F800000 else out
    return np.uint16(out | sign)


def _i32(builder, v):  # type: ignore[no-untyped-def]
    """An integer LLVM value truncated or zero-extended to i32."""
    i32 = ir.IntType(32)
    if v.type.width > 32:
        return builder.trunc(v, i32)
    if v.type.width < 32:
        return builder.zext(v, i32)
    return v


@intrinsic
def bf16_to_f32(typingctx, b):  # type: ignore[no-untyped-def]
    """bfloat16 bits -> the float32 of the same value (exact): the 16 bits become the top half.
    Written in 32-bit LLVM integer ops so loops vectorize 16 lanes wide."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i32 = ir.IntType(32)
        v = builder.and_(_i32(builder, args[0]), ir.Constant(i32, 0xFFFF))
        return builder.bitcast(builder.shl(v, ir.Constant(i32, 16)), ir.FloatType())

    return types.float32(b), codegen


@intrinsic
def f32_to_bf16(typingctx, x):  # type: ignore[no-untyped-def]
    """float32 -> bfloat16 bits (uint16), round to nearest even; NaN -> quiet NaN with sign
    (``(u >> 16) | 0x7fc0``, payload dropped). 32-bit LLVM integer ops, branch-free."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i32 = ir.IntType(32)

        def c(k: int) -> ir.Constant:
            return ir.Constant(i32, k)

        u = builder.bitcast(args[0], i32)
        hi = builder.lshr(u, c(16))
        rounded = builder.lshr(builder.add(builder.add(u, c(0x7FFF)), builder.and_(hi, c(1))),
                               c(16))  # fmt: skip
        nan = builder.and_(builder.or_(hi, c(0x7FC0)), c(0xFFC0))
        is_nan = builder.icmp_unsigned(">", builder.and_(u, c(0x7FFFFFFF)), c(0x7F800000))
        out = builder.select(is_nan, nan, rounded)
        return builder.trunc(out, ir.IntType(16))

    return types.uint16(x), codegen


# -- per-format access, for kernels ------------------------------------------------------------
#
# ``load``, ``store`` and ``round_to`` are intrinsics: typing picks the conversion from the literal
# format, and code generation emits a call to one small compiled function (``NATIVE`` emits
# nothing), which LLVM inlines into the kernel's loop. Numba's IR-level ``inline="always"`` would
# do the same at a high compile-time cost: it deep-copies the callee's IR at every call site, and
# a 16-bit kernel has dozens of them (13 s to compile one Adam kernel instead of 2 s).


@numba.njit(error_model="numpy")
def _load_f16(x):  # pragma: no cover - compiled
    return f16_to_f32(x)


@numba.njit(error_model="numpy")
def _load_bf16(x):  # pragma: no cover - compiled
    return bf16_to_f32(x)


@numba.njit(error_model="numpy")
def _store_f16(x):  # pragma: no cover - compiled
    return f32_to_f16(x)


@numba.njit(error_model="numpy")
def _store_bf16(x):  # pragma: no cover - compiled
    return f32_to_bf16(x)


@numba.njit(error_model="numpy")
def _round_f16(x):  # pragma: no cover - compiled
    return f16_to_f32(f32_to_f16(x))


@numba.njit(error_model="numpy")
def _round_bf16(x):  # pragma: no cover - compiled
    return bf16_to_f32(f32_to_bf16(x))


def _per_format(doc: str, f16, bf16, out, arg=None):  # type: ignore[no-untyped-def]
    """An intrinsic ``(x, fmt)`` that calls ``f16`` / ``bf16`` (compiled functions returning
    ``out``) for those formats and returns ``x`` itself for ``NATIVE``. ``arg`` is the type
    the 16-bit conversion takes (``None``: ``x``'s own type)."""

    def typer(typingctx, x, fmt):  # type: ignore[no-untyped-def]
        if not isinstance(fmt, types.IntegerLiteral):
            return None  # typing retries with the literal format
        f = fmt.literal_value
        if f == NATIVE:

            def native(context, builder, signature, args):  # type: ignore[no-untyped-def]
                return args[0]

            return x(x, fmt), native
        fn = {F16: f16, BF16: bf16}[f].py_func
        conv_sig = out(x if arg is None else arg)

        def convert(context, builder, signature, args):  # type: ignore[no-untyped-def]
            value = context.cast(builder, args[0], x, conv_sig.args[0])
            return context.compile_internal(builder, fn, conv_sig, [value])

        return out(x, fmt), convert

    typer.__doc__ = doc
    return intrinsic(prefer_literal=True)(typer)


load = _per_format(
    """One stored element as a compute value: float32 for ``F16``/``BF16`` (``x`` holds the
    bits), ``x`` itself for ``NATIVE``. ``fmt`` must be a compile-time constant.""",
    _load_f16, _load_bf16, types.float32,
)  # fmt: skip
store = _per_format(
    """A compute value as the element to store: its 16-bit pattern for ``F16``/``BF16`` (round
    to nearest even), else ``x`` itself. ``fmt`` must be a compile-time constant.""",
    _store_f16, _store_bf16, types.uint16, types.float32,
)  # fmt: skip
round_to = _per_format(
    """``x`` (float32) rounded to the precision of ``fmt`` and back to float32; ``x`` itself for
    ``NATIVE``. The ``per_op`` rounding model applies it after every operation.""",
    _round_f16, _round_bf16, types.float32, types.float32,
)  # fmt: skip

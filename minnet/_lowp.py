r"""16-bit floating point for the kernels: float16 and bfloat16 bits <-> float32, in Numba.

Numba has no float16 or bfloat16 arithmetic, so a kernel over 16-bit storage gets the buffers as
``uint16`` views, converts every value it reads to float32 and every value it stores back. The
four conversions here are exact, branch-free (selects, not jumps, so loops that use them
vectorize) and agree bit for bit with NumPy's ``float16`` casts and ``ml_dtypes``' ``bfloat16``
casts on every value but float16's signalling NaNs, which they quiet (``tests/test_lowp.py``
checks all 65,536 16-bit patterns, every float32 pattern for bfloat16, and for float16 every tie,
subnormal and overflow edge plus random patterns):

    f16_to_f32(h)    exact (every float16 is a float32): normals, subnormals (m * 2**-24), +-0,
                     +-inf; a NaN keeps its sign and its payload in the top mantissa bits and is
                     quiet (``0x7fc00000 | m << 13``; NumPy keeps a signalling NaN signalling)
    f32_to_f16(x)    round to nearest, ties to even; below 2**-14 to float16's subnormals (by
                     the same rounding); |x| >= 65520 to inf; a NaN stays NaN with its sign and
                     the top 10 payload bits, quiet (``0x7e00 | m >> 13``; NumPy: ``0x7c00 | m
                     >> 13``, ``0x7c01`` when those bits are 0)
    bf16_to_f32(b)   exact: the 16 bits become the top half of the float32 (payload kept)
    f32_to_bf16(x)   round to nearest, ties to even (the largest finite float32s round to inf);
                     a NaN becomes the quiet NaN ``0x7fc0`` with its sign (payload dropped, as
                     ml_dtypes)

**float16 by the CPU (F16C).** Where the CPU has F16C (x86 since 2012; :func:`cpu_has_f16c`),
the kernels convert float16 with ``vcvtph2ps`` / ``vcvtps2ph`` instead: :func:`f16_to_f32_hw`
and :func:`f32_to_f16_hw` are LLVM's ``fpext`` from / ``fptrunc`` to ``half`` on the 16 bits, one
instruction for 16 values on AVX-512, where the integer code takes about a dozen. They give the
same bits as the integer code for every input: IEEE 754 rounding of finite values, and for a NaN
what the instructions do, which is why the integer code quiets NaNs too. That is also PyTorch's:
its vectorised CPU conversions are these instructions, and its scalar ones (``c10::Half``) quiet
a NaN when widening and store ``0x7e00`` with the sign when narrowing (the payload dropped; the
same bits as here for every NaN that float32 arithmetic creates, whose top payload bits are 0).
:data:`F16_HARDWARE` holds the choice, made once at import: F16C where the CPU has it, unless
``MINNET_F16C=0``. A compiled kernel is cached on disk per choice (:mod:`minnet._jitcache`). The
kernels store the same bits either way (``tests/test_lowp_f16c.py``), except that a NaN's own bits
may differ where two NaNs meet in one operation (which one x86 returns depends on the order LLVM
gives the operands). bfloat16 keeps its integer code: widening is one shift already, and the
one narrowing instruction (AVX-512 BF16's ``vcvtneps2bf16``) treats float32 subnormals as zero,
so it would not be exact.

Storage formats are small ints that kernels take as compile-time constants:

    NATIVE  the buffer holds float32 or float64 values (no conversion)
    F16     the buffer is a uint16 view of float16 values
    BF16    the buffer is a uint16 view of bfloat16 values

:func:`load` / :func:`store` convert one element for a format and :func:`round_to` rounds a
float32 value to a format's precision and back (``per_op`` rounding). They are intrinsics that
pick the conversion from the literal format while typing, so no branch reaches the kernel. The
four integer conversions are LLVM intrinsics in 32-bit integer ops.
"""

from __future__ import annotations

import os
import sys

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import config as numba_config
from numba.extending import intrinsic

__all__ = [
    "NATIVE",
    "F16",
    "BF16",
    "f16_to_f32",
    "f32_to_f16",
    "bf16_to_f32",
    "f32_to_bf16",
    "f16_to_f32_hw",
    "f32_to_f16_hw",
    "cpu_has_f16c",
    "F16_HARDWARE",
    "load",
    "store",
    "round_to",
    "storage_format",
    "LITTLE_ENDIAN",
    "lo16",
    "hi16",
    "pack16",
]

NATIVE, F16, BF16 = 0, 1, 2


def storage_format(dtype: np.dtype) -> int:
    """The format constant of a buffer dtype: ``F16``, ``BF16`` or ``NATIVE`` (float32/64)."""
    from minnet.dtypes import is_bfloat16

    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return F16
    if is_bfloat16(dtype):
        return BF16
    return NATIVE


# -- the four conversions, as LLVM IR in 32-bit integer lanes ----------------------------------
#
# Every conversion is a handful of 32-bit integer ops, float32 bit casts and selects, so a loop
# over them vectorizes 16 lanes wide on AVX-512 (8 on AVX2). Numba types integer literals as
# int64, so the same code written with ``@njit`` would compute in 64-bit lanes (half the width).

_I32 = ir.IntType(32)
_F32 = ir.FloatType()


def _c(k: int) -> ir.Constant:
    """A 32-bit integer constant."""
    return ir.Constant(_I32, k)


def _i32(builder, v):  # type: ignore[no-untyped-def]
    """An integer LLVM value truncated or zero-extended to i32."""
    if v.type.width > 32:
        return builder.trunc(v, _I32)
    if v.type.width < 32:
        return builder.zext(v, _I32)
    return v


@intrinsic
def f16_to_f32(typingctx, h):  # type: ignore[no-untyped-def]
    """float16 bits (any integer holding 16 bits) -> the float32 of the same value (exact).

    With ``e = h & 0x7c00`` and ``m = h & 0x3ff``: a normal moves its exponent and mantissa up
    13 bits and rebiases the exponent by 127 - 15 = 112; a subnormal is ``float32(m) * 2**-24``
    (exact, ``m < 2**10``); inf and NaN get the exponent 255 and keep ``m << 13``, a NaN with
    the quiet bit ``0x400000`` set; the sign moves up 16 bits."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        b = builder
        v = b.and_(_i32(b, args[0]), _c(0xFFFF))
        sign = b.shl(b.and_(v, _c(0x8000)), _c(16))
        e = b.and_(v, _c(0x7C00))
        m = b.and_(v, _c(0x03FF))
        normal = b.add(b.shl(b.and_(v, _c(0x7FFF)), _c(13)), _c(112 << 23))
        infnan = b.add(normal, _c(112 << 23))  # exponent 31 + 112 + 112 = 255, m << 13 kept
        quiet = b.select(b.icmp_unsigned("!=", m, _c(0)), _c(0x400000), _c(0))  # NaN: quiet bit
        infnan = b.or_(infnan, quiet)
        sub = b.bitcast(b.fmul(b.uitofp(m, _F32), ir.Constant(_F32, 2.0**-24)), _I32)
        bits = b.select(b.icmp_unsigned("!=", e, _c(0)), normal, sub)
        bits = b.select(b.icmp_unsigned("==", e, _c(0x7C00)), infnan, bits)
        return b.bitcast(b.or_(bits, sign), _F32)

    return types.float32(h), codegen


@intrinsic
def f32_to_f16(typingctx, x):  # type: ignore[no-untyped-def]
    """float32 -> float16 bits (uint16), round to nearest even; see the module docstring.

    With ``a = bits(|x|)``: at or above 2**-14 (``a >= 0x38800000``) the exponent is rebiased
    and 13 mantissa bits are dropped with RNE, ``(a - (112 << 23) + 0xfff + ((a >> 13) & 1))
    >> 13`` (a carry rolls into the exponent, up to inf); below it float32 addition rounds:
    ``bits(|x| + 0.5) - bits(0.5)`` is |x| in units of 2**-24, rounded to nearest even; from
    65520 (``a >= 0x47800000``) it is inf; a NaN is ``0x7e00 | (a >> 13) & 0x3ff`` (quiet, its
    top 10 payload bits kept). The sign is ``(bits(x) >> 16) & 0x8000``."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        b = builder
        u = b.bitcast(args[0], _I32)
        sign = b.and_(b.lshr(u, _c(16)), _c(0x8000))
        a = b.and_(u, _c(0x7FFFFFFF))
        top = b.lshr(a, _c(13))
        normal = b.lshr(
            b.add(b.add(a, _c(0xFFF - (112 << 23))), b.and_(top, _c(1))), _c(13)
        )  # fmt: skip
        half = ir.Constant(_F32, 0.5)
        sub = b.sub(b.bitcast(b.fadd(b.bitcast(a, _F32), half), _I32), _c(0x3F000000))
        nan = b.or_(b.and_(top, _c(0x3FF)), _c(0x7E00))  # quiet, the top payload bits kept
        out = b.select(b.icmp_unsigned(">=", a, _c(0x38800000)), normal, sub)
        out = b.select(b.icmp_unsigned(">=", a, _c(0x47800000)), _c(0x7C00), out)
        out = b.select(b.icmp_unsigned(">", a, _c(0x7F800000)), nan, out)
        return b.trunc(b.or_(out, sign), ir.IntType(16))

    return types.uint16(x), codegen


@intrinsic
def bf16_to_f32(typingctx, b):  # type: ignore[no-untyped-def]
    """bfloat16 bits -> the float32 of the same value (exact): the 16 bits become the top half."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        v = builder.and_(_i32(builder, args[0]), _c(0xFFFF))
        return builder.bitcast(builder.shl(v, _c(16)), _F32)

    return types.float32(b), codegen


@intrinsic
def f32_to_bf16(typingctx, x):  # type: ignore[no-untyped-def]
    """float32 -> bfloat16 bits (uint16), round to nearest even, ``(u + 0x7fff + ((u >> 16) &
    1)) >> 16`` on the bits ``u``; a NaN (``x != x``) becomes the quiet NaN ``0x7fc0`` with its
    sign (payload dropped, as ml_dtypes)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        b = builder
        u = b.bitcast(args[0], _I32)
        hi = b.lshr(u, _c(16))
        rounded = b.lshr(b.add(b.add(u, _c(0x7FFF)), b.and_(hi, _c(1))), _c(16))
        nan = b.or_(b.and_(hi, _c(0x8000)), _c(0x7FC0))
        # One unordered float compare finds a NaN (cheaper than testing the bits).
        is_nan = b.fcmp_unordered("uno", args[0], args[0])
        return b.trunc(b.select(is_nan, nan, rounded), ir.IntType(16))

    return types.uint16(x), codegen


# -- float16 by the CPU's conversion instructions (F16C) ---------------------------------------
#
# LLVM converts between ``half`` and ``float`` with ``fpext`` / ``fptrunc``; where the target CPU
# has F16C they compile to ``vcvtph2ps`` / ``vcvtps2ph`` (on xmm/ymm, or zmm with AVX-512), one
# instruction for 4 to 16 values, and a loop over them still vectorizes. Without F16C LLVM would
# call a runtime helper instead (which Numba's JIT may not even link), so the hardware path is
# taken only where :func:`cpu_has_f16c` says the instructions exist.

_I16 = ir.IntType(16)
_HALF = ir.HalfType()


def cpu_has_f16c() -> bool:
    """Whether the CPU that Numba compiles for has the F16C float16 conversion instructions:
    the host's features (llvmlite's ``get_host_cpu_features()``), or ``NUMBA_CPU_FEATURES``
    when set; a ``NUMBA_CPU_NAME`` other than ``host`` without features counts as no F16C
    (a portable build must not assume it)."""
    if numba_config.CPU_FEATURES is not None:
        return "+f16c" in numba_config.CPU_FEATURES.split(",")
    if numba_config.CPU_NAME not in (None, "host"):
        return False
    try:
        return bool(llvm.get_host_cpu_features().get("f16c", False))
    except RuntimeError:  # llvmlite cannot read the host's features here
        return False


#: Whether :func:`load`, :func:`store` and :func:`round_to` convert float16 with F16C
#: (:func:`f16_to_f32_hw`, :func:`f32_to_f16_hw`) instead of the integer code of
#: :func:`f16_to_f32` / :func:`f32_to_f16` (the same bits either way). Decided once, at import:
#: the CPU has F16C and the environment variable ``MINNET_F16C`` is not ``0``. Compiled
#: kernels are cached on disk per choice (:mod:`minnet._jitcache` keys on it).
F16_HARDWARE: bool = os.environ.get("MINNET_F16C", "").strip() != "0" and cpu_has_f16c()


@intrinsic
def f16_to_f32_hw(typingctx, h):  # type: ignore[no-untyped-def]
    """float16 bits (any integer holding 16 bits) -> float32 by LLVM's ``fpext`` from ``half``
    (``vcvtph2ps``): the bits of :func:`f16_to_f32` for every input (a NaN is quieted, its
    payload kept). Only for a CPU with F16C (:func:`cpu_has_f16c`)."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        v = args[0]
        if v.type.width > 16:
            v = builder.trunc(v, _I16)
        elif v.type.width < 16:
            v = builder.zext(v, _I16)
        return builder.fpext(builder.bitcast(v, _HALF), _F32)

    return types.float32(h), codegen


@intrinsic
def f32_to_f16_hw(typingctx, x):  # type: ignore[no-untyped-def]
    """float32 -> float16 bits (uint16) by LLVM's ``fptrunc`` to ``half`` (``vcvtps2ph``, round
    to nearest even): the bits of :func:`f32_to_f16` for every input. Only for a CPU with F16C
    (:func:`cpu_has_f16c`)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(builder.fptrunc(args[0], _HALF), _I16)

    return types.uint16(x), codegen


# -- two 16-bit values in one 32-bit word ------------------------------------------------------
#
# A kernel can read two neighbouring 16-bit elements as one uint32 word (a ``uint32`` view of the
# buffer) and write them back the same way: the vectorized loop then needs no 16 <-> 32-bit
# widening and narrowing shuffles, only shifts and masks (``bf16_to_f32(lo16(w))`` is
# ``w << 16``, ``bf16_to_f32(hi16(w))`` is ``w & 0xffff0000``). On a little-endian machine
# element ``2k`` is the low half of word ``k``.

#: Whether element ``2k`` of a 16-bit buffer is the low half of word ``k`` of its uint32 view.
LITTLE_ENDIAN = sys.byteorder == "little"


@intrinsic
def lo16(typingctx, w):  # type: ignore[no-untyped-def]
    """The low 16 bits of the uint32 ``w``, as uint16."""
    if w != types.uint32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.trunc(args[0], ir.IntType(16))

    return types.uint16(w), codegen


@intrinsic
def hi16(typingctx, w):  # type: ignore[no-untyped-def]
    """The high 16 bits of the uint32 ``w``, as uint16."""
    if w != types.uint32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.trunc(builder.lshr(args[0], _c(16)), ir.IntType(16))

    return types.uint16(w), codegen


@intrinsic
def pack16(typingctx, lo, hi):  # type: ignore[no-untyped-def]
    """The uint32 word ``lo | hi << 16`` of two uint16 values."""
    if lo != types.uint16 or hi != types.uint16:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        lo32 = builder.zext(args[0], _I32)
        return builder.or_(lo32, builder.shl(builder.zext(args[1], _I32), _c(16)))

    return types.uint32(lo, hi), codegen


# -- per-format access, for kernels ------------------------------------------------------------
#
# ``load``, ``store`` and ``round_to`` are intrinsics: typing picks the conversion from the literal
# format, and code generation emits a call to one small compiled function (``NATIVE`` emits
# nothing), which LLVM inlines into the kernel's loop. Numba's IR-level ``inline="always"`` would
# do the same at a high compile-time cost: it deep-copies the callee's IR at every call site, and
# a 16-bit kernel has dozens of them (13 s to compile one Adam kernel instead of 2 s).


# The float16 pair that the kernels use: F16C's instructions or the integer code, chosen once.
_f16_in, _f16_out = (f16_to_f32_hw, f32_to_f16_hw) if F16_HARDWARE else (f16_to_f32, f32_to_f16)


@numba.njit(error_model="numpy")
def _load_f16(x):  # pragma: no cover - compiled
    return _f16_in(x)


@numba.njit(error_model="numpy")
def _load_bf16(x):  # pragma: no cover - compiled
    return bf16_to_f32(x)


@numba.njit(error_model="numpy")
def _store_f16(x):  # pragma: no cover - compiled
    return _f16_out(x)


@numba.njit(error_model="numpy")
def _store_bf16(x):  # pragma: no cover - compiled
    return f32_to_bf16(x)


@numba.njit(error_model="numpy")
def _round_f16(x):  # pragma: no cover - compiled
    return _f16_in(_f16_out(x))


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

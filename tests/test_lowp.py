"""The 16-bit conversions of minnet._lowp against NumPy's float16 and ml_dtypes' bfloat16 casts,
and float16's two implementations (integer code and the CPU's F16C instructions) against each other.

16 -> 32 bits: all 65,536 patterns of each format. 32 -> 16 bits: bfloat16 on every one of the
2**32 float32 patterns (slow-marked, chunked: ml_dtypes' cast is fast); float16 on every pattern
within 3 units of each float16 value and of each midpoint between neighbours (every tie, both
subnormal edges, the overflow edge at 65520), every 127th pattern of the float32 exponents around
float16's subnormal and overflow limits, every NaN with each of the 1024 top payloads, and 2**21
random patterns (NumPy's float16 cast, ~100 ns per element here, is too slow for all 2**32), by
both implementations; and the two float16 implementations against each other on every one of the
2**32 float32 patterns (slow-marked; where the CPU has F16C).

NaN: minnet's float16 conversions quiet a NaN (as IEEE 754's convertFormat, the F16C instructions
and PyTorch's conversions do) and keep its sign and payload bits; NumPy keeps a signalling NaN
signalling. So a NaN's expected bits are NumPy's with the quiet bit set (``0x400000`` in float32,
``0x200`` in float16), and every other pattern is NumPy's exactly.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from minnet import dtypes
from minnet._lowp import (
    bf16_to_f32,
    cpu_has_f16c,
    f16_to_f32,
    f16_to_f32_hw,
    f32_to_bf16,
    f32_to_f16,
    f32_to_f16_hw,
)

BF16 = dtypes.bfloat16
#: float16's two implementations; the hardware one only where the CPU has F16C.
PATHS = [
    "software",
    pytest.param(
        "hardware", marks=pytest.mark.skipif(not cpu_has_f16c(), reason="the CPU has no F16C")
    ),
]


@numba.njit(error_model="numpy")
def _to_f32_f16(h, out):  # pragma: no cover - compiled
    for i in range(h.shape[0]):
        out[i] = f16_to_f32(h[i])


@numba.njit(error_model="numpy")
def _to_f32_bf16(h, out):  # pragma: no cover - compiled
    for i in range(h.shape[0]):
        out[i] = bf16_to_f32(h[i])


@numba.njit(error_model="numpy")
def _to_f16(x, out):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        out[i] = f32_to_f16(x[i])


@numba.njit(error_model="numpy")
def _to_f32_f16_hw(h, out):  # pragma: no cover - compiled
    for i in range(h.shape[0]):
        out[i] = f16_to_f32_hw(h[i])


@numba.njit(error_model="numpy")
def _to_f16_hw(x, out):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        out[i] = f32_to_f16_hw(x[i])


@numba.njit(error_model="numpy")
def _to_bf16(x, out):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        out[i] = f32_to_bf16(x[i])


@numba.njit
def _iota(start, out):  # pragma: no cover - compiled
    for i in range(out.shape[0]):
        out[i] = start + i


def _mismatch(bits: np.ndarray, got: np.ndarray, want: np.ndarray) -> str:
    i = np.nonzero(got != want)[0][:5]
    return f"{i.size}+ mismatches at inputs {[hex(b) for b in bits[i]]}: got " \
        f"{[hex(v) for v in got[i]]}, want {[hex(v) for v in want[i]]}"  # fmt: skip


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float16-hardware"])
def test_16_to_32_every_pattern(dtype: str) -> None:
    if dtype == "float16-hardware" and not cpu_has_f16c():
        pytest.skip("the CPU has no F16C")
    convert = {"float16": _to_f32_f16, "bfloat16": _to_f32_bf16, "float16-hardware": _to_f32_f16_hw}
    h = np.arange(65536, dtype=np.uint16)
    out = np.empty(65536, np.float32)
    convert[dtype](h, out)
    want = h.view(dtypes.as_dtype(dtype.split("-")[0])).astype(np.float32).view(np.uint32)
    if dtype != "bfloat16":  # a float16 NaN is quieted (module docstring)
        want = np.where(np.isnan(want.view(np.float32)), want | 0x400000, want)
    got = out.view(np.uint32)
    assert np.array_equal(got, want), _mismatch(h, got, want)


def _check_f16(bits: np.ndarray, path: str) -> None:
    bits = bits.astype(np.uint32)
    x = bits.view(np.float32)
    out = np.empty(x.size, np.uint16)
    (_to_f16 if path == "software" else _to_f16_hw)(x, out)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    # A NaN: the quiet NaN with the sign and the top 10 payload bits (NumPy: 0x7c01 for a
    # signalling NaN whose top payload bits are 0).
    want[nan] = ((bits[nan] >> 16) & 0x8000) | 0x7E00 | ((bits[nan] >> 13) & 0x3FF)
    assert np.array_equal(out, want), _mismatch(bits, out, want)


@pytest.mark.parametrize("path", PATHS)
def test_32_to_f16_boundaries_and_random(path: str) -> None:
    h = np.arange(0x7C01, dtype=np.uint32)  # +0 ... +inf
    v = h.astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32).astype(np.int64)
    mids = (v[:-1] + v[1:]) // 2  # the float32 midpoint of neighbours (exact: they are even)
    near = np.concatenate([v, mids, [0x477FF000]])  # 65520: the overflow tie
    offsets = np.arange(-3, 4)
    pos = (near[:, None] + offsets[None, :]).ravel()
    pos = pos[(pos >= 0) & (pos <= 0x7FFFFFFF)]
    # Every pattern of the float32 exponents at the subnormal edge (2**-25 .. 2**-14) and at
    # the overflow edge (2**15 .. 2**17).
    edges = [np.arange(e << 23, (e + 1) << 23, 127, dtype=np.int64) for e in (101, 102, 112, 113,
                                                                             142, 143)]
    nan = (0x7F800001 + (np.arange(1024, dtype=np.int64) << 13))
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 1 << 31, size=1 << 21, dtype=np.int64)
    allpos = np.concatenate([pos, *edges, nan, nan + 1, [0x7F800000, 0x7FFFFFFF], rand])
    _check_f16(np.concatenate([allpos, allpos | 0x80000000]), path)


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_f16c(), reason="the CPU has no F16C")
def test_f16_software_and_hardware_agree_on_every_pattern() -> None:
    n = 1 << 26
    bits = np.empty(n, np.uint32)
    soft = np.empty(n, np.uint16)
    hard = np.empty(n, np.uint16)
    for start in range(0, 1 << 32, n):
        _iota(start, bits)
        _to_f16(bits.view(np.float32), soft)
        _to_f16_hw(bits.view(np.float32), hard)
        if not np.array_equal(soft, hard):
            pytest.fail(_mismatch(bits, hard, soft))


@pytest.mark.slow
def test_32_to_bf16_every_pattern() -> None:
    n = 1 << 26
    bits = np.empty(n, np.uint32)
    out = np.empty(n, np.uint16)
    for start in range(0, 1 << 32, n):
        _iota(start, bits)
        x = bits.view(np.float32)
        _to_bf16(x, out)
        with np.errstate(invalid="ignore"):  # the NaN patterns: expected
            want = x.astype(BF16).view(np.uint16)
        if not np.array_equal(out, want):
            pytest.fail(_mismatch(bits, out, want))


def test_32_to_bf16_edges() -> None:
    # Ties, the overflow edge and NaNs on every run (the exhaustive test is slow-marked).
    v = np.arange(0x7F81, dtype=np.int64) << 16
    near = np.concatenate([v, v + 0x8000, [0x7F7FFFFF, 0x7F7F8000, 0x7FFFFFFF, 0x7F800001]])
    bits = (near[:, None] + np.arange(-2, 3)[None, :]).ravel()
    bits = bits[(bits >= 0) & (bits <= 0x7FFFFFFF)]
    bits = np.concatenate([bits, bits | 0x80000000]).astype(np.uint32)
    out = np.empty(bits.size, np.uint16)
    _to_bf16(bits.view(np.float32), out)
    with np.errstate(invalid="ignore"):  # NaN inputs: the cast's warning is expected
        want = bits.view(np.float32).astype(BF16).view(np.uint16)
    assert np.array_equal(out, want), _mismatch(bits, out, want)


@pytest.mark.parametrize(
    ("given", "want"),
    [("bfloat16", BF16), ("float16", np.float16), ("float32", np.float32), ("half", np.float16),
     (np.float64, np.float64), (BF16.type, BF16), (np.dtype("float32"), np.float32)],
)  # fmt: skip
def test_as_dtype(given: object, want: object) -> None:
    assert dtypes.as_dtype(given) == np.dtype(want)


@pytest.mark.parametrize("bad", ["float8", np.int32, None, "int16", 3])
def test_as_dtype_rejects(bad: object) -> None:
    with pytest.raises(TypeError, match="state_dtype must be"):
        dtypes.as_dtype(bad, "state_dtype")

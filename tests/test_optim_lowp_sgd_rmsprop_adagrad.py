"""SGD, RMSprop and Adagrad on float16 / bfloat16 parameters and state.

What is their own: the rounding models told apart, per_op refused where PyTorch has no such
placement (and on an edit), the eps-representable warning, the underflow and lost-update
counts, check_finite naming eps rounded to 0, and vectorized float32-only machine code. The
16-bit kernels against their NumPy references bit for bit (every option, both rounding models,
every parameter/state dtype pair) and the 16-bit state-dict round trips (per_op with momentum
and centered state too) are in tests/test_optim_lowp_family.py's tables over every rule;
PyTorch parity itself is tests/test_lowp_parity.py.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numba
import numpy as np
import pytest

from minnet.dtypes import as_dtype
from minnet.nn import Parameter
from minnet.optim import SGD, Adagrad, RMSprop
from minnet.optim.optimizer import LowPrecisionWarning, Optimizer

# Compiles ~100 kernel specialisations on a cold Numba cache: runs in `make test` (and CI),
# skipped by `make test-fast`.
# float16 state on purpose: its warnings are tested where they are asserted (test_eps_warning).
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")]

N = 261  # not a multiple of any vector width: the scalar tail runs too


def make_values(rng: np.random.Generator, n: int, scale_lo: float, scale_hi: float) -> np.ndarray:
    """Signed values over several decades with exact zeros, in float32."""
    x = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(scale_lo, scale_hi, n)
    x[rng.random(n) < 0.1] = 0.0
    return x.astype(np.float32)


def bits(a: np.ndarray) -> np.ndarray:
    """Bit patterns of a float16/bfloat16/float32 array; NaNs as one pattern (payloads differ
    between NumPy's and the kernels' arithmetic and do not matter)."""
    u = a.view(np.uint16 if a.itemsize == 2 else np.uint32).copy()
    u[np.isnan(a.astype(np.float32))] = 0
    return u


def assert_same(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.dtype == ref.dtype, what
    nan_ours, nan_ref = np.isnan(ours.astype(np.float32)), np.isnan(ref.astype(np.float32))
    assert (nan_ours == nan_ref).all(), f"{what}: NaN at different coordinates"
    diff = np.flatnonzero(bits(ours) != bits(ref))
    assert diff.size == 0, (
        f"{what}: {diff.size} of {ours.size} elements differ, first at {diff[0]}: "
        f"{ours[diff[0]]!r} vs reference {ref[diff[0]]!r}"
    )


def build(
    cls: type[Optimizer], kw: dict[str, Any], dtype: str, state_dtype: str | None, rounding: str,
    seed: int = 0, **extra: Any,
) -> tuple[Optimizer, Parameter, np.random.Generator]:  # fmt: skip
    rng = np.random.default_rng(seed)
    p = Parameter(make_values(rng, N, -3, 0.3).astype(as_dtype(dtype)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowPrecisionWarning)
        opt = cls([p], **kw, state_dtype=state_dtype, rounding=rounding, **extra)
    return opt, p, rng


# MINNET_TEST_FULL_LOWP=1 checks the machine code of every optimizer here.
FULL = os.environ.get("MINNET_TEST_FULL_LOWP") == "1"


def test_rounding_models_differ_in_float16() -> None:
    """The harness can tell the models apart: per_op and fused disagree on float16 RMSprop at
    eps=1e-8 (per_op adds an eps that is 0 in float16, so underflowed moments give inf/NaN)."""
    out = {}
    for rounding in ("fused", "per_op"):
        opt, p, rng = build(RMSprop, {"lr": 1e-2, "eps": 1e-8}, "float16", None, rounding)
        p.grad[...] = make_values(rng, N, -7, -5).astype(np.float16)
        with np.errstate(all="ignore"):
            opt.step()
        out[rounding] = p.data.astype(np.float32)
    assert np.isfinite(out["fused"]).all()
    assert not np.isfinite(out["per_op"]).all()


@pytest.mark.parametrize(
    "cls, kw",
    [
        (RMSprop, {"eps_mode": "inside"}),
        (Adagrad, {"eps_mode": "inside"}),
        (Adagrad, {"eps_mode": "inside_guarded"}),
    ],
)
def test_per_op_refused(cls: type[Optimizer], kw: dict[str, Any]) -> None:
    """per_op exists only for PyTorch's placement: refused at construction and when a group is
    edited to another placement; float32 parameters (no 16-bit buffer) accept it."""
    p = Parameter(np.ones(4, np.float16))
    with pytest.raises(
        ValueError, match=r"rounding='per_op'.*eps_mode='outside'.*rounding='fused'"
    ):
        cls([p], eps=1e-3, rounding="per_op", **kw)
    cls([Parameter(np.ones(4, np.float32))], rounding="per_op", **kw).step()
    opt = cls([Parameter(np.ones(4, np.float16))], eps=1e-3, rounding="per_op")
    opt.param_groups[0]["eps_mode"] = kw["eps_mode"]
    with pytest.raises(ValueError, match="eps_mode='outside'"):
        opt.step()


@pytest.mark.parametrize(
    "cls, kw, dtype, stored",
    [
        (RMSprop, {}, "float16", "stores square_avg as 0"),  # the defaults
        (RMSprop, {"eps": 1e-7}, "float16", "stores square_avg as 0"),
        (Adagrad, {}, "float16", "stores sum as 0"),
        (Adagrad, {}, "bfloat16", None),
        (RMSprop, {}, "bfloat16", None),
        (SGD, {"lr": 1e-2}, "float16", None),
    ],
)
def test_eps_warning(cls: type[Optimizer], kw: dict[str, Any], dtype: str, stored: Any) -> None:
    """RMSprop and Adagrad have only rounding='fused' in 16 bits, which keeps eps in float32:
    the warning is about float16 state storing the second moment as 0 for small gradients,
    and check_finite builds the optimizer; bfloat16, float32 state, or SGD do not warn."""
    p = Parameter(np.ones(4, as_dtype(dtype)))
    if stored is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cls([p], **kw)
        return
    with pytest.warns(LowPrecisionWarning, match=rf"{cls.__name__}: float16 state {stored}"):
        cls([p], **kw)
    with pytest.warns(LowPrecisionWarning) as record:
        cls([Parameter(np.ones(4, np.float16))], **kw, check_finite=True)
    assert "eps=" not in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls([Parameter(np.ones(4, np.float16))], **kw, state_dtype="float32")


@pytest.mark.parametrize("rounding", ["fused", "per_op"])
@pytest.mark.parametrize(
    "cls, kw",
    [
        (SGD, {"lr": 1e-2}),
        (RMSprop, {"lr": 1e-2, "eps": 1e-4}),
        (Adagrad, {"lr": 1e-2, "eps": 1e-4}),
    ],
)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_stats_count_underflow_and_lost_updates(
    cls: type[Optimizer], kw: dict[str, Any], dtype: str, rounding: str
) -> None:
    """track_stats counts, per step, second moments stored as 0 with a nonzero gradient
    (RMSprop, Adagrad; SGD has none) and coordinates whose update rounded away; tracking
    changes no bit of the parameters or the state."""
    plain, p0, rng = build(cls, kw, dtype, None, rounding, seed=3)
    tracked, p1, _ = build(cls, kw, dtype, None, rounding, seed=3, track_stats=True)
    for _ in range(3):
        g = make_values(rng, N, -8, 0).astype(p0.grad.dtype)
        g[:40] = 1e-6  # float16: (1 - alpha) * g**2 underflows; any dtype: tiny updates
        p0.grad[...] = g
        p1.grad[...] = g
        before = p1.data.copy()
        with np.errstate(all="ignore"):
            plain.step()
            tracked.step()
        assert_same(p1.data, p0.data, "tracked vs plain param")
        for name in plain._flats[0][0].state:
            assert_same(tracked._flats[0][0].state[name], plain._flats[0][0].state[name], name)
        stats = tracked.stats
        g32 = g.astype(np.float32)
        moment = {"RMSprop": "square_avg", "Adagrad": "sum"}.get(cls.__name__)
        if moment is None:
            assert stats.underflow == 0
        else:
            v = tracked._flats[0][0].state[moment].astype(np.float32)
            assert stats.underflow == int(((v == 0) & (g32 != 0)).sum())
        # Every update here is nonzero exactly where g is (lr * g stays normal in float32).
        lost = int(((p1.data == before) & (g32 != 0)).sum())
        assert stats.lost_updates == lost
    assert stats.lost_updates > 0  # the 1e-6 gradients move no 16-bit parameter of size ~1
    if dtype == "float16" and moment is not None and cls is RMSprop:
        assert stats.underflow > 0


def test_check_finite_names_eps_rounding_to_zero() -> None:
    """An eps edited down to 0 in float16 under per_op: check_finite refuses the step that would
    give g/0 and says why; nothing changes."""
    p = Parameter(np.ones(8, np.float16))
    opt = RMSprop([p], lr=1e-2, eps=1e-3, rounding="per_op", check_finite=True)
    opt.param_groups[0]["eps"] = 1e-8
    p.grad[...] = 1e-6
    with pytest.raises(FloatingPointError, match=r"eps=1e-08 is 0 in float16.*per_op"):
        opt.step()
    assert (p.data == 1).all() and (opt._flats[0][0].state["square_avg"] == 0).all()


_DOUBLE_ARITH = re.compile(r"\bv?(?:add|sub|mul|div|sqrt|fmadd\w*)[ps]d\b|\bv?cvt(?:ss2sd|ps2pd)\b")


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls, kw",
    [(SGD, {"lr": 1e-2, "momentum": 0.9}), (RMSprop, {}), (Adagrad, {})][: 3 if FULL else 1],
)
# One dtype per model keeps the uncached compiles short; both dtypes use the same conversions.
@pytest.mark.parametrize("rounding, dtype", [("fused", "bfloat16"), ("per_op", "float16")])
def test_lowp_kernels_vectorize_in_float32(
    cls: type[Optimizer], kw: dict[str, Any], rounding: str, dtype: str
) -> None:
    """The plain 16-bit kernel (default options) uses packed SIMD registers and no float64
    arithmetic: one compute dtype, float32, in the loop (the only float64 instructions are the
    scalars' unboxing, a narrowing convert)."""
    p = Parameter(np.ones(64, as_dtype(dtype)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowPrecisionWarning)
        opt = cls([p], **kw, rounding=rounding)
    flat = opt._flats[0][0]
    kernel = opt._kernel_of(0, False, True, flat.formats)
    # The disk-cached kernel cannot show its assembly: compile the same function again, uncached.
    uncached = numba.njit(error_model="numpy", nogil=True)(kernel.py_func)
    uncached(*flat.args, flat.scratch, opt._scalars(opt.param_groups[0], flat.compute_dtype, 1))
    asm = "\n".join(uncached.inspect_asm().values())
    wide = len(re.findall(r"\b[yz]mm\d+\b", asm))
    packed = len(re.findall(r"\bv(?:mul|add|div|sqrt)ps\b", asm))
    # A scalar loop uses none; float16 by F16C (minnet._lowp.F16_HARDWARE) is the shortest
    # vectorized kernel (SGD per_op: 85 uses here, 1468 with the integer conversions).
    assert wide > 40 and packed > 3, f"{wide} ymm/zmm uses, {packed} packed-single ops"
    assert not _DOUBLE_ARITH.findall(asm), set(_DOUBLE_ARITH.findall(asm))

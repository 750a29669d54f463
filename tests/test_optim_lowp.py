"""Adam and AdamW on float16 / bfloat16 parameters and state: per_op rounds every op, the
headline float16 failure, the guard rails and the stats. The kernels against their NumPy
references bit for bit (every eps placement and AMSGrad max, both rounding models, every
parameter/state dtype pair) are in tests/test_optim_lowp_family.py's table over every rule."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import minnet
from minnet.dtypes import bfloat16
from minnet.nn import Parameter
from minnet.optim import SGD, Adam
from minnet.optim._flat import StorageFormats
from minnet.optim.optimizer import LowPrecisionWarning

DTYPES = {"float16": np.dtype(np.float16), "bfloat16": bfloat16}


def param16(values: np.ndarray, dtype: np.dtype) -> Parameter:
    """A Parameter holding a 16-bit array (set after construction, whatever Parameter takes)."""
    p = Parameter(np.zeros(np.shape(values), np.float32))
    p.data = np.asarray(values, dtype=dtype)
    p.grad = np.zeros_like(p.data)
    return p


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype and bit patterns, except that any NaN equals any NaN."""
    if a.dtype != b.dtype:
        return False
    nan = np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32))
    wide = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return bool(np.all((a.view(wide) == b.view(wide)) | nan))


def gradients(dtype: np.dtype, n: int, steps: int, seed: int) -> list[np.ndarray]:
    """Normal values, exact zeros and values near the underflow limit of ``g**2 * (1 - beta2)``
    in ``dtype`` (float16: |g| ~ 1e-4..1e-7; bfloat16: |g| ~ 1e-18..1e-22)."""
    rng = np.random.default_rng(seed)
    tiny = 1e-6 if dtype == np.float16 else 1e-20
    out = []
    for _ in range(steps):
        g = rng.standard_normal(n) * 1e-2
        g[rng.random(n) < 0.2] = 0.0
        small = rng.random(n) < 0.3
        g[small] = rng.standard_normal(small.sum()) * tiny * 10.0 ** rng.integers(-1, 3)
        out.append(g.astype(dtype))
    return out


F16, BF16, F32 = np.dtype(np.float16), bfloat16, "float32"
AMS = dict(amsgrad=True)


def run_both(cls, dtype, state_dtype, rounding, options, eps, steps=6, n=257, seed=0):
    """Step an optimizer (kernel) and the reference (on copies) together; return both."""
    rng = np.random.default_rng(seed + 1)
    p = param16(rng.standard_normal(n), dtype)
    opt = cls([p], lr=1e-2, eps=eps, state_dtype=state_dtype, rounding=rounding,
              track_stats=True, **options)  # fmt: skip
    group = opt.param_groups[0]
    flat = opt._flats[0][0]
    ref = opt._reference(group, flat.formats)
    param = p.data.copy()
    state = [a.copy() for a in flat.arrays]
    for t, g in enumerate(gradients(np.dtype(dtype), n, steps, seed), start=1):
        p.grad[...] = g
        opt.step()
        ref(param, g, *state, opt._scalars(group, np.dtype(np.float32), t))
        assert same_bits(p.data, param), f"param differs at step {t}"
        for name, a, b in zip(flat.state, flat.arrays, state):
            assert same_bits(a, b), f"{name} differs at step {t}"
    return p, opt


@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # float16 state on purpose
def test_per_op_rounds_every_op() -> None:
    # The two models must differ on float16 (else per_op would not round anything).
    a, _ = run_both(Adam, F16, None, "per_op", {}, 1e-4)
    b, _ = run_both(Adam, F16, None, "fused", {}, 1e-4)
    assert not same_bits(a.data, b.data)


def test_headline_float16_per_op_nans_fused_trains() -> None:
    # PyTorch 2.13: Adam(lr=1e-3) on float16 with gradients [1e-3, 0, 3e-5] for three steps
    # gives [-inf, nan, -inf] (for-loop) and finite values with fused=True.
    out = {}
    for rounding in ("per_op", "fused"):
        p = param16(np.zeros(3), np.float16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LowPrecisionWarning)
            opt = Adam([p], lr=1e-3, rounding=rounding)
        for _ in range(3):
            p.grad[...] = [1e-3, 0.0, 3e-5]
            opt.step()
        out[rounding] = p.data.copy()
    per_op = out["per_op"]
    assert np.isneginf(per_op[0]) and np.isnan(per_op[1]) and np.isneginf(per_op[2])
    assert np.isfinite(out["fused"]).all()
    # fused=True in PyTorch 2.13 gives exactly these float16 values
    assert out["fused"].tolist() == np.array([-0.004147, 0.0, -0.00413], np.float16).tolist()


@pytest.mark.parametrize("rounding", ["fused", "per_op"])
def test_float32_buffers_unchanged_by_rounding(rounding) -> None:
    # For float32 both models are the float32 kernel.
    rng = np.random.default_rng(3)
    ps = [Parameter(rng.standard_normal(50).astype(np.float32)) for _ in range(2)]
    for p in ps[1:]:
        p.data[...] = ps[0].data
    opts = [Adam([ps[0]], lr=1e-2), Adam([ps[1]], lr=1e-2, rounding=rounding)]
    for _ in range(4):
        g = rng.standard_normal(50).astype(np.float32)
        for p, opt in zip(ps, opts):
            p.grad[...] = g
            opt.step()
    assert same_bits(ps[0].data, ps[1].data)
    assert opts[1]._flats[0][0].formats is None


def test_views_keep_their_dtype() -> None:
    p = param16(np.ones(4), bfloat16)
    q = param16(np.ones(3), np.float16)
    opt = Adam([p, q], state_dtype="float32")
    assert p.data.dtype == bfloat16 and p.grad.dtype == bfloat16 and q.data.dtype == np.float16
    flats = opt._flats[0]
    assert {f.state_dtype for f in flats} == {np.dtype(np.float32)}
    assert {f.formats for f in flats} == {StorageFormats(2, 0, "fused"),
                                          StorageFormats(1, 0, "fused")}  # fmt: skip


def test_eps_warning_once_and_check_finite_error() -> None:
    """per_op rounds eps to the float16 state (0 for 1e-8): a warning, an error with
    check_finite. fused keeps eps in float32: only the second moment's underflow is said, and
    check_finite builds the optimizer."""
    ps = [param16(np.ones(2), np.float16) for _ in range(2)]
    with pytest.warns(LowPrecisionWarning) as record:
        Adam([{"params": [ps[0]]}, {"params": [ps[1]]}], rounding="per_op")
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("Adam: eps=1e-08 is 0 in float16 (the state dtype")
    assert "6.10352e-05" in message and "rounding='fused'" in message
    assert "stores exp_avg_sq as 0 after a first step whose gradient is below about 0.005" in (
        message
    )
    with pytest.warns(LowPrecisionWarning, match="eps=1e-06 is the subnormal 1.01328e-06"):
        Adam([param16(np.ones(2), np.float16)], eps=1e-6, rounding="per_op")
    with pytest.raises(ValueError, match="eps=1e-08 is 0 in float16"):
        Adam([param16(np.ones(2), np.float16)], check_finite=True, rounding="per_op")
    with pytest.warns(LowPrecisionWarning) as record:
        opt = Adam([param16(np.ones(2), np.float16)], check_finite=True)  # fused: builds
    message = str(record[0].message)
    assert "eps=1e-08 is" not in message and "eps stays in float32" in message
    opt.params[0].grad[...] = [1e-3, 0.0]  # the first underflows, the second is 0: finite
    opt.step()
    assert np.isfinite(opt.params[0].data).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Adam([param16(np.ones(2), np.float16)], state_dtype="float32")  # eps fits float32
        Adam([param16(np.ones(2), bfloat16)])  # 1e-8 is a normal bfloat16
        Adam([param16(np.ones(2), bfloat16)], rounding="per_op")


def test_stats_underflow_and_lost_updates() -> None:
    # float16: (1 - 0.999) * (1e-4)**2 = 1e-11 underflows; 1.0 - 1e-3 in bfloat16 is 1.0.
    p = param16(np.ones(4), np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowPrecisionWarning)
        opt = Adam([p], lr=1e-3, eps=1e-4, track_stats=True)
    p.grad[...] = [1e-4, 1e-4, 0.0, 1.0]
    opt.step()
    assert opt.stats.underflow == 2  # the zero gradient does not count
    b = param16(np.full(3, 1.0), bfloat16)
    opt = Adam([b], lr=1e-3, track_stats=True)
    b.grad[...] = [1.0, 0.0, -1.0]
    opt.step()
    # delta = -1e-3 and +1e-3: 1 - 1e-3 rounds to 1 in bfloat16, 1 + 1e-3 too
    assert opt.stats.lost_updates == 2
    assert b.data.tolist() == [1.0, 1.0, 1.0]
    q = param16(np.full(3, 1.0), bfloat16)
    opt = Adam([q], lr=1e-1, track_stats=True)
    q.grad[...] = [1.0, 0.0, -1.0]
    opt.step()
    assert opt.stats.lost_updates == 0 and opt.stats.underflow == 0


def test_per_op_refuses_unsupported_variants() -> None:
    for options in (dict(eps_mode="hat"), dict(eps_mode="inside"), dict(eps_mode="atan2"),
                    dict(amsgrad=True, amsgrad_max="corrected"),
                    dict(amsgrad=True, amsgrad_max="paper")):  # fmt: skip
        with pytest.raises(ValueError, match="rounding='per_op' follows PyTorch's for-loop"):
            Adam([param16(np.ones(2), bfloat16)], rounding="per_op", **options)
    Adam([Parameter(np.ones(2))], rounding="per_op", eps_mode="hat")  # float64: no rounding


def test_bad_dtype_combinations() -> None:
    with pytest.raises(TypeError, match="state_dtype must be"):
        Adam([Parameter(np.ones(2, np.float32))], state_dtype="float8")
    with pytest.raises(ValueError, match="Invalid rounding"):
        Adam([Parameter(np.ones(2, np.float32))], rounding="stochastic")
    with pytest.raises(TypeError, match="float64 parameters need float64 state"):
        Adam([Parameter(np.ones(2))], state_dtype="bfloat16")

    class SGDWithout16Bit(SGD):  # an optimizer whose kernels have no 16-bit storage
        _supports_lowp = False

    with pytest.raises(TypeError, match="SGDWithout16Bit does not support float16/bfloat16"):
        SGDWithout16Bit([param16(np.ones(2), np.float16)], lr=0.1)


RECIPES = list(itertools.product(DTYPES, [None, "float32"]))


@pytest.mark.parametrize(("dtype", "state_dtype"), RECIPES)
@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # float16 state on purpose
def test_state_dict_round_trip_16bit(dtype, state_dtype, tmp_path) -> None:
    rng = np.random.default_rng(5)
    values = rng.standard_normal(6)

    def make():
        p = param16(values, DTYPES[dtype])
        return p, Adam([p], lr=1e-2, amsgrad=True, state_dtype=state_dtype, track_stats=True)

    p, opt = make()
    for _ in range(3):
        p.grad[...] = rng.standard_normal(6)
        opt.step()
    sd = opt.state_dict()
    want_dtype = DTYPES[dtype] if state_dtype is None else np.dtype(np.float32)
    assert sd["state"][0]["exp_avg_sq"].dtype == want_dtype
    minnet.save({"opt": sd, "param": p.data}, tmp_path / "ck.npz")
    loaded = minnet.load(tmp_path / "ck.npz")
    assert loaded["param"].dtype == DTYPES[dtype]
    assert same_bits(loaded["param"], p.data)
    q, opt2 = make()
    q.data[...] = loaded["param"]
    opt2.load_state_dict(loaded["opt"])
    g = rng.standard_normal(6).astype(DTYPES[dtype])
    for param, o in ((p, opt), (q, opt2)):
        param.grad[...] = g
        o.step()
    assert same_bits(p.data, q.data)


def test_checkpoint_bfloat16_arrays_and_scalars(tmp_path) -> None:
    a = np.asfortranarray(np.array([[1.5, -2.0], [np.inf, 3e-38]], bfloat16))
    obj = {"a": a, "s": a[0, 1], "h": np.arange(3, dtype=np.float16)}
    minnet.save(obj, tmp_path / "x.npz")
    back = minnet.load(tmp_path / "x.npz")
    assert back["a"].dtype == bfloat16 and back["a"].flags.f_contiguous
    assert same_bits(back["a"], a)
    assert back["s"].dtype == bfloat16 and float(back["s"]) == -2.0
    assert back["h"].dtype == np.float16 and same_bits(back["h"], obj["h"])

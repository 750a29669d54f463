"""Gradient clipping: PyTorch's results replayed from fixtures, flat-buffer and per-array paths."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minnet.nn import Parameter
from minnet.nn.utils import _segments, clip_grad_norm_, clip_grad_value_
from minnet.optim import Adam

FIXTURE = Path(__file__).parent / "fixtures" / "clip_grad.npz"
DATA = np.load(FIXTURE)
CASES: list[dict[str, Any]] = json.loads(str(DATA["configs"]))


def loose_params(grads: list[np.ndarray]) -> list[Parameter]:
    """Each gradient its own array."""
    params = []
    for g in grads:
        p = Parameter(np.zeros(g.shape, g.dtype))
        p.grad = g.copy()
        params.append(p)
    return params


def flat_params(grads: list[np.ndarray]) -> list[Parameter]:
    """Gradients as views into one buffer per dtype, as minnet's optimizer lays them out."""
    params = loose_params(grads)
    Adam(params)
    return params


def inputs(case: dict[str, Any]) -> list[np.ndarray]:
    prefix = f"in_{case['set']}_{case['dtype']}_"
    return [DATA[k] for k in sorted(k for k in DATA.files if k.startswith(prefix))]


def tolerance(case: dict[str, Any]) -> dict[str, float]:
    # float32 (alone or mixed with float64): PyTorch accumulates each gradient's norm in
    # float32, minnet in float64; a few float32 ulp apart.
    if case["dtype"] == "float64":
        return {"rtol": 1e-12, "atol": 0}
    return {"rtol": 1e-6, "atol": 1e-30}


@pytest.mark.parametrize("layout", [loose_params, flat_params], ids=["loose", "flat"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_pytorch(case: dict[str, Any], layout: Any) -> None:
    grads = inputs(case)
    assert len(grads) == 3
    params = layout(grads)
    if case["fn"] == "norm":
        total = clip_grad_norm_(params, case["max_norm"], norm_type=float(case["norm_type"]))
        want = DATA[f"{case['name']}__norm"]
        assert total.dtype == want.dtype
        np.testing.assert_allclose(total, want, **tolerance(case))
    else:
        assert clip_grad_value_(params, case["clip_value"]) is None
    changed = False
    for k, (p, g) in enumerate(zip(params, grads)):
        want = DATA[f"{case['name']}__out_{k}"]
        assert p.grad.dtype == want.dtype
        np.testing.assert_allclose(p.grad, want, **tolerance(case))
        changed |= not np.array_equal(want, g, equal_nan=True)
    # Every case whose norm is above max_norm changes some gradient, so the comparison has teeth.
    below = case["fn"] == "norm" and float(DATA[f"{case['name']}__norm"]) < case["max_norm"]
    assert changed == (not below)


def test_flat_buffer_is_one_segment() -> None:
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s) for s in [(4, 3), (3,), (2, 2, 2)]]
    params = flat_params(grads)
    segs = _segments([p.grad for p in params])
    assert len(segs) == 1 and segs[0].size == 12 + 3 + 8
    # A subset with a gap: two runs of the same buffer; shuffled order does not matter.
    segs = _segments([params[2].grad, params[0].grad])
    assert sorted(s.size for s in segs) == [8, 12]
    assert all(s.base is not None for s in segs)
    # Two dtypes: one buffer each.
    mixed = flat_params([grads[0], grads[1].astype(np.float32), grads[2].astype(np.float32)])
    assert sorted(s.size for s in _segments([p.grad for p in mixed])) == [11, 12]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5])
def test_flat_equals_loose_and_reference(dtype: Any, norm_type: float) -> None:
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s).astype(dtype) for s in [(300, 17), (17,), (1000,), (5, 5)]]
    a, b = loose_params(grads), flat_params(grads)
    ta = clip_grad_norm_(a, 0.25, norm_type)
    tb = clip_grad_norm_(b, 0.25, norm_type)
    flat64 = np.concatenate([g.ravel() for g in grads]).astype(np.float64)
    if norm_type == math.inf:
        ref = np.max(np.abs(flat64))
    else:
        ref = np.sum(np.abs(flat64) ** norm_type) ** (1 / norm_type)
    tol = 3e-7 if dtype == np.float32 else 1e-13
    assert ta == pytest.approx(ref, rel=tol) and tb == pytest.approx(ref, rel=tol)
    coef = 0.25 / (ref + 1e-6)
    for pa, pb, g in zip(a, b, grads):
        np.testing.assert_allclose(pa.grad, g * coef, rtol=2 * tol)
        np.testing.assert_allclose(pa.grad, pb.grad, rtol=4 * np.finfo(dtype).eps)


def test_no_scale_below_max_norm_and_strided_grads() -> None:
    base = np.arange(40, dtype=np.float64).reshape(4, 10) / 100
    p = Parameter(np.zeros((4, 5)))
    p.grad = base[:, ::2]  # a strided view: processed by NumPy, in place
    before = p.grad.copy()
    total = clip_grad_norm_([p], 100.0)
    np.testing.assert_array_equal(p.grad, before)
    assert total == pytest.approx(np.linalg.norm(before), rel=1e-14)
    clip_grad_norm_(p, 0.1)  # a single Parameter is accepted
    assert np.linalg.norm(p.grad) == pytest.approx(0.1 * total / (total + 1e-6), rel=1e-12)
    np.testing.assert_array_equal(base[:, 1::2], np.arange(40).reshape(4, 10)[:, 1::2] / 100)
    clip_grad_value_(p, 0.05)
    assert np.max(np.abs(base[:, ::2])) <= 0.05


def test_duplicate_parameter_counts_twice_like_pytorch() -> None:
    params = flat_params([np.full(4, 3.0), np.full(2, 1.0)])
    total = clip_grad_norm_([params[0], params[0]], 1.0)
    assert total == pytest.approx(math.sqrt(2 * 4 * 9.0))
    coef = 1.0 / (float(total) + 1e-6)
    np.testing.assert_allclose(params[0].grad, 3.0 * coef * coef)  # scaled once per listing
    np.testing.assert_array_equal(params[1].grad, 1.0)


def test_nonfinite_error_leaves_gradients() -> None:
    params = flat_params([np.array([1.0, np.inf]), np.ones(3)])
    with pytest.raises(
        RuntimeError,
        match=r"The total norm of order 2.0 for gradients from `parameters` is non-finite, so it "
        r"cannot be clipped. To disable this error and scale the gradients by the non-finite "
        r"norm anyway, set `error_if_nonfinite=False`",
    ):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(params[1].grad, 1.0)


def test_empty_and_bad_inputs() -> None:
    with pytest.warns(UserWarning, match="`parameters` is an empty generator"):
        total = clip_grad_norm_((p for p in []), 1.0)
    assert total == 0.0 and total.dtype == np.float32
    assert clip_grad_norm_([], 1.0) == 0.0
    with pytest.raises(TypeError, match="element 0 is ndarray"):
        clip_grad_norm_([np.ones(3)], 1.0)
    p = Parameter(np.zeros(2))
    p.grad = np.ones(2, dtype=np.int64)
    with pytest.raises(TypeError, match="must be a float32 or float64 array"):
        clip_grad_value_([p], 1.0)
    with pytest.raises(TypeError, match="foreach must be None or a bool"):
        clip_grad_value_([p], 1.0, foreach="yes")


def test_clip_between_backward_and_adam_step() -> None:
    p = Parameter(np.zeros(3))
    opt = Adam([p], lr=0.1)
    p.grad[...] = [30.0, -40.0, 0.0]
    total = clip_grad_norm_(opt.params, 1.0)
    assert total == pytest.approx(50.0)
    assert np.linalg.norm(p.grad) == pytest.approx(1.0, rel=1e-6)
    opt.step()
    np.testing.assert_allclose(p.data, [-0.1, 0.1, 0.0], rtol=1e-6)

"""AdaBelief and Lion: what is their own. AdaBelief's two epsilons (eps_root stored in the
state every step, its first step by hand, what eps is compared with, the refusal that names
both); Lion's sign step (every coordinate moves by lr, the betas' two roles, decoupled decay,
NaN propagation, the sign of -0.0).

Everything the family shares (the kernel against the NumPy reference, float32, the dry run,
PyTorch's messages, defaults, state dicts, resume, the disk cache, convergence) is in
tests/test_optim_family.py; machine code in tests/test_kernels_vectorized.py; parity with
optax / Keras 3 in tests/test_family_parity.py (recorded fixtures).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import minnet
from minnet.nn import Linear, MSELoss, Parameter, Sequential
from minnet.optim import AdaBelief, Lion

# -- AdaBelief's two epsilons -------------------------------------------------------------------


def test_adabelief_stores_eps_root_in_the_state_every_step() -> None:
    """On a coordinate that never had a gradient, s = eps_root * (1 - b2**t) / (1 - b2): the
    stored eps_root is decayed with s, so s_hat = eps_root / (1 - b2)."""
    b2, eps_root, eps = 0.9, 1e-6, 1e-16
    w = Parameter(np.array([1.0, 1.0]))
    opt = AdaBelief([w], lr=0.1, betas=(0.5, b2), eps=eps, eps_root=eps_root, track_stats=True)
    for t in range(1, 8):
        w.grad[...] = [0.0, 1.0]
        opt.step()
        s = opt.state_dict()["state"][0]["exp_avg_var"]
        assert s[0] == pytest.approx(eps_root * (1 - b2**t) / (1 - b2), rel=1e-12)
    assert w.data[0] == 1.0  # m = 0: no step however small the denominator
    k = opt.multipliers()
    assert k[0] == pytest.approx(1.0 / (math.sqrt(eps_root / (1 - b2)) + eps), rel=1e-9)
    assert opt.eps_compared_with() == "sqrt(s_hat)"
    assert opt.stats.eps_dominated == 0.0  # eps = 1e-16 < sqrt(s_hat) = 3.2e-3


def test_adabelief_first_step_by_hand() -> None:
    """Step 1 from the formula: m = (1-b1) g, s = (1-b2) (b1 g)^2 + eps_root, bias-corrected."""
    b1, b2, lr, eps, eps_root = 0.8, 0.99, 0.01, 1e-3, 1e-4
    g = np.array([2.0, -0.5, 0.0])
    w = Parameter(np.array([1.0, 2.0, 3.0]))
    opt = AdaBelief([w], lr=lr, betas=(b1, b2), eps=eps, eps_root=eps_root)
    w.grad[...] = g
    opt.step()
    m = (1 - b1) * g
    s = (1 - b2) * (g - m) ** 2 + eps_root
    expected = np.array([1.0, 2.0, 3.0]) - lr * (m / (1 - b1)) / (np.sqrt(s / (1 - b2)) + eps)
    np.testing.assert_allclose(w.data, expected, rtol=1e-14)


def test_adabelief_eps_dominated_counts_eps_against_sqrt_s_hat() -> None:
    w = Parameter(np.zeros(4))
    opt = AdaBelief([w], lr=0.1, eps=1e-3, eps_root=0.0, betas=(0.9, 0.999), track_stats=True)
    w.grad[...] = [0.0, 1e-5, 1.0, -2.0]  # sqrt(s_hat) = b1*|g|: 0, 9e-6 (eps wins), 0.9, 1.8
    before = w.data.copy()
    opt.step()
    assert opt.stats.eps_dominated == 0.5 and opt.stats.nonfinite == 0
    rms = np.sqrt(np.mean((w.data - before) ** 2))
    assert opt.stats.update_rms == pytest.approx(rms, rel=1e-12)


@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # eps=0 on purpose
def test_adabelief_check_finite_refuses_eps_zero_zero_over_zero() -> None:
    model = Sequential(Linear(3, 2, dtype=np.float64, rng=0))
    opt = AdaBelief(model.parameters(), eps=0.0, eps_root=0.0, check_finite=True)
    x = np.array([[1.0, 0.0, 2.0]])  # feature 1 is zero: its weights get exactly zero gradient
    loss_fn = MSELoss()
    loss_fn(model(x), np.zeros((1, 2)))
    model.backward(loss_fn.backward())
    params = model.state_dict()
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert "step 1" in msg and "0.weight (2 of 6 elements)" in msg
    assert "eps=0 and eps_root=0" in msg
    assert opt.step_count == 0 and opt.state_dict()["state"] == {}
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, params[k])
    opt.param_groups[0]["eps_root"] = 1e-16  # eps_root alone keeps the step finite
    opt.step()
    assert np.isfinite(model[0].weight.data).all()


# -- Lion: a sign step, no eps ------------------------------------------------------------------


def test_lion_moves_every_coordinate_by_lr_and_zero_gradients_not_at_all() -> None:
    lr = 1e-3
    w = Parameter(np.array([1.0, 1.0, 1.0, 1.0]))
    opt = Lion([w], lr=lr, track_stats=True)
    w.grad[...] = [1e-30, -5.0, 0.0, 3.0]  # sign(0) = 0: the zero-gradient coordinate stays
    opt.step()
    np.testing.assert_array_equal(w.data, [1.0 - lr, 1.0 + lr, 1.0, 1.0 - lr])
    assert opt.stats.eps_dominated == 0.0 and opt.stats.nonfinite == 0
    assert opt.stats.update_rms == pytest.approx(lr * math.sqrt(3 / 4), rel=1e-12)
    assert opt.eps_compared_with() is None and opt.multipliers() is None


def test_lion_sign_uses_beta1_and_momentum_uses_beta2() -> None:
    """Step 2 by hand: the step's sign mixes m with beta1, the stored m decays with beta2."""
    b1, b2, lr, wd = 0.6, 0.9, 0.01, 0.5
    w = Parameter(np.array([2.0, 2.0]))
    opt = Lion([w], lr=lr, betas=(b1, b2), weight_decay=wd)
    g1, g2 = np.array([1.0, 1.0]), np.array([-0.3, -0.2])
    w.grad[...] = g1
    opt.step()
    p1 = 2.0 - lr * (np.sign((1 - b1) * g1) + wd * 2.0)
    np.testing.assert_allclose(w.data, p1, rtol=1e-15)
    m1 = (1 - b2) * g1  # 0.1: beta1 * m1 + (1 - beta1) * g2 = 0.06 - 0.12 < 0 and 0.06 - 0.08 < 0
    w.grad[...] = g2
    opt.step()
    c2 = np.sign(b1 * m1 + (1 - b1) * g2)
    np.testing.assert_array_equal(c2, [-1.0, -1.0])
    np.testing.assert_allclose(w.data, p1 - lr * (c2 + wd * p1), rtol=1e-15)
    m2 = b2 * m1 + (1 - b2) * g2
    np.testing.assert_allclose(opt.state_dict()["state"][0]["exp_avg"], m2, rtol=1e-15)


def test_lion_weight_decay_is_decoupled_and_scaled_by_lr() -> None:
    w = Parameter(np.array([4.0, -4.0]))
    opt = Lion([w], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        w.grad[...] = 0.0  # no gradient: only the decay acts
        opt.step()
    np.testing.assert_allclose(w.data, np.array([4.0, -4.0]) * (1 - 0.1 * 0.5) ** 3, rtol=1e-15)


def test_lion_check_finite_refuses_a_nan_gradient_and_without_it_nan_propagates() -> None:
    w = Parameter(np.array([1.0, 1.0]), name="w")
    opt = Lion([w], check_finite=True)
    w.grad[...] = [np.nan, 1.0]
    with pytest.raises(FloatingPointError, match="w has a NaN or infinite gradient"):
        opt.step()
    assert opt.step_count == 0 and (w.data == 1.0).all()
    opt.check_finite = False
    opt.step()
    assert np.isnan(w.data[0]) and w.data[1] == 1.0 - 1e-4


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_lion_keeps_negative_zero_as_the_reference_does(dtype: str) -> None:
    """A -0.0 parameter whose sign argument is -0.0 (gradient and momentum -0.0) stays -0.0, as
    with NumPy's sign (which gives +0.0 there), in the vectorized part of the loop and the
    remainder alike."""
    from minnet.dtypes import as_dtype

    dt = as_dtype(dtype)
    n = 37
    p = Parameter(np.zeros(n, np.float32).astype(dt))
    p.data[[3, 15, 36]] = -0.0
    opt = minnet.optim.Lion([p], lr=1e-3)
    opt._flats[0][0].state["exp_avg"][[3, 15, 36]] = -0.0
    p.grad[...] = 0.0
    p.grad[[3, 15, 36]] = -0.0
    opt.step()
    signs = np.signbit(p.data.astype(np.float32))
    assert np.flatnonzero(signs).tolist() == [3, 15, 36]
    assert not p.data.astype(np.float32).any()

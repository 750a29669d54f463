"""Ftrl, SignSGD and Signum: what is their own. Ftrl's two eps-like knobs (the initial
accumulator inside the root, the lab's eps; beta outside it), its 0/0 at
initial_accumulator_value = 0, its closed form and l1's exact zeros; SignSGD's and Signum's sign
steps (sign(0) = 0, as jnp.sign) without eps. The family tables of test_optim_family.py and the
fixtures of test_family_parity.py cover the rest."""

from __future__ import annotations

import numpy as np
import pytest

from minnet.nn import Parameter
from minnet.optim import Ftrl, SignSGD, Signum

GRAD = np.array([[0.5, 0.0], [0.25, 0.0]])  # column 1 never sees a gradient


def test_ftrl_initial_accumulator_zero_is_eps_zero() -> None:
    w = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]), name="w")
    with pytest.warns(UserWarning, match="initial_accumulator_value=0, beta=0"):
        opt = Ftrl([w], lr=0.1, initial_accumulator_value=0.0, check_finite=True)
    w.grad[...] = GRAD
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert "w (2 of 4 elements)" in msg and "initial_accumulator_value=0" in msg, msg
    assert (w.data == [[1.0, 2.0], [3.0, 4.0]]).all() and opt.step_count == 0
    opt.check_finite = False
    with np.errstate(all="ignore"):
        opt.step()
    np.testing.assert_array_equal(np.isnan(w.data), [[False, True], [False, True]])
    # Either knob > 0 keeps the denominator away from 0: the never-seen weights go to 0.
    for kwargs in ({"initial_accumulator_value": 1e-6}, {"initial_accumulator_value": 0.0,
                                                          "beta": 1e-3}):
        w = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]))
        opt = Ftrl([w], lr=0.1, check_finite=True, **kwargs)
        w.grad[...] = GRAD
        opt.step()
        assert np.isfinite(w.data).all() and (w.data[:, 1] == 0).all()


def test_ftrl_closed_form_multipliers_and_eps_dominated() -> None:
    lr, init, beta, l2 = 0.05, 0.1, 0.3, 0.2
    w = Parameter(np.array([1.0, -2.0, 3.0, 0.5]))
    opt = Ftrl([w], lr=lr, initial_accumulator_value=init, beta=beta,
               l2_regularization_strength=l2, track_stats=True)  # fmt: skip
    grads = [np.array([0.1, -1.0, 0.0, 0.2]), np.array([0.3, 2.0, 0.0, -0.1])]
    for g in grads:
        w.grad[...] = g
        opt.step()
    sd = opt.state_dict()["state"][0]
    n, z = sd["accumulator"], sd["linear"]
    np.testing.assert_allclose(n, init + sum(g * g for g in grads), rtol=1e-15)
    multiplier = 1 / (np.sqrt(n) + beta + 2 * lr * l2)
    np.testing.assert_allclose(opt.multipliers(), multiplier, rtol=1e-15)
    np.testing.assert_allclose(w.data, -lr * z * multiplier, rtol=1e-13)
    # initial_accumulator_value >= sum(g**2): the first, third and fourth coordinates
    assert opt.eps_compared_with() == "sum(g**2)"
    assert opt.stats.eps_dominated == pytest.approx(3 / 4)
    assert Ftrl.eps_arg == "initial_accumulator_value"


def test_ftrl_l1_gives_exact_zeros() -> None:
    w = Parameter(np.array([1.0, 1.0, 1.0]))
    opt = Ftrl([w], lr=0.1, l1_regularization_strength=0.5)
    w.grad[...] = [0.1, -2.0, 0.5]
    opt.step()
    z = opt.state_dict()["state"][0]["linear"]
    np.testing.assert_array_equal(np.abs(z) <= 0.5, w.data == 0.0)
    assert w.data[0] == 0.0 and w.data[1] > 0


def test_ftrl_power_zero_is_a_fixed_learning_rate() -> None:
    """learning_rate_power=0: n**0 = 1, the denominator is 1 + beta (no root, no 0/0)."""
    w = Parameter(np.zeros(3))
    opt = Ftrl([w], lr=0.1, learning_rate_power=0.0, initial_accumulator_value=0.0)
    w.grad[...] = [1.0, 0.0, -2.0]
    opt.step()
    np.testing.assert_array_equal(w.data, [-0.1, 0.0, 0.2])


def test_signsgd_steps_by_lr_and_sign_of_zero_is_zero() -> None:
    w = Parameter(np.array([1.0, 1.0, 1.0, 1.0]))
    opt = SignSGD([w], lr=0.25, track_stats=True)
    w.grad[...] = [3.0, -1e-30, 0.0, -0.0]
    opt.step()
    np.testing.assert_array_equal(w.data, [0.75, 1.25, 1.0, 1.0])
    assert opt.eps_compared_with() is None and opt.multipliers() is None
    assert opt.stats.eps_dominated == 0.0
    assert opt.state_dict()["state"][0] == {"step": 1.0}


def test_signum_with_beta_zero_is_signsgd_and_momentum_keeps_the_sign() -> None:
    rng = np.random.default_rng(0)
    a, b = Parameter(np.ones(50)), Parameter(np.ones(50))
    sgd, signum = SignSGD([a], lr=1e-2), Signum([b], lr=1e-2, beta=0.0)
    for _ in range(5):
        g = rng.standard_normal(50) * (rng.random(50) > 0.3)
        a.grad[...] = g
        b.grad[...] = g
        sgd.step()
        signum.step()
    assert a.data.tobytes() == b.data.tobytes()
    # beta=0.9: one large gradient keeps stepping the same way after the gradient turns small
    w = Parameter(np.zeros(1))
    opt = Signum([w], lr=0.1, beta=0.9)
    for g in (1.0, -0.05, -0.05):
        w.grad[...] = g
        opt.step()
    np.testing.assert_allclose(w.data, [-0.3], rtol=1e-15)
    assert opt.eps_compared_with() is None and opt.multipliers() is None

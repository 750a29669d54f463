"""Prodigy: its global reduction. The distance estimate d sums over every parameter of every
group and dtype (two groups step as one); the compiled reduction equals its NumPy reference;
the global scalars are state-dict floats that resume bit for bit; an all-zero gradient gives
optax's 0/0, which check_finite refuses with its cause."""

from __future__ import annotations

import numpy as np
import pytest
from test_checkpoint import assert_identical

from minnet.nn import Parameter
from minnet.optim import Prodigy
from minnet.optim._kernel import reduce_kernel


def _params(dtype: type = np.float64) -> list[Parameter]:
    rng = np.random.default_rng(1)
    return [Parameter(rng.standard_normal((3, 4)).astype(dtype)),
            Parameter(rng.standard_normal(5).astype(dtype))]  # fmt: skip


def _grad(p: Parameter, rng: np.random.Generator) -> np.ndarray:
    """A noisy gradient of ``sum((p - 3)**2)``: d grows (the numerator's sum is positive)."""
    return 2.0 * (p.data - 3.0) + 0.1 * rng.standard_normal(p.data.shape)


def _train(opt: Prodigy, ps: list[Parameter], steps: int, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in ps:
            p.grad[...] = _grad(p, rng)
        opt.step()


def test_d_is_global_two_groups_step_as_one() -> None:
    """One group over both parameters, or a group each with the same options: the same steps
    (d and N sum over both groups; to round-off, as the float64 sums are split per run);
    each parameter's entry holds the same global scalars."""
    one, two = _params(), _params()
    a = Prodigy(one, lr=0.5, weight_decay=0.1)
    b = Prodigy([{"params": two[:1]}, {"params": two[1:]}], lr=0.5, weight_decay=0.1)
    _train(a, one, 20)
    _train(b, two, 20)
    for p, q in zip(one, two, strict=True):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-13)
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    for k in ("estim_lr", "numerator_weighted"):
        assert sa[0][k] == sa[1][k] and sb[0][k] == sb[1][k]
        assert sa[0][k] == pytest.approx(sb[0][k], rel=1e-13)
    assert sa[0]["estim_lr"] > 10 * 1e-6  # grew from estim_lr0


def test_d_differs_from_per_parameter_estimates() -> None:
    """Two optimizers (one per parameter) estimate two d's: not the global one."""
    one, alone = _params(), _params()
    a = Prodigy(one)
    _train(a, one, 20)
    singles = [Prodigy([p]) for p in alone]
    rng = np.random.default_rng(2)
    for _ in range(20):
        for p in alone:
            p.grad[...] = _grad(p, rng)
        for opt in singles:
            opt.step()
    d = [opt.state_dict()["state"][0]["estim_lr"] for opt in singles]
    assert a.state_dict()["state"][0]["estim_lr"] not in d


@pytest.mark.parametrize("safeguard", [False, True])
def test_the_compiled_reduction_equals_its_reference(safeguard: bool) -> None:
    rng = np.random.default_rng(0)
    n = 300
    param, grad = rng.standard_normal(n), rng.standard_normal(n) * (rng.random(n) < 0.7)
    state = tuple(rng.standard_normal(n) for _ in range(4))
    opt = Prodigy([Parameter(np.zeros(1))], safeguard_warmup=safeguard, beta3=0.9)
    group = opt.param_groups[0]
    s = opt._scalars(group, np.dtype(np.float64), 7, {"estim_lr": 3e-3, "numerator_weighted": 0.1})
    got = reduce_kernel(opt.rule, opt._options(group))(param, grad, *state, s)
    want = Prodigy.reduce_reference(param, grad, state, s, opt._options(group))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_global_scalars_resume_bit_for_bit() -> None:
    ps, qs = _params(np.float32), _params(np.float32)
    a = Prodigy(ps, lr=1.0)
    _train(a, ps, 10)
    sd = a.state_dict()
    assert isinstance(sd["state"][0]["estim_lr"], float)
    b = Prodigy(qs, lr=1.0)
    for p, q in zip(ps, qs, strict=True):
        q.data[...] = p.data
    b.load_state_dict(sd)
    _train(a, ps, 10, seed=5)
    _train(b, qs, 10, seed=5)
    for p, q in zip(ps, qs, strict=True):
        assert p.data.tobytes() == q.data.tobytes()
    assert_identical(a.state_dict(), b.state_dict())


def test_all_zero_gradients_are_optaxs_zero_over_zero() -> None:
    """sum(|s|) = 0: d' = max(d, 0/0) is NaN, as in optax; check_finite refuses the step."""
    w = Parameter(np.ones(3), name="w")
    opt = Prodigy([w], check_finite=True)
    w.grad[...] = 0.0
    with pytest.raises(FloatingPointError, match="distance estimate is 0/0"):
        opt.step()
    assert opt.step_count == 0 and (w.data == 1.0).all()
    opt.check_finite = False
    with np.errstate(all="ignore"):
        opt.step()
    assert np.isnan(w.data).all()

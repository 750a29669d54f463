"""NoisySGD's noise: where the draws come from, the variance schedule, and the kernel with a
non-zero draw (the family tables run it with the noise state at 0 or ``eta=0``; the formula
against optax, given optax's own draws, is in tests/test_family_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest

import minnet
from minnet.nn import Parameter
from minnet.optim import SGD, NoisySGD


def params() -> list[Parameter]:
    return [Parameter(np.linspace(-1, 1, 6).reshape(2, 3), "w"),
            Parameter(np.array([0.5, -0.25]), "b")]  # fmt: skip


def grads(t: int) -> list[np.ndarray]:
    rng = np.random.default_rng(t)
    return [rng.standard_normal((2, 3)), rng.standard_normal(2)]


def train(opt: NoisySGD, ps: list[Parameter], steps: range) -> None:
    for t in steps:
        for p, g in zip(ps, grads(t), strict=True):
            p.grad[...] = g
        opt.step()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_matches_reference_with_a_draw(dtype: type) -> None:
    rng = np.random.default_rng(0)
    opt = NoisySGD([Parameter(np.zeros(1, dtype))], lr=0.1, eta=0.5, gamma=0.55)
    group = opt.param_groups[0]
    n = 257
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * (rng.random(n) < 0.7)).astype(dtype)
    z = rng.standard_normal(n).astype(dtype)
    for t in (1, 7):
        s = opt._scalars(group, np.dtype(dtype), t)
        ours, ref = p.copy(), p.copy()
        zk, zr = z.copy(), z.copy()
        counts = opt._kernel(group, True, True)(ours, g, zk, np.empty(n, dtype), s)
        opt._reference(group)(ref, g, zr, s)
        np.testing.assert_allclose(ours, ref, rtol=1e-12 if dtype == np.float64 else 1e-6)
        assert zk.tobytes() == z.tobytes() and counts[0] == 0  # the draw is read, not changed
        expected = p.astype(np.float64) - 0.1 * (g + np.sqrt(0.5 / t**0.55) * z)
        np.testing.assert_allclose(ours, expected, rtol=1e-12 if dtype == np.float64 else 1e-5)


def test_a_step_adds_the_drawn_noise_with_optax_variance() -> None:
    """``param -= lr * (g + sqrt(eta / t**gamma) * z)``, ``z`` the draw of the documented
    counter-based generator, kept as the state ``noise``."""
    ps = params()
    before = [p.data.copy() for p in ps]
    opt = NoisySGD(ps, lr=0.1, eta=0.3, gamma=0.55, seed=7)
    train(opt, ps, range(1, 2))
    sd = opt.state_dict()["state"]
    for i, (p, b, g) in enumerate(zip(ps, before, grads(1), strict=True)):
        z = np.random.default_rng([7, i, 1]).standard_normal(p.data.size).reshape(p.data.shape)
        np.testing.assert_array_equal(sd[i]["noise"], z)
        np.testing.assert_allclose(p.data, b - 0.1 * (g + np.sqrt(0.3) * z), rtol=1e-14)
    train(opt, ps, range(2, 4))
    z3 = np.random.default_rng([7, 1, 3]).standard_normal(2)
    np.testing.assert_array_equal(opt.state_dict()["state"][1]["noise"], z3)


def test_draws_are_reproducible_and_resume_exactly() -> None:
    """One seed, one trajectory; another seed, another; a run resumed from a state dict
    (into a new optimizer with the same seed) draws what the uninterrupted run drew."""
    runs = {}
    for name, seed, split in (("a", 0, False), ("b", 0, False), ("c", 1, False),
                              ("resumed", 0, True)):  # fmt: skip
        ps = params()
        opt = NoisySGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.05}], lr=0.1, seed=seed)
        if split:
            train(opt, ps, range(1, 6))
            sd = opt.state_dict()
            ps2 = params()
            for p, q in zip(ps2, ps, strict=True):
                p.data[...] = q.data
            opt = NoisySGD([{"params": ps2[:1]}, {"params": ps2[1:], "lr": 0.05}], lr=0.1)
            opt.load_state_dict(sd)
            ps = ps2
            train(opt, ps, range(6, 11))
        else:
            train(opt, ps, range(1, 11))
        runs[name] = np.concatenate([p.data.ravel() for p in ps])
    assert runs["a"].tobytes() == runs["b"].tobytes() == runs["resumed"].tobytes()
    assert np.abs(runs["a"] - runs["c"]).max() > 1e-3


def test_seed_none_draws_from_minnets_default_generator() -> None:
    out = []
    for _ in range(2):
        minnet.manual_seed(123)
        ps = params()
        train(NoisySGD(ps, lr=0.1, seed=None), ps, range(1, 4))
        out.append(np.concatenate([p.data.ravel() for p in ps]))
    assert out[0].tobytes() == out[1].tobytes()
    minnet.manual_seed(123)
    expected = minnet.random.default_generator().standard_normal(6)
    minnet.manual_seed(123)
    ps = params()
    opt = NoisySGD(ps, lr=0.1, seed=None)
    train(opt, ps, range(1, 2))
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["noise"].ravel(), expected)


def test_the_variance_decays_as_eta_over_t_to_the_gamma() -> None:
    """With a zero gradient and lr=1 a step is ``-std_t * z``: its sample standard deviation
    over 50,000 coordinates is ``sqrt(eta / t**gamma)`` within 2% (its standard error: 0.3%)."""
    w = Parameter(np.zeros(50_000))
    opt = NoisySGD([w], lr=1.0, eta=0.04, gamma=0.55)
    for t in range(1, 101):
        before = w.data.copy()
        w.grad[...] = 0.0
        opt.step()
        if t in (1, 10, 100):
            std = np.std(w.data - before)
            assert std == pytest.approx(np.sqrt(0.04 / t**0.55), rel=2e-2), t


def test_eta_zero_is_sgd_bit_for_bit() -> None:
    ps, qs = params(), params()
    train(NoisySGD(ps, lr=0.1, eta=0.0), ps, range(1, 6))
    train(SGD(qs, lr=0.1), qs, range(1, 6))
    for p, q in zip(ps, qs, strict=True):
        assert p.data.tobytes() == q.data.tobytes()


def test_check_finite_refusal_keeps_the_previous_draw() -> None:
    ps = params()
    opt = NoisySGD(ps, lr=0.1, eta=0.5, check_finite=True)
    train(opt, ps, range(1, 3))
    before = ([p.data.copy() for p in ps], opt.state_dict())
    ps[1].grad[...] = grads(3)[1]
    ps[1].grad[0] = np.nan
    with pytest.raises(FloatingPointError, match="NaN or infinite gradient"):
        opt.step()
    after = opt.state_dict()
    for i in (0, 1):
        assert after["state"][i]["noise"].tobytes() == before[1]["state"][i]["noise"].tobytes()
        assert after["state"][i]["step"] == 2.0
    assert all(p.data.tobytes() == b.tobytes() for p, b in zip(ps, before[0], strict=True))


def test_noise_fn_replaces_the_draws_and_is_checked() -> None:
    seen = []

    def fn(step: int, index: int, size: int) -> np.ndarray:
        seen.append((step, index, size))
        return np.full(size, 2.0)

    w = Parameter(np.zeros(3))
    opt = NoisySGD([w], lr=0.5, eta=0.25, gamma=1.0, noise_fn=fn)
    w.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(w.data, -0.5 * (1.0 + 0.5 * 2.0))
    assert seen == [(1, 0, 3)]
    bad = NoisySGD([Parameter(np.zeros(3))], noise_fn=lambda step, index, size: np.zeros(2))
    bad.params[0].grad[...] = 1.0
    with pytest.raises(ValueError, match="noise_fn returned 2 numbers for a parameter of 3"):
        bad.step()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_storage_rounds_the_draw_once(dtype: str) -> None:
    w = Parameter(np.zeros(64, dtype=minnet.dtypes.as_dtype(dtype)))
    opt = NoisySGD([w], lr=0.5, eta=1.0)
    w.grad[...] = 0.0
    opt.step()
    z = np.random.default_rng([0, 0, 1]).standard_normal(64)
    stored = opt.state_dict()["state"][0]["noise"]
    assert stored.dtype == w.data.dtype
    np.testing.assert_array_equal(stored, z.astype(w.data.dtype))
    expected = (-0.5 * stored.astype(np.float32)).astype(w.data.dtype)
    np.testing.assert_array_equal(w.data, expected)

"""AdaBelief and Lion: kernel against NumPy reference, validation, state, resume, convergence.

Parity with optax / Keras 3 is in tests/test_family_parity.py (recorded fixtures). Run as a
script, this file is the new-process half of the resume test:

    python test_optim_adabelief_lion.py resume IN OUT STEPS
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from _train_with_checkpoints import D_IN, D_OUT, HIDDEN, checkpoint, train
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoint import assert_identical

import minnet
from minnet.nn import Linear, MSELoss, Parameter, ReLU, Sequential
from minnet.optim import AdaBelief, Lion, adabelief, lion
from minnet.optim._kernel import kernel as rule_kernel
from minnet.optim.adabelief import adabelief_scalars
from minnet.optim.lion import lion_scalars

OPTIMIZERS = {"AdaBelief": AdaBelief, "Lion": Lion}

# Hyperparameter choices per optimizer for the kernel-vs-reference property test (eps=0 and
# eps_root=0 included: 0/0 must give NaN in both).
HYPER_STRATEGIES = {
    "AdaBelief": st.fixed_dictionaries(
        {
            "lr": st.sampled_from([0.0, 1e-4, 1e-3, 0.1]),
            "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.999), (0.5, 0.9), (0.99, 0.9999)]),
            "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
            "eps_root": st.sampled_from([0.0, 1e-16, 1e-8, 1e-2]),
        }
    ),
    "Lion": st.fixed_dictionaries(
        {
            "lr": st.sampled_from([0.0, 1e-4, 1e-3, 0.1]),
            "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.99), (0.5, 0.9), (0.99, 0.999)]),
            "weight_decay": st.sampled_from([0.0, 1e-3, 0.1]),
        }
    ),
}


def run_kernel_and_reference(
    name: str, hp: dict[str, Any], n: int, steps: int, zero_frac: float, seed: int, dtype: type
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``steps`` updates through the optimizer (its kernel; tracked on even steps) and through
    its NumPy reference on copies of the same state; returns (kernel arrays, reference arrays)."""
    rng = np.random.default_rng(seed)
    w = Parameter(rng.standard_normal(n).astype(dtype))
    opt = OPTIMIZERS[name]([w], **hp)
    group = opt.param_groups[0]
    flat = opt._flats[0][0]
    ref = opt._reference(group)
    ref_param = w.data.copy()
    ref_state = [np.array(a) for a in flat.arrays]
    for t in range(1, steps + 1):
        grad = rng.standard_normal(n).astype(dtype) * (rng.random(n) >= zero_frac)
        w.grad[...] = grad
        opt.track_stats = t % 2 == 0  # both kernel variants must give the same update
        with np.errstate(all="ignore"):
            opt.step()
        ref(ref_param, grad, *ref_state, opt._scalars(group, flat.dtype, t))
    return [flat.data, *flat.arrays], [ref_param, *ref_state]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 200),
    steps=st.integers(1, 6),
    zero_frac=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_kernel_matches_reference_float64(name, n, steps, zero_frac, seed, data) -> None:
    hp = data.draw(HYPER_STRATEGIES[name])
    ours, ref = run_kernel_and_reference(name, hp, n, steps, zero_frac, seed, np.float64)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_kernel_matches_reference_float32(name: str) -> None:
    hp = {"AdaBelief": dict(lr=1e-3, eps=1e-8, eps_root=1e-8), "Lion": dict(weight_decay=0.1)}[name]
    ours, ref = run_kernel_and_reference(name, hp, 10_001, 5, 0.3, 7, np.float32)
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_tracked_untracked_and_dry_run_agree(name: str) -> None:
    """track_stats changes nothing in the update; check_finite's dry run writes nothing."""
    rng = np.random.default_rng(3)
    grads = rng.standard_normal((4, 50)) * (rng.random((4, 50)) > 0.3)
    runs = []
    for track, check in ((False, False), (True, False), (True, True)):
        w = Parameter(np.linspace(-1.0, 1.0, 50))
        opt = OPTIMIZERS[name]([w], lr=1e-2, track_stats=track, check_finite=check)
        for g in grads:
            w.grad[...] = g
            opt.step()
        runs.append((w.data.copy(), opt.state_dict()))
    for data, sd in runs[1:]:
        assert data.tobytes() == runs[0][0].tobytes()
        assert_identical(sd, runs[0][1])


# (optimizer, keyword arguments, exception type, message fragment): PyTorch's wording.
ERROR_INPUTS = [
    ("AdaBelief", dict(lr=-1e-3), ValueError, "Invalid learning rate: -0.001"),
    ("AdaBelief", dict(lr=math.nan), ValueError, "Invalid learning rate: nan"),
    ("AdaBelief", dict(lr="0.1"), TypeError, "lr must be a real number"),
    ("AdaBelief", dict(eps=-1e-16), ValueError, "Invalid epsilon value: -1e-16"),
    ("AdaBelief", dict(eps=math.nan), ValueError, "Invalid epsilon value: nan"),
    ("AdaBelief", dict(eps_root=-1.0), ValueError, "Invalid eps_root value: -1.0"),
    ("AdaBelief", dict(eps_root=math.nan), ValueError, "Invalid eps_root value: nan"),
    ("AdaBelief", dict(eps_root=None), TypeError, "eps_root must be a real number"),
    ("AdaBelief", dict(betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("AdaBelief", dict(betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    ("AdaBelief", dict(betas=(0.9, math.nan)), ValueError, "Invalid beta parameter at index 1"),
    ("AdaBelief", dict(betas=0.9), TypeError, "betas must be a pair"),
    ("AdaBelief", dict(track_stats=1), TypeError, "track_stats must be a bool"),
    ("AdaBelief", dict(check_finite="no"), TypeError, "check_finite must be a bool"),
    ("AdaBelief", dict(weight_decay=0.1), TypeError, "unexpected keyword argument"),
    ("Lion", dict(lr=-1e-4), ValueError, "Invalid learning rate: -0.0001"),
    ("Lion", dict(lr=math.nan), ValueError, "Invalid learning rate: nan"),
    ("Lion", dict(lr=[1e-4]), TypeError, "lr must be a real number"),
    ("Lion", dict(betas=(1.0, 0.99)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("Lion", dict(betas=(0.9, 1.5)), ValueError, "Invalid beta parameter at index 1: 1.5"),
    ("Lion", dict(betas=(math.nan, 0.99)), ValueError, "Invalid beta parameter at index 0: nan"),
    ("Lion", dict(betas=(0.9, 0.99, 0.999)), TypeError, "betas must be a pair"),
    ("Lion", dict(weight_decay=-1e-3), ValueError, "Invalid weight_decay value: -0.001"),
    ("Lion", dict(weight_decay=math.nan), ValueError, "Invalid weight_decay value: nan"),
    ("Lion", dict(weight_decay="1e-3"), TypeError, "weight_decay must be a real number"),
    ("Lion", dict(eps=1e-8), TypeError, "unexpected keyword argument"),
]


@pytest.mark.parametrize(
    "name, kwargs, exc, message", ERROR_INPUTS, ids=[f"{e[0]}-{e[1]}" for e in ERROR_INPUTS]
)
def test_invalid_hyperparameters(name: str, kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc) as info:
        OPTIMIZERS[name]([Parameter(np.zeros(3))], **kwargs)
    assert message in str(info.value)


def test_bad_edit_of_param_group_is_refused_at_step() -> None:
    w = Parameter(np.ones(3))
    opt = AdaBelief([w])
    opt.param_groups[0]["eps_root"] = -1e-3
    with pytest.raises(ValueError, match="Invalid eps_root value: -0.001"):
        opt.step()
    assert opt.step_count == 0 and (w.data == 1.0).all()


DEFAULTS = {
    "AdaBelief": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-16, "eps_root": 1e-16},
    "Lion": {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0},
}
STATE_NAMES = {"AdaBelief": ["step", "exp_avg", "exp_avg_var"], "Lion": ["step", "exp_avg"]}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_defaults_and_state_dict_layout(name: str) -> None:
    w = Parameter(np.ones((2, 3)))
    opt = OPTIMIZERS[name]([w])
    sd = opt.state_dict()
    assert sd["state"] == {}
    assert sd["param_groups"] == [{**DEFAULTS[name], "params": [0]}]
    w.grad[...] = 1.0
    opt.step()
    entry = opt.state_dict()["state"][0]
    assert list(entry) == STATE_NAMES[name]
    assert entry["step"] == 1.0 and all(entry[k].shape == (2, 3) for k in entry if k != "step")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    def make() -> tuple[list[Parameter], Any]:
        ps = [Parameter(np.linspace(-1, 1, 6).astype(np.float32)), Parameter(np.ones(4))]
        return ps, OPTIMIZERS[name](ps, lr=1e-2)

    rng = np.random.default_rng(0)
    grads = [(rng.standard_normal(6), rng.standard_normal(4)) for _ in range(20)]

    def run(ps: list[Parameter], opt: Any, gs: list) -> None:
        for g0, g1 in gs:
            ps[0].grad[...] = g0
            ps[1].grad[...] = g1
            opt.step()

    ps, opt = make()
    run(ps, opt, grads)
    straight = [p.data.copy() for p in ps]
    ps, opt = make()
    run(ps, opt, grads[:10])
    saved = opt.state_dict()
    values = [p.data.copy() for p in ps]
    ps2, opt2 = make()
    for p, v in zip(ps2, values, strict=True):
        p.data[...] = v
    opt2.load_state_dict(saved)
    run(ps2, opt2, grads[10:])
    for a, b in zip(ps2, straight, strict=True):
        assert a.data.tobytes() == b.tobytes()


# -- 250 + 250 steps across a save / load in a new process --------------------------------------

RESUME_VARIANTS = {
    "adabelief": {"optimizer": "AdaBelief", "lr": 1e-2, "betas": (0.9, 0.99)},
    "adabelief-eps0": {"optimizer": "AdaBelief", "lr": 1e-2, "eps": 0.0, "eps_root": 1e-12},
    "lion": {"optimizer": "Lion", "lr": 1e-3},
    "lion-wd": {"optimizer": "Lion", "lr": 1e-3, "betas": (0.8, 0.95), "weight_decay": 0.1},
}


def fresh(variant: dict[str, Any]) -> dict[str, Any]:
    """tests/_train_with_checkpoints.py's run at step 0, with this file's optimizer."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in variant.items()}
    cls = OPTIMIZERS[kwargs.pop("optimizer")]
    model = Sequential(
        Linear(D_IN, HIDDEN, rng=1), ReLU(), Linear(HIDDEN, D_OUT, dtype=np.float64, rng=2)
    )
    return {
        "model": model,
        "optimizer": cls(model.parameters(), **kwargs),
        "variant": variant,
        "step": 0,
        "rng": np.random.default_rng(7),
    }


def restore(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A run rebuilt from a checkpoint, as a fresh process does."""
    run = fresh(ckpt["variant"])
    run["model"].load_state_dict(ckpt["model"])
    run["optimizer"].load_state_dict(ckpt["optimizer"])
    run["step"] = ckpt["step"]
    run["rng"].bit_generator.state = ckpt["rng"]
    return run


def test_resume_in_new_process_is_bit_identical(tmp_path: Path) -> None:
    straight, halfway = {}, {}
    for name, variant in RESUME_VARIANTS.items():
        straight[name] = checkpoint(train(fresh(variant), 500))
        halfway[name] = checkpoint(train(fresh(variant), 250))
    minnet.save(halfway, tmp_path / "halfway.npz")
    subprocess.run(
        [sys.executable, __file__, "resume", str(tmp_path / "halfway.npz"),
         str(tmp_path / "resumed.npz"), "500"],
        check=True,
        timeout=120,
    )  # fmt: skip
    resumed = minnet.load(tmp_path / "resumed.npz")
    assert list(resumed) == list(straight)
    for name in straight:
        assert_identical(straight[name], resumed[name], name)
        assert not np.array_equal(
            halfway[name]["model"]["0.weight"], straight[name]["model"]["0.weight"]
        )


# -- convergence on optax's test problems -------------------------------------------------------


def parabola(w: np.ndarray) -> np.ndarray:
    """Gradient of ``sum((w - [1, -1, 1])**2)`` (optax's parabola; start [-1, 10, 1])."""
    return 2.0 * (w - np.array([1.0, -1.0, 1.0]))


def rosenbrock(w: np.ndarray) -> np.ndarray:
    """Gradient of ``(1 - x)**2 + 100 * (y - x**2)**2`` (optax's Rosenbrock; start [0, 0])."""
    x, y = w
    return np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


CONVERGENCE = [
    ("AdaBelief", dict(lr=1e-1), parabola, [-1.0, 10.0, 1.0], [1.0, -1.0, 1.0]),
    ("AdaBelief", dict(lr=1e-2), rosenbrock, [0.0, 0.0], [1.0, 1.0]),
    ("Lion", dict(lr=1e-2), parabola, [-1.0, 10.0, 1.0], [1.0, -1.0, 1.0]),
    ("Lion", dict(lr=1e-3), rosenbrock, [0.0, 0.0], [1.0, 1.0]),
]


@pytest.mark.parametrize(
    "name, kwargs, grad_fn, start, solution",
    CONVERGENCE,
    ids=[f"{c[0]}-{c[2].__name__}" for c in CONVERGENCE],
)
def test_converges_on_optax_problems(name, kwargs, grad_fn, start, solution) -> None:
    w = Parameter(np.array(start))
    opt = OPTIMIZERS[name]([w], **kwargs)
    for _ in range(10_000):
        w.grad[...] = grad_fn(w.data)
        opt.step()
    # Lion's sign steps end in a cycle of amplitude ~lr around the minimum.
    np.testing.assert_allclose(w.data, solution, atol=2e-2)


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


def test_adabelief_without_check_finite_gives_nan_like_optax() -> None:
    w = Parameter(np.array([1.0, 1.0]))
    opt = AdaBelief([w], eps=0.0, eps_root=0.0)
    w.grad[...] = [0.0, 1.0]
    opt.step()
    assert np.isnan(w.data[0]) and np.isfinite(w.data[1])


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


# -- machine code -------------------------------------------------------------------------------


def _asm_of_default_kernel(name: str) -> str:
    a = np.ones(1024, np.float32)
    if name == "AdaBelief":
        kernel = rule_kernel(adabelief.RULE, (), False, True)
        s = adabelief_scalars(
            a.dtype, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-16, eps_root=1e-16, step=1
        )
        args = (a, a.copy(), a.copy(), a.copy(), a[:0], s)
    else:
        kernel = rule_kernel(lion.RULE, (), False, True)
        s = lion_scalars(a.dtype, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0)
        args = (a, a.copy(), a.copy(), a[:0], s)
    # The disk-cached kernel cannot show its assembly: compile the same function again.
    fresh_kernel = numba.njit(error_model="numpy", nogil=True)(kernel.py_func)
    fresh_kernel(*args)
    return "\n".join(fresh_kernel.inspect_asm().values())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_default_kernel_is_vectorized(name: str) -> None:
    asm = _asm_of_default_kernel(name)
    wide = len(re.findall(r"%[yz]mm\d+", asm))
    packed = len(re.findall(r"\bv(?:sqrt|div|fmadd\w*|mul|add|sub|and|or|blendv)ps\b", asm))
    assert wide > 20 and packed > 5, f"{name}: {wide} ymm/zmm uses, {packed} packed-single ops"


def main(argv: list[str]) -> None:
    """``resume IN OUT STEPS``: continue every run in IN to STEPS and save them to OUT."""
    mode, src, out, steps = argv
    if mode != "resume":
        raise SystemExit(f"unknown mode {mode!r}")
    runs = {name: restore(ckpt) for name, ckpt in minnet.load(src).items()}
    minnet.save({name: checkpoint(train(r, int(steps))) for name, r in runs.items()}, out)


if __name__ == "__main__":
    main(sys.argv[1:])


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

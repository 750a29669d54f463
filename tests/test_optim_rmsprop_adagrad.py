"""RMSprop and Adagrad: kernels against their NumPy references, PyTorch's validation messages,
state dicts and exact resume, convergence on optax's test problems, eps=0, machine code.

Library parity (PyTorch, Keras 3, optax) is in tests/test_family_parity.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from _train_with_checkpoints import checkpoint, fresh, train
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoint import assert_identical

import minnet
from minnet.nn import Parameter
from minnet.optim import Adagrad, RMSprop
from minnet.optim.adagrad import ADAGRAD_EPS_MODES
from minnet.optim.rmsprop import RMSPROP_EPS_MODES

HELPER = str(Path(__file__).with_name("_train_with_checkpoints.py"))

# -- the variants: every eps_mode and every option that changes the kernel -----------------------

RMSPROP_VARIANTS = [
    {"eps_mode": mode, "centered": centered, "momentum": momentum}
    for mode in RMSPROP_EPS_MODES
    for centered in (False, True)
    for momentum in (0.0, 0.9)
]

VARIANTS: list[tuple[type, dict[str, Any]]] = [(RMSprop, v) for v in RMSPROP_VARIANTS] + [
    (Adagrad, {"eps_mode": mode}) for mode in ADAGRAD_EPS_MODES
]

HYPER: dict[type, Any] = {
    RMSprop: st.fixed_dictionaries(
        {
            "lr": st.sampled_from([0.0, 1e-3, 0.1]),
            "alpha": st.sampled_from([0.0, 0.3, 0.5, 0.9, 0.99]),
            "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
            "weight_decay": st.sampled_from([0.0, 1e-2]),
            "maximize": st.booleans(),
        }
    ),
    Adagrad: st.fixed_dictionaries(
        {
            "lr": st.sampled_from([0.0, 1e-3, 0.1]),
            "lr_decay": st.sampled_from([0.0, 0.1]),
            "eps": st.sampled_from([0.0, 1e-16, 1e-10, 1e-3, 1.0]),
            "weight_decay": st.sampled_from([0.0, 1e-2]),
            "initial_accumulator_value": st.sampled_from([0.0, 0.1]),
            "maximize": st.booleans(),
        }
    ),
}


def variant_id(cls: type, options: dict[str, Any]) -> str:
    return cls.__name__ + "-" + "-".join(f"{k}={v}" for k, v in options.items())


VARIANT_IDS = [variant_id(c, o) for c, o in VARIANTS]


def run_kernel_and_reference(
    cls: type, options: dict[str, Any], n: int, steps: int, zero_frac: float, seed: int,
    dtype: type = np.float64,
) -> tuple[list[np.ndarray], list[np.ndarray]]:  # fmt: skip
    """``steps`` updates on identical inputs with the optimizer's kernel (tracked on even steps,
    plain on odd ones) and with its NumPy reference; returns both (param, *state) lists."""
    rng = np.random.default_rng(seed)
    opt = cls([Parameter(np.zeros(n, dtype))], **options)
    group = opt.param_groups[0]
    spec = opt._state_spec(group)
    param = rng.standard_normal(n).astype(dtype)
    ours, ref = ([param.copy()] + [np.full(n, v, dtype) for v in spec.values()] for _ in range(2))
    scratch = np.empty(n, dtype)
    for t in range(1, steps + 1):
        grad = rng.standard_normal(n).astype(dtype) * (rng.random(n) >= zero_frac)
        s = opt._scalars(group, np.dtype(dtype), t)
        opt._kernel(group, t % 2 == 0, True)(ours[0], grad, *ours[1:], scratch, s)
        opt._reference(group)(ref[0], grad, *ref[1:], s)
    return ours, ref


@pytest.mark.parametrize(("cls", "options"), VARIANTS, ids=VARIANT_IDS)
@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 200),
    steps=st.integers(1, 6),
    zero_frac=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_matches_reference_float64(
    cls: type, options: dict[str, Any], data: Any, n: int, steps: int, zero_frac: float, seed: int
) -> None:
    hp = data.draw(HYPER[cls])
    ours, ref = run_kernel_and_reference(cls, {**options, **hp}, n, steps, zero_frac, seed)
    for a, b in zip(ours, ref, strict=True):
        # NaN where the reference has NaN (eps=0 and a zero denominator), else 1e-12 relative.
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize(("cls", "options"), VARIANTS, ids=VARIANT_IDS)
def test_eps_zero_and_zero_gradients_match_reference(cls: type, options: dict[str, Any]) -> None:
    """The corner hypothesis may not always draw: eps=0 with all-zero gradient coordinates."""
    ours, ref = run_kernel_and_reference(cls, {**options, "eps": 0.0}, 64, 4, 0.5, 1)
    assert np.isnan(ours[0]).any() == (options.get("eps_mode") != "inside_guarded")
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize(("cls", "options"), VARIANTS, ids=VARIANT_IDS)
def test_track_and_write_variants_agree(cls: type, options: dict[str, Any]) -> None:
    """Tracked and plain kernels give bit-identical results; a dry run writes nothing and
    counts the same; the counts match a NumPy recount."""
    n = 3000
    rng = np.random.default_rng(5)
    opt = cls([Parameter(np.zeros(n))], **options, eps=1e-3)
    group = opt.param_groups[0]
    spec = opt._state_spec(group)
    param = rng.standard_normal(n)
    param[:2] = np.nan  # already NaN: stays NaN and is counted
    state = plausible_state(spec, n, rng)
    grad = rng.standard_normal(n) * (rng.random(n) < 0.5)
    s = opt._scalars(group, np.dtype(np.float64), 3)
    runs = {}
    for track, write in ((False, True), (True, True), (True, False)):
        arrays = [param.copy(), grad.copy(), *(a.copy() for a in state)]
        counts = opt._kernel(group, track, write)(*arrays, np.empty(n), s)
        runs[track, write] = arrays, counts
    plain, tracked, dry = runs[False, True], runs[True, True], runs[True, False]
    for a, b in zip(plain[0], tracked[0], strict=True):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(dry[0], [param, grad, *state], strict=True):
        assert a.tobytes() == b.tobytes()
    assert plain[1] == (0, 0, 0.0)
    assert dry[1] == tracked[1]
    n_dom, n_bad, sum_sq = tracked[1]
    assert n_bad == 2
    new_state = dict(zip(spec, tracked[0][2:], strict=True))
    k = opt._multipliers(group, new_state, 3)
    compared = opt.eps_compared_with_options(group)
    assert n_dom == expected_dominated(compared, group, new_state)
    assert 0 < n_dom < n
    finite = param.copy()
    finite[:2] = 0.0  # no weight decay: the update does not depend on the parameter
    ref = [finite.copy(), *(a.copy() for a in state)]
    opt._reference(group)(ref[0], grad, *ref[1:], s)
    assert sum_sq == pytest.approx(np.sum((ref[0] - finite) ** 2), rel=1e-9)
    assert k.shape == (n,) and np.all(k >= 0) and np.isfinite(k).all()  # guarded: 0 at S = 0


def plausible_state(spec: dict[str, float], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random state arrays that a run could reach: half the second moments 0, and
    ``grad_avg**2 <= square_avg``."""
    out: dict[str, np.ndarray] = {}
    for name in spec:
        if name == "grad_avg":
            out[name] = 0.5 * np.sqrt(out["square_avg"]) * rng.uniform(-1, 1, n)
        elif name == "momentum_buffer":
            out[name] = rng.standard_normal(n)
        else:
            out[name] = rng.random(n) * (rng.random(n) < 0.5)
    return list(out.values())


def expected_dominated(compared: str, group: dict[str, Any], state: dict[str, np.ndarray]) -> int:
    """The number of coordinates where eps >= what ``eps_compared_with`` names."""
    if "avg" in compared:
        var = state["square_avg"] - state["grad_avg"] ** 2
    elif "v" in compared:
        var = state["square_avg"]
    else:
        var = state["sum"]
    quantity = np.sqrt(var) if compared.startswith("sqrt") else var
    with np.errstate(invalid="ignore"):
        return int(np.sum(group["eps"] >= quantity))


def test_kernel_float32_stays_float32_and_matches_reference() -> None:
    for cls, options in VARIANTS:
        ours, ref = run_kernel_and_reference(cls, {**options, "lr": 1e-3}, 10_001, 5, 0.3, 7,
                                             np.float32)  # fmt: skip
        for a, b in zip(ours, ref, strict=True):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# -- validation: PyTorch's messages --------------------------------------------------------------

BAD = [
    (RMSprop, {"lr": -1e-3}, ValueError, "Invalid learning rate: -0.001"),
    (RMSprop, {"lr": float("nan")}, ValueError, "Invalid learning rate: nan"),
    (RMSprop, {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    (RMSprop, {"momentum": -0.5}, ValueError, "Invalid momentum value: -0.5"),
    (RMSprop, {"weight_decay": -1}, ValueError, "Invalid weight_decay value: -1"),
    (RMSprop, {"alpha": -0.1}, ValueError, "Invalid alpha value: -0.1"),
    (RMSprop, {"alpha": float("nan")}, ValueError, "Invalid alpha value: nan"),
    (RMSprop, {"lr": "0.1"}, TypeError, "lr must be a real number"),
    (RMSprop, {"centered": 1}, TypeError, "centered must be a bool"),
    (RMSprop, {"eps_mode": "hat"}, ValueError, "Invalid eps_mode: 'hat'"),
    (Adagrad, {"lr": -0.5}, ValueError, "Invalid learning rate: -0.5"),
    (Adagrad, {"lr_decay": -1e-3}, ValueError, "Invalid lr_decay value: -0.001"),
    (Adagrad, {"lr_decay": float("nan")}, ValueError, "Invalid lr_decay value: nan"),
    (Adagrad, {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    (
        Adagrad,
        {"initial_accumulator_value": -0.1},
        ValueError,
        "Invalid initial_accumulator_value value: -0.1",
    ),
    (Adagrad, {"eps": -1e-10}, ValueError, "Invalid epsilon value: -1e-10"),
    (Adagrad, {"eps": float("nan")}, ValueError, "Invalid epsilon value: nan"),
    (Adagrad, {"maximize": "no"}, TypeError, "maximize must be a bool"),
    (Adagrad, {"eps_mode": "guarded"}, ValueError, "Invalid eps_mode: 'guarded'"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "message"), BAD,
    ids=[f"{c.__name__}-{k}" for c, k, _, _ in BAD],
)  # fmt: skip
def test_bad_hyperparameters_raise_pytorch_messages(
    cls: type, kwargs: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match="^" + re.escape(message)):
        cls([Parameter(np.zeros(3))], **kwargs)
    # The same check guards an edit of param_groups, at the next step.
    opt = cls([Parameter(np.zeros(3))])
    opt.param_groups[0].update(kwargs)
    with pytest.raises(error, match="^" + re.escape(message)):
        opt.step()


def test_signature_and_defaults_are_pytorchs() -> None:
    opt = RMSprop([Parameter(np.zeros(2))])
    assert opt.defaults == {
        "lr": 1e-2, "momentum": 0.0, "alpha": 0.99, "eps": 1e-8, "centered": False,
        "weight_decay": 0.0, "maximize": False, "eps_mode": "outside",
    }  # fmt: skip
    opt = Adagrad([Parameter(np.zeros(2))])
    assert opt.defaults == {
        "lr": 1e-2, "lr_decay": 0.0, "eps": 1e-10, "weight_decay": 0.0,
        "initial_accumulator_value": 0.0, "maximize": False, "eps_mode": "outside",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "options", "change"),
    [
        (RMSprop, {}, {"centered": True}),
        (RMSprop, {}, {"momentum": 0.9}),
        (RMSprop, {"momentum": 0.5}, {"momentum": 0.0}),
    ],
)
def test_options_that_add_state_cannot_change(
    cls: type, options: dict[str, Any], change: dict[str, Any]
) -> None:
    opt = cls([Parameter(np.zeros(3))], **options)
    opt.param_groups[0].update(change)
    with pytest.raises(ValueError, match="cannot change after the optimizer is created"):
        opt.step()


# -- state dicts and exact resume -------------------------------------------------------------

STATE_NAMES = [
    (RMSprop, {}, ["square_avg"]),
    (RMSprop, {"momentum": 0.9, "centered": True}, ["square_avg", "momentum_buffer", "grad_avg"]),
    (Adagrad, {"lr_decay": 0.1, "initial_accumulator_value": 0.1}, ["sum"]),
    (Adagrad, {"eps_mode": "inside_guarded", "eps": 0.0}, ["sum"]),
]


@pytest.mark.parametrize(("cls", "options", "names"), STATE_NAMES)
def test_state_dict_round_trip(cls: type, options: dict[str, Any], names: list[str]) -> None:
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(2):
        params = [Parameter(rng.standard_normal((3, 4))), Parameter(np.ones(5, np.float32))]
        runs.append((params, cls(params, lr=1e-2, **options)))
    grads = [[rng.standard_normal(p.data.shape) for p in runs[0][0]] for _ in range(10)]
    (pa, a), (pb, b) = runs
    for g in grads[:5]:
        for p, gi in zip(pa, g):
            p.grad[...] = gi
        a.step()
    sd = a.state_dict()
    assert list(sd["state"][0]) == ["step", *names]
    assert sd["state"][1]["step"] == 5.0
    assert sd["param_groups"][0]["params"] == [0, 1]
    for p, q in zip(pa, pb):
        q.data[...] = p.data
    b.load_state_dict(sd)
    assert_identical(b.state_dict(), sd)
    for g in grads[5:]:
        for params, opt in runs:
            for p, gi in zip(params, g):
                p.grad[...] = gi
            opt.step()
    for p, q in zip(pa, pb):
        assert p.data.tobytes() == q.data.tobytes()


RESUME_VARIANTS = {
    "rmsprop-outside": {"optimizer": "RMSprop", "lr": 3e-3, "weight_decay": 1e-3},
    "rmsprop-inside-centered-momentum": {
        "optimizer": "RMSprop", "lr": 1e-3, "eps": 1e-6, "momentum": 0.9, "centered": True,
        "eps_mode": "inside",
    },
    "adagrad-outside": {
        "optimizer": "Adagrad", "lr": 3e-2, "lr_decay": 1e-2, "initial_accumulator_value": 0.1,
        "weight_decay": 1e-3,
    },
    "adagrad-inside_guarded-eps0": {
        "optimizer": "Adagrad", "lr": 3e-2, "eps": 0.0, "eps_mode": "inside_guarded",
    },
}  # fmt: skip


def test_resume_in_new_process_is_bit_identical(tmp_path: Path) -> None:
    """250 steps, a checkpoint, 250 more in a new process: bit-identical to 500 straight."""
    straight, halfway = {}, {}
    for name, variant in RESUME_VARIANTS.items():
        straight[name] = checkpoint(train(fresh(variant), 500))
        halfway[name] = checkpoint(train(fresh(variant), 250))
    minnet.save(halfway, tmp_path / "halfway.npz")
    subprocess.run(
        [sys.executable, HELPER, "resume", str(tmp_path / "halfway.npz"),
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


# -- convergence on optax's test problems ----------------------------------------------------


def parabola(w: np.ndarray) -> tuple[float, np.ndarray]:
    """optax's parabola: sum((w - [1, -1, 1])**2) from [-1, 10, 1]."""
    target = np.array([1.0, -1.0, 1.0])
    return float(np.sum((w - target) ** 2)), 2 * (w - target)


def rosenbrock(w: np.ndarray) -> tuple[float, np.ndarray]:
    """optax's Rosenbrock: (1 - x)**2 + 100 (y - x**2)**2 from [0, 0]; minimum at [1, 1]."""
    x, y = w
    grad = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    return float((1 - x) ** 2 + 100 * (y - x * x) ** 2), grad


CONVERGENCE = [
    (RMSprop, {"lr": 5e-3}, "outside"),
    (RMSprop, {"lr": 5e-3}, "inside"),
    (RMSprop, {"lr": 1e-3, "momentum": 0.9, "centered": True}, "outside"),
    (Adagrad, {"lr": 1.0}, "outside"),
    (Adagrad, {"lr": 1.0, "initial_accumulator_value": 0.1, "eps": 1e-7}, "inside"),
    (Adagrad, {"lr": 1.0, "initial_accumulator_value": 0.1, "eps": 1e-7}, "inside_guarded"),
]


@pytest.mark.parametrize(("cls", "options", "eps_mode"), CONVERGENCE)
@pytest.mark.parametrize(
    ("problem", "start", "solution"),
    [(parabola, [-1.0, 10.0, 1.0], [1.0, -1.0, 1.0]), (rosenbrock, [0.0, 0.0], [1.0, 1.0])],
    ids=["parabola", "rosenbrock"],
)
def test_converges_on_optax_problems(
    cls: type, options: dict[str, Any], eps_mode: str, problem: Any, start: list[float],
    solution: list[float],
) -> None:  # fmt: skip
    p = Parameter(np.array(start))
    opt = cls([p], **options, eps_mode=eps_mode)
    first = problem(p.data)[0]
    for _ in range(10_000):
        p.grad[...] = problem(p.data)[1]
        opt.step()
    np.testing.assert_allclose(p.data, solution, rtol=3e-2, atol=3e-2)
    assert problem(p.data)[0] < 1e-2 * first


# -- eps = 0 and check_finite --------------------------------------------------------------------

REFUSED = [
    (RMSprop, {"eps": 0.0}),
    (RMSprop, {"eps": 0.0, "eps_mode": "inside"}),
    (Adagrad, {"eps": 0.0}),
    (Adagrad, {"eps": 0.0, "eps_mode": "inside"}),
]


@pytest.mark.parametrize(("cls", "options"), REFUSED)
def test_check_finite_refuses_eps_zero_on_a_coordinate_without_gradient(
    cls: type, options: dict[str, Any]
) -> None:
    p = Parameter(np.array([1.0, 2.0, 3.0]), name="w")
    opt = cls([p], **options, check_finite=True)
    p.grad[...] = [0.5, 0.0, -0.5]
    before = opt.state_dict()
    with pytest.raises(FloatingPointError, match=r"w \(1 of 3 elements\).*eps=0"):
        opt.step()
    np.testing.assert_array_equal(p.data, [1.0, 2.0, 3.0])
    assert_identical(opt.state_dict(), before)
    # Without the check, the same step ends NaN exactly there (0/0), as in PyTorch.
    opt.check_finite = False
    opt.step()
    assert np.isnan(p.data[1]) and np.isfinite(p.data[[0, 2]]).all()


def test_guarded_adagrad_takes_a_zero_step_at_eps_zero() -> None:
    """optax's guard: a coordinate whose accumulator is 0 does not move (no 0/0), and the
    check passes; with eps > 0 the guarded and plain "inside" placements agree to rounding."""
    p = Parameter(np.array([1.0, 2.0, 3.0]), name="w")
    opt = Adagrad([p], lr=0.1, eps=0.0, eps_mode="inside_guarded", check_finite=True)
    p.grad[...] = [0.5, 0.0, -0.5]
    opt.step()
    np.testing.assert_array_equal(p.data, [0.9, 2.0, 3.1])
    np.testing.assert_array_equal(opt.multipliers(), [2.0, 0.0, 2.0])
    runs = {}
    for mode in ("inside", "inside_guarded"):
        q = Parameter(np.array([1.0, 2.0, 3.0]))
        o = Adagrad([q], lr=0.1, eps=1e-3, eps_mode=mode)
        for g in ([0.5, 0.0, -0.5], [0.1, 0.0, 0.2]):
            q.grad[...] = g
            o.step()
        runs[mode] = q.data.copy()
    np.testing.assert_allclose(runs["inside"], runs["inside_guarded"], rtol=1e-15)
    assert runs["inside"][1] == 2.0


def test_stats_and_multipliers_name_what_eps_is_compared_with() -> None:
    p = Parameter(np.array([1.0, 2.0, 3.0]))
    p.grad[...] = [1.0, 1e-9, 0.0]
    outside = RMSprop([p], eps=1e-6, track_stats=True)
    outside.step()
    assert outside.eps_compared_with() == "sqrt(v)"
    assert outside.stats.eps_dominated == pytest.approx(2 / 3)
    v = 0.01 * np.array([1.0, 1e-18, 0.0])
    np.testing.assert_allclose(outside.multipliers(), 1 / (np.sqrt(v) + 1e-6), rtol=1e-12)
    q = Parameter(np.array([1.0, 2.0, 3.0]))
    q.grad[...] = [1.0, 1e-9, 0.0]
    inside = RMSprop([q], eps=1e-6, eps_mode="inside", centered=True, track_stats=True)
    inside.step()
    assert inside.eps_compared_with() == "v - avg**2"
    var = v - (0.01 * np.array([1.0, 1e-9, 0.0])) ** 2
    np.testing.assert_allclose(inside.multipliers(), 1 / np.sqrt(var + 1e-6), rtol=1e-12)
    assert inside.stats.eps_dominated == pytest.approx(2 / 3)


# -- machine code ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "options"),
    [(RMSprop, {}), (Adagrad, {})],
    ids=["RMSprop", "Adagrad"],
)
def test_default_kernel_is_vectorized(cls: type, options: dict[str, Any]) -> None:
    """The plain float32 kernel of the default variant uses packed SIMD registers (ymm/zmm)."""
    n = 1024
    a = np.ones(n, np.float32)
    opt = cls([Parameter(a.copy())], **options)
    group = opt.param_groups[0]
    kernel = opt._kernel(group, False, True)
    # The disk-cached kernel cannot show its assembly: compile the same function again, uncached.
    uncached = numba.njit(error_model="numpy", nogil=True)(kernel.py_func)
    spec = opt._state_spec(group)
    uncached(a, a.copy(), *(a.copy() for _ in spec), a[:0], opt._scalars(group, a.dtype, 1))
    asm = "\n".join(uncached.inspect_asm().values())
    wide = len(re.findall(r"%[yz]mm\d+", asm))
    packed = len(re.findall(r"\bv(?:sqrt|div)ps\b", asm))
    assert wide > 0 and packed > 0, f"{wide} ymm/zmm uses, {packed} packed sqrt/div"

"""Adamax and Adadelta: kernel against NumPy reference, PyTorch's messages, state, convergence.

Library parity (PyTorch, optax, Keras 3) is in tests/test_family_parity.py; here each optimizer
is held to its own NumPy reference and docstring. Run as a script, this file is the second
process of the 250 + 250 resume test:

    python test_optim_adamax_adadelta.py resume IN OUT STEPS
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from _train_with_checkpoints import checkpoint, train
from hypothesis import given, settings
from hypothesis import strategies as st

import minnet
from minnet.nn import Linear, Parameter, ReLU, Sequential
from minnet.optim import Adadelta, Adamax

# -- the table --------------------------------------------------------------------------------


def adamax_eps_target(kw: dict[str, Any], g: np.ndarray, state: dict[str, np.ndarray]):
    """What eps is compared with after a step (the docstring's rule): |g| or u."""
    return np.abs(g) if kw.get("eps_mode", "max") == "max" else state["exp_inf"]


def adadelta_eps_target(kw: dict[str, Any], g: np.ndarray, state: dict[str, np.ndarray]):
    return state["square_avg"]


def adamax_multiplier(kw: dict[str, Any], state: dict[str, np.ndarray]) -> np.ndarray:
    u = state["exp_inf"]
    return 1 / u if kw.get("eps_mode", "max") == "max" else 1 / (u + kw.get("eps", 1e-8))


def adadelta_multiplier(kw: dict[str, Any], state: dict[str, np.ndarray]) -> np.ndarray:
    return 1 / np.sqrt(state["square_avg"] + kw.get("eps", 1e-6))


#: name -> (class, state names, eps_modes, hyperparameter strategy, eps target, multiplier)
OPTIMIZERS: dict[str, tuple[Any, ...]] = {
    "Adamax": (
        Adamax,
        ("exp_avg", "exp_inf"),
        ("max", "outside"),
        st.fixed_dictionaries(
            {
                "lr": st.sampled_from([0.0, 1e-3, 0.1]),
                "betas": st.tuples(
                    st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.5, 0.999])
                ),
                "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-2, 1.0]),
                "weight_decay": st.sampled_from([0.0, 1e-2]),
            }
        ),  # fmt: skip
        adamax_eps_target,
        adamax_multiplier,
    ),
    "Adadelta": (
        Adadelta,
        ("square_avg", "acc_delta"),
        (None,),
        st.fixed_dictionaries(
            {
                "lr": st.sampled_from([0.0, 0.1, 1.0]),
                "rho": st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0]),
                "eps": st.sampled_from([0.0, 1e-16, 1e-6, 1e-2, 1.0]),
                "weight_decay": st.sampled_from([0.0, 1e-2]),
            }
        ),  # fmt: skip
        adadelta_eps_target,
        adadelta_multiplier,
    ),
}
VARIANTS = [(name, mode) for name, row in OPTIMIZERS.items() for mode in row[2]]
VARIANT_IDS = [f"{name}-{mode}" if mode else name for name, mode in VARIANTS]


def make(name: str, params: Any, mode: str | None, **kw: Any) -> Any:
    """The optimizer ``name`` with ``eps_mode=mode`` when it has placements."""
    if mode is not None:
        kw["eps_mode"] = mode
    return OPTIMIZERS[name][0](params, **kw)


# -- kernel == NumPy reference ----------------------------------------------------------------


def run_kernel_and_reference(
    name: str, mode: str | None, kw: dict[str, Any], n: int, steps: int, zero_frac: float,
    seed: int,
) -> None:  # fmt: skip
    """Run the plain kernel, the tracked kernel, a dry run and the reference side by side on the
    same random inputs (a fraction ``zero_frac`` of zero gradients), checking each step."""
    opt = make(name, [Parameter(np.zeros(1))], mode, **kw)
    group = opt.param_groups[0]
    spec = opt._state_spec(group)
    assert tuple(spec) == OPTIMIZERS[name][1]
    hp = {k: group[k] for k in opt.defaults}
    eps_target = OPTIMIZERS[name][4]
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n)
    runs = [[param.copy(), *(np.full(n, v) for v in spec.values())] for _ in range(3)]
    plain, tracked, ref = runs
    dtype = np.dtype(np.float64)
    scratch = np.empty(n)
    for t in range(1, steps + 1):
        grad = (
            rng.standard_normal(n) * 10.0 ** rng.integers(-12, 2, n) * (rng.random(n) >= zero_frac)
        )
        s = opt._scalars(group, dtype, t)
        before = [a.copy() for a in tracked]
        with np.errstate(all="ignore"):
            dry = opt._kernel(group, True, False)(*tracked[:1], grad, *tracked[1:], scratch, s)
        for a, b in zip(tracked, before):
            np.testing.assert_array_equal(a, b)  # a dry run writes nothing
        opt._kernel(group, False, True)(plain[0], grad, *plain[1:], np.empty(0), s)
        counts = opt._kernel(group, True, True)(tracked[0], grad, *tracked[1:], scratch, s)
        opt._reference(group)(ref[0], grad, *ref[1:], s)
        assert dry[0] == counts[0] and dry[1] == counts[1]
        for a, b, c in zip(plain, tracked, ref):
            np.testing.assert_array_equal(a, b)  # tracking changes no bit
            np.testing.assert_array_equal(np.isnan(a), np.isnan(c))
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=0, equal_nan=True)
        # The counts are what the docstring says they are.
        g = grad + hp["weight_decay"] * before[0] if hp["weight_decay"] else grad
        state = dict(zip(spec, tracked[1:]))
        with np.errstate(all="ignore"):
            target = eps_target(hp, g, state)
            np.testing.assert_array_equal(before[0] + scratch, tracked[0])  # scratch: updates
        assert counts[0] == int((hp["eps"] >= target).sum())
        assert counts[1] == int((~np.isfinite(tracked[0])).sum())
        if np.isfinite(scratch).all():
            assert counts[2] == pytest.approx(float((scratch**2).sum()), rel=1e-12, abs=0)


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 200),
    steps=st.integers(1, 5),
    zero_frac=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_matches_reference_float64(name, mode, data, n, steps, zero_frac, seed) -> None:
    kw = data.draw(OPTIMIZERS[name][3])
    run_kernel_and_reference(name, mode, kw, n, steps, zero_frac, seed)


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
def test_eps_zero_and_zero_gradient_is_nan_in_both(name: str, mode: str | None) -> None:
    # 0/0 on a coordinate that never saw a gradient: NaN from the kernel and the reference
    # alike (error_model="numpy"), never an exception.
    run_kernel_and_reference(name, mode, {"eps": 0.0}, 8, 3, 1.0, 0)
    p = Parameter(np.array([1.0, 2.0]))
    opt = make(name, [p], mode, eps=0.0)
    p.grad[...] = [0.0, 1.0]
    opt.step()
    assert np.isnan(p.data[0])


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
def test_kernel_matches_reference_float32(name: str, mode: str | None) -> None:
    """float32 stays float32 and agrees with the reference to float32 round-off."""
    opt = make(name, [Parameter(np.zeros(1, np.float32))], mode, weight_decay=1e-2)
    group = opt.param_groups[0]
    rng = np.random.default_rng(5)
    n = 10_001
    runs = [[rng.standard_normal(n).astype(np.float32)] for _ in range(1)]
    runs[0] += [np.zeros(n, np.float32) for _ in OPTIMIZERS[name][1]]
    runs.append([a.copy() for a in runs[0]])
    for t in range(1, 6):
        grad = (rng.standard_normal(n) * (rng.random(n) > 0.3)).astype(np.float32)
        s = opt._scalars(group, np.dtype(np.float32), t)
        assert all(np.asarray(v).dtype == np.float32 for v in s)
        opt._kernel(group, False, True)(runs[0][0], grad, *runs[0][1:], np.empty(0, np.float32), s)
        opt._reference(group)(runs[1][0], grad, *runs[1][1:], s)
    for a, b in zip(*runs):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_adamax_placements_differ_only_while_the_decayed_max_wins() -> None:
    """One gradient, then zeros: "max" keeps u = (|g| + eps) * beta2**k, "outside" divides by
    |g| * beta2**k + eps; the same while |g| + eps wins (step 1)."""
    b2, eps, g0 = 0.5, 0.01, 0.3  # beta2**3 * (g0 + eps) > eps: the decayed max wins
    out = {}
    for mode in ("max", "outside"):
        p = Parameter(np.zeros(1))
        opt = Adamax([p], lr=1.0, betas=(0.0, b2), eps=eps, eps_mode=mode)
        us = []
        for t in range(4):
            p.grad[...] = g0 if t == 0 else 0.0
            opt.step()
            us.append(opt.state_dict()["state"][0]["exp_inf"][0])
            if t == 0:
                np.testing.assert_allclose(p.data, [-g0 / (g0 + eps)], rtol=1e-15)
        out[mode] = np.array(us)
    k = np.arange(4)
    np.testing.assert_allclose(out["max"], (g0 + eps) * b2**k, rtol=1e-15)
    np.testing.assert_allclose(out["outside"], g0 * b2**k, rtol=1e-15)
    np.testing.assert_allclose(
        (out["max"] - (out["outside"] + eps))[1:], -eps * (1 - b2 ** k[1:]), rtol=1e-12
    )


# -- validation (PyTorch's messages) ----------------------------------------------------------

BAD = [
    ("Adamax", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("Adamax", {"lr": math.nan}, ValueError, "Invalid learning rate: nan"),
    ("Adamax", {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    ("Adamax", {"eps": math.nan}, ValueError, "Invalid epsilon value: nan"),
    ("Adamax", {"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("Adamax", {"betas": (-0.1, 0.999)}, ValueError, "Invalid beta parameter at index 0: -0.1"),
    ("Adamax", {"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0"),
    ("Adamax", {"betas": (0.9, math.nan)}, ValueError, "Invalid beta parameter at index 1: nan"),
    ("Adamax", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    # PyTorch checks lr first, then eps, then betas, then weight_decay.
    ("Adamax", {"lr": -1.0, "eps": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("Adamax", {"eps": -1.0, "betas": (2.0, 0.9)}, ValueError, "Invalid epsilon value: -1.0"),
    ("Adamax", {"eps_mode": "inside"}, ValueError,
     "Invalid eps_mode: 'inside'; expected one of ('max', 'outside')"),
    ("Adamax", {"lr": "0.1"}, TypeError, "lr must be a real number, got str: '0.1'"),
    ("Adamax", {"betas": 0.9}, TypeError, "betas must be a pair (beta1, beta2) of floats, got 0.9"),
    ("Adadelta", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("Adadelta", {"rho": 1.5}, ValueError, "Invalid rho value: 1.5"),
    ("Adadelta", {"rho": -0.1}, ValueError, "Invalid rho value: -0.1"),
    ("Adadelta", {"rho": math.nan}, ValueError, "Invalid rho value: nan"),
    ("Adadelta", {"eps": -1e-6}, ValueError, "Invalid epsilon value: -1e-06"),
    ("Adadelta", {"weight_decay": -1}, ValueError, "Invalid weight_decay value: -1"),
    ("Adadelta", {"rho": 2.0, "eps": -1.0}, ValueError, "Invalid rho value: 2.0"),
    ("Adadelta", {"rho": "0.9"}, TypeError, "rho must be a real number, got str: '0.9'"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kw", "exc", "message"), BAD, ids=[str(b[1]) for b in BAD])
def test_bad_hyperparameters_raise_pytorchs_message(name, kw, exc, message) -> None:
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        OPTIMIZERS[name][0]([Parameter(np.zeros(2))], **kw)
    # The same check guards an edited parameter group at the next step, which changes nothing.
    p = Parameter(np.ones(2))
    opt = OPTIMIZERS[name][0]([p])
    opt.param_groups[0].update(kw)
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        opt.step()
    np.testing.assert_array_equal(p.data, 1.0)


@pytest.mark.parametrize(
    ("name", "kw"),
    [("Adamax", {"lr": 0.0, "eps": 0.0, "betas": (0.0, 0.0), "weight_decay": 0.0}),
     ("Adadelta", {"lr": 0.0, "rho": 0.0, "eps": 0.0, "weight_decay": 0.0}),
     ("Adadelta", {"rho": 1.0})],
)  # fmt: skip
def test_edge_values_that_pytorch_accepts(name: str, kw: dict[str, Any]) -> None:
    opt = OPTIMIZERS[name][0]([Parameter(np.zeros(2))], **kw)
    for key, value in kw.items():
        assert opt.param_groups[0][key] == value


def test_defaults_are_pytorchs() -> None:
    import inspect

    def defaults(cls: Any) -> dict[str, Any]:
        return {k: p.default for k, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip

    common = {"state_dtype": None, "rounding": "fused", "track_stats": False,
              "check_finite": False, "maximize": False, "foreach": None, "fused": None,
              "capturable": False, "differentiable": False}  # fmt: skip
    assert defaults(Adamax) == {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                                "weight_decay": 0.0, "eps_mode": "max", **common}  # fmt: skip
    assert defaults(Adadelta) == {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0,
                                  **common}  # fmt: skip


# -- what eps does: stats, multipliers, check_finite --------------------------------------------


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
def test_stats_and_multipliers_follow_the_docstring(name: str, mode: str | None) -> None:
    rng = np.random.default_rng(3)
    a, b = Parameter(rng.standard_normal((3, 4))), Parameter(rng.standard_normal(5))
    kw = {"eps": 1e-3}
    opt = make(name, [a, b], mode, track_stats=True, **kw)
    with pytest.raises(ValueError, match="at least one optimizer step"):
        opt.multipliers()
    for _ in range(3):
        a.grad[...] = rng.standard_normal(a.grad.shape) * np.array([1.0, 1e-4, 0.0, 1e-6])
        b.grad[...] = rng.standard_normal(5) * 1e-5
        opt.step()
    state = opt.state_dict()["state"]
    spec = OPTIMIZERS[name][1]
    merged = {k: np.concatenate([state[i][k].ravel() for i in (0, 1)]) for k in spec}
    hp = {**kw, **({"eps_mode": mode} if mode else {})}
    np.testing.assert_allclose(opt.multipliers(), OPTIMIZERS[name][5](hp, merged), rtol=1e-15)
    assert opt.eps_compared_with() == {"max": "|g|", "outside": "u", None: "square_avg"}[mode]
    assert opt.stats is not None and opt.stats.n_params == 17 and opt.stats.nonfinite == 0
    assert 0.0 < opt.stats.eps_dominated < 1.0
    if name == "Adadelta" or mode == "outside":  # compared with state: recount from it
        key = "square_avg" if name == "Adadelta" else "exp_inf"
        assert opt.stats.eps_dominated == pytest.approx((kw["eps"] >= merged[key]).mean())


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
def test_check_finite_refuses_eps_zero_zero_over_zero(name: str, mode: str | None) -> None:
    w = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]), name="w")
    opt = make(name, [w], mode, eps=0.0, check_finite=True)
    w.grad[...] = [[0.5, 0.0], [0.25, 0.0]]  # column 1 never sees a gradient
    before = w.data.copy()
    with pytest.raises(FloatingPointError, match=r"eps=0 .* 0/0 = NaN") as err:
        opt.step()
    assert "w (2 of 4 elements)" in str(err.value)
    np.testing.assert_array_equal(w.data, before)
    assert opt.state_dict()["state"] == {} and opt.step_count == 0
    # With eps > 0 the same step goes through.
    opt.param_groups[0]["eps"] = 1e-8
    opt.step()
    assert np.isfinite(w.data).all() and opt.step_count == 1


# -- state ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
def test_state_dict_round_trip_continues_identically(name: str, mode: str | None) -> None:
    def fresh() -> tuple[list[Parameter], Any]:
        params = [Parameter(np.linspace(-1, 1, 6).reshape(2, 3)),
                  Parameter(np.linspace(0, 1, 4, dtype=np.float32))]  # fmt: skip
        groups = [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.5}]
        return params, make(name, groups, mode, weight_decay=1e-2)

    def grads(params: list[Parameter], t: int) -> None:
        for i, p in enumerate(params):
            p.grad[...] = np.sin(np.arange(p.data.size) + t + i).reshape(p.data.shape)

    params, opt = fresh()
    for t in range(5):
        grads(params, t)
        opt.step()
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", *OPTIMIZERS[name][1]}
    assert sd["state"][1]["step"] == 5.0 and sd["param_groups"][1]["lr"] == 0.5
    params2, opt2 = fresh()
    for p, q in zip(params, params2):
        q.data[...] = p.data
    opt2.load_state_dict(sd)
    for t in range(5, 9):
        grads(params, t)
        grads(params2, t)
        opt.step()
        opt2.step()
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.data, q.data)
    assert sd["state"][0]["step"] == 5.0  # a copy: later steps did not change it


#: The optimizers of the resume test (kwargs only: the checkpoint stores them).
RESUME_VARIANTS = {
    "adamax-max": {"optimizer": "Adamax", "lr": 1e-2, "weight_decay": 1e-3},
    "adamax-outside": {"optimizer": "Adamax", "lr": 1e-2, "eps": 1e-3, "eps_mode": "outside"},
    "adadelta": {"optimizer": "Adadelta", "lr": 1.0, "rho": 0.9, "weight_decay": 1e-3},
}


def fresh_run(variant: dict[str, Any]) -> dict[str, Any]:
    """A run of tests/_train_with_checkpoints.py's model with the optimizer ``variant`` names
    (one float32 and one float64 layer: two flat buffers)."""
    model = Sequential(Linear(12, 24, rng=1), ReLU(), Linear(24, 3, dtype=np.float64, rng=2))
    kw = {k: v for k, v in variant.items() if k != "optimizer"}
    opt = getattr(minnet.optim, variant["optimizer"])(model.parameters(), **kw)
    return {"model": model, "optimizer": opt, "variant": variant, "step": 0,
            "rng": np.random.default_rng(7)}  # fmt: skip


def restore_run(ckpt: dict[str, Any]) -> dict[str, Any]:
    run = fresh_run(ckpt["variant"])
    run["model"].load_state_dict(ckpt["model"])
    run["optimizer"].load_state_dict(ckpt["optimizer"])
    run["step"] = ckpt["step"]
    run["rng"].bit_generator.state = ckpt["rng"]
    return run


def test_250_plus_250_steps_in_a_new_process_are_bit_identical_to_500(tmp_path: Path) -> None:
    from test_checkpoint import assert_identical

    straight = {k: checkpoint(train(fresh_run(v), 500)) for k, v in RESUME_VARIANTS.items()}
    halfway = {k: checkpoint(train(fresh_run(v), 250)) for k, v in RESUME_VARIANTS.items()}
    minnet.save(halfway, tmp_path / "halfway.npz")
    subprocess.run(
        [sys.executable, __file__, "resume", str(tmp_path / "halfway.npz"),
         str(tmp_path / "resumed.npz"), "500"],
        check=True,
        timeout=120,
    )  # fmt: skip
    resumed = minnet.load(tmp_path / "resumed.npz")
    for name in straight:
        assert_identical(straight[name], resumed[name], name)
        assert not np.array_equal(
            halfway[name]["model"]["0.weight"], straight[name]["model"]["0.weight"]
        )


# -- convergence on optax's test problems -----------------------------------------------------


def parabola() -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """optax's parabola: ``sum((w - w*)**2)`` from ``[-1, 10, 1]`` to ``w* = [1, -1, 1]``."""
    target = np.array([1.0, -1.0, 1.0])
    return np.array([-1.0, 10.0, 1.0]), target, lambda w: 2 * (w - target)


def rosenbrock() -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """optax's Rosenbrock: ``(a - x)**2 + b*(y - x**2)**2``, a=1, b=100, from 0 to ``(1, 1)``."""
    a, b = 1.0, 100.0

    def grad(w: np.ndarray) -> np.ndarray:
        x, y = w
        return np.array([-2 * (a - x) - 4 * b * x * (y - x * x), 2 * b * (y - x * x)])

    return np.zeros(2), np.array([a, a * a]), grad


CONVERGENCE = [
    ("Adamax", "max", parabola, {"lr": 1e-1}, 2000),
    ("Adamax", "outside", parabola, {"lr": 1e-1}, 2000),
    ("Adamax", "max", rosenbrock, {"lr": 1e-2}, 10_000),
    ("Adamax", "outside", rosenbrock, {"lr": 1e-2}, 10_000),
    ("Adadelta", None, parabola, {"lr": 1.0, "rho": 0.9, "eps": 1e-3}, 2000),
    # Rosenbrock's curved valley needs a small lr: at lr >= 0.3 Adadelta overshoots it.
    ("Adadelta", None, rosenbrock, {"lr": 0.02, "rho": 0.95, "eps": 1e-6}, 10_000),
]


@pytest.mark.parametrize(
    ("name", "mode", "problem", "kw", "steps"),
    CONVERGENCE,
    ids=[f"{c[0]}-{c[1]}-{c[2].__name__}" for c in CONVERGENCE],
)
def test_converges_on_optax_problems(name, mode, problem, kw, steps) -> None:
    w0, target, grad = problem()
    p = Parameter(w0.copy())
    opt = make(name, [p], mode, **kw)
    for _ in range(steps):
        p.grad[...] = grad(p.data)
        opt.step()
    np.testing.assert_allclose(p.data, target, rtol=1e-2, atol=1e-2)


# -- machine code -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
def test_default_kernel_is_vectorized(name: str, mode: str | None) -> None:
    """The plain float32 update uses SIMD registers and packed divisions (the eps-bearing
    division is the expensive part); the disk-cached kernel cannot show its assembly, so the
    same function is compiled again, uncached."""
    a = np.ones(64, np.float32)
    opt = make(name, [Parameter(a.copy())], mode)
    group = opt.param_groups[0]
    kernel = opt._kernel(group, False, True)
    fresh = numba.njit(error_model="numpy", nogil=True)(kernel.py_func)
    n_state = len(OPTIMIZERS[name][1])
    fresh(a, a.copy(), *(a.copy() for _ in range(n_state)), a[:0],
          opt._scalars(group, a.dtype, 1))  # fmt: skip
    asm = "\n".join(fresh.inspect_asm().values())
    wide = len(re.findall(r"%[yz]mm\d+", asm))
    assert wide > 0, "no ymm/zmm registers: the loop did not vectorize"
    assert re.search(r"\bvdivps\b", asm), "no packed single-precision division"


# -- the second process of the resume test ------------------------------------------------------


def _main(argv: list[str]) -> None:
    mode, src, out, steps = argv
    assert mode == "resume"
    runs = {name: restore_run(ckpt) for name, ckpt in minnet.load(src).items()}
    minnet.save({name: checkpoint(train(r, int(steps))) for name, r in runs.items()}, out)


if __name__ == "__main__":
    _main(sys.argv[1:])

"""Every optimizer of the family against the base class's contract (PyTorch common_optimizers
style: tables of inputs, error inputs with PyTorch's messages, and small convergence problems).

Adding an optimizer: add rows to ``FAMILY`` (constructor kwargs covering each variant),
``ERROR_INPUTS`` and ``CONVERGENCE``; every test below then runs on it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoint import assert_identical

from minnet.nn import Parameter
from minnet.optim import SGD, Adam, AdamStats, AdamW, Optimizer, OptimizerStats
from minnet.optim.optimizer import required

# (class, kwargs): one row per variant that selects a different kernel or formula.
FAMILY: list[tuple[type[Optimizer], dict[str, Any]]] = [
    (SGD, {"lr": 0.05}),
    (SGD, {"lr": 0.05, "weight_decay": 0.1, "maximize": True}),
    (SGD, {"lr": 0.05, "momentum": 0.9}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (Adam, {"lr": 0.05}),
    (Adam, {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1}),
    (Adam, {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (AdamW, {"lr": 0.05}),
    (AdamW, {"lr": 0.05, "amsgrad": True, "eps_mode": "hat"}),
    (AdamW, {"lr": 0.05, "amsgrad": True, "amsgrad_max": "corrected", "eps_mode": "inside"}),
    (AdamW, {"lr": 0.05, "eps_mode": "atan2", "weight_decay": 0.5}),
]
FAMILY_IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in FAMILY]


def two_params(dtype: Any = np.float64) -> list[Parameter]:
    return [Parameter(np.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "w"),
            Parameter(np.array([0.5, -0.25], dtype=dtype), "b")]  # fmt: skip


def fill_grads(params: list[Parameter], rng: np.random.Generator) -> None:
    for p in params:
        p.grad[...] = rng.standard_normal(p.data.shape)


# -- errors (PyTorch's messages) --------------------------------------------------------------

ERROR_INPUTS: list[tuple[type[Optimizer], dict[str, Any], type, str]] = [
    *[(cls, kw, exc, msg) for cls in (SGD, Adam, AdamW) for kw, exc, msg in [
        ({"lr": -1e-3}, ValueError, "Invalid learning rate: -0.001"),
        ({"lr": math.nan}, ValueError, "Invalid learning rate: nan"),
        ({"lr": "0.1"}, TypeError, "lr must be a real number"),
        ({"weight_decay": -0.5}, ValueError, "Invalid weight_decay value: -0.5"),
        ({"weight_decay": math.nan}, ValueError, "Invalid weight_decay value: nan"),
        ({"track_stats": 1}, TypeError, "track_stats must be a bool"),
        ({"check_finite": "no"}, TypeError, "check_finite must be a bool"),
    ]],
    *[(cls, kw, exc, msg) for cls in (Adam, AdamW) for kw, exc, msg in [
        ({"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
        ({"eps": math.nan}, ValueError, "Invalid epsilon value: nan"),
        ({"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, math.nan)}, ValueError, "Invalid beta parameter at index 1: nan"),
        ({"betas": 0.9}, TypeError, "betas must be a pair"),
        ({"amsgrad": "yes"}, TypeError, "amsgrad must be a bool"),
        ({"eps_mode": "below"}, ValueError, "Invalid eps_mode: 'below'"),
        ({"amsgrad_max": "paper"}, ValueError, "amsgrad_max='paper' needs amsgrad=True"),
    ]],
    (Adam, {"decoupled_weight_decay": 1}, TypeError, "decoupled_weight_decay must be a bool"),
    (SGD, {"momentum": -0.1}, ValueError, "Invalid momentum value: -0.1"),
    (SGD, {"momentum": math.nan}, ValueError, "Invalid momentum value: nan"),
    (SGD, {"momentum": None}, TypeError, "momentum must be a real number"),
    (SGD, {"dampening": math.nan}, ValueError, "Invalid dampening value: nan"),
    (SGD, {"nesterov": True}, ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (SGD, {"nesterov": 1, "momentum": 0.9}, TypeError, "nesterov must be a bool"),
    (SGD, {"maximize": "no"}, TypeError, "maximize must be a bool"),
]  # fmt: skip


@pytest.mark.parametrize(
    "cls, kwargs, exc, message",
    ERROR_INPUTS,
    ids=[f"{c.__name__}-{kw}" for c, kw, _, _ in ERROR_INPUTS],
)
def test_invalid_hyperparameters(cls: type, kwargs: dict, exc: type, message: str) -> None:
    params = two_params()
    before = [p.data for p in params]
    with pytest.raises(exc) as info:
        cls(params, **kwargs)
    assert message in str(info.value)
    assert all(p.data is b for p, b in zip(params, before))  # nothing was rebound


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_invalid_params_with_pytorchs_messages(cls: type) -> None:
    p, q = two_params()
    cases = [
        (p, TypeError, "params argument given to the optimizer should be an iterable of "
         "Parameters or dicts, but got Parameter"),
        ([], ValueError, "optimizer got an empty parameter list"),
        ({p, q}, TypeError, "ordering of parameters in sets will change"),
        ([{"params": [p]}, {"params": [q, p]}], ValueError,
         "some parameters appear in more than one parameter group"),
        ([p, p], ValueError, "some parameters appear more than once"),
        ([{"lr": 0.1}], ValueError, "a parameter group needs a 'params' entry"),
        ([{"params": [p], "lr": -1.0}], ValueError, "Invalid learning rate: -1.0"),
    ]  # fmt: skip
    for params, exc, message in cases:
        with pytest.raises(exc) as info:
            cls(params)
        assert message in str(info.value), (params, str(info.value))
    # A failed group leaves the earlier (valid) group's parameters untouched too.
    data = p.data
    with pytest.raises(ValueError):
        cls([{"params": [p]}, {"params": [q], "lr": math.nan}])
    assert p.data is data


def test_required_option_message_as_pytorch() -> None:
    p, q = two_params()
    with pytest.raises(ValueError, match="didn't specify a value of required optimization "
                       "parameter lr"):  # fmt: skip
        SGD([p], lr=required)
    opt = SGD([{"params": [p], "lr": 0.5}, {"params": [q], "lr": 0.25}], lr=required)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.25]


# -- parameter groups ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls, kwargs", FAMILY, ids=FAMILY_IDS)
def test_two_groups_equal_two_optimizers_bit_for_bit(cls: type, kwargs: dict) -> None:
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(s) for s in ((2, 3), (2,), (4,))] for _ in range(6)]
    override = {"lr": 0.01}
    if "eps_mode" in cls.__init__.__code__.co_varnames:
        override["eps"] = 1e-3
    # Group 1 holds a float32 parameter too: groups and dtypes both split the buffers.
    grouped = two_params() + [Parameter(np.arange(4, dtype=np.float32), "c")]
    separate = two_params() + [Parameter(np.arange(4, dtype=np.float32), "c")]
    opt = cls([{"params": grouped[:1]}, {"params": grouped[1:], **override}], **kwargs)
    opt_a = cls(separate[:1], **kwargs)
    opt_b = cls(separate[1:], **{**kwargs, **override})
    assert len(opt.param_groups) == 2 and len(opt._groups) == 3
    for g in grads:
        for p, q, x in zip(grouped, separate, g):
            p.grad[...] = x
            q.grad[...] = x
        opt.step()
        opt_a.step()
        opt_b.step()
    for p, q in zip(grouped, separate):
        assert p.data.dtype == q.data.dtype
        np.testing.assert_array_equal(p.data, q.data)
    sd, sd_a, sd_b = opt.state_dict(), opt_a.state_dict(), opt_b.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1, 2]]
    assert_identical(sd["state"][0], sd_a["state"][0])
    assert_identical(sd["state"][2], sd_b["state"][1])


@pytest.mark.parametrize("cls, kwargs", FAMILY[::3], ids=FAMILY_IDS[::3])
def test_add_param_group_starts_its_own_step_count(cls: type, kwargs: dict) -> None:
    rng = np.random.default_rng(1)
    p, q = two_params()
    q_alone = Parameter(q.data.copy(), "b")
    opt = cls([p], **kwargs)
    fill_grads([p], rng)
    opt.step()
    opt.add_param_group({"params": [q], "lr": 0.02, "initial_lr": 0.02})
    alone = cls([q_alone], **{**kwargs, "lr": 0.02})
    assert opt.param_groups[1]["initial_lr"] == 0.02  # unknown keys are kept, as in PyTorch
    for _ in range(3):
        fill_grads([p, q], rng)
        q_alone.grad[...] = q.grad
        opt.step()
        alone.step()
    np.testing.assert_array_equal(q.data, q_alone.data)
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 4.0 and sd["state"][1]["step"] == 3.0
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [p]})


def test_group_edits_are_per_group_and_attribute_access_needs_agreement() -> None:
    p, q = two_params()
    opt = SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1, momentum=0.9)
    with pytest.raises(AttributeError, match="2 parameter groups with different lr"):
        _ = opt.lr
    assert opt.momentum == 0.9
    opt.lr = 0.25  # sets every group, validated
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        opt.lr = -1
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    opt.param_groups[1]["momentum"] = 0.0  # would remove the momentum buffer
    with pytest.raises(ValueError, match="momentum cannot change after the optimizer"):
        opt.step()
    opt.param_groups[1]["momentum"] = 0.5  # changing its value is fine
    opt.step()
    assert opt.param_groups[1]["momentum"] == 0.5


# -- state dicts --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, kwargs", FAMILY, ids=FAMILY_IDS)
def test_state_dict_round_trip_with_groups(cls: type, kwargs: dict) -> None:
    def make() -> tuple[list[Parameter], Optimizer]:
        ps = two_params() + [Parameter(np.ones(3, dtype=np.float32), "c")]
        return ps, cls([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], **kwargs)

    def train(ps: list[Parameter], opt: Optimizer, seeds: range) -> None:
        for seed in seeds:
            fill_grads(ps, np.random.default_rng(seed))
            opt.step()

    ps_a, a = make()
    train(ps_a, a, range(20))
    ps_b, b = make()
    train(ps_b, b, range(10))
    sd = b.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2] and sd["state"][2]["step"] == 10.0
    ps_c, c = make()
    for p, q in zip(ps_c, ps_b):
        p.data[...] = q.data
    c.load_state_dict(sd)
    assert_identical(c.state_dict(), sd)
    train(ps_c, c, range(10, 20))
    for p, q in zip(ps_c, ps_a):
        np.testing.assert_array_equal(p.data, q.data)
    assert_identical(c.state_dict(), a.state_dict())


def test_load_state_dict_checks_groups_before_writing() -> None:
    ps = two_params() + [Parameter(np.zeros(2), "c")]
    opt = SGD([{"params": ps[:1]}, {"params": ps[1:]}], momentum=0.9)
    fill_grads(ps, np.random.default_rng(0))
    opt.step()
    before = opt.state_dict()
    bad_groups = [
        (lambda sd: sd["param_groups"].pop(), "1 parameter groups, this optimizer has 2"),
        (lambda sd: sd["param_groups"][1]["params"].append(5), "3 parameters in group 1"),
        (lambda sd: sd["param_groups"][1].update(momentum=0.0),
         "loaded state has momentum=0.0 but this optimizer has momentum=0.9"),
        (lambda sd: sd["state"].pop(1), "entries for parameters [2] of group 1, expected all"),
        (lambda sd: sd["state"][1].update(step=2.0), "different step counts: [1, 2]"),
        (lambda sd: [sd["state"][k].update(step=2.0) for k in (1, 2)], None),  # accepted
        (lambda sd: sd["state"].update({7: {"step": 1.0}}), "unknown parameters [7]"),
        (lambda sd: sd["param_groups"][0].update(lr=math.nan), "Invalid learning rate: nan"),
    ]  # fmt: skip
    for mutate, message in bad_groups:
        sd = opt.state_dict()
        mutate(sd)
        if message is None:
            opt.load_state_dict(sd)
            assert opt._steps == [1, 2]
            opt.load_state_dict(before)
            continue
        with pytest.raises(ValueError) as info:
            opt.load_state_dict(sd)
        assert message in str(info.value), str(info.value)
        assert_identical(before, opt.state_dict())


def test_pytorch_layout_loads_without_minnet_only_options() -> None:
    p = Parameter(np.ones(3))
    opt = Adam([p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    for key in ("eps_mode", "amsgrad_max", "decoupled_weight_decay"):
        del sd["param_groups"][0][key]
    sd["param_groups"][0].update(foreach=None, maximize=False)  # PyTorch's extra keys are kept
    other = Adam([Parameter(np.ones(3))])
    other.load_state_dict(sd)
    group = other.state_dict()["param_groups"][0]
    assert group["eps_mode"] == "outside" and group["foreach"] is None and group["lr"] == 0.1


# -- stats, check_finite, eps descriptions --------------------------------------------------


@pytest.mark.parametrize("cls, kwargs", FAMILY, ids=FAMILY_IDS)
def test_stats_measure_the_applied_update(cls: type, kwargs: dict) -> None:
    ps = two_params()
    opt = cls(ps, track_stats=True, **kwargs)
    assert AdamStats is OptimizerStats
    for seed in range(3):
        fill_grads(ps, np.random.default_rng(seed))
        ps[1].grad[...] = 0.0  # zero gradients: where eps dominates
        before = np.concatenate([p.data.ravel() for p in ps])
        opt.step()
        after = np.concatenate([p.data.ravel() for p in ps])
        st = opt.stats
        assert st.step == seed + 1 and st.n_params == 8 and st.nonfinite == 0
        assert st.update_rms == pytest.approx(np.sqrt(np.mean((after - before) ** 2)), rel=1e-9)
        if opt.eps_compared_with() is None:
            assert st.eps_dominated == 0.0
    group = opt.param_groups[0]
    if opt.eps_compared_with() is not None and group["eps_mode"] == "outside":
        l2 = group["weight_decay"] != 0 and not group["decoupled_weight_decay"]
        assert (st.eps_dominated > 0) is not l2  # eps dominates where g = 0 (no L2 term in g)


def test_eps_descriptions_and_multipliers() -> None:
    p = Parameter(np.ones(3))
    sgd = SGD([p], lr=0.1)
    p.grad[...] = 1.0
    sgd.step()
    assert sgd.eps_compared_with() is None and sgd.multipliers() is None
    q = Parameter(np.ones(3))
    adam = Adam([q], eps=1e-3)
    with pytest.raises(ValueError, match="at least one optimizer step"):
        adam.multipliers()
    q.grad[...] = [0.0, 1.0, 2.0]
    adam.step()
    assert adam.eps_compared_with() == "sqrt(v_hat)"
    np.testing.assert_allclose(adam.multipliers(), 1 / (np.abs(q.grad) + 1e-3), rtol=1e-12)
    expected = {"outside": "sqrt(v_hat)", "hat": "sqrt(v)", "inside": "v_hat", "atan2": None}
    for mode, text in expected.items():
        assert Adam.eps_compared_with_options({"eps_mode": mode}) == text


def test_multipliers_follow_state_dict_order_across_groups_and_dtypes() -> None:
    ps = [Parameter(np.ones(2, np.float32), "a"), Parameter(np.ones(3), "b"),
          Parameter(np.ones(2, np.float32), "c")]  # fmt: skip
    opt = Adam([{"params": ps[:2]}, {"params": ps[2:], "eps": 1e-2}], eps=1e-4)
    for p, g in zip(ps, ([1.0, 0.0], [2.0, 0.0, 4.0], [0.0, 8.0])):
        p.grad[...] = g
    opt.step()
    sd = opt.state_dict()
    eps = [1e-4, 1e-4, 1e-2]
    expected = np.concatenate([
        1 / (np.sqrt(sd["state"][i]["exp_avg_sq"].astype(np.float64) / (1 - 0.999)) + eps[i])
        for i in range(3)
    ])  # fmt: skip
    np.testing.assert_allclose(opt.multipliers(), expected, rtol=1e-12)


@pytest.mark.parametrize("cls, kwargs", FAMILY, ids=FAMILY_IDS)
def test_check_finite_refuses_a_nan_gradient_and_changes_nothing(cls: type, kwargs: dict) -> None:
    ps = two_params()
    opt = cls(ps, check_finite=True, **kwargs)
    fill_grads(ps, np.random.default_rng(0))
    opt.step()
    ps[1].grad[0] = np.nan
    before = ([p.data.copy() for p in ps], opt.state_dict())
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert f"{cls.__name__} (check_finite=True): step 2" in msg
    assert "b (1 of 2 elements)" in msg and "w (" not in msg and "NaN or infinite gradient" in msg
    assert_identical(before, ([p.data.copy() for p in ps], opt.state_dict()))


def test_sgd_overflow_is_refused_with_the_overflow_cause() -> None:
    w = Parameter(np.array([1e308, 0.0]), "w")
    opt = SGD([w], lr=1.0, check_finite=True)
    w.grad[...] = [-1e308, 1.0]
    with pytest.raises(FloatingPointError, match="the update of w overflows"):
        opt.step()
    np.testing.assert_array_equal(w.data, [1e308, 0.0])


def test_adamw_is_adam_with_decoupled_decay() -> None:
    a, b = Parameter(np.linspace(-2, 2, 5)), Parameter(np.linspace(-2, 2, 5))
    opt_a = AdamW([a], lr=0.1, amsgrad=True)
    opt_b = Adam([b], lr=0.1, amsgrad=True, weight_decay=1e-2, decoupled_weight_decay=True)
    assert opt_a.weight_decay == 1e-2 and opt_a.decoupled_weight_decay is True
    for seed in range(5):
        a.grad[...] = np.random.default_rng(seed).standard_normal(5)
        b.grad[...] = a.grad
        opt_a.step()
        opt_b.step()
    np.testing.assert_array_equal(a.data, b.data)
    # The decay differs from the L2 term: one step from the same state moves differently.
    c = Parameter(np.linspace(-2, 2, 5))
    opt_c = Adam([c], lr=0.1, weight_decay=0.5)
    d = Parameter(np.linspace(-2, 2, 5))
    opt_d = AdamW([d], lr=0.1, weight_decay=0.5)
    for p, opt in ((c, opt_c), (d, opt_d)):
        p.grad[...] = 1.0
        opt.step()
    assert np.abs(c.data - d.data).max() > 1e-3
    # First AdamW step by hand: decay, then Adam's m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps).
    expected = np.linspace(-2, 2, 5) * (1 - 0.1 * 0.5) - 0.1 * 1.0 / (1.0 + 1e-8)
    np.testing.assert_allclose(d.data, expected, rtol=1e-15)


# -- kernel against reference -------------------------------------------------------------------

KERNEL_ROWS: list[tuple[type[Optimizer], dict[str, Any]]] = [
    (SGD, {"momentum": m, "dampening": d, "nesterov": n, "weight_decay": wd, "maximize": mx})
    for m, d, n in ((0.0, 0.0, False), (0.9, 0.0, False), (0.5, 0.3, False), (0.9, 0.0, True))
    for wd in (0.0, 1e-2)
    for mx in (False, True)
] + [
    (cls, {"eps_mode": e, "amsgrad": ams, "amsgrad_max": amax, "weight_decay": 1e-2})
    for cls in (AdamW,)
    for e in ("outside", "hat", "inside", "atan2")
    for ams, amax in ((False, "raw"), (True, "raw"), (True, "corrected"), (True, "paper"))
]


def run_kernel_and_reference(
    cls: type[Optimizer],
    kwargs: dict[str, Any],
    lr: float,
    eps: float | None,
    n: int,
    steps: int,
    zero_frac: float,
    seed: int,
    dtype: Any = np.float64,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``steps`` updates of one flat buffer by the kernel and by the NumPy reference."""
    kw = dict(kwargs, lr=lr)
    if eps is not None:
        kw["eps"] = eps
    opt = cls([Parameter(np.zeros(1, dtype))], **kw)
    group = opt.param_groups[0]
    spec = opt._state_spec(group)
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    runs = [[param.copy()] + [np.full(n, v, dtype) for v in spec.values()] for _ in range(2)]
    reference = opt._reference(group)
    scratch = np.empty(n, dtype)
    for t in range(1, steps + 1):
        grad = (rng.standard_normal(n) * (rng.random(n) >= zero_frac)).astype(dtype)
        scalars = opt._scalars(group, np.dtype(dtype), t)
        kernel = opt._kernel(group, t % 2 == 0, True)  # plain and tracked paths alternate
        kernel(runs[0][0], grad, *runs[0][1:], scratch, scalars)
        reference(runs[1][0], grad, *runs[1][1:], scalars)
    return runs[0], runs[1]


@settings(max_examples=150, deadline=None)
@given(
    row=st.sampled_from(KERNEL_ROWS),
    lr=st.sampled_from([0.0, 1e-3, 0.1]),
    eps=st.sampled_from([0.0, 1e-8, 1e-3, 1.0]),
    n=st.integers(1, 200),
    steps=st.integers(1, 6),
    zero_frac=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_matches_reference_float64(row, lr, eps, n, steps, zero_frac, seed) -> None:
    cls, kwargs = row
    ours, ref = run_kernel_and_reference(
        cls, kwargs, lr, eps if cls is not SGD else None, n, steps, zero_frac, seed
    )
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("cls, kwargs", KERNEL_ROWS[::5], ids=str)
def test_dry_run_writes_nothing(cls: type, kwargs: dict) -> None:
    opt = cls([Parameter(np.zeros(1))], **kwargs)
    group = opt.param_groups[0]
    rng = np.random.default_rng(0)
    # |.|: second moments are never negative
    arrays = [np.abs(rng.standard_normal(40)) for _ in range(2 + len(opt._state_spec(group)))]
    copies = [a.copy() for a in arrays]
    counts = opt._kernel(group, True, False)(*arrays, np.empty(40), opt._scalars(group, np.dtype(
        np.float64), 3))  # fmt: skip
    assert counts[2] > 0  # it computed the update ...
    for a, b in zip(arrays, copies):
        np.testing.assert_array_equal(a, b)  # ... and stored nothing


# -- convergence: optax's test problems ---------------------------------------------------------


def parabola(w: np.ndarray) -> np.ndarray:
    """Gradient of ``sum((w - [1, -1, 1])**2)``, from ``[-1, 10, 1]``."""
    return 2 * (w - np.array([1.0, -1.0, 1.0]))


def rosenbrock(w: np.ndarray) -> np.ndarray:
    """Gradient of ``(1 - x)**2 + 100 * (y - x**2)**2`` (minimum at ``[1, 1]``), from 0."""
    x, y = w
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


PROBLEMS = {
    "parabola": (parabola, [-1.0, 10.0, 1.0], [1.0, -1.0, 1.0]),
    "rosenbrock": (rosenbrock, [0.0, 0.0], [1.0, 1.0]),
}
CONVERGENCE: list[tuple[type[Optimizer], dict[str, Any], str]] = [
    (SGD, {"lr": 1e-1}, "parabola"),
    (SGD, {"lr": 1e-2, "momentum": 0.9, "nesterov": True}, "parabola"),
    (SGD, {"lr": 1.5e-3}, "rosenbrock"),
    (SGD, {"lr": 1e-3, "momentum": 0.9}, "rosenbrock"),
    (Adam, {"lr": 1e-1}, "parabola"),
    (Adam, {"lr": 1e-2, "amsgrad": True}, "rosenbrock"),
    (Adam, {"lr": 1e-2}, "rosenbrock"),
    (AdamW, {"lr": 1e-1, "weight_decay": 1e-4}, "parabola"),
    (AdamW, {"lr": 1e-2, "weight_decay": 1e-4}, "rosenbrock"),
]


@pytest.mark.parametrize(
    "cls, kwargs, problem", CONVERGENCE, ids=[f"{c.__name__}-{kw}-{p}" for c, kw, p in CONVERGENCE]
)
def test_converges_on_optax_test_problems(cls: type, kwargs: dict, problem: str) -> None:
    grad_fn, start, target = PROBLEMS[problem]
    w = Parameter(np.array(start))
    opt = cls([w], **kwargs)
    for _ in range(10_000):
        w.grad[...] = grad_fn(w.data)
        opt.step()
    np.testing.assert_allclose(w.data, target, atol=1e-2)


# -- the documented subclass contract -----------------------------------------------------------


def test_the_contracts_worked_example_runs(tmp_path, monkeypatch) -> None:
    """The example in minnet/optim/optimizer.py's docstring is a working optimizer."""
    import importlib
    import textwrap

    import minnet.optim.optimizer as base

    doc = base.__doc__
    start = doc.index(".. code-block:: python", doc.index("A worked example"))
    block = doc[start:].split("\n", 2)[2]
    code = textwrap.dedent(block[: block.index("\n:mod:")])
    (tmp_path / "sd_example.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sd = importlib.import_module("sd_example")
    w = Parameter(np.array([1.0, -2.0, 3.0]), "w")
    opt = sd.SD([w], lr=0.1, decay=0.5, track_stats=True, check_finite=True)
    w.grad[...] = [1.0, 0.0, -1.0]
    opt.step()
    np.testing.assert_allclose(w.data, np.array([1.0, -2.0, 3.0]) * 0.95 - 0.1 * w.grad)
    assert opt.stats.nonfinite == 0 and opt.multipliers() is None
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        sd.SD([Parameter(np.ones(2))], lr=-1)
    w.grad[0] = np.inf
    with pytest.raises(FloatingPointError, match="w has a NaN or infinite gradient"):
        opt.step()
    ours, ref = run_kernel_and_reference(sd.SD, {"decay": 0.3}, 0.1, None, 50, 3, 0.5, 0)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # The rule alone gives it 16-bit storage: bfloat16 parameters, one rounding per value.
    from minnet.dtypes import bfloat16

    h = Parameter(np.array([1.0, -2.0, 3.0], bfloat16), "h")
    opt16 = sd.SD([h], lr=0.1, decay=0.5, track_stats=True)
    h.grad[...] = np.array([1.0, 0.0, -1.0], bfloat16)
    opt16.step()
    g32 = np.array([1.0, 0.0, -1.0], np.float32)
    expected = np.array([1.0, -2.0, 3.0], np.float32) * np.float32(0.95) - np.float32(0.1) * g32
    np.testing.assert_array_equal(h.data, expected.astype(bfloat16))

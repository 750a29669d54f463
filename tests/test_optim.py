"""Adam: argument validation (PyTorch's messages), flat buffers, state, convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minnet.nn import Linear, MSELoss, Parameter, ReLU, Sequential
from minnet.optim import AMSGRAD_MAX_MODES, EPS_MODES, Adam


def one_param() -> list[Parameter]:
    return [Parameter(np.zeros(3))]


# (keyword arguments, exception type, message fragment): PyTorch's wording where it has one.
ERROR_INPUTS = [
    (dict(lr=-1e-3), ValueError, "Invalid learning rate: -0.001"),
    (dict(lr=math.nan), ValueError, "Invalid learning rate: nan"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (dict(eps=math.nan), ValueError, "Invalid epsilon value: nan"),
    (dict(betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (dict(betas=(-0.1, 0.999)), ValueError, "Invalid beta parameter at index 0: -0.1"),
    (dict(betas=(math.nan, 0.999)), ValueError, "Invalid beta parameter at index 0: nan"),
    (dict(betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1: 1.0"),
    (dict(betas=(0.9, math.nan)), ValueError, "Invalid beta parameter at index 1: nan"),
    (dict(betas=(0.9,)), TypeError, "betas must be a pair"),
    (dict(betas=0.9), TypeError, "betas must be a pair"),
    (dict(betas=(0.9, None)), TypeError, "betas[1] must be a real number"),
    (dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    (dict(weight_decay=math.nan), ValueError, "Invalid weight_decay value: nan"),
    (dict(amsgrad="yes"), TypeError, "amsgrad must be a bool"),
    (dict(eps_mode="below"), ValueError, "Invalid eps_mode: 'below'; expected one of"),
    (dict(amsgrad=True, amsgrad_max="max"), ValueError, "Invalid amsgrad_max: 'max'"),
    (dict(amsgrad_max="paper"), ValueError, "amsgrad_max='paper' needs amsgrad=True"),
    (dict(track_stats=1), TypeError, "track_stats must be a bool"),
    (dict(check_finite="no"), TypeError, "check_finite must be a bool"),
]


@pytest.mark.parametrize(
    "kwargs, exc, message", ERROR_INPUTS, ids=[str(e[0]) for e in ERROR_INPUTS]
)
def test_invalid_hyperparameters(kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc) as info:
        Adam(one_param(), **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "params, exc, message",
    [
        ([], ValueError, "optimizer got an empty parameter list"),
        (
            Parameter(np.zeros(2)),
            TypeError,
            "params argument given to the optimizer should be an iterable of Parameters or "
            "dicts, but got Parameter",
        ),
        ([np.zeros(2)], TypeError, "element 0 is ndarray"),
    ],
)
def test_invalid_params(params: object, exc: type, message: str) -> None:
    with pytest.raises(exc, match=message):
        Adam(params)


def test_duplicate_params_rejected() -> None:
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="more than once"):
        Adam([p, p])


def test_valid_edge_values_accepted() -> None:
    opt = Adam(one_param(), lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0, amsgrad=True)
    assert opt.betas == (0.0, 0.0) and opt.eps == 0.0


def test_parameters_become_views_of_one_flat_buffer_per_dtype() -> None:
    rng = np.random.default_rng(0)
    model = Sequential(Linear(5, 4, rng=rng), ReLU(), Linear(4, 3, rng=rng))
    extra = Parameter(np.arange(3.0))  # float64, so a second group
    before = [p.data.copy() for p in model.parameters()]
    opt = Adam(model.parameters() + [extra])
    assert len(opt._groups) == 2
    f32 = opt._groups[0]
    assert f32.data.size == 5 * 4 + 4 + 4 * 3 + 3
    for p, old in zip(model.parameters(), before):
        assert p.data.base is f32.data and p.grad.base is f32.grad
        np.testing.assert_array_equal(p.data, old)  # values carried over
    assert extra.data.base is opt._groups[1].data


def test_step_touches_all_parameters_and_zero_grad_clears() -> None:
    rng = np.random.default_rng(1)
    model = Sequential(Linear(5, 4, rng=rng), ReLU(), Linear(4, 3, rng=rng))
    opt = Adam(model.parameters(), lr=0.1)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    loss_fn = MSELoss()
    loss_fn(model(rng.standard_normal((8, 5))), rng.standard_normal((8, 3)))
    model.backward(loss_fn.backward())
    opt.step()
    for name, value in model.state_dict().items():
        assert not np.array_equal(value, before[name]), name
    opt.zero_grad()
    assert all(not p.grad.any() for p in model.parameters())


def test_replaced_data_array_is_detected() -> None:
    p = Parameter(np.zeros(3), name="w")
    opt = Adam([p])
    p.data = np.ones(3)
    with pytest.raises(RuntimeError, match="parameter w .data was replaced"):
        opt.step()


def test_state_dict_roundtrip_continues_identically() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))

    def make() -> tuple[Sequential, Adam]:
        model = Sequential(
            Linear(4, 6, dtype=np.float64, rng=3), ReLU(), Linear(6, 2, dtype=np.float64, rng=4)
        )
        return model, Adam(model.parameters(), lr=1e-2, amsgrad=True, weight_decay=1e-3)

    def train(model: Sequential, opt: Adam, steps: int) -> None:
        loss_fn = MSELoss()
        for _ in range(steps):
            loss_fn(model(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()

    a, opt_a = make()
    train(a, opt_a, 20)
    b, opt_b = make()
    train(b, opt_b, 10)
    sd = opt_b.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 10.0
    c, opt_c = make()
    c.load_state_dict(b.state_dict())
    opt_c.load_state_dict(sd)
    train(c, opt_c, 10)
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(c.state_dict()[name], value)


def test_load_state_dict_rejects_mismatch_and_changes_nothing() -> None:
    opt = Adam([Parameter(np.zeros(3))], amsgrad=True)
    other = Adam([Parameter(np.zeros(4))], amsgrad=True)
    other.params[0].grad[...] = 1
    other.step()
    with pytest.raises(ValueError, match=r"has shape \(4,\), expected \(3,\)"):
        opt.load_state_dict(other.state_dict())
    assert opt.step_count == 0
    with pytest.raises(ValueError, match="amsgrad=False"):
        opt.load_state_dict(Adam([Parameter(np.zeros(3))]).state_dict())


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_converges_on_a_quadratic(amsgrad: bool, dtype: type) -> None:
    # minimise sum(c * (w - target)^2) with very different curvatures c
    target = np.array([3.0, -2.0, 0.5, 10.0], dtype=dtype)
    curv = np.array([1e-2, 1.0, 1e2, 1e4], dtype=dtype)
    w = Parameter(np.zeros(4, dtype=dtype))
    opt = Adam([w], lr=0.05, amsgrad=amsgrad)
    for _ in range(3000):
        w.grad[...] = 2 * curv * (w.data - target)
        opt.step()
    np.testing.assert_allclose(w.data, target, atol=2e-2)


def test_state_dict_before_first_step_is_empty_like_pytorch() -> None:
    sd = Adam(one_param(), lr=0.01).state_dict()
    assert sd["state"] == {}
    assert sd["param_groups"][0] == {
        "lr": 0.01,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "amsgrad": False,
        "decoupled_weight_decay": False,
        "eps_mode": "outside",
        "amsgrad_max": "raw",
        "maximize": False,
        "params": [0],
    }


VARIANTS = [(m, False, "raw") for m in EPS_MODES] + [
    (m, True, a) for m in EPS_MODES for a in AMSGRAD_MAX_MODES
]


@pytest.mark.parametrize("eps_mode, amsgrad, amsgrad_max", VARIANTS)
def test_every_variant_converges_on_a_quadratic(eps_mode, amsgrad, amsgrad_max) -> None:
    target = np.array([3.0, -2.0, 0.5, 1.0])
    curv = np.array([1e-2, 1.0, 1e2, 1e4])
    w = Parameter(np.zeros(4))
    opt = Adam([w], lr=0.02, amsgrad=amsgrad, eps_mode=eps_mode, amsgrad_max=amsgrad_max)
    for _ in range(4000):
        w.grad[...] = 2 * curv * (w.data - target)
        opt.step()
    np.testing.assert_allclose(w.data, target, atol=5e-2)


def test_stats_are_recorded_only_when_asked() -> None:
    w = Parameter(np.array([1.0, 2.0, 3.0, 4.0]))
    assert Adam([w]).stats is None
    opt = Adam([w], lr=0.1, eps=1e-3, track_stats=True)
    assert opt.stats is None
    w.grad[...] = [0.0, 0.0, 1.0, 1e-5]  # two zero gradients and one tiny: eps dominates 3 of 4
    before = w.data.copy()
    opt.step()
    st = opt.stats
    assert st.step == 1 and st.n_params == 4 and st.nonfinite == 0
    assert st.eps_dominated == 0.75
    assert st.update_rms == pytest.approx(np.sqrt(np.mean((w.data - before) ** 2)), rel=1e-9)


def test_check_finite_refuses_a_nan_step_and_changes_nothing() -> None:
    model = Sequential(Linear(3, 2, dtype=np.float64, rng=0))
    opt = Adam(model.parameters(), eps=0.0, amsgrad=True, check_finite=True)
    x = np.array([[1.0, 0.0, 2.0]])  # feature 1 is zero: its weights get exactly zero gradient
    loss_fn = MSELoss()
    loss_fn(model(x), np.zeros((1, 2)))
    model.backward(loss_fn.backward())
    params = model.state_dict()
    state = opt.state_dict()
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert "step 1" in msg and "0.weight (2 of 6 elements)" in msg and "eps=0" in msg
    assert opt.step_count == 0 and opt.state_dict()["state"] == state["state"] == {}
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, params[k])
    opt.eps = 1e-8
    opt.step()  # the same step with eps > 0 goes through
    assert np.isfinite(model[0].weight.data).all()


def test_without_check_finite_eps_zero_gives_nan_like_pytorch() -> None:
    w = Parameter(np.array([1.0, 1.0]))
    opt = Adam([w], eps=0.0)
    w.grad[...] = [0.0, 1.0]
    opt.step()
    assert np.isnan(w.data[0]) and np.isfinite(w.data[1])


def test_param_groups_lr_edit_takes_effect_like_pytorch() -> None:
    def run(change_lr: bool) -> np.ndarray:
        w = Parameter(np.array([1.0, -2.0, 3.0]))
        opt = Adam([w], lr=0.5 if not change_lr else 0.01)
        for t in range(6):
            if change_lr and t == 0:
                for group in opt.param_groups:  # the PyTorch idiom for a schedule
                    group["lr"] = 0.5
            w.grad[...] = 2 * w.data
            opt.step()
        assert opt.lr == 0.5
        return w.data.copy()

    np.testing.assert_array_equal(run(True), run(False))


def test_bad_param_group_edit_is_refused_at_step_and_changes_nothing() -> None:
    w = Parameter(np.ones(3))
    opt = Adam([w], amsgrad=True)
    opt.param_groups[0]["eps"] = float("nan")
    w.grad[...] = 1.0
    with pytest.raises(ValueError, match="Invalid epsilon value: nan"):
        opt.step()
    assert opt.step_count == 0 and np.all(w.data == 1.0)
    opt.param_groups[0]["eps"] = 1e-8
    opt.param_groups[0]["amsgrad"] = False
    with pytest.raises(ValueError, match="amsgrad cannot change"):
        opt.step()


def test_hyperparameter_assignment_is_validated() -> None:
    opt = Adam(one_param(), lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        opt.lr = -1
    assert opt.lr == 0.1
    opt.eps_mode = "atan2"
    assert opt.param_groups[0]["eps_mode"] == "atan2"
    with pytest.raises(ValueError, match="amsgrad cannot change"):
        opt.amsgrad = True


def test_one_parameter_group_dict_is_accepted() -> None:
    ps = one_param()
    opt = Adam([{"params": ps, "lr": 0.25, "amsgrad": True}], lr=0.1)
    assert opt.lr == 0.25 and opt.amsgrad and opt.params == ps
    # Unknown group keys are kept, as PyTorch keeps them (schedulers store "initial_lr").
    opt = Adam([{"params": one_param(), "initial_lr": 0.5}])
    assert opt.param_groups[0]["initial_lr"] == 0.5
    assert opt.state_dict()["param_groups"][0]["initial_lr"] == 0.5

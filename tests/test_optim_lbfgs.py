"""LBFGS: what the family's tables cannot cover (it is no element rule): PyTorch's messages and
defaults, one group, the closure, the state dict's layout, check_finite and track_stats, no eps,
and convergence on optax's test problems. PyTorch parity is tests/test_sparse_adam_lbfgs_parity.py.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from minnet.nn import Linear, MSELoss, Parameter
from minnet.optim import LBFGS


def rosenbrock_closure(w: Parameter, calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    def closure() -> float:
        if calls is not None:
            calls.append(1)
        x, y = w.data
        w.grad = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        return float((1 - x) ** 2 + 100 * (y - x * x) ** 2)

    return closure


def test_defaults_and_signature_are_pytorchs() -> None:
    opt = LBFGS([Parameter(np.zeros(2))])
    assert opt.defaults == {"lr": 1, "max_iter": 20, "max_eval": 25, "tolerance_grad": 1e-7,
                            "tolerance_change": 1e-9, "history_size": 100,
                            "line_search_fn": None}  # fmt: skip
    params = inspect.signature(LBFGS).parameters
    assert list(params)[:8] == ["params", "lr", "max_iter", "max_eval", "tolerance_grad",
                                "tolerance_change", "history_size", "line_search_fn"]  # fmt: skip
    assert "foreach" not in params and "eps" not in params  # PyTorch's LBFGS has neither
    assert LBFGS([Parameter(np.zeros(2))], max_iter=8).max_eval == 10  # max_iter * 5 // 4
    assert opt.state_dict() == {"state": {}, "param_groups": [{**opt.defaults, "params": [0]}]}


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"lr": -1.0}, ValueError, "Invalid learning rate: -1.0$"),
        ({"lr": math.nan}, ValueError, "Invalid learning rate: nan$"),
        ({"max_iter": 0}, ValueError, "Invalid max_iter value: 0$"),
        ({"max_iter": 2.5}, TypeError, "max_iter must be an int"),
        ({"history_size": 0}, ValueError, "Invalid history_size value: 0$"),
        ({"tolerance_grad": -1.0}, ValueError, "Invalid tolerance_grad value: -1.0$"),
        ({"tolerance_change": math.nan}, ValueError, "Invalid tolerance_change value: nan$"),
        ({"line_search_fn": "backtracking"}, ValueError, "only 'strong_wolfe' is supported"),
        ({"eps": 1e-8}, TypeError, "LBFGS.__init__() got an unexpected keyword argument 'eps'"),
        ({"foreach": True}, TypeError, "unexpected keyword argument 'foreach'"),
    ],
)
def test_invalid_arguments(kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)")):
        LBFGS([Parameter(np.zeros(2))], **kwargs)


def test_one_group_one_dtype_and_a_closure() -> None:
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="doesn't support per-parameter options"):
        LBFGS([{"params": [p]}, {"params": [q]}])
    opt = LBFGS([p])
    with pytest.raises(ValueError, match="doesn't support per-parameter options"):
        opt.add_param_group({"params": [q]})
    with pytest.raises(ValueError, match="one dtype"):
        LBFGS([Parameter(np.zeros(2)), Parameter(np.zeros(2, np.float32))])
    with pytest.raises(TypeError, match="does not support float16"):
        LBFGS([Parameter(np.zeros(2, np.float16))])
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()


def test_no_eps_anywhere() -> None:
    w = Parameter(np.zeros(2))
    opt = LBFGS([w], track_stats=True)
    opt.step(rosenbrock_closure(w))
    assert opt.eps_compared_with() is None and opt.multipliers() is None
    assert opt.stats is not None and opt.stats.eps_dominated == 0.0


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_converges_on_rosenbrock(line_search_fn: str | None) -> None:
    w = Parameter(np.zeros(2))
    lr = 1.0 if line_search_fn else 0.1
    opt = LBFGS([w], lr=lr, line_search_fn=line_search_fn)
    closure = rosenbrock_closure(w)
    for _ in range(50 if line_search_fn else 200):
        opt.step(closure)
    np.testing.assert_allclose(w.data, [1.0, 1.0], atol=1e-4)


def test_state_dict_layout_is_pytorchs_and_max_eval_bounds_the_calls() -> None:
    w = Parameter(np.zeros(2), "w")
    b = Parameter(np.zeros(1), "b")
    opt = LBFGS([w, b], history_size=3, max_iter=10, line_search_fn="strong_wolfe")
    calls: list[int] = []
    inner = rosenbrock_closure(w, calls)

    def closure() -> float:
        b.grad = None  # a None gradient is a zero gradient
        return inner()

    loss = opt.step(closure)
    assert loss == 1.0  # the first evaluation's loss, as PyTorch
    assert len(calls) <= opt.max_eval
    sd = opt.state_dict()
    assert list(sd["state"]) == [0]  # one entry, under the first parameter
    entry = sd["state"][0]
    assert list(entry) == ["func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro",
                           "H_diag", "prev_flat_grad", "prev_loss", "al"]  # fmt: skip
    assert entry["func_evals"] == len(calls) and isinstance(entry["n_iter"], int)
    assert entry["d"].shape == (3,) and entry["d"][2] == 0.0
    assert len(entry["old_dirs"]) == len(entry["old_stps"]) == len(entry["ro"]) <= 3
    assert len(entry["al"]) == 3 and isinstance(entry["t"], float)


def test_check_finite_puts_back_parameters_and_state() -> None:
    w = Parameter(np.array([0.5, -0.5]), "w")
    opt = LBFGS([w], check_finite=True, max_iter=3)
    opt.step(rosenbrock_closure(w))
    before = (w.data.copy(), opt.state_dict())

    def bad() -> float:
        w.grad = np.array([np.inf, 1.0])
        return 1.0

    with pytest.raises(FloatingPointError, match=r"LBFGS \(check_finite=True\).*w \("):
        opt.step(bad)
    np.testing.assert_array_equal(w.data, before[0])
    after = opt.state_dict()
    assert after["state"][0]["n_iter"] == before[1]["state"][0]["n_iter"]
    np.testing.assert_array_equal(after["state"][0]["d"], before[1]["state"][0]["d"])


def test_trains_a_layer_with_loss_backward() -> None:
    """The usual closure: zero_grad, forward, loss, backward."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 3)), rng.standard_normal((32, 1))
    layer = Linear(3, 1, dtype=np.float64, rng=0)
    opt = LBFGS(layer.parameters(), line_search_fn="strong_wolfe", track_stats=True)
    loss_fn = MSELoss()

    def closure() -> float:
        opt.zero_grad()
        loss = loss_fn(layer(x), y)
        loss.backward()
        return float(loss)

    first = opt.step(closure)
    for _ in range(3):
        last = opt.step(closure)
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(32)], y, rcond=None)
    best = float(np.mean((np.c_[x, np.ones(32)] @ coef - y) ** 2))
    assert last == pytest.approx(best, rel=1e-9) and first > best
    assert opt.stats is not None and opt.stats.n_params == 4

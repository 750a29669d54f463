"""Adam and the base class: flat buffers, zero_grad, a replaced data array, a state dict of
the wrong shape, stats only when asked, lr edits as in PyTorch, validated attributes and a
single group dict.

PyTorch's messages, edge values, defaults, state dicts, eps=0's refusal and convergence for
every optimizer (Adam's variants included) are in tests/test_optim_family.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from minnet.nn import Linear, MSELoss, Parameter, ReLU, Sequential
from minnet.optim import Adam


def one_param() -> list[Parameter]:
    """One float64 parameter of 3 zeros."""
    return [Parameter(np.zeros(3))]


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
        assert np.shares_memory(p.data, f32.data) and np.shares_memory(p.grad, f32.grad)
        np.testing.assert_array_equal(p.data, old)  # values carried over
    assert np.shares_memory(extra.data, opt._groups[1].data)


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
    opt.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_replaced_data_array_is_detected() -> None:
    p = Parameter(np.zeros(3), name="w")
    opt = Adam([p])
    p.data = np.ones(3)
    with pytest.raises(RuntimeError, match="parameter w .data was replaced"):
        opt.step()


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

"""Adam(check_finite=True): a step that would make a parameter NaN or infinite raises
FloatingPointError naming the parameter(s), the element count and the step, and changes nothing;
with finite values it is bit-identical to check_finite=False (the default, PyTorch's behaviour)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_checkpoint import assert_identical

import minnet
from minnet.nn import Linear, MSELoss, Parameter, ReLU, Sequential
from minnet.optim import Adam

# eps=0 and its 0/0 are what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")

EPS_MODES = getattr(minnet.optim, "EPS_MODES", ("outside",))
AMSGRAD_MAX_MODES = getattr(minnet.optim, "AMSGRAD_MAX_MODES", ("raw",))
VARIANTS = [{"eps_mode": e, "amsgrad": False} for e in EPS_MODES] + [
    {"eps_mode": e, "amsgrad": True, "amsgrad_max": m} for e in EPS_MODES for m in AMSGRAD_MAX_MODES
]
IDS = [f"{v['eps_mode']}-{v.get('amsgrad_max', 'adam')}" for v in VARIANTS]


def make(dtype: Any = np.float64, **kwargs: Any) -> tuple[Sequential, Adam]:
    model = Sequential(Linear(4, 3, dtype=dtype, rng=0), ReLU(), Linear(3, 2, dtype=dtype, rng=1))
    return model, Adam(model.parameters(), lr=1e-2, **kwargs)


def good_step(model: Sequential, opt: Adam, seed: int) -> None:
    rng = np.random.default_rng(seed)
    loss_fn = MSELoss()
    loss_fn(model(rng.standard_normal((5, 4))), rng.standard_normal((5, 2)))
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()


def snapshot(model: Sequential, opt: Adam) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": opt.step_count,
        "grads": [p.grad.copy() for p in model.parameters()],
    }


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_nan_gradient_is_refused_and_changes_nothing(variant: dict[str, Any]) -> None:
    model, opt = make(check_finite=True, **variant)
    good_step(model, opt, 0)
    good_step(model, opt, 1)
    model[2].bias.grad[1] = np.nan
    before = snapshot(model, opt)
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert "2.bias" in msg and "0.weight" not in msg
    assert re.search(r"\b1 (element|value|of|non)", msg), msg
    assert re.search(r"step 3\b", msg), msg
    assert_identical(before, snapshot(model, opt))

    # The refused step never happened: fixing the gradient continues exactly like a run
    # that only ever saw good gradients.
    model[2].bias.grad[1] = 0.5
    opt.step()
    ref_model, ref_opt = make(**variant)
    good_step(ref_model, ref_opt, 0)
    good_step(ref_model, ref_opt, 1)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        q.grad[...] = p.grad
    ref_opt.step()
    assert_identical(snapshot(ref_model, ref_opt)["model"], snapshot(model, opt)["model"])
    assert opt.step_count == 3


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_zero_over_zero_with_eps_zero(variant: dict[str, Any]) -> None:
    """eps=0 and a coordinate that never saw a gradient: 0/0 = NaN, except for atan2, whose
    atan2(0, 0) = 0 is finite, so the step goes through."""
    w = Parameter(np.ones(4), "w")
    opt = Adam([w], lr=1e-2, eps=0.0, check_finite=True, **variant)
    w.grad[...] = [1.0, 0.0, 0.0, -1.0]
    if variant["eps_mode"] == "atan2":
        opt.step()
        assert np.isfinite(w.data).all() and opt.step_count == 1
        return
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert "w" in msg and re.search(r"\b2 (element|value|of|non)", msg) and "step 1" in msg
    np.testing.assert_array_equal(w.data, 1.0)
    assert opt.step_count == 0 and opt.state_dict()["state"] == {}
    # PyTorch's semantics without the check: the NaN goes through.
    off = Adam([Parameter(np.ones(4))], lr=1e-2, eps=0.0, **variant)
    off.params[0].grad[...] = w.grad
    off.step()
    assert np.isnan(off.params[0].data[1:3]).all()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # lr * bias correction
@pytest.mark.parametrize("dtype, big", [(np.float32, 3e38), (np.float64, 1.7e308)])
def test_overflow_from_finite_values_is_refused(dtype: type, big: float) -> None:
    """Finite parameter, finite gradient, but the update overflows the dtype."""
    w = Parameter(np.array([-big, 0.0], dtype=dtype), "layer.w")
    opt = Adam([w], lr=big, check_finite=True)
    w.grad[...] = [1.0, 1.0]
    with pytest.raises(FloatingPointError, match=r"layer\.w"):
        opt.step()
    np.testing.assert_array_equal(w.data, np.array([-big, 0.0], dtype=dtype))


def test_every_offending_parameter_is_named() -> None:
    model, opt = make(check_finite=True, amsgrad=True)
    good_step(model, opt, 0)
    model[0].weight.grad[0, :2] = np.inf
    model[2].bias.grad[:] = np.nan
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert "0.weight" in msg and "2.bias" in msg and "0.bias" not in msg and "2.weight" not in msg


def test_off_by_default_and_identical_when_finite() -> None:
    assert Adam([Parameter(np.ones(1))]).check_finite is False
    for variant in VARIANTS:
        for dtype in (np.float32, np.float64):
            runs = []
            for check in (False, True):
                model, opt = make(dtype, check_finite=check, **variant)
                for seed in range(5):
                    good_step(model, opt, seed)
                runs.append(snapshot(model, opt))
            assert_identical(runs[0], runs[1])


@settings(max_examples=40, deadline=None)
@given(
    variant=st.sampled_from(VARIANTS),
    dtype=st.sampled_from([np.float32, np.float64]),
    eps=st.sampled_from([0.0, 1e-8]),
    grads=st.lists(
        hnp.arrays(
            np.float64,
            5,
            elements=st.one_of(st.floats(-3, 3), st.sampled_from([0.0, np.nan, np.inf, -np.inf])),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_parameters_stay_finite_or_the_step_is_refused(
    variant: dict[str, Any], dtype: type, eps: float, grads: list[np.ndarray]
) -> None:
    checked = Parameter(np.linspace(-1, 1, 5).astype(dtype), "w")
    unchecked = Parameter(checked.data.copy(), "w")
    opt_c = Adam([checked], lr=0.1, eps=eps, check_finite=True, **variant)
    opt_u = Adam([unchecked], lr=0.1, eps=eps, **variant)
    for g in grads:
        before = (checked.data.copy(), opt_c.state_dict())
        checked.grad[...] = g
        try:
            opt_c.step()
        except FloatingPointError as exc:
            assert "w" in str(exc)
            assert_identical(before, (checked.data.copy(), opt_c.state_dict()))
            continue
        assert np.isfinite(checked.data).all()
        # An accepted step is exactly the unchecked optimizer's step from the same state.
        unchecked.data[...] = before[0]
        opt_u.load_state_dict(before[1])
        unchecked.grad[...] = g
        opt_u.step()
        np.testing.assert_array_equal(checked.data, unchecked.data)


FAMILY_DEFAULTS = sorted(
    name for name in minnet.optim.__all__
    if isinstance(getattr(minnet.optim, name), type)
    and issubclass(getattr(minnet.optim, name), minnet.optim.Optimizer)
    and name not in ("Optimizer", "Muon")  # Muon takes 2-D parameters only: tests/test_muon.py
    # LBFGS (closure-based, no rule nor shaped update) has its own tests
    and (getattr(minnet.optim, name).rule, getattr(minnet.optim, name).shaped) != (None, None)
)  # fmt: skip


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("name", FAMILY_DEFAULTS)
def test_every_optimizer_refuses_a_nonfinite_gradient(name: str, bad: float) -> None:
    """Parameters *and* state stay bit-identical: Lion's sign of an infinite gradient is finite,
    but its momentum would become infinite and move that coordinate by -lr for ever. SignSGD
    has no state and steps by ``-lr * sign(g)``: an infinite gradient makes nothing non-finite
    (optax's sign_sgd steps by lr too), so check_finite lets that step through."""
    model = Sequential(Linear(4, 3, rng=0), ReLU(), Linear(3, 2, rng=1))
    opt = getattr(minnet.optim, name)(model.parameters(), check_finite=True)
    good_step(model, opt, 0)
    model[0].weight.grad[1, 2] = bad
    before = snapshot(model, opt)
    if name == "SignSGD" and np.isinf(bad):
        w = model[0].weight.data[1, 2]
        opt.step()
        step = np.float32(np.sign(bad)) * np.float32(-opt.param_groups[0]["lr"])
        assert model[0].weight.data[1, 2] == w + step  # float32 parameters
        return
    with pytest.raises(FloatingPointError, match="0.weight has a NaN or infinite gradient"):
        opt.step()
    assert_identical(snapshot(model, opt), before)


def test_a_nonfinite_state_alone_is_refused() -> None:
    """Lion with an infinite gradient: the parameter's update stays finite, the momentum does
    not; check_finite refuses the step all the same."""
    w = Parameter(np.array([1.0, 2.0]), "w")
    opt = minnet.optim.Lion([w], lr=0.1, check_finite=True)
    w.grad[...] = [np.inf, 1.0]
    with pytest.raises(FloatingPointError, match=r"w \(1 of 2 elements\)"):
        opt.step()
    np.testing.assert_array_equal(w.data, [1.0, 2.0])
    np.testing.assert_array_equal(opt._flats[0][0].state["exp_avg"], [0.0, 0.0])

"""Frozen parameters (``requires_grad`` false) are skipped by every optimizer, as in PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import minnet
from minnet.nn import Linear, Parameter, ReLU, Sequential

# Options under which a zero gradient still moves a parameter (decay, momentum), so that a
# frozen parameter that was not skipped would visibly change.
CASES = [
    ("Adam", {"lr": 1e-2, "weight_decay": 0.1}),
    ("AdamW", {"lr": 1e-2}),
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 1e-2, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 1e-2, "weight_decay": 0.1}),
    ("Lion", {"lr": 1e-2, "weight_decay": 0.1}),
]


def make(seed: int = 0) -> tuple[Sequential, np.ndarray, np.ndarray]:
    model = Sequential(Linear(6, 5, rng=seed), ReLU(), Linear(5, 3, rng=seed + 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 6), dtype=np.float32)
    y = rng.standard_normal((8, 3), dtype=np.float32)
    return model, x, y


def train(model: Sequential, opt: minnet.optim.Optimizer, x, y, steps: int) -> None:
    loss_fn = minnet.nn.MSELoss()
    for _ in range(steps):
        loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_frozen_layer_never_moves_and_the_rest_trains_as_alone(name: str, kwargs: dict) -> None:
    model, x, y = make()
    model[0].requires_grad_(False)
    frozen = [p.data.copy() for p in model[0].parameters()]
    opt = getattr(minnet.optim, name)(model.parameters(), track_stats=True, **kwargs)
    train(model, opt, x, y, 5)
    for p, before in zip(model[0].parameters(), frozen):
        np.testing.assert_array_equal(p.data, before)
    state = opt.state_dict()["state"]
    assert 0 not in state and 1 not in state  # the frozen layer never stepped: no state
    assert state[2]["step"] == 5.0
    assert opt.stats.n_params == model[2].weight.data.size + model[2].bias.data.size

    # The trainable layer follows the same path as an optimizer that only has it.
    ref, _, _ = make()
    ref[0].requires_grad_(False)
    ref_opt = getattr(minnet.optim, name)(ref[2].parameters(), **kwargs)
    train(ref, ref_opt, x, y, 5)
    for a, b in zip(model[2].parameters(), ref[2].parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_unfreezing_resumes_training() -> None:
    model, x, y = make()
    model[0].requires_grad_(False)
    opt = minnet.optim.Adam(model.parameters(), lr=1e-2)
    train(model, opt, x, y, 2)
    before = model[0].weight.data.copy()
    model[0].requires_grad_(True)
    train(model, opt, x, y, 2)
    assert not np.array_equal(model[0].weight.data, before)


def test_frozen_middle_parameter_splits_the_buffer_into_runs() -> None:
    ps = [Parameter(np.ones(3)), Parameter(np.ones(4)), Parameter(np.ones(2))]
    ps[1].requires_grad = False
    opt = minnet.optim.SGD(ps, lr=0.5)
    for p in ps:
        p.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(ps[0].data, 0.5)
    np.testing.assert_array_equal(ps[1].data, 1.0)
    np.testing.assert_array_equal(ps[2].data, 0.5)

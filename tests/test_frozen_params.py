"""Frozen parameters (``requires_grad_(False)``) get no gradient and no optimizer update, as in
PyTorch, where their ``.grad`` stays ``None`` and every optimizer skips them."""

from __future__ import annotations

import numpy as np
import pytest

import minnet
from minnet import nn


def _frozen_after_training(optimizer: str, **kwargs: float) -> tuple[nn.Module, list, list]:
    """Train a few steps with every parameter, freeze the first layer, train on; return the
    model and the first layer's values at the moment it was frozen and at the end."""
    model = nn.Sequential(nn.Linear(4, 8, dtype=np.float64, rng=0), nn.Tanh(),
                          nn.Linear(8, 3, dtype=np.float64, rng=1))  # fmt: skip
    opt = getattr(minnet.optim, optimizer)(model.parameters(), lr=0.1, **kwargs)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 3))
    loss_fn = nn.MSELoss()

    def step() -> None:
        loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()

    for _ in range(3):
        step()
    model[0].requires_grad_(False)
    frozen = [p.data.copy() for p in model[0].parameters()]
    head = [p.data.copy() for p in model[2].parameters()]
    for _ in range(3):
        step()
    assert all(p.grad is None for p in model[0].parameters())  # no gradient reaches them
    assert not all(np.array_equal(p.data, h) for p, h in zip(model[2].parameters(), head))
    return model, frozen, [p.data for p in model[0].parameters()]


@pytest.mark.parametrize(
    "optimizer, kwargs",
    [
        ("Adam", {}),  # the first moment built before freezing keeps moving it
        ("Adam", {"weight_decay": 0.1}),
        ("AdamW", {}),  # decoupled decay shrinks it
        ("SGD", {"momentum": 0.9}),
    ],
)
def test_optimizer_skips_frozen_parameters(optimizer: str, kwargs: dict) -> None:
    _, before, after = _frozen_after_training(optimizer, **kwargs)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # eps=0 on purpose
def test_frozen_from_the_start_with_eps_zero_stays_finite() -> None:
    model = nn.Sequential(nn.Linear(4, 3, dtype=np.float64, rng=0))
    model[0].bias.requires_grad = False
    bias = model[0].bias.data.copy()
    opt = minnet.optim.Adam(model.parameters(), lr=0.1, eps=0.0)
    loss_fn = nn.MSELoss()
    loss_fn(model(np.ones((2, 4))), np.zeros((2, 3)))
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
    np.testing.assert_array_equal(model[0].bias.data, bias)


def test_optimizer_given_only_the_trainable_parameters_leaves_frozen_ones_alone() -> None:
    """PyTorch's other way: give the optimizer only the trainable parameters."""
    model = nn.Sequential(nn.Linear(4, 8, dtype=np.float64, rng=0), nn.Tanh(),
                          nn.Linear(8, 3, dtype=np.float64, rng=1))  # fmt: skip
    model[0].requires_grad_(False)
    frozen = [p.data.copy() for p in model[0].parameters()]
    head = [p.data.copy() for p in model[2].parameters()]
    opt = minnet.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1, eps=0.0,
                            weight_decay=0.1)  # fmt: skip
    loss_fn = nn.MSELoss()
    for _ in range(3):
        loss_fn(model(np.ones((2, 4))), np.zeros((2, 3)))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    for p, b in zip(model[0].parameters(), frozen):
        np.testing.assert_array_equal(p.data, b)
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    assert not any(np.array_equal(p.data, h) for p, h in zip(model[2].parameters(), head))

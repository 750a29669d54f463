"""Finite-difference checks of every hand-written backward pass, in float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from minnet.nn import Linear, Module, MSELoss, ReLU, Sequential


def numeric_grad(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of scalar ``f()`` with respect to array ``x`` (perturbed in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def check_module(module: Module, x: np.ndarray, seed: int = 0) -> None:
    """Loss = sum(out * R) for a fixed random R: dLoss/dout = R. Check input and parameter grads."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(module(x).shape)

    def loss() -> float:
        return float(np.sum(module(x) * r))

    module.zero_grad()
    module(x)
    # A Sequential returns the input gradient on request only (as PyTorch computes none for an
    # input that does not require grad); a single layer always returns it.
    if isinstance(module, Sequential):
        dx = module.backward(r, input_grad=True)
    else:
        dx = module.backward(r)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(
            p.grad, numeric_grad(loss, p.data), rtol=1e-6, atol=1e-8, err_msg=name
        )


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal samples pushed at least 0.05 from 0, so ReLU's kink is never inside a difference."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + 0.05, x - 0.05)


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias: bool) -> None:
    rng = np.random.default_rng(1)
    layer = Linear(7, 4, bias=bias, dtype=np.float64, rng=rng)
    check_module(layer, rng.standard_normal((5, 7)))


def test_relu() -> None:
    rng = np.random.default_rng(2)
    check_module(ReLU(), away_from_zero(rng, (6, 9)))


def test_sequential_three_linear_layers() -> None:
    rng = np.random.default_rng(3)
    model = Sequential(
        Linear(6, 8, dtype=np.float64, rng=rng),
        ReLU(),
        Linear(8, 5, dtype=np.float64, rng=rng),
        ReLU(),
        Linear(5, 3, bias=False, dtype=np.float64, rng=rng),
    )
    check_module(model, rng.standard_normal((4, 6)))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_loss(reduction: str) -> None:
    rng = np.random.default_rng(4)
    y_pred, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    loss_fn = MSELoss(reduction=reduction)
    loss = loss_fn(y_pred, y)
    expected = np.sum((y_pred - y) ** 2) / (y.size if reduction == "mean" else 1)
    assert loss.item() == pytest.approx(expected, rel=1e-14)
    analytic = loss_fn.backward()
    numeric = numeric_grad(lambda: float(loss_fn(y_pred, y)), y_pred)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_backward_accumulates_parameter_grads() -> None:
    rng = np.random.default_rng(5)
    layer = Linear(3, 2, dtype=np.float64, rng=rng)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer(x)  # a second backward needs its own forward (the first backward freed the input)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once[0], rtol=1e-15)
    np.testing.assert_allclose(layer.bias.grad, 2 * once[1], rtol=1e-15)
    layer.zero_grad(set_to_none=False)
    assert not layer.weight.grad.any() and not layer.bias.grad.any()
    layer.zero_grad()  # PyTorch's default: no gradient until the next backward writes one
    assert layer.weight.grad is None and layer.bias.grad is None
    layer(x)
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, once[0])
    np.testing.assert_array_equal(layer.bias.grad, once[1])

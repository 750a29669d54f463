"""Finite-difference checks (float64) of every activation, Flatten, Dropout and loss, and their
error messages."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from minnet import nn

RNG = np.random.default_rng(1234)


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f`` at ``x``."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f(x)
        flat[i] = old - h
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


ACTIVATIONS = [
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    lambda: nn.GELU(approximate="tanh"),
    nn.LeakyReLU,
    lambda: nn.LeakyReLU(0.2),
    nn.Softmax,
    lambda: nn.Softmax(dim=0),
    nn.LogSoftmax,
    lambda: nn.LogSoftmax(dim=1),
    nn.Flatten,
    lambda: nn.Flatten(0, 1),
]


@pytest.mark.parametrize("make", ACTIVATIONS)
def test_activation_backward_matches_finite_differences(make: Callable[[], nn.Module]) -> None:
    layer = make()
    x = RNG.standard_normal((3, 4, 2)) * 2
    y = layer(x.copy())
    g = RNG.standard_normal(y.shape)
    dx = layer.backward(g)
    num = numeric_grad(lambda z: float((layer(z) * g).sum()), x.copy())
    assert dx.shape == x.shape and dx.dtype == np.float64
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def test_activation_formulas() -> None:
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(nn.Sigmoid()(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    np.testing.assert_allclose(nn.LeakyReLU(0.1)(x), np.where(x > 0, x, 0.1 * x), rtol=0)
    from math import erf

    ref = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in x])
    np.testing.assert_allclose(nn.GELU()(x), ref, rtol=1e-15, atol=1e-300)
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
    np.testing.assert_allclose(nn.GELU("tanh")(x), 0.5 * x * (1 + np.tanh(u)), rtol=1e-15)
    big = np.array([[1e4, 0.0, -1e4]])
    assert np.isfinite(nn.LogSoftmax()(big)).all()
    np.testing.assert_allclose(nn.Softmax()(big), [[1.0, 0.0, 0.0]])
    assert nn.Sigmoid()(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]


def test_float32_stays_float32() -> None:
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    for make in ACTIVATIONS:
        layer = make()
        y = layer(x)
        assert y.dtype == np.float32, layer
        assert layer.backward(np.ones_like(y)).dtype == np.float32, layer


def test_flatten_shapes() -> None:
    x = np.zeros((2, 3, 4, 5))
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Flatten(2)(x).shape == (2, 3, 20)
    with pytest.raises(IndexError, match=r"Flatten: Dimension out of range"):
        nn.Flatten()(np.zeros(3))


def test_dropout_training_and_eval() -> None:
    x = np.ones((200, 50))
    drop = nn.Dropout(p=0.2, rng=0)
    y = drop(x)
    kept = y != 0
    assert set(np.unique(y)) == {0.0, 1 / 0.8}
    assert abs(kept.mean() - 0.8) < 0.01
    g = RNG.standard_normal(x.shape)
    np.testing.assert_array_equal(drop.backward(g), g * y)  # x = 1: y is the mask / (1 - p)
    # same seed -> same masks; a Generator is used as it is
    np.testing.assert_array_equal(nn.Dropout(0.2, rng=0)(x), y)
    gen = np.random.default_rng(0)
    np.testing.assert_array_equal(nn.Dropout(0.2, rng=gen)(x), y)
    drop.eval()
    assert not drop.training
    out = drop(x)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(drop.backward(g), g)
    drop.train()
    assert not np.array_equal(drop(x), x)
    assert not nn.Dropout(1.0)(x).any()
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_dropout_rejects_bad_p(p: float) -> None:
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got"):
        nn.Dropout(p)


def test_activation_argument_errors() -> None:
    with pytest.raises(ValueError, match="approximate argument must be either none or tanh"):
        nn.GELU("erf")
    with pytest.raises(IndexError, match=r"Softmax: Dimension out of range .*\[-2, 1\].* 2"):
        nn.Softmax(dim=2)(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="Tanh: input has dtype int64"):
        nn.Tanh()(np.zeros(3, np.int64))


# ------------------------------------------------------------------------------------ losses

CE_CONFIGS = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(weight=np.array([0.5, 2.0, 1.0, 3.0])),
    dict(weight=np.array([0.5, 2.0, 1.0, 3.0]), reduction="none"),
    dict(ignore_index=2),
    dict(ignore_index=1, weight=np.array([0.5, 2.0, 1.0, 3.0]), label_smoothing=0.2),
    dict(label_smoothing=0.1),
    dict(label_smoothing=0.3, reduction="sum", weight=np.array([1.0, 2.0, 3.0, 4.0])),
    dict(label_smoothing=0.1, reduction="none", ignore_index=0),
]


def _check_loss_fd(loss_fn: nn.Module, x: np.ndarray, target: np.ndarray) -> None:
    out = loss_fn(x.copy(), target)
    g = RNG.standard_normal(np.shape(out)) if loss_fn.reduction == "none" else 1.7
    dx = loss_fn.backward(g if loss_fn.reduction == "none" else np.float64(g))
    num = numeric_grad(lambda z: float((loss_fn(z, target) * g).sum()), x.copy())
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kwargs", CE_CONFIGS, ids=lambda k: ",".join(k) or "default")
def test_cross_entropy_indices_finite_differences(kwargs: dict) -> None:
    x = RNG.standard_normal((6, 4)) * 3
    t = np.array([0, 1, 2, 3, 1, 2])
    _check_loss_fd(nn.CrossEntropyLoss(**kwargs), x, t)


@pytest.mark.parametrize("kwargs", [k for k in CE_CONFIGS if "ignore_index" not in k])
def test_cross_entropy_probabilities_and_nd_finite_differences(kwargs: dict) -> None:
    x = RNG.standard_normal((3, 4, 2)) * 2  # (N, C, d1)
    p = RNG.random((3, 4, 2))
    _check_loss_fd(nn.CrossEntropyLoss(**kwargs), x, p / p.sum(axis=1, keepdims=True))
    _check_loss_fd(nn.CrossEntropyLoss(**kwargs), x, np.array([[0, 3], [1, 1], [2, 0]]))


def test_cross_entropy_formula_and_weighted_mean() -> None:
    x = RNG.standard_normal((5, 3))
    t = np.array([0, 2, 1, -100, 2])
    w = np.array([1.0, 2.0, 0.5])
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    keep = t != -100
    nll = -logp[np.arange(5)[keep], t[keep]] * w[t[keep]]
    got = nn.CrossEntropyLoss(weight=w)(x, t)
    np.testing.assert_allclose(got, nll.sum() / w[t[keep]].sum(), rtol=1e-14)
    eps = 0.2
    smooth = -(logp[keep] * w).sum(1)
    ref = ((1 - eps) * nll.sum() + eps / 3 * smooth.sum()) / w[t[keep]].sum()
    got = nn.CrossEntropyLoss(weight=w, label_smoothing=eps)(x, t)
    np.testing.assert_allclose(got, ref, rtol=1e-14)
    none = nn.CrossEntropyLoss(reduction="none")(x, t)
    assert none.shape == (5,) and none[3] == 0.0
    # large logits stay finite
    big = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]])
    ce = nn.CrossEntropyLoss()
    val = ce(big, np.array([1, 0]))
    np.testing.assert_allclose(val, (2e4 + 1e4 + np.log(2)) / 2, rtol=1e-12)
    assert np.isfinite(ce.backward()).all()
    assert np.isnan(nn.CrossEntropyLoss()(x[:1], np.array([-100])))  # 0 / 0, as PyTorch


def test_cross_entropy_errors() -> None:
    ce = nn.CrossEntropyLoss()
    with pytest.raises(IndexError, match="CrossEntropyLoss: Target 3 is out of bounds"):
        ce(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"target shape \(3,\) does not match input shape"):
        ce(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="must hold integer class indices"):
        ce(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(RuntimeError, match="weight tensor should be defined either for all 3"):
        nn.CrossEntropyLoss(weight=np.ones(4))(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0. Got: 1.5"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="is not a valid value for reduction"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="backward called before the loss was computed"):
        nn.CrossEntropyLoss().backward()


BCE_CONFIGS = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(pos_weight=np.array([1.0, 3.0, 0.5])),
    dict(weight=np.array([2.0, 1.0, 0.5]), pos_weight=np.array([1.0, 3.0, 0.5])),
    dict(weight=np.array([[2.0], [1.0], [0.5], [1.5]]), reduction="none"),
]


@pytest.mark.parametrize("kwargs", BCE_CONFIGS, ids=lambda k: ",".join(k) or "default")
def test_bce_with_logits_finite_differences(kwargs: dict) -> None:
    x = RNG.standard_normal((4, 3)) * 3
    t = RNG.random((4, 3))
    _check_loss_fd(nn.BCEWithLogitsLoss(**kwargs), x, t)


def test_bce_with_logits_formula_and_stability() -> None:
    x = np.array([[-50.0, -1.0, 0.0, 2.0, 800.0]])
    t = np.array([[0.0, 1.0, 0.5, 1.0, 0.0]])
    s = 1 / (1 + np.exp(-np.clip(x, -30, 30)))
    naive = -(t * np.log(s) + (1 - t) * np.log1p(-s))
    got = nn.BCEWithLogitsLoss(reduction="none")(x, t)
    np.testing.assert_allclose(got[:, 1:4], naive[:, 1:4], rtol=1e-12)
    assert got[0, 4] == 800.0 and np.isfinite(got).all()
    with pytest.raises(ValueError, match=r"Target size \(\(2,\)\) must be the same as input"):
        nn.BCEWithLogitsLoss()(np.zeros(3), np.zeros(2))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_mse_loss_finite_differences(reduction: str) -> None:
    x, y = RNG.standard_normal((3, 2)), RNG.standard_normal((3, 2))
    _check_loss_fd(nn.MSELoss(reduction), x, y)

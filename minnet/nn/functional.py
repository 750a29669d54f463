"""``minnet.nn.functional``: PyTorch's functional forms of the layers and losses.

Each function runs the layer (or loss) it names on a fresh instance, so it computes exactly what
the module computes; outside :class:`~minnet.no_grad` the call is recorded like a module call
(see :mod:`minnet.nn.graph`), so ``loss.backward()`` runs through it. A function has no handle a
hand-written ``Module.backward`` could call: a module that backpropagates by hand uses the
modules (``nn.ReLU()``, ...) instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minnet.nn.activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from minnet.nn.attention import scaled_dot_product_attention
from minnet.nn.dropout import Dropout
from minnet.nn.linear import Linear
from minnet.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from minnet.nn.parameter import Parameter

__all__ = [
    "linear", "relu", "gelu", "tanh", "sigmoid", "leaky_relu", "softmax", "log_softmax",
    "dropout", "mse_loss", "cross_entropy", "binary_cross_entropy_with_logits",
    "scaled_dot_product_attention",
]  # fmt: skip


def _param(value: Any, what: str) -> Parameter:
    if isinstance(value, Parameter):
        return value
    arr = np.asarray(value)
    if type(arr) is not np.ndarray:
        arr = arr.view(np.ndarray)
    return Parameter(arr, what)


def linear(input: np.ndarray, weight: Any, bias: Any = None) -> np.ndarray:
    """``input @ weight.T + bias``; ``weight`` ``(out, in)``. Gradients go into ``weight.grad``
    and ``bias.grad`` when they are :class:`~minnet.nn.Parameter` objects."""
    layer = Linear._from_parameters(
        _param(weight, "weight"), None if bias is None else _param(bias, "bias")
    )
    return layer(input)


def relu(input: np.ndarray, inplace: bool = False) -> np.ndarray:
    """``max(x, 0)`` (``inplace`` is accepted; minnet never overwrites the input)."""
    return ReLU(inplace)(input)


def gelu(input: np.ndarray, approximate: str = "none") -> np.ndarray:
    """GELU, exact (``"none"``) or ``"tanh"`` (see :class:`~minnet.nn.GELU`)."""
    return GELU(approximate)(input)


def tanh(input: np.ndarray) -> np.ndarray:
    """``tanh(x)``."""
    return Tanh()(input)


def sigmoid(input: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``, stable."""
    return Sigmoid()(input)


def leaky_relu(input: np.ndarray, negative_slope: float = 0.01, inplace: bool = False) -> Any:
    """``x if x > 0 else negative_slope * x``."""
    return LeakyReLU(negative_slope)(input)


def softmax(input: np.ndarray, dim: int = -1) -> np.ndarray:
    """Softmax along ``dim`` (PyTorch requires ``dim``; minnet's default is the last one)."""
    return Softmax(dim)(input)


def log_softmax(input: np.ndarray, dim: int = -1) -> np.ndarray:
    """Log-softmax along ``dim``."""
    return LogSoftmax(dim)(input)


def dropout(input: np.ndarray, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
    """Zero elements with probability ``p`` and scale by ``1 / (1 - p)`` when ``training``
    (PyTorch's default is ``training=True`` for the function); the input otherwise. Masks come
    from minnet's default generator."""
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"dropout: training must be a bool, got {training!r}")
    layer = Dropout(p)
    layer.training = bool(training)
    return layer(input)


def mse_loss(input: np.ndarray, target: np.ndarray, reduction: str = "mean") -> Any:
    """:class:`~minnet.nn.MSELoss` of ``input`` and ``target``."""
    return MSELoss(reduction)(input, target)


def cross_entropy(
    input: np.ndarray,
    target: np.ndarray,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Any:
    """:class:`~minnet.nn.CrossEntropyLoss` of logits ``input`` and ``target``."""
    return CrossEntropyLoss(weight, ignore_index, reduction, label_smoothing)(input, target)


def binary_cross_entropy_with_logits(
    input: np.ndarray,
    target: np.ndarray,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> Any:
    """:class:`~minnet.nn.BCEWithLogitsLoss` of logits ``input`` and ``target``."""
    return BCEWithLogitsLoss(weight, reduction, pos_weight)(input, target)

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
from minnet.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from minnet.nn.module import Module
from minnet.nn.normalization import GroupNorm, LayerNorm, RMSNorm, _BatchNorm
from minnet.nn.parameter import Parameter
from minnet.nn.sparse import Embedding

__all__ = [
    "linear", "relu", "gelu", "tanh", "sigmoid", "leaky_relu", "softmax", "log_softmax",
    "dropout", "mse_loss", "cross_entropy", "binary_cross_entropy_with_logits", "nll_loss",
    "binary_cross_entropy", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div", "layer_norm",
    "rms_norm", "group_norm", "batch_norm", "embedding",
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


def nll_loss(
    input: np.ndarray,
    target: np.ndarray,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Any:
    """:class:`~minnet.nn.NLLLoss` of log-probabilities ``input`` and class indices ``target``."""
    return NLLLoss(weight, ignore_index, reduction)(input, target)


def binary_cross_entropy(
    input: np.ndarray, target: np.ndarray, weight: Any = None, reduction: str = "mean"
) -> Any:
    """:class:`~minnet.nn.BCELoss` of probabilities ``input`` and ``target`` (logs clamped at
    -100, the gradient's ``x * (1 - x)`` floored at 1e-12, as PyTorch)."""
    return BCELoss(weight, reduction)(input, target)


def l1_loss(input: np.ndarray, target: np.ndarray, reduction: str = "mean") -> Any:
    """:class:`~minnet.nn.L1Loss` of ``input`` and ``target``."""
    return L1Loss(reduction)(input, target)


def smooth_l1_loss(
    input: np.ndarray, target: np.ndarray, reduction: str = "mean", beta: float = 1.0
) -> Any:
    """:class:`~minnet.nn.SmoothL1Loss` of ``input`` and ``target``."""
    return SmoothL1Loss(reduction, beta)(input, target)


def huber_loss(
    input: np.ndarray, target: np.ndarray, reduction: str = "mean", delta: float = 1.0
) -> Any:
    """:class:`~minnet.nn.HuberLoss` of ``input`` and ``target``."""
    return HuberLoss(reduction, delta)(input, target)


def kl_div(
    input: np.ndarray, target: np.ndarray, reduction: str = "mean", log_target: bool = False
) -> Any:
    """:class:`~minnet.nn.KLDivLoss` of log-probabilities ``input`` and ``target``."""
    return KLDivLoss(reduction, log_target)(input, target)


def _norm_dtype(input: Any, *params: Any) -> Any:
    """The dtype a functional normalization computes in: the first parameter's, else the
    input's (a float), else float32."""
    for p in params:
        if p is not None:
            return (p.data if isinstance(p, Parameter) else np.asarray(p)).dtype
    dt = getattr(input, "dtype", None)
    return dt if dt is not None and dt.kind == "f" else np.float32


def _attach(module: Module, **params: Any) -> Module:
    """Give ``module`` the caller's parameters (not registered: the caller owns them)."""
    for name, value in params.items():
        object.__setattr__(module, name, None if value is None else _param(value, name))
    return module


def layer_norm(
    input: np.ndarray,
    normalized_shape: Any,
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
) -> np.ndarray:
    """:class:`~minnet.nn.LayerNorm` over the trailing ``normalized_shape`` with the given
    ``weight`` and ``bias`` (either may be ``None``); gradients go into their ``.grad`` when
    they are :class:`~minnet.nn.Parameter` objects."""
    m = LayerNorm(normalized_shape, eps, False, dtype=_norm_dtype(input, weight, bias))
    return _attach(m, weight=weight, bias=bias)(input)


def rms_norm(
    input: np.ndarray, normalized_shape: Any, weight: Any = None, eps: float | None = None
) -> np.ndarray:
    """:class:`~minnet.nn.RMSNorm` over the trailing ``normalized_shape`` (``eps=None``: the
    machine epsilon of the computation dtype, as the module)."""
    m = RMSNorm(normalized_shape, eps, False, dtype=_norm_dtype(input, weight))
    return _attach(m, weight=weight)(input)


def group_norm(
    input: np.ndarray,
    num_groups: int,
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
) -> np.ndarray:
    """:class:`~minnet.nn.GroupNorm` of ``input`` ``(N, C, *)`` with ``num_groups`` groups."""
    c = np.shape(input)[1] if np.ndim(input) >= 2 else 0
    m = GroupNorm(num_groups, max(c, num_groups), eps, False,
                  dtype=_norm_dtype(input, weight, bias))  # fmt: skip
    return _attach(m, weight=weight, bias=bias)(input)


class _FunctionalBatchNorm(_BatchNorm):
    _ndims = (2, 3, 4, 5)


def batch_norm(
    input: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> np.ndarray:
    """Batch normalization as :class:`~minnet.nn.BatchNorm2d` computes it, over channel
    dimension 1 of an ``(N, C, *)`` input: batch statistics when ``training`` (updating
    ``running_mean`` and ``running_var`` in place when given, PyTorch's unbiased variance),
    the running statistics otherwise (required then, as PyTorch)."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: pass both running_mean and running_var, or neither")
    if running_mean is None and not training:
        raise ValueError("batch_norm: running_mean and running_var are required when not training")
    c = np.shape(input)[1] if np.ndim(input) >= 2 else 1
    m = _FunctionalBatchNorm(c, eps, momentum, False, running_mean is not None,
                             dtype=_norm_dtype(input, weight, bias))  # fmt: skip
    if running_mean is not None:
        for name, arr in (("running_mean", running_mean), ("running_var", running_var)):
            if not isinstance(arr, np.ndarray) or arr.shape != (c,):
                raise ValueError(f"batch_norm: {name} must be an array of shape ({c},)")
            m.register_buffer(name, arr)
    m.training = bool(training)
    return _attach(m, weight=weight, bias=bias)(input)


def embedding(input: np.ndarray, weight: Any, padding_idx: int | None = None) -> np.ndarray:
    """``weight[input]`` (:class:`~minnet.nn.Embedding`'s lookup); the gradient goes into
    ``weight.grad`` (not at ``padding_idx``) when ``weight`` is a :class:`~minnet.nn.Parameter`."""
    w = _param(weight, "weight")
    if w.data.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D, got shape {w.data.shape}")
    m = Embedding(w.data.shape[0], w.data.shape[1], padding_idx, dtype=w.data.dtype,
                  _weight=np.zeros(w.data.shape, w.data.dtype))  # fmt: skip
    object.__setattr__(m, "weight", w)
    return m(input)

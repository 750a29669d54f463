"""Layers and losses with hand-written forward and backward passes on NumPy arrays.

Every module follows one contract (as micrograd's ``_backward`` closures, made explicit):

* ``forward(x)`` returns a new ``np.ndarray`` and keeps what ``backward`` needs; ``module(x)``
  outside ``no_grad`` moves that into a recorded call and returns an :class:`Output` (an array
  that knows the call), so ``loss.backward()`` works as in PyTorch (:mod:`minnet.nn.graph`);
* ``backward(grad_out)`` takes dLoss/d(output) and returns dLoss/d(input), and *adds* the
  parameter gradients into each ``Parameter.grad`` (call ``zero_grad()`` between steps).

Shapes follow PyTorch: ``Linear`` maps ``(*, in_features) -> (*, out_features)`` with a weight of
shape ``(out_features, in_features)``. Inputs must be real floating-point arrays; a float array of
another precision is cast to the layer's dtype (so float64 data can feed a float32 model).
"""

# torch.nn.functional, torch.nn.init, torch.nn.utils (clip_grad_norm_, clip_grad_value_)
from minnet.nn import functional, init, utils  # noqa: F401
from minnet.nn.activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from minnet.nn.attention import MultiheadAttention, ScaledDotProductAttention
from minnet.nn.container import Identity, ModuleDict, ModuleList, Sequential
from minnet.nn.conv import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d
from minnet.nn.dropout import Dropout
from minnet.nn.flatten import Flatten
from minnet.nn.grad_mode import is_grad_enabled, no_grad
from minnet.nn.graph import Output
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
from minnet.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RMSNorm
from minnet.nn.parameter import Parameter
from minnet.nn.sparse import Embedding

__all__ = [
    "Parameter",
    "Module",
    "Linear",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "ScaledDotProductAttention",
    "MultiheadAttention",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "GELU",
    "LeakyReLU",
    "Softmax",
    "LogSoftmax",
    "Dropout",
    "Flatten",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "Identity",
    "Output",
    "MSELoss",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "NLLLoss",
    "BCELoss",
    "L1Loss",
    "SmoothL1Loss",
    "HuberLoss",
    "KLDivLoss",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "Embedding",
    "no_grad",
    "is_grad_enabled",
]

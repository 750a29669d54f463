"""Normalization layers: LayerNorm, RMSNorm, GroupNorm, BatchNorm1d and BatchNorm2d.

Every one divides by ``sqrt(statistic + eps)``; the eps is inside the square root in all of
them, in PyTorch, Keras and flax alike, but the defaults differ (the table in the README):

============  =============  ===============  =================  =================================
layer         PyTorch eps    Keras epsilon    flax epsilon       where it sits
============  =============  ===============  =================  =================================
LayerNorm     1e-5           1e-3             1e-6               ``(x - mean) / sqrt(var + eps)``
RMSNorm       None (machine  1e-6             1e-6               ``x / sqrt(mean(x**2) + eps)``
              eps, below)
GroupNorm     1e-5           1e-3             1e-6               ``(x - mean) / sqrt(var + eps)``
BatchNorm     1e-5           1e-3             1e-5               ``(x - mean) / sqrt(var + eps)``
============  =============  ===============  =================  =================================

``var`` is always the biased variance (divided by the element count) in the normalization.
BatchNorm's running variance is the *unbiased* one in PyTorch (``* n / (n - 1)``), the biased one
in Keras and flax; and its momentum is the weight of the *new* batch in PyTorch (0.1) but of
the *old* average in Keras and flax (0.99): ``running = (1 - momentum) * running + momentum *
batch`` (PyTorch) against ``running = momentum * running + (1 - momentum) * batch`` (Keras,
flax). A port from Keras must pass ``eps=1e-3, momentum=0.01`` to get Keras's behaviour.

Precision: the layer's parameters have the layer's ``dtype`` (float32 by default); an input of
another float precision is cast to it (as ``Linear``). float16 and bfloat16 layers compute in
float32 (statistics, normalization, affine), round the output once to the layer's dtype, and in
backward round the input gradient once and each parameter gradient once before adding it into
``.grad`` in the parameter's dtype.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from minnet.nn._util import _as_float_array, _compute, _float_dtype
from minnet.nn.module import Module
from minnet.nn.parameter import Parameter, _accumulate_grad

__all__ = ["LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d"]


def _shape_arg(normalized_shape: Any, where: str) -> tuple[int, ...]:
    """``normalized_shape`` (an int or a sequence of ints) as a tuple of positive ints."""
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        shape: tuple[Any, ...] = (int(normalized_shape),)
    else:
        try:
            shape = tuple(normalized_shape)
        except TypeError:
            raise TypeError(
                f"{where}: normalized_shape must be an int or a sequence of ints, got "
                f"{normalized_shape!r}"
            ) from None
    if not shape or any(
        isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in shape
    ):
        raise ValueError(
            f"{where}: normalized_shape must hold one or more positive ints, got "
            f"{normalized_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _eps_arg(eps: Any, where: str, allow_none: bool = False) -> float | None:
    if eps is None and allow_none:
        return None
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0.0:
        raise ValueError(f"{where}: eps must be a non-negative float, got {eps!r}")
    return float(eps)


def _flag(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be a bool, got {value!r}")
    return bool(value)


def _norm_grad(gh: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, axes: Any,
               center: bool) -> np.ndarray:  # fmt: skip
    """dLoss/dx of ``xhat = (x - mean) * rstd`` (``center``) or ``xhat = x * rstd``, with the
    statistics over ``axes``, for ``gh = dLoss/dxhat``:
    ``rstd * (gh - mean(gh) - xhat * mean(gh * xhat))`` (without ``mean(gh)`` if not centered).
    """
    proj = np.mean(gh * xhat, axis=axes, keepdims=True)
    if center:
        return rstd * (gh - np.mean(gh, axis=axes, keepdims=True) - xhat * proj)
    return rstd * (gh - xhat * proj)


class _Norm(Module):
    """Shared parts: dtype handling, the affine parameters' gradients, 16-bit rounding."""

    _state_attrs = ("_saved",)

    def __init__(self, dtype: Any) -> None:
        super().__init__()
        self.dtype = _float_dtype(dtype, type(self).__name__)
        self._saved: tuple[Any, ...] | None = None

    def _reset(self) -> None:
        self._saved = None

    def reset_parameters(self) -> None:
        """``weight`` to ones and ``bias`` to zeros (in place), PyTorch's initialisation."""
        for name, value in (("weight", 1), ("bias", 0)):
            p = getattr(self, name, None)
            if p is not None:
                p.data[...] = value

    def _input(self, x: Any) -> np.ndarray:
        x = _as_float_array(x, self._label(), "input", self.dtype)
        if x.size == 0:
            raise ValueError(f"{self._label()}: got an empty input of shape {x.shape}")
        return x

    def _param(self, p: Parameter | None, cdt: np.dtype) -> np.ndarray | None:
        if p is None:
            return None
        return p.data if p.data.dtype == cdt else p.data.astype(cdt)

    def _add_grad(self, p: Parameter | None, g: Any) -> None:
        if p is not None and p.requires_grad:
            _accumulate_grad(p, np.asarray(g).astype(p.data.dtype, copy=False), self)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The normalized ``x`` (same shape, the layer's dtype); a new array."""
        x = self._input(x)
        out, saved = self._compute(x, x.astype(_compute(self.dtype), copy=False))
        if self._keep():
            self._saved = saved
        return out if out.dtype == self.dtype else out.astype(self.dtype)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """dLoss/d(input) for dLoss/d(output) ``grad_out``; adds into the parameters' ``.grad``."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        saved = self._saved
        if saved is None:
            raise self._nothing_saved()
        shape = saved[0]
        g = _as_float_array(grad_out, self._label(), "grad_out", self.dtype)
        if g.shape != shape:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {shape}, got {g.shape}"
            )
        self._saved = None
        self._freed = True
        dx = self._grad(saved, g.astype(_compute(self.dtype), copy=False))
        return dx if dx.dtype == self.dtype else dx.astype(self.dtype)

    def _compute(self, x: np.ndarray, xc: np.ndarray) -> tuple[np.ndarray, tuple[Any, ...]]:
        raise NotImplementedError

    def _grad(self, saved: tuple[Any, ...], g: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LayerNorm(_Norm):
    r"""Layer normalization over the last ``len(normalized_shape)`` dimensions, as PyTorch's
    ``LayerNorm``.

    For each sample (the leading dimensions ``*`` of an input ``(*, *normalized_shape)``), with
    ``n = prod(normalized_shape)`` elements::

        mean = sum(x) / n
        var  = sum((x - mean)**2) / n              # biased
        y    = (x - mean) / sqrt(var + eps) * weight + bias

    eps sits inside the square root, added to the variance. Backward, with ``xhat = (x - mean)
    / sqrt(var + eps)``, ``gh = g * weight`` and means over the normalized elements:
    ``dx = (gh - mean(gh) - xhat * mean(gh * xhat)) / sqrt(var + eps)``; ``dweight = sum(g *
    xhat)``, ``dbias = sum(g)`` over the leading dimensions.

    Args:
        normalized_shape: an int or a tuple: the trailing shape normalized over.
        eps: added to the variance inside the square root. Default 1e-5 (PyTorch). Keras's
            ``LayerNormalization`` uses ``epsilon=1e-3`` and flax's ``LayerNorm``
            ``epsilon=1e-6`` (flax also computes ``var`` as ``E[x**2] - E[x]**2`` by default):
            a port passes ``eps`` explicitly.
        elementwise_affine: learn ``weight`` (ones) and ``bias`` (zeros) of shape
            ``normalized_shape``. Default ``True``.
        bias: learn ``bias`` (with ``elementwise_affine``). Default ``True``.
        dtype: the parameters' dtype (float32 by default; float64, float16, bfloat16).
    """

    def __init__(
        self,
        normalized_shape: Any,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(dtype)
        self.normalized_shape = _shape_arg(normalized_shape, "LayerNorm")
        self.eps = _eps_arg(eps, "LayerNorm")
        self.elementwise_affine = _flag(elementwise_affine, "elementwise_affine", "LayerNorm")
        use_bias = _flag(bias, "bias", "LayerNorm")
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, self.dtype), "weight")
            if use_bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, self.dtype), "bias")
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def _rows(self, x: np.ndarray) -> np.ndarray:
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k :] != self.normalized_shape:
            raise ValueError(
                f"{self._label()}: Given normalized_shape={list(self.normalized_shape)}, "
                f"expected input with shape [*, {', '.join(map(str, self.normalized_shape))}], "
                f"but got input of size {list(x.shape)}"
            )
        return x.reshape(-1, int(np.prod(self.normalized_shape)))

    def _compute(self, x: np.ndarray, xc: np.ndarray) -> tuple[np.ndarray, tuple[Any, ...]]:
        x2 = self._rows(xc)
        cdt = x2.dtype
        mean = x2.mean(axis=1, keepdims=True)
        d = x2 - mean
        var = np.mean(d * d, axis=1, keepdims=True)
        rstd = 1.0 / np.sqrt(var + cdt.type(self.eps))
        xhat = d * rstd
        w = self._param(self.weight, cdt)
        b = self._param(self.bias, cdt)
        y = xhat * w.reshape(1, -1) if w is not None else xhat
        if b is not None:
            y = y + b.reshape(1, -1)
        return y.reshape(x.shape), (x.shape, xhat, rstd)

    def _grad(self, saved: tuple[Any, ...], g: np.ndarray) -> np.ndarray:
        shape, xhat, rstd = saved
        g2 = g.reshape(xhat.shape)
        w = self._param(self.weight, g2.dtype)
        self._add_grad(self.weight, (g2 * xhat).sum(axis=0).reshape(self.normalized_shape))
        self._add_grad(self.bias, g2.sum(axis=0).reshape(self.normalized_shape))
        gh = g2 * w.reshape(1, -1) if w is not None else g2
        return _norm_grad(gh, xhat, rstd, 1, True).reshape(shape)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


class RMSNorm(_Norm):
    r"""Root-mean-square normalization over the last ``len(normalized_shape)`` dimensions, as
    PyTorch's ``RMSNorm`` (Zhang & Sennrich, 2019)::

        y = x / sqrt(mean(x**2) + eps) * weight

    (no centering, no bias). eps sits inside the square root, added to the mean square.
    ``eps=None`` (the default) is PyTorch's machine epsilon of the *computation* type:
    ``np.finfo(np.float32).eps`` (1.19e-7) for float32, float16 and bfloat16 inputs (16-bit
    inputs are computed in float32), ``np.finfo(np.float64).eps`` (2.2e-16) for float64, as
    PyTorch 2.13's kernel does and documents. (Earlier PyTorch documentation said
    ``torch.finfo(x.dtype).eps``, which would be 9.8e-4 for float16 and 7.8e-3 for bfloat16; the
    kernel used the float32 value for them, and minnet follows the kernel.)

    Backward, with ``r = 1 / sqrt(mean(x**2) + eps)``, ``xhat = x * r``, ``gh = g * weight``:
    ``dx = r * (gh - xhat * mean(gh * xhat))``, ``dweight = sum(g * xhat)`` over the leading
    dimensions.

    Args:
        normalized_shape: an int or a tuple: the trailing shape normalized over.
        eps: added to ``mean(x**2)`` inside the square root; ``None``: see above. Keras's
            ``RMSNormalization`` and flax's ``RMSNorm`` use ``epsilon=1e-6``: a port passes
            ``eps=1e-6``.
        elementwise_affine: learn ``weight`` (ones) of shape ``normalized_shape``. Default
            ``True``.
        dtype: the parameters' dtype (float32 by default; float64, float16, bfloat16).
    """

    def __init__(
        self,
        normalized_shape: Any,
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(dtype)
        self.normalized_shape = _shape_arg(normalized_shape, "RMSNorm")
        self.eps = _eps_arg(eps, "RMSNorm", allow_none=True)
        self.elementwise_affine = _flag(elementwise_affine, "elementwise_affine", "RMSNorm")
        if self.elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, self.dtype), "weight")
        else:
            self.register_parameter("weight", None)

    def effective_eps(self, dtype: Any = None) -> float:
        """The eps added for inputs stored in ``dtype`` (default: the layer's dtype): ``eps``,
        or for ``eps=None`` the machine epsilon of the computation dtype (float32 for 16-bit
        storage)."""
        if self.eps is not None:
            return self.eps
        dt = self.dtype if dtype is None else _float_dtype(dtype, "RMSNorm")
        return float(np.finfo(_compute(dt)).eps)

    def _compute(self, x: np.ndarray, xc: np.ndarray) -> tuple[np.ndarray, tuple[Any, ...]]:
        k = len(self.normalized_shape)
        if xc.ndim < k or xc.shape[xc.ndim - k :] != self.normalized_shape:
            raise ValueError(
                f"{self._label()}: Given normalized_shape={list(self.normalized_shape)}, "
                f"expected input with shape [*, {', '.join(map(str, self.normalized_shape))}], "
                f"but got input of size {list(xc.shape)}"
            )
        x2 = xc.reshape(-1, int(np.prod(self.normalized_shape)))
        cdt = x2.dtype
        ms = np.mean(x2 * x2, axis=1, keepdims=True)
        r = 1.0 / np.sqrt(ms + cdt.type(self.effective_eps()))
        xhat = x2 * r
        w = self._param(self.weight, cdt)
        y = xhat * w.reshape(1, -1) if w is not None else xhat
        return y.reshape(x.shape), (x.shape, xhat, r)

    def _grad(self, saved: tuple[Any, ...], g: np.ndarray) -> np.ndarray:
        shape, xhat, r = saved
        g2 = g.reshape(xhat.shape)
        w = self._param(self.weight, g2.dtype)
        self._add_grad(self.weight, (g2 * xhat).sum(axis=0).reshape(self.normalized_shape))
        gh = g2 * w.reshape(1, -1) if w is not None else g2
        return _norm_grad(gh, xhat, r, 1, False).reshape(shape)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


class GroupNorm(_Norm):
    r"""Group normalization (Wu & He, 2018), as PyTorch's ``GroupNorm``: the ``C`` channels of
    an input ``(N, C, *)`` are split into ``num_groups`` groups of ``C / num_groups``
    consecutive channels; each sample's group is normalized over its channels and positions::

        y = (x - mean_g) / sqrt(var_g + eps) * weight[c] + bias[c]

    with ``var_g`` the biased variance; eps sits inside the square root. ``num_groups=1`` is a
    LayerNorm over ``(C, *)`` with per-channel affine, ``num_groups=C`` an InstanceNorm.
    Backward as :class:`LayerNorm`'s within each group (``gh = g * weight[c]``); ``dweight[c] =
    sum(g * xhat)``, ``dbias[c] = sum(g)`` over samples and positions.

    Args:
        num_groups: number of groups; must divide ``num_channels``.
        num_channels: ``C``.
        eps: added to the variance inside the square root. Default 1e-5 (PyTorch). Keras's
            ``GroupNormalization`` uses ``epsilon=1e-3`` (and ``groups=32``, channels last),
            flax's ``GroupNorm`` ``epsilon=1e-6`` (``num_groups=32``, channels last): a port
            passes ``eps`` and ``num_groups`` explicitly and moves the channel axis to 1.
        affine: learn ``weight`` (ones) and ``bias`` (zeros) of shape ``(C,)``. Default ``True``.
        dtype: the parameters' dtype (float32 by default; float64, float16, bfloat16).
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        dtype: Any = np.float32,
    ) -> None:
        for arg, v in (("num_groups", num_groups), ("num_channels", num_channels)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"GroupNorm: {arg} must be a positive int, got {v!r}")
        if num_channels % num_groups != 0:
            raise ValueError(
                f"GroupNorm: num_channels must be divisible by num_groups (num_channels="
                f"{num_channels}, num_groups={num_groups})"
            )
        super().__init__(dtype)
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = _eps_arg(eps, "GroupNorm")
        self.affine = _flag(affine, "affine", "GroupNorm")
        if self.affine:
            self.weight = Parameter(np.ones(self.num_channels, self.dtype), "weight")
            self.bias = Parameter(np.zeros(self.num_channels, self.dtype), "bias")
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def _compute(self, x: np.ndarray, xc: np.ndarray) -> tuple[np.ndarray, tuple[Any, ...]]:
        if xc.ndim < 2 or xc.shape[1] != self.num_channels:
            raise ValueError(
                f"{self._label()}: expected input of shape (N, {self.num_channels}, *) "
                f"(num_channels={self.num_channels}), got shape {xc.shape}"
            )
        n, c = xc.shape[:2]
        x3 = xc.reshape(n, self.num_groups, -1)
        cdt = x3.dtype
        mean = x3.mean(axis=2, keepdims=True)
        d = x3 - mean
        var = np.mean(d * d, axis=2, keepdims=True)
        rstd = 1.0 / np.sqrt(var + cdt.type(self.eps))
        xhat = (d * rstd).reshape(n, c, -1)
        w = self._param(self.weight, cdt)
        b = self._param(self.bias, cdt)
        y = xhat * w.reshape(1, c, 1) if w is not None else xhat
        if b is not None:
            y = y + b.reshape(1, c, 1)
        return y.reshape(x.shape), (x.shape, xhat, rstd)

    def _grad(self, saved: tuple[Any, ...], g: np.ndarray) -> np.ndarray:
        shape, xhat, rstd = saved
        n, c = shape[:2]
        g3 = g.reshape(xhat.shape)
        w = self._param(self.weight, g3.dtype)
        self._add_grad(self.weight, (g3 * xhat).sum(axis=(0, 2)))
        self._add_grad(self.bias, g3.sum(axis=(0, 2)))
        gh = g3 * w.reshape(1, c, 1) if w is not None else g3
        groups = (n, self.num_groups, -1)
        dx = _norm_grad(gh.reshape(groups), xhat.reshape(groups), rstd, 2, True)
        return dx.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _BatchNorm(_Norm):
    r"""Batch normalization over the batch and spatial positions of each channel (dimension 1),
    as PyTorch's ``BatchNorm1d`` / ``BatchNorm2d``.

    Training mode (and evaluation mode without running statistics): with ``mean_c`` and the
    biased ``var_c`` of channel ``c`` over the ``n`` values of the batch (``N * L`` or ``N * H *
    W``)::

        y = (x - mean_c) / sqrt(var_c + eps) * weight[c] + bias[c]

    and, with ``track_running_stats``, after ``num_batches_tracked += 1``::

        f = momentum                   (momentum=None: f = 1 / num_batches_tracked, the
                                        cumulative average of every batch so far)
        running_mean = (1 - f) * running_mean + f * mean_c
        running_var  = (1 - f) * running_var  + f * var_c * n / (n - 1)     # unbiased

    Evaluation mode with running statistics: ``y = (x - running_mean) / sqrt(running_var +
    eps) * weight + bias`` (the statistics are constants: ``dx = g * weight / sqrt(running_var
    + eps)``). eps sits inside the square root in both modes. Training backward: as
    :class:`LayerNorm`'s over each channel's ``n`` values. ``running_mean`` (zeros),
    ``running_var`` (ones) and ``num_batches_tracked`` (an int64 0-d array) are buffers: in
    ``state_dict()`` under PyTorch's keys, not in ``parameters()``. The running statistics are
    updated whenever a training-mode forward runs, under ``no_grad`` too (as PyTorch). A batch
    with one value per channel raises ``ValueError`` in training mode, as in PyTorch.

    Port notes. Keras's ``BatchNormalization``: ``momentum=0.99, epsilon=1e-3``, where momentum
    weights the *old* average (Keras's 0.99 is PyTorch's 0.01) and the moving variance is the
    biased one; channels last. flax's ``BatchNorm``: ``momentum=0.99`` (the old average's
    weight too), ``epsilon=1e-5``, biased running variance, channels last. The default
    PyTorch 0.1 forgets ten times faster than Keras's and flax's 0.99.

    Args:
        num_features: ``C``.
        eps: added to the variance inside the square root. Default 1e-5.
        momentum: weight of the new batch in the running averages, or ``None`` for the
            cumulative average. Default 0.1.
        affine: learn ``weight`` (ones) and ``bias`` (zeros). Default ``True``.
        track_running_stats: keep running statistics (and use them in evaluation mode).
            Default ``True``.
        dtype: the parameters' and running statistics' dtype (float32 by default).
    """

    _ndims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: Any = np.float32,
    ) -> None:
        name = type(self).__name__
        if (
            isinstance(num_features, bool)
            or not isinstance(num_features, numbers.Integral)
            or num_features < 1
        ):
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        if momentum is not None and (
            isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
            or not 0.0 <= momentum <= 1.0
        ):  # fmt: skip
            raise ValueError(
                f"{name}: momentum must be a float in [0, 1] or None, got {momentum!r}"
            )
        super().__init__(dtype)
        self.num_features = int(num_features)
        self.eps = _eps_arg(eps, name)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = _flag(affine, "affine", name)
        self.track_running_stats = _flag(track_running_stats, "track_running_stats", name)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, self.dtype), "weight")
            self.bias = Parameter(np.zeros(self.num_features, self.dtype), "bias")
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, self.dtype))
            self.register_buffer("running_var", np.ones(self.num_features, self.dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0 (in place)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        """:meth:`reset_running_stats`, ``weight`` to ones and ``bias`` to zeros."""
        self.reset_running_stats()
        super().reset_parameters()

    def _compute(self, x: np.ndarray, xc: np.ndarray) -> tuple[np.ndarray, tuple[Any, ...]]:
        if xc.ndim not in self._ndims:
            dims = " or ".join(f"{d}D" for d in self._ndims)
            raise ValueError(
                f"{self._label()}: expected {dims} input (got {xc.ndim}D input of shape {xc.shape})"
            )
        if xc.shape[1] != self.num_features:
            raise ValueError(
                f"{self._label()}: expected input with {self.num_features} channels in "
                f"dimension 1 (num_features={self.num_features}), got shape {xc.shape}"
            )
        n, c = xc.shape[:2]
        x3 = xc.reshape(n, c, -1)
        cdt = x3.dtype
        count = n * x3.shape[2]
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            if count <= 1:
                raise ValueError(
                    f"{self._label()}: Expected more than 1 value per channel when training, "
                    f"got input size {list(xc.shape)}"
                )
            mean = x3.mean(axis=(0, 2), keepdims=True)
            d = x3 - mean
            var = np.mean(d * d, axis=(0, 2), keepdims=True)
            if self.training and self.track_running_stats:
                self._update_stats(mean.reshape(c), var.reshape(c), count)
        else:
            mean = self.running_mean.astype(cdt).reshape(1, c, 1)
            var = self.running_var.astype(cdt).reshape(1, c, 1)
            d = x3 - mean
        rstd = 1.0 / np.sqrt(var + cdt.type(self.eps))
        xhat = d * rstd
        w = self._param(self.weight, cdt)
        b = self._param(self.bias, cdt)
        y = xhat * w.reshape(1, c, 1) if w is not None else xhat
        if b is not None:
            y = y + b.reshape(1, c, 1)
        return y.reshape(x.shape), (x.shape, xhat, rstd, use_batch)

    def _update_stats(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        self.num_batches_tracked += 1
        if self.momentum is None:
            f = 1.0 / float(self.num_batches_tracked)
        else:
            f = self.momentum
        cdt = mean.dtype
        ft, keep = cdt.type(f), cdt.type(1.0 - f)
        unbiased = var * cdt.type(count / (count - 1))
        rm, rv = self.running_mean, self.running_var
        rm[...] = (ft * mean + keep * rm.astype(cdt)).astype(rm.dtype)
        rv[...] = (ft * unbiased + keep * rv.astype(cdt)).astype(rv.dtype)

    def _grad(self, saved: tuple[Any, ...], g: np.ndarray) -> np.ndarray:
        shape, xhat, rstd, use_batch = saved
        c = shape[1]
        g3 = g.reshape(xhat.shape)
        w = self._param(self.weight, g3.dtype)
        self._add_grad(self.weight, (g3 * xhat).sum(axis=(0, 2)))
        self._add_grad(self.bias, g3.sum(axis=(0, 2)))
        gh = g3 * w.reshape(1, c, 1) if w is not None else g3
        if not use_batch:
            return (gh * rstd).reshape(shape)
        return _norm_grad(gh, xhat, rstd, (0, 2), True).reshape(shape)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    __doc__ = (
        (_BatchNorm.__doc__ or "")
        + """
    Input ``(N, C)`` or ``(N, C, L)``.
    """
    )
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    __doc__ = (
        (_BatchNorm.__doc__ or "")
        + """
    Input ``(N, C, H, W)``.
    """
    )
    _ndims = (4,)

"""Elementwise activations.

Every activation keeps its input's dtype. float16 and bfloat16 inputs are computed in float32 (the
16-bit values widened exactly) and the result is rounded once to the input's dtype; backward
widens the kept 16-bit value and ``grad_out`` (cast to that dtype) the same way, so every result
is the float32 computation on the stored 16-bit values, rounded (as PyTorch's CPU kernels for
half and bfloat16 tensors).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from minnet.nn._util import FLOAT32, _as_float_array, _asarray, _is_low, _own_float_dtype
from minnet.nn.module import Module


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _relu_into(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out = max(x, 0)`` for 2-D ``x`` of any layout into ``out`` of its shape, in one pass
    (NaN stays NaN, -0.0 stays -0.0, as ``np.maximum(x, 0)``); the loop runs along ``out``'s
    rows (for a transposed ``x``, strided reads and contiguous writes are the faster pair)."""
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            out[i, j] = zero if v < zero else v


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _relu_grad(out: np.ndarray, grad_out: np.ndarray, grad: np.ndarray) -> None:  # pragma: no cover
    """``grad = where(out > 0, grad_out, 0)`` over 2-D arrays of one shape, any layout, in one
    pass (NumPy needs three)."""
    zero = out.dtype.type(0)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            grad[i, j] = grad_out[i, j] if out[i, j] > zero else zero


class ReLU(Module):
    """``max(x, 0)`` elementwise; NaN stays NaN. Backward passes the gradient where ``x > 0``."""

    _state_attrs = ("_out",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        if not isinstance(inplace, (bool, np.bool_)):
            raise TypeError(f"ReLU: inplace must be a bool, got {inplace!r}")
        # Accepted for PyTorch code; minnet never overwrites an input (the result is the same).
        self.inplace = bool(inplace)
        self._out: np.ndarray | None = None
        self._buf: np.ndarray | None = None  # output buffer, reused inside a Sequential
        self._mask: np.ndarray | None = None  # out > 0, for backward
        self._grad: np.ndarray | None = None  # input-gradient buffer, reused inside a Sequential

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Elementwise ``max(x, 0)``; any shape with at least one element."""
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        arr = _asarray(x, self._label(), "input")
        x = _as_float_array(arr, self._label(), "input", _own_float_dtype(arr))
        if x.size == 0:
            raise ValueError(f"{self._label()}: got an empty input of shape {x.shape}")
        keep = self._keep()
        if _is_low(x.dtype):
            out = np.maximum(x.astype(FLOAT32), 0).astype(x.dtype)
        elif internal and keep:
            out = self._buf
            if out is None or out.shape != x.shape or out.dtype != x.dtype:
                # C order: the next Linear's products then round exactly as on a fresh array.
                out = self._buf = np.empty(x.shape, x.dtype)
            if x.ndim == 2:  # one compiled pass, whatever x's layout
                _relu_into(x, out)
            else:
                # Copy first, then max in place: a ufunc reading a transposed view into a C
                # array allocates a staging buffer on every call; copyto does not.
                np.copyto(out, x)
                np.maximum(out, 0, out=out)
        else:
            out = np.maximum(x, 0)
        if keep:
            self._out = out
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out`` where the output was positive, 0 elsewhere."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        out = self._out
        if out is None:
            raise self._nothing_saved()
        grad_out = _as_float_array(grad_out, self._label(), "grad_out", out.dtype)
        if grad_out.shape != out.shape:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {out.shape}, "
                f"got {grad_out.shape}"
            )
        self._out = None
        self._freed = True
        if _is_low(out.dtype):
            g = np.where(out.astype(FLOAT32) > 0, grad_out.astype(FLOAT32), FLOAT32.type(0))
            return g.astype(out.dtype)
        if not internal:
            return np.where(out > 0, grad_out, out.dtype.type(0))
        grad = self._grad
        if grad is None or grad.shape != out.shape or grad.dtype != out.dtype:
            # C order whatever the activation's layout: a Linear below sums its bias gradient
            # over rows in this order, as PyTorch does (pairwise sums round differently).
            grad = self._grad = np.empty(out.shape, out.dtype)
        if out.ndim == 2:
            _relu_grad(out, grad_out, grad)
        else:
            mask = self._mask
            if mask is None or mask.shape != out.shape:
                mask = self._mask = np.empty(out.shape, np.bool_)
            np.greater(out, 0, out=mask)
            grad.fill(0)
            np.copyto(grad, grad_out, where=mask)  # as np.where: NaN/inf in grad_out masked to 0
        return grad

    def __repr__(self) -> str:
        return "ReLU(inplace=True)" if self.inplace else "ReLU()"


def _float_input(module: Module, x: Any) -> np.ndarray:
    """``x`` as a float array of its own precision (ints, bools, complex refused); non-empty."""
    arr = _asarray(x, module._label(), "input")
    arr = _as_float_array(arr, module._label(), "input", _own_float_dtype(arr))
    if arr.size == 0:
        raise ValueError(f"{module._label()}: got an empty input of shape {arr.shape}")
    return arr


def _check_dim(module: Module, dim: int, ndim: int) -> int:
    """``dim`` as a non-negative axis of an ``ndim``-D input, or PyTorch's IndexError."""
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"{module._label()}: Dimension out of range (expected to be in range of "
            f"[{-ndim}, {ndim - 1}], but got {dim})"
        )
    return dim % ndim


class _Activation(Module):
    """An activation that keeps one array (its input or its output) for backward.

    Subclasses define ``_compute(x) -> (out, saved)`` and ``_grad(saved, grad_out) -> dx``,
    and say in ``_saves_output`` whether ``saved`` is the output (else it is the input).
    The output is always a new array (these layers reuse no buffers). A 16-bit input runs both
    on float32 copies and keeps the rounded 16-bit output (or the 16-bit input) for backward.
    """

    _saves_output: bool = True
    _state_attrs = ("_saved",)

    def __init__(self) -> None:
        super().__init__()
        self._saved: np.ndarray | None = None

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _grad(self, saved: np.ndarray, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reset(self) -> None:
        self._saved = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The activation of ``x`` (any shape, its float dtype kept); a new array."""
        x = _float_input(self, x)
        if _is_low(x.dtype):
            out32, _ = self._compute(x.astype(FLOAT32))
            out = out32.astype(x.dtype)
            saved = out if self._saves_output else np.ascontiguousarray(x)
        else:
            out, saved = self._compute(x)
        if self._keep():
            self._saved = saved
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """dLoss/d(input) for dLoss/d(output) ``grad_out`` (the output's shape)."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        saved = self._saved
        if saved is None:
            raise self._nothing_saved()
        grad_out = _as_float_array(grad_out, self._label(), "grad_out", saved.dtype)
        if grad_out.shape != saved.shape:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {saved.shape}, "
                f"got {grad_out.shape}"
            )
        self._saved = None
        self._freed = True
        if _is_low(saved.dtype):
            return self._grad(saved.astype(FLOAT32), grad_out.astype(FLOAT32)).astype(saved.dtype)
        return self._grad(saved, grad_out)


class Tanh(_Activation):
    """``tanh(x)`` elementwise. Backward: ``dx = g * (1 - y**2)`` with ``y = tanh(x)``."""

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.tanh(x)
        return out, out

    def _grad(self, y: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g * (1 - y * y)


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))`` elementwise, computed as ``exp(x) / (1 + exp(x))`` for ``x < 0``
    (no overflow). Backward: ``dx = g * (1 - y) * y``."""

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
        out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return out, out

    def _grad(self, y: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g * (1 - y) * y


class GELU(_Activation):
    """Gaussian error linear unit, PyTorch's two forms.

    * ``approximate="none"`` (default): ``y = 0.5 * x * (1 + erf(x / sqrt(2)))``;
      ``dx = g * (Phi(x) + x * exp(-x**2 / 2) / sqrt(2 * pi))`` with ``Phi(x) = 0.5 * (1 +
      erf(x / sqrt(2)))``.
    * ``approximate="tanh"``: ``y = 0.5 * x * (1 + tanh(u))``, ``u = sqrt(2 / pi) * (x +
      0.044715 * x**3)``; ``dx = g * (0.5 * (1 + tanh(u)) + 0.5 * x * (1 - tanh(u)**2) *
      sqrt(2 / pi) * (1 + 3 * 0.044715 * x**2))``.
    """

    _saves_output = False

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(
                f"GELU: approximate argument must be either none or tanh, got {approximate!r}"
            )
        self.approximate = approximate

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty_like(x, order="C")
        xc = np.ascontiguousarray(x)
        kernel = _gelu_tanh if self.approximate == "tanh" else _gelu_erf
        kernel(xc.reshape(-1), out.reshape(-1))
        return out, xc

    def _grad(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        dx = np.empty_like(x, order="C")
        kernel = _gelu_tanh_grad if self.approximate == "tanh" else _gelu_erf_grad
        kernel(x.reshape(-1), np.ascontiguousarray(g).reshape(-1), dx.reshape(-1))
        return dx

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


# GELU kernels: one loop each, in the array's own dtype (the constants are cast to it).
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_PDF_C = 1.0 / math.sqrt(2.0 * math.pi)  # M_2_SQRTPI * M_SQRT1_2 * 0.5
_TANH_C = math.sqrt(2.0 / math.pi)  # M_SQRT2 * M_2_SQRTPI * 0.5
_KAPPA = 0.044715


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gelu_erf(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    t = x.dtype.type
    half, one, a = t(0.5), t(1.0), t(_SQRT1_2)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = v * half * (one + math.erf(v * a))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gelu_erf_grad(x: np.ndarray, g: np.ndarray, dx: np.ndarray) -> None:  # pragma: no cover
    t = x.dtype.type
    half, one, a, b, mhalf = t(0.5), t(1.0), t(_SQRT1_2), t(_PDF_C), t(-0.5)
    for i in range(x.shape[0]):
        v = x[i]
        cdf = half * (one + math.erf(v * a))
        pdf = b * math.exp(v * v * mhalf)
        dx[i] = g[i] * (cdf + v * pdf)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gelu_tanh(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    t = x.dtype.type
    half, one, b, k = t(0.5), t(1.0), t(_TANH_C), t(_KAPPA)
    for i in range(x.shape[0]):
        v = x[i]
        inner = b * (v + k * (v * v * v))
        out[i] = half * v * (one + math.tanh(inner))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gelu_tanh_grad(x: np.ndarray, g: np.ndarray, dx: np.ndarray) -> None:  # pragma: no cover
    t = x.dtype.type
    half, one, three, b, k = t(0.5), t(1.0), t(3.0), t(_TANH_C), t(_KAPPA)
    for i in range(x.shape[0]):
        v = x[i]
        v2 = v * v
        th = math.tanh(b * (v + k * (v2 * v)))
        left_d = half * (one + th)
        right_d = half * v * (one - th * th) * b * (one + three * k * v2)
        dx[i] = g[i] * (left_d + right_d)


class LeakyReLU(_Activation):
    """``x if x > 0 else negative_slope * x`` elementwise; backward ``g`` where ``x > 0``, else
    ``negative_slope * g``."""

    _saves_output = False

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(
            negative_slope, (int, float, np.integer, np.floating)
        ):
            raise TypeError(f"LeakyReLU: negative_slope must be a float, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope)), x

    def _grad(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.where(x > 0, g, g * g.dtype.type(self.negative_slope))

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Softmax(_Activation):
    """``exp(x - max) / sum(exp(x - max))`` along ``dim`` (default -1; subtracting the max keeps
    it finite for any finite logits). Backward: ``dx = y * (g - sum(g * y, dim))``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"{type(self).__name__}: dim must be an int, got {dim!r}")
        self.dim = int(dim)

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = _check_dim(self, self.dim, x.ndim)
        e = np.exp(x - x.max(axis=d, keepdims=True))
        out = e / e.sum(axis=d, keepdims=True)
        return out, out

    def _grad(self, y: np.ndarray, g: np.ndarray) -> np.ndarray:
        d = self.dim % y.ndim
        return y * (g - (g * y).sum(axis=d, keepdims=True))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``x - max - log(sum(exp(x - max)))`` along ``dim`` (default -1): stable for any finite
    logits. Backward: ``dx = g - exp(y) * sum(g, dim)``."""

    def _compute(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = _check_dim(self, self.dim, x.ndim)
        shifted = x - x.max(axis=d, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=d, keepdims=True))
        return out, out

    def _grad(self, y: np.ndarray, g: np.ndarray) -> np.ndarray:
        d = self.dim % y.ndim
        return g - np.exp(y) * g.sum(axis=d, keepdims=True)

"""Elementwise activations."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from minnet.nn._util import _as_float_array, _asarray
from minnet.nn.module import Module


@numba.njit(cache=True, nogil=True)
def _relu_grad(out: np.ndarray, grad_out: np.ndarray, grad: np.ndarray) -> None:  # pragma: no cover
    """``grad = where(out > 0, grad_out, 0)`` over flat arrays in one pass (NumPy needs three)."""
    for i in range(out.shape[0]):
        grad[i] = grad_out[i] if out[i] > 0 else 0


class ReLU(Module):
    """``max(x, 0)`` elementwise; NaN stays NaN. Backward passes the gradient where ``x > 0``."""

    def __init__(self) -> None:
        super().__init__()
        self._out: np.ndarray | None = None
        self._buf: np.ndarray | None = None  # output buffer, reused inside a Sequential
        self._mask: np.ndarray | None = None  # out > 0, for backward
        self._grad: np.ndarray | None = None  # input-gradient buffer, reused inside a Sequential

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Elementwise ``max(x, 0)``; any shape with at least one element."""
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        arr = _asarray(x, self._label(), "input")
        x = _as_float_array(
            arr,
            self._label(),
            "input",
            arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float32),
        )
        if x.size == 0:
            raise ValueError(f"{self._label()}: got an empty input of shape {x.shape}")
        keep = self._keep()
        if internal and keep:
            out = self._buf
            if out is None or out.shape != x.shape or out.dtype != x.dtype:
                # C order: the next Linear's products then round exactly as on a fresh array.
                out = self._buf = np.empty(x.shape, x.dtype)
            # Copy first, then max in place: a ufunc reading a transposed view into a C array
            # allocates a staging buffer on every call; copyto does not.
            np.copyto(out, x)
            np.maximum(out, 0, out=out)
        else:
            out = np.maximum(x, 0)
        if keep:
            self._out = out
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out`` where the output was positive, 0 elsewhere."""
        return self._backward(grad_out, False, True)

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
        if not internal:
            return np.where(out > 0, grad_out, out.dtype.type(0))
        grad, mask = self._grad, self._mask
        if grad is None or grad.shape != out.shape or grad.dtype != out.dtype:
            # C order whatever the activation's layout: a Linear below sums its bias gradient
            # over rows in this order, as PyTorch does (pairwise sums round differently).
            grad = self._grad = np.empty(out.shape, out.dtype)
            mask = self._mask = np.empty(out.shape, np.bool_)
        if out.flags.c_contiguous and grad_out.flags.c_contiguous:
            _relu_grad(out.reshape(-1), grad_out.reshape(-1), grad.reshape(-1))
        else:
            np.greater(out, 0, out=mask)
            grad.fill(0)
            np.copyto(grad, grad_out, where=mask)  # as np.where: NaN/inf in grad_out masked to 0
        return grad

    def __repr__(self) -> str:
        return "ReLU()"

"""``Flatten``: merge a range of dimensions into one."""

from __future__ import annotations

from typing import Any

import numpy as np

from minnet.nn.activation import _check_dim, _float_input
from minnet.nn.module import Module


class Flatten(Module):
    """Reshape dimensions ``start_dim`` to ``end_dim`` (inclusive) into one, as PyTorch's
    ``Flatten``: ``(N, 8, 8) -> (N, 64)`` with the defaults ``start_dim=1, end_dim=-1``, so an
    image batch can feed a ``Linear``. The output is a view when NumPy can make one; backward
    reshapes ``g`` back to the input's shape."""

    _state_attrs = ("_in_shape",)

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        for arg, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"Flatten: {arg} must be an int, got {v!r}")
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)
        self._in_shape: tuple[int, ...] | None = None

    def _reset(self) -> None:
        self._in_shape = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` with dimensions ``start_dim..end_dim`` merged."""
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        x = _float_input(self, x)
        nd = max(x.ndim, 1)
        s = _check_dim(self, self.start_dim, nd)
        e = _check_dim(self, self.end_dim, nd)
        if s > e:
            raise RuntimeError(
                f"{self._label()}: flatten() has invalid args: start_dim cannot come after "
                f"end_dim (start_dim={self.start_dim}, end_dim={self.end_dim}, input shape "
                f"{x.shape})"
            )
        shape = x.shape[:s] + (int(np.prod(x.shape[s : e + 1])),) + x.shape[e + 1 :]
        out = x.reshape(shape)
        if not internal:
            out = np.array(out, order="C")  # the caller's own array
        if self._keep():
            self._in_shape = x.shape
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out`` reshaped to the input's shape."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        shape = self._in_shape
        if shape is None:
            raise self._nothing_saved()
        grad_out = np.asarray(grad_out)
        if grad_out.size != int(np.prod(shape)):
            raise ValueError(
                f"{self._label()}: grad_out of shape {grad_out.shape} does not match the "
                f"input shape {shape}"
            )
        self._in_shape = None
        self._freed = True
        return grad_out.reshape(shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

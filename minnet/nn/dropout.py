"""``Dropout``: random zeroing in training mode, identity in evaluation mode."""

from __future__ import annotations

from typing import Any

import numpy as np

from minnet.nn._util import FLOAT32, _is_low
from minnet.nn.activation import _float_input
from minnet.nn.module import Module
from minnet.random import default_generator


class Dropout(Module):
    """Zero each element with probability ``p`` in training mode and scale the rest by
    ``1 / (1 - p)``, as PyTorch's ``Dropout``; in evaluation mode (``model.eval()``) the input
    passes unchanged.

    Training mode: ``y = x * m / (1 - p)`` with ``m`` Bernoulli(``1 - p``) drawn per element
    (``m`` is ``u >= p`` for ``u`` uniform in [0, 1)); ``dx = g * m / (1 - p)``. ``p = 1`` gives
    ``y = x * 0``. The mask is drawn in training mode whether or not ``no_grad`` is active (as in
    PyTorch); backward uses the mask of its own call (each call outside ``no_grad`` keeps
    one, see :mod:`minnet.nn.graph`). A float16 or
    bfloat16 input is multiplied in float32 (``m / (1 - p)`` is a float32 value) and the
    product rounded once to the input's dtype; backward likewise. The mask does not depend on
    the dtype: the same seed drops the same elements in every precision.

    Args:
        p: probability of an element being zeroed, in [0, 1]. Default 0.5.
        rng: an int seed (a generator of this layer's own), a ``np.random.Generator``, or
            ``None`` (default) for minnet's default generator (see ``minnet.manual_seed``),
            looked up at each draw.
    """

    _state_attrs = ("_scale", "_shape", "_dtype")

    def __init__(
        self, p: float = 0.5, inplace: bool = False, *, rng: np.random.Generator | int | None = None
    ) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise TypeError(f"Dropout: p must be a float, got {p!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        if inplace:
            raise ValueError(
                "Dropout: inplace=True is not supported (minnet never overwrites inputs)"
            )
        if rng is not None and not isinstance(rng, np.random.Generator):
            if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)):
                raise TypeError(
                    f"Dropout: rng must be a numpy Generator, an int seed or None, got {rng!r}"
                )
            rng = np.random.default_rng(int(rng))
        self.p = float(p)
        self.inplace = False
        self._rng = rng
        self._scale: np.ndarray | None = None  # m / (1 - p), kept for backward

    def _generator(self) -> np.random.Generator:
        return self._rng if self._rng is not None else default_generator()

    def _reset(self) -> None:
        self._scale = None

    def _draw_scale(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """``m / (1 - p)`` of ``shape`` in ``dtype`` (zeros, drawing nothing, for ``p = 1``)."""
        if self.p == 1.0:
            return np.zeros(shape, dtype)
        keep = self._generator().random(shape) >= self.p
        return keep.astype(dtype) / dtype.type(1.0 - self.p)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x * m / (1 - p)`` in training mode, a copy of ``x`` in evaluation mode."""
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        x = _float_input(self, x)
        if not self.training or self.p == 0.0:
            scale = None
            out = x if internal else np.array(x, order="C")
        elif _is_low(x.dtype):
            scale = self._draw_scale(x.shape, FLOAT32)
            out = (x.astype(FLOAT32) * scale).astype(x.dtype)
        else:
            scale = self._draw_scale(x.shape, x.dtype)
            out = x * scale
        if self._keep():
            # Evaluation mode keeps a marker (an empty scale) so backward knows forward ran.
            self._scale = scale if scale is not None else np.empty((0,) + x.shape[1:], x.dtype)
            self._shape = x.shape
            self._dtype = x.dtype
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``g * m / (1 - p)`` (training mode) or ``g`` (evaluation mode)."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        scale = self._scale
        if scale is None:
            raise self._nothing_saved()
        shape = self._shape
        grad_out = np.asarray(grad_out)
        if grad_out.shape != shape:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {shape}, "
                f"got {grad_out.shape}"
            )
        self._scale = None
        self._freed = True
        if scale.shape != shape:  # evaluation-mode forward: identity
            return grad_out if internal else np.array(grad_out, dtype=scale.dtype, order="C")
        if self._dtype != scale.dtype:  # 16-bit: float32 product, rounded once
            g = grad_out.astype(self._dtype).astype(FLOAT32)
            return (g * scale).astype(self._dtype)
        return grad_out * scale

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=False"

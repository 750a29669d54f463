"""What the optimizers' NumPy references for 16-bit arrays share: the two rounding models.

A reference for 16-bit arrays (``<name>_step_reference_lowp``) either runs the float32
reference on float32 copies and stores each written array once (:func:`fused`), or applies
:func:`rounder`'s rounding after every operation, in PyTorch's order (``"per_op"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["fused", "rounder"]

_F32 = np.float32


def rounder(dtype: np.dtype) -> Callable[[Any], np.ndarray]:
    """``r(x)``: ``x`` as float32, rounded to ``dtype`` (to nearest even, NumPy's / ml_dtypes'
    casts) and widened back to float32: one op's result under ``"per_op"`` rounding."""
    dtype = np.dtype(dtype)

    def r(x: Any) -> np.ndarray:
        return np.asarray(x, _F32).astype(dtype).astype(_F32)

    return r


def fused(
    step: Callable[..., Any],
    param: np.ndarray,
    grad: np.ndarray,
    state: Sequence[np.ndarray | None],
    *args: Any,
) -> None:
    """``"fused"`` rounding: ``step(param32, grad32, *state32, *args)`` on float32 copies (a
    ``None`` state stays ``None``), then ``param`` and every state array stored back once in its
    own dtype; ``grad`` is only read."""
    p32 = param.astype(_F32)
    s32 = [None if a is None else a.astype(_F32) for a in state]
    step(p32, grad.astype(_F32), *s32, *args)
    for out, a in zip([param, *state], [p32, *s32]):
        if out is not None:
            out[...] = a.astype(out.dtype)

"""Dtypes minnet accepts: float16, bfloat16 (``ml_dtypes.bfloat16``), float32 and float64.

:func:`as_dtype` turns what a user passes as a dtype (``np.float16``, ``ml_dtypes.bfloat16``,
``"bfloat16"``, ``"float32"``, an ``np.dtype``) into an ``np.dtype``, and refuses anything else;
every minnet argument named ``dtype`` or ``state_dtype`` goes through it.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["bfloat16", "float16", "float32", "float64", "FLOAT_DTYPES", "as_dtype", "is_16bit"]

#: The bfloat16 NumPy dtype (``ml_dtypes.bfloat16``, the one JAX uses): float32's 8-bit
#: exponent with a 7-bit mantissa.
bfloat16 = np.dtype(ml_dtypes.bfloat16)
float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)

#: Every floating dtype minnet computes with, narrowest first.
FLOAT_DTYPES = (float16, bfloat16, float32, float64)

_NAMES = {"float16": float16, "half": float16, "bfloat16": bfloat16, "float32": float32,
          "float": float32, "float64": float64, "double": float64}  # fmt: skip


def as_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """``dtype`` as one of :data:`FLOAT_DTYPES`.

    Accepts ``np.dtype`` objects, scalar types (``np.float16``, ``ml_dtypes.bfloat16``) and the
    names ``"float16"``, ``"bfloat16"``, ``"float32"``, ``"float64"`` (and PyTorch's aliases
    ``"half"``, ``"float"``, ``"double"``). Raises ``TypeError`` naming ``name`` for anything
    else (integer dtypes, ``"float8"``, ``None``).
    """
    if isinstance(dtype, str):
        if dtype in _NAMES:
            return _NAMES[dtype]
        raise TypeError(
            f"{name} must be one of 'float16', 'bfloat16', 'float32', 'float64', got {dtype!r}"
        )
    try:
        dt = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        dt = None
    if dt is None or dt not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {dtype!r}"
        )
    return dt


def is_16bit(dtype: Any) -> bool:
    """Whether ``dtype`` is float16 or bfloat16 (stored as 16-bit patterns in kernels)."""
    return np.dtype(dtype) in (float16, bfloat16)

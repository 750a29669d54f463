"""Dtypes minnet accepts: float16, bfloat16 (``ml_dtypes.bfloat16``), float32 and float64.

:func:`as_dtype` turns what a user passes as a dtype (``np.float16``, ``ml_dtypes.bfloat16``,
``"bfloat16"``, ``"float32"``, an ``np.dtype``) into an ``np.dtype``, and refuses anything else;
every minnet argument named ``dtype`` or ``state_dtype`` goes through it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # read through __getattr__ below, which imports ml_dtypes on first use
    bfloat16: np.dtype
    FLOAT_DTYPES: tuple[np.dtype, ...]

__all__ = [
    "bfloat16", "float16", "float32", "float64", "FLOAT_DTYPES", "as_dtype", "is_16bit",
    "is_bfloat16", "is_float_dtype",
]  # fmt: skip

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)


@functools.cache
def load_bfloat16() -> np.dtype:
    """The bfloat16 NumPy dtype (``ml_dtypes.bfloat16``, the one JAX uses): float32's 8-bit
    exponent with a 7-bit mantissa. ``ml_dtypes`` is imported here, on first use, not with
    minnet: its import costs 0.5 to 0.9 s with ml_dtypes 0.7 (3 ms with 0.5)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(dtype: np.dtype) -> bool:
    """Whether the ``np.dtype`` ``dtype`` is bfloat16, without importing ``ml_dtypes`` (an
    array of it can only exist once something has imported ``ml_dtypes``)."""
    return dtype.name == "bfloat16" and dtype.type.__module__.startswith("ml_dtypes")


def is_float_dtype(dtype: np.dtype) -> bool:
    """Whether the ``np.dtype`` ``dtype`` is one of :data:`FLOAT_DTYPES`."""
    return dtype in (float16, float32, float64) or is_bfloat16(dtype)


def __getattr__(name: str) -> Any:
    # ``bfloat16`` and ``FLOAT_DTYPES`` (every floating dtype minnet computes with, narrowest
    # first) import ml_dtypes when first read (PEP 562).
    if name == "bfloat16":
        return load_bfloat16()
    if name == "FLOAT_DTYPES":
        return (float16, load_bfloat16(), float32, float64)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NAMES = {"float16": float16, "half": float16, "float32": float32, "float": float32,
          "float64": float64, "double": float64}  # fmt: skip


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
        if dtype == "bfloat16":
            return load_bfloat16()
        raise TypeError(
            f"{name} must be one of 'float16', 'bfloat16', 'float32', 'float64', got {dtype!r}"
        )
    try:
        dt = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        dt = None
    if dt is None or not is_float_dtype(dt):
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {dtype!r}"
        )
    return dt


def is_16bit(dtype: Any) -> bool:
    """Whether ``dtype`` is float16 or bfloat16 (stored as 16-bit patterns in kernels)."""
    dt = np.dtype(dtype)
    return dt == float16 or is_bfloat16(dt)

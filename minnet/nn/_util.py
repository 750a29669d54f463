"""Input checks shared by the layers and losses."""

from __future__ import annotations

from typing import Any

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_dtype(dtype: Any, where: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dt}")
    return dt


def _asarray(x: Any, where: str, what: str) -> np.ndarray:
    """``np.asarray(x)``, with an error naming ``where`` and ``what`` for ragged input."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise type(exc)(
            f"{where}: {what} cannot be made into an array ({exc}); expected a real "
            "floating-point array"
        ) from exc


def _as_float_array(x: Any, where: str, what: str, dtype: np.dtype) -> np.ndarray:
    """``x`` as an array of ``dtype``; real floats of another precision are cast, others refused."""
    arr = _asarray(x, where, what)
    kind = arr.dtype.kind
    if kind != "f":
        hint = {
            "c": "complex arrays are not supported",
            "O": "object arrays are not supported",
            "b": "booleans are not floats; cast with .astype",
            "i": "integers are not floats; cast with .astype",
            "u": "integers are not floats; cast with .astype",
        }.get(kind, "expected a real floating-point array")
        raise TypeError(f"{where}: {what} has dtype {arr.dtype}: {hint} (expected {dtype})")
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr

"""Input checks and dtype rules shared by the layers and losses.

Storage dtypes: float16, bfloat16 (``ml_dtypes.bfloat16``, the NumPy dtype JAX uses; the string
``"bfloat16"`` is accepted wherever a dtype is), float32 and float64. A 16-bit model stores its
parameters, activations and gradients in 16 bits and computes in float32 (see :func:`_compute`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minnet.dtypes import is_16bit, is_bfloat16, is_float_dtype, load_bfloat16

FLOAT32 = np.dtype(np.float32)
_MODEL_NAMES = "float16, bfloat16, float32 or float64"


def _to_dtype(dtype: Any) -> np.dtype:
    """``np.dtype(dtype)``, with ``"bfloat16"`` (and ``ml_dtypes.bfloat16``) understood."""
    if isinstance(dtype, str) and dtype.strip().lower() in ("bfloat16", "bf16"):
        return load_bfloat16()
    return np.dtype(dtype)


def _float_dtype(dtype: Any, where: str) -> np.dtype:
    """``dtype`` as one of the model dtypes, or ``TypeError`` naming ``where``."""
    try:
        dt = _to_dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{where}: dtype must be {_MODEL_NAMES}, got {dtype!r}") from exc
    if not is_float_dtype(dt):
        raise TypeError(f"{where}: dtype must be {_MODEL_NAMES}, got {dt}")
    return dt


def _is_low(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a 16-bit storage dtype (float16 or bfloat16)."""
    return dtype.itemsize == 2 and is_16bit(dtype)


def _is_float(dtype: np.dtype) -> bool:
    """Real floating point as minnet understands it: NumPy's floats and bfloat16."""
    return dtype.kind == "f" or is_bfloat16(dtype)


def _compute(dtype: np.dtype) -> np.dtype:
    """The dtype arithmetic runs in for data stored in ``dtype``: float32 for the 16-bit
    dtypes (as PyTorch's CPU kernels for half and bfloat16 tensors), ``dtype`` otherwise."""
    return FLOAT32 if _is_low(dtype) else dtype


def _asarray(x: Any, where: str, what: str) -> np.ndarray:
    """``np.asarray(x)``, with an error naming ``where`` and ``what`` for ragged input."""
    if isinstance(x, np.ndarray):
        # a module's Output (or another subclass): its plain array, for the compiled kernels
        return x if type(x) is np.ndarray else x.view(np.ndarray)
    if x is None:
        hint = (
            " (Sequential.backward returns the input gradient only with input_grad=True)"
            if what == "grad_out"
            else ""
        )
        raise TypeError(f"{where}: {what} is None; expected a real floating-point array{hint}")
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
    if arr.dtype != dtype:
        if not _is_float(arr.dtype):
            kind = arr.dtype.kind
            hint = {
                "c": "complex arrays are not supported",
                "O": "object arrays are not supported",
                "b": "booleans are not floats; cast with .astype",
                "i": "integers are not floats; cast with .astype",
                "u": "integers are not floats; cast with .astype",
                "V": f"unsupported dtype (minnet computes on {_MODEL_NAMES})",
            }.get(kind, "expected a real floating-point array")
            raise TypeError(f"{where}: {what} has dtype {arr.dtype}: {hint} (expected {dtype})")
        arr = arr.astype(dtype)
    return arr


def _own_float_dtype(arr: np.ndarray) -> np.dtype:
    """``arr``'s dtype if it is a float minnet computes on (float16, bfloat16, float32,
    float64; also longer NumPy floats), else float32 (so the caller's cast refuses non-floats
    with a clear message)."""
    return arr.dtype if _is_float(arr.dtype) else FLOAT32

"""``Parameter``: a trainable array and its gradient."""

from __future__ import annotations

import numpy as np

from minnet.nn._util import _FLOAT_DTYPES, _asarray


class Parameter:
    """A trainable array: ``.data`` (the values) and ``.grad`` (same shape and dtype).

    ``name`` is the parameter's key in its model's ``state_dict()`` (``"0.weight"``); error
    messages use it. ``data`` must be a float32 or float64 array (``TypeError`` otherwise).
    """

    __slots__ = ("data", "grad", "name")

    def __init__(self, data: np.ndarray, name: str = "") -> None:
        where = f"Parameter {name!r}" if name else "Parameter"
        arr = _asarray(data, where, "data")
        if arr.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"{where}: data has dtype {arr.dtype}; parameters must be float32 or float64 "
                "arrays (cast with .astype)"
            )
        self.data: np.ndarray = np.ascontiguousarray(arr)
        self.grad: np.ndarray = np.zeros_like(self.data)
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        """Dtype of ``data``."""
        return self.data.dtype

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"

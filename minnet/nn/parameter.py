"""``Parameter``: a trainable array and its gradient."""

from __future__ import annotations

from typing import Any

import numpy as np

from minnet.nn._util import _MODEL_DTYPES, _MODEL_NAMES, _asarray


class Parameter:
    """A trainable array: ``.data`` (the values) and ``.grad`` (same shape and dtype).

    ``name`` is the parameter's key in its model's ``state_dict()`` (``"0.weight"``,
    ``"fc1.bias"``), set when a module registers it; error messages use it. ``data`` must be a
    float16, bfloat16 (``ml_dtypes.bfloat16``), float32 or float64 array (``TypeError``
    otherwise); ``grad`` has the same dtype, so a 16-bit parameter accumulates its gradient in
    16 bits (each backward's contribution is rounded, then added and rounded again, as PyTorch
    does for half and bfloat16 parameters).

    ``requires_grad`` (default ``True``, as PyTorch's): when ``False`` (``module.requires_grad_(
    False)``), backward adds nothing into ``grad`` and the optimizer leaves the parameter alone.

    ``grad_rows`` is ``None`` except on the weight of an ``Embedding(..., sparse=True)``: there
    ``grad`` stays a dense array (optimizers work on flat buffers) and ``grad_rows`` lists, sorted
    and unique, the rows that received a gradient since the last ``Module.zero_grad()``, so
    that a lazy optimizer can tell "no gradient" from "a zero gradient".
    """

    __slots__ = ("data", "grad", "name", "requires_grad", "grad_rows")

    def __init__(self, data: np.ndarray, name: str = "") -> None:
        where = f"Parameter {name!r}" if name else "Parameter"
        arr = _asarray(data, where, "data")
        if arr.dtype not in _MODEL_DTYPES:
            raise TypeError(
                f"{where}: data has dtype {arr.dtype}; parameters must be {_MODEL_NAMES} "
                "arrays (cast with .astype)"
            )
        self.data: np.ndarray = np.ascontiguousarray(arr).reshape(arr.shape)  # keeps 0-d 0-d
        self.grad: np.ndarray = np.zeros_like(self.data)
        self.name = name
        self.requires_grad: bool = True
        #: ``None`` (the usual dense gradient), or, for the weight of an ``Embedding`` with
        #: ``sparse=True``, the sorted unique rows that received a gradient since the last
        #: ``zero_grad()`` (an int64 array; rows not listed had no gradient, not a zero one).
        self.grad_rows: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        """Dtype of ``data``."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions of ``data``."""
        return self.data.ndim

    def numel(self) -> int:
        """Number of elements of ``data`` (PyTorch's ``Parameter.numel()``)."""
        return int(self.data.size)

    def dim(self) -> int:
        """Number of dimensions of ``data`` (PyTorch's ``tensor.dim()``)."""
        return self.data.ndim

    def size(self, dim: int | None = None) -> Any:
        """``data.shape``, or its ``dim``-th entry (PyTorch's ``tensor.size()``)."""
        return self.data.shape if dim is None else self.data.shape[dim]

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"


def _accumulate_grad(p: Parameter, g: np.ndarray, where: Any) -> None:
    """``p.grad += g`` in place, unless ``p.requires_grad`` is ``False``.

    A ``grad`` set to ``None`` (PyTorch's cleared state) starts from ``g``; a ``grad`` that is no
    longer an array of ``data``'s shape and dtype raises ``ValueError`` naming the parameter and
    ``where`` (the layer, or an object whose ``_label()`` names it).
    """
    if not p.requires_grad:
        return
    grad = p.grad
    if grad is None:
        p.grad = np.array(g, dtype=p.data.dtype, order="C")
        return
    if not isinstance(grad, np.ndarray) or grad.shape != p.data.shape or grad.dtype != p.data.dtype:
        got = (
            f"shape {grad.shape}, dtype {grad.dtype}"
            if isinstance(grad, np.ndarray)
            else type(grad).__name__
        )
        if hasattr(where, "_label"):
            where = where._label()
        raise ValueError(
            f"{where}: parameter {p.name!r} has a .grad that was replaced by {got}; it must be "
            f"an array of the parameter's shape {p.data.shape} and dtype {p.data.dtype} (or None)"
        )
    np.add(grad, g, out=grad)

"""Losses: ``loss_fn(input, target)`` returns the loss, ``loss_fn.backward()`` dLoss/d(input)."""

from __future__ import annotations

import numpy as np

from minnet.nn._util import _as_float_array, _asarray


class MSELoss:
    """Squared error, PyTorch's definition: ``sum((input - target)**2)`` for ``reduction="sum"``,
    divided by the number of elements for ``"mean"`` (the default).

    ``loss_fn(y_pred, y)`` returns a NumPy scalar of ``y_pred``'s dtype (``.item()`` gives a
    Python float); ``loss_fn.backward()`` returns dLoss/d(y_pred) ``= 2 * (input - target)``
    (divided by the element count for ``"mean"``). Shapes must match exactly (no broadcasting).
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"{reduction!r} is not a valid value for reduction; use 'mean' or 'sum'"
            )
        self.reduction = reduction
        self._diff: np.ndarray | None = None  # input - target, reused from call to call

    def __call__(self, input: np.ndarray, target: np.ndarray) -> np.floating:
        return self.forward(input, target)

    def forward(self, input: np.ndarray, target: np.ndarray) -> np.floating:
        """The loss value for predictions ``input`` and targets ``target``."""
        arr = _asarray(input, "MSELoss", "input")
        dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
        input = _as_float_array(arr, "MSELoss", "input", dtype)
        target = _as_float_array(target, "MSELoss", "target", dtype)
        if input.shape != target.shape:
            raise ValueError(
                f"MSELoss: input shape {input.shape} and target shape {target.shape} differ "
                "(minnet does not broadcast; the batch sizes and feature counts must match)"
            )
        if input.size == 0:
            raise ValueError(f"MSELoss: got empty input of shape {input.shape}")
        diff = self._diff
        if diff is None or diff.shape != input.shape or diff.dtype != dtype:
            diff = self._diff = np.empty(input.shape, dtype)
        np.subtract(input, target, out=diff)
        flat = diff.reshape(-1)
        total = np.dot(flat, flat)
        if self.reduction == "mean":
            total = total / dtype.type(flat.size)
        return dtype.type(total)

    def backward(self) -> np.ndarray:
        """dLoss/d(input) for the last call."""
        diff = self._diff
        if diff is None:
            raise ValueError("MSELoss: backward called before the loss was computed")
        scale = 2.0 / diff.size if self.reduction == "mean" else 2.0
        return diff * diff.dtype.type(scale)

    def __repr__(self) -> str:
        return f"MSELoss(reduction={self.reduction!r})"

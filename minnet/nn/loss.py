"""Losses: ``loss_fn(input, target)`` returns the loss, ``loss_fn.backward()`` dLoss/d(input).

Every loss is a :class:`~minnet.nn.Module` with PyTorch's arguments and ``reduction`` ("mean",
"sum" or "none"). Outside ``no_grad`` the value is a 0-d :class:`~minnet.nn.graph.Output` (an
array for "none") whose ``backward()`` backpropagates through the module calls that produced
the input (:mod:`minnet.nn.graph`). ``loss_fn.backward(grad=None)`` returns dLoss/d(input) for
the loss's latest call outside ``no_grad``: for "mean"/"sum" ``grad`` is a scalar factor (default
1), for "none" it is the upstream gradient of the per-element loss (default ones). Calls under
``no_grad`` (validation) keep nothing, so they never change what a pending ``backward`` returns.

Precision: a float32 or float64 input is computed in its own dtype. A float16 or bfloat16 input
is widened to float32 and the whole loss is computed in float32 (targets and weights are cast to
float32 directly, not through the 16-bit dtype); the loss value is a float32 scalar (or array),
and ``backward`` returns the float32 gradient rounded once to the input's dtype, as a 16-bit
model's last layer expects.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import numba
import numpy as np

from minnet.nn import graph as _graph
from minnet.nn._util import _as_float_array, _asarray, _compute, _is_float
from minnet.nn.grad_mode import _mode, is_grad_enabled
from minnet.nn.graph import Call, Output, _thread
from minnet.nn.module import _STATE, Module

_REDUCTIONS = ("none", "mean", "sum")


def _class_targets(
    owner: str, target: np.ndarray, c: int, ignore_index: int, w: np.ndarray | None,
    dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class-index targets flattened and checked (PyTorch's out-of-bounds ``IndexError``):
    ``(rows, classes with ignored ones at 0, per-target weights with ignored ones at 0,
    ignored)``."""
    y = target.reshape(-1).astype(np.int64)
    ignored = y == ignore_index
    bad = ~ignored & ((y < 0) | (y >= c))
    if bad.any():
        raise IndexError(
            f"{owner}: Target {int(y[bad][0])} is out of bounds (classes 0..{c - 1}, "
            f"ignore_index={ignore_index})"
        )
    yc = np.where(ignored, 0, y)
    wy = (w[yc] if w is not None else np.ones(y.shape[0], dtype)).astype(dtype)
    wy[ignored] = 0
    return np.arange(y.shape[0]), yc, wy, ignored


class _Loss(Module):
    """Base of the losses: ``reduction`` validated with PyTorch's message, ``loss(input,
    target)`` calls :meth:`forward`."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"{reduction!r} is not a valid value for reduction; use 'none', 'mean' or 'sum'"
            )
        self.reduction = reduction

    _state_attrs = ()
    _is_loss = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`Module.__call__`, spelled out for ``loss_fn(input, target)``: the loss value
        is a 0-d :class:`~minnet.nn.graph.Output` that knows this call."""
        if kwargs or len(args) != 2 or self._kind != _STATE or not _mode.enabled:
            return Module.__call__(self, *args, **kwargs)
        thread = _thread
        if thread.next is not None:
            thread.next = None
        x, parent = _graph.unwrap(args[0])
        value = self.forward(x, args[1])
        d = self.__dict__
        state = []
        for n in self._state_attrs:
            state.append(d.get(n))
            d[n] = None
        node = Call(self, state, parent)
        d["_last"] = node
        if d.get("_claim"):
            d["_claim"] = False
            d["_owner"] = weakref.ref(node)
        if thread.recording is not None:
            thread.recording.append(node)
        out = (value if type(value) is np.ndarray else np.asarray(value)).view(Output)
        out._node = node
        return out

    def _run_call(self, call: Any, grad: Any, input_grad: bool, retain: bool) -> Any:
        if call.children is not None or self._kind != _STATE:
            return Module._run_call(self, call, grad, input_grad, retain)
        d = self.__dict__
        names = self._state_attrs
        for n, v in zip(names, call.state):
            d[n] = v
        try:
            out = self._loss_backward(grad)
        finally:
            for n in names:
                d[n] = None
        if not retain:
            call.state = None
        return out

    def _backward(self, grad_out: Any, internal: bool, input_grad: bool) -> Any:
        return self._loss_backward(grad_out)

    def backward(self, grad: Any = None) -> np.ndarray:
        """dLoss/d(input) for the loss's call (see the module docstring); ``grad`` is the
        upstream gradient (default 1, ones for ``reduction="none"``)."""
        return self._legacy(self._loss_backward, grad)

    def _loss_backward(self, grad: Any) -> np.ndarray:
        raise NotImplementedError

    def _class_input(
        self, input: Any, target: Any
    ) -> tuple[np.ndarray, np.dtype, int, np.ndarray, tuple[int, ...]]:
        """For the losses over class scores (``(N, C, ...)`` or ``(C,)`` input):
        ``(input in its compute dtype, its own dtype, C, target array, the batch shape)``."""
        name = type(self).__name__
        x, in_dtype = self._input(input)
        if x.ndim == 0 or x.size == 0:
            raise ValueError(
                f"{name}: expected input of shape (N, C) or (C,) with at least one element, "
                f"got {x.shape}"
            )
        c = x.shape[0] if x.ndim == 1 else x.shape[1]
        t = _asarray(target, name, "target")
        batch_shape = () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]
        return x, in_dtype, c, t, batch_shape

    def _input(self, input: Any) -> tuple[np.ndarray, np.dtype]:
        """``(input in its compute dtype, input's own float dtype)``: 16-bit inputs are widened
        to float32; non-float inputs raise ``TypeError`` naming the loss."""
        name = type(self).__name__
        arr = _asarray(input, name, "input")
        dtype = arr.dtype if _is_float(arr.dtype) else np.dtype(np.float64)
        arr = _as_float_array(arr, name, "input", dtype)
        return arr.astype(_compute(dtype), copy=False), dtype

    def _upstream(self, grad: Any, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """``grad`` checked: a scalar for "mean"/"sum", an array of the loss's shape for
        "none"; ``None`` means 1 / ones."""
        name = type(self).__name__
        if self.reduction != "none":
            if grad is None:
                return None
            g = np.asarray(grad, dtype=dtype)
            if g.size != 1:
                raise ValueError(
                    f"{name}: backward(grad) takes a scalar for reduction={self.reduction!r}, "
                    f"got shape {g.shape}"
                )
            return g.reshape(())
        if grad is None:
            return np.ones(shape, dtype)
        g = _as_float_array(grad, name, "grad", dtype)
        if g.shape != shape:
            raise ValueError(
                f"{name}: backward(grad) needs the per-element loss's shape {shape} for "
                f"reduction='none', got {g.shape}"
            )
        return g

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _sum_squares(flat: np.ndarray) -> Any:  # pragma: no cover - compiled
    """``sum(flat**2)`` in ``flat``'s dtype. ``reassoc`` lets this reduction alone use SIMD
    lanes (partial sums, as BLAS's ``dot``); it is a separate function so that the flag never
    touches other arithmetic."""
    total = flat.dtype.type(0)
    for i in range(flat.shape[0]):
        total += flat[i] * flat[i]
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _diff_sum_squares(a: np.ndarray, b: np.ndarray, diff: np.ndarray) -> Any:  # pragma: no cover
    """``diff = a - b`` (2-D arrays of one shape, any layout; ``diff`` C-contiguous) and
    ``sum(diff**2)`` in one call."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            diff[i, j] = a[i, j] - b[i, j]
    return _sum_squares(diff.reshape(-1))


class MSELoss(_Loss):
    """Squared error, PyTorch's definition: ``(input - target)**2`` per element for
    ``reduction="none"``, their sum for ``"sum"``, divided by the number of elements for
    ``"mean"`` (the default).

    ``loss_fn(y_pred, y)`` returns a NumPy scalar of ``y_pred``'s dtype (float32 for 16-bit
    ``y_pred``; ``.item()`` gives a Python float; an array for ``"none"``);
    ``loss_fn.backward(grad=None)`` returns dLoss/d(y_pred) ``= 2 * (input - target) * grad``
    (divided by the element count for ``"mean"``). Shapes must match exactly (no broadcasting).
    """

    _state_attrs = ("_diff", "_grad_dtype")

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._diff: np.ndarray | None = None  # input - target, reused from call to call
        self._grad_dtype: np.dtype | None = None  # the input's dtype: backward's result dtype

    def forward(self, input: np.ndarray, target: np.ndarray) -> Any:
        """The loss value for predictions ``input`` and targets ``target``."""
        if (
            type(input) is np.ndarray  # the usual call: skip the conversions (none needed)
            and type(target) is np.ndarray
            and input.dtype.char in "fd"
            and target.dtype == input.dtype
        ):
            in_dtype = input.dtype
        else:
            input, in_dtype = self._input(input)
            target = _as_float_array(target, "MSELoss", "target", input.dtype)
        dtype = input.dtype
        if input.shape != target.shape:
            raise ValueError(
                f"MSELoss: input shape {input.shape} and target shape {target.shape} differ "
                "(minnet does not broadcast; the batch sizes and feature counts must match)"
            )
        if input.size == 0:
            raise ValueError(f"MSELoss: got empty input of shape {input.shape}")
        if is_grad_enabled():
            # The buffer is reused unless an earlier call waiting for its backward keeps it.
            d = self.__dict__
            diff = d.get("_buf")
            if diff is None or diff.shape != input.shape or diff.dtype != dtype:
                diff = d["_buf"] = np.empty(input.shape, dtype)
                d["_claim"] = True
            elif (owner := d.get("_owner")) is None or (
                (call := owner()) is None or call.state is None
            ):
                d["_claim"] = True
            else:
                diff = np.empty(input.shape, dtype)
            d["_diff"] = diff
            d["_grad_dtype"] = in_dtype
        else:  # keep nothing: a pending backward still sees its own diff
            diff = np.empty(input.shape, dtype)
        if input.ndim == 2 and self.reduction != "none":  # one compiled pass
            total = dtype.type(_diff_sum_squares(input, target, diff))
            return total if self.reduction == "sum" else total / dtype.type(diff.size)
        np.subtract(input, target, out=diff)
        if self.reduction == "none":
            return diff * diff
        flat = diff.reshape(-1)
        total = np.dot(flat, flat)
        if self.reduction == "mean":
            total = total / dtype.type(flat.size)
        return dtype.type(total)

    def backward(self, grad: Any = None) -> np.ndarray:
        """dLoss/d(input) for the loss's call: ``2 * (input - target)`` (``/ numel`` for
        "mean") times ``grad``."""
        return self._legacy(self._loss_backward, grad)

    def _loss_backward(self, grad: Any) -> np.ndarray:
        diff = self._diff
        if diff is None:
            raise ValueError("MSELoss: backward called before the loss was computed")
        g = self._upstream(grad, diff.shape, diff.dtype)
        scale = 2.0 / diff.size if self.reduction == "mean" else 2.0
        out = diff * scale  # a Python float scalar is cast to diff's dtype first
        if g is not None:
            out *= g
        return out if self._grad_dtype == out.dtype else out.astype(self._grad_dtype)


def _log_softmax_rows(x: np.ndarray) -> np.ndarray:
    """``x - max - log(sum(exp(x - max)))`` per row of a 2-D array (stable for any finite x)."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _weight_vector(weight: Any, where: str, what: str) -> np.ndarray | None:
    if weight is None:
        return None
    w = _asarray(weight, where, what)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"{where}: {what} must be a real array, got dtype {w.dtype}")
    return np.array(w, dtype=np.float64)


class CrossEntropyLoss(_Loss):
    """Cross entropy of logits ``input`` against class indices or class probabilities, as
    PyTorch's ``CrossEntropyLoss``.

    Shapes: ``input`` ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` (classes on dim 1). ``target``
    is either integer class indices of shape ``(N,)`` / ``()`` / ``(N, d1, ...)``, or class
    probabilities of ``input``'s shape (float). With ``logp = log_softmax(input)`` along the class
    dimension, computed as ``x - max - log(sum(exp(x - max)))`` (finite for logits of any size),
    and ``w`` the class ``weight`` (ones if ``None``), ``eps = label_smoothing``:

    * indices: ``l_n = (1 - eps) * w[y_n] * (-logp[n, y_n]) + eps / C * sum_c w[c] * (-logp[n,
      c])``; ``l_n = 0`` where ``y_n == ignore_index``. ``"mean"`` divides ``sum_n l_n`` by
      ``sum_n w[y_n]`` over the non-ignored samples (PyTorch's weighted mean; NaN when all are
      ignored).
    * probabilities: ``t' = (1 - eps) * t + eps / C``; ``l_n = -sum_c w[c] * t'[n, c] * logp[n,
      c]``; ``"mean"`` divides by the number of samples ``N * d1 * ...``.

    Both are ``l_n = -sum_c q[n, c] * logp[n, c]`` for a per-sample ``q``, so backward is
    ``dl_n/dx[n, c] = softmax(x)[n, c] * sum_c' q[n, c'] - q[n, c]``, scaled by ``1 / divisor``
    ("mean") or the upstream ``grad``.

    Args:
        weight: per-class rescaling, shape ``(C,)``. Default ``None``.
        ignore_index: target value that contributes neither loss nor gradient (indices only).
            Default -100.
        reduction: "mean" (default), "sum" or "none" (shape of the target indices).
        label_smoothing: ``eps`` in [0, 1]. Default 0.0.
    """

    _state_attrs = ("_saved",)

    def __init__(
        self,
        weight: np.ndarray | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        self.weight = _weight_vector(weight, "CrossEntropyLoss", "weight")
        if self.weight is not None and self.weight.ndim != 1:
            raise ValueError(
                f"CrossEntropyLoss: weight must be 1-D (one entry per class), got shape "
                f"{self.weight.shape}"
            )
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"CrossEntropyLoss: ignore_index must be an int, got {ignore_index!r}")
        self.ignore_index = int(ignore_index)
        if isinstance(label_smoothing, bool) or not isinstance(
            label_smoothing, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"CrossEntropyLoss: label_smoothing must be a float, got {label_smoothing!r}"
            )
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self._saved: tuple[Any, ...] | None = None

    def forward(self, input: np.ndarray, target: np.ndarray) -> Any:
        """The loss (a NumPy scalar of ``input``'s dtype, float32 for 16-bit input; an array
        for "none")."""
        x, in_dtype, c, t, batch_shape = self._class_input(input, target)
        dtype = x.dtype
        # (M, C): one row per sample, classes last.
        x2 = x.reshape(1, c) if x.ndim == 1 else np.moveaxis(x, 1, -1).reshape(-1, c)
        logp = _log_softmax_rows(x2)
        eps = self.label_smoothing
        w = None
        if self.weight is not None:
            if self.weight.shape != (c,):
                raise RuntimeError(
                    f"CrossEntropyLoss: weight tensor should be defined either for all {c} "
                    f"classes or no classes but got weight tensor of shape: "
                    f"{list(self.weight.shape)}"
                )
            w = self.weight.astype(dtype)
        if t.shape == x.shape:  # class probabilities, as PyTorch decides
            if not _is_float(t.dtype):
                raise TypeError(
                    "CrossEntropyLoss: Expected floating point type for target with class "
                    f"probabilities, got {t.dtype}"
                )
            if self.ignore_index >= 0:
                raise ValueError(
                    "CrossEntropyLoss: ignore_index is not supported for floating point target"
                )
            tf = t.astype(dtype)
            t2 = tf.reshape(1, c) if x.ndim == 1 else np.moveaxis(tf, 1, -1).reshape(-1, c)
            if eps > 0:
                t2 = t2 * dtype.type(1 - eps) + dtype.type(eps / c)
            q = t2 * w if w is not None else t2
            divisor = dtype.type(x2.shape[0])
        else:
            if t.dtype.kind not in "iu":
                raise TypeError(
                    f"CrossEntropyLoss: target of shape {t.shape} must hold integer class "
                    f"indices (got dtype {t.dtype}); class probabilities need the input's "
                    f"shape {x.shape}"
                )
            if t.shape != batch_shape:
                raise ValueError(
                    f"CrossEntropyLoss: target shape {t.shape} does not match input shape "
                    f"{x.shape}: expected {batch_shape} (the input's shape without the class "
                    "dimension 1)"
                )
            rows, yc, wy, ignored = _class_targets("CrossEntropyLoss", t, c, self.ignore_index,
                                                   w, dtype)  # fmt: skip
            q = np.zeros_like(logp)
            q[rows, yc] = wy * dtype.type(1 - eps)
            if eps > 0:
                smooth = (w if w is not None else np.ones(c, dtype)) * dtype.type(eps / c)
                q += np.where(ignored[:, None], dtype.type(0), smooth[None, :])
            divisor = wy.sum(dtype=dtype)
        per = -(q * logp).sum(axis=1)
        if is_grad_enabled():
            self._saved = (logp, q, divisor, x.shape, batch_shape, in_dtype)
        if self.reduction == "none":
            return per.reshape(batch_shape)
        total = per.sum()
        if self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                total = total / divisor
        return dtype.type(total)

    def backward(self, grad: Any = None) -> np.ndarray:
        """dLoss/d(input): ``(softmax(x) * sum(q) - q)`` per sample, times ``grad`` and
        ``1 / divisor`` for "mean" (see the class docstring)."""
        return self._legacy(self._loss_backward, grad)

    def _loss_backward(self, grad: Any) -> np.ndarray:
        if self._saved is None:
            raise ValueError("CrossEntropyLoss: backward called before the loss was computed")
        logp, q, divisor, in_shape, batch_shape, in_dtype = self._saved
        dtype = logp.dtype
        g = self._upstream(grad, batch_shape, dtype)
        dx = np.exp(logp) * q.sum(axis=1, keepdims=True) - q
        if self.reduction == "none":
            dx *= g.reshape(-1, 1)
        else:
            if self.reduction == "mean":
                with np.errstate(invalid="ignore", divide="ignore"):
                    dx /= divisor
            if g is not None:
                dx *= g
        if dx.dtype != in_dtype:
            dx = dx.astype(in_dtype)
        if len(in_shape) == 1:
            return dx.reshape(in_shape)
        moved = (in_shape[0],) + in_shape[2:] + (in_shape[1],)
        return np.ascontiguousarray(np.moveaxis(dx.reshape(moved), -1, 1))

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}"
        )


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy on logits, PyTorch's stable form.

    With ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))`` and ``lw = 1 + (pos_weight - 1) *
    t`` (``lw = 1`` without ``pos_weight``): ``l = weight * ((1 - t) * x - lw *
    log_sigmoid(x))``, per element; "mean" divides the sum by the number of elements.
    Backward: ``dl/dx = weight * ((1 - t) - lw * sigmoid(-x))``.

    Args:
        weight: rescaling broadcast to ``input``'s shape. Default ``None``.
        reduction: "mean" (default), "sum" or "none".
        pos_weight: weight of the positive term, broadcast to ``input`` (typically shape
            ``(C,)`` for ``(N, C)`` inputs). Default ``None``.
    """

    _state_attrs = ("_saved",)

    def __init__(
        self,
        weight: np.ndarray | None = None,
        reduction: str = "mean",
        pos_weight: np.ndarray | None = None,
    ) -> None:
        super().__init__(reduction)
        self.weight = _weight_vector(weight, "BCEWithLogitsLoss", "weight")
        self.pos_weight = _weight_vector(pos_weight, "BCEWithLogitsLoss", "pos_weight")
        self._saved: tuple[Any, ...] | None = None

    def _broadcast(
        self, arr: np.ndarray | None, what: str, shape: tuple[int, ...], dtype: np.dtype
    ) -> np.ndarray | None:
        if arr is None:
            return None
        try:
            return np.broadcast_to(arr.astype(dtype), shape)
        except ValueError:
            raise ValueError(
                f"BCEWithLogitsLoss: {what} of shape {arr.shape} cannot be broadcast to the "
                f"input's shape {shape}"
            ) from None

    def forward(self, input: np.ndarray, target: np.ndarray) -> Any:
        """The loss (a NumPy scalar of ``input``'s dtype, float32 for 16-bit input; an array
        for "none")."""
        x, in_dtype = self._input(input)
        dtype = x.dtype
        t = _as_float_array(target, "BCEWithLogitsLoss", "target", dtype)
        if t.shape != x.shape:
            raise ValueError(
                f"BCEWithLogitsLoss: Target size ({t.shape}) must be the same as input size "
                f"({x.shape})"
            )
        if x.size == 0:
            raise ValueError(f"BCEWithLogitsLoss: got empty input of shape {x.shape}")
        w = self._broadcast(self.weight, "weight", x.shape, dtype)
        pw = self._broadcast(self.pos_weight, "pos_weight", x.shape, dtype)
        one = dtype.type(1)
        e = np.exp(-np.abs(x))
        log_sig = np.minimum(x, 0) - np.log1p(e)
        lw = None if pw is None else (pw - one) * t + one
        loss = (one - t) * x - (log_sig if lw is None else lw * log_sig)
        if w is not None:
            loss = loss * w
        if is_grad_enabled():
            self._saved = (x, t, e, w, lw, in_dtype)
        if self.reduction == "none":
            return loss
        total = loss.sum()
        if self.reduction == "mean":
            total = total / dtype.type(loss.size)
        return dtype.type(total)

    def backward(self, grad: Any = None) -> np.ndarray:
        """dLoss/d(input) ``= weight * ((1 - t) - lw * sigmoid(-x))``, times ``grad`` and
        ``1 / numel`` for "mean"."""
        return self._legacy(self._loss_backward, grad)

    def _loss_backward(self, grad: Any) -> np.ndarray:
        if self._saved is None:
            raise ValueError("BCEWithLogitsLoss: backward called before the loss was computed")
        x, t, e, w, lw, in_dtype = self._saved
        dtype = x.dtype
        one = dtype.type(1)
        g = self._upstream(grad, x.shape, dtype)
        sig_neg = np.where(x >= 0, e / (one + e), one / (one + e))  # sigmoid(-x)
        dx = (one - t) - (sig_neg if lw is None else lw * sig_neg)
        if w is not None:
            dx = dx * w
        if self.reduction == "mean":
            dx /= dtype.type(x.size)
        if g is not None:
            dx *= g
        return dx if dx.dtype == in_dtype else dx.astype(in_dtype)


def _broadcast_weight(
    arr: np.ndarray | None, where: str, what: str, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray | None:
    """``arr`` (a weight) cast to ``dtype`` and broadcast to the input's ``shape``."""
    if arr is None:
        return None
    try:
        return np.broadcast_to(arr.astype(dtype), shape)
    except ValueError:
        raise ValueError(
            f"{where}: {what} of shape {arr.shape} cannot be broadcast to the input's shape {shape}"
        ) from None


class _PointwiseLoss(_Loss):
    """A loss that is a function of each element of ``input`` and ``target`` (same shapes):
    subclasses give ``_pointwise(x, t) -> (loss, dloss/dx)`` per element, computed in the
    input's compute dtype; the reduction and ``backward`` are shared. ``"mean"`` divides by the
    number of elements (``_divisor`` may change that)."""

    _state_attrs = ("_saved",)

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._saved: tuple[Any, ...] | None = None

    def _pointwise(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _divisor(self, x: np.ndarray) -> int:
        return x.size

    def forward(self, input: np.ndarray, target: np.ndarray) -> Any:
        """The loss (a NumPy scalar of ``input``'s dtype, float32 for 16-bit input; an array
        of the input's shape for "none")."""
        name = type(self).__name__
        x, in_dtype = self._input(input)
        dtype = x.dtype
        t = _as_float_array(target, name, "target", dtype)
        if t.shape != x.shape:
            raise ValueError(
                f"{name}: input shape {x.shape} and target shape {t.shape} differ (minnet does "
                "not broadcast; use the same shape)"
            )
        if x.size == 0:
            raise ValueError(f"{name}: got empty input of shape {x.shape}")
        loss, dloss = self._pointwise(x, t)
        if is_grad_enabled():
            self._saved = (dloss, self._divisor(x), in_dtype)
        if self.reduction == "none":
            return loss
        total = loss.sum()
        if self.reduction in ("mean", "batchmean"):
            total = total / dtype.type(self._divisor(x))
        return dtype.type(total)

    def backward(self, grad: Any = None) -> np.ndarray:
        """dLoss/d(input): the elementwise derivative times ``grad`` (and ``1 / n`` for
        "mean")."""
        return self._legacy(self._loss_backward, grad)

    def _loss_backward(self, grad: Any) -> np.ndarray:
        if self._saved is None:
            raise ValueError(f"{type(self).__name__}: backward called before the loss was computed")
        dloss, divisor, in_dtype = self._saved
        dtype = dloss.dtype
        g = self._upstream(grad, dloss.shape, dtype)
        dx = dloss.copy()
        if self.reduction in ("mean", "batchmean"):
            dx /= dtype.type(divisor)
        if g is not None:
            dx *= g
        return dx if dx.dtype == in_dtype else dx.astype(in_dtype)


class L1Loss(_PointwiseLoss):
    """Absolute error, PyTorch's ``L1Loss``: ``|input - target|`` per element; "mean" (the
    default) divides the sum by the number of elements. Backward: ``sign(input - target)``
    (0 where they are equal, as PyTorch)."""

    def _pointwise(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = x - t
        return np.abs(d), np.sign(d)


class SmoothL1Loss(_PointwiseLoss):
    """PyTorch's ``SmoothL1Loss(reduction="mean", beta=1.0)``: with ``d = input - target``,
    ``0.5 * d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 * beta``; ``beta = 0`` is
    :class:`L1Loss`. Backward: ``d / beta`` inside, ``sign(d)`` outside (``-1`` for ``d <=
    -beta``, ``1`` for ``d >= beta``, as PyTorch's kernel); ``beta = 0`` is PyTorch's
    ``l1_loss``, whose derivative is ``sign(d)`` (0 at ``d = 0``). It equals
    ``HuberLoss(delta=beta) / beta``.

    Args:
        reduction: "mean" (default), "sum" or "none".
        beta: the threshold between the quadratic and the linear part, ``>= 0``. Default 1.0.
    """

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
            raise TypeError(f"SmoothL1Loss: beta must be a float, got {beta!r}")
        if not beta >= 0:
            raise ValueError("smooth_l1_loss does not support negative values for beta.")
        self.beta = float(beta)

    def _pointwise(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = x - t
        z = np.abs(d)
        beta = x.dtype.type(self.beta)
        if self.beta == 0.0:  # PyTorch runs l1_loss then: sign(d), 0 at d = 0
            return z, np.sign(d)
        half = x.dtype.type(0.5)
        loss = np.where(z < beta, half * d * d / beta, z - half * beta)
        one = x.dtype.type(1)
        dloss = np.where(d <= -beta, -one, np.where(d >= beta, one, d / beta))
        return loss, dloss

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, beta={self.beta}"


class HuberLoss(_PointwiseLoss):
    """PyTorch's ``HuberLoss(reduction="mean", delta=1.0)``: with ``d = input - target``,
    ``0.5 * d**2`` where ``|d| < delta``, else ``delta * (|d| - 0.5 * delta)``. Backward:
    ``d`` inside, ``delta * sign(d)`` outside (``|d| > delta``).

    Args:
        reduction: "mean" (default), "sum" or "none".
        delta: the threshold, ``> 0``. Default 1.0.
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        if isinstance(delta, bool) or not isinstance(delta, (int, float, np.integer, np.floating)):
            raise TypeError(f"HuberLoss: delta must be a float, got {delta!r}")
        if not delta > 0:
            raise ValueError("huber_loss does not support non-positive values for delta.")
        self.delta = float(delta)

    def _pointwise(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = x - t
        z = np.abs(d)
        delta = x.dtype.type(self.delta)
        half = x.dtype.type(0.5)
        loss = np.where(z < delta, half * d * d, delta * (z - half * delta))
        dloss = np.where(d < -delta, -delta, np.where(d > delta, delta, d))
        return loss, dloss

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, delta={self.delta}"


#: PyTorch's floor of ``log(x)`` and ``log(1 - x)`` in ``BCELoss`` (so ``x = 0`` or ``1``
#: gives a finite loss of at most 100 per element).
BCE_LOG_FLOOR = -100.0
#: PyTorch's floor of ``x * (1 - x)`` in ``BCELoss``'s backward: its kernel's ``EPSILON = 1e-12``
#: is a C++ ``float``, so the floor is float32's nearest value to 1e-12 (9.999999960041972e-13)
#: in float64 too.
BCE_GRAD_EPS = float(np.float32(1e-12))


class BCELoss(_PointwiseLoss):
    """Binary cross entropy of probabilities, PyTorch's ``BCELoss``::

        l = -weight * (t * max(log(x), -100) + (1 - t) * max(log1p(-x), -100))
        dl/dx = weight * (x - t) / max(x * (1 - x), 1e-12)

    Two constants act like an eps here, both PyTorch's and neither configurable: the clamp of
    each log at ``-100`` (:data:`BCE_LOG_FLOOR`; a probability of exactly 0 or 1 costs at most
    100 instead of ``inf``) and the floor ``1e-12`` (:data:`BCE_GRAD_EPS`) of ``x * (1 - x)``
    in the gradient (at ``x = 0`` with ``t = 1`` the gradient is about ``-1e12``, not ``-inf``;
    the floor is float32's 1e-12, 9.999999960041972e-13, in every dtype, as in PyTorch's
    kernel; the gradient is this formula even where the forward's log was clamped). Keras's
    ``binary_crossentropy`` clips ``x`` to ``[eps, 1 - eps]`` with ``eps = 1e-7`` instead. On
    logits, :class:`BCEWithLogitsLoss` is exact and needs neither.

    ``input`` must lie in ``[0, 1]`` (``ValueError`` otherwise, as PyTorch's check).

    Args:
        weight: rescaling broadcast to ``input``'s shape. Default ``None``.
        reduction: "mean" (default), "sum" or "none".
    """

    def __init__(self, weight: np.ndarray | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = _weight_vector(weight, "BCELoss", "weight")

    def _pointwise(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not np.all((x >= 0) & (x <= 1)):
            raise ValueError("BCELoss: all elements of input should be between 0 and 1")
        dtype = x.dtype
        one = dtype.type(1)
        floor = dtype.type(BCE_LOG_FLOOR)
        with np.errstate(divide="ignore"):
            log_x = np.maximum(np.log(x), floor)
            log_1mx = np.maximum(np.log1p(-x), floor)
        loss = (t - one) * log_1mx - t * log_x
        dloss = (x - t) / np.maximum((one - x) * x, dtype.type(BCE_GRAD_EPS))
        w = _broadcast_weight(self.weight, "BCELoss", "weight", x.shape, dtype)
        if w is not None:
            loss = loss * w
            dloss = dloss * w
        return loss, dloss


class KLDivLoss(_PointwiseLoss):
    """Kullback-Leibler divergence, PyTorch's ``KLDivLoss(reduction="mean", log_target=False)``:
    ``input`` holds log-probabilities, ``target`` probabilities (``log_target=False``) or
    log-probabilities (``True``)::

        l = t * (log(t) - x)            (0 where t = 0: xlogy(t, t) - t * x)
        l = exp(t) * (t - x)            (log_target=True)

    Backward: ``-t`` (``-exp(t)`` with ``log_target``). Reductions: "none", "sum", "mean" (the
    sum divided by the number of *elements*, PyTorch's default, which is not the KL divergence:
    PyTorch warns, and so does minnet) and "batchmean" (the sum divided by the batch size
    ``input.shape[0]``: the KL divergence per sample, what the math means).

    Args:
        reduction: "mean" (default), "batchmean", "sum" or "none".
        log_target: whether ``target`` is given as log-probabilities. Default ``False``.
    """

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        if reduction not in _REDUCTIONS + ("batchmean",):
            raise ValueError(
                f"{reduction!r} is not a valid value for reduction; use 'none', 'mean', "
                "'batchmean' or 'sum'"
            )
        super().__init__("mean" if reduction == "batchmean" else reduction)
        self.reduction = reduction
        if not isinstance(log_target, (bool, np.bool_)):
            raise TypeError(f"KLDivLoss: log_target must be a bool, got {log_target!r}")
        self.log_target = bool(log_target)

    def _divisor(self, x: np.ndarray) -> int:
        if self.reduction == "batchmean":
            return x.shape[0] if x.ndim > 0 else 1
        return x.size

    def _pointwise(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.reduction == "mean":
            warnings.warn(
                "reduction: 'mean' divides the total loss by both the batch size and the "
                "support size.'batchmean' divides only by the batch size, and aligns with the "
                "KL div math definition.'mean' will be changed to behave the same as "
                "'batchmean' in the next major release.",
                UserWarning,
                stacklevel=4,
            )
        if self.log_target:
            et = np.exp(t)
            return et * (t - x), -et
        with np.errstate(divide="ignore", invalid="ignore"):
            xlogy = np.where(t == 0, t.dtype.type(0), t * np.log(t))
        return xlogy - t * x, -t

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, log_target={self.log_target}"


class NLLLoss(_Loss):
    """Negative log likelihood of log-probabilities, PyTorch's ``NLLLoss``: ``l_n = -w[y_n] *
    input[n, y_n]`` (0 where ``y_n == ignore_index``); "mean" divides the sum by ``sum_n
    w[y_n]`` over the non-ignored samples (NaN when all are ignored), as
    :class:`CrossEntropyLoss` does. ``CrossEntropyLoss(x, y) == NLLLoss(log_softmax(x), y)``.
    Backward: ``-w[y_n]`` at ``(n, y_n)``, zero elsewhere (divided by the divisor for "mean").

    Shapes: ``input`` ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``; ``target`` integer class
    indices ``(N,)``, ``()`` or ``(N, d1, ...)``.

    Args:
        weight: per-class rescaling ``(C,)``. Default ``None``.
        ignore_index: target value that contributes neither loss nor gradient. Default -100.
        reduction: "mean" (default), "sum" or "none".
    """

    _state_attrs = ("_saved",)

    def __init__(
        self, weight: np.ndarray | None = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        self.weight = _weight_vector(weight, "NLLLoss", "weight")
        if self.weight is not None and self.weight.ndim != 1:
            raise ValueError(
                f"NLLLoss: weight must be 1-D (one entry per class), got shape {self.weight.shape}"
            )
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"NLLLoss: ignore_index must be an int, got {ignore_index!r}")
        self.ignore_index = int(ignore_index)
        self._saved: tuple[Any, ...] | None = None

    def forward(self, input: np.ndarray, target: np.ndarray) -> Any:
        """The loss (a NumPy scalar of ``input``'s dtype, float32 for 16-bit input; an array
        of the target's shape for "none")."""
        x, in_dtype, c, t, batch_shape = self._class_input(input, target)
        dtype = x.dtype
        if t.dtype.kind not in "iu":
            raise TypeError(f"NLLLoss: target must hold integer class indices, got dtype {t.dtype}")
        if t.shape != batch_shape:
            raise ValueError(
                f"NLLLoss: target shape {t.shape} does not match input shape {x.shape}: "
                f"expected {batch_shape} (the input's shape without the class dimension 1)"
            )
        w = None
        if self.weight is not None:
            if self.weight.shape != (c,):
                raise RuntimeError(
                    f"NLLLoss: weight tensor should be defined either for all {c} classes or "
                    f"no classes but got weight tensor of shape: {list(self.weight.shape)}"
                )
            w = self.weight.astype(dtype)
        x2 = x.reshape(1, c) if x.ndim == 1 else np.moveaxis(x, 1, -1).reshape(-1, c)
        rows, yc, wy, ignored = _class_targets("NLLLoss", t, c, self.ignore_index, w, dtype)
        per = -wy * x2[rows, yc]
        divisor = wy.sum(dtype=dtype)
        if is_grad_enabled():
            self._saved = (yc, wy, divisor, x.shape, batch_shape, in_dtype, dtype)
        if self.reduction == "none":
            return per.reshape(batch_shape)
        total = per.sum()
        if self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                total = total / divisor
        return dtype.type(total)

    def backward(self, grad: Any = None) -> np.ndarray:
        """dLoss/d(input): ``-w[y_n]`` at each target position, times ``grad`` (and ``1 /
        divisor`` for "mean")."""
        return self._legacy(self._loss_backward, grad)

    def _loss_backward(self, grad: Any) -> np.ndarray:
        if self._saved is None:
            raise ValueError("NLLLoss: backward called before the loss was computed")
        yc, wy, divisor, in_shape, batch_shape, in_dtype, dtype = self._saved
        g = self._upstream(grad, batch_shape, dtype)
        c = in_shape[0] if len(in_shape) == 1 else in_shape[1]
        coef = -wy
        if self.reduction == "none":
            coef = coef * g.reshape(-1)
        else:
            if self.reduction == "mean":
                with np.errstate(invalid="ignore", divide="ignore"):
                    coef = coef / divisor
            if g is not None:
                coef = coef * g
        dx = np.zeros((yc.shape[0], c), dtype)
        dx[np.arange(yc.shape[0]), yc] = coef
        if dx.dtype != in_dtype:
            dx = dx.astype(in_dtype)
        if len(in_shape) == 1:
            return dx.reshape(in_shape)
        moved = (in_shape[0],) + in_shape[2:] + (in_shape[1],)
        return np.ascontiguousarray(np.moveaxis(dx.reshape(moved), -1, 1))

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"

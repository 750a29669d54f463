"""Layers and losses with hand-written forward and backward passes on NumPy arrays.

Every module follows one contract (as micrograd's ``_backward`` closures, made explicit):

* ``forward(x)`` (or ``module(x)``) returns a new ``np.ndarray`` and keeps what ``backward`` needs;
* ``backward(grad_out)`` takes dLoss/d(output) and returns dLoss/d(input), and *adds* the
  parameter gradients into each ``Parameter.grad`` (call ``zero_grad()`` between steps).

Shapes follow PyTorch: ``Linear`` maps ``(N, in_features) -> (N, out_features)`` with a weight of
shape ``(out_features, in_features)``. Inputs must be real floating-point arrays; a float array of
another precision is cast to the layer's dtype (so float64 data can feed a float32 model).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numba
import numpy as np

__all__ = ["Parameter", "Module", "Linear", "ReLU", "Sequential", "MSELoss"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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
        # ascontiguousarray returns at least 1-D; reshape keeps a 0-d parameter 0-d, as PyTorch.
        self.data: np.ndarray = np.ascontiguousarray(arr).reshape(arr.shape)
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


@numba.njit(cache=True, nogil=True)
def _add_bias_rows(out_t: np.ndarray, bias: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out_t[i, :] += bias[i]`` in place. NumPy's broadcast add stages the operands through a
    fresh 8192-element buffer on every call; this loop allocates nothing and is faster."""
    for i in range(out_t.shape[0]):
        b = bias[i]
        for j in range(out_t.shape[1]):
            out_t[i, j] += b


@numba.njit(cache=True, nogil=True)
def _relu_grad(out: np.ndarray, grad_out: np.ndarray, grad: np.ndarray) -> None:  # pragma: no cover
    """``grad = where(out > 0, grad_out, 0)`` over flat arrays in one pass (NumPy needs three)."""
    for i in range(out.shape[0]):
        grad[i] = grad_out[i] if out[i] > 0 else 0


class Module:
    """Base class: parameters, gradients, and ``state_dict`` with PyTorch's key names."""

    #: Where this module sits, for error messages; ``Sequential`` fills it in ("layer 0").
    _where: str = ""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output for input ``x``, keeping what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return dLoss/d(input) for dLoss/d(output) ``grad_out``; add into parameter grads."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # Sequential calls these two. ``internal=True`` means the result goes only to the neighbouring
    # module of the same Sequential, so it may live in a buffer that the next call overwrites;
    # ``input_grad=False`` means dLoss/d(input) is not wanted. Subclasses may ignore both.
    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        return self.forward(x)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        return self.backward(grad_out)

    def _label(self) -> str:
        name = type(self).__name__
        return f"{name} ({self._where})" if self._where else name

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(name, parameter)`` pairs, names as in :meth:`state_dict`."""
        return iter(())

    def parameters(self) -> list[Parameter]:
        """All parameters, in ``state_dict`` order."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Fill every parameter gradient with zeros."""
        for p in self.parameters():
            p.grad.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{name: copy of values}``, names as PyTorch's: ``"0.weight"``, ``"0.bias"``, ..."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copy values in, cast to each parameter's dtype.

        Every key and shape is checked first; on any missing key, unexpected key or wrong shape a
        ``ValueError`` lists them all and no parameter is changed.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"load_state_dict expects a dict, got {type(state_dict).__name__}")
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        errors = []
        if missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing))
        if unexpected:
            errors.append(
                "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected)
            )
        arrays = {}
        for name, p in params.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            try:
                arr = _asarray(value, name, "value")
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
                continue
            if arr.dtype.kind not in "fiu":
                errors.append(
                    f"{name}: dtype {arr.dtype} cannot be loaded into a {p.dtype} parameter"
                )
            elif arr.shape != p.data.shape:
                errors.append(
                    f"size mismatch for {name}: copying a param with shape {arr.shape} from "
                    f"checkpoint, the shape in current model is {p.data.shape}"
                )
            else:
                arrays[name] = arr
        if errors:
            raise ValueError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(errors)
            )
        for name, arr in arrays.items():
            params[name].data[...] = arr


class Linear(Module):
    """Affine layer ``y = x @ W.T + b``.

    Args:
        in_features: size of each input row.
        out_features: size of each output row.
        bias: learn an additive bias. Default ``True``.
        dtype: ``np.float32`` (default) or ``np.float64``.
        rng: ``np.random.Generator`` or int seed for the initial values; ``None`` draws fresh
            entropy.

    Weight ``(out_features, in_features)`` and bias ``(out_features,)`` both start
    ``U(-1/sqrt(in_features), 1/sqrt(in_features))``, PyTorch's distribution.

    Backward, for ``G = dLoss/dy`` of shape ``(N, out)``: ``dW += G.T @ x``, ``db += G.sum(0)``,
    ``dx = G @ W``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: Any = np.float32,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Linear: {arg} must be a positive int, got {value!r}")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Linear: bias must be a bool, got {bias!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.dtype = _float_dtype(dtype, "Linear")
        if not (rng is None or isinstance(rng, np.random.Generator)) and (
            isinstance(rng, bool) or not isinstance(rng, (int, np.integer))
        ):
            raise TypeError(
                f"Linear: rng must be a numpy Generator, an int seed or None, got {rng!r}"
            )
        gen = np.random.default_rng(rng)
        bound = 1.0 / math.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(gen.uniform(-bound, bound, shape).astype(self.dtype), "weight")
        self.bias = (
            Parameter(gen.uniform(-bound, bound, self.out_features).astype(self.dtype), "bias")
            if bias
            else None
        )
        self._x: np.ndarray | None = None
        # Buffers reused from step to step (see "Performance" in the README): the output kept as
        # (out_features, N), the weight-gradient product, and the input gradient.
        self._out_t: np.ndarray | None = None
        self._dw: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``("weight", W)`` and, with a bias, ``("bias", b)``."""
        yield prefix + "weight", self.weight
        if self.bias is not None:
            yield prefix + "bias", self.bias

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x @ W.T + b`` for ``x`` of shape ``(N, in_features)``; a new array."""
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        x = _as_float_array(x, self._label(), "input", self.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features or x.shape[0] == 0:
            raise ValueError(
                f"{self._label()}: expected input of shape (N, {self.in_features}) with N >= 1 "
                f"(in_features={self.in_features}), got shape {x.shape}"
            )
        self._x = x
        # Computed as (W @ x.T).T: one BLAS call on transposed views (no copies); OpenBLAS runs
        # this orientation faster than x @ W.T when in_features is the long dimension.
        n = x.shape[0]
        if internal:
            out_t = self._out_t
            if out_t is None or out_t.shape[1] != n:
                out_t = self._out_t = np.empty((self.out_features, n), self.dtype)
        else:
            out_t = np.empty((self.out_features, n), self.dtype)
        np.matmul(self.weight.data, x.T, out=out_t)
        if self.bias is not None:
            _add_bias_rows(out_t, self.bias.data)
        # Inside a Sequential the (N, out) view goes to the next module; a caller gets its own
        # C-contiguous array, so a kept y_pred is never overwritten by the next forward.
        return out_t.T if internal else np.ascontiguousarray(out_t.T)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Add ``G.T @ x`` to ``weight.grad``, ``G.sum(0)`` to ``bias.grad``; return ``G @ W``."""
        return self._backward(grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        x = self._x
        if x is None:
            raise ValueError(f"{self._label()}: backward called before forward")
        grad_out = _as_float_array(grad_out, self._label(), "grad_out", self.dtype)
        expected = (x.shape[0], self.out_features)
        if grad_out.shape != expected:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {expected}, "
                f"got {grad_out.shape}"
            )
        weight = self.weight
        dw = self._dw
        if dw is None or dw.shape != weight.grad.shape:
            dw = self._dw = np.empty(weight.grad.shape, self.dtype)
        np.matmul(grad_out.T, x, out=dw)
        np.add(weight.grad, dw, out=weight.grad)
        if self.bias is not None:
            np.add(self.bias.grad, grad_out.sum(axis=0), out=self.bias.grad)
        if not input_grad:
            return None
        if not internal:
            return grad_out @ weight.data
        dx = self._dx
        if dx is None or dx.shape[0] != grad_out.shape[0]:
            dx = self._dx = np.empty((grad_out.shape[0], self.in_features), self.dtype)
        np.matmul(grad_out, weight.data, out=dx)
        return dx

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, dtype={self.dtype})"
        )


class ReLU(Module):
    """``max(x, 0)`` elementwise; NaN stays NaN. Backward passes the gradient where ``x > 0``."""

    def __init__(self) -> None:
        self._out: np.ndarray | None = None
        self._buf: np.ndarray | None = None  # output buffer, reused inside a Sequential
        self._mask: np.ndarray | None = None  # out > 0, for backward
        self._grad: np.ndarray | None = None  # input-gradient buffer, reused inside a Sequential

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Elementwise ``max(x, 0)``; any shape with at least one element."""
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        arr = _asarray(x, self._label(), "input")
        x = _as_float_array(
            arr,
            self._label(),
            "input",
            arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float32),
        )
        if x.size == 0:
            raise ValueError(f"{self._label()}: got an empty input of shape {x.shape}")
        if internal:
            out = self._buf
            if out is None or out.shape != x.shape or out.dtype != x.dtype:
                # C order: the next Linear's products then round exactly as on a fresh array.
                out = self._buf = np.empty(x.shape, x.dtype)
            # Copy first, then max in place: a ufunc reading a transposed view into a C array
            # allocates a staging buffer on every call; copyto does not.
            np.copyto(out, x)
            np.maximum(out, 0, out=out)
        else:
            out = np.maximum(x, 0)
        self._out = out
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out`` where the output was positive, 0 elsewhere."""
        return self._backward(grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        out = self._out
        if out is None:
            raise ValueError(f"{self._label()}: backward called before forward")
        grad_out = _as_float_array(grad_out, self._label(), "grad_out", out.dtype)
        if grad_out.shape != out.shape:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {out.shape}, "
                f"got {grad_out.shape}"
            )
        if not internal:
            return np.where(out > 0, grad_out, out.dtype.type(0))
        grad, mask = self._grad, self._mask
        if grad is None or grad.shape != out.shape or grad.dtype != out.dtype:
            # C order whatever the activation's layout: a Linear below sums its bias gradient
            # over rows in this order, as PyTorch does (pairwise sums round differently).
            grad = self._grad = np.empty(out.shape, out.dtype)
            mask = self._mask = np.empty(out.shape, np.bool_)
        if out.flags.c_contiguous and grad_out.flags.c_contiguous:
            _relu_grad(out.reshape(-1), grad_out.reshape(-1), grad.reshape(-1))
        else:
            np.greater(out, 0, out=mask)
            grad.fill(0)
            np.copyto(grad, grad_out, where=mask)  # as np.where: NaN/inf in grad_out masked to 0
        return grad

    def __repr__(self) -> str:
        return "ReLU()"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Parameter names are ``"<index>.<name>"`` (``"0.weight"``), as in PyTorch.
    """

    def __init__(self, *modules: Module) -> None:
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} is {type(m).__name__}, not a Module")
        self.modules: list[Module] = list(modules)
        for i, m in enumerate(self.modules):
            m._where = f"layer {i} of Sequential"
        for name, p in self.named_parameters():
            p.name = name

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield every child's parameters, prefixed with the child's index."""
        for i, m in enumerate(self.modules):
            yield from m.named_parameters(f"{prefix}{i}.")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply each module in turn; the result is a new array.

        Activations passed between the modules live in buffers that each module reuses from
        call to call (no allocation in a steady training loop); only the last module's output,
        which the caller keeps, is freshly allocated.
        """
        last = len(self.modules) - 1
        for i, m in enumerate(self.modules):
            x = m._forward(x, i < last)
        return x

    def backward(self, grad_out: np.ndarray, *, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the modules in reverse; return dLoss/d(input).

        ``input_grad=False`` skips the first module's input gradient and returns ``None``: for a
        first ``Linear`` that saves one ``(N, out) x (out, in)`` matrix product, which PyTorch
        also skips when the input does not require grad. Parameter gradients are the same.
        """
        modules = self.modules
        for i in range(len(modules) - 1, -1, -1):
            grad_out = modules[i]._backward(grad_out, i > 0, i > 0 or input_grad)
        return grad_out if input_grad else None

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        return self.forward(x)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        return self.backward(grad_out, input_grad=input_grad)

    def __getitem__(self, index: int) -> Module:
        return self.modules[index]

    def __len__(self) -> int:
        return len(self.modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.modules)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {m!r}" for i, m in enumerate(self.modules))
        return f"Sequential(\n{inner}\n)"


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

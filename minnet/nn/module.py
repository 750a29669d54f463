"""``Module``: the base class of every layer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from minnet.nn._util import _asarray
from minnet.nn.parameter import Parameter


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

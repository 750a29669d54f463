"""``Sequential``: modules applied in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from minnet.nn.grad_mode import is_grad_enabled
from minnet.nn.module import Module


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Parameter names are ``"<index>.<name>"`` (``"0.weight"``), as in PyTorch.
    """

    def __init__(self, *modules: Module) -> None:
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} is {type(m).__name__}, not a Module")
        super().__init__()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)
            m._where = f"layer {i} of Sequential"
        self._layers: list[Module] = list(modules)
        # Indices i where module i runs inside module i + 1's calls (a ReLU before a Linear:
        # one compiled call for both; see Linear._forward_pair).
        self._pairs = frozenset(
            i for i in range(len(modules) - 1) if modules[i + 1]._pairs_with(modules[i])
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply each module in turn; the result is a new array.

        Activations passed between the modules live in buffers that each module reuses from
        call to call (no allocation in a steady training loop); only the last module's output,
        which the caller keeps, is freshly allocated.
        """
        # Under no_grad every module returns a fresh array, so the buffers that a pending
        # backward reads are left as they are.
        modules, pairs = self._layers, self._pairs
        last = len(modules) - 1 if is_grad_enabled() else 0
        i = 0
        while i < len(modules):
            if i in pairs:
                x = modules[i + 1]._forward_pair(modules[i], x, i < last, i + 1 < last)
                i += 2
            else:
                x = modules[i]._forward(x, i < last)
                i += 1
        return x

    def backward(self, grad_out: np.ndarray, *, input_grad: bool = False) -> np.ndarray | None:
        """Backpropagate through the modules in reverse, adding into every parameter's ``.grad``.

        By default the first module's input gradient is not computed and ``None`` is returned,
        as PyTorch's ``loss.backward()`` computes no gradient for an input that does not require
        one: for a first ``Linear`` that skips the ``(N, out) x (out, in)`` product
        ``dx = G @ W``. ``input_grad=True`` computes it and returns dLoss/d(input), a new array;
        a ``Sequential`` inside a hand-written ``Module.backward`` that passes the result on
        asks for it this way. Parameter gradients are the same either way.
        """
        modules, pairs = self._layers, self._pairs
        i = len(modules) - 1
        while i >= 0:
            if i - 1 in pairs and i > 1:  # a pair whose first module is not the first one
                grad_out = modules[i]._backward_pair(modules[i - 1], grad_out)
                i -= 2
            else:
                grad_out = modules[i]._backward(grad_out, i > 0, i > 0 or input_grad)
                i -= 1
        return grad_out if input_grad else None

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        return self.forward(x)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        return self.backward(grad_out, input_grad=input_grad)

    def __getitem__(self, index: int) -> Module:
        return self._layers[index]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {m!r}" for i, m in enumerate(self._layers))
        return f"Sequential(\n{inner}\n)"

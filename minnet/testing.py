"""``minnet.testing``: check a hand-written backward against finite differences.

>>> minnet.testing.gradcheck(MyLayer(), x)   # True, or GradcheckError naming what differs
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from minnet.nn.container import Identity
from minnet.nn.dropout import Dropout
from minnet.nn.grad_mode import no_grad
from minnet.nn.graph import Output
from minnet.nn.module import Module

__all__ = ["GradcheckError", "gradcheck"]


class GradcheckError(AssertionError):
    """A gradient from ``backward`` differs from its finite-difference estimate."""


class _Capture(Identity):
    """An identity call before the module: the gradient that reaches it is dL/d(input)."""

    _state_attrs = ()

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        self.grad = np.array(grad_out, dtype=np.float64)
        return grad_out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return self._backward(grad_out, False, True)


def _plain(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a if type(a) is np.ndarray else a.view(np.ndarray)


def gradcheck(
    module: Module,
    x: Any,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    check_input: bool = True,
    seed: int = 0,
    raise_exception: bool = True,
) -> bool:
    """Compare ``module``'s backward with central finite differences, in float64.

    A float64 copy of ``module`` is checked (the module itself is left as it is). With ``w``
    a fixed random array of the output's shape (drawn from ``seed``) and ``L = sum(module(x) *
    w)``, one backward (``module(x).backward(w)``: through the recorded calls for a module
    with only a ``forward``, through its hand-written ``backward`` otherwise) gives dL/dp for
    every parameter ``p`` and dL/dx; every entry is compared with ``(L(v + eps) - L(v - eps))
    / (2 * eps)`` and must agree within ``atol + rtol * |numeric|``. A backward that forgets a
    sub-module, or gets a formula wrong, fails.

    Returns ``True``; raises :class:`GradcheckError` naming each parameter (and the input)
    whose gradient differs, with the first differing entry (``raise_exception=False``: returns
    ``False``). Every entry is perturbed twice, so keep the module small. A ``Dropout`` in
    training mode draws a new mask per forward: call ``eval()`` first (``ValueError``
    otherwise).
    """
    if not isinstance(module, Module):
        raise TypeError(f"gradcheck: expected a Module, got {type(module).__name__}")
    for m in module.modules():
        if isinstance(m, Dropout) and m.training and m.p > 0:
            raise ValueError(
                f"gradcheck: {m._label()} is in training mode (a new mask every forward); "
                "call .eval() on the module first"
            )
    model = copy.deepcopy(module).double()
    for p in model.parameters():
        p.grad = np.zeros_like(p.data)
    xd = np.array(_plain(x), dtype=np.float64)
    capture = _Capture()
    out = model(capture(xd))
    if not isinstance(out, Output) or out.grad_fn is None:
        raise GradcheckError(
            f"gradcheck: {type(module).__name__}(x) returned {type(out).__name__}, not a "
            "recorded output"
        )
    w = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(w)

    def loss(v: np.ndarray) -> float:
        with no_grad():
            return float(np.sum(_plain(model(v)) * w))

    failures: list[str] = []

    def compare(name: str, analytic: Any, values: np.ndarray, inputs: np.ndarray) -> None:
        if analytic is None:
            failures.append(f"{name}: backward gave no gradient")
            return
        analytic = np.asarray(analytic, dtype=np.float64)
        flat = values.reshape(-1)
        num = np.empty(flat.size)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = loss(inputs)
            flat[i] = old - eps
            down = loss(inputs)
            flat[i] = old
            num[i] = (up - down) / (2 * eps)
        num = num.reshape(values.shape)
        if analytic.shape != num.shape:
            failures.append(f"{name}: backward gave shape {analytic.shape}, expected {num.shape}")
            return
        bad = np.abs(analytic - num) > atol + rtol * np.abs(num)
        if bad.any():
            i = tuple(int(k) for k in np.argwhere(bad)[0])
            failures.append(
                f"{name}: backward gives {analytic[i]:.6g} at index {i}, finite differences "
                f"{num[i]:.6g} ({int(bad.sum())} of {bad.size} entries differ)"
            )

    for name, p in model.named_parameters():
        if p.requires_grad:
            compare(f"parameter {name!r}", p.grad.copy(), p.data, xd)
    if check_input:
        compare("input", getattr(capture, "grad", None), xd, xd)
    if failures:
        if raise_exception:
            raise GradcheckError(f"gradcheck of {type(module).__name__}: " + "; ".join(failures))
        return False
    return True

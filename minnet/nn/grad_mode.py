"""``no_grad``: forward passes that keep nothing for backward (as ``torch.no_grad``).

minnet has no autograd: each module call outside :class:`no_grad` records what its layer's
hand-written ``backward`` needs (its input, its output or a mask) in a call of its own
(:mod:`minnet.nn.graph`). Under :class:`no_grad` the layers keep nothing, return plain arrays and
write into no buffer that a pending backward reads::

    loss = loss_fn(model(x), y)            # records the calls
    with minnet.no_grad():
        val_loss = loss_fn(model(x_val), y_val)   # keeps nothing, disturbs nothing
    loss.backward()                        # the gradients of the training batch

The switch is per thread, as PyTorch's.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["no_grad", "is_grad_enabled"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _GradMode(threading.local):
    enabled: bool = True


_mode = _GradMode()


def is_grad_enabled() -> bool:
    """``True`` unless inside :class:`no_grad` (in this thread)."""
    return _mode.enabled


class no_grad:  # noqa: N801 - PyTorch's name
    """Context manager and decorator: forward passes inside keep nothing for backward.

    ``with minnet.no_grad(): ...`` or ``@minnet.no_grad()`` on a function (each call runs under
    it). Nesting is allowed; leaving restores the previous state, also on an exception.
    A ``backward`` whose only forward ran under ``no_grad`` raises ``ValueError`` naming the layer.
    """

    def __init__(self) -> None:
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        self._prev.append(_mode.enabled)
        _mode.enabled = False

    def __exit__(self, *exc: object) -> None:
        _mode.enabled = self._prev.pop()

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

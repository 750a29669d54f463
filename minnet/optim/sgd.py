r"""SGD with momentum, dampening, Nesterov and weight decay: the class, its Numba kernel and a
plain-NumPy reference, side by side. The baseline without eps.

One step ``t`` (counting from 1), in PyTorch's order of operations (``torch.optim.SGD``):

    g = -grad if maximize else grad
    g = g + weight_decay * param                              (only if weight_decay != 0)
    b = g                                                     (t = 1: momentum_buffer = g)
    b = momentum * b + (1 - dampening) * g                    (t > 1)
    g = g + momentum * b if nesterov else b                   (only if momentum != 0)
    param = param + (-lr) * g

The first step's ``b = g`` is computed as ``0 * b + 1 * g`` on a zero buffer, which is exactly
``g``; the per-step constants (``SGDScalars``) carry ``momentum = 0`` and ``1 - dampening = 1``
for that step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numba
import numpy as np

from minnet.nn import Parameter
from minnet.optim._flat import sum_squares
from minnet.optim.optimizer import (
    Optimizer,
    check_bool,
    check_lr,
    check_momentum,
    check_real,
    check_weight_decay,
)

__all__ = ["SGD", "SGDScalars", "sgd_scalars", "sgd_kernel_for", "sgd_step_reference"]


class SGDScalars(NamedTuple):
    """Per-step constants of the SGD update, already in the arrays' dtype."""

    neg_lr: np.floating  # -lr
    sign: np.floating  # -1 if maximize else 1
    weight_decay: np.floating
    momentum: np.floating  # the buffer's decay this step: 0 at t = 1, else momentum
    one_minus_dampening: np.floating  # the gradient's weight in the buffer: 1 at t = 1
    nesterov_momentum: np.floating  # momentum, for Nesterov's g + momentum * b


def sgd_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    maximize: bool,
    step: int,
) -> SGDScalars:
    """Step ``step``'s constants, computed in float64 and cast to ``dtype``."""
    first = step == 1
    with np.errstate(over="ignore"):
        c = np.array(
            [-lr, -1.0 if maximize else 1.0, weight_decay, 0.0 if first else momentum,
             1.0 if first else 1.0 - dampening, momentum],
            dtype,
        ).tolist()  # fmt: skip
    t = dtype.type
    return SGDScalars(t(c[0]), t(c[1]), t(c[2]), t(c[3]), t(c[4]), t(c[5]))


@numba.njit(inline="always", error_model="numpy")
def _loop(param, grad, buf, scratch, s, has_momentum, nesterov, track, write):  # pragma: no cover
    """The pass over all coordinates; the flags are compile-time constants."""
    n_nonfinite = 0
    for i in range(param.shape[0]):
        g = grad[i] * s.sign
        p = param[i]
        if s.weight_decay != 0:
            g = g + s.weight_decay * p
        if has_momentum:
            b = buf[i] * s.momentum
            b = b + s.one_minus_dampening * g
            if nesterov:
                g = g + s.nesterov_momentum * b
            else:
                g = b
            if write:
                buf[i] = b
        delta = s.neg_lr * g
        new = p + delta
        if track:
            n_nonfinite += not np.isfinite(new)
            scratch[i] = delta
        if write:
            param[i] = new
    if not track:
        return 0, 0, 0.0
    return 0, n_nonfinite, sum_squares(scratch, param.shape[0])


def sgd_kernel_for(
    has_momentum: bool, nesterov: bool, track: bool, write: bool
) -> Callable[..., tuple]:
    """The compiled kernel for one variant: ``kernel(param, grad[, momentum_buffer], scratch,
    scalars) -> (0, n_nonfinite, sum_sq_update)`` (the buffer only with momentum). No eps, so
    the eps-dominated count is always 0."""
    return _sgd_kernel_for(bool(has_momentum), bool(nesterov), bool(track), bool(write))


@functools.cache
def _sgd_kernel_for(has_momentum: bool, nesterov: bool, track: bool, write: bool) -> Callable:
    if has_momentum:

        @numba.njit(cache=True, error_model="numpy", nogil=True)
        def kernel_momentum(param, grad, buf, scratch, s):  # pragma: no cover
            return _loop(param, grad, buf, scratch, s, True, nesterov, track, write)

        return kernel_momentum

    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def kernel(param, grad, scratch, s):  # pragma: no cover
        return _loop(param, grad, grad, scratch, s, False, False, track, write)

    return kernel


def sgd_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    scalars: SGDScalars,
    nesterov: bool,
) -> None:
    """The same update with whole-array NumPy (``momentum_buffer`` is ``None`` without
    momentum), in place."""
    s = scalars
    with np.errstate(all="ignore"):
        g = grad * s.sign
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        if momentum_buffer is not None:
            momentum_buffer *= s.momentum
            momentum_buffer += s.one_minus_dampening * g
            g = g + s.nesterov_momentum * momentum_buffer if nesterov else momentum_buffer
        param += s.neg_lr * g


class SGD(Optimizer):
    r"""Stochastic gradient descent with PyTorch's exact semantics (``torch.optim.SGD``).

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param                         (L2 penalty in the gradient)
        b = g                                                (first step)
        b = momentum * b + (1 - dampening) * g               (later steps)
        g = g + momentum * b  (nesterov)   or   g = b        (when momentum != 0)
        param = param - lr * g

    There is no eps: ``stats.eps_dominated`` is always 0 and :meth:`multipliers` is ``None``.
    The state array ``"momentum_buffer"`` exists only when ``momentum != 0`` (so ``momentum``
    cannot change between zero and non-zero after the group is created). Parameter groups,
    ``state_dict``, ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s; its state dict also stores each parameter's
    ``"step"`` (PyTorch's SGD keeps none).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        momentum: momentum factor, ``>= 0``. Default ``0``.
        dampening: dampening of the gradient's weight in the buffer. Default ``0``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        maximize: maximize the objective (ascend the gradient). Default ``False``.
        track_stats: record :class:`~minnet.optim.optimizer.OptimizerStats` in every step.
        check_finite: refuse a step that would make a parameter NaN or infinite.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        track_stats: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults, track_stats=track_stats, check_finite=check_finite)

    def _validate(self, group: Mapping[str, Any]) -> dict[str, Any]:
        lr = check_lr(group["lr"])
        momentum = check_momentum(group["momentum"])
        weight_decay = check_weight_decay(group["weight_decay"])
        dampening = check_real("dampening", group["dampening"])
        if not math.isfinite(dampening):
            raise ValueError(f"Invalid dampening value: {group['dampening']}")
        nesterov = check_bool("nesterov", group["nesterov"])
        maximize = check_bool("maximize", group["maximize"])
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        return {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if group["momentum"] != 0 else {}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> SGDScalars:
        return sgd_scalars(
            dtype,
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            step=step,
        )

    def _kernel(self, group: Mapping[str, Any], track: bool, write: bool) -> Callable[..., Any]:
        return sgd_kernel_for(group["momentum"] != 0, group["nesterov"], track, write)

    def _reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        nesterov = group["nesterov"]

        def reference(param, grad, *rest):  # type: ignore[no-untyped-def]
            buf, scalars = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
            sgd_step_reference(param, grad, buf, scalars, nesterov)

        return reference

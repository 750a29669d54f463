r"""Lion: the class, its fused Numba kernel and a plain-NumPy reference, side by side.

Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") steps by the *sign* of
an interpolation between the momentum and the gradient, so every coordinate moves by exactly
``lr`` (plus weight decay): there is no denominator and no eps. This is ``optax.lion`` (optax
0.2.8: ``scale_by_lion`` -> ``add_decayed_weights`` -> ``scale_by_learning_rate``) and Keras 3's
``keras.optimizers.Lion``. PyTorch has no Lion; the one state array is named ``"exp_avg"``
(optax's ``mu``, Keras's ``momentum``).

One step, in optax's order of operations (float64 agrees with optax to round-off):

    c     = sign((1 - beta1) * g + beta1 * m)      sign(0) = 0, sign(NaN) = NaN
    m     = (1 - beta2) * g + beta2 * m             (the momentum uses beta2, the step beta1)
    u     = c + weight_decay * param                (only if weight_decay != 0, as optax)
    param = param + u * (-lr)

The weight decay is decoupled and scaled by lr (AdamW-style). Keras applies it as a separate
``param -= lr * weight_decay * param`` before the sign step: the same update up to round-off.
A coordinate whose gradient has always been zero has ``c = 0`` and only decays.

Library defaults differ: optax's ``lion`` has ``weight_decay=1e-3`` (and no default lr), Keras's
``Lion`` has ``learning_rate=1e-3`` and no weight decay and requires ``0 < beta_1 <= 1``;
minnet's defaults are ``lr=1e-4``, ``betas=(0.9, 0.99)``, ``weight_decay=0`` (the paper suggests
an lr 3-10x smaller than AdamW's and a weight decay 3-10x larger).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numba
import numpy as np

from minnet.nn import Parameter
from minnet.optim._flat import sum_squares
from minnet.optim.optimizer import Optimizer, check_betas, check_lr, check_weight_decay

__all__ = ["Lion", "LionScalars", "lion_scalars", "lion_kernel_for", "lion_step_reference"]


class LionScalars(NamedTuple):
    """Per-step constants of the Lion update, already in the arrays' dtype."""

    one_minus_beta1: np.floating  # the gradient's weight in the sign's argument
    beta1: np.floating
    one_minus_beta2: np.floating  # the gradient's weight in the momentum
    beta2: np.floating
    weight_decay: np.floating
    neg_lr: np.floating  # -lr


def lion_scalars(
    dtype: np.dtype, *, lr: float, beta1: float, beta2: float, weight_decay: float
) -> LionScalars:
    """The constants (the same at every step), computed in float64 and cast to ``dtype``."""
    with np.errstate(over="ignore"):
        c = np.array([1.0 - beta1, beta1, 1.0 - beta2, beta2, weight_decay, -lr], dtype).tolist()
    t = dtype.type
    return LionScalars(*(t(x) for x in c))


@numba.njit(inline="always", error_model="numpy")
def _loop(param, grad, exp_avg, scratch, s, track, write):  # pragma: no cover - compiled
    """The pass over all coordinates; ``track`` and ``write`` are compile-time constants."""
    n_nonfinite = 0
    for i in range(param.shape[0]):
        g = grad[i]
        m = exp_avg[i]
        p0 = param[i]
        # np.sign gives 0 at 0 and NaN at NaN (Numba keeps the sign of -0.0; harmless here).
        u = np.sign(s.one_minus_beta1 * g + s.beta1 * m)
        m = s.one_minus_beta2 * g + s.beta2 * m
        if s.weight_decay != 0:
            u = u + s.weight_decay * p0
        delta = u * s.neg_lr
        p = p0 + delta
        if track:
            n_nonfinite += not np.isfinite(p)
            scratch[i] = delta
        if write:
            param[i] = p
            exp_avg[i] = m
    if not track:
        return 0, 0, 0.0
    return 0, n_nonfinite, sum_squares(scratch, param.shape[0])


def lion_kernel_for(track: bool, write: bool) -> Callable[..., tuple]:
    """The compiled kernel for one variant: ``kernel(param, grad, exp_avg, scratch, scalars)
    -> (0, n_nonfinite, sum_sq_update)``. No eps, so the eps-dominated count is always 0. The
    flags are closure constants (the plain update is branch-free and vectorizes)."""
    return _lion_kernel_for(bool(track), bool(write))


@functools.cache
def _lion_kernel_for(track: bool, write: bool) -> Callable:
    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def kernel(param, grad, exp_avg, scratch, s):  # pragma: no cover
        return _loop(param, grad, exp_avg, scratch, s, track, write)

    return kernel


def lion_step_reference(
    param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, scalars: LionScalars
) -> None:
    """The same update with whole-array NumPy, in place (tests hold the kernel to it)."""
    s = scalars
    with np.errstate(all="ignore"):
        u = np.sign(s.one_minus_beta1 * grad + s.beta1 * exp_avg)
        exp_avg[...] = s.one_minus_beta2 * grad + s.beta2 * exp_avg
        if s.weight_decay != 0:
            u = u + s.weight_decay * param
        param += u * s.neg_lr


class Lion(Optimizer):
    r"""Lion (EvoLved Sign Momentum) with optax's exact semantics (``optax.lion``), and Keras 3's
    ``keras.optimizers.Lion``, as one fused Numba kernel.

    With ``g`` the gradient and ``m``/``exp_avg`` the momentum (starts at zero):

    .. code-block:: text

        c      = sign(beta1 * m + (1 - beta1) * g)      (sign(0) = 0)
        m      = beta2 * m + (1 - beta2) * g
        param  = param - lr * (c + weight_decay * param)   (decoupled weight decay)

    There is no eps: ``stats.eps_dominated`` is always 0, :meth:`eps_compared_with` and
    :meth:`~minnet.optim.optimizer.Optimizer.multipliers` are ``None``. Every coordinate with a
    non-zero sign argument moves by exactly ``lr`` (before weight decay), so Lion wants a
    smaller lr than Adam. A NaN gradient gives a NaN parameter (``check_finite`` refuses it).

    Defaults: minnet ``lr=1e-4, betas=(0.9, 0.99), weight_decay=0``; optax's ``lion`` has
    ``weight_decay=1e-3`` by default (pass it to match), Keras's ``Lion`` ``learning_rate=1e-3``.
    PyTorch has no Lion: the state dict uses PyTorch's layout with the name ``"exp_avg"``.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-4``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``: ``beta1`` mixes the step's sign
            argument, ``beta2`` the momentum. Default ``(0.9, 0.99)``.
        weight_decay: decoupled weight decay, scaled by lr, ``>= 0``. Default ``0``.
        track_stats: record :class:`~minnet.optim.optimizer.OptimizerStats` in every step.
        check_finite: refuse a step that would make a parameter NaN or infinite.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        track_stats: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay}
        super().__init__(params, defaults, track_stats=track_stats, check_finite=check_finite)

    def _validate(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "lr": check_lr(group["lr"]),
            "betas": check_betas(group["betas"]),
            "weight_decay": check_weight_decay(group["weight_decay"]),
        }

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> LionScalars:
        beta1, beta2 = group["betas"]
        return lion_scalars(
            dtype, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"]
        )

    def _kernel(self, group: Mapping[str, Any], track: bool, write: bool) -> Callable[..., Any]:
        return lion_kernel_for(track, write)

    def _reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        return lion_step_reference

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

16-bit parameters and state (``state_dtype``; see :mod:`minnet.optim.optimizer`): the kernel
reads float16/bfloat16 buffers as ``uint16`` bit patterns, computes the step above in float32
and rounds each stored value once (``rounding="fused"``, optax with float32 promotion).
``rounding="per_op"`` is refused: it means PyTorch's op-by-op rounding, and PyTorch has no
Lion (no library fixture exists for Lion in 16-bit either). Lion has no eps and no second
moment, so nothing underflows into a denominator; what 16-bit storage does to it is lose
updates: every step moves a coordinate by ``lr``, and in bfloat16 ``1.0 - 1e-4`` is ``1.0``
(``stats.lost_updates`` counts them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_betas,
    check_lr,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Lion"]


class LionScalars(NamedTuple):
    """Per-step constants of the Lion update, already in the arrays' dtype."""

    one_minus_beta1: np.floating  # the gradient's weight in the sign's argument
    beta1: np.floating
    one_minus_beta2: np.floating  # the gradient's weight in the momentum
    beta2: np.floating
    weight_decay: np.floating
    neg_lr: np.floating  # -lr


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options, no per_op
    model (refused by the class)."""
    m = state[0]
    # np.sign gives 0 at 0 and NaN at NaN; Numba's keeps the sign of -0.0 and NumPy's does not,
    # so "+ 0" turns -0.0 into 0.0 (a -0.0 parameter then stays -0.0, as in NumPy).
    u = np.sign(s.one_minus_beta1 * g + s.beta1 * m) + (s.beta1 - s.beta1)
    m = s.one_minus_beta2 * g + s.beta2 * m
    if s.weight_decay != 0:
        u = u + s.weight_decay * p
    delta = u * s.neg_lr
    return p, p + delta, (m,), delta, delta, False, g


#: Lion's element rule (no eps, no second moment).
RULE = Rule(update)


def lion_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: LionScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg = state[0]
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
        state_dtype: dtype of ``exp_avg`` (``None``: the parameter's; float16, bfloat16 or
            float32 with 16-bit parameters).
        rounding: ``"fused"`` (default; float32 compute, one rounding per stored value). With
            16-bit buffers ``"per_op"`` raises ``ValueError``: PyTorch has no Lion whose
            op-by-op rounding it would follow.

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
        **options: Unpack[Options],
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay}
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(lion_reference)
    checks = {"lr": check_lr, "betas": check_betas, "weight_decay": check_weight_decay}

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> LionScalars:
        beta1, beta2 = group["betas"]
        return cast_scalars(LionScalars, dtype, 1.0 - beta1, beta1, 1.0 - beta2, beta2,
                            group["weight_decay"], -group["lr"])  # the same at every step

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Lion"

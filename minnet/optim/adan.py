r"""Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
Deep Models"): the class, its element rule and a plain-NumPy reference, side by side. optax's
``optax.adan`` (optax 0.2.8: ``scale_by_adan``, ``add_decayed_weights``,
``scale_by_learning_rate``).

Adan estimates the Nesterov-extrapolated gradient without evaluating it: besides Adam's two
moments it keeps an EMA of the *differences* of consecutive gradients, adds it to the first
moment, and feeds the second moment with ``g + (1 - beta2) * (g - g_prev)``. The update is in
:class:`Adan`'s docstring, in optax's order of operations, so that float64 agrees with optax
to round-off. PyTorch and Keras 3 have no Adan. The state names are those of the authors'
PyTorch implementation (sail-sg/Adan) where it keeps the same quantity, optax's field names
otherwise:

    exp_avg       = optax's ``m``: EMA of gradients
    exp_avg_diff  = optax's ``v``: EMA of gradient differences ``g - g_prev``
    exp_avg_sq    = optax's ``n``: EMA of ``(g + (1 - beta2) * (g - g_prev))**2``
    g             = optax's ``g``: the previous step's gradient (the authors keep its negative,
                    ``neg_pre_grad``, so the name is optax's)

Two epsilons: ``eps_root`` *inside* the square root (1e-8 in optax's alias, although
``scale_by_adan`` defaults it to 0), ``eps`` *outside* it. Both are hyperparameters here; the
lab's eps is ``eps``.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (optax with float32 promotion). ``rounding="per_op"`` is refused: it means PyTorch's
op-by-op rounding, and PyTorch has no Adan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, sqrt_plus_eps
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_betas3,
    check_eps,
    check_lr,
    check_nonnegative,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Adan"]


class AdanScalars(NamedTuple):
    """Per-step constants of the Adan update, already in the arrays' dtype."""

    has_prev: np.floating  # 0 at the first step (optax: diff = 0 while t == 0), else 1
    one_minus_beta1: np.floating
    beta1: np.floating
    one_minus_beta2: np.floating  # also the weight of diff in the squared term and of v_hat
    beta2: np.floating
    one_minus_beta3: np.floating
    beta3: np.floating
    bc1: np.floating  # 1 - beta1**t: m_hat = m / bc1
    bc2: np.floating  # 1 - beta2**t: v_hat = v / bc2
    bc3: np.floating  # 1 - beta3**t: n_hat = n / bc3
    eps_root: np.floating  # inside the root
    eps: np.floating  # outside the root
    weight_decay: np.floating
    neg_lr: np.floating  # -lr


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options, no per_op
    model (refused by the class). The second moment sees ``g + (1 - beta2) * diff``."""
    m, v, n, prev = state[0], state[1], state[2], state[3]
    diff = (g - prev) * s.has_prev
    m = s.one_minus_beta1 * g + s.beta1 * m
    v = s.one_minus_beta2 * diff + s.beta2 * v
    sq = g + s.one_minus_beta2 * diff
    n = s.one_minus_beta3 * (sq * sq) + s.beta3 * n
    u = m / s.bc1 + s.one_minus_beta2 * (v / s.bc2)
    den, dominated = sqrt_plus_eps(n / s.bc3 + s.eps_root, s.eps)
    u = u / den
    if s.weight_decay != 0:
        u = u + s.weight_decay * p
    delta = u * s.neg_lr
    return p, p + delta, (m, v, n, g), delta, delta, dominated, sq


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * u``: ``1 / (sqrt(n_hat + eps_root) + eps)``."""
    return 1.0 / sqrt_plus_eps(state[2] / s.bc3 + s.eps_root, s.eps)[0]


#: Adan's element rule; the second moment ``exp_avg_sq`` is state 2.
RULE = Rule(update, second_moment=2, multiplier=multiplier)


def adan_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: AdanScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg, exp_avg_diff, exp_avg_sq, prev = state
    with np.errstate(all="ignore"):
        diff = (grad - prev) * s.has_prev
        exp_avg[...] = s.one_minus_beta1 * grad + s.beta1 * exp_avg
        exp_avg_diff[...] = s.one_minus_beta2 * diff + s.beta2 * exp_avg_diff
        sq = grad + s.one_minus_beta2 * diff
        exp_avg_sq[...] = s.one_minus_beta3 * (sq * sq) + s.beta3 * exp_avg_sq
        prev[...] = grad
        m_hat = exp_avg / s.bc1
        v_hat = exp_avg_diff / s.bc2
        n_hat = exp_avg_sq / s.bc3
        u = (m_hat + s.one_minus_beta2 * v_hat) / (np.sqrt(n_hat + s.eps_root) + s.eps)
        if s.weight_decay != 0:
            u = u + s.weight_decay * param
        param += u * s.neg_lr


class Adan(Optimizer):
    r"""Adan with optax's exact semantics (``optax.adan``, optax 0.2.8), as one fused Numba
    kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``g`` the gradient and
    ``g_prev`` the previous step's (the state ``g``), all four state arrays starting at 0:

    .. code-block:: text

        diff  = g - g_prev                    (0 at t = 1: optax's where(t == 0, 0, g - g_prev))
        m     = (1 - beta1) * g + beta1 * m                           (exp_avg)
        v     = (1 - beta2) * diff + beta2 * v                        (exp_avg_diff)
        n     = (1 - beta3) * (g + (1 - beta2) * diff)**2 + beta3 * n (exp_avg_sq)
        u     = m / (1 - beta1**t) + (1 - beta2) * (v / (1 - beta2**t))
        u     = u / (sqrt(n / (1 - beta3**t) + eps_root) + eps)
        param = param - lr * (u + weight_decay * param)

    **The first step.** optax's state keeps the previous gradient, initialised to zeros, and
    its step treats the difference as 0 while its count is 0 (not ``g - 0``): the first step is
    ``m_hat = g``, ``v_hat = 0``, ``n_hat = g**2``, so ``param -= lr * g / (sqrt(g**2 +
    eps_root) + eps)``, a sign-like step of size about ``lr``. Here the difference is
    ``(g - g_prev) * has_prev`` with ``has_prev = 0`` at step 1, which equals optax's 0 for any
    finite gradient.

    **Where eps sits.** ``eps_root`` *inside* the square root, after the bias correction of
    ``n``; ``eps`` *outside* it. optax's alias sets both to ``1e-8`` (``scale_by_adan`` alone
    defaults ``eps_root`` to 0). ``eps_root`` alone keeps the denominator at least
    ``sqrt(eps_root)`` (1e-4 for the default), so it dominates ``eps`` wherever ``n_hat`` is
    small; with ``eps_root=0``, ``eps`` is Adam's. A coordinate whose gradient has always been 0
    has ``n = 0`` and gets ``0 / (sqrt(eps_root) + eps)``: 0/0 = NaN only with ``eps =
    eps_root = 0``, as in optax. ``stats.eps_dominated`` counts coordinates where ``eps >=
    sqrt(n_hat + eps_root)``.

    **Weight decay** is optax's ``add_decayed_weights`` between ``scale_by_adan`` and the
    learning rate: added to the update and scaled by ``lr`` (decoupled from the moments, as
    AdamW's). optax's docstring writes the paper's proximal form ``(param - lr * u) / (1 +
    lr * weight_decay)`` and its first moment as ``(1 - beta1) * m + beta1 * g``; its code, which
    this follows (and the fixtures record), does neither: the EMA weights are as above
    (``b1=0.98`` is the old gradient's weight) and the decay is additive. optax's ``mask`` (which
    parameters decay) is a parameter group with ``weight_decay=0`` here.

    Defaults are optax's alias, ``adan(learning_rate, b1=0.98, b2=0.92, b3=0.99, eps=1e-8,
    eps_root=1e-8, weight_decay=0.0)``, which has no default learning rate; minnet's
    ``lr=1e-3`` is the authors' PyTorch implementation's (sail-sg/Adan; its ``betas`` are the
    same, its eps has no ``eps_root`` and its weight decay is the proximal form).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2, beta3)``, each in ``[0, 1)`` (optax's ``b1``, ``b2``, ``b3``).
            Default ``(0.98, 0.92, 0.99)``.
        eps: added to the square root, ``>= 0``. Default ``1e-8``.
        eps_root: added to ``n_hat`` inside the square root, ``>= 0``. Default ``1e-8``.
        weight_decay: added to the update as ``weight_decay * param`` and scaled by lr,
            ``>= 0``. Default ``0``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no Adan whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected): ``Invalid learning rate: ...``, ``Invalid beta parameter at index i:
            ...``, ``Invalid epsilon value: ...``, ``Invalid eps_root value: ...``,
            ``Invalid weight_decay value: ...``.
        TypeError: on a hyperparameter of the wrong type, or an unknown keyword.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        eps_root: float = 1e-8,
        weight_decay: float = 0.0,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, eps_root=eps_root,
                        weight_decay=weight_decay)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(adan_reference)
    _eps_options = ("eps", "eps_root")
    checks = {"lr": check_lr, "betas": check_betas3, "eps": check_eps,
              "eps_root": partial(check_nonnegative, "eps_root"),
              "weight_decay": check_weight_decay}  # fmt: skip

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_diff": 0.0, "exp_avg_sq": 0.0, "g": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdanScalars:
        beta1, beta2, beta3 = group["betas"]
        t = float(step)
        return cast_scalars(AdanScalars, dtype, 0.0 if step == 1 else 1.0, 1.0 - beta1, beta1,
                            1.0 - beta2, beta2, 1.0 - beta3, beta3, 1.0 - beta1**t,
                            1.0 - beta2**t, 1.0 - beta3**t, group["eps_root"], group["eps"],
                            group["weight_decay"], -group["lr"])  # fmt: skip

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Adan"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(n_hat + eps_root)"`` (``"sqrt(n_hat)"`` with ``eps_root=0``): the lab's eps
        is ``eps``, added to the root of the bias-corrected second moment plus ``eps_root``
        (which a sweep of eps leaves at its own value)."""
        if options.get("eps_root", 0.0):
            return "sqrt(n_hat + eps_root)"
        return "sqrt(n_hat)"

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        if group["eps_root"] != 0:  # the denominator is at least sqrt(eps_root)
            return None
        return super()._nonfinite_cause(group, name, grad, state)

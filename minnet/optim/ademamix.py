r"""AdEMAMix (Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better, Faster, Older"): the
class, its element rule and a plain-NumPy reference, side by side. optax's
``optax.contrib.ademamix`` (optax 0.2.8: ``scale_by_ademamix``, ``add_decayed_weights``,
``scale_by_learning_rate``).

AdamW with a mixture of two first moments: a fast EMA of the gradient (``beta1``, bias-corrected,
Adam's ``m``) plus ``alpha`` times a slow one (``beta3``, close to 1, *not* bias-corrected, so it
fills slowly and remembers gradients from thousands of steps ago), over Adam's root of the
second moment. The update is in :class:`AdEMAMix`'s docstring, in optax's order of operations,
so that float64 agrees with optax to round-off. PyTorch and Keras 3 have no AdEMAMix; the state
names are those of the authors' PyTorch implementation (apple/ml-ademamix):

    exp_avg_fast  = optax's ``m1``: the fast EMA of gradients
    exp_avg_slow  = optax's ``m2``: the slow EMA of gradients
    exp_avg_sq    = optax's ``nu``: EMA of squared gradients

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (optax with float32 promotion). ``rounding="per_op"`` is refused: it means PyTorch's
op-by-op rounding, and PyTorch has no AdEMAMix.
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
    check_real,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AdEMAMix"]


class AdEMAMixScalars(NamedTuple):
    """Per-step constants of the AdEMAMix update, already in the arrays' dtype."""

    one_minus_beta1: np.floating
    beta1: np.floating
    one_minus_beta3: np.floating  # the gradient's weight in the slow EMA
    beta3: np.floating
    one_minus_beta2: np.floating
    beta2: np.floating
    bc1: np.floating  # 1 - beta1**t: m1_hat = m1 / bc1 (the slow EMA is not corrected)
    bc2: np.floating  # 1 - beta2**t: nu_hat = nu / bc2
    alpha: np.floating  # the slow EMA's weight
    eps_root: np.floating  # inside the root
    eps: np.floating  # outside the root
    weight_decay: np.floating
    neg_lr: np.floating  # -lr


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options, no per_op
    model (refused by the class)."""
    m1 = s.one_minus_beta1 * g + s.beta1 * state[0]
    m2 = s.one_minus_beta3 * g + s.beta3 * state[1]
    nu = s.one_minus_beta2 * (g * g) + s.beta2 * state[2]
    den, dominated = sqrt_plus_eps(nu / s.bc2 + s.eps_root, s.eps)
    u = (m1 / s.bc1 + s.alpha * m2) / den
    if s.weight_decay != 0:
        u = u + s.weight_decay * p
    delta = u * s.neg_lr
    return p, p + delta, (m1, m2, nu), delta, delta, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * (m1_hat + alpha * m2)``: ``1 / (sqrt(nu_hat + eps_root)
    + eps)``."""
    return 1.0 / sqrt_plus_eps(state[2] / s.bc2 + s.eps_root, s.eps)[0]


#: AdEMAMix's element rule; the second moment ``exp_avg_sq`` is state 2.
RULE = Rule(update, second_moment=2, multiplier=multiplier)


def ademamix_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: AdEMAMixScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    fast, slow, exp_avg_sq = state
    with np.errstate(all="ignore"):
        fast[...] = s.one_minus_beta1 * grad + s.beta1 * fast
        slow[...] = s.one_minus_beta3 * grad + s.beta3 * slow
        exp_avg_sq[...] = s.one_minus_beta2 * grad**2 + s.beta2 * exp_avg_sq
        m1_hat = fast / s.bc1
        nu_hat = exp_avg_sq / s.bc2
        u = (m1_hat + s.alpha * slow) / (np.sqrt(nu_hat + s.eps_root) + s.eps)
        if s.weight_decay != 0:
            u = u + s.weight_decay * param
        param += u * s.neg_lr


def _check_alpha(alpha: object) -> float:
    """``alpha``: a finite real number (optax allows any; a NaN or infinite weight is refused)."""
    v = check_real("alpha", alpha)
    if not -np.inf < v < np.inf:
        raise ValueError(f"Invalid alpha value: {alpha}")
    return v


class AdEMAMix(Optimizer):
    r"""AdEMAMix with optax's exact semantics (``optax.contrib.ademamix``, optax 0.2.8), as one
    fused Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``g`` the gradient and the
    three state arrays starting at 0:

    .. code-block:: text

        m1    = (1 - beta1) * g + beta1 * m1                    (exp_avg_fast)
        m2    = (1 - beta3) * g + beta3 * m2                    (exp_avg_slow)
        nu    = (1 - beta2) * g**2 + beta2 * nu                 (exp_avg_sq)
        u     = (m1 / (1 - beta1**t) + alpha * m2) / (sqrt(nu / (1 - beta2**t) + eps_root) + eps)
        param = param - lr * (u + weight_decay * param)

    ``m2`` is not bias-corrected (optax and the paper: the slow EMA fills itself slowly, so
    ``alpha * m2`` starts near 0 and grows over about ``1 / (1 - beta3)`` steps).

    **Where eps sits.** ``eps`` *outside* the square root, after the bias correction of ``nu``,
    as Adam's; ``eps_root`` *inside* it (0 in optax's alias). With ``eps = eps_root = 0`` a
    coordinate whose gradient has always been 0 divides 0 by 0 (NaN, as in optax).
    ``stats.eps_dominated`` counts coordinates where ``eps >= sqrt(nu_hat + eps_root)``. Note
    that eps divides ``m1_hat + alpha * m2``, up to ``1 + alpha`` (6 for the defaults) times
    Adam's numerator, so where eps dominates the step is up to ``(1 + alpha) * lr / eps *
    |g|``.

    **Weight decay** is optax's ``add_decayed_weights`` after ``scale_by_ademamix``: added to
    the update and scaled by ``lr`` (AdamW's decoupled decay). optax's ``mask`` is a parameter
    group with ``weight_decay=0`` here; its ``mu_dtype`` is ``state_dtype``.

    **Schedules are left out.** optax accepts ``b3`` and ``alpha`` as schedules (callables of
    its ``count_m2``, the number of steps before this one; the paper warms both up); here they
    are constants. A schedule is applied the way PyTorch's lr schedules are: set
    ``optimizer.param_groups[i]["alpha"]`` (or ``["betas"]``) before each :meth:`step` to the
    schedule's value at step ``t - 1``; the next step validates and uses it.

    Defaults are optax's alias, ``ademamix(learning_rate, b1=0.9, b2=0.999, b3=0.9999,
    alpha=5.0, eps=1e-8, eps_root=0.0, weight_decay=0.0)``, which has no default learning
    rate (``scale_by_ademamix`` alone has ``alpha=6.0``); minnet's ``lr=1e-3`` is the authors'
    PyTorch implementation's (apple/ml-ademamix; its default ``alpha`` is 2.0, with warm-ups).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2, beta3)``, each in ``[0, 1)``: the fast EMA, the second moment,
            the slow EMA (optax's ``b1``, ``b2``, ``b3``). Default ``(0.9, 0.999, 0.9999)``.
        alpha: the slow EMA's weight, a finite real number. Default ``5.0``.
        eps: added to the square root, ``>= 0``. Default ``1e-8``.
        eps_root: added to ``nu_hat`` inside the square root, ``>= 0``. Default ``0``.
        weight_decay: added to the update as ``weight_decay * param`` and scaled by lr,
            ``>= 0``. Default ``0``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no AdEMAMix whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected): ``Invalid learning rate: ...``, ``Invalid beta parameter at index i:
            ...``, ``Invalid alpha value: ...``, ``Invalid epsilon value: ...``, ``Invalid
            eps_root value: ...``, ``Invalid weight_decay value: ...``.
        TypeError: on a hyperparameter of the wrong type, or an unknown keyword.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        eps: float = 1e-8,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, alpha=alpha, eps=eps, eps_root=eps_root,
                        weight_decay=weight_decay)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(ademamix_reference)
    _eps_options = ("eps", "eps_root")
    checks = {"lr": check_lr, "betas": check_betas3, "alpha": _check_alpha, "eps": check_eps,
              "eps_root": partial(check_nonnegative, "eps_root"),
              "weight_decay": check_weight_decay}  # fmt: skip

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg_fast": 0.0, "exp_avg_slow": 0.0, "exp_avg_sq": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdEMAMixScalars:
        beta1, beta2, beta3 = group["betas"]
        t = float(step)
        return cast_scalars(AdEMAMixScalars, dtype, 1.0 - beta1, beta1, 1.0 - beta3, beta3,
                            1.0 - beta2, beta2, 1.0 - beta1**t, 1.0 - beta2**t, group["alpha"],
                            group["eps_root"], group["eps"], group["weight_decay"],
                            -group["lr"])  # fmt: skip

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "AdEMAMix"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(nu_hat)"`` (``"sqrt(nu_hat + eps_root)"`` with ``eps_root > 0``): eps is
        added to the root of the bias-corrected second moment."""
        if options.get("eps_root", 0.0):
            return "sqrt(nu_hat + eps_root)"
        return "sqrt(nu_hat)"

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        if group["eps_root"] != 0:  # the denominator is at least sqrt(eps_root)
            return None
        return super()._nonfinite_cause(group, name, grad, state)

r"""NAdam (Adam with Nesterov momentum, Dozat 2016): the class, its Numba kernel and a
plain-NumPy reference, side by side. PyTorch's ``torch.optim.NAdam``.

The update is in :class:`NAdam`'s docstring, in PyTorch's order of operations (its single-tensor
path), so that float64 agrees with it to round-off. ``mu_t``, ``mu_{t+1}``, ``P = mu_product``
and the two coefficients ``c_g = -lr * (1 - mu_t) / (1 - P)`` and ``c_m = -lr * mu_{t+1} / (1 -
P * mu_{t+1})`` are computed once per step in float64 (PyTorch keeps ``P`` as a tensor of the
default dtype, float64 in its recorded fixtures) and cast to the arrays' dtype. ``P`` is the
group's scalar state ``"mu_product"``: kept across steps (not recomputed from ``t``, so a change
of ``betas`` or ``momentum_decay`` mid-run acts as in PyTorch) and in every parameter's
state-dict entry, PyTorch's layout: ``"step"``, ``"mu_product"``, ``"exp_avg"``,
``"exp_avg_sq"``.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once; ``rounding="per_op"`` rounds each op's result, as the rule's ``round_to`` calls mark, to the
dtype of the tensor PyTorch's ``_single_tensor_nadam`` writes it to (the denominator is a new
tensor of the state dtype, so eps=1e-8 is 0 there in float16 and a ``v`` below about 5e-3
underflows: "per_op" divides by 0 where "fused" stays finite). No PyTorch fixture covers NAdam in
16-bit: "per_op" is a transcription of PyTorch's source (its op order and float32 op-math),
checked against the NumPy reference, not against recorded PyTorch runs.

``variant="optax"`` is optax's NAdam (``optax.nadam``, ``optax.nadamw`` with weight decay;
optax 0.2.8): Adam with Nesterov's first moment (``scale_by_adam(..., nesterov=True)``), no
``mu_t`` schedule; the fused model only (``"per_op"`` refused: PyTorch has no such NAdam).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet._lowp import NATIVE, round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.adam import moments, moments_reference
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_betas,
    check_choice,
    check_eps,
    check_lr,
    check_nonnegative,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["NAdam", "NADAM_VARIANTS"]

#: The values of ``variant``: PyTorch's NAdam (default) and optax's.
NADAM_VARIANTS = ("torch", "optax")
TORCH, OPTAX = 0, 1


class NAdamScalars(NamedTuple):
    """Per-step constants of the NAdam update, already in the arrays' dtype."""

    lerp_w: np.floating  # 1 - beta1
    one_minus_lerp_w: np.floating  # beta1, for PyTorch's lerp when lerp_w >= 0.5
    beta2: np.floating
    one_minus_beta2: np.floating
    bc2: np.floating  # 1 - beta2**t: v_hat = v / bc2
    eps: np.floating
    coef_grad: np.floating  # c_g = -lr * (1 - mu_t) / (1 - P_t)
    coef_avg: np.floating  # c_m = -lr * mu_{t+1} / (1 - P_t * mu_{t+1})
    weight_decay: np.floating  # the L2 term folded into g (0 when decoupled)
    decay: np.floating  # param *= decay first: 1 - lr*weight_decay when decoupled, else 1
    beta1: np.floating  # variant="optax": m_hat = beta1 * m / bc1_next + (1 - beta1) * g / bc1
    bc1: np.floating  # 1 - beta1**t
    bc1_next: np.floating  # 1 - beta1**(t+1)
    neg_lr: np.floating  # -lr


def nadam_mu(beta1: float, momentum_decay: float, step: int) -> float:
    """The momentum coefficient ``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``
    of step ``t = step``, in float64 (PyTorch's expression)."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (float(step) * momentum_decay)))


# -- the element rule ---------------------------------------------------------------------------


@element
def denominator(v, s, rs):  # pragma: no cover - compiled
    """``(sqrt(v / bc2) + eps, eps >= sqrt(v / bc2))``, rounded as PyTorch's for-loop NAdam
    under ``"per_op"``: the one place NAdam's eps is written."""
    root = round_to(np.sqrt(round_to(v / s.bc2, rs)), rs)  # exp_avg_sq.div(bc2).sqrt()
    return round_to(root + s.eps, rs), s.eps >= root  # .add_(eps)


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (decoupled,
    variant)``. Under ``"per_op"`` every op's result is rounded as the module docstring lists."""
    decoupled, variant = o
    p_in, g, m, v = moments(p, g, state[0], state[1], s, decoupled, rp, rs)
    denom, dominated = denominator(v, s, rs)
    if variant == OPTAX:  # optax.nadam: Nesterov's m_hat, then Adam's denominator
        m_hat = s.beta1 * (m / s.bc1_next) + s.lerp_w * (g / s.bc1)
        delta = s.neg_lr * (m_hat / denom)
        new = p_in + delta
        return p_in, new, (m, v), delta, new - p, dominated, g
    new = round_to(p_in + (s.coef_grad * g) / denom, rp)  # param.addcdiv_(grad, denom, c_g)
    new = new + (s.coef_avg * m) / denom  # param.addcdiv_(exp_avg, denom, c_m)
    return p_in, new, (m, v), new - p_in, new - p, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * (mixed m_hat)``: ``1 / (sqrt(v_hat) + eps)``."""
    return 1.0 / denominator(state[1], s, NATIVE)[0]


#: NAdam's element rule; the second moment ``exp_avg_sq`` is state 1.
RULE = Rule(update, second_moment=1, multiplier=multiplier)


def nadam_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: NAdamScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg, exp_avg_sq = state
    with np.errstate(all="ignore"):
        g = moments_reference(param, grad, exp_avg, exp_avg_sq, s, o[0])  # o[0]: decoupled
        denom = np.sqrt(exp_avg_sq / s.bc2) + s.eps
        if o[1] == OPTAX:
            m_hat = s.beta1 * (exp_avg / s.bc1_next) + s.lerp_w * (g / s.bc1)
            param += s.neg_lr * (m_hat / denom)
            return
        param += (s.coef_grad * g) / denom
        param += (s.coef_avg * exp_avg) / denom


# -- the class ------------------------------------------------------------------------------


class NAdam(Optimizer):
    r"""NAdam with PyTorch's exact semantics (``torch.optim.NAdam``), as one fused Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``m``/``exp_avg`` and
    ``v``/``exp_avg_sq`` the moments (both start at 0) and ``P``/``mu_product`` the running
    product of the momentum coefficients (starts at 1):

    .. code-block:: text

        param = param * (1 - lr * weight_decay)       (decoupled_weight_decay=True)
        g     = g + weight_decay * param              (otherwise: L2 penalty in the gradient)
        mu_t  = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay));  mu_{t+1} likewise
        P     = P * mu_t
        m     = beta1 * m + (1 - beta1) * g           (computed as PyTorch's lerp)
        v     = beta2 * v + (1 - beta2) * g**2
        D     = sqrt(v / (1 - beta2**t)) + eps
        param = param - lr * (1 - mu_t) / (1 - P) * g / D
                      - lr * mu_{t+1} / (1 - P * mu_{t+1}) * m / D

    ``eps`` sits *outside* the square root and is added *after* the bias correction of ``v``,
    as in Adam (PyTorch; optax's ``nadam`` and Keras's ``Nadam`` use other momentum schedules
    and are not this formula). With ``eps=0`` a coordinate whose gradient has always been zero
    gets 0/0 = NaN, exactly as in PyTorch. The scalars ``mu_t``, ``mu_{t+1}`` and ``P`` are
    computed in float64 every step; ``P`` is kept across steps and saved in the state dict as
    each parameter's ``"mu_product"`` (PyTorch's keys: ``"step"``, ``"mu_product"``,
    ``"exp_avg"``, ``"exp_avg_sq"``).

    Parameter groups, ``state_dict``, ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s; ``stats.eps_dominated`` counts coordinates
    where ``eps >= sqrt(v_hat)``.

    **optax's NAdam** (``variant="optax"``: ``optax.nadam``, optax 0.2.8, which is
    ``optax.adam(..., nesterov=True)``; ``optax.nadamw`` with ``weight_decay`` and
    ``decoupled_weight_decay=True``) is another algorithm: no ``mu_t`` schedule
    (``momentum_decay`` is not used, ``mu_product`` is kept but not read), Nesterov's first
    moment from the bias corrections of this step and the next:

    .. code-block:: text

        m     = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g**2
        m_hat = beta1 * m / (1 - beta1**(t+1)) + (1 - beta1) * g / (1 - beta1**t)
        param = param - lr * (m_hat / (sqrt(v / (1 - beta2**t)) + eps)
                              + weight_decay * param)     (nadamw: decoupled_weight_decay=True)

    ``eps`` sits where PyTorch's does, outside the root after the bias correction (optax's
    ``eps_root``, inside the root, is 0 in the alias and not offered). Weight decay without
    ``decoupled_weight_decay`` is the L2 term in ``g`` (optax: ``add_decayed_weights`` chained
    before ``nadam``). optax's defaults: ``nadam(learning_rate, b1=0.9, b2=0.999, eps=1e-8,
    eps_root=0.0)``, ``nadamw(..., weight_decay=1e-4)``; no default learning rate. The moments
    are computed in PyTorch's order (its ``lerp``), equal to optax's to round-off; the
    fixtures hold the variant to optax within 1e-9. ``rounding="per_op"`` is refused for it.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``2e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
        eps: added to the denominator, ``>= 0``. Default ``1e-8``.
        weight_decay: L2 penalty (decay factor when decoupled), ``>= 0``. Default ``0``.
        momentum_decay: the ``psi`` of the momentum schedule, ``>= 0``. Default ``4e-3``.
        decoupled_weight_decay: decay the parameter instead of adding the L2 term to ``g``
            (NAdamW). Default ``False``.
        maximize: ascend the gradient (PyTorch's ``maximize``: the update sees ``-grad``).
            Default ``False``.
        variant: ``"torch"`` (default) or ``"optax"`` (optax's NAdam, above).
        track_stats, check_finite, state_dtype, rounding, foreach, fused, capturable,
            differentiable: :class:`~minnet.optim.optimizer.Optimizer`'s.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    # PyTorch state dicts from before decoupled_weight_decay existed lack it.
    _load_optional = ("decoupled_weight_decay", "maximize", "variant")

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        variant: str = "torch",
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                        variant=variant)
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(nadam_reference)
    checks = {"lr": check_lr, "eps": check_eps, "betas": check_betas,
              "weight_decay": check_weight_decay,
              "momentum_decay": partial(check_nonnegative, "momentum_decay"),
              "variant": partial(check_choice, "variant", choices=NADAM_VARIANTS)}

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _group_state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"mu_product": 1.0}

    def _advance_group_state(
        self, group: Mapping[str, Any], state: Mapping[str, float], step: int
    ) -> dict[str, float]:
        """``mu_product *= mu_t`` (float64)."""
        mu = nadam_mu(group["betas"][0], group["momentum_decay"], step)
        return {"mu_product": state["mu_product"] * mu}

    def _scalars(
        self,
        group: Mapping[str, Any],
        dtype: np.dtype,
        step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> NAdamScalars:
        if group_state is None:  # P_t recomputed from t (only for callers outside step())
            prod = 1.0
            for k in range(1, step + 1):
                prod *= nadam_mu(group["betas"][0], group["momentum_decay"], k)
            group_state = {"mu_product": prod}
        (beta1, beta2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
        mu = nadam_mu(beta1, group["momentum_decay"], step)
        mu_next = nadam_mu(beta1, group["momentum_decay"], step + 1)
        prod = group_state["mu_product"]  # P_t, including this step's mu_t
        coef_grad = -lr * (1.0 - mu) / (1.0 - prod)
        coef_avg = (-lr * mu_next) / (1.0 - prod * mu_next)
        decoupled = group["decoupled_weight_decay"]
        l2 = 0.0 if decoupled else wd
        decay = 1.0 - lr * wd if decoupled and wd != 0 else 1.0
        bc2 = 1.0 - beta2 ** float(step)
        t = float(step)
        return cast_scalars(NAdamScalars, dtype, 1.0 - beta1, 0.0, beta2, 1.0 - beta2, bc2,
                            group["eps"], coef_grad, coef_avg, l2, decay, beta1,
                            1.0 - beta1**t, 1.0 - beta1 ** (t + 1.0), -lr)  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (bool(group["decoupled_weight_decay"] and group["weight_decay"] != 0),
                NADAM_VARIANTS.index(group["variant"]))  # fmt: skip

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        if group["variant"] == "torch":
            return None
        return (
            "NAdam: rounding='per_op' rounds every op in the order of PyTorch's for-loop "
            "implementation, and variant='optax' is not PyTorch's algorithm; use "
            "rounding='fused' or variant='torch'"
        )

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v_hat)"``: eps is added to the root of the bias-corrected second moment."""
        return "sqrt(v_hat)"

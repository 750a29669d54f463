r"""Adamax (Adam with the infinity norm): the class, its element rule and a NumPy reference.

Notation: ``m`` = ``exp_avg`` (first moment), ``u`` = ``exp_inf`` (the exponentially weighted
infinity norm), both starting at zero; ``bc1 = 1 - beta1**t`` with ``t`` the step count from 1.
One step, in PyTorch's order of operations (``torch.optim.Adamax``, single-tensor path):

    g = grad + weight_decay * param                       (only if weight_decay != 0: L2)
    m = lerp(m, g, 1 - beta1)                             = m + (1 - beta1) * (g - m)

and where eps goes (``eps_mode``):

    "max"      u = max(beta2 * u, |g| + eps)          param += (-lr/bc1) * (m / u)
               (PyTorch, optax.adamax): eps is added to |g| INSIDE the running max, so it is
               stored in u and decays with it (u carries eps * beta2**k while beta2 * u wins)
    "outside"  u = max(beta2 * u, |g|)                param += (-lr/bc1) * (m / (u + eps))
               (Keras 3 Adamax): eps is added to the max afterwards, always whole

The two agree wherever ``|g| + eps`` wins the max on every step; they differ where ``beta2 * u``
wins (decaying and all-zero gradient columns): there "max" divides by ``u`` that holds a
decayed ``eps * beta2**k``, "outside" by ``u + eps``. ``max`` propagates NaN as
``torch.maximum`` does (PyTorch's differentiable path takes ``amax`` over the two stacked
tensors, which gives the same values). With ``eps = 0`` a coordinate whose gradient has always
been zero has ``m = u = 0``: its update is 0/0 = NaN under both placements, as in PyTorch.

Defaults: PyTorch and optax ``lr=2e-3, betas=(0.9, 0.999), eps=1e-8``; Keras 3 Adamax
``learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7``. Keras's code computes
``lr * m / ((1 - beta1**t) * (u + eps))``, the same value up to round-off.

The per-step constants are computed once in float64 and cast (``neg_clr = -(lr / bc1)``, as
PyTorch). 16-bit storage: ``rounding="fused"`` computes the step above in float32 and rounds each
stored value once; ``rounding="per_op"`` (eps_mode "max" only) rounds each op's result, as the
rule's ``round_to`` calls mark, to the dtype of the tensor PyTorch's ``_single_tensor_adamax``
writes it to. No PyTorch fixture covers Adamax in 16-bit: "per_op" is a transcription of
PyTorch's source (its op order and float32 op-math), checked against the NumPy reference, not
against recorded PyTorch runs.

``decoupled_weight_decay=True`` is optax's AdamaxW (``optax.adamaxw``, optax 0.2.8): the decay
``lr * weight_decay * param`` is taken off the parameter, not added to ``g`` (PyTorch's Adamax
has no such option); the fused model only (``"per_op"`` refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet._lowp import NATIVE, round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_betas,
    check_eps,
    check_lr,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Adamax", "ADAMAX_EPS_MODES"]

#: The placements of eps, in the kernel's ``mode`` order: "max" (PyTorch, optax), "outside"
#: (Keras 3).
ADAMAX_EPS_MODES = ("max", "outside")
MAX, OUTSIDE = 0, 1

#: What eps is added to under each ``eps_mode`` (``stats.eps_dominated`` counts coordinates
#: where eps is at least this).
_EPS_COMPARED_WITH = {"max": "|g|", "outside": "u"}


class AdamaxScalars(NamedTuple):
    """Per-step constants of the Adamax update, already in the arrays' dtype."""

    lerp_w: np.floating  # 1 - beta1
    one_minus_lerp_w: np.floating  # 1 - lerp_w, for PyTorch's lerp when lerp_w >= 0.5
    beta2: np.floating
    eps: np.floating
    neg_clr: np.floating  # -lr / (1 - beta1**t)
    weight_decay: np.floating  # the L2 term folded into g (0 when decoupled)
    decay: np.floating  # param *= decay first: 1 - lr*weight_decay when decoupled, else 1


@element
def denominator(u, s, mode):  # pragma: no cover - compiled
    """What the update divides ``m`` by: ``u`` under "max" (whose ``u`` took eps inside the
    max), ``u + eps`` under "outside"."""
    return u if mode == MAX else u + s.eps


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (eps mode,)``, the
    state ``(exp_avg, exp_inf)``. Under ``"per_op"`` rounding (PyTorch's
    ``_single_tensor_adamax``, eps "max") each op's result is rounded to the dtype of the
    tensor it writes, and the step is ``(-clr * m) / u`` as ``addcdiv_`` computes it."""
    mode = o[0]
    per_op = rp != NATIVE or rs != NATIVE
    m = state[0]
    u = state[1]
    p_in = p
    if s.decay != 1:  # decoupled_weight_decay (optax.adamaxw): param * (1 - lr*weight_decay)
        p_in = p * s.decay
    if s.weight_decay != 0:  # grad.add(param, alpha=weight_decay)
        g = round_to(g + s.weight_decay * p, rp)
    # exp_avg.lerp_(grad, 1 - beta1): PyTorch's lerp switches formula at weight 0.5 to stay
    # exact at both ends.
    if s.lerp_w < 0.5:
        m = round_to(m + s.lerp_w * (g - m), rs)
    else:
        m = round_to(g - (g - m) * s.one_minus_lerp_w, rs)
    u = round_to(u * s.beta2, rs)  # exp_inf.mul_(beta2)
    a = np.abs(g)
    if mode == MAX:
        a = a + s.eps
    a = round_to(a, rp)  # grad.abs().add_(eps)
    u = round_to(np.maximum(u, a), rs)  # torch.maximum(..., out=exp_inf): NaN propagates
    if per_op:
        delta = (s.neg_clr * m) / u  # param.addcdiv_(exp_avg, exp_inf, value=-clr)
    else:
        delta = s.neg_clr * (m / denominator(u, s, mode))
    dominated = s.eps >= np.abs(g) if mode == MAX else s.eps >= u
    new = p_in + delta
    return p_in, new, (m, u), delta, new - p, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * m_hat``: ``1 / u`` ("max") or ``1 / (u + eps)``."""
    return 1.0 / denominator(state[1], s, o[0])


#: Adamax's element rule; its underflow count watches ``exp_inf`` (state 1).
RULE = Rule(update, second_moment=1, multiplier=multiplier)


_PER_OP_MESSAGE = (
    "Adamax: rounding='per_op' follows PyTorch's for-loop Adamax: it needs "
    "eps_mode='max'; use rounding='fused' for eps_mode='outside'"
)


def adamax_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: AdamaxScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg, exp_inf = state
    with np.errstate(all="ignore"):
        if s.decay != 1:
            param *= s.decay
        g = grad
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        if s.lerp_w < 0.5:
            exp_avg += s.lerp_w * (g - exp_avg)
        else:
            exp_avg[...] = g - (g - exp_avg) * s.one_minus_lerp_w
        exp_inf *= s.beta2
        if o[0] == MAX:
            np.maximum(exp_inf, np.abs(g) + s.eps, out=exp_inf)
            param += s.neg_clr * (exp_avg / exp_inf)
        else:
            np.maximum(exp_inf, np.abs(g), out=exp_inf)
            param += s.neg_clr * (exp_avg / (exp_inf + s.eps))


class Adamax(Optimizer):
    r"""Adamax: Adam's update with the infinity norm (PyTorch's ``torch.optim.Adamax``).

    With ``t`` the step count (1 on the first call of :meth:`step`), ``m`` = ``exp_avg`` and
    ``u`` = ``exp_inf`` (both start at zero):

    .. code-block:: text

        g = g + weight_decay * param                         (L2 penalty in the gradient)
        m = beta1 * m + (1 - beta1) * g                      (computed as PyTorch's lerp)
        eps_mode="max" (default; PyTorch, optax.adamax):
            u = max(beta2 * u, |g| + eps)                    eps inside the running max
            param = param - lr / (1 - beta1**t) * m / u
        eps_mode="outside" (Keras 3 Adamax):
            u = max(beta2 * u, |g|)
            param = param - lr / (1 - beta1**t) * m / (u + eps)   eps added to the max

    The placements differ only where ``beta2 * u`` wins the max (a decaying or all-zero
    gradient): "max" then divides by a ``u`` that holds ``eps * beta2**k``, "outside" by
    ``u + eps``; the gap is about ``eps * (1 - beta2**k)`` in the denominator. Defaults differ
    between libraries: Keras 3 uses ``learning_rate=1e-3`` and ``epsilon=1e-7`` (PyTorch and
    optax ``lr=2e-3``, ``eps=1e-8``); pass them explicitly to match Keras.

    **optax's AdamaxW** (``decoupled_weight_decay=True``: ``optax.adamaxw``, optax 0.2.8,
    ``scale_by_adamax``, ``add_decayed_weights``, ``scale_by_learning_rate``) decays the
    parameter instead of adding the L2 term to ``g``, with eps as ``"max"`` (optax's adamax):

    .. code-block:: text

        param = param - lr * (m / (1 - beta1**t) / u + weight_decay * param)

    computed here as ``param * (1 - lr * weight_decay)`` then the Adamax step (equal to
    round-off; the fixtures hold it to optax within 1e-9). optax's defaults: ``adamaxw(
    learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4)``; its ``mask`` is a
    parameter group with ``weight_decay=0`` here. ``rounding="per_op"`` is refused with it
    (PyTorch's Adamax has no decoupled decay).

    ``stats.eps_dominated`` counts the coordinates where eps is at least what it is added to:
    ``|g|`` under "max", ``u`` under "outside" (:meth:`eps_compared_with`).
    :meth:`multipliers` gives ``k`` in ``param -= lr * k * m_hat``: ``1 / u`` ("max") or
    ``1 / (u + eps)`` ("outside"). Parameter groups, ``state_dict`` (state ``"exp_avg"`` and
    ``"exp_inf"``, PyTorch's names), ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``2e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
        eps: ``>= 0``, placed as ``eps_mode`` says. Default ``1e-8``.
        weight_decay: L2 penalty (decay factor when decoupled), ``>= 0``. Default ``0``.
        eps_mode: ``"max"`` (default) or ``"outside"``.
        decoupled_weight_decay: decay the parameter instead of adding the L2 term to ``g``
            (optax's AdamaxW, above). Default ``False``.
        maximize: ascend the gradient (PyTorch's ``maximize``: the update sees ``-grad``).
            Default ``False``.
        track_stats, check_finite, state_dtype, rounding, foreach, fused, capturable,
            differentiable: :class:`~minnet.optim.optimizer.Optimizer`'s.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    # PyTorch's state dicts have no eps_mode.
    _load_optional = ("eps_mode", "maximize", "decoupled_weight_decay")

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        eps_mode: str = "max",
        decoupled_weight_decay: bool = False,
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, eps_mode=eps_mode,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(adamax_reference)
    eps_modes = ADAMAX_EPS_MODES
    checks = {"lr": check_lr, "eps": check_eps, "betas": check_betas,
              "weight_decay": check_weight_decay}  # PyTorch's order

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_inf": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdamaxScalars:
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        decoupled = group.get("decoupled_weight_decay", False)
        decay = 1.0 - lr * wd if decoupled and wd != 0 else 1.0
        return cast_scalars(AdamaxScalars, dtype, 1.0 - beta1, 0.0, beta2, group["eps"],
                            -(lr / (1.0 - beta1**step)), 0.0 if decoupled else wd,
                            decay)  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (ADAMAX_EPS_MODES.index(group["eps_mode"]),)

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        if group["decoupled_weight_decay"] and group["weight_decay"] != 0:
            return (
                "Adamax: rounding='per_op' follows PyTorch's for-loop Adamax, which has no "
                "decoupled weight decay; use rounding='fused' for decoupled_weight_decay=True"
            )
        return None if group["eps_mode"] == "max" else _PER_OP_MESSAGE

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"|g|"`` under "max" (eps is added to the gradient's magnitude inside the max),
        ``"u"`` under "outside" (eps is added to the running max)."""
        return _EPS_COMPARED_WITH[options.get("eps_mode", "max")]

r"""Adam and AMSGrad (AdamW: :mod:`minnet.optim.adamw`): the class, its element rule and a
plain-NumPy reference, side by side.

Notation, tutorial name first and PyTorch's second: ``V_dw = exp_avg`` (first moment, EMA of
gradients), ``S_dw = exp_avg_sq`` (second moment, EMA of squared gradients), ``S_max =
max_exp_avg_sq`` (AMSGrad's running maximum). The update, each eps placement and each AMSGrad max
are in :class:`Adam`'s docstring, in PyTorch's order of operations, so that float64 agrees with
``torch.optim.Adam`` to round-off. :func:`adam_scalars` folds the bias corrections (``bc1 = 1 -
beta1**t``, ``bc2 = 1 - beta2**t``; both 1 for ``amsgrad_max="paper"``) into a few constants,
computed once per step in float64 and cast, so that one rule serves every variant:

    eps_mode   neg_step            what the rule divides by
    outside    -lr/bc1             sqrt(S) / sqrt(bc2) + eps    (S_max already corrected: sqrt(S))
    hat        -lr*sqrt(bc2)/bc1   sqrt(S) + eps                (corrected: sqrt(S) * sqrt(bc2))
    inside     -lr/bc1             sqrt(S / bc2 + eps)          (corrected: sqrt(S + eps))
    atan2      -1.27*lr            atan2(V_dw / bc1, sqrt(S / bc2)) replaces the quotient

with ``S`` the second moment or, with AMSGrad, ``S_max`` (``max(S_max, S_dw)``, or ``max(S_max,
S_dw / bc2)`` for ``"corrected"``). NaN propagates through the max as in ``torch.maximum``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numba
import numpy as np

from minnet._lowp import NATIVE, round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, select, slot
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_betas,
    check_choice,
    check_eps,
    check_lr,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Adam", "EPS_MODES", "AMSGRAD_MAX_MODES"]

EPS_MODES = ("outside", "hat", "inside", "atan2")
AMSGRAD_MAX_MODES = ("raw", "corrected", "paper")
ATAN2_SCALE = 1.27  # Adam-atan2's "a": makes its updates about Adam's size (Everett et al. 2024)

#: What eps is added to (or compared with) under each ``eps_mode``; ``stats.eps_dominated``
#: counts coordinates where eps is at least this. "atan2" has no eps.
_EPS_COMPARED_WITH = {"outside": "sqrt(v_hat)", "hat": "sqrt(v)", "inside": "v_hat"}
#: The group options that :func:`adam_scalars` takes as they are.
_SCALAR_OPTIONS = ("lr", "eps", "weight_decay", "eps_mode", "amsgrad", "amsgrad_max",
                   "decoupled_weight_decay")  # fmt: skip


# -- the kernel -----------------------------------------------------------------------------


class AdamScalars(NamedTuple):
    """Per-step constants of the update, already in the arrays' dtype (see :func:`adam_scalars`)."""

    lerp_w: np.floating  # 1 - beta1
    one_minus_lerp_w: np.floating  # 1 - lerp_w, for PyTorch's lerp when lerp_w >= 0.5
    beta2: np.floating
    one_minus_beta2: np.floating
    neg_step: np.floating  # -lr/bc1; "hat": -lr*sqrt(bc2)/bc1; "atan2": -1.27*lr
    max_div: np.floating  # S_max candidate = S_dw / max_div: bc2 for "corrected", else 1
    root_div: np.floating  # root = sqrt(S) / root_div ("outside", "hat")
    v_div: np.floating  # S_hat = S / v_div ("inside", "atan2")
    m_div: np.floating  # V_hat = V_dw / m_div ("atan2")
    eps: np.floating
    weight_decay: np.floating  # the L2 term folded into g (0 when decoupled)
    decay: np.floating  # param *= decay before the update: 1 - lr*weight_decay when decoupled
    k_num: np.floating  # the multiplier's numerator: sqrt(bc2) for "hat", else 1


def adam_scalars(
    dtype: np.dtype, *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
    step: int, eps_mode: str = "outside", amsgrad: bool = False, amsgrad_max: str = "raw",
    decoupled_weight_decay: bool = False,
) -> AdamScalars:  # fmt: skip
    """Step ``step``'s constants, computed in float64 and cast to ``dtype`` (the table in the
    module docstring)."""
    paper = amsgrad and amsgrad_max == "paper"
    corrected = amsgrad and amsgrad_max == "corrected"
    bc1 = 1.0 if paper else 1.0 - beta1**step
    bc2 = 1.0 if paper else 1.0 - beta2**step
    bc2_sqrt = bc2**0.5
    if eps_mode == "hat":
        neg_step = -(lr * bc2_sqrt / bc1)
    elif eps_mode == "atan2":
        neg_step = -ATAN2_SCALE * lr
    else:
        neg_step = -(lr / bc1)
    # S_max already holds corrected values under "corrected": dividing again would double-correct.
    root_div = 1.0 / bc2_sqrt if (corrected and eps_mode == "hat") else 1.0
    if eps_mode == "outside" and not corrected:
        root_div = bc2_sqrt
    v_div = 1.0 if corrected else bc2
    l2 = 0.0 if decoupled_weight_decay else weight_decay
    decay = 1.0 - lr * weight_decay if decoupled_weight_decay else 1.0
    max_div = bc2 if corrected else 1.0
    k_num = bc2_sqrt if eps_mode == "hat" else 1.0
    return cast_scalars(AdamScalars, dtype, 1.0 - beta1, 0.0, beta2, 1.0 - beta2, neg_step,
                        max_div, root_div, v_div, bc1, eps, l2, decay, k_num)  # fmt: skip


OUTSIDE, HAT, INSIDE, ATAN2 = 0, 1, 2, 3  # indices into EPS_MODES
NO_MAX, MAX_RAW, MAX_CORRECTED = 0, 1, 2  # the kernel's ``ams``: "paper" is MAX_RAW (see scalars)


def ams_kind(amsgrad: bool, amsgrad_max: str) -> int:
    """The kernel's ``ams`` argument for an ``amsgrad`` flag and an ``amsgrad_max`` mode."""
    if not amsgrad:
        return NO_MAX
    return MAX_CORRECTED if amsgrad_max == "corrected" else MAX_RAW


@element
def moments(p, g, m, v, s, decoupled, rp, rs):  # pragma: no cover - compiled
    """The ops that Adam, NAdam and RAdam share, in PyTorch's order (rounded under
    ``"per_op"``): the decoupled decay, the L2 term, the first and the second moment. Returns
    ``(p_in, g, V_dw, S_dw)``, ``g`` with the L2 term."""
    p_in = round_to(p * s.decay, rp) if decoupled else p  # param.mul_(1 - lr * weight_decay)
    if s.weight_decay != 0:
        g = round_to(g + s.weight_decay * p_in, rp)  # grad.add(param, alpha=weight_decay)
    # exp_avg.lerp_(grad, 1 - beta1): PyTorch's lerp switches formula at weight 0.5 to stay
    # exact at both ends.
    if s.lerp_w < 0.5:
        m = round_to(m + s.lerp_w * (g - m), rs)
    else:
        m = round_to(g - (g - m) * s.one_minus_lerp_w, rs)
    v = round_to(v * s.beta2, rs)  # exp_avg_sq.mul_(beta2)
    v = round_to(v + s.one_minus_beta2 * g * g, rs)  # .addcmul_(grad, grad, value=1 - beta2)
    return p_in, g, m, v


@element
def denominator(src, s, mode, rs):  # pragma: no cover - compiled
    """What the update divides ``V_dw`` by, eps included, for ``mode`` (not "atan2"), and what
    eps is added to: ``(compared, den)`` (the table in the module docstring; rounded as
    PyTorch's for-loop Adam under ``"per_op"``). The one place Adam's eps is written."""
    if mode == OUTSIDE:
        root = round_to(round_to(np.sqrt(src), rs) / s.root_div, rs)  # sqrt() / bc2_sqrt
        return root, round_to(root + s.eps, rs)  # .add_(eps)
    if mode == HAT:
        root = np.sqrt(src) / s.root_div
        return root, root + s.eps
    v_hat = src / s.v_div
    return v_hat, np.sqrt(v_hat + s.eps)


@element
def atan2_quotient(m, src, s):  # pragma: no cover - compiled
    """Adam-atan2's ``atan2(V_hat, sqrt(S_hat))``, which replaces the quotient (no eps)."""
    return np.arctan2(m / s.m_div, np.sqrt(src / s.v_div))


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (eps mode, ams,
    decoupled)``. Under ``"per_op"`` rounding (``rp``/``rs`` not NATIVE: PyTorch's for-loop Adam,
    eps "outside", max "raw") each op's result is rounded to the dtype of the tensor it
    writes, and the step is ``(-step_size * V_dw) / denom`` as ``addcdiv_`` computes it."""
    mode, ams, decoupled = o
    per_op = rp != NATIVE or rs != NATIVE
    p_in, g, m, v = moments(p, g, state[0], state[1], s, decoupled, rp, rs)
    vmax = slot(state, 2, v)
    src = v
    if ams != NO_MAX:
        cand = v / s.max_div if ams == MAX_CORRECTED else v
        vmax = np.maximum(vmax, cand)  # NaN propagates, as in torch.maximum
        src = vmax
    if mode == ATAN2:
        delta = s.neg_step * atan2_quotient(m, src, s)
        dominated = False
    else:
        compared, den = denominator(src, s, mode, rs)
        if per_op or mode == HAT:
            delta = (s.neg_step * m) / den  # addcdiv_(m, denom + eps)
        else:
            delta = s.neg_step * (m / den)
        dominated = s.eps >= compared
    new = p_in + delta
    return p_in, new, (m, v, vmax), delta, new - p if decoupled else delta, dominated, g


@numba.njit(inline="always", error_model="numpy")
def _defaults(s):  # pragma: no cover - compiled
    """Whether step constants are Adam's usual ones (no L2 term, lerp weight below 0.5), and
    the constants with the L2 term a literal 0, for the bfloat16 word-pair loop's own copy."""
    usual = s.weight_decay == 0 and s.lerp_w < 0.5
    return usual, AdamScalars(
        s.lerp_w, s.one_minus_lerp_w, s.beta2, s.one_minus_beta2, s.neg_step, s.max_div,
        s.root_div, s.v_div, s.m_div, s.eps, np.float32(0.0), s.decay, s.k_num,
    )  # fmt: skip


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * V_hat`` after a step: ``k_num / den`` (``1/(sqrt(S_hat)+eps)``
    outside, ``sqrt(bc2)/(sqrt(S)+eps)`` hat, ``1/sqrt(S_hat+eps)`` inside), or for "atan2"
    ``1.27 * atan2(V_hat, sqrt(S_hat)) / V_hat`` (``1.27 / sqrt(S_hat)`` where ``V_hat = 0``)."""
    mode, ams = o[0], o[1]
    src = state[2] if ams != NO_MAX else state[1]
    if mode == ATAN2:
        m_hat = state[0] / s.m_div
        limit = ATAN2_SCALE / np.sqrt(src / s.v_div)
        return select(m_hat == 0, limit, ATAN2_SCALE * atan2_quotient(state[0], src, s) / m_hat)
    return s.k_num / denominator(src, s, mode, NATIVE)[1]


#: Adam's element rule; the second moment ``exp_avg_sq`` is state 1.
RULE = Rule(update, second_moment=1, common=_defaults, multiplier=multiplier)


def moments_reference(
    param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, s: Any, decoupled: bool
) -> np.ndarray:
    """:func:`moments` with whole-array NumPy, in place (Adam's, NAdam's and RAdam's
    references): the decoupled decay of ``param``, the moments ``m``/``v``; returns ``g`` with
    the L2 term."""
    if decoupled:
        param *= s.decay
    g = grad
    if s.weight_decay != 0:
        g = g + s.weight_decay * param
    if s.lerp_w < 0.5:
        m += s.lerp_w * (g - m)
    else:
        m[...] = g - (g - m) * s.one_minus_lerp_w
    v *= s.beta2
    v += s.one_minus_beta2 * g * g
    return g


def adam_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: AdamScalars, o: tuple
) -> None:
    """Adam's update (module and class docstrings) with whole-array NumPy, in place (the rule's
    arguments). Slower (it allocates temporaries) but easy to read; tests hold the rule to it."""
    mode, ams, decoupled = o
    exp_avg, exp_avg_sq = state[0], state[1]
    with np.errstate(all="ignore"):
        moments_reference(param, grad, exp_avg, exp_avg_sq, s, decoupled)
        src = exp_avg_sq
        if ams != NO_MAX:
            cand = exp_avg_sq / s.max_div if ams == MAX_CORRECTED else exp_avg_sq
            src = np.maximum(state[2], cand, out=state[2])
        if mode == OUTSIDE:
            delta = s.neg_step * (exp_avg / (np.sqrt(src) / s.root_div + s.eps))
        elif mode == HAT:
            delta = (exp_avg * s.neg_step) / (np.sqrt(src) / s.root_div + s.eps)
        elif mode == INSIDE:
            delta = s.neg_step * (exp_avg / np.sqrt(src / s.v_div + s.eps))
        else:
            delta = s.neg_step * np.arctan2(exp_avg / s.m_div, np.sqrt(src / s.v_div))
        param += delta


# -- the class ------------------------------------------------------------------------------


class Adam(Optimizer):
    r"""Adam and AMSGrad with PyTorch's exact semantics, as one fused Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``g`` the gradient,
    ``V_dw``/``exp_avg`` and ``S_dw``/``exp_avg_sq`` the moments (both start at zero), the
    default (``eps_mode="outside"``, ``amsgrad_max="raw"``) is PyTorch's ``torch.optim.Adam``:

    .. code-block:: text

        g      = g + weight_decay * param            (L2 penalty folded into the gradient)
        V_dw   = beta1 * V_dw + (1 - beta1) * g      (computed as PyTorch's lerp)
        S_dw   = beta2 * S_dw + (1 - beta2) * g**2
        V_hat  = V_dw / (1 - beta1**t)
        S_hat  = S_dw / (1 - beta2**t)                              (Adam)
        S_hat  = max(S_dw over steps 1..t) / (1 - beta2**t)         (amsgrad=True: the running
                                                                     max of the *raw* S_dw,
                                                                     corrected by step t's
                                                                     bias correction)
        param  = param - lr * V_hat / (sqrt(S_hat) + eps)

    ``eps`` sits *outside* the square root and is added *after* bias correction. With ``eps=0``
    a coordinate whose gradient has always been zero gets 0/0 = NaN, exactly as in PyTorch.

    ``decoupled_weight_decay=True`` (PyTorch 2.x; :class:`AdamW`) replaces the L2 term by
    ``param = param * (1 - lr * weight_decay)`` before the update above (Loshchilov & Hutter).

    The epsilon lab's variants change only where eps goes and how the AMSGrad max is kept:

    .. code-block:: text

        eps_mode="hat"      param -= lr*sqrt(1-beta2**t)/(1-beta1**t) * V_dw / (sqrt(S_dw) + eps)
                            (TensorFlow/Keras "epsilon hat": eps added before bias correction)
        eps_mode="inside"   param -= lr * V_hat / sqrt(S_hat + eps)     (optax eps_root, eps=0)
        eps_mode="atan2"    param -= 1.27 * lr * atan2(V_hat, sqrt(S_hat))   (Adam-atan2; eps
                            unused. The adam-atan2-pytorch package defaults to betas=(0.9, 0.99)
                            and decays weights decoupled (AdamW-style); pass betas explicitly
                            to compare)
        amsgrad_max="corrected"  S_max = max(S_max, S_hat_t); S_hat = S_max       (optax)
        amsgrad_max="paper"      S_max = max(S_max, S_dw); S_hat = S_max, V_hat = V_dw: no bias
                                 correction at all (Reddi et al. 2018, Algorithm 2; optax's
                                 amsgrad with bias_correction_mu=bias_correction_nu=False)

    Parameter groups, ``param_groups`` editing (``group["lr"] = x``, validated at the next
    step; ``optimizer.lr = x`` sets every group), flat buffers, ``state_dict``,
    ``track_stats`` and ``check_finite`` are :class:`~minnet.optim.optimizer.Optimizer`'s.

    Args:
        params: iterable of :class:`minnet.nn.Parameter` (e.g. ``model.parameters()``), or of
            dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
        eps: added to the denominator, ``>= 0``. Default ``1e-8``.
        weight_decay: L2 penalty (decay factor when decoupled), ``>= 0``. Default ``0``.
        amsgrad: use AMSGrad's running max of the second moment. Default ``False``.
        decoupled_weight_decay: decay the parameter instead of adding the L2 term to ``g``
            (AdamW). Default ``False``.
        eps_mode: ``"outside"`` (default), ``"hat"``, ``"inside"`` or ``"atan2"``.
        amsgrad_max: ``"raw"`` (default), ``"corrected"`` or ``"paper"``; needs ``amsgrad``.
        maximize: ascend the gradient (PyTorch's ``maximize``: the update sees ``-grad``).
            Default ``False``.
        track_stats, check_finite, state_dtype, rounding, foreach, fused, capturable,
            differentiable: :class:`~minnet.optim.optimizer.Optimizer`'s.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    # PyTorch's state dicts have no eps_mode / amsgrad_max (older ones no decoupled flag).
    _load_optional = ("eps_mode", "amsgrad_max", "decoupled_weight_decay", "maximize")

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        eps_mode: str = "outside",
        amsgrad_max: str = "raw",
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        decoupled_weight_decay=decoupled_weight_decay, eps_mode=eps_mode,
                        amsgrad_max=amsgrad_max, maximize=maximize)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(adam_reference)
    _eps0_advice = " or eps_mode='atan2'"
    eps_modes = EPS_MODES
    checks = {"lr": check_lr, "eps": check_eps, "betas": check_betas,
              "weight_decay": check_weight_decay,
              "amsgrad_max": partial(check_choice, "amsgrad_max", choices=AMSGRAD_MAX_MODES)}

    def _check_group(self, hp: Mapping[str, Any]) -> None:
        if hp["amsgrad_max"] != "raw" and not hp["amsgrad"]:
            raise ValueError(f"amsgrad_max={hp['amsgrad_max']!r} needs amsgrad=True")

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        amsgrad = {"max_exp_avg_sq": 0.0} if group["amsgrad"] else {}
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0, **amsgrad}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdamScalars:
        beta1, beta2 = group["betas"]
        return adam_scalars(dtype, beta1=beta1, beta2=beta2, step=step,
                            **{k: group[k] for k in _SCALAR_OPTIONS})  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        ams = ams_kind(group["amsgrad"], group["amsgrad_max"])
        return (EPS_MODES.index(group["eps_mode"]), ams, group["decoupled_weight_decay"])

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        if group["eps_mode"] == "outside" and group["amsgrad_max"] == "raw":
            return None
        return (
            "rounding='per_op' follows PyTorch's for-loop Adam: it needs eps_mode='outside' "
            f"and amsgrad_max='raw', got eps_mode={group['eps_mode']!r}, "
            f"amsgrad_max={group['amsgrad_max']!r}; use rounding='fused'"
        )

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v_hat)"`` (outside), ``"sqrt(v)"`` (hat: the uncorrected root), ``"v_hat"``
        (inside), ``None`` (atan2 has no eps); ``v`` is the AMSGrad max when ``amsgrad``."""
        return _EPS_COMPARED_WITH.get(options.get("eps_mode", "outside"))

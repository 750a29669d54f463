r"""RAdam (rectified Adam, Liu et al. 2020): the class, its Numba kernel and a plain-NumPy
reference, side by side. PyTorch's ``torch.optim.RAdam``.

The update is in :class:`RAdam`'s docstring, in PyTorch's order of operations (its single-tensor
path, ``param - (((m / bc1) * lr) * (sqrt(bc2) / (sqrt(v) + eps))) * r`` in rectified steps), so
that float64 agrees with it to round-off. ``rho_inf``, ``rho_t``, the branch and ``r`` are
computed once per step in float64 and the constants cast to the arrays' dtype; the kernel takes
the branch once per call (``Rule.branch``), so each branch is its own vectorized loop.

Where eps sits: next to the *raw* ``sqrt(v)``, before the bias correction ``sqrt(bc2)`` is
applied (Adam's eps sits next to ``sqrt(v / bc2)``), and only from the first rectified step on:
with ``beta2 = 0.999``, ``rho_t`` is 4.996 at ``t = 5`` and 5.994 at ``t = 6`` (with ``beta2 =
0.99``: 4.96 and 5.94); a ``beta2 <= 2/3`` never rectifies (``rho_inf`` must exceed 5).

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once; ``rounding="per_op"`` rounds each op's result, as the rule's ``round_to`` calls mark, to the
dtype of the tensor PyTorch's ``_single_tensor_radam`` writes it to (the step is a new tensor of
the state dtype). No PyTorch fixture covers RAdam in 16-bit: "per_op" is a transcription of
PyTorch's source (its op order and float32 op-math), checked against the NumPy reference, not
against recorded PyTorch runs.

``variant="optax"`` is optax's RAdam (``optax.radam``, optax 0.2.8): eps next to the
bias-corrected ``sqrt(v_hat)``, rectified from ``rho_t >= 5`` (optax's ``threshold``); the fused
model only (``"per_op"`` refused: it is not PyTorch's algorithm).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numba
import numpy as np

from minnet._lowp import NATIVE, round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, sqrt_plus_eps
from minnet.optim.adam import moments, moments_reference
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

__all__ = ["RAdam", "RADAM_VARIANTS"]

#: The values of ``variant``: PyTorch's RAdam (default) and optax's.
RADAM_VARIANTS = ("torch", "optax")
TORCH, OPTAX = 0, 1
#: optax's ``threshold`` (its default): rectified where ``rho_t >= OPTAX_THRESHOLD``.
OPTAX_THRESHOLD = 5.0


class RAdamScalars(NamedTuple):
    """Per-step constants of the RAdam update, already in the arrays' dtype (``rectified`` is a
    bool: which branch this step takes)."""

    lerp_w: np.floating  # 1 - beta1
    one_minus_lerp_w: np.floating  # beta1, for PyTorch's lerp when lerp_w >= 0.5
    beta2: np.floating
    one_minus_beta2: np.floating
    bc1: np.floating  # 1 - beta1**t: m_hat = m / bc1
    lr: np.floating
    sqrt_bc2: np.floating  # sqrt(1 - beta2**t)
    eps: np.floating
    rect: np.floating  # r (rectified steps), else 1
    weight_decay: np.floating  # the L2 term folded into g (0 when decoupled)
    decay: np.floating  # param *= decay first: 1 - lr*weight_decay when decoupled, else 1
    bc2: np.floating  # 1 - beta2**t (variant="optax": v_hat = v / bc2)
    rectified: bool  # rho_t > 5 (variant="optax": rho_t >= 5)


def radam_rho(beta2: float, step: int) -> tuple[float, float]:
    """``(rho_inf, rho_t)`` of step ``t = step`` in float64, PyTorch's expressions:
    ``rho_inf = 2 / (1 - beta2) - 1``, ``rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)``."""
    t = float(step)
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    return rho_inf, rho_inf - 2.0 * t * (beta2**t) / (1.0 - beta2**t)


def radam_first_rectified_step(beta2: float, limit: int = 10_000) -> int | None:
    """The first step with ``rho_t > 5`` (the first that uses eps): 6 for ``beta2 = 0.999``;
    ``None`` if none up to ``limit`` (``rho_inf <= 5``, i.e. ``beta2 <= 2/3``, never rectifies)."""
    for t in range(1, limit + 1):
        if radam_rho(beta2, t)[1] > 5.0:
            return t
    return None


# -- the element rule ---------------------------------------------------------------------------


@element
def adaptive_lr(v, s, rs):  # pragma: no cover - compiled
    """``(sqrt(bc2) / (sqrt(v) + eps), eps >= sqrt(v))``, rounded as PyTorch's for-loop RAdam
    under ``"per_op"``: the one place RAdam's eps is written."""
    root = round_to(np.sqrt(v), rs)  # exp_avg_sq.sqrt()
    return round_to(s.sqrt_bc2 / round_to(root + s.eps, rs), rs), s.eps >= root


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (decoupled,
    rectified)``, the second chosen once per step (:func:`_rectified`), so each branch is its
    own loop. Under ``"per_op"`` every op's result is rounded as the module docstring lists."""
    decoupled, variant, rectified = o
    p_in, g, m, v = moments(p, g, state[0], state[1], s, decoupled, rp, rs)
    if variant == OPTAX:  # optax.radam: r * m_hat / (sqrt(v_hat) + eps), times -lr
        m_hat = m / s.bc1
        dominated = False
        if rectified:
            den, dominated = sqrt_plus_eps(v / s.bc2, s.eps)
            m_hat = (s.rect * m_hat) / den
        delta = -(m_hat * s.lr)
        new = p_in + delta
        return p_in, new, (m, v), delta, new - p, dominated, g
    step = round_to(round_to(m / s.bc1, rs) * s.lr, rs)  # bias_corrected_exp_avg * lr
    dominated = False
    if rectified:
        adaptive, dominated = adaptive_lr(v, s, rs)
        step = round_to(round_to(step * adaptive, rs) * s.rect, rs)  # ... * adaptive_lr * rect
    new = p_in - step  # param.add_(x, alpha=-1.0)
    return p_in, new, (m, v), -step, new - p, dominated, g


@numba.njit(inline="always", error_model="numpy")
def _rectified(s):  # pragma: no cover - compiled
    return s.rectified


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * m_hat``: ``rect * sqrt(bc2) / (sqrt(v) + eps)`` on a
    rectified step (``rect / (sqrt(v_hat) + eps)`` with ``variant="optax"``), else 1."""
    if not o[-1]:
        return 1.0
    if o[1] == OPTAX:
        return s.rect / sqrt_plus_eps(state[1] / s.bc2, s.eps)[0]
    return s.rect * adaptive_lr(state[1], s, NATIVE)[0]


#: RAdam's element rule; the second moment ``exp_avg_sq`` is state 1; rectified or not is
#: decided once per step.
RULE = Rule(update, second_moment=1, branch=_rectified, multiplier=multiplier)


def radam_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: RAdamScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg, exp_avg_sq = state
    with np.errstate(all="ignore"):
        moments_reference(param, grad, exp_avg, exp_avg_sq, s, o[0])  # o[0]: decoupled
        if o[1] == OPTAX:
            m_hat = exp_avg / s.bc1
            if s.rectified:
                m_hat = (s.rect * m_hat) / (np.sqrt(exp_avg_sq / s.bc2) + s.eps)
            param -= m_hat * s.lr
            return
        step = (exp_avg / s.bc1) * s.lr
        if s.rectified:
            step = (step * (s.sqrt_bc2 / (np.sqrt(exp_avg_sq) + s.eps))) * s.rect
        param -= step


# -- the class ------------------------------------------------------------------------------


class RAdam(Optimizer):
    r"""RAdam with PyTorch's exact semantics (``torch.optim.RAdam``), as one fused Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`) and ``m``/``exp_avg``,
    ``v``/``exp_avg_sq`` the moments (both start at 0):

    .. code-block:: text

        param = param * (1 - lr * weight_decay)       (decoupled_weight_decay=True)
        g     = g + weight_decay * param              (otherwise: L2 penalty in the gradient)
        m     = beta1 * m + (1 - beta1) * g           (computed as PyTorch's lerp)
        v     = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        rho_inf = 2 / (1 - beta2) - 1;   rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        if rho_t > 5:
            r     = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            param = param - lr * m_hat * r * sqrt(1 - beta2**t) / (sqrt(v) + eps)
        else:
            param = param - lr * m_hat                (no eps)

    ``eps`` sits *outside* the square root of the *raw* second moment ``v`` (before its bias
    correction ``sqrt(1 - beta2**t)``, unlike Adam's, which sits next to ``sqrt(v_hat)``), and
    only in rectified steps: with ``beta2 = 0.999``, steps 1 to 5 are unrectified and ignore
    eps; step 6 is the first that uses it (:func:`radam_first_rectified_step`). With ``eps=0`` a
    coordinate whose gradient has always been zero gets ``0 * inf = NaN`` from then on, as in
    PyTorch. ``rho_t``, the branch and ``r`` are computed per step in float64.

    Parameter groups, ``state_dict``, ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s; ``stats.eps_dominated`` counts coordinates
    where ``eps >= sqrt(v)`` in a rectified step (0 in an unrectified one).

    **optax's RAdam** (``variant="optax"``: ``optax.radam``, optax 0.2.8) puts eps after the
    bias correction, as Adam does, and rectifies from ``rho_t >= threshold``, its
    ``threshold=5.0`` (PyTorch: ``rho_t > 5``; ``rho_t`` and ``r`` are the same expressions):

    .. code-block:: text

        if rho_t >= 5:  param = param - lr * (r * m_hat / (sqrt(v / (1 - beta2**t)) + eps))
        else:           param = param - lr * m_hat

    PyTorch's ``sqrt(1 - beta2**t) / (sqrt(v) + eps)`` is ``1 / (sqrt(v_hat) + eps /
    sqrt(1 - beta2**t))``: its eps acts ``1 / sqrt(1 - beta2**t)`` times larger (31.6x at step 1
    for ``beta2 = 0.999``, 1x once ``beta2**t`` is negligible), so the two variants differ where
    eps matters early on. optax's ``eps_root`` (0), ``threshold`` (5.0) and ``nesterov`` (False)
    keep their alias defaults and are not offered; ``eps=0`` gives 0/0 on a never-updated
    coordinate from the first rectified step, as in PyTorch. optax's ``radam`` has no weight
    decay: here ``weight_decay`` acts as in PyTorch's variant (L2 in ``g``, or decoupled),
    which optax writes as ``add_decayed_weights`` chained before or after it. The moments are
    computed in PyTorch's order (its ``lerp``), equal to optax's to round-off; the fixtures
    hold the variant to optax within 1e-9. ``rounding="per_op"`` is refused for it.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
        eps: added to ``sqrt(v)`` in rectified steps, ``>= 0``. Default ``1e-8``.
        weight_decay: L2 penalty (decay factor when decoupled), ``>= 0``. Default ``0``.
        decoupled_weight_decay: decay the parameter instead of adding the L2 term to ``g``
            (RAdamW). Default ``False``.
        maximize: ascend the gradient (PyTorch's ``maximize``: the update sees ``-grad``).
            Default ``False``.
        variant: ``"torch"`` (default) or ``"optax"`` (optax's RAdam, above).
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
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        variant: str = "torch",
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                        variant=variant)
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(radam_reference)
    checks = {"lr": check_lr, "eps": check_eps, "betas": check_betas,
              "weight_decay": check_weight_decay,  # PyTorch's order
              "variant": partial(check_choice, "variant", choices=RADAM_VARIANTS)}

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> RAdamScalars:
        (beta1, beta2), lr, wd, t = group["betas"], group["lr"], group["weight_decay"], step
        rho_inf, rho_t = radam_rho(beta2, step)
        optax = group.get("variant", "torch") == "optax"
        rectified = rho_t >= OPTAX_THRESHOLD if optax else rho_t > 5.0
        rect = 1.0
        if rectified:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            rect = rect**0.5
        decoupled = group["decoupled_weight_decay"]
        l2 = 0.0 if decoupled else wd
        decay = 1.0 - lr * wd if decoupled and wd != 0 else 1.0
        s = cast_scalars(RAdamScalars, dtype, 1.0 - beta1, 0.0, beta2, 1.0 - beta2,
                         1.0 - beta1 ** float(t), lr, (1.0 - beta2 ** float(t)) ** 0.5,
                         group["eps"], rect, l2, decay, 1.0 - beta2 ** float(t),
                         0.0)  # fmt: skip
        return s._replace(rectified=rectified)

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (bool(group["decoupled_weight_decay"] and group["weight_decay"] != 0),
                RADAM_VARIANTS.index(group["variant"]))  # fmt: skip

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        if group["variant"] == "torch":
            return None
        return (
            "RAdam: rounding='per_op' rounds every op in the order of PyTorch's for-loop "
            "implementation, and variant='optax' is not PyTorch's algorithm; use "
            "rounding='fused' or variant='torch'"
        )

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v)"``: eps is added to the root of the raw (uncorrected) second moment, in
        rectified steps only; ``"sqrt(v_hat)"`` with ``variant="optax"`` (after the bias
        correction)."""
        return "sqrt(v_hat)" if options.get("variant") == "optax" else "sqrt(v)"

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        if group["eps"] == 0 and ((state["exp_avg_sq"] == 0) & (grad == 0)).any():
            first = radam_first_rectified_step(group["betas"][1])
            return (
                f"eps=0 and some coordinates of {name} have only ever had zero gradient "
                f"(v = 0): from the first rectified step ({first}) their update is "
                "0 * lr * sqrt(1 - beta2**t) / 0 = NaN; use eps > 0"
            )
        return None

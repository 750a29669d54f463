r"""NAdam (Adam with Nesterov momentum, Dozat 2016): the class, its Numba kernel and a
plain-NumPy reference, side by side. PyTorch's ``torch.optim.NAdam``.

One step ``t`` (counting from 1), in PyTorch's order of operations (its single-tensor path), with
``m = exp_avg``, ``v = exp_avg_sq`` (both start at 0) and ``P = mu_product`` (starts at 1):

    param = param * (1 - lr * weight_decay)         (decoupled_weight_decay=True, weight_decay != 0)
    g     = grad + weight_decay * param             (L2: weight_decay != 0 and not decoupled)
    mu_t      = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_{t+1}  = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    P     = P * mu_t                                (the running product, kept across steps)
    m     = lerp(m, g, 1 - beta1)                   = m + (1 - beta1) * (g - m)
    v     = v * beta2 + (1 - beta2) * g * g
    D     = sqrt(v / (1 - beta2**t)) + eps          eps OUTSIDE the root, after bias correction
    param = param + (c_g * g) / D                   c_g = -lr * (1 - mu_t) / (1 - P)
    param = param + (c_m * m) / D                   c_m = -lr * mu_{t+1} / (1 - P * mu_{t+1})

``mu_t``, ``mu_{t+1}``, ``P`` and the two coefficients are computed once per step in float64
(:func:`nadam_scalars`; PyTorch keeps ``P`` as a tensor of the default dtype, float64 in its
recorded fixtures) and cast to the arrays' dtype, so the loop stays in one dtype. ``P`` is the
group's scalar state ``"mu_product"``: it is kept across steps (not recomputed from ``t``, so a
change of ``betas`` or ``momentum_decay`` mid-run acts as in PyTorch) and appears in every
parameter's state-dict entry, PyTorch's layout: ``"step"``, ``"mu_product"``, ``"exp_avg"``,
``"exp_avg_sq"``.

Where eps sits is the same as Adam's: outside the square root of the bias-corrected second
moment. With ``eps=0``, a coordinate whose gradient has always been zero gets ``0/0 = NaN``.

16-bit parameters and state (``state_dtype``, ``rounding``; see :mod:`minnet.optim.optimizer`):
the kernel reads float16/bfloat16 buffers as ``uint16`` bit patterns and computes in float32.
``rounding="fused"`` computes the step above in float32 and rounds each stored value once.
``rounding="per_op"`` rounds every intermediate to the dtype of the tensor PyTorch's
``_single_tensor_nadam`` writes it to (``rp``: parameter/gradient dtype, ``rs``: state dtype;
``D`` is a new tensor of the state dtype), in its order:

    param = rp(param * (1 - lr * weight_decay))       param.mul_(...)   (decoupled)
    g     = rp(g + weight_decay * param)              grad.add(param, alpha=weight_decay)  (L2)
    m     = rs(lerp(m, g, 1 - beta1))                 exp_avg.lerp_(grad, 1 - beta1)
    v     = rs(rs(v * beta2) + (1 - beta2) * g * g)   exp_avg_sq.mul_(beta2).addcmul_(...)
    D     = rs(rs(sqrt(rs(v / (1 - beta2**t)))) + eps)   exp_avg_sq.div(bc2).sqrt(); add_(eps)
    param = rp(param + (c_g * g) / D)                 param.addcdiv_(grad, D, value=c_g)
    param = rp(param + (c_m * m) / D)                 param.addcdiv_(exp_avg, D, value=c_m)

In float16 the default eps=1e-8 is 0 (the optimizer warns) and ``v`` of a gradient below about
5e-3 underflows to 0, so "per_op" divides by 0 (inf, or NaN for a zero gradient) where "fused"
stays finite. No PyTorch fixture covers NAdam in 16-bit: "per_op" is this transcription of
PyTorch's source (its op order and float32 op-math), checked against the NumPy reference below,
not against recorded PyTorch runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from minnet._lowp import round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.adam import moments
from minnet.optim.optimizer import (
    Optimizer,
    check_betas,
    check_bool,
    check_eps,
    check_lr,
    check_nonnegative,
    check_weight_decay,
)

__all__ = ["NAdam"]


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


def nadam_mu(beta1: float, momentum_decay: float, step: int) -> float:
    """The momentum coefficient ``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``
    of step ``t = step``, in float64 (PyTorch's expression)."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (float(step) * momentum_decay)))


def nadam_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    mu_product: float,
    step: int,
    decoupled_weight_decay: bool = False,
) -> NAdamScalars:
    """Step ``step``'s constants, computed in float64 and cast to ``dtype``.

    ``mu_product`` is ``P_t``, the product ``mu_1 * ... * mu_t`` *including* this step's
    ``mu_t`` (what :meth:`NAdam._advance_group_state` returns for this step).
    """
    t = float(step)
    mu = nadam_mu(beta1, momentum_decay, step)
    mu_next = nadam_mu(beta1, momentum_decay, step + 1)
    mu_product_next = mu_product * mu_next
    coef_grad = -lr * (1.0 - mu) / (1.0 - mu_product)
    coef_avg = (-lr * mu_next) / (1.0 - mu_product_next)
    decoupled = decoupled_weight_decay and weight_decay != 0
    l2 = 0.0 if decoupled_weight_decay else weight_decay
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    with np.errstate(over="ignore"):
        c = np.array(
            [1.0 - beta1, beta2, 1.0 - beta2, 1.0 - beta2**t, eps, coef_grad, coef_avg, l2,
             decay],
            dtype,
        ).tolist()  # fmt: skip
    f = dtype.type
    lerp_w = f(c[0])
    return NAdamScalars(
        lerp_w, f(1) - lerp_w, f(c[1]), f(c[2]), f(c[3]), f(c[4]), f(c[5]), f(c[6]), f(c[7]),
        f(c[8]),
    )  # fmt: skip


# -- the element rule ---------------------------------------------------------------------------


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (decoupled,)``.
    Under ``"per_op"`` every op's result is rounded as the module docstring lists."""
    (decoupled,) = o
    p_in, g, m, v = moments(p, g, state[0], state[1], s, decoupled, rp, rs)
    root = round_to(np.sqrt(round_to(v / s.bc2, rs)), rs)  # exp_avg_sq.div(bc2).sqrt()
    denom = round_to(root + s.eps, rs)  # .add_(eps)
    new = round_to(p_in + (s.coef_grad * g) / denom, rp)  # param.addcdiv_(grad, denom, c_g)
    new = new + (s.coef_avg * m) / denom  # param.addcdiv_(exp_avg, denom, c_m)
    return p_in, new, (m, v), new - p_in, new - p, s.eps >= root, g


#: NAdam's element rule; the second moment ``exp_avg_sq`` is state 1.
RULE = Rule(update, second_moment=1)


def nadam_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    scalars: NAdamScalars,
    decoupled: bool,
) -> None:
    """The same update as the kernel, written with whole-array NumPy operations, in place."""
    s = scalars
    with np.errstate(all="ignore"):
        if decoupled:
            param *= s.decay
        g = grad
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        if s.lerp_w < 0.5:
            exp_avg += s.lerp_w * (g - exp_avg)
        else:
            exp_avg[...] = g - (g - exp_avg) * s.one_minus_lerp_w
        exp_avg_sq *= s.beta2
        exp_avg_sq += s.one_minus_beta2 * g * g
        denom = np.sqrt(exp_avg_sq / s.bc2) + s.eps
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
        track_stats: record :class:`~minnet.optim.optimizer.OptimizerStats` in every step.
        check_finite: refuse a step that would make a parameter NaN or infinite.
        state_dtype: dtype of ``exp_avg`` and ``exp_avg_sq`` (``None``: the parameter's;
            float16, bfloat16 or float32 with 16-bit parameters).
        rounding: 16-bit buffers only: ``"fused"`` (default; float32 compute, one rounding per
            stored value) or ``"per_op"`` (PyTorch's single-tensor op order with every
            intermediate rounded; a transcription of PyTorch's source, not checked against
            recorded PyTorch runs). See the module docstring.
        foreach, fused, capturable, differentiable: PyTorch's implementation switches,
            accepted so that PyTorch calls port unchanged (see
            :meth:`~minnet.optim.optimizer.Optimizer._check_torch_flags`).

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    # PyTorch state dicts from before decoupled_weight_decay existed lack it.
    _load_optional = ("decoupled_weight_decay", "maximize")

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
        track_stats: bool = False,
        check_finite: bool = False,
        state_dtype: Any = None,
        rounding: str = "fused",
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
        }
        super().__init__(
            params, defaults, track_stats=track_stats, check_finite=check_finite,
            state_dtype=state_dtype, rounding=rounding,
            foreach=foreach, fused=fused, capturable=capturable, differentiable=differentiable,
        )  # fmt: skip

    rule = RULE

    def _validate(self, group: Mapping[str, Any]) -> dict[str, Any]:
        # PyTorch's order of checks: lr, eps, betas, weight_decay, momentum_decay.
        lr = check_lr(group["lr"])
        eps = check_eps(group["eps"])
        betas = check_betas(group["betas"])
        weight_decay = check_weight_decay(group["weight_decay"])
        momentum_decay = check_nonnegative("momentum_decay", group["momentum_decay"])
        decoupled = check_bool("decoupled_weight_decay", group["decoupled_weight_decay"])
        return {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled,
            "maximize": check_bool("maximize", group["maximize"]),
        }

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
        beta1, beta2 = group["betas"]
        return nadam_scalars(
            dtype,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum_decay=group["momentum_decay"],
            mu_product=group_state["mu_product"],
            step=step,
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (bool(group["decoupled_weight_decay"] and group["weight_decay"] != 0),)

    def _float_reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        (decoupled,) = self._options(group)

        def reference(param, grad, exp_avg, exp_avg_sq, scalars):  # type: ignore[no-untyped-def]
            nadam_step_reference(param, grad, exp_avg, exp_avg_sq, scalars, decoupled)

        return reference

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v_hat)"``: eps is added to the root of the bias-corrected second moment."""
        return "sqrt(v_hat)"

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int
    ) -> np.ndarray:
        """``1 / (sqrt(v_hat) + eps)`` (float64), the factor that both of the step's terms
        (the gradient's and the momentum's) are divided by; ``inf`` where ``eps=0`` and a
        coordinate never saw a gradient."""
        beta2 = group["betas"][1]
        v_hat = state["exp_avg_sq"].astype(np.float64) / (1.0 - beta2 ** float(step))
        with np.errstate(divide="ignore"):
            return 1.0 / (np.sqrt(v_hat) + group["eps"])

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        if group["eps"] == 0 and ((state["exp_avg_sq"] == 0) & (grad == 0)).any():
            return (
                f"eps=0 and some coordinates of {name} have only ever had zero gradient "
                "(v = 0), so their update is 0/0 = NaN; use eps > 0"
            )
        return None

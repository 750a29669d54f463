r"""RAdam (rectified Adam, Liu et al. 2020): the class, its Numba kernel and a plain-NumPy
reference, side by side. PyTorch's ``torch.optim.RAdam``.

One step ``t`` (counting from 1), in PyTorch's order of operations (its single-tensor path), with
``m = exp_avg`` and ``v = exp_avg_sq`` (both start at 0), ``bc1 = 1 - beta1**t`` and
``bc2 = 1 - beta2**t``:

    param = param * (1 - lr * weight_decay)         (decoupled_weight_decay=True, weight_decay != 0)
    g     = grad + weight_decay * param             (L2: weight_decay != 0 and not decoupled)
    m     = lerp(m, g, 1 - beta1)                   = m + (1 - beta1) * (g - m)
    v     = v * beta2 + (1 - beta2) * g * g
    rho_inf = 2 / (1 - beta2) - 1
    rho_t   = rho_inf - 2 * t * beta2**t / bc2
    rho_t > 5 (rectified):
        r     = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        param = param - (((m / bc1) * lr) * (sqrt(bc2) / (sqrt(v) + eps))) * r
    otherwise (unrectified: plain momentum SGD with a bias-corrected m, and no eps at all):
        param = param - (m / bc1) * lr

``rho_inf``, ``rho_t``, the branch and ``r`` are computed once per step in float64
(:func:`radam_scalars`) and the constants cast to the arrays' dtype. The kernel takes the branch
once per call, outside the loop, so each branch is its own vectorized loop.

Where eps sits: next to the *raw* ``sqrt(v)``, before the bias correction ``sqrt(bc2)`` is
applied (Adam's eps sits next to ``sqrt(v / bc2)``). And eps only matters from the first
rectified step on: with ``beta2 = 0.999``, ``rho_t`` is 4.996 at ``t = 5`` and 5.994 at
``t = 6``, so steps 1 to 5 ignore eps entirely and step 6 is the first that uses it (with
``beta2 = 0.99``: 4.96 and 5.94, also step 6; a smaller ``beta2`` may never rectify: ``rho_inf``
must exceed 5, i.e. ``beta2 > 2/3``). With ``eps=0``, a coordinate whose gradient has always
been zero gets ``0 * inf = NaN`` from the first rectified step on.

16-bit parameters and state (``state_dtype``, ``rounding``; see :mod:`minnet.optim.optimizer`):
the kernel reads float16/bfloat16 buffers as ``uint16`` bit patterns and computes in float32.
``rounding="fused"`` computes the step above in float32 and rounds each stored value once.
``rounding="per_op"`` rounds every intermediate to the dtype of the tensor PyTorch's
``_single_tensor_radam`` writes it to (``rp``: parameter/gradient dtype, ``rs``: state dtype;
the step ``x`` is a new tensor of the state dtype), in its order:

    param = rp(param * (1 - lr * weight_decay))       param.mul_(...)   (decoupled)
    g     = rp(g + weight_decay * param)              grad.add(param, alpha=weight_decay)  (L2)
    m     = rs(lerp(m, g, 1 - beta1))                 exp_avg.lerp_(grad, 1 - beta1)
    v     = rs(rs(v * beta2) + (1 - beta2) * g * g)   exp_avg_sq.mul_(beta2).addcmul_(...)
    x     = rs(rs(m / bc1) * lr)                      bias_corrected_exp_avg * lr
    rectified steps:
      a   = rs(sqrt(bc2) / rs(rs(sqrt(v)) + eps))     exp_avg_sq.sqrt().add_(eps); bc2**0.5 / .
      x   = rs(rs(x * a) * r)                         ... * adaptive_lr * rect
    param = rp(param - x)                             param.add_(x, alpha=-1.0)

No PyTorch fixture covers RAdam in 16-bit: "per_op" is this transcription of PyTorch's source
(its op order and float32 op-math), checked against the NumPy reference below, not against
recorded PyTorch runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numba
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
    check_weight_decay,
)

__all__ = ["RAdam"]


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
    rectified: bool  # rho_t > 5


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


def radam_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
    decoupled_weight_decay: bool = False,
) -> RAdamScalars:
    """Step ``step``'s constants: ``rho_t``, the branch and ``r`` in float64, cast to ``dtype``."""
    t = float(step)
    rho_inf, rho_t = radam_rho(beta2, step)
    rectified = rho_t > 5.0
    rect = 1.0
    if rectified:
        rect = (
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        ) ** 0.5
    decoupled = decoupled_weight_decay and weight_decay != 0
    l2 = 0.0 if decoupled_weight_decay else weight_decay
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    with np.errstate(over="ignore"):
        c = np.array(
            [1.0 - beta1, beta2, 1.0 - beta2, 1.0 - beta1**t, lr, (1.0 - beta2**t) ** 0.5, eps,
             rect, l2, decay],
            dtype,
        ).tolist()  # fmt: skip
    f = dtype.type
    lerp_w = f(c[0])
    return RAdamScalars(
        lerp_w, f(1) - lerp_w, f(c[1]), f(c[2]), f(c[3]), f(c[4]), f(c[5]), f(c[6]), f(c[7]),
        f(c[8]), f(c[9]), bool(rectified),
    )  # fmt: skip


# -- the element rule ---------------------------------------------------------------------------


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (decoupled,
    rectified)``, the second chosen once per step (:func:`_rectified`), so each branch is its
    own loop. Under ``"per_op"`` every op's result is rounded as the module docstring lists."""
    decoupled, rectified = o
    p_in, g, m, v = moments(p, g, state[0], state[1], s, decoupled, rp, rs)
    step = round_to(round_to(m / s.bc1, rs) * s.lr, rs)  # bias_corrected_exp_avg * lr
    dominated = False
    if rectified:
        root = round_to(np.sqrt(v), rs)  # exp_avg_sq.sqrt()
        adaptive = round_to(s.sqrt_bc2 / round_to(root + s.eps, rs), rs)  # bc2**0.5 / (. + eps)
        step = round_to(round_to(step * adaptive, rs) * s.rect, rs)  # ... * adaptive_lr * rect
        dominated = s.eps >= root
    new = p_in - step  # param.add_(x, alpha=-1.0)
    return p_in, new, (m, v), -step, new - p, dominated, g


@numba.njit(inline="always", error_model="numpy")
def _rectified(s):  # pragma: no cover - compiled
    return s.rectified


#: RAdam's element rule; the second moment ``exp_avg_sq`` is state 1; rectified or not is
#: decided once per step.
RULE = Rule(update, second_moment=1, branch=_rectified)


def radam_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    scalars: RAdamScalars,
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
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
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
        # PyTorch's order of checks: lr, eps, betas, weight_decay.
        lr = check_lr(group["lr"])
        eps = check_eps(group["eps"])
        betas = check_betas(group["betas"])
        weight_decay = check_weight_decay(group["weight_decay"])
        decoupled = check_bool("decoupled_weight_decay", group["decoupled_weight_decay"])
        return {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled,
            "maximize": check_bool("maximize", group["maximize"]),
        }

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> RAdamScalars:
        beta1, beta2 = group["betas"]
        return radam_scalars(
            dtype,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            step=step,
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (bool(group["decoupled_weight_decay"] and group["weight_decay"] != 0),)

    def _float_reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        (decoupled,) = self._options(group)

        def reference(param, grad, exp_avg, exp_avg_sq, scalars):  # type: ignore[no-untyped-def]
            radam_step_reference(param, grad, exp_avg, exp_avg_sq, scalars, decoupled)

        return reference

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v)"``: eps is added to the root of the raw (uncorrected) second moment, in
        rectified steps only."""
        return "sqrt(v)"

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int
    ) -> np.ndarray:
        """The multiplier ``k`` of ``param -= lr * k * m_hat`` in step ``step`` (float64):
        ``r * sqrt(1 - beta2**t) / (sqrt(v) + eps)`` in a rectified step, 1 in an unrectified
        one (no eps there); ``inf`` where ``eps=0`` and a coordinate never saw a gradient."""
        beta2 = group["betas"][1]
        v = state["exp_avg_sq"].astype(np.float64)
        s = radam_scalars(
            np.dtype(np.float64), lr=group["lr"], beta1=group["betas"][0], beta2=beta2,
            eps=group["eps"], weight_decay=0.0, step=step,
        )  # fmt: skip
        if not s.rectified:
            return np.ones_like(v)
        with np.errstate(divide="ignore"):
            return float(s.rect) * (float(s.sqrt_bc2) / (np.sqrt(v) + group["eps"]))

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

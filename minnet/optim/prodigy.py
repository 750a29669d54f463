r"""Prodigy (Mishchenko and Defazio 2023, "Prodigy: An Expeditiously Adaptive Parameter-Free
Learner"): the class, its element rule, its global reduction and plain-NumPy references, side
by side. optax 0.2.8's ``optax.contrib.prodigy``.

Prodigy is AdamW whose step size is a running estimate ``d`` of the distance to the solution
(optax's ``estim_lr``), grown from ``estim_lr0`` by a ratio of two sums over **every**
parameter of the model: ``sum(g * (p0 - p))`` (the gradient against the distance travelled from
the initial point ``p0``) and ``sum(|s|)`` (the weighted sum of past gradients). So a step is
two compiled passes over the flat buffers (:class:`minnet.optim._kernel.Reduction`): a
read-only reduction that sums both in float64 over every run of every group and dtype, then
the elementwise Adam-like update with the new ``d``. ``d`` and the weighted numerator are the
group state (floats in every parameter's state-dict entry, ``"estim_lr"`` and
``"numerator_weighted"`` as optax names them), so a resumed run continues bit for bit. The
update is in :class:`Prodigy`'s docstring, in optax's order of operations.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (``p0`` is stored in the state dtype too). ``rounding="per_op"`` is refused: PyTorch has
no Prodigy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Reduction, Rule, element
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_betas,
    check_bool,
    check_eps,
    check_lr,
    check_nonnegative,
    check_real,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Prodigy"]


class ProdigyScalars(NamedTuple):
    """Per-step constants of the Prodigy update, already in the arrays' dtype."""

    d: np.floating  # estim_lr before the step: dg = d * g
    beta1: np.floating
    one_minus_beta1: np.floating
    beta2: np.floating
    one_minus_beta2: np.floating
    beta3: np.floating
    s_lr: np.floating  # dlr (or d with safeguard_warmup): s = beta3 * s + s_lr * dg / d0
    d0: np.floating  # estim_lr0
    dlr: np.floating  # d * lr * sqrt(1 - beta2**t) / (1 - beta1**t)
    neg_wd_dlr: np.floating  # -weight_decay * dlr
    d_eps: np.floating  # the new estim_lr times eps (0 in the reduction's pass)


def check_beta3(beta3: object) -> float | None:
    """``None`` (``sqrt(beta2)``) or a real in ``[0, 1)``: ``Invalid beta3 value: {beta3}``."""
    if beta3 is None:
        return None
    v = check_real("beta3", beta3)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"Invalid beta3 value: {beta3}")
    return v


def check_estim_lr0(estim_lr0: object) -> float:
    """A real ``> 0`` (the reduction divides by it): ``Invalid estim_lr0 value: {estim_lr0}``."""
    v = check_real("estim_lr0", estim_lr0)
    if not 0.0 < v < math.inf:
        raise ValueError(f"Invalid estim_lr0 value: {estim_lr0}")
    return v


# -- the reduction and the element rule --------------------------------------------------------


@element
def reduce(p, g, state, s, o):  # pragma: no cover - compiled
    """One coordinate's share of the two global sums: ``g * (p0 - p)`` and ``|s_new|`` (the
    ``s`` the update will store)."""
    dg = s.d * g
    sk = s.beta3 * state[2] + s.s_lr * dg / s.d0
    return g * (state[3] - p), np.abs(sk)


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (decay,)``. No
    per_op model (refused by the class)."""
    (decay,) = o
    m, v, sk, p0 = state[0], state[1], state[2], state[3]
    dg = s.d * g
    m = s.beta1 * m + s.one_minus_beta1 * dg
    v = s.beta2 * v + s.one_minus_beta2 * dg * dg
    sk = s.beta3 * sk + s.s_lr * dg / s.d0
    root = np.sqrt(v)
    step = s.dlr * m / (root + s.d_eps)
    if decay:
        delta = s.neg_wd_dlr * p - step
    else:
        delta = -step
    return p, p + delta, (m, v, sk, p0), delta, delta, s.d_eps >= root, dg


#: Prodigy's rule: the second moment ``exp_avg_sq`` is state 1; two global sums.
RULE = Rule(update, second_moment=1, reduce=Reduction(reduce, 2))


def prodigy_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: ProdigyScalars, o: tuple
) -> None:
    """The update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg, exp_avg_sq, grad_sum, _ = state
    with np.errstate(all="ignore"):
        dg = s.d * grad
        exp_avg[...] = s.beta1 * exp_avg + s.one_minus_beta1 * dg
        exp_avg_sq[...] = s.beta2 * exp_avg_sq + s.one_minus_beta2 * dg * dg
        grad_sum[...] = s.beta3 * grad_sum + s.s_lr * dg / s.d0
        step = s.dlr * exp_avg / (np.sqrt(exp_avg_sq) + s.d_eps)
        param += s.neg_wd_dlr * param - step if o[0] else -step


def prodigy_reduce_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: ProdigyScalars, o: tuple
) -> tuple[float, float]:
    """The reduction with whole-array NumPy: ``(sum(g * (p0 - p)), sum(|s_new|))`` (float64)."""
    _, _, grad_sum, params0 = state
    with np.errstate(all="ignore"):
        sk = s.beta3 * grad_sum + s.s_lr * (s.d * grad) / s.d0
        return (float(np.sum(np.float64(grad * (params0 - param)))),
                float(np.sum(np.abs(np.float64(sk)))))  # fmt: skip


# -- the class ------------------------------------------------------------------------------


class Prodigy(Optimizer):
    r"""Prodigy with optax 0.2.8's exact semantics (``optax.contrib.prodigy``): a global
    reduction pass and one fused elementwise Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``d``/``estim_lr`` (starts
    at ``estim_lr0``), ``N``/``numerator_weighted`` (starts at 0), the state arrays ``m`` and
    ``v`` (``exp_avg``, ``exp_avg_sq``, from 0), ``s``/``grad_sum`` (from 0) and ``p0``/
    ``params0`` (a copy of the parameter at its first step), and ``sum`` over **every
    coordinate of every parameter that takes the step** (all groups and dtypes):

    .. code-block:: text

        dlr = d * lr * sqrt(1 - beta2**t) / (1 - beta1**t)
        dg  = d * g
        m   = beta1 * m + (1 - beta1) * dg
        v   = beta2 * v + (1 - beta2) * dg * dg
        s   = beta3 * s + dlr * dg / estim_lr0       (d * dg / estim_lr0 with safeguard_warmup)
        N   = beta3 * N + (d / estim_lr0) * dlr * sum(g * (p0 - p))
        d'  = max(d, estim_lr_coef * N / sum(|s|))
        p   = p + (-weight_decay * dlr * p - dlr * m / (sqrt(v) + d' * eps))

    ``beta3=None`` is ``sqrt(beta2)``. ``eps`` sits *outside* the square root, **times the new
    distance estimate** ``d'``: ``v`` is a moment of ``d * g``, so ``sqrt(v)`` grows with
    ``d`` and so does eps's share, and eps dominates where ``|g|`` stays below about
    ``eps * d' / d`` (no bias correction of ``v`` inside the root: it is in ``dlr``).
    ``weight_decay`` is AdamW's, decoupled and scaled by ``dlr``. At the first step ``p = p0``,
    so ``N = 0`` and ``d`` stays ``estim_lr0``; a step at which every gradient so far has been
    0 makes ``sum(|s|) = 0`` and ``d' = max(d, 0/0)`` NaN, as in optax (``check_finite=True``
    refuses it). With ``eps=0`` a coordinate whose gradient has been 0 divides 0 by 0.

    **Global, not per tensor or group.** The two sums run over the whole model: minnet sums
    them in float64 (optax in the parameters' dtype, in XLA's order: the same to round-off).
    Every parameter that takes a step gets the same new ``d`` and ``N`` (its state-dict
    entry's ``"estim_lr"`` and ``"numerator_weighted"``); a parameter without a gradient is
    left out of the sums and keeps its values, and the step continues from the values of the
    parameters with the most steps. With several groups, each group's ``lr`` enters its own
    terms (``dlr``), while ``beta3`` (the decay of ``N``) and ``estim_lr_coef`` are taken from
    the first group that takes the step (optax has a single tree; the ``prodigyopt`` package
    also takes its global settings from the first group).

    Defaults: optax's ``prodigy(learning_rate=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8,
    estim_lr0=1e-6, estim_lr_coef=1.0, weight_decay=0.0, safeguard_warmup=False)``; ``lr`` is
    the schedule factor on ``d`` (1: no schedule; set ``group["lr"]`` per step for one).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: the learning-rate factor, ``>= 0``. Default ``1.0``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
        beta3: the decay of ``s`` and ``N``, in ``[0, 1)``, or ``None`` for ``sqrt(beta2)``.
            Default ``None``.
        eps: added to ``sqrt(v)`` times ``d'``, ``>= 0``. Default ``1e-8``.
        estim_lr0: the initial distance estimate ``d``, ``> 0``. Default ``1e-6``.
        estim_lr_coef: the factor on each new estimate, ``>= 0``. Default ``1.0``.
        weight_decay: decoupled, times ``dlr``, ``>= 0``. Default ``0``.
        safeguard_warmup: leave ``lr`` out of ``s`` (optax's). Default ``False``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no Prodigy.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        estim_lr0: float = 1e-6,
        estim_lr_coef: float = 1.0,
        weight_decay: float = 0.0,
        safeguard_warmup: bool = False,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, estim_lr0=estim_lr0,
                        estim_lr_coef=estim_lr_coef, weight_decay=weight_decay,
                        safeguard_warmup=safeguard_warmup)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(prodigy_reference)
    reduce_reference = staticmethod(prodigy_reduce_reference)
    checks: Mapping[str, Callable[[Any], Any]] = {
        "lr": check_lr, "eps": check_eps, "betas": check_betas, "beta3": check_beta3,
        "weight_decay": check_weight_decay, "estim_lr0": check_estim_lr0,
        "estim_lr_coef": partial(check_nonnegative, "estim_lr_coef"),
        "safeguard_warmup": partial(check_bool, "safeguard_warmup"),
    }  # fmt: skip
    #: ``params0`` starts as a copy of the parameter, at its first step.
    _param_state = ("params0",)

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0, "grad_sum": 0.0, "params0": 0.0}

    def _group_state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"estim_lr": float(group["estim_lr0"]), "numerator_weighted": 0.0}

    @staticmethod
    def _beta3(group: Mapping[str, Any]) -> float:
        b3 = group["beta3"]
        return group["betas"][1] ** 0.5 if b3 is None else float(b3)

    @staticmethod
    def _dlr(group: Mapping[str, Any], d: float, step: int) -> float:
        beta1, beta2 = group["betas"]
        t = float(step)
        bc = ((1.0 - beta2**t) ** 0.5) / (1.0 - beta1**t)
        return d * group["lr"] * bc

    def _reduce_group_state(
        self, parts: list[tuple[Mapping[str, Any], int, Mapping[str, float], tuple[float, ...]]]
    ) -> dict[str, float]:
        """``N = beta3 * N + sum over runs of (d / estim_lr0) * dlr * sum(g * (p0 - p))``, ``d'
        = max(d, estim_lr_coef * N / sum(|s|))`` (float64; NaN propagates as ``jnp.maximum``),
        from the group state of the run with the most steps."""
        first = max(parts, key=lambda part: part[1])
        group0, state = first[0], first[2]
        d, n_old = state["estim_lr"], state["numerator_weighted"]
        numerator = self._beta3(group0) * n_old
        denominator = 0.0
        for group, step, _, (acc, abs_s) in parts:
            numerator += (d / group["estim_lr0"]) * self._dlr(group, d, step) * acc
            denominator += abs_s
        with np.errstate(all="ignore"):
            estimate = float(np.float64(group0["estim_lr_coef"] * numerator) / denominator)
        d_new = math.nan if math.isnan(estimate) or math.isnan(d) else max(d, estimate)
        return {"estim_lr": d_new, "numerator_weighted": numerator}

    def _scalars(
        self,
        group: Mapping[str, Any],
        dtype: np.dtype,
        step: int,
        group_state: Mapping[str, float] | None = None,
        after: Mapping[str, float] | None = None,
    ) -> ProdigyScalars:
        """The step's constants from the group state before it; ``after`` (the state the
        reduction gave) sets ``d' * eps``, else (the reduction's own pass) ``d * eps``."""
        if group_state is None:
            group_state = self._group_state_spec(group)
        beta1, beta2 = group["betas"]
        d = group_state["estim_lr"]
        dlr = self._dlr(group, d, step)
        d_new = d if after is None else after["estim_lr"]
        s_lr = d if group["safeguard_warmup"] else dlr
        return cast_scalars(ProdigyScalars, dtype, d, beta1, 1.0 - beta1, beta2, 1.0 - beta2,
                            self._beta3(group), s_lr, group["estim_lr0"], dlr,
                            -group["weight_decay"] * dlr, d_new * group["eps"])  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (group["weight_decay"] != 0,)

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Prodigy"

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        """eps=0 meeting a zero ``v`` (the base's), or a distance estimate of 0/0: every
        gradient so far has been 0, so ``sum(|s|)`` is 0."""
        cause = super()._nonfinite_cause(group, name, grad, state)
        if cause is None and not (state["grad_sum"] != 0).any() and not (grad != 0).any():
            return (
                f"every gradient of {name} so far has been 0: if all parameters' are, Prodigy's "
                "distance estimate is 0/0 = NaN (sum(|s|) = 0, as in optax); step once a "
                "gradient is non-zero"
            )
        return cause

    # -- what eps does (for the lab) --------------------------------------------------------

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v) / d"``: eps times the distance estimate ``d`` is added to ``sqrt(v)``
        (``v`` a moment of ``d * g``)."""
        return "sqrt(v) / d"

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``d / (sqrt(v) + d * eps)`` (float64) of the latest step, ``d`` the distance estimate
        it ended with (``group_state["estim_lr"]``): the factor on ``m / d`` (an EMA of ``g``),
        so comparable with Adam's ``1 / (sqrt(v_hat) + eps)``. Not a ``Rule.multiplier``: the
        step's constants hold the estimate from before the step."""
        if group_state is None:
            i = next(k for k, g in enumerate(self.param_groups) if g is group)
            group_state = next(s for flat in self._flats[i] for s, t in
                               zip(flat.group_states, flat.steps) if t == step)  # fmt: skip
        d = group_state["estim_lr"]
        v = state["exp_avg_sq"].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return d / (np.sqrt(v) + d * group["eps"])

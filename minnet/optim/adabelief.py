r"""AdaBelief: the class, its fused Numba kernel and a plain-NumPy reference, side by side.

AdaBelief (Zhuang et al. 2020) is Adam with the second moment of the *prediction error*
``g - m`` in place of the second moment of ``g``: the step is large where the gradient is what
the running mean predicted ("belief"), small where it is not. This is ``optax.adabelief``
(optax 0.2.8, ``scale_by_belief``) exactly. PyTorch has no AdaBelief; the state names follow
PyTorch's style and optax's meaning:

    exp_avg      = optax's ``mu``: EMA of gradients
    exp_avg_var  = optax's ``nu``: EMA of squared prediction errors, plus the stored eps_root

One step ``t`` (counting from 1), in optax's order of operations so that float64 results agree
with optax to round-off (``bc1 = 1 - beta1**t``, ``bc2 = 1 - beta2**t``):

    m     = (1 - beta1) * g + beta1 * m
    e     = g - m                                   (this step's m, as in optax and the paper)
    s     = (1 - beta2) * (e * e) + beta2 * s
    s     = s + eps_root                            (STORED in the state, every step)
    param = param + (m / bc1) / (sqrt(s / bc2) + eps) * (-lr)

Epsilon twice: ``eps_root`` is added to ``s`` inside the state at every step, so it is decayed
by ``beta2`` and accumulates, ``s`` carries ``eps_root * (1 - beta2**t) / (1 - beta2)`` and
the bias-corrected ``s_hat = s / bc2`` carries ``eps_root / (1 - beta2)`` (1e-13 for the
defaults, so ``sqrt(s_hat) >= 3.2e-7``); ``eps`` is added outside the root, after bias
correction (as Adam's). With ``eps = eps_root = 0`` a coordinate whose prediction error has
always been zero (a zero gradient, or ``beta1 = 0``) divides by zero: 0/0 = NaN or m/0 = inf.

Defaults are optax's (``lr=1e-3``, ``betas=(0.9, 0.999)``, ``eps=1e-16``, ``eps_root=1e-16``).
The authors' ``adabelief-pytorch`` package differs (eps added to ``s`` as ``+ eps`` inside
and decoupled weight decay by default); minnet follows optax, the library recorded in the
fixtures.

16-bit parameters and state (``state_dtype``; see :mod:`minnet.optim.optimizer`): the kernel
reads float16/bfloat16 buffers as ``uint16`` bit patterns, computes the step above in float32
and rounds each stored value once (``rounding="fused"``, what optax does with float32
promotion). ``rounding="per_op"`` is refused: it means PyTorch's op-by-op rounding, and PyTorch
has no AdaBelief (no library fixture exists for AdaBelief in 16-bit either). The defaults
``eps = eps_root = 1e-16`` are 0 in float16. ``eps`` is a float32 constant of the step, so it
survives; ``eps_root`` is added to ``s`` in float32 and the step divides by that float32 ``s``,
but ``s`` is *stored* in the state dtype, so a float16 state keeps none of it: it no longer
accumulates from step to step (``s_hat`` carries one step's ``eps_root / bc2`` instead of up to
``eps_root / (1 - beta2)``), and float16 stores ``s`` as 0 after a first step whose gradient
is below about 5.6e-3. The optimizer warns about both at construction; in bfloat16 (float32's
range) both survive.
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
    check_betas,
    check_eps,
    check_lr,
    check_nonnegative,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AdaBelief"]


class AdaBeliefScalars(NamedTuple):
    """Per-step constants of the AdaBelief update, already in the arrays' dtype."""

    one_minus_beta1: np.floating  # 1 - beta1: the gradient's weight in m
    beta1: np.floating
    one_minus_beta2: np.floating  # 1 - beta2: the squared error's weight in s
    beta2: np.floating
    eps_root: np.floating  # added to s (stored) every step
    bc1: np.floating  # 1 - beta1**t
    bc2: np.floating  # 1 - beta2**t
    eps: np.floating  # added to sqrt(s / bc2)
    neg_lr: np.floating  # -lr


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options, no per_op
    model (refused by the class). The second moment sees the prediction error ``e``."""
    m = s.one_minus_beta1 * g + s.beta1 * state[0]
    e = g - m
    v = s.one_minus_beta2 * (e * e) + s.beta2 * state[1]
    v = v + s.eps_root
    den, dominated = sqrt_plus_eps(v / s.bc2, s.eps)
    delta = (m / s.bc1) / den * s.neg_lr
    return p, p + delta, (m, v), delta, delta, dominated, e


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * m_hat``: ``1 / (sqrt(s_hat) + eps)``."""
    return 1.0 / sqrt_plus_eps(state[1] / s.bc2, s.eps)[0]


#: AdaBelief's element rule; its second moment ``exp_avg_var`` is state 1.
RULE = Rule(update, second_moment=1, multiplier=multiplier)


def adabelief_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: AdaBeliefScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg, exp_avg_var = state
    with np.errstate(all="ignore"):
        exp_avg[...] = s.one_minus_beta1 * grad + s.beta1 * exp_avg
        e = grad - exp_avg
        exp_avg_var[...] = s.one_minus_beta2 * (e * e) + s.beta2 * exp_avg_var
        exp_avg_var += s.eps_root
        param += (exp_avg / s.bc1) / (np.sqrt(exp_avg_var / s.bc2) + s.eps) * s.neg_lr


class AdaBelief(Optimizer):
    r"""AdaBelief with optax's exact semantics (``optax.adabelief``), as one fused Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``g`` the gradient,
    ``m``/``exp_avg`` and ``s``/``exp_avg_var`` the moments (both start at zero):

    .. code-block:: text

        m      = (1 - beta1) * g + beta1 * m
        s      = (1 - beta2) * (g - m)**2 + beta2 * s + eps_root   (this step's m; eps_root is
                                                                    stored in s every step)
        m_hat  = m / (1 - beta1**t)
        s_hat  = s / (1 - beta2**t)
        param  = param - lr * m_hat / (sqrt(s_hat) + eps)

    Epsilon sits twice: ``eps_root`` *inside* the root and inside the state (it accumulates:
    ``s_hat`` holds ``eps_root / (1 - beta2)`` on top of the belief term), ``eps`` *outside*
    the root after bias correction. ``stats.eps_dominated`` counts coordinates where
    ``eps >= sqrt(s_hat)`` (``s_hat`` including the stored eps_root);
    :meth:`~minnet.optim.optimizer.Optimizer.multipliers` gives ``1 / (sqrt(s_hat) + eps)``,
    which shows both terms. With ``eps = eps_root = 0`` a coordinate whose gradient has always
    been zero gets 0/0 = NaN, as in optax.

    PyTorch has no AdaBelief: the state dict uses PyTorch's layout with the names
    ``"exp_avg"`` (optax's ``mu``) and ``"exp_avg_var"`` (optax's ``nu``). There is no weight
    decay (optax's ``adabelief`` has none). Parameter groups, ``state_dict``, ``track_stats``
    and ``check_finite`` are :class:`~minnet.optim.optimizer.Optimizer`'s.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3`` (optax has no default; its examples
            use 1e-3).
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)`` (optax's).
        eps: added to ``sqrt(s_hat)``, ``>= 0``. Default ``1e-16`` (optax's).
        eps_root: added to ``s`` and stored, every step, ``>= 0``. Default ``1e-16`` (optax's).
        track_stats: record :class:`~minnet.optim.optimizer.OptimizerStats` in every step.
        check_finite: refuse a step that would make a parameter NaN or infinite (and an
            ``eps`` or ``eps_root`` that the 16-bit state dtype holds as 0 or a subnormal).
        state_dtype: dtype of ``exp_avg`` and ``exp_avg_var`` (``None``: the parameter's;
            float16, bfloat16 or float32 with 16-bit parameters).
        rounding: ``"fused"`` (default; float32 compute, one rounding per stored value). With
            16-bit buffers ``"per_op"`` raises ``ValueError``: PyTorch has no AdaBelief whose
            op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected): ``Invalid learning rate: ...``, ``Invalid beta parameter at index i:
            ...``, ``Invalid epsilon value: ...``, ``Invalid eps_root value: ...``.
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        eps_root: float = 1e-16,
        **options: Unpack[Options],
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "eps_root": eps_root}
        super().__init__(params, defaults, **options)

    rule = RULE
    # Both are checked against the state dtype: eps_root is stored in s every step.
    _eps_options = ("eps", "eps_root")
    _eps_in_state = ("eps_root",)  # added to exp_avg_var and stored there

    reference = staticmethod(adabelief_reference)
    checks = {"lr": check_lr, "betas": check_betas, "eps": check_eps,
              "eps_root": partial(check_nonnegative, "eps_root")}

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_var": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdaBeliefScalars:
        beta1, beta2 = group["betas"]
        return cast_scalars(AdaBeliefScalars, dtype, 1.0 - beta1, beta1, 1.0 - beta2, beta2,
                            group["eps_root"], 1.0 - beta1**step, 1.0 - beta2**step, group["eps"],
                            -group["lr"])

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "AdaBelief"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(s_hat)"``: eps is added to the root of the bias-corrected ``s`` (which
        itself holds the accumulated eps_root)."""
        return "sqrt(s_hat)"

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        if group["eps"] != 0 or group["eps_root"] != 0:
            return None
        beta1, beta2 = group["betas"]
        with np.errstate(all="ignore"):
            m = (1.0 - beta1) * grad + beta1 * state["exp_avg"]
            s = (1.0 - beta2) * (grad - m) ** 2 + beta2 * state["exp_avg_var"]
        if (s == 0).any():
            return (
                f"eps=0 and eps_root=0 and some coordinates of {name} have no prediction error "
                "so far (s = 0: a gradient that was always zero, or beta1=0), so their update "
                "is m/0 (0/0 = NaN); use eps > 0 or eps_root > 0"
            )
        return None

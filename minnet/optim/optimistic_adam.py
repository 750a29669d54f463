r"""Optimistic Adam (Daskalakis et al. 2018, "Training GANs with Optimism"): the class, its
element rule and a plain-NumPy reference, side by side. optax's ``optax.optimistic_adam``
(optax 0.2.8: ``scale_by_adam(..., nesterov=True)``, ``scale_by_optimistic_gradient(alpha=lr,
beta=optimism)``, ``scale_by_learning_rate(1.0)``).

Optimistic gradient descent applied to Adam's direction: with ``r_t`` the (Nesterov) Adam
direction of step ``t``, the step is ``(lr + optimism) * r_t - optimism * r_{t-1}``, an
extrapolation that damps the cycling of min-max games. The update is in
:class:`OptimisticAdam`'s docstring, in optax's order of operations, so that float64 agrees with
optax to round-off. PyTorch and Keras 3 have no Optimistic Adam. State names are PyTorch's
Adam's where the quantity is the same, optax's field name otherwise:

    exp_avg            = optax's ``mu``: EMA of gradients
    exp_avg_sq         = optax's ``nu``: EMA of squared gradients
    previous_gradient  = optax's ``previous_gradient`` of ``scale_by_optimistic_gradient``:
                         despite its name, the previous step's Adam *direction* ``r_{t-1}``
                         (what reaches that transformation is Adam's output, not the gradient)

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (optax with float32 promotion). ``rounding="per_op"`` is refused: it means PyTorch's
op-by-op rounding, and PyTorch has no Optimistic Adam.
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

__all__ = ["OptimisticAdam"]


class OptimisticAdamScalars(NamedTuple):
    """Per-step constants of the Optimistic Adam update, already in the arrays' dtype."""

    one_minus_beta1: np.floating
    beta1: np.floating
    one_minus_beta2: np.floating
    beta2: np.floating
    bc1: np.floating  # 1 - beta1**t
    bc1_next: np.floating  # 1 - beta1**(t+1) (nesterov)
    bc2: np.floating  # 1 - beta2**t
    eps_root: np.floating  # inside the root
    eps: np.floating  # outside the root
    has_prev: np.floating  # 0 at the first step (optax: r_prev = r there), else 1
    no_prev: np.floating  # 1 - has_prev
    coef: np.floating  # lr + optimism (optax's alpha + beta)
    optimism: np.floating  # optax's beta


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (nesterov,)``; no
    per_op model (refused by the class)."""
    (nesterov,) = o
    m, v, prev = state[0], state[1], state[2]
    m = s.one_minus_beta1 * g + s.beta1 * m
    v = s.one_minus_beta2 * (g * g) + s.beta2 * v
    if nesterov:
        m_hat = s.beta1 * (m / s.bc1_next) + s.one_minus_beta1 * (g / s.bc1)
    else:
        m_hat = m / s.bc1
    den, dominated = sqrt_plus_eps(v / s.bc2 + s.eps_root, s.eps)
    r = m_hat / den
    prev = s.has_prev * prev + s.no_prev * r  # optax: where(is_initial_step, r, prev)
    delta = -(s.coef * r - s.optimism * prev)
    return p, p + delta, (m, v, r), delta, delta, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``r = k * m_hat``: ``1 / (sqrt(v_hat + eps_root) + eps)``."""
    return 1.0 / sqrt_plus_eps(state[1] / s.bc2 + s.eps_root, s.eps)[0]


#: Optimistic Adam's element rule; the second moment ``exp_avg_sq`` is state 1.
RULE = Rule(update, second_moment=1, multiplier=multiplier)


def optimistic_adam_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: OptimisticAdamScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg, exp_avg_sq, prev = state
    with np.errstate(all="ignore"):
        exp_avg[...] = s.one_minus_beta1 * grad + s.beta1 * exp_avg
        exp_avg_sq[...] = s.one_minus_beta2 * grad**2 + s.beta2 * exp_avg_sq
        if o[0]:
            m_hat = s.beta1 * (exp_avg / s.bc1_next) + s.one_minus_beta1 * (grad / s.bc1)
        else:
            m_hat = exp_avg / s.bc1
        r = m_hat / (np.sqrt(exp_avg_sq / s.bc2 + s.eps_root) + s.eps)
        before = r if s.has_prev == 0 else prev.copy()
        param -= s.coef * r - s.optimism * before
        prev[...] = r


def _check_optimism(value: object) -> float | None:
    """``None`` (the learning rate) or a real number ``>= 0``."""
    return None if value is None else check_nonnegative("optimism", value)


class OptimisticAdam(Optimizer):
    r"""Optimistic Adam with optax's exact semantics (``optax.optimistic_adam``), as one fused
    Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``m``/``exp_avg`` and
    ``v``/``exp_avg_sq`` the moments and ``r_prev``/``previous_gradient`` the previous step's
    direction (all start at 0), and ``o`` = ``optimism`` (``lr`` when ``None``):

    .. code-block:: text

        m      = (1 - beta1) * g + beta1 * m
        v      = (1 - beta2) * g**2 + beta2 * v
        m_hat  = beta1 * (m / (1 - beta1**(t+1))) + (1 - beta1) * (g / (1 - beta1**t))
                 (nesterov=True, the alias's default; else m / (1 - beta1**t))
        r      = m_hat / (sqrt(v / (1 - beta2**t) + eps_root) + eps)
        r_prev = r                                          (t = 1 only)
        param  = param - ((lr + o) * r - o * r_prev)
        r_prev = r

    The first step is ``param -= lr * r`` (optax takes ``r_prev = r`` while its
    ``is_initial_step`` is set; optax issue #1082), then every step adds ``o`` times the change
    of direction ``r - r_prev``.

    **Where eps sits.** As in optax's Adam: ``eps`` *outside* the square root, added *after* the
    bias correction of ``v``; ``eps_root`` *inside* it (0 in the alias). A coordinate whose
    gradient has always been 0 has ``v = 0`` and gets 0/0 = NaN with ``eps = eps_root = 0``, as
    in optax. ``stats.eps_dominated`` counts coordinates where ``eps >= sqrt(v_hat +
    eps_root)``.

    **The alias.** optax's ``optimistic_adam(learning_rate, optimism=None, b1=0.9, b2=0.999,
    eps=1e-8, eps_root=0.0, mu_dtype=None, *, nesterov=True)``: Adam's direction with
    **Nesterov momentum by default** (``scale_by_adam``'s own default is ``nesterov=False``),
    ``optimism=None`` meaning the learning rate, as in the paper. It has no default learning
    rate, no weight decay and refuses learning-rate schedules (optax 0.2.8 also deprecates it
    in favour of ``optimistic_adam_v2``, whose ``alpha``/``beta`` are the same coefficients
    divided by the learning rate). minnet's ``lr=1e-3`` is PyTorch's Adam default. Here
    ``optimism=None`` follows the group's current ``lr`` at every step.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        optimism: the weight ``o`` of the change of direction, ``>= 0``, or ``None`` for
            ``lr``. Default ``None``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)`` (optax's ``b1``, ``b2``). Default
            ``(0.9, 0.999)``.
        eps: added to the square root, ``>= 0``. Default ``1e-8``.
        eps_root: added to ``v_hat`` inside the square root, ``>= 0``. Default ``0``.
        nesterov: Nesterov's ``m_hat`` (above). Default ``True``, the alias's.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no Optimistic Adam whose op-by-op rounding it would
            follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected): ``Invalid learning rate: ...``, ``Invalid optimism value: ...``,
            ``Invalid beta parameter at index i: ...``, ``Invalid epsilon value: ...``,
            ``Invalid eps_root value: ...``.
        TypeError: on a hyperparameter of the wrong type, or an unknown keyword.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        optimism: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        eps_root: float = 0.0,
        nesterov: bool = True,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, optimism=optimism, betas=betas, eps=eps, eps_root=eps_root,
                        nesterov=nesterov)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(optimistic_adam_reference)
    _eps_options = ("eps", "eps_root")
    checks = {"lr": check_lr, "optimism": _check_optimism, "betas": check_betas,
              "eps": check_eps, "eps_root": partial(check_nonnegative, "eps_root")}  # fmt: skip

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0, "previous_gradient": 0.0}

    def _scalars(
        self, group: Mapping[str, Any], dtype: np.dtype, step: int
    ) -> OptimisticAdamScalars:
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        optimism = lr if group["optimism"] is None else group["optimism"]
        t = float(step)
        has_prev = 0.0 if step == 1 else 1.0
        return cast_scalars(OptimisticAdamScalars, dtype, 1.0 - beta1, beta1, 1.0 - beta2,
                            beta2, 1.0 - beta1**t, 1.0 - beta1 ** (t + 1.0), 1.0 - beta2**t,
                            group["eps_root"], group["eps"], has_prev, 1.0 - has_prev,
                            lr + optimism, optimism)  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (bool(group["nesterov"]),)

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Optimistic Adam"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v_hat + eps_root)"`` (``"sqrt(v_hat)"`` with ``eps_root=0``, the default):
        eps is added to the root of the bias-corrected second moment."""
        if options.get("eps_root", 0.0):
            return "sqrt(v_hat + eps_root)"
        return "sqrt(v_hat)"

    _eps0_advice = " or eps_root > 0"

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        if group["eps_root"] != 0:  # the denominator is at least sqrt(eps_root)
            return None
        return super()._nonfinite_cause(group, name, grad, state)

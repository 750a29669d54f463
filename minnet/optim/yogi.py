r"""Yogi (Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization"): the class, its
element rule and a plain-NumPy reference, side by side. optax's ``optax.yogi``.

Adam with an additive second moment: ``v`` moves towards ``g**2`` by ``(1 - beta2) * g**2`` in
the direction of ``sign(g**2 - v)``, so it grows at most as fast as Adam's and shrinks slowly
after a burst of large gradients. The update is in :class:`Yogi`'s docstring, in optax's order
of operations (``scale_by_yogi`` then ``scale_by_learning_rate``), so that float64 agrees with
optax to round-off. PyTorch and Keras 3 have no Yogi; the state names are PyTorch's Adam's
(``exp_avg``, ``exp_avg_sq``; optax's ``mu``, ``nu``).

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (optax with float32 promotion). ``rounding="per_op"`` is refused: it means PyTorch's
op-by-op rounding, and PyTorch has no Yogi.
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

__all__ = ["Yogi"]


class YogiScalars(NamedTuple):
    """Per-step constants of the Yogi update, already in the arrays' dtype."""

    one_minus_beta1: np.floating
    beta1: np.floating
    one_minus_beta2: np.floating
    bc1: np.floating  # 1 - beta1**t: m_hat = m / bc1
    bc2: np.floating  # 1 - beta2**t: v_hat = v / bc2
    eps: np.floating
    neg_lr: np.floating  # -lr


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options, no per_op
    model (refused by the class)."""
    m, v = state[0], state[1]
    m = s.one_minus_beta1 * g + s.beta1 * m
    g2 = g * g
    v = v - s.one_minus_beta2 * np.sign(v - g2) * g2
    den, dominated = sqrt_plus_eps(v / s.bc2, s.eps)
    delta = s.neg_lr * ((m / s.bc1) / den)
    return p, p + delta, (m, v), delta, delta, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * m_hat``: ``1 / (sqrt(v_hat) + eps)``."""
    return 1.0 / sqrt_plus_eps(state[1] / s.bc2, s.eps)[0]


#: Yogi's element rule; the second moment ``exp_avg_sq`` is state 1.
RULE = Rule(update, second_moment=1, multiplier=multiplier)


def yogi_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: YogiScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg, exp_avg_sq = state
    with np.errstate(all="ignore"):
        exp_avg[...] = s.one_minus_beta1 * grad + s.beta1 * exp_avg
        sq = grad * grad
        exp_avg_sq -= s.one_minus_beta2 * np.sign(exp_avg_sq - sq) * sq
        m_hat = exp_avg / s.bc1
        v_hat = exp_avg_sq / s.bc2
        param += s.neg_lr * (m_hat / (np.sqrt(v_hat) + s.eps))


class Yogi(Optimizer):
    r"""Yogi with optax's exact semantics (``optax.yogi``), as one fused Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``m``/``exp_avg`` and
    ``v``/``exp_avg_sq`` the moments, **both starting at** ``initial_accumulator_value``
    (``1e-6``; optax's ``scale_by_yogi`` default, which the alias keeps):

    .. code-block:: text

        m     = (1 - beta1) * g + beta1 * m
        v     = v - (1 - beta2) * sign(v - g**2) * g**2      (additive, not Adam's average)
        param = param - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    ``eps`` sits *outside* the square root and is added *after* the bias correction of ``v``
    (optax's ``eps_root`` inside the root is 0 in the alias and not offered). Both moments are
    bias-corrected although they do not start at 0 (optax does so). Its default is large,
    ``1e-3``: it dominates ``sqrt(v_hat)`` wherever ``|g|`` stays below about ``1e-3``, where
    Yogi steps like SGD with learning rate ``lr / eps``. ``v`` stays positive once it starts
    positive, so ``eps=0`` divides by 0 only with ``initial_accumulator_value=0`` on a
    coordinate that never saw a gradient (0/0 = NaN, as in optax).

    Defaults: optax's ``yogi(learning_rate, b1=0.9, b2=0.999, eps=1e-3)`` has no default
    learning rate; minnet's ``lr=1e-2`` is the paper's recommendation (and TensorFlow Addons'
    ``Yogi`` default, whose ``epsilon`` and ``initial_accumulator_value`` are also 1e-3 and
    1e-6). optax's alias has no weight decay; chain one yourself as with optax.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-2``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)`` (optax's ``b1``, ``b2``). Default
            ``(0.9, 0.999)``.
        eps: added to ``sqrt(v_hat)``, ``>= 0``. Default ``1e-3``.
        initial_accumulator_value: the initial value of both moments, ``>= 0``. Default
            ``1e-6``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no Yogi whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        initial_accumulator_value: float = 1e-6,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps,
                        initial_accumulator_value=initial_accumulator_value)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(yogi_reference)
    checks = {"lr": check_lr, "eps": check_eps, "betas": check_betas,
              "initial_accumulator_value": partial(check_nonnegative,
                                                   "initial_accumulator_value")}  # fmt: skip

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        init = float(group["initial_accumulator_value"])
        return {"exp_avg": init, "exp_avg_sq": init}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> YogiScalars:
        beta1, beta2 = group["betas"]
        t = float(step)
        return cast_scalars(YogiScalars, dtype, 1.0 - beta1, beta1, 1.0 - beta2,
                            1.0 - beta1**t, 1.0 - beta2**t, group["eps"], -group["lr"])

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Yogi"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v_hat)"``: eps is added to the root of the bias-corrected second moment."""
        return "sqrt(v_hat)"

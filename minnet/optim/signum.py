r"""Signum (Bernstein et al. 2018, "signSGD: Compressed Optimisation for Non-Convex Problems"):
the class, its element rule and a plain-NumPy reference, side by side. optax's
``optax.signum``.

SignSGD on a momentum: the step is ``-lr * sign(m)`` with ``m`` an exponential moving average
of the gradient (not debiased: the sign does not care). No denominator and no eps. The update
is in :class:`Signum`'s docstring, in optax's order of operations (``ema(beta, debias=False)``
then ``scale_by_sign`` then ``scale_by_learning_rate``), so that float64 agrees with optax to
round-off. PyTorch and Keras 3 have no Signum; the one state array is named ``"exp_avg"``
(optax's ``ema``), as Lion's.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (optax with float32 promotion; optax's ``accumulator_dtype`` is minnet's
``state_dtype``). ``rounding="per_op"`` is refused: it means PyTorch's op-by-op rounding, and
PyTorch has no Signum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.optimizer import Optimizer, Options, cast_scalars, check_lr, check_real

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Signum"]


def check_beta(beta: object) -> float:
    """The momentum's decay, in ``[0, 1)``: ``Invalid beta parameter: {beta}`` (NaN too)."""
    v = check_real("beta", beta)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"Invalid beta parameter: {beta}")
    return v


class SignumScalars(NamedTuple):
    """Per-step constants of the Signum update, already in the arrays' dtype."""

    one_minus_beta: np.floating  # the gradient's weight in the momentum
    beta: np.floating
    neg_lr: np.floating  # -lr


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options, no per_op
    model (refused by the class)."""
    m = s.one_minus_beta * g + s.beta * state[0]
    # np.sign: 0 at 0 (jnp.sign), NaN at NaN; "+ 0" turns Numba's sign(-0.0) = -0.0 into 0.0.
    delta = (np.sign(m) + (s.beta - s.beta)) * s.neg_lr
    return p, p + delta, (m,), delta, delta, False, g


#: Signum's element rule (no eps, no second moment).
RULE = Rule(update)


def signum_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: SignumScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    exp_avg = state[0]
    with np.errstate(all="ignore"):
        exp_avg[...] = s.one_minus_beta * grad + s.beta * exp_avg
        param += np.sign(exp_avg) * s.neg_lr


class Signum(Optimizer):
    r"""Signum with optax's exact semantics (``optax.signum``), as one fused Numba kernel.

    With ``m``/``exp_avg`` the momentum (starts at zero):

    .. code-block:: text

        m     = (1 - beta) * g + beta * m         (optax's ema, not debiased)
        param = param + sign(m) * (-lr)           (sign(0) = 0, as jnp.sign; sign(NaN) = NaN)

    There is **no eps** (nothing divides): ``stats.eps_dominated`` is always 0,
    :meth:`eps_compared_with` and :meth:`~minnet.optim.optimizer.Optimizer.multipliers` are
    ``None``, and the lab trains it once per seed and scenario (``eps`` recorded as NaN). Every
    coordinate whose momentum is not 0 moves by exactly ``lr``; one whose gradient has always
    been 0 does not move. ``beta=0`` is :class:`~minnet.optim.SignSGD`. Unlike Lion, the sign
    is taken of the momentum itself (Lion interpolates it with the gradient by a second beta).

    Defaults: optax's ``signum(learning_rate, beta=0.9, accumulator_dtype=None)`` has no
    default learning rate and no weight decay; minnet's ``lr=1e-3``, ``beta=0.9`` (optax's).
    ``accumulator_dtype`` is minnet's ``state_dtype``.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate (the size of every step), ``>= 0``. Default ``1e-3``.
        beta: the momentum's decay, in ``[0, 1)``. Default ``0.9``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no Signum whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type, or an unknown keyword.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        beta: float = 0.9,
        **options: Unpack[Options],
    ) -> None:
        super().__init__(params, {"lr": lr, "beta": beta}, **options)

    rule = RULE
    reference = staticmethod(signum_reference)
    checks = {"lr": check_lr, "beta": check_beta}

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> SignumScalars:
        beta = group["beta"]
        return cast_scalars(SignumScalars, dtype, 1.0 - beta, beta, -group["lr"])

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Signum"


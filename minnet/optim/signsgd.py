r"""SignSGD (Bernstein et al. 2018, "signSGD: Compressed Optimisation for Non-Convex Problems"):
the class, its element rule and a plain-NumPy reference, side by side. optax's
``optax.sign_sgd``.

Every coordinate steps by ``lr`` in the direction of ``-sign(g)``: no state, no denominator and
no eps. The update is in :class:`SignSGD`'s docstring, in optax's order of operations
(``scale_by_sign`` then ``scale_by_learning_rate``), so that float64 agrees with optax to
round-off (here, exactly: ``sign(g) * (-lr)`` is one rounding). PyTorch and Keras 3 have no
SignSGD. :class:`~minnet.optim.Signum` is the same step on a momentum of the gradient.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds the new parameter
once (optax with float32 promotion). ``rounding="per_op"`` is refused: it means PyTorch's
op-by-op rounding, and PyTorch has no SignSGD. In bfloat16 a step of ``lr`` is lost wherever
``|param|`` exceeds about ``256 * lr`` (``stats.lost_updates`` counts them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.optimizer import Optimizer, Options, cast_scalars, check_lr

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SignSGD"]


class SignSGDScalars(NamedTuple):
    """Per-step constants of the SignSGD update, already in the arrays' dtype."""

    zero: np.floating  # 0: turns Numba's sign(-0.0) = -0.0 into NumPy's 0.0
    neg_lr: np.floating  # -lr


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no state, no options, no
    per_op model (refused by the class)."""
    # np.sign: 0 at 0 (jnp.sign(0) = 0: a zero gradient does not move), NaN at NaN; "+ 0" turns
    # Numba's sign(-0.0) = -0.0 into NumPy's and JAX's 0.0.
    delta = (np.sign(g) + s.zero) * s.neg_lr
    return p, p + delta, (), delta, delta, False, g


#: SignSGD's element rule (no state, no eps).
RULE = Rule(update)


def signsgd_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: SignSGDScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    with np.errstate(all="ignore"):
        param += np.sign(grad) * s.neg_lr


class SignSGD(Optimizer):
    r"""SignSGD with optax's exact semantics (``optax.sign_sgd``), as one fused Numba kernel.

    .. code-block:: text

        param = param + sign(g) * (-lr)          (sign(0) = 0, as jnp.sign; sign(NaN) = NaN)

    There is **no eps** (nothing divides): ``stats.eps_dominated`` is always 0,
    :meth:`eps_compared_with` and :meth:`~minnet.optim.optimizer.Optimizer.multipliers` are
    ``None``, and the lab trains it once per seed and scenario (``eps`` recorded as NaN). Every
    coordinate with a non-zero gradient moves by exactly ``lr``; a coordinate whose gradient is 0
    does not move. An infinite gradient is a step of ``lr`` too (``sign(inf) = 1``, as optax),
    so ``check_finite``, which refuses steps that make a parameter or state non-finite, lets it
    through; a NaN gradient gives a NaN parameter, which it refuses.

    Defaults: optax's ``sign_sgd(learning_rate)`` has no default learning rate and no weight
    decay (chain one yourself, as with optax); minnet's ``lr=1e-3``. PyTorch and Keras 3 have
    no SignSGD, so there is no state (and nothing in the state dict but ``"step"``).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate (the size of every step), ``>= 0``. Default ``1e-3``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no SignSGD whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid learning rate (PyTorch's message; NaN is rejected).
        TypeError: on a learning rate of the wrong type, or an unknown keyword.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        **options: Unpack[Options],
    ) -> None:
        super().__init__(params, {"lr": lr}, **options)

    rule = RULE
    reference = staticmethod(signsgd_reference)
    checks = {"lr": check_lr}

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> SignSGDScalars:
        return cast_scalars(SignSGDScalars, dtype, 0.0, -group["lr"])  # the same at every step

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "SignSGD"

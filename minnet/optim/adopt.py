r"""ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with the
Optimal Rate"): the class, its element rule and a plain-NumPy reference, side by side.
optax's ``optax.contrib.adopt``.

ADOPT normalizes the gradient by the second moment of the *previous* steps (so the gradient
and its normalizer are independent) and only then takes the momentum; its first step only
initialises ``v``. The update is in :class:`ADOPT`'s docstring, in optax's order of operations
(``scale_by_adopt`` then ``scale_by_learning_rate``), so that float64 agrees with optax to
round-off. PyTorch and Keras 3 have no ADOPT; the state names are those of the authors' PyTorch
implementation (``exp_avg``, ``exp_avg_sq``; optax's ``mu``, ``nu``).

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (optax with float32 promotion). ``rounding="per_op"`` is refused: it means PyTorch's
op-by-op rounding, and PyTorch has no ADOPT.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_betas,
    check_eps,
    check_lr,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ADOPT"]


class ADOPTScalars(NamedTuple):
    """Per-step constants of the ADOPT update, already in the arrays' dtype."""

    one_minus_beta1: np.floating  # 0 at the first step (optax's b1_ = 1 there)
    beta1: np.floating  # 1 at the first step
    one_minus_beta2: np.floating  # 1 at the first step (optax's b2_ = 0 there)
    beta2: np.floating  # 0 at the first step
    clip: np.floating  # (t - 1)**0.25, or inf without clipping
    eps: np.floating
    neg_lr: np.floating  # -lr


@element
def denominator(v, s):  # pragma: no cover - compiled
    """``(max(sqrt(v), eps), eps >= sqrt(v))``: eps is a floor, the one place ADOPT writes it."""
    root = np.sqrt(v)
    return np.maximum(root, s.eps), s.eps >= root


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (nesterov,
    clipping)``; no per_op model (refused by the class)."""
    nesterov, clipping = o
    m, v = state[0], state[1]
    den, dominated = denominator(v, s)  # the previous steps' second moment
    x = g / den
    if clipping:
        # "+ 0": Numba's minimum/maximum keep a -0.0 that NumPy's turn into 0.0
        x = np.minimum(np.maximum(x, -s.clip), s.clip) + (s.beta1 - s.beta1)
    v = s.one_minus_beta2 * (g * g) + s.beta2 * v
    m = s.one_minus_beta1 * x + s.beta1 * m
    u = s.one_minus_beta1 * x + s.beta1 * m if nesterov else m
    delta = s.neg_lr * u
    return p, p + delta, (m, v), delta, delta, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in the next step's ``g / max(sqrt(v), eps)``: ``1 / max(sqrt(v), eps)``."""
    return 1.0 / denominator(state[1], s)[0]


#: ADOPT's element rule; the second moment ``exp_avg_sq`` is state 1.
RULE = Rule(update, second_moment=1, multiplier=multiplier)


def adopt_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: ADOPTScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    nesterov, clipping = o
    exp_avg, exp_avg_sq = state
    with np.errstate(all="ignore"):
        x = grad / np.maximum(np.sqrt(exp_avg_sq), s.eps)
        if clipping:
            x = np.clip(x, -s.clip, s.clip)
        exp_avg_sq[...] = s.one_minus_beta2 * grad**2 + s.beta2 * exp_avg_sq
        exp_avg[...] = s.one_minus_beta1 * x + s.beta1 * exp_avg
        u = s.one_minus_beta1 * x + s.beta1 * exp_avg if nesterov else exp_avg
        param += s.neg_lr * u


class ADOPT(Optimizer):
    r"""ADOPT with optax's exact semantics (``optax.contrib.adopt``), as one fused Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``m``/``exp_avg`` and
    ``v``/``exp_avg_sq`` the moments (both start at 0):

    .. code-block:: text

        t = 1:  v = g**2                                   (m stays 0, param does not move)
        t > 1:  x     = g / max(sqrt(v), eps)               (v of the steps before this one)
                x     = clip(x, -(t-1)**0.25, (t-1)**0.25)  (use_clipping)
                v     = beta2 * v + (1 - beta2) * g**2
                m     = beta1 * m + (1 - beta1) * x
                param = param - lr * m
                        (nesterov: param - lr * (beta1 * m + (1 - beta1) * x), the new m)

    ``eps`` is a **floor** under ``sqrt(v)``, not added to it: it matters only where
    ``sqrt(v) < eps`` (optax's docstring calls it "applied to denominator outside of the
    square root"; its code is ``g / maximum(sqrt(nu), eps)``). There is no bias correction.
    The clip at ``+-(t-1)**0.25`` (optax's ``clip_value_fn=lambda x: x**0.25`` of the step
    count before this step) bounds the normalized gradient while ``v`` is still young; optax's
    other ``clip_value_fn`` are not offered. Step 1 runs optax's arithmetic with ``b1 = 1,
    b2 = 0``, so with ``eps=0`` a coordinate whose first gradient is 0 gets ``0 * (0/0) =
    NaN`` as in optax (without clipping every coordinate does: ``0 * (g/0)``).

    Defaults: optax's alias ``adopt(learning_rate, b1=0.9, b2=0.9999, eps=1e-6,
    nesterov=False, use_clipping=True)`` has no default learning rate; minnet's ``lr=1e-3`` is
    the authors' PyTorch implementation's. optax's alias has no weight decay.
    ``stats.eps_dominated`` counts coordinates where ``eps >= sqrt(v)`` (the previous ``v``).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)`` (optax's ``b1``, ``b2``). Default
            ``(0.9, 0.9999)``.
        eps: the floor under ``sqrt(v)``, ``>= 0``. Default ``1e-6``.
        nesterov: Nesterov momentum (above). Default ``False``.
        use_clipping: clip the normalized gradient at ``+-(t-1)**0.25``. Default ``True``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no ADOPT whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        nesterov: bool = False,
        use_clipping: bool = True,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, nesterov=nesterov,
                        use_clipping=use_clipping)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(adopt_reference)
    checks = {"lr": check_lr, "eps": check_eps, "betas": check_betas}

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> ADOPTScalars:
        beta1, beta2 = group["betas"]
        if step == 1:  # optax: b1_ = 1, b2_ = 0 while count == 0
            beta1, beta2 = 1.0, 0.0
        clip = float(step - 1) ** 0.25 if group["use_clipping"] else np.inf
        return cast_scalars(ADOPTScalars, dtype, 1.0 - beta1, beta1, 1.0 - beta2, beta2, clip,
                            group["eps"], -group["lr"])  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (bool(group["nesterov"]), bool(group["use_clipping"]))

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "ADOPT"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v)"``: eps is a floor under the root of the previous second moment."""
        return "sqrt(v)"

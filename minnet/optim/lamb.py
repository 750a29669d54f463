r"""LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76
minutes"): the class, its rule (an element rule and a per-tensor stage) and a plain-NumPy
reference, side by side. Keras 3's ``keras.optimizers.Lamb`` (``variant="keras"``, default) and
optax's ``optax.lamb`` (``variant="optax"``).

Adam's direction ``u = m_hat / (sqrt(v_hat) + eps)`` per coordinate, then per parameter tensor a
trust ratio ``||w|| / ||u||`` that scales the tensor's whole step, so that every layer moves by
about ``lr`` times its own norm. The moments and ``u`` are elementwise (pass 1 of the kernel);
the two norms and the ratio are per tensor (:class:`minnet.optim._kernel.Tensor`); the step
``w += k * u`` with the tensor's ``k = -lr * ratio`` is elementwise again (pass 2). "Tensor" is
a :class:`~minnet.nn.Parameter`, as a leaf is for optax and a variable for Keras. The update
of each library is in :class:`Lamb`'s docstring, in its own order of operations, so that
float64 agrees with it to round-off. PyTorch core has no LAMB.

16-bit storage: ``rounding="fused"`` computes the step in float32 (``u`` is kept in float32
between the passes, the norms are summed in float64) and rounds each stored value once.
``rounding="per_op"`` is refused: PyTorch has no LAMB whose op-by-op rounding it would follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numba
import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, Tensor, element, sqrt_plus_eps
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_betas,
    check_choice,
    check_eps,
    check_lr,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Lamb", "LAMB_VARIANTS"]

#: The values of ``variant``: Keras 3's (default) and optax's.
LAMB_VARIANTS = ("keras", "optax")
#: Each variant's default eps (Keras's ``epsilon=1e-7``, optax's ``eps=1e-6``).
LAMB_EPS = {"keras": 1e-7, "optax": 1e-6}


class LambScalars(NamedTuple):
    """Per-step constants of the LAMB update, already in the arrays' dtype."""

    one_minus_beta1: np.floating
    beta1: np.floating
    one_minus_beta2: np.floating
    beta2: np.floating
    bc1: np.floating  # 1 - beta1**t: m_hat = m / bc1
    bc2: np.floating  # 1 - beta2**t: v_hat = v / bc2
    eps: np.floating
    weight_decay: np.floating  # optax's, added to u before the trust ratio
    lr: np.floating


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """Pass 1, one coordinate: the moments and the direction ``u`` (the ``change`` handed to
    the per-tensor stage). ``o = (keras,)``; no per_op model (refused by the class)."""
    m, v = state[0], state[1]
    if o[0]:  # Keras: m += (g - m) * (1 - beta1), v likewise
        m = m + (g - m) * s.one_minus_beta1
        v = v + (g * g - v) * s.one_minus_beta2
    else:  # optax's update_moment: (1 - b) * g + b * m
        m = s.one_minus_beta1 * g + s.beta1 * m
        v = s.one_minus_beta2 * (g * g) + s.beta2 * v
    den, dominated = sqrt_plus_eps(v / s.bc2, s.eps)
    u = (m / s.bc1) / den
    if not o[0]:
        u = u + s.weight_decay * p  # optax's add_decayed_weights, before the trust ratio
    return p, p, (m, v), u, u, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``u = k * m_hat`` (before the trust ratio): ``1 / (sqrt(v_hat) + eps)``."""
    return 1.0 / sqrt_plus_eps(state[1] / s.bc2, s.eps)[0]


@numba.njit(error_model="numpy")
def scale(pp, uu, s, o):  # pragma: no cover - compiled
    """Per tensor, from ``sum(w**2)`` and ``sum(u**2)`` (float64): ``k = -lr * ratio`` and
    whether eps dominates (it is not in the ratio). Keras: ``ratio = ||w|| / ||u||`` if both
    are ``> 0``, else 1 (a NaN norm gives 1); optax: 1 if either norm is 0, else
    ``||w|| / (||u|| + 0)`` (a NaN norm gives NaN)."""
    w_norm = np.sqrt(pp)
    u_norm = np.sqrt(uu)
    if o[0]:
        ratio = w_norm / u_norm if (w_norm > 0.0 and u_norm > 0.0) else 1.0
    else:
        ratio = 1.0 if (w_norm == 0.0 or u_norm == 0.0) else w_norm / (u_norm + 0.0)
    return -np.float64(s.lr) * ratio, False


@element
def apply(p, u, k, state, s, o, rp, rs):  # pragma: no cover - compiled
    """Pass 2, one coordinate: ``w += k * u`` with the tensor's ``k = -lr * ratio``."""
    delta = k * u
    return p, p + delta, (), delta, delta


#: LAMB's rule: the moments elementwise, the trust ratio per tensor; ``exp_avg_sq`` is state 1.
RULE = Rule(
    update, second_moment=1, tensor=Tensor(scale, apply, first=2), multiplier=multiplier
)


def lamb_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: LambScalars, o: tuple,
    bounds: np.ndarray | None = None,
) -> None:  # fmt: skip
    """The same update with whole-array NumPy, in place (the rule's arguments), each
    ``[bounds[j], bounds[j + 1])`` one tensor (``None``: the whole array)."""
    exp_avg, exp_avg_sq = state
    keras = o[0]
    with np.errstate(all="ignore"):
        if keras:
            exp_avg += (grad - exp_avg) * s.one_minus_beta1
            exp_avg_sq += (grad * grad - exp_avg_sq) * s.one_minus_beta2
        else:
            exp_avg[...] = s.one_minus_beta1 * grad + s.beta1 * exp_avg
            exp_avg_sq[...] = s.one_minus_beta2 * (grad * grad) + s.beta2 * exp_avg_sq
        u = (exp_avg / s.bc1) / (np.sqrt(exp_avg_sq / s.bc2) + s.eps)
        if not keras:
            u = u + s.weight_decay * param
        edges = [0, param.size] if bounds is None else list(bounds)
        for lo, hi in zip(edges[:-1], edges[1:]):
            w_norm = np.linalg.norm(param[lo:hi].astype(np.float64))
            u_norm = np.linalg.norm(u[lo:hi].astype(np.float64))
            if keras:
                ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            else:
                ratio = 1.0 if w_norm == 0 or u_norm == 0 else w_norm / u_norm
            param[lo:hi] -= (float(s.lr) * ratio) * u[lo:hi]


class Lamb(Optimizer):
    r"""LAMB with Keras 3's (``variant="keras"``, default) or optax's (``variant="optax"``)
    exact semantics, as one compiled call per step: Adam's moments elementwise, a trust ratio
    per parameter tensor.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``m``/``exp_avg`` and
    ``v``/``exp_avg_sq`` starting at 0, and every norm the 2-norm over one parameter's
    elements (computed from the parameter *before* the step):

    .. code-block:: text

        variant="keras"   (keras.optimizers.Lamb, keras/src/optimizers/lamb.py)
            m     = m + (g - m) * (1 - beta1)
            v     = v + (g**2 - v) * (1 - beta2)
            u     = (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
            ratio = ||w|| / ||u||  if ||w|| > 0 and ||u|| > 0  else 1
            w     = w - ratio * lr * u

        variant="optax"   (optax.lamb = chain(scale_by_adam(b1, b2, eps, eps_root=0),
                           add_decayed_weights(weight_decay), scale_by_trust_ratio(),
                           scale_by_learning_rate(lr)))
            m     = (1 - beta1) * g + beta1 * m
            v     = (1 - beta2) * g**2 + beta2 * v
            u     = (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps) + weight_decay * w
            ratio = 1  if ||w|| == 0 or ||u|| == 0  else ||w|| / (||u|| + 0)
            w     = w + (u * ratio) * (-lr)

    ``eps`` sits in Adam's part only, *outside* the square root and after the bias correction
    of ``v`` (as Adam's): it dominates ``sqrt(v_hat)`` where ``|g|`` stays below it. The trust
    ratio has **no** eps in either library (optax's ``scale_by_trust_ratio`` has ``eps=0`` and
    ``min_norm=0`` in the alias): a tensor whose weights or direction are all 0 takes the
    ratio 1 instead, in both. A NaN norm gives the ratio 1 in Keras (its ``>`` tests are
    false) and NaN in optax. eps rescales ``u`` where it dominates, and the ratio then
    rescales the whole tensor, so a dominating eps changes the direction inside a tensor, not
    its step length. ``eps=0`` divides 0 by 0 where a coordinate's gradient has been 0 so far
    (its ``u``, then its tensor's norm and its whole tensor, are NaN; Keras's ratio 1 keeps
    the NaN to that coordinate).

    Defaults follow the variant: Keras's ``Lamb(learning_rate=0.001, beta_1=0.9,
    beta_2=0.999, epsilon=1e-7)``; optax's ``lamb(learning_rate, b1=0.9, b2=0.999, eps=1e-6,
    eps_root=0.0, weight_decay=0.0)`` has no default learning rate (minnet's ``lr=1e-3`` is
    Keras's). ``eps=None`` takes the variant's. optax's ``weight_decay`` is added to ``u``
    *before* the trust ratio (so the ratio sees it); Keras's Lamb has none of its own (its base
    optimizer's decoupled ``weight_decay`` is not modelled: ``variant="keras"`` refuses a
    non-zero one). optax's ``mask`` is a parameter group with ``weight_decay=0``; its
    ``eps_root`` (0 in the alias) is not offered.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)`` (Keras's ``beta_1``, ``beta_2``; optax's
            ``b1``, ``b2``). Default ``(0.9, 0.999)``.
        eps: added to ``sqrt(v_hat)``, ``>= 0``. Default ``None``: ``1e-7`` (Keras) or
            ``1e-6`` (optax).
        weight_decay: optax's, added to ``u`` before the trust ratio, ``>= 0``; ``0`` with
            ``variant="keras"``. Default ``0``.
        variant: ``"keras"`` (default) or ``"optax"`` (above).
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no LAMB whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float | None = None,
        weight_decay: float = 0.0,
        variant: str = "keras",
        **options: Unpack[Options],
    ) -> None:
        if eps is None:
            eps = LAMB_EPS.get(variant, 1e-7) if isinstance(variant, str) else 1e-7
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, variant=variant)
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(lamb_reference)
    checks = {"lr": check_lr, "eps": check_eps, "betas": check_betas,
              "weight_decay": check_weight_decay,
              "variant": partial(check_choice, "variant", choices=LAMB_VARIANTS)}  # fmt: skip

    def _check_group(self, hp: Mapping[str, Any]) -> None:
        if hp["variant"] == "keras" and hp["weight_decay"] != 0:
            raise ValueError(
                f"Lamb: weight_decay={hp['weight_decay']} is optax's (added to the direction "
                "before the trust ratio); Keras's Lamb has no weight decay of its own. Use "
                "variant='optax', or weight_decay=0"
            )

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (group["variant"] == "keras",)

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> LambScalars:
        beta1, beta2 = group["betas"]
        t = float(step)
        return cast_scalars(LambScalars, dtype, 1.0 - beta1, beta1, 1.0 - beta2, beta2,
                            1.0 - beta1**t, 1.0 - beta2**t, group["eps"],
                            group["weight_decay"], group["lr"])  # fmt: skip

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Lamb"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v_hat)"``: eps is added to the root of the bias-corrected second moment
        (the trust ratio has none)."""
        return "sqrt(v_hat)"

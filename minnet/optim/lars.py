r"""LARS (You, Gitman and Ginsburg 2017, "Large Batch Training of Convolutional Networks"): the
class, its rule (an element rule and a per-tensor stage) and a plain-NumPy reference, side by
side. optax's ``optax.lars``.

SGD with momentum whose step is rescaled per parameter tensor by a trust ratio
``trust_coefficient * ||w|| / (||u|| + eps)``, ``u = g + weight_decay * w``: each layer moves by
about ``lr * trust_coefficient`` times its own norm, whatever its gradient's scale. ``u`` is
elementwise (pass 1 of the kernel); the norms and the ratio are per tensor
(:class:`minnet.optim._kernel.Tensor`); the scaled step and the momentum trace are elementwise
again (pass 2). "Tensor" is a :class:`~minnet.nn.Parameter`, as a leaf is for optax. The update
is in :class:`Lars`'s docstring in optax's order of operations (``add_decayed_weights``,
``scale_by_trust_ratio``, ``scale_by_learning_rate``, ``trace``), so that float64 agrees with
optax to round-off. PyTorch core and Keras 3 have no LARS.

16-bit storage: ``rounding="fused"`` computes the step in float32 (``u`` is kept in float32
between the passes, the norms are summed in float64) and rounds each stored value once.
``rounding="per_op"`` is refused: PyTorch has no LARS whose op-by-op rounding it would follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numba
import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, Tensor, element
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_eps,
    check_lr,
    check_momentum,
    check_nonnegative,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Lars"]


class LarsScalars(NamedTuple):
    """Per-step constants of the LARS update, already in the arrays' dtype."""

    weight_decay: np.floating
    trust_coefficient: np.floating
    eps: np.floating
    lr: np.floating
    momentum: np.floating


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """Pass 1, one coordinate: ``u = g + weight_decay * w`` (optax's ``add_decayed_weights``),
    the ``change`` handed to the per-tensor stage. No state; no per_op model."""
    u = g + s.weight_decay * p
    return p, p, (), u, u, False, g


@element
def trust_denominator(u_norm, eps):  # pragma: no cover - compiled
    """``||u|| + eps``: the one place LARS's eps is written."""
    return u_norm + eps


@numba.njit(error_model="numpy")
def scale(pp, uu, s, o):  # pragma: no cover - compiled
    """Per tensor, from ``sum(w**2)`` and ``sum(u**2)`` (float64): ``k = -lr * ratio`` with
    optax's ``scale_by_trust_ratio``: ``ratio = trust_coefficient * ||w|| / (||u|| + eps)``,
    1 where either norm is 0 (or without the trust ratio, ``o[0]`` false); and whether eps is
    at least ``||u||``."""
    w_norm = np.sqrt(pp)
    u_norm = np.sqrt(uu)
    eps = np.float64(s.eps)
    ratio = 1.0
    if o[0] and not (w_norm == 0.0 or u_norm == 0.0):
        ratio = np.float64(s.trust_coefficient) * w_norm / trust_denominator(u_norm, eps)
    return -np.float64(s.lr) * ratio, o[0] and eps >= u_norm


@element
def apply(p, u, k, state, s, o, rp, rs):  # pragma: no cover - compiled
    """Pass 2, one coordinate: the scaled step ``x = k * u`` into optax's ``trace``
    (``o[1]``: Nesterov)."""
    x = k * u
    trace = x + s.momentum * state[0]
    delta = x + s.momentum * trace if o[1] else trace
    return p, p + delta, (trace,), delta, delta


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``ratio = trust_coefficient * ||w|| * k``: ``1 / (||u|| + eps)`` from the
    tensor's latest ``update_norm`` (the state's last array); ``None`` without the trust ratio."""
    if not o[0]:
        return None
    return 1.0 / trust_denominator(state[-1], s.eps)


#: LARS's rule: ``u`` elementwise, the trust ratio per tensor, the trace elementwise.
RULE = Rule(update, tensor=Tensor(scale, apply, first=0), multiplier=multiplier)


def lars_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: LarsScalars, o: tuple,
    bounds: np.ndarray | None = None,
) -> None:  # fmt: skip
    """The same update with whole-array NumPy, in place (the rule's arguments), each
    ``[bounds[j], bounds[j + 1])`` one tensor (``None``: the whole array)."""
    (trace,) = state
    trust_ratio, nesterov = o
    with np.errstate(all="ignore"):
        u = grad + s.weight_decay * param
        edges = [0, param.size] if bounds is None else list(bounds)
        for lo, hi in zip(edges[:-1], edges[1:]):
            w_norm = np.linalg.norm(param[lo:hi].astype(np.float64))
            u_norm = np.linalg.norm(u[lo:hi].astype(np.float64))
            ratio = 1.0
            if trust_ratio and w_norm != 0 and u_norm != 0:
                ratio = float(s.trust_coefficient) * w_norm / (u_norm + float(s.eps))
            x = (u[lo:hi] * ratio) * -float(s.lr)
            trace[lo:hi] = x + s.momentum * trace[lo:hi]
            param[lo:hi] += x + s.momentum * trace[lo:hi] if nesterov else trace[lo:hi]


class Lars(Optimizer):
    r"""LARS with optax's exact semantics (``optax.lars``), as one compiled call per step: the
    trust ratio per parameter tensor, the momentum trace elementwise.

    With ``trace`` starting at 0 and every norm the 2-norm over one parameter's elements
    (computed from the parameter *before* the step), optax's ``chain(add_decayed_weights,
    scale_by_trust_ratio, scale_by_learning_rate, trace)`` is:

    .. code-block:: text

        u     = g + weight_decay * w
        ratio = 1  if ||w|| == 0 or ||u|| == 0  else trust_coefficient * ||w|| / (||u|| + eps)
        x     = (u * ratio) * (-lr)
        trace = x + momentum * trace
        w     = w + (x + momentum * trace  if nesterov  else trace)

    ``eps`` sits in the trust ratio's denominator, next to the *tensor's* norm ``||u||``: it
    dominates where the whole tensor's gradient is small (``||u|| <= eps``), and the step of
    such a tensor shrinks with its gradient again, ``~ lr * trust_coefficient * ||w|| * u /
    eps``, instead of keeping the length ``lr * trust_coefficient * ||w||``. Its default is 0,
    which never divides by 0: a tensor whose weights or direction are all 0 takes the ratio 1
    (plain SGD with momentum for it). ``trace`` is optax's (``lr`` and the sign inside it), so
    an ``lr`` changed mid-run acts as in optax.

    Defaults are optax's ``lars(learning_rate, weight_decay=0.0, weight_decay_mask=True,
    trust_coefficient=0.001, eps=0.0, trust_ratio_mask=True, momentum=0.9, nesterov=False)``,
    which has no default learning rate; minnet's ``lr=1.0`` moves each tensor by about
    ``trust_coefficient = 0.1%`` of its norm per step. optax's masks are parameter groups:
    ``weight_decay=0`` for ``weight_decay_mask``, ``trust_ratio=False`` for
    ``trust_ratio_mask`` (optax masks biases and norms out of both in its examples).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1.0``.
        weight_decay: added to the gradient before the trust ratio, ``>= 0``. Default ``0``.
        trust_coefficient: the ratio's factor, ``>= 0``. Default ``1e-3``.
        eps: added to ``||u||`` in the ratio's denominator, ``>= 0``. Default ``0``.
        trust_ratio: whether this group's tensors take the trust ratio (optax's
            ``trust_ratio_mask``). Default ``True``.
        momentum: the trace's decay, ``>= 0``. Default ``0.9``.
        nesterov: optax's Nesterov form of the trace. Default ``False``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no LARS whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        eps: float = 0.0,
        trust_ratio: bool = True,
        momentum: float = 0.9,
        nesterov: bool = False,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, trust_ratio=trust_ratio, momentum=momentum,
                        nesterov=nesterov)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(lars_reference)
    checks = {"lr": check_lr, "momentum": check_momentum, "weight_decay": check_weight_decay,
              "trust_coefficient": partial(check_nonnegative, "trust_coefficient"),
              "eps": check_eps}  # fmt: skip

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"trace": 0.0}

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (bool(group["trust_ratio"]), bool(group["nesterov"]))

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> LarsScalars:
        return cast_scalars(LarsScalars, dtype, group["weight_decay"],
                            group["trust_coefficient"], group["eps"], group["lr"],
                            group["momentum"])  # fmt: skip

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Lars"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"||u|| (per tensor)"``: eps is added to the norm of the tensor's direction in the
        trust ratio's denominator; ``None`` without the trust ratio."""
        return "||u|| (per tensor)" if options.get("trust_ratio", True) else None

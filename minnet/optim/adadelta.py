r"""Adadelta: the class, its element rule and a plain-NumPy reference, side by side.

Notation: ``Eg2`` = ``square_avg`` (running average of squared gradients) and ``Edx2`` =
``acc_delta`` (running average of squared updates), both starting at zero. One step, in
PyTorch's order of operations (``torch.optim.Adadelta``, single-tensor path):

    g     = grad + weight_decay * param                    (only if weight_decay != 0: L2)
    Eg2   = Eg2 * rho + (1 - rho) * g * g
    delta = sqrt(Edx2 + eps) / sqrt(Eg2 + eps) * g         (Edx2 of the previous step)
    Edx2  = Edx2 * rho + (1 - rho) * delta * delta
    param = param + (-lr) * delta

eps sits INSIDE BOTH square roots (Zeiler 2012): in the denominator it floors the gradient's
RMS, as in every adaptive optimizer; in the numerator it is the step size itself while ``Edx2``
is small: the first step of every coordinate is ``lr * sqrt(eps) / sqrt((1 - rho) * g**2 + eps)
* g``, so eps sets the scale at which Adadelta starts moving. With ``eps = 0`` Adadelta never
moves (``Edx2`` stays 0), and a coordinate with ``Eg2 = 0`` gets 0/0 = NaN, as in PyTorch.

Keras 3 Adadelta is the same formula (the fixtures check it) with different defaults:
``learning_rate=1e-3, rho=0.95, epsilon=1e-7`` (PyTorch: ``lr=1.0, rho=0.9, eps=1e-6``).

16-bit storage: ``rounding="fused"`` computes the step above in float32 and rounds each stored
value once; ``rounding="per_op"`` rounds each op's result, as the rule's ``round_to`` calls mark,
to the dtype of the tensor PyTorch's ``_single_tensor_adadelta`` writes it to (``delta`` is a new
tensor of the state dtype). In float16, eps=1e-6 (PyTorch's default) is a subnormal (the
optimizer warns): ``Eg2 + eps`` keeps only about 4 significant bits of it. No PyTorch fixture
covers Adadelta in 16-bit: "per_op" is a transcription of PyTorch's source (its op order and
float32 op-math), checked against the NumPy reference, not against recorded PyTorch runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet._lowp import NATIVE, round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_eps,
    check_lr,
    check_real,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Adadelta"]


class AdadeltaScalars(NamedTuple):
    """Per-step constants of the Adadelta update, already in the arrays' dtype."""

    rho: np.floating
    one_minus_rho: np.floating
    eps: np.floating
    neg_lr: np.floating  # -lr
    weight_decay: np.floating  # the L2 term folded into g


@element
def root_eps(x, s, rs):  # pragma: no cover - compiled
    """``sqrt(x + eps)`` (rounded after each op under ``"per_op"``): the one place Adadelta's eps
    is written, for both of its roots."""
    return round_to(np.sqrt(round_to(x + s.eps, rs)), rs)


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options, the state
    ``(square_avg, acc_delta)``. Under ``"per_op"`` rounding (PyTorch's
    ``_single_tensor_adadelta``) each op's result is rounded to the dtype of the tensor it
    writes (``delta`` is a new tensor of the state dtype)."""
    sq = state[0]
    acc = state[1]
    if s.weight_decay != 0:  # grad.add(param, alpha=weight_decay)
        g = round_to(g + s.weight_decay * p, rp)
    sq = round_to(sq * s.rho, rs)  # square_avg.mul_(rho)
    sq = round_to(sq + s.one_minus_rho * g * g, rs)  # .addcmul_(grad, grad, value=1 - rho)
    std = root_eps(sq, s, rs)  # square_avg.add(eps).sqrt_()
    d = root_eps(acc, s, rs)  # acc_delta.add(eps).sqrt_()
    d = round_to(d / std, rs)  # delta.div_(std)
    d = round_to(d * g, rs)  # .mul_(grad)
    acc = round_to(acc * s.rho, rs)  # acc_delta.mul_(rho)
    acc = round_to(acc + s.one_minus_rho * d * d, rs)  # .addcmul_(delta, delta, value=1 - rho)
    delta = s.neg_lr * d  # param.add_(delta, alpha=-lr)
    return p, p + delta, (sq, acc), delta, delta, s.eps >= sq, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * sqrt(acc_delta + eps) * g``: ``1 / sqrt(square_avg +
    eps)``."""
    return 1.0 / root_eps(state[0], s, NATIVE)


#: Adadelta's element rule; the second moment ``square_avg`` is state 0.
RULE = Rule(update, second_moment=0, multiplier=multiplier)


def adadelta_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: AdadeltaScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    square_avg, acc_delta = state
    with np.errstate(all="ignore"):
        g = grad
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        square_avg *= s.rho
        square_avg += s.one_minus_rho * g * g
        delta = np.sqrt(acc_delta + s.eps) / np.sqrt(square_avg + s.eps) * g
        acc_delta *= s.rho
        acc_delta += s.one_minus_rho * delta * delta
        param += s.neg_lr * delta


def _check_rho(value: object) -> float:
    rho = check_real("rho", value)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"Invalid rho value: {value}")
    return rho


class Adadelta(Optimizer):
    r"""Adadelta with PyTorch's exact semantics (``torch.optim.Adadelta``).

    With ``Eg2`` = ``square_avg`` and ``Edx2`` = ``acc_delta`` (both start at zero):

    .. code-block:: text

        g     = g + weight_decay * param                      (L2 penalty in the gradient)
        Eg2   = rho * Eg2 + (1 - rho) * g**2
        delta = sqrt(Edx2 + eps) / sqrt(Eg2 + eps) * g        eps inside BOTH roots
        Edx2  = rho * Edx2 + (1 - rho) * delta**2
        param = param - lr * delta

    eps has two jobs. In the denominator it floors the gradient's RMS, as in Adam or RMSprop:
    ``stats.eps_dominated`` counts the coordinates where ``eps >= Eg2`` (what
    :meth:`eps_compared_with` names), and :meth:`multipliers` gives ``1 / sqrt(Eg2 + eps)``, the
    denominator's factor. In the numerator it is the step size while ``Edx2`` is small: every
    coordinate starts moving at about ``lr * sqrt(eps)`` per step, whatever the gradient's
    scale, so eps dominates the numerator of every coordinate on the first step by
    construction; that part is a per-coordinate learning rate (``sqrt(Edx2 + eps)``, read it
    from ``state_dict``) and is not counted. With ``eps = 0`` Adadelta never moves, and a
    coordinate with ``Eg2 = 0`` gets 0/0 = NaN, as in PyTorch.

    Keras 3 Adadelta computes the same formula with defaults ``learning_rate=1e-3, rho=0.95,
    epsilon=1e-7`` (PyTorch: ``lr=1.0, rho=0.9, eps=1e-6``); pass them explicitly to match
    Keras. Parameter groups, ``state_dict`` (state ``"square_avg"`` and ``"acc_delta"``,
    PyTorch's names), ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate (a factor on ``delta``), ``>= 0``. Default ``1.0``.
        rho: decay of both running averages, in ``[0, 1]``. Default ``0.9``.
        eps: added inside both square roots, ``>= 0``. Default ``1e-6``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        maximize: ascend the gradient (PyTorch's ``maximize``: the update sees ``-grad``).
            Default ``False``.
        track_stats, check_finite, state_dtype, rounding, foreach, fused, capturable,
            differentiable: :class:`~minnet.optim.optimizer.Optimizer`'s.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = {
            "lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize
        }
        super().__init__(params, defaults, **options)

    rule = RULE
    _load_optional = ("maximize",)

    reference = staticmethod(adadelta_reference)
    checks = {"lr": check_lr, "rho": _check_rho, "eps": check_eps,
              "weight_decay": check_weight_decay}  # PyTorch's order

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"square_avg": 0.0, "acc_delta": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdadeltaScalars:
        rho = group["rho"]  # the same constants at every step
        return cast_scalars(AdadeltaScalars, dtype, rho, 1.0 - rho, group["eps"], -group["lr"],
                            group["weight_decay"])

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"square_avg"``: the denominator's running average of squared gradients (eps is
        also in the numerator's root, where it is a per-coordinate step size; not counted)."""
        return "square_avg"

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        rho = group["rho"]
        if group["eps"] == 0:
            with np.errstate(all="ignore"):
                sq = state["square_avg"] * rho + (1.0 - rho) * grad * grad
            if (sq == 0).any():
                return (
                    f"eps=0 and some coordinates of {name} have a zero running average of "
                    "squared gradients (square_avg = 0), so their update is 0/0 = NaN; "
                    "use eps > 0"
                )
        return None

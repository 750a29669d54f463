r"""RMSprop, plain or centered, with momentum and two eps placements: the class, its element
rule and a plain-NumPy reference, side by side.

The update and both eps placements (``"outside"``: PyTorch; ``"inside"``: Keras 3, optax) are
in :class:`RMSprop`'s docstring, in PyTorch's order of operations (``torch.optim.RMSprop``), so
that float64 agrees with it to round-off.

16-bit storage (float16 / bfloat16 parameters or state): ``rounding="fused"`` loads every value
to float32, runs the update in float32 (both eps placements) and rounds once per stored array
(PyTorch has no fused RMSprop; this is what its fused Adam does). ``rounding="per_op"`` is
PyTorch's ``_single_tensor_rmsprop`` on half tensors, for ``eps_mode="outside"`` only (centered
and momentum included): the rule's ``round_to`` calls round each op's result to the dtype of the
tensor PyTorch writes it to, and ``avg.add_(eps)`` adds eps in the state dtype, where 1e-8 is 0
in float16: a second moment that underflows to 0 then gives ``g / 0``, inf (NaN for a zero
gradient), from the first step on. Products and sums are separate float32 roundings (PyTorch's
addcmul fuses one into an fma, so a rare last-bit difference before the 16-bit rounding can
remain).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet._lowp import NATIVE, round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, slot
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_eps,
    check_lr,
    check_momentum,
    check_nonnegative,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RMSprop", "RMSPROP_EPS_MODES"]

#: The eps placements: "outside" (PyTorch) and "inside" (Keras 3, optax).
RMSPROP_EPS_MODES = ("outside", "inside")
OUTSIDE, INSIDE = 0, 1  # indices into RMSPROP_EPS_MODES


class RMSpropScalars(NamedTuple):
    """Per-step constants of the RMSprop update, already in the arrays' dtype."""

    neg_lr: np.floating  # -lr
    weight_decay: np.floating
    alpha: np.floating
    one_minus_alpha: np.floating  # 1 - alpha (computed in float64), weight of g*g in v
    lerp_w: np.floating  # 1 - alpha, the lerp weight of grad_avg
    one_minus_lerp_w: np.floating  # 1 - lerp_w in the arrays' dtype (PyTorch's lerp, w >= 0.5)
    momentum: np.floating
    eps: np.floating


_PER_OP_MESSAGE = (
    "RMSprop: rounding='per_op' follows PyTorch's single-tensor RMSprop, which has eps outside "
    "the root only: it needs eps_mode='outside', got eps_mode='inside'; use rounding='fused'"
)


@element
def denominator(var, s, mode, rs):  # pragma: no cover - compiled
    """``(sqrt(var) + eps, eps >= sqrt(var))`` "outside" (rounded as PyTorch's for-loop RMSprop
    under ``"per_op"``), ``(sqrt(var + eps), eps >= var)`` "inside": the one place RMSprop's eps
    is written."""
    eps = round_to(s.eps, rs)
    if mode == OUTSIDE:
        root = round_to(np.sqrt(var), rs)  # .sqrt_()
        return round_to(root + eps, rs), eps >= root  # .add_(eps)
    return np.sqrt(var + eps), eps >= var


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (eps mode, centered,
    has_momentum)``, the state ``(square_avg[, momentum_buffer][, grad_avg])``. Under
    ``"per_op"`` rounding (PyTorch's ``_single_tensor_rmsprop``, eps "outside") each op's
    result is rounded to the dtype of the tensor it writes, and without momentum the step is
    ``(-lr * g) / avg`` as ``addcdiv_`` computes it."""
    mode, centered, has_momentum = o
    per_op = rp != NATIVE or rs != NATIVE
    v = state[0]
    b = slot(state, 1, p)  # momentum_buffer (when has_momentum)
    if has_momentum:
        a = slot(state, 2, p)  # grad_avg (when centered)
    else:
        a = slot(state, 1, p)
    if s.weight_decay != 0:  # grad.add(param, alpha=weight_decay)
        g = round_to(g + round_to(s.weight_decay, rp) * p, rp)
    v = round_to(v * s.alpha, rs)  # square_avg.mul_(alpha)
    v = round_to(v + s.one_minus_alpha * g * g, rs)  # .addcmul_(grad, grad, value=1 - alpha)
    var = v
    if centered:
        # grad_avg.lerp_(grad, 1 - alpha): PyTorch's lerp switches formula at weight 0.5 to
        # stay exact at both ends.
        if s.lerp_w < 0.5:
            a = round_to(a + s.lerp_w * (g - a), rs)
        else:
            a = round_to(g - (g - a) * s.one_minus_lerp_w, rs)
        var = round_to(v - a * a, rs)  # square_avg.addcmul(grad_avg, grad_avg, value=-1)
    denom, dominated = denominator(var, s, mode, rs)
    if has_momentum:
        b = round_to(b * s.momentum, rs)  # buf.mul_(momentum)
        b = round_to(b + g / denom, rs)  # .addcdiv_(grad, avg)
        delta = round_to(s.neg_lr, rp) * b  # param.add_(buf, alpha=-lr)
    elif per_op:
        delta = (s.neg_lr * g) / denom  # param.addcdiv_(grad, avg, value=-lr)
    else:
        delta = s.neg_lr * (g / denom)
    new_state = (v, b, a) if has_momentum else (v, a, b)
    return p, p + delta, new_state, delta, delta, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * g``: ``1 / (sqrt(var) + eps)`` ("outside") or ``1 /
    sqrt(var + eps)`` ("inside"), ``var`` the centered variance when ``centered``."""
    mode, centered, has_momentum = o
    var = state[0]
    if centered:
        a = state[2] if has_momentum else state[1]
        var = var - a * a
    return 1.0 / denominator(var, s, mode, NATIVE)[0]


#: RMSprop's element rule; the second moment ``square_avg`` is state 0.
RULE = Rule(update, second_moment=0, multiplier=multiplier)


def rmsprop_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: RMSpropScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    mode, centered, has_momentum = o
    square_avg = state[0]
    with np.errstate(all="ignore"):
        g = grad
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        square_avg *= s.alpha
        square_avg += s.one_minus_alpha * g * g
        var = square_avg
        if centered:
            grad_avg = state[-1]
            if s.lerp_w < 0.5:
                grad_avg += s.lerp_w * (g - grad_avg)
            else:
                grad_avg[...] = g - (g - grad_avg) * s.one_minus_lerp_w
            var = square_avg - grad_avg * grad_avg
        denom = np.sqrt(var) + s.eps if mode == OUTSIDE else np.sqrt(var + s.eps)
        if has_momentum:
            buf = state[1]
            buf *= s.momentum
            buf += g / denom
            param += s.neg_lr * buf
        else:
            param += s.neg_lr * (g / denom)


class RMSprop(Optimizer):
    r"""RMSprop with PyTorch's exact semantics (``torch.optim.RMSprop``), and the eps placement
    of Keras 3 and optax as ``eps_mode="inside"``.

    .. code-block:: text

        g   = grad (+ weight_decay * param)                  (-grad if maximize)
        v   = alpha * v + (1 - alpha) * g**2                 ("square_avg")
        a   = alpha * a + (1 - alpha) * g                    ("grad_avg", centered only)
        var = v - a**2 if centered else v
        D   = sqrt(var) + eps        eps_mode="outside": eps added to the root (PyTorch)
        D   = sqrt(var + eps)        eps_mode="inside":  eps under the root (Keras 3 RMSprop,
                                     optax.rmsprop with its default eps_in_sqrt=True)
        b   = momentum * b + g / D;  param -= lr * b         (momentum > 0, "momentum_buffer")
        param -= lr * g / D                                  (momentum = 0)

    ``"inside"`` makes eps a floor on the *variance*: ``eps=1e-8`` there acts like ``1e-4``
    outside. Recipes ported from TensorFlow (RL agents with eps=1e-2 or 1.0, Inception with
    eps=1.0) need ``eps_mode="inside"`` to keep their behaviour.

    Library defaults differ from PyTorch's (``lr=1e-2, alpha=0.99, eps=1e-8``): Keras 3 uses
    ``rho=0.9`` (= alpha), ``epsilon=1e-7``, lr 1e-3; optax ``decay=0.9`` (= alpha),
    ``eps=1e-8``. Keras and optax keep lr *inside* the momentum buffer (``b = momentum*b +
    lr*g/D``, ``param -= b``), which equals PyTorch's form only at constant lr; minnet follows
    PyTorch (with a schedule, a Keras/optax momentum run is not reproduced).

    State arrays (PyTorch's names): ``"square_avg"``, ``"momentum_buffer"`` (only when
    ``momentum > 0``) and ``"grad_avg"`` (only when ``centered``), so ``centered`` and
    whether ``momentum`` is 0 cannot change after the group is created.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-2``.
        alpha: smoothing constant of the averages, ``>= 0`` (PyTorch does not bound it above).
            Default ``0.99``.
        eps: added to the root (``"outside"``) or to the variance (``"inside"``), ``>= 0``.
            Default ``1e-8``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        momentum: momentum factor, ``>= 0``. Default ``0``.
        centered: divide by the estimated variance ``v - a**2`` instead of ``v``.
        maximize: ascend the gradient. Default ``False``.
        eps_mode: ``"outside"`` (default, PyTorch) or ``"inside"`` (Keras 3, optax).
        track_stats, check_finite, state_dtype, rounding, foreach, fused, capturable,
            differentiable: :class:`~minnet.optim.optimizer.Optimizer`'s; ``eps_dominated``
            counts ``eps >= sqrt(var)`` ("outside") or ``eps >= var`` ("inside"), and
            ``rounding="per_op"`` (module docstring) needs ``eps_mode="outside"``.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    # PyTorch's state dicts have no eps_mode.
    _load_optional = ("eps_mode",)

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        eps_mode: str = "outside",
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize, eps_mode=eps_mode)
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(rmsprop_reference)
    eps_modes = RMSPROP_EPS_MODES
    checks = {"lr": check_lr, "eps": check_eps, "momentum": check_momentum,
              "weight_decay": check_weight_decay,
              "alpha": partial(check_nonnegative, "alpha")}  # PyTorch's order; fmt: skip

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        momentum = {"momentum_buffer": 0.0} if group["momentum"] > 0 else {}
        centered = {"grad_avg": 0.0} if group["centered"] else {}
        return {"square_avg": 0.0, **momentum, **centered}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> RMSpropScalars:
        alpha = group["alpha"]  # RMSprop's constants do not depend on the step count
        return cast_scalars(RMSpropScalars, dtype, -group["lr"], group["weight_decay"], alpha,
                            1.0 - alpha, 1.0 - alpha, 0.0, group["momentum"], group["eps"])

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        mode = RMSPROP_EPS_MODES.index(group["eps_mode"])
        return (mode, group["centered"], group["momentum"] > 0)

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        return None if group["eps_mode"] == "outside" else _PER_OP_MESSAGE

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v)"`` ("outside") or ``"v"`` ("inside"), with ``v - avg**2`` in place of
        ``v`` when centered."""
        var = "v - avg**2" if options.get("centered", False) else "v"
        return f"sqrt({var})" if options.get("eps_mode", "outside") == "outside" else var

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        cause = super()._nonfinite_cause(group, name, grad, state)
        if cause is not None:
            return cause
        if group["centered"]:
            # This step's averages, without the L2 term (an estimate of the cause, not the step).
            alpha = group["alpha"]
            g = grad.astype(np.float64)
            v = alpha * state["square_avg"] + (1.0 - alpha) * g * g
            a = alpha * state["grad_avg"] + (1.0 - alpha) * g
            var = v - a * a
            if (var < 0).any() or (group["eps"] == 0 and (var == 0).any()):
                return (
                    f"the centered variance v - avg**2 of {name} is 0 or negative (round-off "
                    "where the gradient is nearly constant), and its root is NaN or divides "
                    "by 0; use eps > 0 with eps_mode='outside', or centered=False"
                )
        return None

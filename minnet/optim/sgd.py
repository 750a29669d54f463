r"""SGD with momentum, dampening, Nesterov and weight decay: the class, its element rule and a
plain-NumPy reference, side by side. The baseline without eps; the update is in :class:`SGD`'s
docstring, in PyTorch's order of operations (``torch.optim.SGD``). The first step's ``b = g``
is computed as ``0 * b + 1 * g`` on a zero buffer, which is exactly
``g``; the per-step constants (``SGDScalars``) carry ``momentum = 0`` and ``1 - dampening = 1``
for that step.

16-bit storage (float16 / bfloat16 parameters or state; ``R_p``/``R_s`` round a float32 value to
the parameter's / the state's dtype, ``lp_p(c)``/``lp_s(c)`` a constant). ``rounding="fused"``
loads every value to float32, runs the update in float32 and rounds once per stored array
(PyTorch's ``fused=True`` formula: ``b32 = b * momentum + g * (1 - dampening)``, ``param =
R_p(param - b32 * lr)``). ``rounding="per_op"`` is PyTorch's single-tensor ``_single_tensor_sgd``
on half tensors, each op rounding its result (scalars given as ``alpha=`` are rounded to the
storage dtype first, as PyTorch does):

    g = -grad if maximize else grad                          (exact)
    g = R_p(g + lp_p(weight_decay) * param)                  grad.add(param, alpha=wd)
    b = R_s(g)                                               t = 1: buf = grad.clone()
    b = R_s(b * momentum);  b = R_s(b + lp_s(1 - dampening) * g)
                                                             buf.mul_(m).add_(g, alpha=1-d)
    g = R_p(g + lp_p(momentum) * b) if nesterov else b       grad.add(buf, alpha=m)
    param = R_p(param + lp_p(-lr) * g)                       param.add_(g, alpha=-lr)

(``lr=1e-2`` becomes 0.0099945 in float16 there.) Every op computes in float32; products and sums
are separate float32 roundings (PyTorch fuses some into one fma, so a rare last-bit difference
before the 16-bit rounding can remain).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet._lowp import round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, slot
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_lr,
    check_momentum,
    check_real,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SGD"]


class SGDScalars(NamedTuple):
    """Per-step constants of the SGD update, already in the arrays' dtype."""

    neg_lr: np.floating  # -lr
    weight_decay: np.floating
    momentum: np.floating  # the buffer's decay this step: 0 at t = 1, else momentum
    one_minus_dampening: np.floating  # the gradient's weight in the buffer: 1 at t = 1
    nesterov_momentum: np.floating  # momentum, for Nesterov's g + momentum * b


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (has_momentum,
    nesterov)``, the buffer is state 0 when there is momentum. Under ``"per_op"`` rounding the
    ``alpha=`` scalars are rounded to the dtype of the tensor they scale, as PyTorch does."""
    has_momentum, nesterov = o
    b = slot(state, 0, p)
    if s.weight_decay != 0:  # grad.add(param, alpha=weight_decay)
        g = round_to(g + round_to(s.weight_decay, rp) * p, rp)
    if has_momentum:  # buf.mul_(momentum).add_(grad, alpha=1 - dampening); t = 1: buf = grad
        b = round_to(b * s.momentum, rs)
        b = round_to(b + round_to(s.one_minus_dampening, rs) * g, rs)
        if nesterov:  # grad.add(buf, alpha=momentum)
            g = round_to(g + round_to(s.nesterov_momentum, rp) * b, rp)
        else:
            g = b
    delta = round_to(s.neg_lr, rp) * g  # param.add_(grad, alpha=-lr)
    return p, p + delta, (b,), delta, delta, False, g


#: SGD's element rule (no eps, no second moment).
RULE = Rule(update)


def sgd_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: SGDScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    has_momentum, nesterov = o
    with np.errstate(all="ignore"):
        g = grad
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        if has_momentum:
            b = state[0]
            b *= s.momentum
            b += s.one_minus_dampening * g
            g = g + s.nesterov_momentum * b if nesterov else b
        param += s.neg_lr * g


def _check_dampening(value: object) -> float:
    dampening = check_real("dampening", value)
    if not math.isfinite(dampening):
        raise ValueError(f"Invalid dampening value: {value}")
    return dampening


class SGD(Optimizer):
    r"""Stochastic gradient descent with PyTorch's exact semantics (``torch.optim.SGD``).

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param                         (L2 penalty in the gradient)
        b = g                                                (first step)
        b = momentum * b + (1 - dampening) * g               (later steps)
        g = g + momentum * b  (nesterov)   or   g = b        (when momentum != 0)
        param = param - lr * g

    There is no eps: ``stats.eps_dominated`` is always 0 and :meth:`multipliers` is ``None``.
    The state array ``"momentum_buffer"`` exists only when ``momentum != 0`` (so ``momentum``
    cannot change between zero and non-zero after the group is created). Parameter groups,
    ``state_dict``, ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s; its state dict also stores each parameter's
    ``"step"`` (PyTorch's SGD keeps none).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        momentum: momentum factor, ``>= 0``. Default ``0``.
        dampening: dampening of the gradient's weight in the buffer. Default ``0``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        maximize: maximize the objective (ascend the gradient). Default ``False``.
        track_stats: record :class:`~minnet.optim.optimizer.OptimizerStats` in every step
            (over 16-bit buffers also ``lost_updates``: coordinates whose update rounded away).
        check_finite: refuse a step that would make a parameter NaN or infinite.
        state_dtype: the momentum buffer's dtype (``None``: the parameter's); see
            :class:`~minnet.optim.optimizer.Optimizer`.
        rounding: ``"fused"`` (default) or ``"per_op"`` for 16-bit buffers (module
            docstring): fused is PyTorch's ``fused=True`` formula, per_op its default
            single-tensor loop on half tensors.
        foreach, fused, capturable, differentiable: PyTorch's implementation switches,
            accepted so that PyTorch calls port unchanged (see
            :meth:`~minnet.optim.optimizer.Optimizer._check_torch_flags`).

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(sgd_reference)
    checks = {"lr": check_lr, "momentum": check_momentum, "weight_decay": check_weight_decay,
              "dampening": _check_dampening}  # fmt: skip

    def _check_group(self, hp: Mapping[str, Any]) -> None:
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _missing_step(self, entry: Mapping[str, Any]) -> int | None:
        # PyTorch's SGD keeps no step: a momentum buffer means the first step has been taken.
        return 1 if entry.get("momentum_buffer") is not None else 0

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if group["momentum"] != 0 else {}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> SGDScalars:
        first, m, damp = step == 1, group["momentum"], group["dampening"]
        return cast_scalars(SGDScalars, dtype, -group["lr"], group["weight_decay"],
                            0.0 if first else m, 1.0 if first else 1.0 - damp, m)  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (group["momentum"] != 0, group["nesterov"])


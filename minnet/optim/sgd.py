r"""SGD with momentum, dampening, Nesterov and weight decay: the class, its Numba kernel and a
plain-NumPy reference, side by side. The baseline without eps.

One step ``t`` (counting from 1), in PyTorch's order of operations (``torch.optim.SGD``):

    g = -grad if maximize else grad
    g = g + weight_decay * param                              (only if weight_decay != 0)
    b = g                                                     (t = 1: momentum_buffer = g)
    b = momentum * b + (1 - dampening) * g                    (t > 1)
    g = g + momentum * b if nesterov else b                   (only if momentum != 0)
    param = param + (-lr) * g

The first step's ``b = g`` is computed as ``0 * b + 1 * g`` on a zero buffer, which is exactly
``g``; the per-step constants (``SGDScalars``) carry ``momentum = 0`` and ``1 - dampening = 1``
for that step.

16-bit storage (float16 / bfloat16 parameters or state; ``R_p``/``R_s`` round a float32 value to
the parameter's / the state's dtype, ``lp_p(c)``/``lp_s(c)`` a constant). ``rounding="fused"``
loads every value to float32, runs the update above in float32 and rounds once per stored array
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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from minnet._lowp import round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, slot
from minnet.optim.optimizer import (
    Optimizer,
    check_bool,
    check_lr,
    check_momentum,
    check_real,
    check_weight_decay,
)

__all__ = ["SGD"]


class SGDScalars(NamedTuple):
    """Per-step constants of the SGD update, already in the arrays' dtype."""

    neg_lr: np.floating  # -lr
    weight_decay: np.floating
    momentum: np.floating  # the buffer's decay this step: 0 at t = 1, else momentum
    one_minus_dampening: np.floating  # the gradient's weight in the buffer: 1 at t = 1
    nesterov_momentum: np.floating  # momentum, for Nesterov's g + momentum * b


def sgd_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    step: int,
) -> SGDScalars:
    """Step ``step``'s constants, computed in float64 and cast to ``dtype``."""
    first = step == 1
    with np.errstate(over="ignore"):
        c = np.array(
            [-lr, weight_decay, 0.0 if first else momentum, 1.0 if first else 1.0 - dampening,
             momentum],
            dtype,
        ).tolist()  # fmt: skip
    t = dtype.type
    return SGDScalars(t(c[0]), t(c[1]), t(c[2]), t(c[3]), t(c[4]))


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


def sgd_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    scalars: SGDScalars,
    nesterov: bool,
) -> None:
    """The same update with whole-array NumPy (``momentum_buffer`` is ``None`` without
    momentum), in place."""
    s = scalars
    with np.errstate(all="ignore"):
        g = grad
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        if momentum_buffer is not None:
            momentum_buffer *= s.momentum
            momentum_buffer += s.one_minus_dampening * g
            g = g + s.nesterov_momentum * momentum_buffer if nesterov else momentum_buffer
        param += s.neg_lr * g


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
        track_stats: bool = False,
        check_finite: bool = False,
        state_dtype: Any = None,
        rounding: str = "fused",
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(
            params, defaults, track_stats=track_stats, check_finite=check_finite,
            state_dtype=state_dtype, rounding=rounding,
            foreach=foreach, fused=fused, capturable=capturable, differentiable=differentiable,
        )  # fmt: skip

    rule = RULE

    def _validate(self, group: Mapping[str, Any]) -> dict[str, Any]:
        lr = check_lr(group["lr"])
        momentum = check_momentum(group["momentum"])
        weight_decay = check_weight_decay(group["weight_decay"])
        dampening = check_real("dampening", group["dampening"])
        if not math.isfinite(dampening):
            raise ValueError(f"Invalid dampening value: {group['dampening']}")
        nesterov = check_bool("nesterov", group["nesterov"])
        maximize = check_bool("maximize", group["maximize"])
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        return {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if group["momentum"] != 0 else {}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> SGDScalars:
        return sgd_scalars(
            dtype,
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            step=step,
        )

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (group["momentum"] != 0, group["nesterov"])

    def _float_reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        nesterov = group["nesterov"]

        def reference(param, grad, *rest):  # type: ignore[no-untyped-def]
            buf, scalars = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
            sgd_step_reference(param, grad, buf, scalars, nesterov)

        return reference

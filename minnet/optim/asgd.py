r"""ASGD (averaged stochastic gradient descent, Polyak & Juditsky 1992): the class, its element
rule and a plain-NumPy reference, side by side. PyTorch's ``torch.optim.ASGD``.

SGD with a decaying step size ``eta`` and a shrink of the parameters by ``1 - lambd * eta``,
which also keeps ``ax``, the running average of the parameters after step ``t0`` (before it,
``ax`` is a copy of the parameters). There is no eps. The update is in :class:`ASGD`'s
docstring, in PyTorch's order of operations (its single-tensor path).

``eta`` and ``mu`` are scalars that advance every step (like NAdam's ``mu_product``): the
group's scalar state, computed in float64 and saved in every parameter's state-dict entry right
after ``"step"``, PyTorch's layout: ``"step"``, ``"eta"``, ``"mu"``, ``"ax"``. A step uses the
values saved by the step before (``eta = lr`` and ``mu = 1`` at the first), then stores
``eta = lr / (1 + lambd * lr * t)**alpha`` and ``mu = 1 / max(1, t - t0)`` with the group's
current ``lr``. PyTorch keeps both as tensors of the default dtype: float32 unless
``torch.set_default_dtype(torch.float64)``, so a float32 PyTorch run rounds ``eta`` and ``mu``
to float32 every step where minnet keeps them in float64 (PyTorch with a float64 default dtype
agrees with minnet to round-off; its fixtures are recorded that way).

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (``ax`` gets the float32 new parameter). ``rounding="per_op"`` rounds as PyTorch's
``_single_tensor_asgd`` does on half tensors: ``grad.add(param, alpha=weight_decay)`` and
``param.mul_(1 - lambd * eta)`` in the parameter dtype, ``param.add_(grad, alpha=-eta)`` once
(``alpha=`` scalars rounded to the parameter dtype first, as PyTorch does), and the average
``ax.add_(param.sub(ax).mul_(mu))`` op by op in the state dtype, from the rounded new parameter
(``ax.copy_(param)`` while ``mu == 1``). No PyTorch fixture covers ASGD in 16-bit: "per_op" is
a transcription of PyTorch's source, checked against the NumPy reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet._lowp import round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_lr,
    check_real,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ASGD"]


class ASGDScalars(NamedTuple):
    """Per-step constants of the ASGD update, already in the arrays' dtype."""

    weight_decay: np.floating  # the L2 term folded into g
    decay: np.floating  # 1 - lambd * eta: param *= decay first
    neg_eta: np.floating  # -eta
    mu: np.floating  # the average's weight of the new parameter (1: ax is a copy)


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options. Under
    ``"per_op"`` every op's result is rounded as the module docstring lists."""
    ax = state[0]
    if s.weight_decay != 0:  # grad.add(param, alpha=weight_decay)
        g = round_to(g + round_to(s.weight_decay, rp) * p, rp)
    p_in = round_to(p * s.decay, rp)  # param.mul_(1 - lambd * eta)
    delta = round_to(s.neg_eta, rp) * g  # param.add_(grad, alpha=-eta)
    new = p_in + delta
    if s.mu != 1:  # ax.add_(param.sub(ax).mul_(mu))
        ax = round_to(ax + round_to(round_to(round_to(new, rp) - ax, rs) * s.mu, rs), rs)
    else:  # ax.copy_(param)
        ax = round_to(new, rp)
    return p_in, new, (ax,), delta, new - p, False, g


#: ASGD's element rule (no eps, no second moment).
RULE = Rule(update)


def asgd_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: ASGDScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    (ax,) = state
    with np.errstate(all="ignore"):
        g = grad
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        param *= s.decay
        param += s.neg_eta * g
        if s.mu != 1:
            ax += (param - ax) * s.mu
        else:
            ax[...] = param


def asgd_eta_mu(group: Mapping[str, Any], step: int) -> dict[str, float]:
    """PyTorch's ``eta`` and ``mu`` after step ``step`` (float64, the group's current lr):
    ``lr / (1 + lambd * lr * step)**alpha`` and ``1 / max(1, step - t0)``."""
    lr, t = group["lr"], float(step)
    return {
        "eta": lr / ((1.0 + group["lambd"] * lr * t) ** group["alpha"]),
        "mu": 1.0 / max(1.0, t - group["t0"]),
    }


class _Advanced(dict):
    """The group state after a step (``eta`` and ``mu``, what the state dict saves), which
    also holds the values the step itself uses (``before``: those saved by the step before)."""

    before: Mapping[str, float]


def _check_finite_real(name: str) -> Any:
    def check(value: object) -> float:
        v = check_real(name, value)
        if not math.isfinite(v):
            raise ValueError(f"Invalid {name} value: {value}")
        return v

    return check


class ASGD(Optimizer):
    r"""Averaged SGD with PyTorch's exact semantics (``torch.optim.ASGD``), as one fused Numba
    kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``g`` the gradient
    (``-grad`` if ``maximize``), and the group's scalars ``eta`` (starts at ``lr``) and ``mu``
    (starts at 1), the values the previous step saved:

    .. code-block:: text

        g     = g + weight_decay * param                 (L2 penalty in the gradient)
        param = param * (1 - lambd * eta)                 (the shrink)
        param = param - eta * g
        ax    = ax + (param - ax) * mu   if mu != 1, else ax = param   (the new parameter)
        eta   = lr / (1 + lambd * lr * t)**alpha          (for the next step, float64)
        mu    = 1 / max(1, t - t0)

    The averaged parameters ``ax`` are state only: the optimizer never writes them into the
    parameters (copy them from ``state_dict()["state"][i]["ax"]`` to evaluate the average).
    With the default ``t0=1e6`` the average starts after a million steps, so ``ax`` is a copy
    of the parameters until then. There is no eps: ``stats.eps_dominated`` is 0 and
    :meth:`multipliers` is ``None``. Keras and optax have no ASGD.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-2``.
        lambd: decay term. Default ``1e-4``.
        alpha: power of the ``eta`` schedule. Default ``0.75``.
        t0: the step after which averaging starts. Default ``1e6``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        maximize: ascend the gradient (the update sees ``-grad``). Default ``False``.
        track_stats, check_finite, state_dtype, rounding, foreach, fused, capturable,
            differentiable: :class:`~minnet.optim.optimizer.Optimizer`'s (``rounding="per_op"``
            is PyTorch's op order, the module docstring).

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected;
            PyTorch checks only ``lr`` and ``weight_decay``).
        TypeError: on a hyperparameter of the wrong type.
    """

    _load_optional = ("maximize",)

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                        maximize=maximize)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(asgd_reference)
    checks = {"lr": check_lr, "weight_decay": check_weight_decay,
              "lambd": _check_finite_real("lambd"), "alpha": _check_finite_real("alpha"),
              "t0": _check_finite_real("t0")}  # PyTorch's order (it checks only the first two)

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"ax": 0.0}

    def _group_state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"eta": float(group["lr"]), "mu": 1.0}

    def _advance_group_state(
        self, group: Mapping[str, Any], state: Mapping[str, float], step: int
    ) -> dict[str, float]:
        """``eta`` and ``mu`` after step ``step`` (float64); the step itself uses ``state``,
        kept as the result's ``before``."""
        new = _Advanced(asgd_eta_mu(group, step))
        new.before = dict(state)
        return new

    def _scalars(
        self,
        group: Mapping[str, Any],
        dtype: np.dtype,
        step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> ASGDScalars:
        before = getattr(group_state, "before", None)
        if before is None:  # recomputed from t (only for callers outside step())
            before = asgd_eta_mu(group, step - 1) if step > 1 else {"eta": group["lr"], "mu": 1.0}
        eta, mu = before["eta"], before["mu"]
        return cast_scalars(ASGDScalars, dtype, group["weight_decay"],
                            1.0 - group["lambd"] * eta, -eta, mu)  # fmt: skip

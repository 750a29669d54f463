r"""Rprop (resilient backpropagation, Riedmiller & Braun 1993): the class, its element rule and a
plain-NumPy reference, side by side. PyTorch's ``torch.optim.Rprop`` by default, optax's
``optax.rprop`` with ``variant="optax"``.

Rprop steps by the *sign* of the gradient, with a step size per coordinate that grows by
``eta_plus`` while the gradient keeps its sign and shrinks by ``eta_minus`` when it flips; there
is no denominator and no eps. The two libraries differ in what they remember and when a step
moves (both updates are in :class:`Rprop`'s docstring):

* PyTorch remembers the gradient (``prev``; set to 0 where the sign flipped, so the next step
  neither grows nor shrinks there) and moves by ``-sign(g) * step_size`` with this step's
  step size, from the first step on.
* optax remembers the previous *update* (``step_size * sign(g)``, 0 where the sign flipped) and
  applies it one step late: its first step moves nothing, and a coordinate whose sign flipped
  takes no step at all that step. Its step size does not change where ``g * prev == 0``.

Both keep the same two state arrays (``prev``, ``step_size``; optax's ``prev_updates`` and
``step_sizes``), so a state dict's layout is the same and only its meaning differs.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once. ``rounding="per_op"`` (PyTorch's variant) rounds as ``_single_tensor_rprop`` does on half
tensors, each op's result in the dtype of the tensor it writes: ``grad.mul(prev)`` in the state
dtype (so a product below float16's smallest subnormal is 0 there and counts as "no sign": the
step size stays), ``step_size.mul_(sign).clamp_(min, max)`` in the state dtype, and
``param.addcmul_(grad.sign(), step_size, value=-1)`` once in the parameter dtype. No PyTorch
fixture covers Rprop in 16-bit: "per_op" is a transcription of PyTorch's source, checked against
the NumPy reference. optax's variant has no per_op model (refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet._lowp import round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, select
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_choice,
    check_lr,
    check_real,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Rprop", "RPROP_VARIANTS"]

#: The values of ``variant``: PyTorch's algorithm (default) and optax's.
RPROP_VARIANTS = ("torch", "optax")


class RpropScalars(NamedTuple):
    """Per-step constants of the Rprop update, already in the arrays' dtype."""

    eta_minus: np.floating  # the step size's factor where the gradient's sign flipped
    eta_plus: np.floating  # ... where it kept its sign
    step_size_min: np.floating
    step_size_max: np.floating
    one: np.floating  # 1 (the factor where g * prev == 0), in the arrays' dtype


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (optax,)``. Under
    ``"per_op"`` (PyTorch's variant only) the ops round as the module docstring lists."""
    (optax,) = o
    prev, step_size = state[0], state[1]
    zero = s.eta_plus - s.eta_plus  # 0 in the compute dtype
    prod = round_to(g * prev, rs)  # grad.mul(prev)
    if optax:
        factor = select(prod > 0, s.eta_plus, s.eta_minus)
        clipped = np.minimum(np.maximum(step_size * factor, s.step_size_min), s.step_size_max)
        step_size = select(prod == 0, step_size, clipped)
        flipped = prod < 0
        new_prev = select(flipped, zero, step_size * (np.sign(g) + zero))  # sign(-0.0) = 0.0
        delta = select(flipped, zero, -prev)  # the previous step's update, one step late
        return p, p + delta, (new_prev, step_size), delta, delta, False, g
    # PyTorch: sign -> eta_plus (> 0), eta_minus (< 0), 1 (== 0); NaN stays NaN.
    factor = select(prod > 0, s.eta_plus, select(prod < 0, s.eta_minus, s.one + (prod - prod)))
    scaled = round_to(step_size * factor, rs)  # step_size.mul_(sign)
    step_size = round_to(np.minimum(np.maximum(scaled, s.step_size_min), s.step_size_max), rs)
    g = select(factor == s.eta_minus, zero, g)  # grad[sign.eq(etaminus)] = 0
    # param.addcmul_(grad.sign(), step_size, value=-1); "+ zero" turns Numba's sign(-0.0) =
    # -0.0 into NumPy's and PyTorch's 0.0
    delta = -((np.sign(g) + zero) * step_size)
    return p, p + delta, (g, step_size), delta, delta, False, g


#: Rprop's element rule (no eps, no second moment).
RULE = Rule(update)


def rprop_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: RpropScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    prev, step_size = state
    with np.errstate(all="ignore"):
        sign = grad * prev
        if o[0]:  # optax: the previous update, applied one step late
            factor = np.where(sign > 0, s.eta_plus, s.eta_minus)
            clipped = np.clip(step_size * factor, s.step_size_min, s.step_size_max)
            step_size[...] = np.where(sign == 0, step_size, clipped)
            updates = np.where(sign < 0, 0.0, prev)
            prev[...] = np.where(sign < 0, 0.0, step_size * np.sign(grad))
            param -= updates
            return
        factor = np.sign(sign)
        factor[sign > 0] = s.eta_plus
        factor[sign < 0] = s.eta_minus
        factor[sign == 0] = 1
        step_size *= factor
        np.clip(step_size, s.step_size_min, s.step_size_max, out=step_size)
        g = grad.copy()
        g[factor == s.eta_minus] = 0
        param -= np.sign(g) * step_size
        prev[...] = g


def _check_etas(etas: object) -> tuple[float, float]:
    """PyTorch's ``Invalid eta values: {etas[0]}, {etas[1]}`` (``0 < eta_minus < 1 <
    eta_plus``)."""
    if not isinstance(etas, (tuple, list)) or len(etas) != 2:
        raise TypeError(f"etas must be a pair (eta_minus, eta_plus) of floats, got {etas!r}")
    e = (check_real("etas[0]", etas[0]), check_real("etas[1]", etas[1]))
    if not 0.0 < e[0] < 1.0 < e[1]:
        raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
    return e


def _check_step_sizes(step_sizes: object) -> tuple[float, float]:
    """A pair ``(min, max)`` with ``0 <= min <= max`` (PyTorch checks nothing; a NaN bound or
    a minimum above the maximum would silently pin every step size)."""
    if not isinstance(step_sizes, (tuple, list)) or len(step_sizes) != 2:
        raise TypeError(
            f"step_sizes must be a pair (step_size_min, step_size_max) of floats, got "
            f"{step_sizes!r}"
        )
    lo, hi = check_real("step_sizes[0]", step_sizes[0]), check_real("step_sizes[1]", step_sizes[1])
    if not 0.0 <= lo <= hi:
        raise ValueError(
            f"Invalid step_sizes: {step_sizes[0]}, {step_sizes[1]}; expected 0 <= min <= max"
        )
    return lo, hi


class Rprop(Optimizer):
    r"""Rprop with PyTorch's exact semantics (``torch.optim.Rprop``), or optax's
    (``optax.rprop``) with ``variant="optax"``, as one fused Numba kernel.

    State per coordinate: ``prev`` (starts at 0) and ``step_size`` (starts at ``lr``: the
    learning rate is only the initial step size; changing it later, by hand or by a scheduler,
    changes nothing, as in both libraries). With ``g`` the gradient (``-grad`` if
    ``maximize``), ``(eta_minus, eta_plus) = etas`` and ``(lo, hi) = step_sizes``:

    .. code-block:: text

        variant="torch" (default; PyTorch's _single_tensor_rprop)
            s         = sign(g * prev)
            step_size = clamp(step_size * (eta_plus if s > 0, eta_minus if s < 0, 1 if s == 0),
                              lo, hi)
            g         = 0 where s < 0        (after a flip the next step neither grows nor
                                              shrinks, and this one does not move)
            param     = param - sign(g) * step_size
            prev      = g

        variant="optax" (optax.rprop = scale_by_rprop, then scale(-1))
            s         = g * prev
            step_size = step_size where s == 0, else
                        clip(step_size * (eta_plus if s > 0 else eta_minus), lo, hi)
            param     = param - (0 where s < 0, else prev)      (the previous step's update)
            prev      = 0 where s < 0, else step_size * sign(g)

    In optax's ``prev`` is the previous update, not the gradient, and it is applied one step
    late: the first step moves nothing. There is no eps in either: ``stats.eps_dominated`` is 0
    and :meth:`multipliers` is ``None``. Defaults are PyTorch's and optax's alike: ``lr=1e-2``
    (optax: ``learning_rate``, no default), ``etas=(0.5, 1.2)`` (optax: ``eta_minus``,
    ``eta_plus``), ``step_sizes=(1e-6, 50)`` (optax: ``min_step_size``, ``max_step_size``).
    optax has no ``maximize``; with ``variant="optax"`` it negates the gradient all the same.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: the initial step size, ``>= 0``. Default ``1e-2``.
        etas: ``(eta_minus, eta_plus)`` with ``0 < eta_minus < 1 < eta_plus``. Default
            ``(0.5, 1.2)``.
        step_sizes: ``(min, max)`` bounds of the step size, ``0 <= min <= max``. Default
            ``(1e-6, 50)``.
        maximize: ascend the gradient (the update sees ``-grad``). Default ``False``.
        variant: ``"torch"`` (default) or ``"optax"`` (above).
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default) or, for PyTorch's variant, ``"per_op"`` (the module
            docstring); optax's variant refuses ``"per_op"``.
        foreach, fused, capturable, differentiable: PyTorch's implementation switches,
            accepted so that PyTorch calls port unchanged.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    _load_optional = ("maximize", "variant")

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        maximize: bool = False,
        variant: str = "torch",
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize,
                        variant=variant)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(rprop_reference)
    checks = {"lr": check_lr, "etas": _check_etas, "step_sizes": _check_step_sizes,
              "variant": lambda v: check_choice("variant", v, RPROP_VARIANTS)}  # fmt: skip

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"prev": 0.0, "step_size": float(group["lr"])}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> RpropScalars:
        (eta_minus, eta_plus), (lo, hi) = group["etas"], group["step_sizes"]
        return cast_scalars(RpropScalars, dtype, eta_minus, eta_plus, lo, hi, 1.0)

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (group["variant"] == "optax",)

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        if group["variant"] == "optax":
            return (
                "Rprop: rounding='per_op' rounds every op in the order of PyTorch's for-loop "
                "implementation, and variant='optax' is not PyTorch's algorithm; use "
                "rounding='fused' or variant='torch'"
            )
        return None

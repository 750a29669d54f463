r"""Adagrad with three eps placements: the class, its element rule and a plain-NumPy
reference, side by side.

The update and its three eps placements (``"outside"``: PyTorch, ``"inside"``: Keras 3,
``"inside_guarded"``: optax) are in :class:`Adagrad`'s docstring, in PyTorch's order of
operations (``torch.optim.Adagrad``), so that float64 agrees with it to round-off; ``clr = lr /
(1 + (t - 1) * lr_decay)`` is computed in float64 once per step.

The guard of "inside_guarded" (optax's ``where(sum > 0, rsqrt(sum + eps), 0)``) changes nothing
when eps > 0 (then ``g * k`` equals "inside"'s ``g / sqrt(S + eps)`` up to the rounding of the
reciprocal, and ``S = 0`` means ``g = 0``, an update of 0 either way). It matters at eps=0 on a
coordinate whose accumulator is still 0 (a zero initial accumulator and only zero gradients so
far): there "inside" and "outside" compute 0/0 = NaN and "inside_guarded" gives 0.

16-bit storage (float16 / bfloat16 parameters or state): ``rounding="fused"`` loads every value
to float32, computes in float32 and rounds once per stored array; for "outside" in the order of
PyTorch's ``fused=True`` kernel (its per-element loop, with float32 eps and clr: ``param =
R(param + (-clr * g) / (sqrt(S + g*g) + eps))``). PyTorch 2.13's vectorised fused loop instead
rounds eps and clr to the storage dtype first; minnet does not copy that. ``rounding="per_op"``
is PyTorch's ``_single_tensor_adagrad`` on half tensors, for ``eps_mode="outside"`` only: the
rule's ``round_to`` calls round each op's result to the dtype of the tensor PyTorch writes it
to, and ``std.add_(eps)`` adds eps in the state dtype, where the default 1e-10 is 0 in float16.
Products and sums are separate float32 roundings (PyTorch's addcmul is one fma, so a rare
last-bit difference before the 16-bit rounding can remain).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet._lowp import NATIVE, round_to
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, select
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_eps,
    check_lr,
    check_nonnegative,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Adagrad", "ADAGRAD_EPS_MODES"]

#: The eps placements: "outside" (PyTorch), "inside" (Keras 3), "inside_guarded" (optax).
ADAGRAD_EPS_MODES = ("outside", "inside", "inside_guarded")
OUTSIDE, INSIDE, GUARDED = 0, 1, 2  # indices into ADAGRAD_EPS_MODES

_EPS_COMPARED_WITH = {"outside": "sqrt(sum)", "inside": "sum", "inside_guarded": "sum"}


class AdagradScalars(NamedTuple):
    """Per-step constants of the Adagrad update, already in the arrays' dtype."""

    neg_clr: np.floating  # -lr / (1 + (t - 1) * lr_decay)
    one: np.floating  # 1 ("inside_guarded"'s numerator)
    weight_decay: np.floating
    eps: np.floating


@element
def denominator(acc, s, mode, rs):  # pragma: no cover - compiled
    """What the update divides ``g`` by, eps included, and whether eps dominates it: ``(sqrt(sum)
    + eps, eps >= sqrt(sum))`` "outside" (rounded as PyTorch's for-loop Adagrad under
    ``"per_op"``), ``(sqrt(sum + eps), eps >= sum)`` "inside" and "inside_guarded". The one
    place Adagrad's eps is written."""
    if mode == OUTSIDE:
        root = round_to(np.sqrt(acc), rs)  # state_sum.sqrt()
        eps = round_to(s.eps, rs)
        return round_to(root + eps, rs), eps >= root  # .add_(eps)
    return np.sqrt(acc + s.eps), s.eps >= acc


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (eps mode, lowp)``,
    the state ``(sum,)``. Over 16-bit buffers (``lowp``) "outside" divides ``-clr * g`` as
    PyTorch's fused kernel and its ``addcdiv_`` do; under ``"per_op"`` rounding (PyTorch's
    ``_single_tensor_adagrad``, eps "outside") each op's result is rounded to the dtype of the
    tensor it writes."""
    mode, lowp = o
    one = s.one
    zero = one - one
    if s.weight_decay != 0:  # grad.add(param, alpha=weight_decay)
        g = round_to(g + round_to(s.weight_decay, rp) * p, rp)
    acc = round_to(state[0] + g * g, rs)  # state_sum.addcmul_(grad, grad, value=1)
    std, dominated = denominator(acc, s, mode, rs)
    if mode == OUTSIDE and lowp:
        delta = (s.neg_clr * g) / std  # param.addcdiv_(grad, std, value=-clr)
    elif mode != GUARDED:
        delta = s.neg_clr * (g / std)
    else:
        delta = s.neg_clr * (g * select(acc > 0, one / std, zero))
    return p, p + delta, (acc,), delta, delta, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * g``: ``1 / den`` (0 where a guarded sum is 0)."""
    k = s.one / denominator(state[0], s, o[0], NATIVE)[0]
    return select(state[0] > 0, k, s.one - s.one) if o[0] == GUARDED else k


#: Adagrad's element rule; the accumulator ``sum`` is state 0.
RULE = Rule(update, second_moment=0, multiplier=multiplier)


def _per_op_message(mode: int) -> str:
    return (
        "Adagrad: rounding='per_op' follows PyTorch's single-tensor Adagrad, which has eps "
        "outside the root only: it needs eps_mode='outside', got "
        f"eps_mode={ADAGRAD_EPS_MODES[mode]!r}; use rounding='fused'"
    )


def adagrad_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: AdagradScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    mode = o[0]
    state_sum = state[0]
    with np.errstate(all="ignore"):
        g = grad
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        state_sum += g * g
        if mode == OUTSIDE:
            param += s.neg_clr * (g / (np.sqrt(state_sum) + s.eps))
        elif mode == INSIDE:
            param += s.neg_clr * (g / np.sqrt(state_sum + s.eps))
        else:
            k = np.where(state_sum > 0, s.one / np.sqrt(state_sum + s.eps), 0).astype(g.dtype)
            param += s.neg_clr * (g * k)


class Adagrad(Optimizer):
    r"""Adagrad with PyTorch's exact semantics (``torch.optim.Adagrad``), and the eps
    placements of Keras 3 (``eps_mode="inside"``) and optax (``"inside_guarded"``).

    .. code-block:: text

        g   = grad (+ weight_decay * param)                 (-grad if maximize)
        clr = lr / (1 + (t - 1) * lr_decay)                 (t = step count from 1)
        S   = S + g**2                                      ("sum", starts at
                                                             initial_accumulator_value)
        param -= clr * g / (sqrt(S) + eps)                  "outside": eps added to the root
                                                            (PyTorch)
        param -= clr * g / sqrt(S + eps)                    "inside": eps under the root
                                                            (Keras 3 Adagrad)
        param -= clr * g * where(S > 0, 1/sqrt(S + eps), 0) "inside_guarded" (optax.adagrad)

    ``"inside_guarded"`` equals ``"inside"`` whenever eps > 0 (to rounding: it multiplies by
    the reciprocal root); the guard matters only at eps=0 on a coordinate whose accumulator is
    still 0, where it gives a zero update instead of 0/0 = NaN.

    Library defaults differ from PyTorch's (``lr=1e-2, initial_accumulator_value=0,
    eps=1e-10``): Keras 3 uses ``initial_accumulator_value=0.1, epsilon=1e-7`` (lr 1e-3) and
    optax ``initial_accumulator_value=0.1, eps=1e-7``; neither has ``lr_decay``. With their
    non-zero initial accumulator, S never is 0, so eps=0 is safe there in every placement.

    State array (PyTorch's name): ``"sum"``, which starts at the *constructor's*
    ``initial_accumulator_value`` in every group: PyTorch's ``Adagrad.__init__`` fills it so,
    and a param group's own ``initial_accumulator_value`` is kept in the group but changes
    nothing, as in PyTorch (nor does changing it later).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-2``.
        lr_decay: learning-rate decay, ``>= 0``. Default ``0``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        initial_accumulator_value: the start value of ``S``, ``>= 0``. Default ``0``.
        eps: added to the root (``"outside"``) or to ``S`` (``"inside"``,
            ``"inside_guarded"``), ``>= 0``. Default ``1e-10``.
        maximize: ascend the gradient. Default ``False``.
        eps_mode: ``"outside"`` (default, PyTorch), ``"inside"`` (Keras 3) or
            ``"inside_guarded"`` (optax).
        track_stats, check_finite, state_dtype, rounding, foreach, fused, capturable,
            differentiable: :class:`~minnet.optim.optimizer.Optimizer`'s; ``eps_dominated``
            counts ``eps >= sqrt(S)`` ("outside") or ``eps >= S`` (the inside placements), and
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
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        eps_mode: str = "outside",
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize,
                        eps_mode=eps_mode)
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(adagrad_reference)
    eps_modes = ADAGRAD_EPS_MODES
    checks = {  # PyTorch's order
        "lr": check_lr,
        "lr_decay": partial(check_nonnegative, "lr_decay"),
        "weight_decay": check_weight_decay,
        "initial_accumulator_value": partial(check_nonnegative, "initial_accumulator_value"),
        "eps": check_eps,
    }
    _eps0_advice = ", initial_accumulator_value > 0 or eps_mode='inside_guarded'"

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"sum": float(self.defaults["initial_accumulator_value"])}  # PyTorch's choice

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdagradScalars:
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        return cast_scalars(AdagradScalars, dtype, -clr, 1.0, group["weight_decay"], group["eps"])

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (ADAGRAD_EPS_MODES.index(group["eps_mode"]), formats is not None)

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        mode = ADAGRAD_EPS_MODES.index(group["eps_mode"])
        return None if mode == OUTSIDE else _per_op_message(mode)

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(sum)"`` ("outside") or ``"sum"`` ("inside", "inside_guarded")."""
        return _EPS_COMPARED_WITH[options.get("eps_mode", "outside")]

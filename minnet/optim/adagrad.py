r"""Adagrad with three eps placements: the class, its element rule and a plain-NumPy
reference, side by side.

One step ``t`` (counting from 1; the state array ``sum`` = S starts at
``initial_accumulator_value``), in PyTorch's order of operations (``torch.optim.Adagrad``) so
that float64 agrees with it to round-off:

    g   = -grad if maximize else grad
    g   = g + weight_decay * param                        (L2, only if weight_decay != 0)
    clr = lr / (1 + (t - 1) * lr_decay)                   (float64, once per step)
    S   = S + g * g

where eps sits (``eps_mode``):

    "outside"         param = param + (-clr) * (g / (sqrt(S) + eps))           torch.optim.Adagrad
    "inside"          param = param + (-clr) * (g / sqrt(S + eps))             Keras 3 Adagrad
    "inside_guarded"  param = param + (-clr) * (g * k),
                      k = 1 / sqrt(S + eps) if S > 0 else 0                    optax.adagrad

The guard of "inside_guarded" (optax's ``where(sum > 0, rsqrt(sum + eps), 0)``) changes nothing
when eps > 0 (then ``g * k`` equals "inside"'s ``g / sqrt(S + eps)`` up to the rounding of the
reciprocal, and ``S = 0`` means ``g = 0``, an update of 0 either way). It matters at eps=0 on a
coordinate whose accumulator is still 0 (a zero initial accumulator and only zero gradients so
far): there "inside" and "outside" compute 0/0 = NaN and "inside_guarded" gives 0.

16-bit storage (float16 / bfloat16 parameters or state; ``R_p``/``R_s`` round a float32 value to
the parameter's / the state's dtype, ``lp_p(c)``/``lp_s(c)`` a constant). ``rounding="fused"``
loads every value to float32, computes in float32 and rounds once per stored array; for
"outside" in the order of PyTorch's ``fused=True`` kernel (its per-element loop, with float32
eps and clr: ``S32 = S + g*g``, ``param = R_p(param + (-clr * g) / (sqrt(S32) + eps))``; the
float32 update of the inside placements is the one above). PyTorch 2.13's vectorised fused loop
instead rounds eps and clr to the storage dtype first; minnet does not copy that.
``rounding="per_op"`` is PyTorch's ``_single_tensor_adagrad`` on half tensors, each op rounding
its result, so it exists for ``eps_mode="outside"`` only:

    g   = -grad if maximize else grad                     (exact)
    g   = R_p(g + lp_p(weight_decay) * param)             grad.add(param, alpha=wd)
    S   = R_s(S + g * g)                                  S.addcmul_(g, g, value=1)
    std = R_s(sqrt(S));  std = R_s(std + lp_s(eps))       S.sqrt().add_(eps): the default
                                                          eps=1e-10 is 0 in float16
    param = R_p(param + (-clr * g) / std)                 param.addcdiv_(g, std, value=-clr)

Every op computes in float32; products and sums are separate float32 roundings (PyTorch's
addcmul is one fma, so a rare last-bit difference before the 16-bit rounding can remain).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from minnet._lowp import round_to
from minnet.dtypes import bfloat16, is_16bit
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, select
from minnet.optim.optimizer import (
    Optimizer,
    check_bool,
    check_choice,
    check_eps,
    check_lr,
    check_nonnegative,
    check_weight_decay,
)

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


def adagrad_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    lr_decay: float,
    eps: float,
    weight_decay: float,
    step: int,
) -> AdagradScalars:
    """Step ``step``'s constants, computed in float64 (PyTorch's ``clr``) and cast to ``dtype``."""
    clr = lr / (1 + (step - 1) * lr_decay)
    with np.errstate(over="ignore"):
        c = np.array([-clr, 1.0, weight_decay, eps], dtype).tolist()
    t = dtype.type
    return AdagradScalars(t(c[0]), t(c[1]), t(c[2]), t(c[3]))


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
    if mode == OUTSIDE:
        root = round_to(np.sqrt(acc), rs)  # state_sum.sqrt()
        eps = round_to(s.eps, rs)
        std = round_to(root + eps, rs)  # .add_(eps)
        if lowp:
            delta = (s.neg_clr * g) / std  # param.addcdiv_(grad, std, value=-clr)
        else:
            delta = s.neg_clr * (g / std)
        dominated = eps >= root
    elif mode == INSIDE:
        delta = s.neg_clr * (g / np.sqrt(acc + s.eps))
        dominated = s.eps >= acc
    else:
        k = select(acc > 0, one / np.sqrt(acc + s.eps), zero)
        delta = s.neg_clr * (g * k)
        dominated = s.eps >= acc
    return p, p + delta, (acc,), delta, delta, dominated, g


#: Adagrad's element rule; the accumulator ``sum`` is state 0.
RULE = Rule(update, second_moment=0)


def _per_op_message(mode: int) -> str:
    return (
        "Adagrad: rounding='per_op' follows PyTorch's single-tensor Adagrad, which has eps "
        "outside the root only: it needs eps_mode='outside', got "
        f"eps_mode={ADAGRAD_EPS_MODES[mode]!r}; use rounding='fused'"
    )


def adagrad_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    state_sum: np.ndarray,
    scalars: AdagradScalars,
    mode: int,
) -> None:
    """The same update with whole-array NumPy, in place."""
    s = scalars
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
            one = s.eps.dtype.type(1)
            k = np.where(state_sum > 0, one / np.sqrt(state_sum + s.eps), 0).astype(g.dtype)
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

    State array (PyTorch's name): ``"sum"``. ``initial_accumulator_value`` is read when the
    group is created (as in PyTorch); changing it later changes nothing. Parameter groups,
    ``state_dict``, ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s.

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
        track_stats: record :class:`~minnet.optim.optimizer.OptimizerStats` in every step;
            ``eps_dominated`` counts coordinates with ``eps >= sqrt(S)`` ("outside") or
            ``eps >= S`` (the inside placements); over 16-bit buffers also ``underflow``
            (``sum`` stored as 0 with a nonzero gradient) and ``lost_updates``.
        check_finite: refuse a step that would make a parameter NaN or infinite.
        state_dtype: the dtype of ``sum`` (``None``: the parameter's); see
            :class:`~minnet.optim.optimizer.Optimizer`.
        rounding: ``"fused"`` (default) or ``"per_op"`` for 16-bit buffers (module
            docstring); ``"per_op"`` is PyTorch's default loop on half tensors and needs
            ``eps_mode="outside"``.
        foreach, fused, capturable, differentiable: PyTorch's implementation switches,
            accepted so that PyTorch calls port unchanged (see
            :meth:`~minnet.optim.optimizer.Optimizer._check_torch_flags`).

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
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "maximize": maximize,
            "eps_mode": eps_mode,
        }
        super().__init__(
            params, defaults, track_stats=track_stats, check_finite=check_finite,
            state_dtype=state_dtype, rounding=rounding,
            foreach=foreach, fused=fused, capturable=capturable, differentiable=differentiable,
        )  # fmt: skip
        for i, group in enumerate(self.param_groups):  # refuse an unsupported per_op now
            for flat in self._flats[i]:
                if flat.formats is not None:
                    self._kernel(group, False, True, flat.formats)

    rule = RULE
    eps_modes = ADAGRAD_EPS_MODES

    def _validate(self, group: Mapping[str, Any]) -> dict[str, Any]:
        # PyTorch's order: lr, lr_decay, weight_decay, initial_accumulator_value, eps.
        lr = check_lr(group["lr"])
        lr_decay = check_nonnegative("lr_decay", group["lr_decay"])
        weight_decay = check_weight_decay(group["weight_decay"])
        initial = check_nonnegative("initial_accumulator_value", group["initial_accumulator_value"])
        eps = check_eps(group["eps"])
        return {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial,
            "maximize": check_bool("maximize", group["maximize"]),
            "eps_mode": check_choice("eps_mode", group["eps_mode"], ADAGRAD_EPS_MODES),
        }

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"sum": group["initial_accumulator_value"]}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdagradScalars:
        return adagrad_scalars(
            dtype,
            lr=group["lr"],
            lr_decay=group["lr_decay"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            step=step,
        )

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (ADAGRAD_EPS_MODES.index(group["eps_mode"]), formats is not None)

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        mode = ADAGRAD_EPS_MODES.index(group["eps_mode"])
        return None if mode == OUTSIDE else _per_op_message(mode)

    def _float_reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        mode = ADAGRAD_EPS_MODES.index(group["eps_mode"])

        def reference(param, grad, state_sum, scalars):  # type: ignore[no-untyped-def]
            adagrad_step_reference(param, grad, state_sum, scalars, mode)

        return reference

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(sum)"`` ("outside") or ``"sum"`` ("inside", "inside_guarded")."""
        return _EPS_COMPARED_WITH[options.get("eps_mode", "outside")]

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int
    ) -> np.ndarray:
        """``k`` in ``param -= clr * k * g`` from the state after the latest step, in float64:
        ``1 / (sqrt(S) + eps)`` ("outside"), ``1 / sqrt(S + eps)`` ("inside"; ``inf`` where
        the denominator is 0), and the latter with 0 where ``S = 0`` ("inside_guarded")."""
        acc = state["sum"].astype(np.float64)
        eps = group["eps"]
        with np.errstate(all="ignore"):
            if group["eps_mode"] == "outside":
                return 1.0 / (np.sqrt(acc) + eps)
            k = 1.0 / np.sqrt(acc + eps)
            if group["eps_mode"] == "inside_guarded":
                k = np.where(acc > 0, k, 0.0)
            return k

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        dt = state["sum"].dtype
        if group["eps"] > 0 and self.rounding == "per_op" and is_16bit(dt):
            name16 = "bfloat16" if dt == bfloat16 else str(dt)
            with np.errstate(under="ignore"):
                stored = float(np.float32(group["eps"]).astype(dt))
            if stored == 0:
                return (
                    f"eps={group['eps']} is 0 in {name16} and rounding='per_op' adds it in the "
                    f"state dtype, so where sum of {name} is or underflows to 0 the update is "
                    "g/0 = inf (0/0 = NaN for a zero gradient); use a larger eps, "
                    "state_dtype='float32' or rounding='fused'"
                )
        if (
            group["eps"] == 0
            and group["eps_mode"] != "inside_guarded"
            and ((state["sum"] == 0) & (grad == 0)).any()
        ):
            return (
                f"eps=0 and some coordinates of {name} have only ever had zero gradient "
                "(sum = 0 with initial_accumulator_value=0), so their update is 0/0 = NaN; use "
                "eps > 0, initial_accumulator_value > 0 or eps_mode='inside_guarded'"
            )
        return None

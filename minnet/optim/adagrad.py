r"""Adagrad with three eps placements: the class, its fused Numba kernel and a plain-NumPy
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
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numba
import numpy as np

from minnet.nn import Parameter
from minnet.optim._flat import sum_squares
from minnet.optim.optimizer import (
    Optimizer,
    check_bool,
    check_choice,
    check_eps,
    check_lr,
    check_nonnegative,
    check_weight_decay,
)

__all__ = [
    "Adagrad",
    "ADAGRAD_EPS_MODES",
    "AdagradScalars",
    "adagrad_scalars",
    "adagrad_kernel_for",
    "adagrad_step_reference",
]

#: The eps placements: "outside" (PyTorch), "inside" (Keras 3), "inside_guarded" (optax).
ADAGRAD_EPS_MODES = ("outside", "inside", "inside_guarded")
OUTSIDE, INSIDE, GUARDED = 0, 1, 2  # indices into ADAGRAD_EPS_MODES

_EPS_COMPARED_WITH = {"outside": "sqrt(sum)", "inside": "sum", "inside_guarded": "sum"}


class AdagradScalars(NamedTuple):
    """Per-step constants of the Adagrad update, already in the arrays' dtype."""

    neg_clr: np.floating  # -lr / (1 + (t - 1) * lr_decay)
    sign: np.floating  # -1 if maximize else 1
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
    maximize: bool = False,
) -> AdagradScalars:
    """Step ``step``'s constants, computed in float64 (PyTorch's ``clr``) and cast to ``dtype``."""
    clr = lr / (1 + (step - 1) * lr_decay)
    with np.errstate(over="ignore"):
        c = np.array([-clr, -1.0 if maximize else 1.0, weight_decay, eps], dtype).tolist()
    t = dtype.type
    return AdagradScalars(t(c[0]), t(c[1]), t(c[2]), t(c[3]))


@numba.njit(inline="always", error_model="numpy")
def _loop(param, grad, state_sum, scratch, s, mode, track, write):  # pragma: no cover
    """The pass over all coordinates; every flag is a compile-time constant."""
    n_dominated = 0
    n_nonfinite = 0
    one = s.sign * s.sign  # 1 in the arrays' dtype
    zero = one - one
    for i in range(param.shape[0]):
        p = param[i]
        g = grad[i] * s.sign
        if s.weight_decay != 0:
            g = g + s.weight_decay * p
        acc = state_sum[i] + g * g
        if mode == OUTSIDE:
            root = np.sqrt(acc)
            delta = s.neg_clr * (g / (root + s.eps))
            dominated = s.eps >= root
        elif mode == INSIDE:
            delta = s.neg_clr * (g / np.sqrt(acc + s.eps))
            dominated = s.eps >= acc
        else:
            k = one / np.sqrt(acc + s.eps) if acc > 0 else zero
            delta = s.neg_clr * (g * k)
            dominated = s.eps >= acc
        new = p + delta
        if track:
            n_dominated += dominated
            n_nonfinite += not np.isfinite(new)
            scratch[i] = delta
        if write:
            param[i] = new
            state_sum[i] = acc
    if not track:
        return 0, 0, 0.0
    return n_dominated, n_nonfinite, sum_squares(scratch, param.shape[0])


def adagrad_kernel_for(mode: int, track: bool, write: bool) -> Callable[..., tuple]:
    """The compiled kernel for one variant (built on first use, cached on disk):
    ``kernel(param, grad, sum, scratch, scalars) -> (n_eps_dominated, n_nonfinite,
    sum_sq_update)``. ``mode`` indexes :data:`ADAGRAD_EPS_MODES`; the flags are closure
    constants, so each variant's loop is branch-free and vectorizes."""
    return _kernel_for(int(mode), bool(track), bool(write))


@functools.cache
def _kernel_for(mode: int, track: bool, write: bool) -> Callable:
    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def kernel(param, grad, state_sum, scratch, s):  # pragma: no cover
        return _loop(param, grad, state_sum, scratch, s, mode, track, write)

    return kernel


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
        g = grad * s.sign
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
            ``eps >= S`` (the inside placements).
        check_finite: refuse a step that would make a parameter NaN or infinite.

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
        super().__init__(params, defaults, track_stats=track_stats, check_finite=check_finite)

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
            maximize=group["maximize"],
        )

    def _kernel(self, group: Mapping[str, Any], track: bool, write: bool) -> Callable[..., Any]:
        return adagrad_kernel_for(ADAGRAD_EPS_MODES.index(group["eps_mode"]), track, write)

    def _reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
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

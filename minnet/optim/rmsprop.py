r"""RMSprop, plain or centered, with momentum and two eps placements: the class, its fused Numba
kernel and a plain-NumPy reference, side by side.

One step (``g`` the gradient, state arrays by PyTorch's names: ``square_avg`` = v,
``grad_avg`` = a, ``momentum_buffer`` = b, all starting at 0), in PyTorch's order of operations
(``torch.optim.RMSprop``) so that float64 agrees with it to round-off:

    g   = -grad if maximize else grad
    g   = g + weight_decay * param                        (L2, only if weight_decay != 0)
    v   = v * alpha + (1 - alpha) * g * g
    a   = lerp(a, g, 1 - alpha)                           (centered only)
    var = v - a * a  if centered  else  v

where eps sits (``eps_mode``):

    "outside"  D = sqrt(var) + eps        torch.optim.RMSprop
    "inside"   D = sqrt(var + eps)        Keras 3 RMSprop; optax.rmsprop (eps_in_sqrt=True,
                                          its default)

and the step:

    momentum > 0:  b = b * momentum + g / D;  param = param + (-lr) * b
    momentum = 0:  param = param + (-lr) * (g / D)

Keras and optax keep the learning rate inside the momentum buffer (``b = momentum*b + lr*g/D``,
``param -= b``); that equals the above only while lr is constant (a schedule changes the lr of
past steps still in the buffer in PyTorch's form, not in theirs). minnet follows PyTorch.
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
    check_momentum,
    check_nonnegative,
    check_weight_decay,
)

__all__ = [
    "RMSprop",
    "RMSPROP_EPS_MODES",
    "RMSpropScalars",
    "rmsprop_scalars",
    "rmsprop_kernel_for",
    "rmsprop_step_reference",
]

#: The eps placements: "outside" (PyTorch) and "inside" (Keras 3, optax).
RMSPROP_EPS_MODES = ("outside", "inside")
OUTSIDE, INSIDE = 0, 1  # indices into RMSPROP_EPS_MODES


class RMSpropScalars(NamedTuple):
    """Per-step constants of the RMSprop update, already in the arrays' dtype."""

    neg_lr: np.floating  # -lr
    sign: np.floating  # -1 if maximize else 1
    weight_decay: np.floating
    alpha: np.floating
    one_minus_alpha: np.floating  # 1 - alpha (computed in float64), weight of g*g in v
    lerp_w: np.floating  # 1 - alpha, the lerp weight of grad_avg
    one_minus_lerp_w: np.floating  # 1 - lerp_w in the arrays' dtype (PyTorch's lerp, w >= 0.5)
    momentum: np.floating
    eps: np.floating


def rmsprop_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    maximize: bool = False,
) -> RMSpropScalars:
    """The constants of a step, computed in float64 and cast to ``dtype`` (RMSprop's do not
    depend on the step count)."""
    with np.errstate(over="ignore"):
        c = np.array(
            [-lr, -1.0 if maximize else 1.0, weight_decay, alpha, 1.0 - alpha, momentum, eps],
            dtype,
        ).tolist()
    t = dtype.type
    lerp_w = t(c[4])
    return RMSpropScalars(
        t(c[0]), t(c[1]), t(c[2]), t(c[3]), t(c[4]), lerp_w, t(1) - lerp_w, t(c[5]), t(c[6])
    )


@numba.njit(inline="always", error_model="numpy")
def _loop(
    param, grad, square_avg, buf, grad_avg, scratch, s, mode, centered, has_momentum, track,
    write,
):  # pragma: no cover - compiled  # fmt: skip
    """The pass over all coordinates; every flag is a compile-time constant."""
    n_dominated = 0
    n_nonfinite = 0
    for i in range(param.shape[0]):
        p = param[i]
        g = grad[i] * s.sign
        if s.weight_decay != 0:
            g = g + s.weight_decay * p
        v = square_avg[i] * s.alpha
        v = v + s.one_minus_alpha * g * g
        var = v
        if centered:
            a = grad_avg[i]
            # PyTorch's lerp switches formula at weight 0.5 to stay exact at both ends.
            if s.lerp_w < 0.5:
                a = a + s.lerp_w * (g - a)
            else:
                a = g - (g - a) * s.one_minus_lerp_w
            var = v - a * a
        if mode == OUTSIDE:
            root = np.sqrt(var)
            denom = root + s.eps
            dominated = s.eps >= root
        else:
            denom = np.sqrt(var + s.eps)
            dominated = s.eps >= var
        if has_momentum:
            b = buf[i] * s.momentum
            b = b + g / denom
            delta = s.neg_lr * b
        else:
            delta = s.neg_lr * (g / denom)
        new = p + delta
        if track:
            n_dominated += dominated
            n_nonfinite += not np.isfinite(new)
            scratch[i] = delta
        if write:
            param[i] = new
            square_avg[i] = v
            if centered:
                grad_avg[i] = a
            if has_momentum:
                buf[i] = b
    if not track:
        return 0, 0, 0.0
    return n_dominated, n_nonfinite, sum_squares(scratch, param.shape[0])


def rmsprop_kernel_for(
    mode: int, centered: bool, has_momentum: bool, track: bool, write: bool
) -> Callable[..., tuple]:
    """The compiled kernel for one variant (built on first use, cached on disk):
    ``kernel(param, grad, square_avg[, momentum_buffer][, grad_avg], scratch, scalars) ->
    (n_eps_dominated, n_nonfinite, sum_sq_update)``, the state arrays of
    :meth:`RMSprop._state_spec` in order. ``mode`` indexes :data:`RMSPROP_EPS_MODES`. The flags
    are closure constants, so each variant's loop is branch-free and vectorizes."""
    return _kernel_for(int(mode), bool(centered), bool(has_momentum), bool(track), bool(write))


@functools.cache
def _kernel_for(mode: int, centered: bool, has_momentum: bool, track: bool, write: bool):
    if has_momentum and centered:

        @numba.njit(cache=True, error_model="numpy", nogil=True)
        def kernel_mc(param, grad, square_avg, buf, grad_avg, scratch, s):  # pragma: no cover
            return _loop(
                param, grad, square_avg, buf, grad_avg, scratch, s, mode, True, True, track,
                write,
            )  # fmt: skip

        return kernel_mc
    if has_momentum:

        @numba.njit(cache=True, error_model="numpy", nogil=True)
        def kernel_m(param, grad, square_avg, buf, scratch, s):  # pragma: no cover
            return _loop(
                param, grad, square_avg, buf, square_avg, scratch, s, mode, False, True, track,
                write,
            )  # fmt: skip

        return kernel_m
    if centered:

        @numba.njit(cache=True, error_model="numpy", nogil=True)
        def kernel_c(param, grad, square_avg, grad_avg, scratch, s):  # pragma: no cover
            return _loop(
                param, grad, square_avg, square_avg, grad_avg, scratch, s, mode, True, False,
                track, write,
            )  # fmt: skip

        return kernel_c

    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def kernel(param, grad, square_avg, scratch, s):  # pragma: no cover
        return _loop(
            param, grad, square_avg, square_avg, square_avg, scratch, s, mode, False, False,
            track, write,
        )  # fmt: skip

    return kernel


def rmsprop_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    momentum_buffer: np.ndarray | None,
    grad_avg: np.ndarray | None,
    scalars: RMSpropScalars,
    mode: int,
) -> None:
    """The same update with whole-array NumPy, in place (``momentum_buffer`` is ``None``
    without momentum, ``grad_avg`` ``None`` unless centered)."""
    s = scalars
    with np.errstate(all="ignore"):
        g = grad * s.sign
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        square_avg *= s.alpha
        square_avg += s.one_minus_alpha * g * g
        var = square_avg
        if grad_avg is not None:
            if s.lerp_w < 0.5:
                grad_avg += s.lerp_w * (g - grad_avg)
            else:
                grad_avg[...] = g - (g - grad_avg) * s.one_minus_lerp_w
            var = square_avg - grad_avg * grad_avg
        denom = np.sqrt(var) + s.eps if mode == OUTSIDE else np.sqrt(var + s.eps)
        if momentum_buffer is not None:
            momentum_buffer *= s.momentum
            momentum_buffer += g / denom
            param += s.neg_lr * momentum_buffer
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
    whether ``momentum`` is 0 cannot change after the group is created. Parameter groups,
    ``state_dict``, ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s.

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
        track_stats: record :class:`~minnet.optim.optimizer.OptimizerStats` in every step;
            ``eps_dominated`` counts coordinates with ``eps >= sqrt(var)`` ("outside") or
            ``eps >= var`` ("inside").
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
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        eps_mode: str = "outside",
        track_stats: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "eps_mode": eps_mode,
        }
        super().__init__(params, defaults, track_stats=track_stats, check_finite=check_finite)

    def _validate(self, group: Mapping[str, Any]) -> dict[str, Any]:
        # PyTorch's order: lr, eps, momentum, weight_decay, alpha.
        lr = check_lr(group["lr"])
        eps = check_eps(group["eps"])
        momentum = check_momentum(group["momentum"])
        weight_decay = check_weight_decay(group["weight_decay"])
        alpha = check_nonnegative("alpha", group["alpha"])
        return {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": check_bool("centered", group["centered"]),
            "weight_decay": weight_decay,
            "maximize": check_bool("maximize", group["maximize"]),
            "eps_mode": check_choice("eps_mode", group["eps_mode"], RMSPROP_EPS_MODES),
        }

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        spec = {"square_avg": 0.0}
        if group["momentum"] > 0:
            spec["momentum_buffer"] = 0.0
        if group["centered"]:
            spec["grad_avg"] = 0.0
        return spec

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> RMSpropScalars:
        return rmsprop_scalars(
            dtype,
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            maximize=group["maximize"],
        )

    def _kernel(self, group: Mapping[str, Any], track: bool, write: bool) -> Callable[..., Any]:
        return rmsprop_kernel_for(
            RMSPROP_EPS_MODES.index(group["eps_mode"]),
            group["centered"],
            group["momentum"] > 0,
            track,
            write,
        )

    def _reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        mode = RMSPROP_EPS_MODES.index(group["eps_mode"])
        has_momentum = group["momentum"] > 0
        centered = group["centered"]

        def reference(param, grad, square_avg, *rest):  # type: ignore[no-untyped-def]
            rest = list(rest)
            buf = rest.pop(0) if has_momentum else None
            grad_avg = rest.pop(0) if centered else None
            rmsprop_step_reference(param, grad, square_avg, buf, grad_avg, rest[0], mode)

        return reference

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v)"`` ("outside") or ``"v"`` ("inside"), with ``v - avg**2`` in place of
        ``v`` when centered."""
        var = "v - avg**2" if options.get("centered", False) else "v"
        return f"sqrt({var})" if options.get("eps_mode", "outside") == "outside" else var

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int
    ) -> np.ndarray:
        """``k = 1 / D`` from the state after the latest step, in float64: ``1 / (sqrt(var) +
        eps)`` ("outside") or ``1 / sqrt(var + eps)`` ("inside"); ``inf`` where ``D = 0``."""
        var = state["square_avg"].astype(np.float64)
        if group["centered"]:
            a = state["grad_avg"].astype(np.float64)
            var = var - a * a
        eps = group["eps"]
        with np.errstate(all="ignore"):
            if group["eps_mode"] == "outside":
                return 1.0 / (np.sqrt(var) + eps)
            return 1.0 / np.sqrt(var + eps)

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        if group["eps"] == 0 and ((state["square_avg"] == 0) & (grad == 0)).any():
            return (
                f"eps=0 and some coordinates of {name} have only ever had zero gradient "
                "(square_avg = 0), so their update is 0/0 = NaN; use eps > 0"
            )
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

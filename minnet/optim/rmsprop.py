r"""RMSprop, plain or centered, with momentum and two eps placements: the class, its element
rule and a plain-NumPy reference, side by side.

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

16-bit storage (float16 / bfloat16 parameters or state; ``R_p``/``R_s`` round a float32 value to
the parameter's / the state's dtype, ``lp_p(c)``/``lp_s(c)`` a constant). ``rounding="fused"``
loads every value to float32, runs the update above in float32 (both eps placements) and rounds
once per stored array (PyTorch has no fused RMSprop; this is what its fused Adam does).
``rounding="per_op"`` is PyTorch's ``_single_tensor_rmsprop`` on half tensors, each op rounding
its result, so it exists for ``eps_mode="outside"`` only (centered and momentum included):

    g   = -grad if maximize else grad                             (exact)
    g   = R_p(g + lp_p(weight_decay) * param)                     grad.add(param, alpha=wd)
    v   = R_s(v * alpha);  v = R_s(v + (1 - alpha) * g * g)       v.mul_(alpha).addcmul_(g, g,
                                                                    value=1 - alpha)
    a   = R_s(a + (1 - alpha) * (g - a))                          a.lerp_(g, 1 - alpha)
    avg = R_s(sqrt(R_s(v - a * a)))  if centered  else  R_s(sqrt(v))
    avg = R_s(avg + lp_s(eps))                                    avg.add_(eps): eps=1e-8 is 0
                                                                    in float16
    b   = R_s(b * momentum);  b = R_s(b + g / avg)                buf.mul_(m).addcdiv_(g, avg)
    param = R_p(param + lp_p(-lr) * b)                            param.add_(buf, alpha=-lr)
    param = R_p(param + (-lr * g) / avg)                          momentum = 0: param.addcdiv_(
                                                                    g, avg, value=-lr)

Every op computes in float32; products and sums are separate float32 roundings (PyTorch's
addcmul fuses one into an fma, so a rare last-bit difference before the 16-bit rounding can
remain). In float16 with eps=1e-8, a second moment that underflows to 0 gives ``g / 0``: inf,
or NaN for a zero gradient, from the first step on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from minnet._lowp import NATIVE, round_to
from minnet.dtypes import bfloat16, is_16bit
from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, slot
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


def rmsprop_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
) -> RMSpropScalars:
    """The constants of a step, computed in float64 and cast to ``dtype`` (RMSprop's do not
    depend on the step count)."""
    with np.errstate(over="ignore"):
        c = np.array(
            [-lr, weight_decay, alpha, 1.0 - alpha, momentum, eps],
            dtype,
        ).tolist()
    t = dtype.type
    lerp_w = t(c[3])
    return RMSpropScalars(
        t(c[0]), t(c[1]), t(c[2]), t(c[3]), lerp_w, t(1) - lerp_w, t(c[4]), t(c[5])
    )


_PER_OP_MESSAGE = (
    "RMSprop: rounding='per_op' follows PyTorch's single-tensor RMSprop, which has eps outside "
    "the root only: it needs eps_mode='outside', got eps_mode='inside'; use rounding='fused'"
)


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
    eps = round_to(s.eps, rs)
    if mode == OUTSIDE:
        root = round_to(np.sqrt(var), rs)  # .sqrt_()
        denom = round_to(root + eps, rs)  # .add_(eps)
        dominated = eps >= root
    else:
        denom = np.sqrt(var + eps)
        dominated = eps >= var
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


#: RMSprop's element rule; the second moment ``square_avg`` is state 0.
RULE = Rule(update, second_moment=0)


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
        g = grad
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
            ``eps >= var`` ("inside"); over 16-bit buffers also ``underflow`` (``square_avg``
            stored as 0 with a nonzero gradient) and ``lost_updates``.
        check_finite: refuse a step that would make a parameter NaN or infinite.
        state_dtype: the state arrays' dtype (``None``: the parameter's); see
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
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
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
    eps_modes = RMSPROP_EPS_MODES

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
        )

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        mode = RMSPROP_EPS_MODES.index(group["eps_mode"])
        return (mode, group["centered"], group["momentum"] > 0)

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        return None if group["eps_mode"] == "outside" else _PER_OP_MESSAGE

    def _float_reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        mode, centered, has_momentum = self._options(group)

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
        dt = state["square_avg"].dtype
        if group["eps"] > 0 and self.rounding == "per_op" and is_16bit(dt):
            name16 = "bfloat16" if dt == bfloat16 else str(dt)
            with np.errstate(under="ignore"):
                stored = float(np.float32(group["eps"]).astype(dt))
            if stored == 0:
                return (
                    f"eps={group['eps']} is 0 in {name16} and rounding='per_op' adds it in the "
                    f"state dtype, so where square_avg of {name} is or underflows to 0 the update "
                    "is g/0 = inf (0/0 = NaN for a zero gradient); use a larger eps, "
                    "state_dtype='float32' or rounding='fused'"
                )
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

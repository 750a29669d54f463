r"""FTRL-Proximal (McMahan et al. 2013, "Ad Click Prediction: a View from the Trenches"): the
class, its element rule and a plain-NumPy reference, side by side. Keras 3's
``keras.optimizers.Ftrl``.

"Follow The Regularized Leader" keeps two sums per coordinate, the accumulator ``n`` of squared
gradients (Adagrad's) and the linear term ``z``, and computes each new parameter from them in
closed form: ``param = -lr * z / (n**0.5 + beta + 2*lr*l2)`` (and exactly 0 where ``|z| <= l1``).
The update is in :class:`Ftrl`'s docstring, in Keras's order of operations (``Ftrl.update_step``
of Keras 3), so that float64 agrees with Keras to round-off. PyTorch and optax have no FTRL; the
state names are Keras's (and TensorFlow's slots): ``accumulator`` and ``linear``.

Where eps sits: FTRL has no argument called eps, but two that play its role. The accumulator
starts at ``initial_accumulator_value`` (Keras's default 0.1), so ``n**0.5 = sqrt(initial +
sum(g**2))``: the initial value is an eps *inside* the root, added once, exactly where Keras's
Adagrad puts its ``epsilon``; and ``beta`` is added to ``n**0.5`` *outside* the root, where
PyTorch's Adam puts eps (the paper's per-coordinate learning rate ``alpha / (beta +
sqrt(n))``). minnet's eps-like knob, the one the lab sweeps (:attr:`Ftrl.eps_arg`), is
``initial_accumulator_value``: it is the one whose default is not 0, so the one that sets the
first steps of a coordinate whose gradients are small, and at 0 (with ``beta = 0`` and no L2) a
coordinate that has only seen zero gradients divides 0 by 0, as eps = 0 does elsewhere.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (Keras with float32 compute). ``rounding="per_op"`` is refused: it means PyTorch's
op-by-op rounding, and PyTorch has no FTRL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, select
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_lr,
    check_nonnegative,
    check_real,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Ftrl"]


def check_learning_rate_power(power: object) -> float:
    """Keras's check, ``learning_rate_power <= 0``, in PyTorch's message style (NaN fails)."""
    v = check_real("learning_rate_power", power)
    if not v <= 0.0:
        raise ValueError(f"Invalid learning_rate_power value: {power}")
    return v


class FtrlScalars(NamedTuple):
    """Per-step constants of the FTRL update, already in the arrays' dtype."""

    lr: np.floating
    neg_power: np.floating  # -learning_rate_power: n**neg_power (0.5: sqrt(n))
    two_shrink: np.floating  # 2 * l2_shrinkage_regularization_strength
    two_l2_reg: np.floating  # 2 * (l2 + beta / (2 * lr)), Keras's l2_reg
    l1: np.floating
    neg_l1: np.floating
    initial: np.floating  # initial_accumulator_value (for eps_dominated)


@element
def root_of(n, s, sqrt):  # pragma: no cover - compiled
    """``n**-learning_rate_power`` (``sqrt(n)`` for the usual -0.5: it vectorizes)."""
    if sqrt:
        return np.sqrt(n)
    return n**s.neg_power


@element
def quadratic_of(root, s):  # pragma: no cover - compiled
    """Keras's ``quadratic = n**-power / lr + 2 * (l2 + beta / (2 * lr))``."""
    return root / s.lr + s.two_l2_reg


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (sqrt,)``:
    ``learning_rate_power == -0.5``, where ``n**0.5`` is ``sqrt(n)`` (vectorizes); no per_op
    model (refused by the class)."""
    (sqrt,) = o
    n, z = state[0], state[1]
    g_shrunk = g + s.two_shrink * p
    n_new = n + g * g
    root_new = root_of(n_new, s, sqrt)
    root = root_of(n, s, sqrt)
    z = z + (g_shrunk - ((root_new - root) / s.lr) * p)
    quadratic = quadratic_of(root_new, s)
    clipped = select(z > s.l1, s.l1, select(z < s.neg_l1, s.neg_l1, z))
    new = (clipped - z) / quadratic
    delta = new - p
    return p, new, (n_new, z), delta, delta, s.initial >= n_new - s.initial, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param = -lr * k * (z - l1 clip)``: ``1 / (lr * quadratic)`` = ``1 / (n**-power
    + beta + 2 * lr * l2)``."""
    return 1.0 / (s.lr * quadratic_of(root_of(state[0], s, o[0]), s))


#: FTRL's element rule; the accumulator of squared gradients is state 0.
RULE = Rule(update, second_moment=0, multiplier=multiplier)


def _power(x: np.ndarray, q: np.floating) -> np.ndarray:
    """``x**q``: ``sqrt`` for ``q = 0.5``, else the C library's ``pow`` per element (the one
    compiled code calls; NumPy's own SIMD ``power`` can differ by an ulp, which the difference
    ``n_new**q - n**q`` turns into a larger relative error)."""
    if q == 0.5:
        return np.sqrt(x)
    return np.array([math.pow(v, float(q)) for v in x.ravel().tolist()], x.dtype).reshape(x.shape)


def ftrl_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: FtrlScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    accumulator, linear = state
    with np.errstate(all="ignore"):
        shrunk = grad + s.two_shrink * param
        new_accumulator = accumulator + grad * grad
        power_new = _power(new_accumulator, s.neg_power)
        power_old = _power(accumulator, s.neg_power)
        linear += shrunk - ((power_new - power_old) / s.lr) * param
        quadratic = power_new / s.lr + s.two_l2_reg
        clipped = np.where(linear > s.l1, s.l1, np.where(linear < s.neg_l1, s.neg_l1, linear))
        param[...] = (clipped - linear) / quadratic
        accumulator[...] = new_accumulator


class Ftrl(Optimizer):
    r"""FTRL-Proximal with Keras 3's exact semantics (``keras.optimizers.Ftrl``), as one fused
    Numba kernel.

    With ``n``/``accumulator`` starting at ``initial_accumulator_value``, ``z``/``linear`` at
    0, ``q = -learning_rate_power`` (0.5 by default: ``n**q = sqrt(n)``) and ``l1``, ``l2``,
    ``shrink`` the three regularization strengths, one step in Keras's order:

    .. code-block:: text

        g_shrunk  = g + 2 * shrink * param
        n_new     = n + g**2                              (the raw g, not g_shrunk)
        z         = z + (g_shrunk - (n_new**q - n**q) / lr * param)
        quadratic = n_new**q / lr + 2 * (l2 + beta / (2 * lr))
        param     = (clip(z, -l1, l1) - z) / quadratic    (0 where |z| <= l1)
        n         = n_new

    that is, ``param = -lr * (z - clip(z, -l1, l1)) / (n**q + beta + 2 * lr * l2)``. The new
    parameter depends on the old one only through ``z``.

    **Where eps sits.** There is no eps argument; two play its role. ``initial_accumulator_value``
    is added to the sum of squared gradients *inside* the root, once (``n = initial +
    sum(g**2)``, as Keras's Adagrad adds its epsilon), and ``beta`` is added to ``n**q``
    *outside* it (the paper's ``alpha / (beta + sqrt(n))``, where PyTorch's Adam adds eps).
    minnet's eps-like knob is ``initial_accumulator_value``: its default 0.1 is what keeps the
    first denominators of a coordinate with small gradients away from 0 (``beta`` defaults to
    0), so it is the argument the lab sweeps as eps (:attr:`eps_arg`), and
    :meth:`eps_compared_with` is ``"sum(g**2)"``, the quantity it is added to:
    ``stats.eps_dominated`` counts coordinates where ``initial_accumulator_value >=
    sum(g**2)``. With ``initial_accumulator_value=0``, ``beta=0`` and
    ``l2_regularization_strength=0``, a coordinate whose gradients have all been 0 gets ``0 /
    0 = NaN`` (as in Keras); ``learning_rate_power=0`` (a fixed learning rate) has no root and
    no such 0/0. :meth:`~minnet.optim.optimizer.Optimizer.multipliers` is ``1 / (n**q + beta +
    2 * lr * l2)``, the factor ``param = -lr * z * multiplier`` applies (``l1 = 0``).

    Names and defaults are Keras's: ``learning_rate=0.001, learning_rate_power=-0.5,
    initial_accumulator_value=0.1, l1_regularization_strength=0.0,
    l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0, beta=0.0``,
    except that the learning rate is ``lr``, as every minnet optimizer, scheduler and
    ``param_groups`` entry spells it (PyTorch's layout; Keras's ``learning_rate`` is not a
    second spelling, so that a group has one learning-rate key). Keras's checks, with
    PyTorch's message style (NaN is rejected): ``lr >= 0``, ``learning_rate_power <= 0``, and
    every other option ``>= 0``. ``lr=0`` divides by 0 as Keras does (NaN). PyTorch and optax
    have no FTRL. Keras's ``weight_decay``, clipping and EMA options are not offered (minnet
    has ``clip_grad_norm_`` and the other optimizers' decays).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate (Keras's ``learning_rate``), ``>= 0``. Default ``1e-3``.
        learning_rate_power: ``<= 0``; the step shrinks as ``n**learning_rate_power``
            (0: a fixed learning rate). Default ``-0.5``.
        initial_accumulator_value: the initial ``n``, ``>= 0`` (the eps-like knob). Default
            ``0.1``.
        l1_regularization_strength: ``>= 0``; ``param = 0`` where ``|z| <= l1``. Default 0.
        l2_regularization_strength: ``>= 0``; the stabilization L2 in the denominator.
            Default 0.
        l2_shrinkage_regularization_strength: ``>= 0``; the magnitude L2, added to the
            gradient as ``2 * shrink * param``. Default 0.
        beta: ``>= 0``, added to ``n**q`` in the denominator. Default 0.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no FTRL whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type, or an unknown keyword.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        learning_rate_power: float = -0.5,
        initial_accumulator_value: float = 0.1,
        l1_regularization_strength: float = 0.0,
        l2_regularization_strength: float = 0.0,
        l2_shrinkage_regularization_strength: float = 0.0,
        beta: float = 0.0,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(
            lr=lr,
            learning_rate_power=learning_rate_power,
            initial_accumulator_value=initial_accumulator_value,
            l1_regularization_strength=l1_regularization_strength,
            l2_regularization_strength=l2_regularization_strength,
            l2_shrinkage_regularization_strength=l2_shrinkage_regularization_strength,
            beta=beta,
        )
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(ftrl_reference)
    #: Keras's order of checks: initial_accumulator_value, learning_rate_power, l1, l2, shrink.
    checks = {
        "lr": check_lr,
        "initial_accumulator_value": partial(check_nonnegative, "initial_accumulator_value"),
        "learning_rate_power": check_learning_rate_power,
        "l1_regularization_strength": partial(check_nonnegative, "l1_regularization_strength"),
        "l2_regularization_strength": partial(check_nonnegative, "l2_regularization_strength"),
        "l2_shrinkage_regularization_strength": partial(
            check_nonnegative, "l2_shrinkage_regularization_strength"
        ),
        "beta": partial(check_nonnegative, "beta"),
    }
    #: The constructor argument that plays eps's role, the one the lab sweeps (see above).
    eps_arg = "initial_accumulator_value"
    _eps_options = ("initial_accumulator_value", "beta")

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"accumulator": float(group["initial_accumulator_value"]), "linear": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> FtrlScalars:
        lr = np.float64(group["lr"])
        l1 = group["l1_regularization_strength"]
        with np.errstate(divide="ignore", invalid="ignore"):  # lr = 0: inf or NaN, as Keras
            l2_reg = group["l2_regularization_strength"] + group["beta"] / (2.0 * lr)
        return cast_scalars(FtrlScalars, dtype, lr, -group["learning_rate_power"],
                            2 * group["l2_shrinkage_regularization_strength"], 2 * l2_reg,
                            l1, -l1, group["initial_accumulator_value"])  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (group["learning_rate_power"] == -0.5,)

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "FTRL"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sum(g**2)"``: ``initial_accumulator_value``, the eps-like knob, is added to the
        sum of squared gradients inside the root."""
        return "sum(g**2)"

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        """``initial_accumulator_value=0`` with ``beta=0`` and no L2, where the accumulator
        and the gradient are 0: ``0 / 0``."""
        zero_denominator = (
            group["initial_accumulator_value"] == 0 and group["beta"] == 0
            and group["l2_regularization_strength"] == 0 and group["learning_rate_power"] < 0
        )  # fmt: skip
        if zero_denominator and ((state["accumulator"] == 0) & (grad == 0)).any():
            return (
                f"initial_accumulator_value=0 (the eps-like knob) with beta=0 and "
                f"l2_regularization_strength=0, and some coordinates of {name} have only ever "
                "had zero gradient (accumulator = 0), so their update is 0/0 = NaN; use "
                "initial_accumulator_value > 0 (Keras's default 0.1) or beta > 0"
            )
        if group["lr"] == 0:
            return "lr=0: FTRL divides by the learning rate (as Keras does), so lr must be > 0"
        return None

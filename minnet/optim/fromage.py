r"""Fromage (Bernstein et al. 2020, "On the distance between two neural networks and the
stability of learning"): the class, its rule (an element rule and a per-tensor stage) and a
plain-NumPy reference, side by side. optax's ``optax.fromage``.

Each parameter tensor steps by ``lr`` times its own norm in the direction of its gradient,
``w <- (w - lr * ||w|| / ||g|| * g) / sqrt(1 + lr**2)``: the gradient is rescaled to the
tensor's norm (a trust ratio ``||w|| / ||g||``, both norms floored at ``min_norm``), and the
shrink by ``1 / sqrt(1 + lr**2)`` keeps the norm from growing (the step is orthogonal-ish to
``w``). The norms and the ratio are per tensor (:class:`minnet.optim._kernel.Tensor`); the step
is elementwise. "Tensor" is a :class:`~minnet.nn.Parameter`, as a leaf is for optax. The update
is in :class:`Fromage`'s docstring in optax's order of operations, so that float64 agrees with
optax to round-off. PyTorch core and Keras 3 have no Fromage.

16-bit storage: ``rounding="fused"`` computes the step in float32 (``g`` is kept in float32
between the passes, the norms are summed in float64) and rounds each stored value once.
``rounding="per_op"`` is refused: PyTorch has no Fromage whose op-by-op rounding it would
follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numba
import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, Tensor, element
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_lr,
    check_nonnegative,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Fromage"]


class FromageScalars(NamedTuple):
    """Per-step constants of the Fromage update, already in the arrays' dtype."""

    min_norm: np.floating
    neg_lr_mult: np.floating  # -(lr * mult), mult = 1 / sqrt(1 + lr**2)
    decay: np.floating  # mult - 1: optax's add_decayed_weights(mult - 1)


def fromage_mult(lr: float) -> float:
    """optax's ``mult = 1 / (1 + lr**2)**0.5``, in Python float64 as optax computes it."""
    return 1 / (1 + lr**2) ** 0.5


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """Pass 1, one coordinate: no state; ``g`` is the ``change`` handed to the per-tensor
    stage (its sum of squares is ``||g||**2``). No per_op model."""
    return p, p, (), g, g, False, g


@numba.njit(error_model="numpy")
def scale(pp, uu, s, o):  # pragma: no cover - compiled
    """Per tensor, from ``sum(w**2)`` and ``sum(g**2)`` (float64): optax's
    ``scale_by_trust_ratio(min_norm)``, each norm floored at ``min_norm`` (``safe_norm``:
    ``min_norm`` where the norm is ``<= min_norm``, so a NaN norm stays NaN), the ratio
    ``||w|| / (||g|| + 0)``, 1 where a floored norm is 0 (only with ``min_norm=0``); and
    whether the floor replaced either norm."""
    floor = np.float64(s.min_norm)
    w_norm = np.sqrt(pp)
    g_norm = np.sqrt(uu)
    param_norm = floor if w_norm <= floor else w_norm
    update_norm = floor if g_norm <= floor else g_norm
    ratio = 1.0 * param_norm / (update_norm + 0.0)  # trust_coefficient 1, eps 0
    if param_norm == 0.0 or update_norm == 0.0:
        ratio = 1.0
    return ratio, w_norm <= floor or g_norm <= floor


@element
def apply(p, u, k, state, s, o, rp, rs):  # pragma: no cover - compiled
    """Pass 2, one coordinate: ``x = (g * ratio) * -(lr * mult)``, then optax's
    ``add_decayed_weights(mult - 1)``: ``w += x + (mult - 1) * w``."""
    delta = (u * k) * s.neg_lr_mult + s.decay * p
    return p, p + delta, (), delta, delta


#: Fromage's rule: ``g`` elementwise, the floored trust ratio per tensor, the step elementwise.
RULE = Rule(update, tensor=Tensor(scale, apply, first=0))


def fromage_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: FromageScalars, o: tuple,
    bounds: np.ndarray | None = None,
) -> None:  # fmt: skip
    """The same update with whole-array NumPy, in place (the rule's arguments), each
    ``[bounds[j], bounds[j + 1])`` one tensor (``None``: the whole array)."""
    edges = [0, param.size] if bounds is None else list(bounds)
    floor = float(s.min_norm)
    with np.errstate(all="ignore"):
        for lo, hi in zip(edges[:-1], edges[1:]):
            w_norm = np.linalg.norm(param[lo:hi].astype(np.float64))
            g_norm = np.linalg.norm(grad[lo:hi].astype(np.float64))
            w_norm = floor if w_norm <= floor else w_norm
            g_norm = floor if g_norm <= floor else g_norm
            ratio = 1.0 if w_norm == 0 or g_norm == 0 else w_norm / g_norm
            ratio = param.dtype.type(ratio)
            param[lo:hi] += (grad[lo:hi] * ratio) * s.neg_lr_mult + s.decay * param[lo:hi]


class Fromage(Optimizer):
    r"""Fromage with optax's exact semantics (``optax.fromage``), as one compiled call per
    step: the trust ratio per parameter tensor, the step elementwise.

    With ``mult = 1 / sqrt(1 + lr**2)`` (computed once in float64) and every norm the 2-norm
    over one parameter's elements (computed from the parameter *before* the step), optax's
    ``chain(scale_by_trust_ratio(min_norm), scale_by_learning_rate(lr * mult),
    add_decayed_weights(mult - 1))`` is:

    .. code-block:: text

        wn    = min_norm  if ||w|| <= min_norm  else ||w||
        gn    = min_norm  if ||g|| <= min_norm  else ||g||
        ratio = 1  if wn == 0 or gn == 0  else wn / (gn + 0)
        w     = w + ((g * ratio) * (-(lr * mult)) + (mult - 1) * w)

    so ``w <- mult * (w - lr * wn / gn * g)``. ``min_norm`` is Fromage's eps (the argument
    the lab sweeps, :attr:`eps_arg`): a **floor** on both norms (optax's ``safe_norm``, a
    ``max`` that keeps NaN), not an added term, and ``eps_compared_with`` says so: it is
    compared with the tensor's gradient norm ``||g||`` (where it wins the step is ``lr * wn /
    min_norm * g``, shrinking with the gradient instead of keeping the length ``lr * ||w||``)
    and with the tensor's weight norm ``||w||`` (where it wins, a tensor with tiny or zero
    weights still steps by ``lr * min_norm``; a zero tensor takes ``lr * min_norm * g /
    ||g||``). ``min_norm=0`` never divides by 0: a zero norm takes the ratio 1 instead (a
    zero-gradient tensor then only shrinks, ``w * mult``). There is no other eps.

    Defaults are optax's ``fromage(learning_rate, min_norm=1e-6)``, which has no default
    learning rate; minnet's ``lr=0.01`` is the paper's. Weight decay is the ``mult - 1``
    shrink itself: optax's alias has no other.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``0.01``.
        min_norm: the floor of both norms, ``>= 0``. Default ``1e-6``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no Fromage whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        min_norm: float = 1e-6,
        **options: Unpack[Options],
    ) -> None:
        super().__init__(params, dict(lr=lr, min_norm=min_norm), **options)

    rule = RULE
    reference = staticmethod(fromage_reference)
    checks = {"lr": check_lr, "min_norm": partial(check_nonnegative, "min_norm")}
    #: The constructor argument that plays eps's role, the one the lab sweeps (see above).
    eps_arg = "min_norm"
    _eps_options = ("min_norm",)

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> FromageScalars:
        lr = group["lr"]
        mult = fromage_mult(lr)
        return cast_scalars(FromageScalars, dtype, group["min_norm"], -(lr * mult), mult - 1)

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Fromage"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"||g|| and ||w|| (per tensor, floor)"``: ``min_norm`` is a floor (a ``max``) on
        the tensor's gradient norm and on its weight norm."""
        return "||g|| and ||w|| (per tensor, floor)"

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``1 / max(||g||, min_norm)`` (float64) of the latest step, each tensor's over its
        coordinates (the ratio's denominator, floored)."""
        with np.errstate(divide="ignore"):
            return 1.0 / np.maximum(state["update_norm"], group["min_norm"])

r"""NovoGrad (Ginsburg et al. 2019, "Stochastic Gradient Methods with Layer-wise Adaptive Moments
for Training of Deep Networks"): the class, its rule (an element rule and a per-tensor stage
with per-tensor state) and a plain-NumPy reference, side by side. optax's ``optax.novograd``.

Adam's second moment shrunk to one number per parameter tensor: ``nu``, an EMA of the tensor's
squared gradient norm ``||g||**2``, divides the tensor's whole gradient, and the first moment
``mu`` accumulates that normalised gradient (plus weight decay) without bias correction. The
squared norm needs the whole tensor's gradient before any coordinate can be updated, so the
element pass (pass 1) only hands ``g`` to the per-tensor stage
(:class:`minnet.optim._kernel.Tensor`), which sums ``g**2`` over the tensor, updates ``nu``
(kept per tensor: ``Tensor.state``, the state dict's ``"nu"``, a float per parameter as optax
keeps a scalar per leaf) and gives the denominator; pass 2 updates ``mu`` and the parameter.
"Tensor" is a :class:`~minnet.nn.Parameter`, as a leaf is for optax. The update is in
:class:`Novograd`'s docstring in optax's order of operations, so that float64 agrees with optax
to round-off. PyTorch core and Keras 3 have no NovoGrad.

16-bit storage: ``rounding="fused"`` computes the step in float32 (the squared norm and ``nu``
in float64) and rounds each stored value once. ``rounding="per_op"`` is refused: PyTorch has no
NovoGrad whose op-by-op rounding it would follow.
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
    check_betas,
    check_eps,
    check_lr,
    check_nonnegative,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Novograd"]


class NovogradScalars(NamedTuple):
    """Per-step constants of the NovoGrad update, already in the arrays' dtype."""

    beta1: np.floating  # 0 at the first step: optax's init_mu takes the normalised g alone
    one_minus_beta2: np.floating
    beta2: np.floating
    eps: np.floating
    eps_root: np.floating
    weight_decay: np.floating
    neg_lr: np.floating
    first: np.floating  # 1 at the first step (nu = ||g||**2), else 0


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """Pass 1, one coordinate: nothing to update yet; ``g`` is the ``change`` handed to the
    per-tensor stage (its sum of squares is ``||g||**2``). No state; no per_op model."""
    return p, p, (), g, g, False, g


@numba.njit(error_model="numpy")
def scale(pp, uu, s, o, ts):  # pragma: no cover - compiled
    """Per tensor, from ``sum(g**2)`` (``uu``, float64) and the tensor's ``nu`` (``ts[0]``,
    overwritten with the new one): optax's ``nu = ||g||**2`` at the first step, else
    ``(1 - beta2) * ||g||**2 + beta2 * nu``; returns the denominator ``sqrt(nu + eps_root) +
    eps`` and whether eps is at least ``sqrt(nu + eps_root)``."""
    g_norm = np.sqrt(uu)
    n = g_norm * g_norm  # optax: jnp.linalg.norm(g) ** 2
    if s.first != 0:
        nu = n
    else:
        nu = np.float64(s.one_minus_beta2) * n + np.float64(s.beta2) * ts[0]
    ts[0] = nu
    root = np.sqrt(nu + np.float64(s.eps_root))
    eps = np.float64(s.eps)
    return root + eps, eps >= root


@element
def apply(p, u, k, state, s, o, rp, rs):  # pragma: no cover - compiled
    """Pass 2, one coordinate: ``mu = beta1 * mu + (g / k + weight_decay * w)`` with the
    tensor's denominator ``k``, then ``w += -lr * mu``."""
    m = s.beta1 * state[0] + (u / k + s.weight_decay * p)
    delta = s.neg_lr * m
    return p, p + delta, (m,), delta, delta


#: NovoGrad's rule: ``g`` elementwise, ``nu`` and the denominator per tensor, ``mu`` and the
#: step elementwise; ``nu`` is the stage's per-tensor state (0 before the first step, as optax).
RULE = Rule(update, tensor=Tensor(scale, apply, first=0, state=(("nu", 0.0),)))


def novograd_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: NovogradScalars, o: tuple,
    bounds: np.ndarray | None = None, tensor_state: np.ndarray | None = None,
) -> None:  # fmt: skip
    """The same update with whole-array NumPy, in place (the rule's arguments), each
    ``[bounds[j], bounds[j + 1])`` one tensor (``None``: the whole array), its ``nu`` in
    ``tensor_state[j, 0]`` (updated; ``None``: 0 before this step)."""
    (exp_avg,) = state
    edges = [0, param.size] if bounds is None else list(bounds)
    with np.errstate(all="ignore"):
        for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            g = grad[lo:hi]
            sq_norm = np.linalg.norm(g.astype(np.float64)) ** 2
            old = 0.0 if tensor_state is None else float(tensor_state[j, 0])
            if s.first:
                nu = sq_norm
            else:
                nu = float(s.one_minus_beta2) * sq_norm + float(s.beta2) * old
            if tensor_state is not None:
                tensor_state[j, 0] = nu
            denom = param.dtype.type(np.sqrt(nu + float(s.eps_root)) + float(s.eps))
            exp_avg[lo:hi] = s.beta1 * exp_avg[lo:hi] + (g / denom + s.weight_decay * param[lo:hi])
            param[lo:hi] += s.neg_lr * exp_avg[lo:hi]


class Novograd(Optimizer):
    r"""NovoGrad with optax's exact semantics (``optax.novograd``), as one compiled call per
    step: the second moment ``nu`` one number per parameter tensor, the first moment ``mu``
    elementwise.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``mu``/``exp_avg``
    starting at 0 and ``||g||`` the 2-norm over one parameter's gradient, optax's
    ``chain(scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
    scale_by_learning_rate(lr))`` is:

    .. code-block:: text

        nu = ||g||**2                                    if t == 1
        nu = (1 - beta2) * ||g||**2 + beta2 * nu         else
        mu = g / (sqrt(nu + eps_root) + eps) + weight_decay * w                 if t == 1
        mu = beta1 * mu + (g / (sqrt(nu + eps_root) + eps) + weight_decay * w)  else
        w  = w + (-lr) * mu

    No bias correction, and ``beta1`` multiplies ``mu`` without a ``(1 - beta1)`` on the new
    term (optax's form; the first step takes ``||g||**2`` and the normalised gradient as they
    are). ``eps`` sits *outside* the square root, added to the *tensor's* RMS-like
    ``sqrt(nu)``, an EMA of its gradient norm, not to a per-coordinate root: it dominates only
    where a whole tensor's gradient norm is below it (``||g|| <= eps``), and there the step is
    ``~ lr * g / eps``, plain momentum SGD at ``lr / eps``. ``eps_root`` is added inside the
    root (0 in the alias). With ``eps = eps_root = 0``, a tensor whose gradient has been all
    zero so far has ``nu = 0`` and its update is ``0 / 0 = NaN`` on every coordinate.

    ``nu`` is kept per tensor in float64 (the state dict's ``"nu"``, a float per parameter,
    as optax keeps a scalar per leaf; a 16-bit one would overflow at ``||g||**2 > 65504``);
    ``exp_avg`` is optax's ``mu``.

    Defaults are optax's ``novograd(learning_rate, b1=0.9, b2=0.25, eps=1e-6, eps_root=0.0,
    weight_decay=0.0)``, which has no default learning rate; minnet's ``lr=1e-3`` is a usual
    start (optax's example uses 0.003; the paper's runs 0.01-0.02 with warm-up-free
    schedules). optax's ``scale_by_novograd`` alone has ``eps=1e-8``: the alias's 1e-6 is the
    one here. optax's ``mu_dtype`` is ``state_dtype``.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)`` (optax's ``b1``, ``b2``). Default
            ``(0.9, 0.25)``.
        eps: added to ``sqrt(nu + eps_root)``, ``>= 0``. Default ``1e-6``.
        eps_root: added to ``nu`` inside the root, ``>= 0``. Default ``0``.
        weight_decay: added to the normalised gradient inside ``mu`` (optax's), ``>= 0``.
            Default ``0``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no NovoGrad whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.25),
        eps: float = 1e-6,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, eps_root=eps_root,
                        weight_decay=weight_decay)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(novograd_reference)
    checks = {"lr": check_lr, "betas": check_betas, "eps": check_eps,
              "eps_root": partial(check_nonnegative, "eps_root"),
              "weight_decay": check_weight_decay}  # fmt: skip
    _eps_options = ("eps", "eps_root")

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> NovogradScalars:
        beta1, beta2 = group["betas"]
        first = step == 1
        return cast_scalars(NovogradScalars, dtype, 0.0 if first else beta1, 1.0 - beta2, beta2,
                            group["eps"], group["eps_root"], group["weight_decay"],
                            -group["lr"], 1.0 if first else 0.0)  # fmt: skip

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "Novograd"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(nu) (per tensor)"``: eps is added to the root of the tensor's EMA of
        ``||g||**2`` (plus ``eps_root``)."""
        return "sqrt(nu) (per tensor)"

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``1 / (sqrt(nu + eps_root) + eps)`` (float64) of the latest step, each tensor's
        over its coordinates."""
        with np.errstate(divide="ignore"):
            return 1.0 / (np.sqrt(state["nu"] + group["eps_root"]) + group["eps"])

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        """``eps = eps_root = 0`` on a tensor whose gradient has been all zero so far (``nu``
        before the step 0 and a zero gradient now): its update is ``0 / 0``."""
        if group["eps"] == 0 and group["eps_root"] == 0 and state["nu"] == 0 and not grad.any():
            return (
                f"eps=0 and eps_root=0 and the gradient of {name} has been all zero so far "
                "(its nu = 0), so its update is 0/0 = NaN on every coordinate; use eps > 0 "
                "(optax's default 1e-6) or eps_root > 0"
            )
        return None

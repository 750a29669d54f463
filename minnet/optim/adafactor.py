r"""Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory
Cost"): the class, its shaped update and a plain-NumPy reference, side by side. PyTorch's
``torch.optim.Adafactor`` (``variant="torch"``, default), Keras 3's
``keras.optimizers.Adafactor`` (``variant="keras"``) and optax's ``optax.adafactor``
(``variant="optax"``).

The second moment of a matrix is kept *factored*: an EMA of the row means and one of the column
means of ``g**2``, whose outer product over their mean estimates ``v``; a vector keeps a plain
EMA. The step is ``g / sqrt(v_hat)`` clipped to an RMS of ``d`` and scaled by the parameter's own
RMS (at least ``eps2``) times a relative step size. This needs the parameter's shape, so the
update is a shaped one (:mod:`minnet.optim._shaped`): NumPy over each parameter's views of the
flat buffers, with reductions along an axis and no Python loop over elements. Each library's
update is in :class:`Adafactor`'s docstring, in its own order of operations, so that float64
agrees with it to round-off.

State: two arrays shaped as the parameter (the flat buffers hold one value per coordinate for
every state array), PyTorch's names. A factored parameter keeps its row factor (PyTorch's
``row_var``, ``(..., R, 1)``) in ``row_var[..., :, :1]`` and its column factor (``col_var``,
``(..., 1, C)``) in ``col_var[..., :1, :]`` (optax's factored axes, the two largest, likewise at
index 0 of the axis each one averages over); the rest of both stays 0. An unfactored parameter
keeps its whole second moment (PyTorch's ``variance``, Keras's and optax's ``v``) in
``row_var``; its ``col_var`` stays 0.

16-bit storage: ``rounding="fused"`` computes the step in float32 (PyTorch's ``eps1=None`` is
then float32's machine epsilon) and rounds each stored value once. ``rounding="per_op"`` is
refused: PyTorch's Adafactor has no 16-bit for-loop model in minnet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_choice,
    check_eps,
    check_lr,
    check_real,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Adafactor", "ADAFACTOR_VARIANTS"]

#: The values of ``variant``: PyTorch's (default), Keras 3's and optax's.
ADAFACTOR_VARIANTS = ("torch", "keras", "optax")
_TORCH, _KERAS, _OPTAX = 0, 1, 2
#: Each variant's default learning rate (optax's ``learning_rate=None`` skips the scaling: 1).
ADAFACTOR_LR = {"torch": 1e-2, "keras": 1e-3, "optax": 1.0}
#: Each variant's default ``eps = (eps1, eps2)``; ``None``: the dtype's machine epsilon.
ADAFACTOR_EPS = {"torch": (None, 1e-3), "keras": (1e-30, 1e-3), "optax": (1e-30, 1e-3)}


class AdafactorScalars(NamedTuple):
    """Per-step constants of the Adafactor update, already in the arrays' dtype."""

    w: np.floating  # PyTorch's lerp weight t**beta2_decay (1 - beta2_t)
    beta: np.floating  # Keras's and optax's decay of the moments, beta2_t
    one_minus_beta: np.floating  # 1 - beta2_t (optax's computed in float32)
    rho: np.floating  # the relative step size
    eps1: np.floating
    eps1_sq: np.floating  # eps1 * eps1 (PyTorch's floor of v_hat)
    eps2: np.floating
    d: np.floating  # the clipping threshold
    decay: np.floating  # PyTorch's 1 - lr * weight_decay
    weight_decay: np.floating  # optax's, added to the update


def check_adafactor_eps(eps: object) -> tuple[float | None, float]:
    """``(eps1, eps2)``, PyTorch's messages (``epsilon1 should be >= 0 but is: ...``; ``eps1``
    may be ``None``); a single number is ``eps1`` with ``eps2 = 1e-3`` (every library's
    default), checked as every optimizer's eps (``Invalid epsilon value: ...``)."""
    if not isinstance(eps, (tuple, list)):
        return (check_eps(eps), 1e-3)
    if len(eps) != 2:
        raise TypeError(f"eps must be a pair (eps1, eps2) or a number, got {eps!r}")
    eps1 = None if eps[0] is None else check_real("eps[0]", eps[0])
    eps2 = check_real("eps[1]", eps[1])
    if eps1 is not None and not 0.0 <= eps1:
        raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
    if not 0.0 <= eps2:
        raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
    return (eps1, eps2)


def check_beta2_decay(beta2_decay: object) -> float:
    """PyTorch's ``beta2_decay should be <= 0 but is: ...``."""
    v = check_real("beta2_decay", beta2_decay)
    if not 0.0 >= v:
        raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
    return v


def check_d(d: object) -> float:
    """PyTorch's ``Clipping threshold d should be >= 1 but is: ...``."""
    v = check_real("d", d)
    if not 1.0 <= v:
        raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
    return v


def check_min_dim(value: object) -> int | None:
    """optax's ``min_dim_size_to_factor``: ``None`` (the variant's) or an int ``>= 0``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"min_dim_size_to_factor must be an int or None, got {value!r}")
    if not 0 <= value:
        raise ValueError(f"Invalid min_dim_size_to_factor value: {value}")
    return int(value)


def factored_dims(shape: tuple[int, ...], variant: int, min_dim: int) -> tuple[int, int] | None:
    """``(d1, d0)``: the axis the column factor averages over and the one the row factor
    averages over, or ``None`` (unfactored). PyTorch and Keras: the last two axes of any
    parameter with at least 2 dimensions. optax (``_factored_dims``): the second largest and the
    largest axis by ``np.argsort(shape)``, if the second largest is at least ``min_dim``."""
    if len(shape) < 2:
        return None
    if variant != _OPTAX:
        return len(shape) - 2, len(shape) - 1
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim:
        return None
    return int(order[-2]), int(order[-1])


def _at0(a: np.ndarray, axis: int) -> np.ndarray:
    """The view of ``a`` at index 0 of ``axis``, that axis kept with length 1."""
    return a[(slice(None),) * axis + (slice(0, 1),)]


def _sumsq(x: np.ndarray, tmp: np.ndarray | None = None) -> float:
    """``sum(x**2)`` by NumPy's pairwise summation in ``x``'s dtype (``tmp`` holds the squares;
    a BLAS dot product in float32 drifts by ~1e-6 over a million terms)."""
    return float(np.multiply(x, x, out=tmp).sum())


def _fmax(a: float, x: float) -> float:
    """``jnp.maximum(a, x)`` of two floats: NaN if ``x`` is NaN (Keras and optax), where
    PyTorch's Python ``max(a, x)`` gives ``a``."""
    return x if (x != x or x > a) else a


def _lerp(a: np.ndarray, end: np.ndarray, w: Any, one_minus_w: Any) -> None:
    """PyTorch's ``a.lerp_(end, w)`` in place: ``a + w * (end - a)`` for ``w < 0.5``, else
    ``end - (end - a) * (1 - w)``."""
    if w < 0.5:
        a += w * (end - a)
    else:
        a[...] = end - (end - a) * one_minus_w


def update(p, g, state, s, o, work, track) -> int:  # type: ignore[no-untyped-def]
    """One parameter, shaped (:mod:`minnet.optim._shaped`'s contract), in place: ``o =
    (variant, min_dim_size_to_factor)``. Returns the eps-dominated coordinates (with
    ``track``): PyTorch's where ``v_hat <= eps1**2`` (the floor holds), Keras's and optax's
    where ``g**2 <= eps1`` (the addend is at least what it is added to)."""
    variant, min_dim = o
    row_var, col_var = state
    n = p.size
    dims = factored_dims(p.shape, variant, min_dim)
    dominated = 0
    p_rms = math.sqrt(_sumsq(p, work) / n)  # the parameter before the step
    g2 = np.multiply(g, g, out=work)
    if variant != _TORCH:
        g2 += s.eps1  # Keras's and optax's eps1: added to g**2
        if track:
            dominated = int(np.count_nonzero(g * g <= s.eps1))
    if dims is not None:
        d1, d0 = dims
        r, c = _at0(row_var, d0), _at0(col_var, d1)
        row_mean = g2.mean(axis=d0, keepdims=True)
        col_mean = g2.mean(axis=d1, keepdims=True)
        if variant == _TORCH:
            _lerp(r, row_mean, s.w, s.one_minus_beta)
            _lerp(c, col_mean, s.w, s.one_minus_beta)
            r_mean = np.maximum(r.mean(axis=d1, keepdims=True), s.eps1)
            v = np.multiply(r, c, out=work)
            v /= r_mean
        else:
            r *= s.beta
            r += s.one_minus_beta * row_mean
            c *= s.beta
            c += s.one_minus_beta * col_mean
            if variant == _KERAS:
                v = np.multiply(r / r.mean(axis=d1, keepdims=True), c, out=work)
            else:
                row_factor = (r / r.mean(axis=d1, keepdims=True)) ** -0.5
                u = np.multiply(g, row_factor, out=work)
                u *= c**-0.5
    else:
        v = row_var
        if variant == _TORCH:
            _lerp(v, g2, s.w, s.one_minus_beta)
        else:
            v *= s.beta
            v += s.one_minus_beta * g2
    if variant == _TORCH:
        if track:
            dominated = int(np.count_nonzero(v <= s.eps1_sq))
        u = np.maximum(v, s.eps1_sq, out=work)
        np.sqrt(u, out=u)
        np.divide(g, u, out=u)  # g * rsqrt(max(v_hat, eps1**2))
    elif variant == _KERAS:
        u = np.sqrt(v, out=work)
        np.divide(g, u, out=u)
    elif dims is None:
        u = np.power(v, -0.5, out=work)
        u *= g
    u_rms = math.sqrt(_sumsq(u) / n)
    d = float(s.d)
    if variant == _TORCH:
        alpha = max(float(s.eps2), p_rms) * float(s.rho)
        denom = max(1.0, u_rms / d)
        if s.decay != 1:
            p *= s.decay
        u *= -alpha / denom
        p += u
    elif variant == _KERAS:
        alpha = _fmax(float(s.eps2), p_rms) * float(s.rho)
        u /= _fmax(1.0, u_rms / d)
        u *= alpha
        p -= u
    else:
        u /= _fmax(1.0, u_rms / d)
        u *= s.rho  # scale_by_learning_rate
        u *= float(s.eps2) if p_rms <= float(s.eps2) else p_rms  # scale_by_param_block_rms
        if s.weight_decay != 0:
            u += s.weight_decay * p
        p -= u
    return dominated


def adafactor_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: AdafactorScalars, o: tuple,
    bounds: Any = None, shapes: Any = None,
) -> None:  # fmt: skip
    """The same update, in place over flat arrays, written from each library's formula
    without the update's buffer reuse: tensor ``j`` is ``[bounds[j], bounds[j + 1])`` with
    shape ``shapes[j]`` (``None``: one 1-D tensor)."""
    variant, min_dim = o
    edges = [0, param.size] if bounds is None else [int(b) for b in bounds]
    shapes = [(hi - lo,) for lo, hi in zip(edges[:-1], edges[1:])] if shapes is None else shapes
    for (lo, hi), shape in zip(zip(edges[:-1], edges[1:]), shapes):
        p = param[lo:hi].reshape(shape)
        g = grad[lo:hi].reshape(shape)
        rv = state[0][lo:hi].reshape(shape)
        cv = state[1][lo:hi].reshape(shape)
        with np.errstate(all="ignore"):
            _reference_one(p, g, rv, cv, s, variant, min_dim)


def _reference_one(p, g, rv, cv, s, variant, min_dim) -> None:  # type: ignore[no-untyped-def]
    dims = factored_dims(p.shape, variant, min_dim)
    lr_w, beta, omb = float(s.w), float(s.beta), float(s.one_minus_beta)
    eps1, eps2, d, rho = float(s.eps1), float(s.eps2), float(s.d), float(s.rho)
    if variant == _TORCH:
        alpha = max(eps2, float(np.sqrt(np.mean(p * p)))) * rho  # ||w|| / sqrt(n)
        p *= float(s.decay)
        if dims is not None:
            d1, d0 = dims
            r, c = _at0(rv, d0), _at0(cv, d1)
            r[...] = _lerp_ref(r, np.mean(g * g, axis=d0, keepdims=True), lr_w)
            c[...] = _lerp_ref(c, np.mean(g * g, axis=d1, keepdims=True), lr_w)
            v_hat = (r * c) / np.maximum(np.mean(r, axis=d1, keepdims=True), eps1)
        else:
            rv[...] = _lerp_ref(rv, g * g, lr_w)
            v_hat = rv.copy()
        u = g / np.sqrt(np.maximum(v_hat, eps1 * eps1))
        denom = max(1.0, float(np.sqrt(np.mean(u * u))) / d)  # ||u|| / (sqrt(n) * d)
        p -= alpha / denom * u
        return
    reg = g * g + eps1
    if dims is not None:
        d1, d0 = dims
        r, c = _at0(rv, d0), _at0(cv, d1)
        r[...] = beta * r + omb * np.mean(reg, axis=d0, keepdims=True)
        c[...] = beta * c + omb * np.mean(reg, axis=d1, keepdims=True)
        if variant == _KERAS:
            u = g / np.sqrt(r / np.mean(r, axis=d1, keepdims=True) * c)
        else:
            u = g * (r / np.mean(r, axis=d1, keepdims=True)) ** -0.5 * c**-0.5
    else:
        rv[...] = beta * rv + omb * reg
        u = g / np.sqrt(rv) if variant == _KERAS else g * rv**-0.5
    p_rms = np.sqrt(np.mean(p * p))
    u = u / np.maximum(1.0, np.sqrt(np.mean(u * u)) / d)
    if variant == _KERAS:
        p -= np.maximum(eps2, p_rms) * rho * u
    else:
        u = u * rho * np.where(p_rms <= eps2, eps2, p_rms) + float(s.weight_decay) * p
        p -= u


def _lerp_ref(a: np.ndarray, end: np.ndarray, w: float) -> np.ndarray:
    return a + w * (end - a) if w < 0.5 else end - (end - a) * (1.0 - w)


class Adafactor(Optimizer):
    r"""Adafactor with PyTorch's (``variant="torch"``, default), Keras 3's (``"keras"``) or
    optax's (``"optax"``) exact semantics: a factored second moment for every parameter with at
    least two dimensions (optax: whose two largest dimensions are at least
    ``min_dim_size_to_factor``), a plain one for the others.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``n`` a parameter's number
    of elements, ``R``/``C`` the row and column factors (means over the last axis and over the
    one before it; optax: over its two largest axes), ``rms(x) = sqrt(mean(x**2))``, every
    reduction over one parameter, and ``(eps1, eps2) = eps``:

    .. code-block:: text

        variant="torch"   (torch.optim.Adafactor, torch/optim/_adafactor.py, PyTorch 2.13)
            rho   = min(lr, 1 / sqrt(t))
            alpha = max(eps2, ||w|| / sqrt(n)) * rho              (w before the decay)
            w     = w * (1 - lr * weight_decay)                   (if weight_decay != 0)
            factored:   R = R.lerp(mean(g**2, -1), t**beta2_decay)
                        C = C.lerp(mean(g**2, -2), t**beta2_decay)
                        v_hat = (R @ C) / max(mean(R, -2), eps1)
            otherwise:  v = v.lerp(g**2, t**beta2_decay);  v_hat = v
            u     = g * rsqrt(max(v_hat, eps1**2))                = g / max(sqrt(v_hat), eps1)
            w     = w - alpha / max(1, ||u|| / (sqrt(n) * d)) * u

        variant="keras"   (keras.optimizers.Adafactor, keras/src/optimizers/adafactor.py)
            rho   = min(lr, 1 / sqrt(t));  alpha = max(eps2, rms(w)) * rho
            G     = g**2 + eps1;           beta = 1 - t**beta2_decay
            factored:   R = beta * R + (1 - beta) * mean(G, -1)
                        C = beta * C + (1 - beta) * mean(G, -2)
                        v = (R / mean(R over the rows)) * C
            otherwise:  v = beta * v + (1 - beta) * G
            u     = g / sqrt(v)
            w     = w - alpha * (u / max(1, rms(u) / d))

        variant="optax"   (optax.adafactor, optax 0.2.8: chain(scale_by_factored_rms,
                           clip_by_block_rms(d), scale_by_learning_rate(lr, flip_sign=False),
                           scale_by_param_block_rms(eps2), add_decayed_weights, scale(-1)))
            G     = |g|**2 + eps1;   beta = 1 - t**beta2_decay  (in float32, as optax's
                                                                 _decay_rate_pow)
            factored:   R = beta * R + (1 - beta) * mean(G, d0)     (d0 the largest axis)
                        C = beta * C + (1 - beta) * mean(G, d1)     (d1 the second largest)
                        u = g * (R / mean(R over d1))**-0.5 * C**-0.5
            otherwise:  v = beta * v + (1 - beta) * G;   u = g * v**-0.5
            u     = u / max(1, rms(u) / d) * lr
            u     = u * (eps2 if rms(w) <= eps2 else rms(w)) + weight_decay * w
            w     = w - u

    **The two epsilons.** ``eps1`` is the one of the division by the root of the second
    moment, and sits differently in each library: PyTorch uses it as a **floor**, ``max(v_hat,
    eps1**2)`` (``max(sqrt(v_hat), eps1)``) and ``max(mean(R), eps1)``, with ``eps1=None`` the
    parameter dtype's machine epsilon (2.2e-16 for float64, 1.2e-7 for float32); Keras
    (``epsilon_1=1e-30``) and optax (``eps=1e-30``) **add** it to ``g**2`` before any average,
    so it is inside every factor and dominates where ``g**2 <= eps1``. ``eps2`` (all three:
    1e-3; Keras's ``epsilon_2``, optax's ``min_scale`` of ``scale_by_param_block_rms``) is a
    floor on the parameter's RMS in the step size, so that a zero-initialised parameter moves.
    ``eps=0`` (``eps1 = 0``) divides 0 by 0 where a gradient has been 0 so far.

    Defaults follow the variant: PyTorch's ``Adafactor(lr=1e-2, beta2_decay=-0.8, eps=(None,
    1e-3), d=1.0, weight_decay=0.0, foreach=None, maximize=False)``; Keras's
    ``Adafactor(learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3,
    clip_threshold=1.0, relative_step=True)`` (``relative_step`` takes ``min(lr, 1/sqrt(t))``,
    which ``rho`` takes again, so a constant lr gives the same step either way: not modelled);
    optax's ``adafactor(learning_rate=None, min_dim_size_to_factor=128, decay_rate=0.8,
    decay_offset=0, multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None,
    weight_decay_rate=None, eps=1e-30, factored=True)`` (``learning_rate=None`` is ``lr=1``;
    ``decay_rate`` is ``-beta2_decay``; ``momentum``, ``decay_offset``, ``factored=False`` and
    ``multiply_by_parameter_scale=False`` are not offered; ``clipping_threshold=None`` is
    ``d=inf``). ``lr=None`` and ``eps=None`` take the variant's. ``weight_decay`` is PyTorch's
    decoupled one (``w *= 1 - lr * weight_decay``) or optax's ``weight_decay_rate`` (added to
    the update, not scaled by lr); Keras's Adafactor has none of its own (``variant="keras"``
    refuses it).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``: the cap of the relative step size (PyTorch, Keras) or
            optax's scale. Default ``None``: ``1e-2`` (torch), ``1e-3`` (keras), ``1`` (optax).
        beta2_decay: the decay exponent, ``<= 0``: ``beta2_t = 1 - t**beta2_decay``. Default
            ``-0.8``.
        eps: ``(eps1, eps2)`` (above; ``eps1`` may be ``None``), or one number for ``eps1``
            with ``eps2 = 1e-3``. Default ``None``: the variant's.
        d: the clipping threshold of the update's RMS, ``>= 1``. Default ``1.0``.
        weight_decay: ``>= 0``, PyTorch's or optax's (above). Default ``0``.
        maximize: ascend instead (PyTorch's). Default ``False``.
        variant: ``"torch"`` (default), ``"keras"`` or ``"optax"``.
        min_dim_size_to_factor: optax's: factor only if the two largest dimensions are at least
            this long. Default ``None``: 128 with ``variant="optax"`` (required ``None``
            otherwise).
        foreach: PyTorch's implementation switch, accepted and ignored.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default); ``"per_op"`` with 16-bit buffers raises ``ValueError``.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's messages (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float | None = None,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] | float | None = None,
        d: float = 1.0,
        weight_decay: float = 0.0,
        maximize: bool = False,
        variant: str = "torch",
        min_dim_size_to_factor: int | None = None,
        **options: Unpack[TorchOptions],
    ) -> None:
        known = isinstance(variant, str) and variant in ADAFACTOR_VARIANTS
        if lr is None:
            lr = ADAFACTOR_LR[variant] if known else 1e-2
        if eps is None:
            eps = ADAFACTOR_EPS[variant] if known else (None, 1e-3)
        if min_dim_size_to_factor is None and variant == "optax":
            min_dim_size_to_factor = 128
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d,
                        weight_decay=weight_decay, maximize=maximize, variant=variant,
                        min_dim_size_to_factor=min_dim_size_to_factor)  # fmt: skip
        super().__init__(params, defaults, **options)

    shaped = staticmethod(update)
    reference = staticmethod(adafactor_reference)
    checks = {"lr": check_lr, "beta2_decay": check_beta2_decay, "eps": check_adafactor_eps,
              "d": check_d, "weight_decay": check_weight_decay,
              "variant": partial(check_choice, "variant", choices=ADAFACTOR_VARIANTS),
              "min_dim_size_to_factor": check_min_dim}  # fmt: skip
    _load_optional = ("variant", "min_dim_size_to_factor")

    def _check_group(self, hp: Mapping[str, Any]) -> None:
        if hp["variant"] == "keras" and hp["weight_decay"] != 0:
            raise ValueError(
                f"Adafactor: weight_decay={hp['weight_decay']} is PyTorch's or optax's; Keras's "
                "Adafactor has no weight decay of its own. Use variant='torch' or 'optax', or "
                "weight_decay=0"
            )
        if hp["variant"] != "optax" and hp["min_dim_size_to_factor"] is not None:
            raise ValueError(
                "Adafactor: min_dim_size_to_factor is optax's (PyTorch and Keras factor every "
                "parameter with 2 or more dimensions); use variant='optax', or leave it None"
            )

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"row_var": 0.0, "col_var": 0.0}

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        variant = ADAFACTOR_VARIANTS.index(group["variant"])
        return (variant, group["min_dim_size_to_factor"] or 0)

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> AdafactorScalars:
        t = float(step)
        lr, decay = group["lr"], group["beta2_decay"]
        eps1, eps2 = group["eps"]
        if eps1 is None:  # PyTorch: the dtype's machine epsilon (the compute dtype's here)
            eps1 = float(np.finfo(dtype).eps)
        variant = group["variant"]
        w = t**decay
        if variant == "optax":  # _decay_rate_pow: float32 arithmetic
            beta32 = np.float32(1.0) - np.float32(t) ** np.float32(decay)
            beta, one_minus_beta = float(beta32), float(np.float32(1.0) - beta32)
            rho = lr
        else:
            beta = 1.0 - w
            one_minus_beta = 1.0 - beta if variant == "keras" else 1.0 - w
            rho = min(lr, 1.0 / math.sqrt(t))
        return cast_scalars(AdafactorScalars, dtype, w, beta, one_minus_beta, rho, eps1,
                            eps1 * eps1, eps2, group["d"], 1.0 - lr * group["weight_decay"],
                            group["weight_decay"])  # fmt: skip

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        return (
            "Adafactor: rounding='per_op' rounds every op in the order of PyTorch's for-loop "
            "implementation, which minnet does not model for Adafactor; use rounding='fused' "
            "(per_op exists for the optimizers PyTorch has with an element rule)"
        )

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """PyTorch: ``"v_hat (eps1**2 a floor)"``; Keras and optax: ``"g**2"`` (eps1 is
        added to the squared gradient)."""
        if options.get("variant", "torch") == "torch":
            return "v_hat (eps1**2 a floor)"
        return "g**2"

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``1 / max(sqrt(v_hat), eps1)`` (PyTorch) or ``1 / sqrt(v_hat)`` (Keras, optax; eps1
        is inside ``v_hat``) of the latest step, float64, for one parameter (shaped)."""
        variant, min_dim = self._options(group)
        rv = state["row_var"].astype(np.float64)
        cv = state["col_var"].astype(np.float64)
        eps1 = group["eps"][0]
        if eps1 is None:
            eps1 = float(np.finfo(state["row_var"].dtype).eps)
        dims = factored_dims(rv.shape, variant, min_dim)
        with np.errstate(all="ignore"):
            if dims is None:
                v_hat = rv
            else:
                d1, d0 = dims
                r, c = _at0(rv, d0), _at0(cv, d1)
                mean = np.mean(r, axis=d1, keepdims=True)
                if variant == _TORCH:
                    mean = np.maximum(mean, eps1)
                v_hat = r * c / mean
            if variant == _TORCH:
                return 1.0 / np.maximum(np.sqrt(v_hat), eps1)
            return 1.0 / np.sqrt(v_hat)

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        """eps1 = 0 where a gradient has been 0 so far: ``0 / sqrt(0)`` = NaN."""
        if group["eps"][0] == 0 and (grad == 0).any():
            return (
                f"eps=0 (eps1=0) and some coordinates of {name} have a zero gradient where the "
                "second moment is 0, so their update is 0/0 = NaN; use eps1 > 0"
            )
        return None

"""The Adam/AMSGrad update: a fused Numba kernel and a plain-NumPy reference of the same math.

Both work in place on flat 1-D arrays that hold every parameter of one dtype (see
``minnet.optim.Adam``). Notation, tutorial name first and PyTorch's second:

    V_dw = exp_avg        first moment, EMA of gradients
    S_dw = exp_avg_sq     second moment, EMA of squared gradients
    S_max = max_exp_avg_sq  AMSGrad's running maximum

One step ``t`` (counting from 1), in PyTorch's order of operations so that float64 results agree
with ``torch.optim.Adam`` to round-off (``bc1 = 1 - beta1**t``, ``bc2 = 1 - beta2**t``):

    g      = grad + weight_decay * param                         (only if weight_decay != 0)
    V_dw   = lerp(V_dw, g, 1 - beta1)                            = V_dw + (1 - beta1) * (g - V_dw)
    S_dw   = S_dw * beta2 + (1 - beta2) * g * g

The AMSGrad max (``amsgrad_max``) and the second-moment estimate ``S_hat`` it feeds:

    no AMSGrad                           S_hat = S_dw / bc2
    "raw"       S_max = max(S_max, S_dw)         S_hat = S_max / bc2     (PyTorch, Keras)
    "corrected" S_max = max(S_max, S_dw / bc2)   S_hat = S_max           (optax)
    "paper"     S_max = max(S_max, S_dw)         S_hat = S_max, and no bias correction of
                                                 V_dw either (Reddi et al. 2018)

and where epsilon goes (``eps_mode``), with ``V_hat = V_dw / bc1`` (``V_dw`` for "paper"):

    "outside"  param += -lr/bc1 * (V_dw / (sqrt(S_hat) + eps))   PyTorch's order: the root is
               computed as sqrt(S_max or S_dw) / sqrt(bc2)           (PyTorch, optax eps, tinygrad)
    "hat"      param += (V_dw * -lr*sqrt(bc2)/bc1) / (sqrt(S_hat*bc2) + eps)
               eps is added to the uncorrected root                  (TensorFlow/Keras epsilon-hat)
    "inside"   param += -lr/bc1 * (V_dw / sqrt(S_hat + eps))         (optax eps_root with eps=0)
    "atan2"    param += -1.27*lr * atan2(V_hat, sqrt(S_hat))         (Adam-atan2; no epsilon)

NaN propagates through the max as in ``torch.maximum``. The per-step constants are computed once
in float64 by :func:`adam_scalars` and cast to the arrays' dtype, so all per-element arithmetic
stays in one dtype (the loop vectorizes) and float32 follows PyTorch's float32 arithmetic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np

__all__ = [
    "EPS_MODES",
    "AMSGRAD_MAX_MODES",
    "AdamScalars",
    "adam_scalars",
    "adam_step_numba",
    "adam_step_reference",
    "ams_kind",
    "kernel_for",
]

EPS_MODES = ("outside", "hat", "inside", "atan2")
AMSGRAD_MAX_MODES = ("raw", "corrected", "paper")
ATAN2_SCALE = 1.27  # Adam-atan2's "a": makes its updates about Adam's size (Everett et al. 2024)


class AdamScalars(NamedTuple):
    """Per-step constants of the update, already in the arrays' dtype (see :func:`adam_scalars`)."""

    lerp_w: np.floating  # 1 - beta1
    one_minus_lerp_w: np.floating  # 1 - lerp_w, for PyTorch's lerp when lerp_w >= 0.5
    beta2: np.floating
    one_minus_beta2: np.floating
    neg_step: np.floating  # -lr/bc1; "hat": -lr*sqrt(bc2)/bc1; "atan2": -1.27*lr
    max_div: np.floating  # S_max candidate = S_dw / max_div: bc2 for "corrected", else 1
    root_div: np.floating  # root = sqrt(S) / root_div ("outside", "hat")
    v_div: np.floating  # S_hat = S / v_div ("inside", "atan2")
    m_div: np.floating  # V_hat = V_dw / m_div ("atan2")
    eps: np.floating
    weight_decay: np.floating


def adam_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
    eps_mode: str = "outside",
    amsgrad: bool = False,
    amsgrad_max: str = "raw",
) -> AdamScalars:
    """Compute step ``step``'s constants in float64 (as PyTorch does in Python) and cast them.

    The table of formulas is in the module docstring; this folds every bias correction into a
    handful of scalars so that the kernel's loop is the same for every variant.
    """
    paper = amsgrad and amsgrad_max == "paper"
    corrected = amsgrad and amsgrad_max == "corrected"
    bc1 = 1.0 if paper else 1.0 - beta1**step
    bc2 = 1.0 if paper else 1.0 - beta2**step
    bc2_sqrt = bc2**0.5
    if eps_mode == "hat":
        neg_step = -(lr * bc2_sqrt / bc1)
    elif eps_mode == "atan2":
        neg_step = -ATAN2_SCALE * lr
    else:
        neg_step = -(lr / bc1)
    # S_max already holds corrected values under "corrected": dividing again would double-correct.
    root_div = 1.0 / bc2_sqrt if (corrected and eps_mode == "hat") else 1.0
    if eps_mode == "outside" and not corrected:
        root_div = bc2_sqrt
    v_div = 1.0 if corrected else bc2
    # One cast of all the constants (a step's Python overhead matters at ~30 us per step). An lr
    # too large for float32 becomes inf, as it would in PyTorch's float32 arithmetic.
    with np.errstate(over="ignore"):
        c = np.array(
            [1.0 - beta1, beta2, 1.0 - beta2, neg_step, bc2 if corrected else 1.0, root_div,
             v_div, bc1, eps, weight_decay],
            dtype,
        ).tolist()  # fmt: skip
    t = dtype.type
    lerp_w = t(c[0])
    return AdamScalars(
        lerp_w, t(1) - lerp_w, t(c[1]), t(c[2]), t(c[3]), t(c[4]), t(c[5]), t(c[6]), t(c[7]),
        t(c[8]), t(c[9]),
    )  # fmt: skip


OUTSIDE, HAT, INSIDE, ATAN2 = 0, 1, 2, 3  # indices into EPS_MODES
NO_MAX, MAX_RAW, MAX_CORRECTED = 0, 1, 2  # the kernel's ``ams``: "paper" is MAX_RAW (see scalars)


def ams_kind(amsgrad: bool, amsgrad_max: str) -> int:
    """The kernel's ``ams`` argument for an ``amsgrad`` flag and an ``amsgrad_max`` mode."""
    if not amsgrad:
        return NO_MAX
    return MAX_CORRECTED if amsgrad_max == "corrected" else MAX_RAW


@numba.njit(inline="always", error_model="numpy")
def _element(p, g, m, v, vmax, s, mode, ams):  # pragma: no cover - compiled
    """One coordinate's update; returns (new param, V_dw, S_dw, S_max, delta, eps-dominated)."""
    lerp_w, one_minus_lerp_w, beta2, one_minus_beta2, neg_step = s[0], s[1], s[2], s[3], s[4]
    max_div, root_div, v_div, m_div, eps, weight_decay = s[5], s[6], s[7], s[8], s[9], s[10]
    if weight_decay != 0:
        g = g + weight_decay * p
    # PyTorch's lerp switches formula at weight 0.5 to stay exact at both ends.
    if lerp_w < 0.5:
        m = m + lerp_w * (g - m)
    else:
        m = g - (g - m) * one_minus_lerp_w
    v = v * beta2
    v = v + one_minus_beta2 * g * g
    src = v
    if ams != NO_MAX:
        cand = v / max_div if ams == MAX_CORRECTED else v
        # maximum() with NaN propagation, like torch.maximum / np.maximum
        if not (vmax >= cand):
            if vmax == vmax:
                vmax = cand
        src = vmax
    if mode == OUTSIDE:
        root = np.sqrt(src) / root_div
        delta = neg_step * (m / (root + eps))
        dominated = eps >= root
    elif mode == HAT:
        root = np.sqrt(src) / root_div
        delta = (m * neg_step) / (root + eps)
        dominated = eps >= root
    elif mode == INSIDE:
        v_hat = src / v_div
        delta = neg_step * (m / np.sqrt(v_hat + eps))
        dominated = eps >= v_hat
    else:
        delta = neg_step * np.arctan2(m / m_div, np.sqrt(src / v_div))
        dominated = False
    return p + delta, m, v, vmax, delta, dominated


@numba.njit(error_model="numpy", fastmath={"reassoc"})
def _sum_squares(x, n):  # pragma: no cover - compiled
    """``sum(float64(x[:n])**2)``. ``reassoc`` lets this reduction alone use SIMD lanes; it is a
    separate function so that the flag never touches the update arithmetic."""
    total = 0.0
    for i in range(n):
        d = np.float64(x[i])
        total += d * d
    return total


@numba.njit(inline="always", error_model="numpy")
def _loop(
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch, s, mode, ams, track, write
):  # pragma: no cover - compiled
    """The pass over all coordinates; every flag is a compile-time constant where it is inlined.

    Tracked, the loop also counts (integer reductions vectorize) and keeps each update ``delta``
    in ``scratch``; a second, short pass sums their squares.
    """
    n_dominated = 0
    n_nonfinite = 0
    for i in range(param.shape[0]):
        vmax_i = max_exp_avg_sq[i] if ams != NO_MAX else exp_avg_sq[i]
        p, m, v, vmax, delta, dominated = _element(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], vmax_i, s, mode, ams
        )
        if write:
            param[i] = p
            exp_avg[i] = m
            exp_avg_sq[i] = v
            if ams != NO_MAX:
                max_exp_avg_sq[i] = vmax
        if track:
            n_dominated += dominated
            n_nonfinite += not np.isfinite(p)
            scratch[i] = delta
    if not track:
        return 0, 0, 0.0
    return n_dominated, n_nonfinite, _sum_squares(scratch, param.shape[0])


@functools.cache
def kernel_for(mode: int, ams: int, track: bool, write: bool) -> Callable[..., tuple]:
    """The compiled kernel specialised to one variant (built on first use, cached on disk).

    The flags are closure constants, so each variant's loop is branch-free and the plain update
    (``track=False, write=True``) vectorizes; Numba's disk cache keys on the closure values.
    """

    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def kernel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch, s):  # pragma: no cover
        return _loop(
            param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch, s, mode, ams, track, write
        )

    return kernel


def adam_step_numba(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray,
    scratch: np.ndarray,
    scalars: AdamScalars,
    mode: int,
    ams: int,
    track: bool,
    write: bool,
) -> tuple[int, int, float]:
    """One fused in-place pass over flat arrays (formulas in the module docstring).

    ``scalars`` comes from :func:`adam_scalars`; ``mode`` indexes :data:`EPS_MODES`; ``ams`` is
    :func:`ams_kind` (0 no max, 1 max of raw ``S_dw``, 2 max of corrected ``S_dw / bc2``).
    ``max_exp_avg_sq`` is only touched when ``ams`` is not 0 (pass an empty array otherwise).
    ``track`` counts, in the same pass, the coordinates whose eps term dominates, the parameters
    that end non-finite, and the sum of squared updates (accumulated in float64; ``scratch``, an
    array like ``param``, holds the updates for that sum); without it the counts are 0 and
    ``scratch`` may be empty. ``write=False`` computes the counts without storing anything (a dry
    run, used by ``check_finite``). The kernel uses ``error_model='numpy'``: 0/0 gives NaN as in
    PyTorch, never an exception. Returns ``(n_dominated, n_nonfinite, sum of squared updates)``.
    The loop is serial (one thread, SIMD): a ``parallel=True`` variant cut the update alone by a
    third on 2 cores but made a training step ~15x slower (its threads fight OpenBLAS's).
    """
    kernel = kernel_for(mode, ams, bool(track), bool(write))
    return kernel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch, scalars)


def adam_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray,
    scalars: AdamScalars,
    mode: int,
    ams: int,
) -> None:
    """The same update as :func:`adam_step_numba`, written with whole-array NumPy operations.

    Slower (it allocates temporaries) but easy to read; tests hold the kernel to it.
    """
    s = scalars
    g = grad
    if s.weight_decay != 0:
        g = g + s.weight_decay * param
    with np.errstate(all="ignore"):
        if s.lerp_w < 0.5:
            exp_avg += s.lerp_w * (g - exp_avg)
        else:
            exp_avg[...] = g - (g - exp_avg) * s.one_minus_lerp_w
        exp_avg_sq *= s.beta2
        exp_avg_sq += s.one_minus_beta2 * g * g
        src = exp_avg_sq
        if ams != NO_MAX:
            cand = exp_avg_sq / s.max_div if ams == MAX_CORRECTED else exp_avg_sq
            np.maximum(max_exp_avg_sq, cand, out=max_exp_avg_sq)
            src = max_exp_avg_sq
        if mode == OUTSIDE:
            delta = s.neg_step * (exp_avg / (np.sqrt(src) / s.root_div + s.eps))
        elif mode == HAT:
            delta = (exp_avg * s.neg_step) / (np.sqrt(src) / s.root_div + s.eps)
        elif mode == INSIDE:
            delta = s.neg_step * (exp_avg / np.sqrt(src / s.v_div + s.eps))
        else:
            delta = s.neg_step * np.arctan2(exp_avg / s.m_div, np.sqrt(src / s.v_div))
        param += delta

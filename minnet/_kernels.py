"""The Adam/AMSGrad update: a fused Numba kernel and a plain-NumPy reference of the same math.

Both work in place on flat 1-D arrays that hold every parameter of one dtype (see
``minnet.optim.Adam``). Notation, tutorial name first and PyTorch's second:

    V_dw = exp_avg        first moment, EMA of gradients
    S_dw = exp_avg_sq     second moment, EMA of squared gradients
    max_exp_avg_sq        AMSGrad's running maximum of the *raw* S_dw

One step ``t`` (counting from 1) of PyTorch's ``torch.optim.Adam`` (single-tensor CPU path), in its
order of operations so that float64 results agree to round-off:

    g      = grad + weight_decay * param                         (only if weight_decay != 0)
    V_dw   = lerp(V_dw, g, 1 - beta1)                            = V_dw + (1 - beta1) * (g - V_dw)
    S_dw   = S_dw * beta2 + (1 - beta2) * g * g
    S_max  = maximum(S_max, S_dw)                                (AMSGrad only; NaN propagates)
    denom  = sqrt(S_max or S_dw) / sqrt(1 - beta2**t) + eps      (eps *outside* the root,
                                                                  *after* bias correction)
    param  = param - lr / (1 - beta1**t) * (V_dw / denom)

The bias corrections are computed once per step in float64 by the caller and handed to the kernel
already cast to the arrays' dtype, so all per-element arithmetic stays in one dtype (the loop
vectorizes) and float32 follows PyTorch's float32 arithmetic.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

__all__ = ["AdamScalars", "adam_scalars", "adam_step_numba", "adam_step_reference"]


class AdamScalars(NamedTuple):
    """Per-step constants of the update, already in the arrays' dtype.

    ``lerp_w`` is ``1 - beta1`` and ``one_minus_lerp_w`` is ``1 - lerp_w`` in the arrays' dtype;
    ``neg_step_size`` is ``-lr / (1 - beta1**t)``; ``bc2_sqrt`` is ``sqrt(1 - beta2**t)``.
    """

    lerp_w: np.floating
    one_minus_lerp_w: np.floating
    beta2: np.floating
    one_minus_beta2: np.floating
    neg_step_size: np.floating
    bc2_sqrt: np.floating
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
) -> AdamScalars:
    """Compute step ``step``'s constants in float64 (as PyTorch does in Python) and cast them."""
    t = dtype.type
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    step_size = lr / bias_correction1
    return AdamScalars(
        lerp_w=t(1.0 - beta1),
        one_minus_lerp_w=t(1) - t(1.0 - beta1),
        beta2=t(beta2),
        one_minus_beta2=t(1.0 - beta2),
        neg_step_size=t(-step_size),
        bc2_sqrt=t(bias_correction2**0.5),
        eps=t(eps),
        weight_decay=t(weight_decay),
    )


@numba.njit(cache=True, error_model="numpy", nogil=True)
def adam_step_numba(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray,
    lerp_w: np.floating,
    one_minus_lerp_w: np.floating,
    beta2: np.floating,
    one_minus_beta2: np.floating,
    neg_step_size: np.floating,
    bc2_sqrt: np.floating,
    eps: np.floating,
    weight_decay: np.floating,
    amsgrad: bool,
) -> None:  # pragma: no cover - compiled; covered through the tests' calls
    """One fused in-place Adam/AMSGrad pass over flat arrays (the formula is in the module doc).

    ``max_exp_avg_sq`` is only read or written when ``amsgrad`` is true (pass an empty array
    otherwise). ``error_model='numpy'``: 0/0 gives NaN as in PyTorch, never an exception.
    """
    n = param.shape[0]
    # PyTorch's lerp switches formula at weight 0.5 to stay exact at both ends.
    lerp_low = lerp_w < 0.5
    use_wd = weight_decay != 0
    for i in range(n):
        p = param[i]
        g = grad[i]
        if use_wd:
            g = g + weight_decay * p
        m = exp_avg[i]
        if lerp_low:
            m = m + lerp_w * (g - m)
        else:
            m = g - (g - m) * one_minus_lerp_w
        v = exp_avg_sq[i] * beta2
        v = v + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            vmax = max_exp_avg_sq[i]
            # maximum() with NaN propagation, like torch.maximum / np.maximum
            if not (vmax >= v):
                if vmax == vmax:
                    vmax = v
            max_exp_avg_sq[i] = vmax
            v = vmax
        denom = np.sqrt(v) / bc2_sqrt + eps
        param[i] = p + neg_step_size * (m / denom)


def adam_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray,
    scalars: AdamScalars,
    amsgrad: bool,
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
        if amsgrad:
            np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            v = max_exp_avg_sq
        else:
            v = exp_avg_sq
        denom = np.sqrt(v) / s.bc2_sqrt + s.eps
        param += s.neg_step_size * (exp_avg / denom)

"""Record PyTorch's float16 / bfloat16 optimizer steps bit for bit, for minnet's ``rounding``.

Run by hand in a separate environment that has the reference library (never in the project venv):

    python3 -m venv /work/refenv
    /work/refenv/bin/pip install torch==2.13.0 numpy ml_dtypes
    /work/refenv/bin/python scripts/make_lowp_fixtures.py   # writes tests/fixtures/lowp_*

tests/test_lowp_parity.py replays the files with ``minnet.optim`` (no torch needed) and
scripts/lowp_parity_report.py prints how closely minnet follows each one.

What is recorded
----------------
Adam, AdamW, RMSprop, Adagrad and SGD with momentum on one float16 or bfloat16 parameter of
``N = 128`` elements for 100 steps, with eps in {1e-8, 1e-7, 1e-4} (AdamW: 1e-8 and 1e-4, to keep
the files under 2 MB; SGD has no eps):

* ``rounding="per_op"``: ``torch.optim.X(..., foreach=False)`` (the single-tensor for-loop path,
  PyTorch's default on CPU), every op rounding its result to the storage dtype (below);
* ``rounding="fused"``: ``torch.optim.X(..., fused=True)`` where PyTorch has it on CPU (Adam,
  AdamW, Adagrad, SGD): float32 arithmetic, one rounding per stored array;
* ``state_dtype="float32"`` (float32 moments, float16 parameter) for Adam: PyTorch cannot express
  it (every state tensor has the parameter's dtype), so it is EMULATED and labelled so: a float32
  copy of the parameter is refreshed from the 16-bit one before each step, stepped by
  ``torch.optim.Adam(foreach=False)`` with float32 state, and stored back rounded to 16 bits.

The gradient of step t is not computed from the parameters: it is a fixed sequence, drawn once
in float32 and cast to the parameter dtype (so no chaotic amplification, and each replay feeds
exactly the recorded bits). Its 128 coordinates come in 16 groups of 8 (magnitudes below): exact
zeros at every step; magnitudes near the float16 underflow limits (1e-7, 3e-5, 1e-3, where
``(1 - 0.999) * g**2`` underflows in float16 storage; float16's smallest subnormal is 2**-24 ~
6e-8, its smallest normal 2**-14 ~ 6.1e-5); normal magnitudes (1e-2, 0.1, 1); and groups that are
exactly 0 on a fixed ~half of the steps. Initial parameters have magnitudes 1e-3 .. 2 (bfloat16
swallows updates below half an ulp: ``1.0 - 1e-3`` is ``1.0``).

Files
-----
``tests/fixtures/lowp_gradients.npz``: ``w0_<dtype>`` (N,) and ``grads_<dtype>`` (100, N) as
uint16 bit patterns for dtype float16 and bfloat16, and ``scale`` (N,) float32, the magnitude of
each coordinate. Its sha256 (over the keys in order, as in the test) is in every config.

``tests/fixtures/lowp_<optimizer>_<dtype>_<rounding>[_<detail>].npz``: ``config`` (JSON text:
name, optimizer (minnet.optim class name), minnet_kwargs (including ``rounding``, and
``state_dtype`` when it is not the parameter's), dtype, state_dtype, state_names (PyTorch's =
minnet's names), steps, n, gradients (file) and gradients_sha256 (absent when the fixture holds
its own ``w0``/``grads``), library, library_version, reference (the call as text), emulated
(bool), note), ``params`` (steps, n) and ``state_<name>`` (steps, n): the bit patterns after every
step (uint16 for 16-bit arrays, uint32 for float32 state).
``lowp_headline_adam_float16_{per_op,fused}.npz`` hold the three-coordinate example
(gradients 1e-3, 0, 3e-5 at every step, w0 = 0, lr=1e-3, 3 steps) with their own ``w0``/``grads``.

PyTorch 2.13's single-tensor path on a 16-bit CPU tensor ("per_op")
-------------------------------------------------------------------
Every op converts its 16-bit inputs to float32, computes in float32 and rounds the result to the
storage dtype (round to nearest even) before the next op reads it. Scalars arrive from Python as
floats (double); what happens to them depends on the op, measured on 200,000 random triples per
dtype with scripts in this file's spirit (0 mismatches for the rule stated, several % for the
alternatives):

==========================  ====================================================================
op (tensor a, b, c)         value stored (f32 = float32 arithmetic; lp(s) = s rounded to the
                            storage dtype; R = round to the storage dtype)
==========================  ====================================================================
``a.mul_(s)``               R(a * f32(s))
``a / s`` (``div``)         R(a / f32(s))
``a.sqrt()``                R(sqrt(a))                      (float32 sqrt, correctly rounded)
``a.add_(s)`` scalar        R(a + lp(s))   the SCALAR IS ROUNDED TO THE STORAGE DTYPE FIRST:
                            eps=1e-8 is 0 in float16, so ``sqrt(v).add_(eps)`` adds nothing
``a.add_(b, alpha=s)``      R(a + lp(s) * b)                (alpha rounded to storage dtype too)
``a.addcmul_(b, c, value=s)``  R(fma(f32(s) * b, c, a))     (one rounding for the last * and +)
``a.addcdiv_(b, c, value=s)``  R(a + (f32(s) * b) / c)
``a.lerp_(b, w)``, w < 0.5  R(fma(f32(w), b - a, a))        (b - a rounded to float32 first)
==========================  ====================================================================

Python floats vs tensors: with ``capturable=False`` and a float ``lr`` (as here), the step count
is a float32 tensor read back with ``.item()``; ``lr``, betas, ``bias_correction1 = 1 -
beta1**step``, ``step_size = lr / bias_correction1``, ``bias_correction2_sqrt = (1 -
beta2**step)**0.5``, ``clr = lr / (1 + (step - 1) * lr_decay)`` and ``1 - beta``/``1 - alpha`` are
Python floats computed in double and handed to the ops above as scalars. No scalar is a tensor.

The order of ops of each ``_single_tensor_*`` function (torch/optim/*.py), with the rounding
rule of the table applying to each line (``g`` = the 16-bit gradient, ``p`` the parameter):

Adam / AdamW (``_single_tensor_adam``; AdamW is Adam(decoupled_weight_decay=True))
    AdamW: p = R(p * f32(1 - lr*wd))                                  ``p.mul_(1 - lr*wd)``
    Adam wd>0: g = R(g + lp(wd) * p)                                  ``g.add(p, alpha=wd)``
    m = R(fma(f32(1-b1), g - m, m))                                   ``m.lerp_(g, 1 - b1)``
    v = R(v * f32(b2));  v = R(fma(f32(1-b2) * g, g, v))              ``v.mul_(b2).addcmul_(g, g,
                                                                        value=1 - b2)``
    d = R(sqrt(v));  d = R(d / f32(bc2_sqrt));  d = R(d + lp(eps))    ``(v.sqrt() / bc2_sqrt)
                                                                        .add_(eps)``
    p = R(p + (f32(-step_size) * m) / d)                              ``p.addcdiv_(m, d,
                                                                        value=-step_size)``
RMSprop (``_single_tensor_rmsprop``, centered=False, momentum=0)
    v = R(v * f32(alpha));  v = R(fma(f32(1-alpha) * g, g, v))
    d = R(sqrt(v));  d = R(d + lp(eps))
    p = R(p + (f32(-lr) * g) / d)
Adagrad (``_single_tensor_adagrad``)
    S = R(fma(g, g, S))                                               ``S.addcmul_(g, g, value=1)``
    d = R(sqrt(S));  d = R(d + lp(eps))                               ``S.sqrt().add_(eps)``
    p = R(p + (f32(-clr) * g) / d)
SGD with momentum (``_single_tensor_sgd``, dampening=0, nesterov=False)
    step 1: buf = g (a copy);  later: buf = R(buf * f32(momentum));  buf = R(buf + lp(1) * g)
    p = R(p + lp(-lr) * buf)                 ``p.add_(buf, alpha=-lr)``: lr ROUNDED to storage
                                             (1e-2 is 0.0099945 in float16, 0.010009765625 in
                                             bfloat16)

float16 consequences: eps=1e-8 is 0 and 1e-7 becomes the subnormal 1.19e-7 (2 * 2**-24); the
second moment ``(1-b2) * g**2`` of Adam underflows to 0 for |g| < ~5.5e-3 (first step: 1e-3 *
g**2 < 2**-25, half the smallest subnormal, so |g| < sqrt(2**-25 / 1e-3)); then ``d = 0``: a
zero-gradient coordinate gives 0/0 = NaN and any other gives +-inf, from the FIRST step on
(PyTorch's ``[-inf, nan, -inf]`` example is already so after step 1).

``fused=True`` on CPU (aten/src/ATen/native/cpu/Fused{Adam,Adagrad,SGD}Kernel.cpp)
---------------------------------------------------------------------------------
Loads the 16-bit parameter, gradient and state, converts to float32 ("opmath"), computes the whole
update in float32 and rounds once when storing each array. The scalars are computed in double
(``bias_correction1 = 1 - pow(beta1, step)``, ``step_size = lr / bias_correction1``,
``bias_correction2_sqrt = sqrt(1 - pow(beta2, step))``) and cast to float32:

Adam / AdamW (vectorised and scalar paths agree)
    AdamW: p32 = p * f32(1 - lr*wd);  Adam wd>0: g32 = g + p * f32(wd)
    m32 = fma(f32(1-b1), g - m, m);  v32 = v * f32(b2) + (f32(1-b2) * g) * g
    store m = R(m32), v = R(v32)
    d32 = sqrt(v32) / f32(bc2_sqrt) + f32(eps)          (from the float32 v32, not the stored v)
    p = R(p32 + (f32(-step_size) * m32) / d32)
    So eps keeps its float32 value and nothing NaNs; but a v that underflows in float16 STORAGE
    is stored as 0 every step, so the denominator only sees ``(1-b2) * g_t**2`` of this step:
    "fused trains" in float16, with a second moment that forgets everything.
Adagrad
    S32 = S + g*g; store R(S32); p = R(p - (f32(clr) * g) / (sqrt(S32) + f32(eps)))
    Its VECTORISED loop (whole blocks of 32 16-bit elements on AVX2) casts eps, clr and
    weight_decay to the STORAGE dtype first (``fVec(scalar_t(eps))``): eps=1e-8 is 0 there and a
    zero-gradient coordinate gives 0/0 = NaN, unlike the scalar tail loop and unlike every other
    fused kernel. The fused Adagrad fixtures are recorded through the scalar path (every
    coordinate a separate 1-element parameter), i.e. float32 eps and clr, which is what
    ``rounding="fused"`` means; the script prints how the vectorised path differs.
SGD with momentum
    step 1: buf32 = g; later buf32 = buf * f32(momentum) + g * f32(1 - dampening)
    store buf = R(buf32); p = R(p - buf32 * f32(lr))
    PyTorch 2.13's vectorised loop for 16-bit SGD never stores the parameter (and misreads a
    float16 momentum buffer): elements in whole vector blocks keep their initial value. The
    script checks this is still so and records the fused SGD fixtures through the scalar path
    (every coordinate a separate 1-element parameter), which computes the formula above.

Before writing, every fixture is checked against a NumPy + ml_dtypes transcription of the rules
above (the ``np_*`` functions): the non-finite coordinates must be the same and the script prints
the share of bit-identical elements. It also checks what the docs above claim (per-op float16
Adam at eps=1e-8 is non-finite, fused is not; the headline example) and prints a summary table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch

STEPS = 100
N = 128
GRAD_FILE = "lowp_gradients.npz"
F32 = np.float32
NP_DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# 16 groups of 8 coordinates: (magnitude, share of steps with an exact zero gradient)
GROUPS = [
    (0.0, 1.0), (1e-7, 0.0), (3e-5, 0.0), (1e-3, 0.0), (1e-2, 0.0), (1e-1, 0.0), (1.0, 0.0),
    (1e-7, 0.5), (3e-5, 0.5), (1e-3, 0.5), (1e-2, 0.5), (1.0, 0.5),
    (5e-4, 0.0), (3e-3, 0.0), (1e-5, 0.0), (2e-7, 0.2),
]  # fmt: skip
EPS_VALUES = (1e-8, 1e-7, 1e-4)
DEFAULT_EPS = {"Adam": 1e-8, "AdamW": 1e-8, "RMSprop": 1e-8, "Adagrad": 1e-10}


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def make_inputs() -> dict[str, np.ndarray]:
    """The shared initial parameters and gradient sequence, as bit patterns per dtype."""
    assert len(GROUPS) * 8 == N
    rng = np.random.default_rng(20260516)
    scale = np.repeat([m for m, _ in GROUPS], 8).astype(F32)
    p_zero = np.repeat([z for _, z in GROUPS], 8)
    sign = np.where(rng.random(N) < 0.5, -1.0, 1.0)
    # a steady part (sign per coordinate) plus noise, so that Adam's moments build up
    g = (
        scale
        * (sign * 0.7 + 0.5 * rng.standard_normal((STEPS, N)))
        * np.exp(0.2 * rng.standard_normal((STEPS, N)))
    )
    zero = rng.random((STEPS, N)) < p_zero
    g[zero] = 0.0
    w0 = np.where(rng.random(N) < 0.5, -1.0, 1.0) * 10.0 ** rng.uniform(-3, 0.3, N)
    out: dict[str, np.ndarray] = {"scale": scale}
    for name, dt in NP_DTYPES.items():
        out[f"w0_{name}"] = w0.astype(F32).astype(dt).view(np.uint16)
        out[f"grads_{name}"] = g.astype(F32).astype(dt).view(np.uint16)
    return out


def inputs_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Checksum over the arrays in sorted key order (the test recomputes it)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def bits(x: torch.Tensor) -> np.ndarray:
    """Bit patterns of a 16-bit or float32 tensor (uint16 / uint32)."""
    x = x.detach().contiguous()
    if x.dtype == torch.float32:
        return x.numpy().view(np.uint32).copy()
    return x.view(torch.int16).numpy().view(np.uint16).copy()


def from_bits(b: np.ndarray, dtype: str) -> torch.Tensor:
    """16-bit tensor of the given bit patterns."""
    return torch.from_numpy(b.astype(np.uint16).view(np.int16).copy()).view(TORCH_DTYPES[dtype])


# ---------------------------------------------------------------------------------------------
# Recording with PyTorch
# ---------------------------------------------------------------------------------------------

STATE_NAMES = {
    "Adam": ["exp_avg", "exp_avg_sq"], "AdamW": ["exp_avg", "exp_avg_sq"],
    "RMSprop": ["square_avg"], "Adagrad": ["sum"], "SGD": ["momentum_buffer"],
}  # fmt: skip


def record(fx: dict[str, Any], w0: np.ndarray, grads: np.ndarray) -> dict[str, np.ndarray]:
    """Run PyTorch as ``fx["mode"]`` says; bit patterns of params and state after every step.

    mode "per_op": one tensor, ``foreach=False``; "fused": one tensor, ``fused=True``;
    "fused_scalar": every coordinate its own 1-element parameter, ``fused=True`` (the fused
    kernel's scalar loop); "master32": the float32-state emulation of the module docstring.
    """
    cls = getattr(torch.optim, fx["optimizer"])
    kwargs = {k: v for k, v in fx["torch_kwargs"].items()}
    dtype, mode = fx["dtype"], fx["mode"]
    steps, n = grads.shape
    names = STATE_NAMES[fx["optimizer"]]
    out = {"params": []} | {f"state_{k}": [] for k in names}
    if mode == "master32":
        p16 = from_bits(w0, dtype)
        q = p16.float().clone().requires_grad_(True)
        opt = cls([q], foreach=False, **kwargs)
        for t in range(steps):
            with torch.no_grad():
                q.copy_(p16.float())
            q.grad = from_bits(grads[t], dtype).float()
            opt.step()
            p16 = q.detach().to(TORCH_DTYPES[dtype])
            out["params"].append(bits(p16))
            for k in names:
                out[f"state_{k}"].append(bits(opt.state[q][k]))
        return {k: np.stack(v) for k, v in out.items()}
    w = from_bits(w0, dtype)
    if mode == "fused_scalar":
        params = [w[i : i + 1].clone().requires_grad_(True) for i in range(n)]
    else:
        params = [w.clone().requires_grad_(True)]
    flags = {"foreach": False} if mode == "per_op" else {"fused": True}
    opt = cls(params, **flags, **kwargs)
    for t in range(steps):
        g = from_bits(grads[t], dtype)
        if len(params) == 1:
            params[0].grad = g.clone()
        else:
            for i, p in enumerate(params):
                p.grad = g[i : i + 1].clone()
        opt.step()
        out["params"].append(np.concatenate([bits(p) for p in params]))
        for k in names:
            out[f"state_{k}"].append(np.concatenate([bits(opt.state[p][k]) for p in params]))
    return {k: np.stack(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# NumPy transcriptions of the module docstring's rules (float32 arithmetic, explicit rounding)
# ---------------------------------------------------------------------------------------------


def _fma(a: Any, b: Any, c: Any) -> np.ndarray:
    """float32 ``a*b + c`` with one rounding (the product of two float32 is exact in double)."""
    a64, b64, c64 = (np.asarray(x, np.float64) for x in (a, b, c))
    return (a64 * b64 + c64).astype(F32)


class Rounder:
    """R(x): round float32 values to the storage dtype and back; lp(s) for a Python scalar."""

    def __init__(self, dtype: np.dtype | None) -> None:
        self.dtype = dtype

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x, F32)
        return x if self.dtype is None else x.astype(self.dtype).astype(F32)

    def lp(self, s: float) -> np.float32:
        return F32(s) if self.dtype is None else F32(np.asarray(s, F32).astype(self.dtype))


def np_step(name: str, rounding: str, st: dict[str, Any], p: np.ndarray, g: np.ndarray,
            R: Rounder, RS: Rounder, kw: dict[str, Any]) -> np.ndarray:  # fmt: skip
    """One step of ``name`` by the docstring's rules; ``R`` rounds parameters, ``RS`` state.

    Arrays are float32 holding storage-dtype values. Returns the new parameter; updates ``st``.
    """
    st["t"] = t = st.get("t", 0) + 1
    lr = kw["lr"]
    eps = kw.get("eps", DEFAULT_EPS.get(name, 0.0))
    if name in ("Adam", "AdamW"):
        b1, b2 = kw.get("betas", (0.9, 0.999))
        wd = kw.get("weight_decay", 1e-2 if name == "AdamW" else 0.0)
        m = st.get("exp_avg", np.zeros_like(p))
        v = st.get("exp_avg_sq", np.zeros_like(p))
        bc1 = 1 - b1**t
        step_size = lr / bc1
        bc2_sqrt = (1 - b2**t) ** 0.5
        if rounding == "per_op":
            if wd and name == "AdamW":
                p = R(p * F32(1 - lr * wd))
            elif wd:
                g = R(g + R.lp(wd) * p)
            m = RS(_fma(F32(1 - b1), g - m, m))
            v = RS(v * F32(b2))
            v = RS(_fma(F32(1 - b2) * g, g, v))
            d = RS(np.sqrt(v))
            d = RS(d / F32(bc2_sqrt))
            d = RS(d + RS.lp(eps))
            p = R(p + (F32(-step_size) * m) / d)
        else:
            if wd and name == "AdamW":
                p = p * F32(1 - lr * wd)
            elif wd:
                g = g + p * F32(wd)
            m32 = _fma(F32(1 - b1), g - m, m)
            v32 = v * F32(b2) + (F32(1 - b2) * g) * g
            m, v = RS(m32), RS(v32)
            d32 = np.sqrt(v32) / F32(bc2_sqrt) + F32(eps)
            p = R(p + (F32(-step_size) * m32) / d32)
        st["exp_avg"], st["exp_avg_sq"] = m, v
        return p
    if name == "RMSprop":
        alpha = kw.get("alpha", 0.99)
        v = st.get("square_avg", np.zeros_like(p))
        assert rounding == "per_op"
        v = RS(v * F32(alpha))
        v = RS(_fma(F32(1 - alpha) * g, g, v))
        d = RS(RS(np.sqrt(v)) + RS.lp(eps))
        st["square_avg"] = v
        return R(p + (F32(-lr) * g) / d)
    if name == "Adagrad":
        s = st.get("sum", np.zeros_like(p))
        clr = lr / (1 + (t - 1) * kw.get("lr_decay", 0.0))
        if rounding == "per_op":
            s = RS(_fma(g, g, s))
            d = RS(RS(np.sqrt(s)) + RS.lp(eps))
            st["sum"] = s
            return R(p + (F32(-clr) * g) / d)
        s32 = s + g * g
        st["sum"] = RS(s32)
        return R(p - (F32(clr) * g) / (np.sqrt(s32) + F32(eps)))
    if name == "SGD":
        mom = kw["momentum"]
        if rounding == "per_op":
            buf = g.copy() if t == 1 else RS(RS(st["momentum_buffer"] * F32(mom)) + RS.lp(1.0) * g)
            st["momentum_buffer"] = buf
            return R(p + R.lp(-lr) * buf)
        buf32 = g.copy() if t == 1 else st["momentum_buffer"] * F32(mom) + g * F32(1.0)
        st["momentum_buffer"] = RS(buf32)
        return R(p - buf32 * F32(lr))
    raise ValueError(name)


def transcribe(fx: dict[str, Any], w0: np.ndarray, grads: np.ndarray) -> dict[str, np.ndarray]:
    """The transcription's params and state after every step, as bit patterns like ``record``."""
    dt = NP_DTYPES[fx["dtype"]]
    R = Rounder(dt)
    RS = Rounder(None if fx["state_dtype"] == "float32" else dt)
    rounding = "fused" if fx["mode"] in ("fused", "fused_scalar", "master32") else "per_op"
    names = STATE_NAMES[fx["optimizer"]]
    p = w0.view(dt).astype(F32)
    st: dict[str, Any] = {}
    out = {"params": []} | {f"state_{k}": [] for k in names}
    with np.errstate(all="ignore"):
        for t in range(grads.shape[0]):
            g = grads[t].view(dt).astype(F32)
            p = np_step(fx["optimizer"], rounding, st, p, g, R, RS, fx["torch_kwargs"])
            out["params"].append(p.astype(dt).view(np.uint16))
            for k in names:
                s = st[k]
                out[f"state_{k}"].append(
                    s.view(np.uint32).copy() if RS.dtype is None else s.astype(dt).view(np.uint16)
                )
    return {k: np.stack(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Comparison helpers (the same as tests/test_lowp_parity.py)
# ---------------------------------------------------------------------------------------------


def values(b: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values of bit patterns (uint16 of ``dtype``, or uint32 float32)."""
    if b.dtype == np.uint32:
        return b.view(F32)
    return b.view(NP_DTYPES[dtype]).astype(F32)


def ordered(b: np.ndarray) -> np.ndarray:
    """Bit patterns as sign-magnitude integers: consecutive floats differ by 1, +0 == -0."""
    bits_ = b.astype(np.int64)
    sign = np.int64(1) << (8 * b.itemsize - 1)
    mag = bits_ & (sign - 1)
    return np.where(bits_ & sign, -mag, mag)


def compare(ref: np.ndarray, ours: np.ndarray, dtype: str) -> tuple[bool, float, float]:
    """(same non-finite coordinates, share within 2 ulp, share bit-identical) of finite ones."""
    a, b = values(ref, dtype), values(ours, dtype)
    fa, fb = np.isfinite(a), np.isfinite(b)
    inf = np.isinf(a)
    same_nonfinite = bool(
        (fa == fb).all() and (np.isnan(a) == np.isnan(b)).all() and (a[inf] == b[inf]).all()
    )
    both = fa & fb
    if not both.any():
        return same_nonfinite, 1.0, 1.0
    dist = np.abs(ordered(ref[both]) - ordered(ours[both]))
    return same_nonfinite, float(np.mean(dist <= 2)), float(np.mean(dist == 0))


def first_nonfinite(rec: dict[str, np.ndarray], dtype: str) -> tuple[int | None, int]:
    """(first step with a non-finite param or state, non-finite coordinates at the last step)."""
    bad = np.zeros(rec["params"].shape, bool)
    for arr in rec.values():
        bad |= ~np.isfinite(values(arr, dtype))
    steps = np.flatnonzero(bad.any(axis=1))
    return (int(steps[0]) + 1 if steps.size else None), int(bad[-1].sum())


# ---------------------------------------------------------------------------------------------
# The fixture set
# ---------------------------------------------------------------------------------------------


def _eps_tag(eps: float) -> str:
    return f"eps{eps:.0e}".replace("e-0", "e-")


def build_fixtures() -> list[dict[str, Any]]:
    """Every fixture: name, optimizer, dtype, mode, torch_kwargs, minnet_kwargs, state_dtype."""
    fixtures = []

    def add(opt: str, dtype: str, mode: str, kw: dict[str, Any], detail: str, **extra: Any) -> None:
        rounding = "per_op" if mode == "per_op" else "fused"
        minnet_kwargs = dict(kw, rounding=rounding)
        state_dtype = dtype
        if mode == "master32":
            minnet_kwargs["state_dtype"] = state_dtype = "float32"
        name = f"lowp_{opt.lower()}_{dtype}_{rounding}" + (f"_{detail}" if detail else "")
        fixtures.append(
            dict(
                name=name,
                optimizer=opt,
                dtype=dtype,
                mode=mode,
                torch_kwargs=kw,
                minnet_kwargs=minnet_kwargs,
                state_dtype=state_dtype,
                **extra,
            )  # fmt: skip
        )

    for dtype in NP_DTYPES:
        for eps in EPS_VALUES:
            tag = _eps_tag(eps)
            for opt, kw in (
                ("Adam", {"lr": 1e-3, "eps": eps}),
                ("AdamW", {"lr": 1e-3, "eps": eps, "weight_decay": 1e-2}),
                ("Adagrad", {"lr": 1e-2, "eps": eps}),
            ):
                if opt == "AdamW" and eps == 1e-7:
                    continue  # as Adam's at this eps; the files stay under 2 MB without it
                add(opt, dtype, "per_op", kw, tag)
                add(opt, dtype, "fused_scalar" if opt == "Adagrad" else "fused", kw, tag)
            add("RMSprop", dtype, "per_op", {"lr": 1e-2, "alpha": 0.99, "eps": eps}, tag)
        kw = {"lr": 1e-2, "momentum": 0.9}
        add("SGD", dtype, "per_op", kw, "momentum0.9")
        add("SGD", dtype, "fused_scalar", kw, "momentum0.9")
        if dtype == "float16":
            add("Adam", dtype, "master32", {"lr": 1e-3, "eps": 1e-8}, "state32_eps1e-8")
    return fixtures


def torch_call(fx: dict[str, Any]) -> str:
    """The PyTorch call as text."""
    kw = ", ".join(f"{k}={v!r}" for k, v in fx["torch_kwargs"].items())
    mode = fx["mode"]
    if mode == "per_op":
        return f"torch.optim.{fx['optimizer']}([p], {kw}, foreach=False)"
    if mode == "fused":
        return f"torch.optim.{fx['optimizer']}([p], {kw}, fused=True)"
    if mode == "fused_scalar":
        return (
            f"torch.optim.{fx['optimizer']}([p[i:i+1] for i in range(n)], {kw}, fused=True)"
            " (one 1-element parameter per coordinate: the fused kernel's scalar loop)"
        )
    return (
        f"torch.optim.{fx['optimizer']}([q], {kw}, foreach=False) on a float32 copy q of the "
        f"{fx['dtype']} parameter, refreshed from it before every step and stored back rounded "
        "(EMULATION of float32 state with a 16-bit parameter)"
    )


NOTES = {
    "fused_scalar": {
        "SGD": "fused=True's vectorised loop leaves 16-bit parameters unchanged in torch 2.13 "
        "(a bug); recorded through the kernel's scalar loop",
        "Adagrad": "fused=True's vectorised loop rounds eps and clr to the storage dtype; "
        "recorded through the kernel's scalar loop (float32 eps and clr)",
    },
    "master32": {"Adam": "emulated: PyTorch keeps state in the parameter's dtype"},
}


# ---------------------------------------------------------------------------------------------
# Checks of the docstring's claims
# ---------------------------------------------------------------------------------------------


def check_headline(out: Path) -> list[str]:
    """Adam(lr=1e-3) on float16 with gradients 1e-3, 0, 3e-5: per-op NaN/inf, fused trains."""
    lines = []
    w0 = np.zeros(3, np.float16).view(np.uint16)
    grads = np.tile(np.array([1e-3, 0.0, 3e-5], np.float16).view(np.uint16), (3, 1))
    for mode in ("per_op", "fused"):
        fx = dict(
            name=f"lowp_headline_adam_float16_{mode}", optimizer="Adam", dtype="float16",
            mode=mode, torch_kwargs={"lr": 1e-3}, minnet_kwargs={"lr": 1e-3, "rounding": mode},
            state_dtype="float16",
        )  # fmt: skip
        rec = record(fx, w0, grads)
        final = values(rec["params"][-1], "float16")
        if mode == "per_op":
            assert np.isneginf(final[0]) and np.isnan(final[1]) and np.isneginf(final[2]), final
            first = values(rec["params"][0], "float16")
            assert np.isneginf(first[0]) and np.isnan(first[1]) and np.isneginf(first[2]), first
        else:
            assert np.isfinite(final).all() and final[0] < 0 and final[1] == 0 and final[2] < 0
        tr = transcribe(fx, w0, grads)
        assert all(compare(rec[k], tr[k], "float16")[2] == 1.0 for k in rec), mode
        lines.append(f"headline {mode}: params after 3 steps {final.tolist()}")
        write(out, fx, rec, own_inputs={"w0": w0, "grads": grads}, note=(
            "PyTorch's float16 Adam example: per-op is [-inf, nan, -inf] from step 1 on; fused "
            "trains (but its stored exp_avg_sq stays 0)"
        ))  # fmt: skip
    return lines


def check_fused_quirks(inputs: dict[str, np.ndarray]) -> list[str]:
    """The vectorised fused SGD bug and the vectorised fused Adagrad's 16-bit eps, measured."""
    lines = []
    for dtype in NP_DTYPES:
        w0, grads = inputs[f"w0_{dtype}"], inputs[f"grads_{dtype}"][:5]
        fx = dict(optimizer="SGD", dtype=dtype, mode="fused",
                  torch_kwargs={"lr": 1e-2, "momentum": 0.9}, state_dtype=dtype)  # fmt: skip
        rec = record(fx, w0, grads)
        unchanged = float(np.mean(rec["params"][-1] == w0))
        lines.append(f"fused SGD {dtype}, one {N}-element tensor: {unchanged:.0%} params unchanged")
        assert unchanged > 0.9, "fused SGD now updates 16-bit params: record it directly"
        for eps in (1e-8, 1e-4):
            fx = dict(optimizer="Adagrad", dtype=dtype, mode="fused",
                      torch_kwargs={"lr": 1e-2, "eps": eps}, state_dtype=dtype)  # fmt: skip
            vec = record(fx, w0, inputs[f"grads_{dtype}"])
            sca = record(dict(fx, mode="fused_scalar"), w0, inputs[f"grads_{dtype}"])
            nan_v = int((~np.isfinite(values(vec["params"][-1], dtype))).sum())
            nan_s = int((~np.isfinite(values(sca["params"][-1], dtype))).sum())
            same = compare(sca["params"], vec["params"], dtype)
            lines.append(
                f"fused Adagrad {dtype} eps={eps:g}: vectorised loop {nan_v} non-finite params, "
                f"scalar loop {nan_s}; same non-finite set {same[0]}, within 2 ulp {same[1]:.4f}"
            )
        fx = dict(optimizer="Adam", dtype=dtype, mode="fused",
                  torch_kwargs={"lr": 1e-3, "eps": 1e-8}, state_dtype=dtype)  # fmt: skip
        vec = record(fx, w0, inputs[f"grads_{dtype}"])
        sca = record(dict(fx, mode="fused_scalar"), w0, inputs[f"grads_{dtype}"])
        ident = min(compare(sca[k], vec[k], dtype)[2] for k in vec)
        lines.append(f"fused Adam {dtype}: scalar vs vectorised loop bit-identical {ident:.4f}")
    return lines


def write(out: Path, fx: dict[str, Any], rec: dict[str, np.ndarray], *, sha: str | None = None,
          own_inputs: dict[str, np.ndarray] | None = None, note: str = "") -> None:  # fmt: skip
    """Write one fixture file."""
    config = {
        "name": fx["name"],
        "optimizer": fx["optimizer"],
        "minnet_kwargs": fx["minnet_kwargs"],
        "dtype": fx["dtype"],
        "state_dtype": fx["state_dtype"],
        "state_names": STATE_NAMES[fx["optimizer"]],
        "steps": int(rec["params"].shape[0]),
        "n": int(rec["params"].shape[1]),
        "library": "PyTorch",
        "library_version": torch.__version__,
        "reference": torch_call(fx),
        "emulated": fx["mode"] == "master32",
        "note": note,
    }
    arrays = dict(rec)
    if own_inputs is None:
        config["gradients"] = GRAD_FILE
        config["gradients_sha256"] = sha
    else:
        arrays |= own_inputs
    np.savez_compressed(out / f"{fx['name']}.npz", config=np.array(json.dumps(config)), **arrays)


def main() -> None:
    """Record, verify and write every fixture; print the summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent.parent / "tests" / "fixtures"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    inputs = make_inputs()
    np.savez_compressed(args.out / GRAD_FILE, **inputs)
    sha = inputs_sha256(inputs)
    notes = check_headline(args.out) + check_fused_quirks(inputs)
    rows = []
    for fx in build_fixtures():
        w0, grads = inputs[f"w0_{fx['dtype']}"], inputs[f"grads_{fx['dtype']}"]
        rec = record(fx, w0, grads)
        tr = transcribe(fx, w0, grads)
        results = {k: compare(rec[k], tr[k], fx["dtype"]) for k in rec}
        for k, (same, _, _) in results.items():
            assert same, f"{fx['name']}: {k} non-finite pattern differs from the transcription"
        first, count = first_nonfinite(rec, fx["dtype"])
        note = NOTES.get(fx["mode"], {}).get(fx["optimizer"], "")
        write(args.out, fx, rec, sha=sha, note=note)
        rows.append((fx, first, count, min(r[1] for r in results.values()),
                     min(r[2] for r in results.values())))  # fmt: skip
    # what the docstring claims
    by_name = {fx["name"]: (first, count) for fx, first, count, _, _ in rows}
    assert by_name["lowp_adam_float16_per_op_eps1e-8"][0] == 1
    assert by_name["lowp_adam_float16_fused_eps1e-8"][0] is None
    assert by_name["lowp_adam_bfloat16_per_op_eps1e-8"][0] is None
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for line in notes:
        print(line)
    print()
    print(f"{'fixture':<44} {'first NaN/inf step':>18} {'NaN/inf at end':>14} "
          f"{'transcr. <=2ulp':>15} {'bit-identical':>13}")  # fmt: skip
    for fx, first, count, within, ident in rows:
        print(f"{fx['name']:<44} {first or '-':>18} {count:>14} {within:>15.4f} {ident:>13.4f}")
    total = sum(p.stat().st_size for p in args.out.glob("lowp_*.npz"))
    print(f"\n{len(rows) + 2} fixtures + {GRAD_FILE}: {total} bytes")
    assert total < 2_000_000, total


if __name__ == "__main__":
    main()

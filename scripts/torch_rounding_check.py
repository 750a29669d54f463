"""Why minnet cannot match PyTorch bit for bit: PyTorch's own CPU rounding, measured.

Run by hand where PyTorch is installed (``pip install torch==2.13.0``):

    python scripts/torch_rounding_check.py

It prints, for float64 and float32, the share of elements where PyTorch's ``sqrt`` differs from
the correctly rounded IEEE ``np.sqrt``, and which formula reproduces PyTorch's ``lerp_`` and
``addcmul_`` exactly (a fused multiply-add or separately rounded products).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import torch


def fma(a: np.ndarray, b: np.ndarray | float, c: np.ndarray) -> np.ndarray:
    """Elementwise fused multiply-add ``a*b + c`` with one rounding (C's ``fma``), in float64."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.fma.restype = ctypes.c_double
    libm.fma.argtypes = [ctypes.c_double] * 3
    a, b, c = np.broadcast_arrays(np.float64(a), np.float64(b), np.float64(c))
    return np.array([libm.fma(x, y, z) for x, y, z in zip(a.ravel(), b.ravel(), c.ravel())])


def main() -> None:
    """Print the measurements."""
    rng = np.random.default_rng(0)
    n = 100_000
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for dtype in (np.float64, np.float32):
        v = (rng.random(n) * 0.01).astype(dtype)
        ours = np.sqrt(v)
        theirs = torch.from_numpy(v).sqrt().numpy()
        print(f"{dtype.__name__}: sqrt differs from IEEE sqrt in {np.mean(ours != theirs):.2%}")
    m, g = rng.standard_normal(20_000) * 0.1, rng.standard_normal(20_000)
    w = 1 - 0.9
    lerp = torch.from_numpy(m.copy()).lerp_(torch.from_numpy(g), w).numpy()
    plain = m + w * (g - m)
    print(
        f"lerp_: differs from m + w*(g - m) in {np.mean(lerp != plain):.2%}, "
        f"from fma(w, g - m, m) in {np.mean(lerp != fma(w, g - m, m)):.2%}"
    )
    v = rng.random(20_000) * 0.01
    tv = (
        torch.from_numpy(v.copy())
        .mul_(0.999)
        .addcmul_(torch.from_numpy(g), torch.from_numpy(g), value=1 - 0.999)
        .numpy()
    )
    vb = v * 0.999
    plain = vb + (1 - 0.999) * g * g
    fused = fma((1 - 0.999) * g, g, vb)
    print(
        f"addcmul_: differs from v + s*g*g in {np.mean(tv != plain):.2%}, "
        f"from fma(s*g, g, v) in {np.mean(tv != fused):.2%}"
    )


if __name__ == "__main__":
    main()

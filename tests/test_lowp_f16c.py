"""float16's two implementations in the kernels: the CPU's F16C instructions and the integer code.

``minnet._lowp.F16_HARDWARE`` is chosen once, at import (``MINNET_F16C=0`` forces the integer
code); the on-disk kernel cache keys on it; and optimizers built either way store the same bits.
The conversions alone are compared on every pattern in ``tests/test_lowp.py``. Here whole steps
are: every value that is not NaN must be stored bit for bit alike, and NaN in the same places.
A NaN's own bits may differ where two NaNs meet in one operation (x86 returns the first
operand's, and LLVM may order commutative operands differently in the two builds), as they
already do between NumPy's arithmetic and the kernels'.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest

from minnet import _jitcache, _lowp
from minnet.nn import Parameter
from minnet.optim import SGD, Adam, Rprop

U16 = np.uint16
#: float16 NaNs (quiet and signalling, both signs), infs, signed zeros, subnormals, the largest
#: finite value and the smallest normal.
SPECIAL = np.array(
    [0x7C01, 0xFC01, 0x7DFF, 0x7E00, 0xFE01, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x83FF, 0x7BFF,
     0x0400],
    U16,
)  # fmt: skip
#: (optimizer, options, state dtype): the plain fused kernel (a pool driver where there are
#: threads), per-op rounding with stats, AMSGrad with decay, float32 state, Rprop's selects
#: (values kept unchanged) and SGD's momentum per op.
CASES = [
    (Adam, {"rounding": "fused"}, None),
    (Adam, {"rounding": "per_op", "track_stats": True}, None),
    (Adam, {"rounding": "fused", "amsgrad": True, "weight_decay": 0.1, "track_stats": True}, None),
    (Adam, {"rounding": "fused"}, "float32"),
    (Rprop, {"rounding": "fused"}, None),
    (SGD, {"rounding": "per_op", "momentum": 0.9}, None),
]


def run_cases(n: int = 261, steps: int = 3) -> dict[str, np.ndarray]:
    """The stored bits of every case after ``steps`` steps on float16 parameters and gradients
    with :data:`SPECIAL` values among ordinary ones over many decades."""
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for k, (cls, options, state_dtype) in enumerate(CASES):
        p = Parameter(np.zeros(n, np.float32))
        p.data = rng.standard_normal(n).astype(np.float16)
        p.data.view(U16)[rng.permutation(n)[: SPECIAL.size]] = SPECIAL
        p.grad = np.zeros_like(p.data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eps in float16, on purpose
            opt = cls([p], lr=1e-2, state_dtype=state_dtype, **options)
            for _ in range(steps):
                g = rng.standard_normal(n) * 10.0 ** rng.integers(-9, 2, n)
                p.grad[...] = g.astype(np.float16)
                p.grad.view(U16)[rng.permutation(n)[: SPECIAL.size]] = SPECIAL
                opt.step()
        out[f"{k}-param"] = p.data.copy()
        flat = opt._flats[0][0]
        for name, a in zip(flat.state, flat.arrays):
            out[f"{k}-{name}"] = a.copy()
    return out


def _env(hardware: bool) -> dict[str, str]:
    return dict(os.environ, MINNET_F16C="1" if hardware else "0")


def test_the_choice_is_read_at_import() -> None:
    code = "import minnet._jitcache as j; print(j._lowp.F16_HARDWARE, j.build_choices())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(False), capture_output=True, text=True, check=True
    )
    assert done.stdout.split()[0] == "False"
    assert "('f16_hardware', False)" in done.stdout
    assert _lowp.F16_HARDWARE == (_lowp.cpu_has_f16c() and os.environ.get("MINNET_F16C") != "0")


def test_the_disk_cache_keys_on_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    scale = 2.0

    def f(x):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        return x * scale

    keys = []
    for choice in (False, True):
        monkeypatch.setattr(_lowp, "F16_HARDWARE", choice)
        dispatcher = numba.njit(f)
        assert _jitcache.cache_on_source(dispatcher)
        keys.append((dispatcher._cache._described, dispatcher._cache._cache_file._index_name))
    assert keys[0][0] != keys[1][0]
    assert keys[0][1] != keys[1][1]  # an index file of its own: neither path reads the other's


@pytest.mark.slow
@pytest.mark.skipif(not _lowp.cpu_has_f16c(), reason="the CPU has no F16C: one implementation")
def test_both_paths_store_the_same_bits(tmp_path: Path) -> None:
    here = run_cases()
    other = not _lowp.F16_HARDWARE
    out = tmp_path / "other.npz"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import numpy as np; import test_lowp_f16c"
        " as t; assert t._lowp.F16_HARDWARE == (sys.argv[3] == '1');"
        " np.savez(sys.argv[2], **t.run_cases())"
    )
    args = [sys.executable, "-c", code, str(Path(__file__).parent), str(out), str(int(other))]
    done = subprocess.run(args, env=_env(other), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    there = dict(np.load(out))
    assert sorted(here) == sorted(there)
    for name, a in here.items():
        b = there[name]
        nan_a, nan_b = np.isnan(a.astype(np.float32)), np.isnan(b.astype(np.float32))
        assert (nan_a == nan_b).all(), f"{name}: NaN in different places"
        wide = U16 if a.itemsize == 2 else np.uint32
        differ = np.flatnonzero((a.view(wide) != b.view(wide)) & ~nan_a)
        assert differ.size == 0, f"{name}: {differ.size} values differ, e.g. {a[differ[:3]]}"
    assert any(np.isnan(a.astype(np.float32)).any() for a in here.values())  # NaNs were stored

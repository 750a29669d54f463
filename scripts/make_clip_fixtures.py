"""Record PyTorch's gradient clipping as fixtures for tests/test_clip_grad.py.

Run by hand in a separate venv that has torch (never in the repo's .venv):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python scripts/make_clip_fixtures.py

Writes tests/fixtures/clip_grad.npz: ``configs`` (JSON list of the cases below), the input
gradients ``in_<set>_<dtype>_<k>`` and, for every case, the clipped gradients ``<name>__out_<k>``
and (clip_grad_norm_) the returned total norm ``<name>__norm``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "clip_grad.npz"
SHAPES = [(7, 5), (5,), (13, 11)]


def inputs(which: str, dtype: str) -> list[np.ndarray]:
    """Three gradients (one with a zero column); ``which`` adds an inf or a NaN."""
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal(s) for s in SHAPES]
    grads[2][:, 3] = 0.0
    grads[0][1, 2] = 1e-30  # a tiny entry (its square underflows in float32)
    if which == "inf":
        grads[1][2] = np.inf
    if which == "nan":
        grads[2][4, 4] = np.nan
    if dtype == "mixed":
        return [grads[0].astype(np.float32), grads[1], grads[2].astype(np.float32)]
    return [g.astype(dtype) for g in grads]


CASES: list[dict] = []
for dt in ("float32", "float64"):
    for norm_type, max_norm in ((2.0, 1.0), (1.0, 5.0), ("inf", 0.5), (3.0, 2.0), (2.0, 1e3),
                                (0.0, 1.0), ("-inf", 1.0)):
        CASES.append({"name": f"norm_{norm_type}_{max_norm}_{dt}", "fn": "norm", "set": "base",
                      "dtype": dt, "max_norm": max_norm, "norm_type": norm_type})
    CASES.append({"name": f"norm_inf_input_{dt}", "fn": "norm", "set": "inf", "dtype": dt,
                  "max_norm": 1.0, "norm_type": 2.0})
    CASES.append({"name": f"norm_nan_input_{dt}", "fn": "norm", "set": "nan", "dtype": dt,
                  "max_norm": 1.0, "norm_type": "inf"})
    for clip_value in (0.3, 2.0, -0.2):
        CASES.append({"name": f"value_{clip_value}_{dt}", "fn": "value", "set": "base",
                      "dtype": dt, "clip_value": clip_value})
    CASES.append({"name": f"value_nan_input_{dt}", "fn": "value", "set": "nan", "dtype": dt,
                  "clip_value": 0.5})
CASES.append({"name": "norm_mixed_dtypes", "fn": "norm", "set": "base", "dtype": "mixed",
              "max_norm": 1.0, "norm_type": 2.0})  # fmt: skip


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    for case in CASES:
        grads = inputs(case["set"], case["dtype"])
        for k, g in enumerate(grads):
            arrays[f"in_{case['set']}_{case['dtype']}_{k}"] = g
        params = []
        for g in grads:
            p = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
            p.grad = torch.from_numpy(g.copy())
            params.append(p)
        name = case["name"]
        if case["fn"] == "norm":
            total = torch.nn.utils.clip_grad_norm_(
                params, case["max_norm"], norm_type=float(case["norm_type"])
            )
            arrays[f"{name}__norm"] = total.numpy()
        else:
            torch.nn.utils.clip_grad_value_(params, case["clip_value"])
        for k, p in enumerate(params):
            arrays[f"{name}__out_{k}"] = p.grad.numpy()
    arrays["configs"] = np.array(json.dumps(CASES))
    arrays["torch_version"] = np.array(torch.__version__)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(CASES)} cases)")


if __name__ == "__main__":
    main()

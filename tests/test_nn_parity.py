"""PyTorch parity of the layers and losses, replayed from tests/fixtures/nn_torch.npz.

The file was recorded by scripts/make_nn_fixtures.py (torch 2.13.0); no torch is needed here.
Each case's output and input gradient must match PyTorch's to 1e-12 (float64) or 1e-5 (float32),
relative to the largest magnitude of PyTorch's array (values near zero, e.g. GELU far left, are
differences of nearly equal numbers in both libraries).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minnet import nn

FIXTURE = Path(__file__).parent / "fixtures" / "nn_torch.npz"
DATA = np.load(FIXTURE)
CASES = json.loads(str(DATA["cases"]))
TOL = {"float64": 1e-12, "float32": 1e-5}


def close(got: np.ndarray, ref: np.ndarray, tol: float, what: str) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != {ref.dtype}"
    scale = max(float(np.max(np.abs(ref))), np.finfo(ref.dtype).tiny)
    err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def test_fixture_covers_every_new_piece() -> None:
    classes = {c[2] for c in CASES}
    assert classes >= {"Tanh", "Sigmoid", "GELU", "LeakyReLU", "Softmax", "LogSoftmax",
                       "Flatten", "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss"}  # fmt: skip
    assert str(DATA["torch_version"]).startswith("2.13.0")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_pytorch(case: list, dtype: str) -> None:
    name, kind, cls, kwargs, _, _ = case
    key = f"{name}/{dtype}"
    kw = {k: np.array(v, dtype) if isinstance(v, list) else v for k, v in kwargs.items()}
    mod = getattr(nn, cls)(**kw)
    x, g = DATA[f"{key}/x"], DATA[f"{key}/grad"]
    out = mod(x) if kind == "layer" else mod(x, DATA[f"{key}/target"])
    if kind == "layer":
        dx = mod.backward(g)
    elif getattr(mod, "reduction", None) == "none":
        dx = mod.backward(g)
    else:
        dx = mod.backward()
    close(out, DATA[f"{key}/out"], TOL[dtype], f"{name} {dtype} value")
    close(dx, DATA[f"{key}/dx"], TOL[dtype], f"{name} {dtype} input gradient")

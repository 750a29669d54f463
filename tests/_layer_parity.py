"""Replay of tests/fixtures/conv_attention_torch.npz (scripts/make_conv_attention_fixtures.py).

Each case builds the minnet layer with the case's keyword arguments, loads the parameters PyTorch
used (same names), runs the same inputs and upstream gradient, and compares every output and
gradient with PyTorch's to 1e-12 (float64) or 1e-5 (float32), relative to the largest magnitude
of PyTorch's array.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from minnet import nn

FIXTURE = Path(__file__).parent / "fixtures" / "conv_attention_torch.npz"
DATA = np.load(FIXTURE)
CASES: list[list[Any]] = json.loads(str(DATA["cases"]))
TOL = {"float64": 1e-12, "float32": 1e-5}


def close(got: Any, ref: np.ndarray, tol: float, what: str) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != {ref.dtype}"
    assert np.array_equal(np.isnan(got), np.isnan(ref)), f"{what}: NaNs differ"
    fin = ~np.isnan(ref)
    scale = max(float(np.max(np.abs(ref[fin]), initial=0.0)), np.finfo(ref.dtype).tiny)
    err = float(np.max(np.abs(got[fin].astype(np.float64) - ref[fin]), initial=0.0)) / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def replay(case: list[Any], dtype: str) -> None:
    """Run one case in minnet and compare everything PyTorch recorded."""
    name, cls, ctor, call, _ = case
    key = f"{name}/{dtype}"
    tol = TOL[dtype]
    ctor = {k: tuple(v) if isinstance(v, list) else v for k, v in ctor.items()}
    layer_cls = getattr(nn, cls)
    has_dtype = cls in ("Conv2d", "MultiheadAttention")
    layer = layer_cls(**ctor, dtype=dtype) if has_dtype else layer_cls(**ctor)
    params = {k[len(key) + 3 :]: DATA[k] for k in DATA.files if k.startswith(f"{key}/p:")}
    if params:
        layer.load_state_dict(params)
        layer.zero_grad()
    kwargs = dict(call)
    for mk in ("attn_mask", "key_padding_mask"):
        if mk in kwargs:
            kwargs[mk] = DATA[f"{key}/{mk}"]
    grad = DATA[f"{key}/grad"]
    if f"{key}/x" in DATA.files:
        out = layer(DATA[f"{key}/x"])
        if isinstance(out, tuple):  # MaxPool2d(return_indices=True): PyTorch's exact indices
            out, indices = out
            np.testing.assert_array_equal(indices, DATA[f"{key}/indices"])
            assert indices.dtype == np.int64
        grads = {"dx": layer.backward(grad)}
    else:
        q = DATA[f"{key}/q"]
        self_attention = f"{key}/k" not in DATA.files
        args = (q, q, q) if self_attention else (q, DATA[f"{key}/k"], DATA[f"{key}/v"])
        out = layer(*args, **kwargs)
        if isinstance(out, tuple):
            out, weights = out
            if f"{key}/weights" in DATA.files:
                close(weights, DATA[f"{key}/weights"], tol, f"{name} {dtype} weights")
            else:
                assert weights is None
        back = layer.backward(grad)
        if self_attention:
            assert isinstance(back, np.ndarray)
            grads = {"dq": back}
        else:
            grads = dict(zip(("dq", "dk", "dv"), back))
    close(out, DATA[f"{key}/out"], tol, f"{name} {dtype} output")
    for g, value in grads.items():
        close(value, DATA[f"{key}/{g}"], tol, f"{name} {dtype} {g}")
    for pname, p in layer.named_parameters():
        close(p.grad, DATA[f"{key}/g:{pname}"], tol, f"{name} {dtype} gradient of {pname}")


def cases_of(*classes: str) -> list[list[Any]]:
    return [c for c in CASES if c[1] in classes]

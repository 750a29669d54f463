"""Record PyTorch's values and input gradients for minnet's layers and losses (parity fixtures).

Run by hand in an environment with PyTorch (the tests only replay the file and need no torch):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python scripts/make_nn_fixtures.py   # writes tests/fixtures/nn_torch.npz

Every case is one layer or loss with its PyTorch keyword arguments, run in float64 and float32 on
inputs drawn here with NumPy (stored in the file, so the replay uses the very same numbers).
Keys per case and dtype: ``<case>/<dtype>/x``, ``/target`` (losses), ``/grad`` (the upstream
gradient: of the output for layers and ``reduction="none"`` losses; 1 for scalar losses),
``/out`` and ``/dx`` (PyTorch's output and input gradient). ``cases`` is the JSON list of cases;
``torch_version`` the version that recorded them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

W4 = [0.5, 2.0, 1.0, 3.0]
# (name, kind, class name, kwargs, input spec). Array kwargs are lists (converted on both sides).
# Input specs: "x" (5, 4) * 3, "big" (5, 4) * 1e4, "img" (2, 3, 4), "nd" (3, 4, 2) * 2.
# Loss targets: "idx" indices with no ignored row, "idx_ign" with two rows at -100 (or at
# ignore_index), "prob" class probabilities, "bin" numbers in [0, 1], "real" normal values.
# fmt: off
CASES: list[tuple[str, str, str, dict, str, str]] = [
    ("tanh", "layer", "Tanh", {}, "x", ""),
    ("sigmoid", "layer", "Sigmoid", {}, "x", ""),
    ("sigmoid_big", "layer", "Sigmoid", {}, "big", ""),
    ("gelu", "layer", "GELU", {}, "x", ""),
    ("gelu_tanh", "layer", "GELU", {"approximate": "tanh"}, "x", ""),
    ("leaky_relu", "layer", "LeakyReLU", {}, "x", ""),
    ("leaky_relu_02", "layer", "LeakyReLU", {"negative_slope": 0.2}, "x", ""),
    ("softmax", "layer", "Softmax", {"dim": -1}, "x", ""),
    ("softmax_dim0", "layer", "Softmax", {"dim": 0}, "x", ""),
    ("softmax_big", "layer", "Softmax", {"dim": -1}, "big", ""),
    ("log_softmax", "layer", "LogSoftmax", {"dim": -1}, "x", ""),
    ("log_softmax_big", "layer", "LogSoftmax", {"dim": 1}, "big", ""),
    ("flatten", "layer", "Flatten", {}, "img", ""),
    ("ce", "loss", "CrossEntropyLoss", {}, "x", "idx"),
    ("ce_sum", "loss", "CrossEntropyLoss", {"reduction": "sum"}, "x", "idx"),
    ("ce_none", "loss", "CrossEntropyLoss", {"reduction": "none"}, "x", "idx"),
    ("ce_weight", "loss", "CrossEntropyLoss", {"weight": W4}, "x", "idx"),
    ("ce_big", "loss", "CrossEntropyLoss", {}, "big", "idx"),
    ("ce_ignore", "loss", "CrossEntropyLoss", {}, "x", "idx_ign"),
    ("ce_ignore_weight", "loss", "CrossEntropyLoss", {"weight": W4}, "x", "idx_ign"),
    ("ce_ignore_index_2", "loss", "CrossEntropyLoss", {"ignore_index": 2, "weight": W4}, "x",
     "idx_ign"),
    ("ce_ignore_none", "loss", "CrossEntropyLoss", {"reduction": "none"}, "x", "idx_ign"),
    ("ce_smooth", "loss", "CrossEntropyLoss", {"label_smoothing": 0.1}, "x", "idx"),
    ("ce_smooth_weight_ignore", "loss", "CrossEntropyLoss",
     {"label_smoothing": 0.2, "weight": W4}, "x", "idx_ign"),
    ("ce_smooth_sum_ignore", "loss", "CrossEntropyLoss",
     {"label_smoothing": 0.3, "reduction": "sum"}, "x", "idx_ign"),
    ("ce_smooth_none_weight", "loss", "CrossEntropyLoss",
     {"label_smoothing": 0.1, "reduction": "none", "weight": W4}, "x", "idx_ign"),
    ("ce_smooth_big", "loss", "CrossEntropyLoss", {"label_smoothing": 0.1}, "big", "idx"),
    ("ce_prob", "loss", "CrossEntropyLoss", {}, "x", "prob"),
    ("ce_prob_smooth_weight", "loss", "CrossEntropyLoss",
     {"label_smoothing": 0.2, "weight": W4}, "x", "prob"),
    ("ce_prob_none", "loss", "CrossEntropyLoss", {"reduction": "none"}, "x", "prob"),
    ("ce_nd", "loss", "CrossEntropyLoss", {"weight": W4, "label_smoothing": 0.1}, "nd", "idx"),
    ("ce_nd_prob", "loss", "CrossEntropyLoss", {"reduction": "sum"}, "nd", "prob"),
    ("bce", "loss", "BCEWithLogitsLoss", {}, "x", "bin"),
    ("bce_sum", "loss", "BCEWithLogitsLoss", {"reduction": "sum"}, "x", "bin"),
    ("bce_none", "loss", "BCEWithLogitsLoss", {"reduction": "none"}, "x", "bin"),
    ("bce_pos_weight", "loss", "BCEWithLogitsLoss", {"pos_weight": W4}, "x", "bin"),
    ("bce_weight_pos_weight", "loss", "BCEWithLogitsLoss",
     {"weight": W4, "pos_weight": [3.0, 1.0, 0.2, 1.5]}, "x", "bin"),
    ("bce_big", "loss", "BCEWithLogitsLoss", {"pos_weight": W4}, "big", "bin"),
    ("mse", "loss", "MSELoss", {}, "x", "real"),
    ("mse_sum", "loss", "MSELoss", {"reduction": "sum"}, "x", "real"),
    ("mse_none", "loss", "MSELoss", {"reduction": "none"}, "x", "real"),
]
# fmt: on


def make_input(spec: str, rng: np.random.Generator) -> np.ndarray:
    if spec == "x":
        return rng.standard_normal((5, 4)) * 3
    if spec == "big":
        return rng.standard_normal((5, 4)) * 1e4
    if spec == "img":
        return rng.standard_normal((2, 3, 4))
    if spec == "nd":
        return rng.standard_normal((3, 4, 2)) * 2
    raise ValueError(spec)


def make_target(spec: str, x: np.ndarray, kwargs: dict, rng: np.random.Generator) -> np.ndarray:
    c = x.shape[1]
    batch = (x.shape[0],) + x.shape[2:]
    if spec in ("idx", "idx_ign"):
        t = rng.integers(0, c, batch)
        if spec == "idx_ign":
            t.reshape(-1)[[1, 3]] = kwargs.get("ignore_index", -100)
        return t
    if spec == "prob":
        p = rng.random(x.shape)
        return p / p.sum(axis=1, keepdims=True)
    if spec == "bin":
        return rng.random(x.shape)
    if spec == "real":
        return rng.standard_normal(x.shape)
    raise ValueError(spec)


def record() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(2024)
    for name, kind, cls, kwargs, in_spec, t_spec in CASES:
        x64 = make_input(in_spec, rng)
        t64 = make_target(t_spec, x64, kwargs, rng) if kind == "loss" else None
        for dtype in ("float64", "float32"):
            tdt = getattr(torch, dtype)
            x_np = x64.astype(dtype)
            tk = {k: torch.tensor(v, dtype=tdt) if isinstance(v, list) else v
                  for k, v in kwargs.items()}  # fmt: skip
            mod = getattr(torch.nn, cls)(**tk)
            x = torch.tensor(x_np, requires_grad=True)
            if kind == "layer":
                y = mod(x)
            else:
                t_np = t64 if t64.dtype.kind in "iu" else t64.astype(dtype)
                t = torch.tensor(t_np)
                y = mod(x, t)
                out[f"{name}/{dtype}/target"] = t_np
            if y.ndim == 0:
                g = np.array(1.0, dtype)
            else:
                g = np.random.default_rng(7).standard_normal(tuple(y.shape)).astype(dtype)
            y.backward(torch.tensor(g))
            out[f"{name}/{dtype}/x"] = x_np
            out[f"{name}/{dtype}/grad"] = g
            out[f"{name}/{dtype}/out"] = y.detach().numpy()
            out[f"{name}/{dtype}/dx"] = x.grad.numpy()
    out["cases"] = np.array(json.dumps([list(c) for c in CASES]))
    out["torch_version"] = np.array(torch.__version__)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/nn_torch.npz"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    arrays = record()
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({len(CASES)} cases, torch {torch.__version__})")


if __name__ == "__main__":
    main()

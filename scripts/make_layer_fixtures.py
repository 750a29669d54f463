"""Record PyTorch's values and gradients for minnet's normalization layers, Embedding, N-D Linear
and the losses NLLLoss, BCELoss, L1Loss, SmoothL1Loss, HuberLoss and KLDivLoss (parity fixtures).

Run by hand in an environment with PyTorch (the tests replay the file and need no torch):

    PYTHONPATH=. /work/main/.venv-bench/bin/python scripts/make_layer_fixtures.py
    # writes tests/fixtures/layers_torch.npz (tests/test_nn_layer_parity.py replays it)

Every case runs in float64 and float32 on inputs drawn here with NumPy (stored in the file).

Layers: the parameters are set to stored random values (so a wrong affine term shows), then
``steps`` training-mode calls run, each on its own input ``x`` and upstream gradient ``grad``
with the parameter gradients zeroed first; ``eval`` adds one evaluation-mode call. Keys
``<case>/<dtype>/p/<name>`` (initial parameters) and ``<case>/<dtype>/<step>/`` + ``x``,
``grad``, ``out``, ``dx`` (layers whose input is data have none), ``g/<name>`` (parameter
gradients), ``b/<name>`` (buffers after the call: BatchNorm's running statistics and
``num_batches_tracked``), ``rows`` (a sparse Embedding's touched rows). Inputs of scale 1e-2
or 1e-3 make eps a sizeable part of the variance, so a wrong eps placement fails the replay.

Losses: ``<case>/<dtype>/`` + ``x``, ``target``, ``grad`` (the upstream gradient: an array for
``reduction="none"``, 1 otherwise), ``out``, ``dx``. ``cases`` is the JSON list of cases,
``torch_version`` the version that recorded them.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

W4 = [0.5, 2.0, 1.0, 3.0]
# (name, kind, class, kwargs, spec). Layer specs: shape of x, scale, train steps, eval call;
# "idx": integer input (Embedding). Loss specs: input kind and target kind.
# fmt: off
CASES: list[tuple[str, str, str, dict, dict]] = [
    ("layernorm", "layer", "LayerNorm", {"normalized_shape": 5},
     {"shape": [4, 3, 5], "scale": 2.0}),
    ("layernorm_small", "layer", "LayerNorm", {"normalized_shape": 5},
     {"shape": [4, 5], "scale": 1e-2}),
    ("layernorm_2d_eps", "layer", "LayerNorm", {"normalized_shape": [3, 5], "eps": 1e-3},
     {"shape": [2, 3, 5], "scale": 3e-2}),
    ("layernorm_nobias", "layer", "LayerNorm", {"normalized_shape": 5, "bias": False},
     {"shape": [3, 5], "scale": 1.0}),
    ("layernorm_noaffine", "layer", "LayerNorm",
     {"normalized_shape": 5, "elementwise_affine": False},
     {"shape": [3, 5], "scale": 1e-2}),
    ("rmsnorm", "layer", "RMSNorm", {"normalized_shape": 5}, {"shape": [4, 3, 5], "scale": 2.0}),
    ("rmsnorm_tiny", "layer", "RMSNorm", {"normalized_shape": 5}, {"shape": [4, 5], "scale": 3e-4}),
    ("rmsnorm_eps", "layer", "RMSNorm", {"normalized_shape": [3, 5], "eps": 1e-4},
     {"shape": [2, 3, 5], "scale": 1e-2}),
    ("rmsnorm_noaffine", "layer", "RMSNorm", {"normalized_shape": 5, "elementwise_affine": False},
     {"shape": [3, 5], "scale": 1.0}),
    ("groupnorm", "layer", "GroupNorm", {"num_groups": 2, "num_channels": 4},
     {"shape": [3, 4, 5], "scale": 1.0}),
    ("groupnorm_small", "layer", "GroupNorm", {"num_groups": 1, "num_channels": 4},
     {"shape": [3, 4, 2, 2], "scale": 1e-2}),
    ("groupnorm_instance", "layer", "GroupNorm",
     {"num_groups": 4, "num_channels": 4, "affine": False, "eps": 1e-3},
     {"shape": [2, 4, 3], "scale": 3e-2}),
    ("batchnorm1d", "layer", "BatchNorm1d", {"num_features": 3},
     {"shape": [6, 3], "scale": 2.0, "steps": 4, "eval": True}),
    ("batchnorm1d_3d_small", "layer", "BatchNorm1d", {"num_features": 3},
     {"shape": [4, 3, 5], "scale": 1e-2, "steps": 3, "eval": True}),
    ("batchnorm1d_cumulative", "layer", "BatchNorm1d", {"num_features": 3, "momentum": None},
     {"shape": [5, 3], "scale": 1.0, "steps": 4, "eval": True}),
    ("batchnorm1d_noaffine_mom", "layer", "BatchNorm1d",
     {"num_features": 3, "affine": False, "momentum": 0.3},
     {"shape": [5, 3, 2], "scale": 1.0, "steps": 3, "eval": True}),
    ("batchnorm1d_notrack", "layer", "BatchNorm1d",
     {"num_features": 3, "track_running_stats": False},
     {"shape": [5, 3], "scale": 1.0, "steps": 2, "eval": True}),
    ("batchnorm2d", "layer", "BatchNorm2d", {"num_features": 2},
     {"shape": [3, 2, 4, 4], "scale": 1.5, "steps": 3, "eval": True}),
    ("batchnorm2d_eps", "layer", "BatchNorm2d", {"num_features": 2, "eps": 1e-3, "momentum": 0.01},
     {"shape": [2, 2, 3, 3], "scale": 3e-2, "steps": 3, "eval": True}),
    ("embedding", "layer", "Embedding", {"num_embeddings": 10, "embedding_dim": 4},
     {"idx": [3, 5], "steps": 2}),
    ("embedding_pad", "layer", "Embedding",
     {"num_embeddings": 6, "embedding_dim": 3, "padding_idx": 2},
     {"idx": [4, 6], "steps": 2}),
    ("embedding_pad_neg_sparse", "layer", "Embedding",
     {"num_embeddings": 12, "embedding_dim": 3, "padding_idx": -1, "sparse": True},
     {"idx": [2, 5], "steps": 2}),
    ("linear_3d", "layer", "Linear", {"in_features": 5, "out_features": 3},
     {"shape": [2, 4, 5], "scale": 1.0}),
    ("linear_1d", "layer", "Linear", {"in_features": 5, "out_features": 3},
     {"shape": [5], "scale": 1.0}),
    ("nll", "loss", "NLLLoss", {}, {"x": "logp", "t": "idx"}),
    ("nll_sum", "loss", "NLLLoss", {"reduction": "sum"}, {"x": "logp", "t": "idx"}),
    ("nll_none_ignore", "loss", "NLLLoss", {"reduction": "none"}, {"x": "logp", "t": "idx_ign"}),
    ("nll_weight_ignore", "loss", "NLLLoss", {"weight": W4}, {"x": "logp", "t": "idx_ign"}),
    ("nll_ignore_index_1", "loss", "NLLLoss", {"ignore_index": 1, "weight": W4},
     {"x": "logp", "t": "idx_ign"}),
    ("nll_nd", "loss", "NLLLoss", {"weight": W4}, {"x": "logp_nd", "t": "idx"}),
    ("bce", "loss", "BCELoss", {}, {"x": "prob", "t": "bin"}),
    ("bce_sum", "loss", "BCELoss", {"reduction": "sum"}, {"x": "prob", "t": "bin"}),
    ("bce_none_weight", "loss", "BCELoss", {"reduction": "none", "weight": W4},
     {"x": "prob", "t": "bin"}),
    ("bce_edges", "loss", "BCELoss", {"reduction": "none"}, {"x": "prob_edges", "t": "bin_edges"}),
    ("bce_edges_mean", "loss", "BCELoss", {}, {"x": "prob_edges", "t": "bin_edges"}),
    ("l1", "loss", "L1Loss", {}, {"x": "real", "t": "real_ties"}),
    ("l1_sum", "loss", "L1Loss", {"reduction": "sum"}, {"x": "real", "t": "real"}),
    ("l1_none", "loss", "L1Loss", {"reduction": "none"}, {"x": "real", "t": "real"}),
    ("smooth_l1", "loss", "SmoothL1Loss", {}, {"x": "real", "t": "real"}),
    ("smooth_l1_beta05_none", "loss", "SmoothL1Loss", {"reduction": "none", "beta": 0.5},
     {"x": "real", "t": "real"}),
    ("smooth_l1_beta0", "loss", "SmoothL1Loss", {"beta": 0.0}, {"x": "real", "t": "real_ties"}),
    ("smooth_l1_beta2_sum", "loss", "SmoothL1Loss", {"reduction": "sum", "beta": 2.0},
     {"x": "real", "t": "real"}),
    ("huber", "loss", "HuberLoss", {}, {"x": "real", "t": "real"}),
    ("huber_delta03_none", "loss", "HuberLoss", {"reduction": "none", "delta": 0.3},
     {"x": "real", "t": "real"}),
    ("huber_delta2_sum", "loss", "HuberLoss", {"reduction": "sum", "delta": 2.0},
     {"x": "real", "t": "real"}),
    ("kldiv_mean", "loss", "KLDivLoss", {}, {"x": "logp", "t": "prob_zeros"}),
    ("kldiv_batchmean", "loss", "KLDivLoss", {"reduction": "batchmean"},
     {"x": "logp", "t": "prob_zeros"}),
    ("kldiv_sum", "loss", "KLDivLoss", {"reduction": "sum"}, {"x": "logp", "t": "prob_zeros"}),
    ("kldiv_none", "loss", "KLDivLoss", {"reduction": "none"}, {"x": "logp", "t": "prob_zeros"}),
    ("kldiv_log_target", "loss", "KLDivLoss", {"reduction": "batchmean", "log_target": True},
     {"x": "logp", "t": "logp_t"}),
]
# fmt: on


def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    s = z - z.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def make_loss_arrays(spec: dict, kwargs: dict, rng: np.random.Generator) -> tuple:
    shape = (5, 4)
    kind = spec["x"]
    if kind == "logp":
        x = _log_softmax(rng.standard_normal(shape) * 2, 1)
    elif kind == "logp_nd":
        shape = (3, 4, 2)
        x = _log_softmax(rng.standard_normal(shape) * 2, 1)
    elif kind == "prob":
        x = rng.uniform(0.02, 0.98, shape)
    elif kind == "prob_edges":
        x = np.array([[0.0, 1.0, 1e-15, 1 - 1e-7], [0.0, 1.0, 0.5, 1e-30],
                      [0.3, 1e-12, 0.999, 0.0]])  # fmt: skip
        shape = x.shape
    else:
        x = rng.standard_normal(shape) * 2
    t_kind = spec["t"]
    c = shape[1]
    batch = (shape[0],) + shape[2:]
    if t_kind in ("idx", "idx_ign"):
        t = rng.integers(0, c, batch)
        if t_kind == "idx_ign":
            t.reshape(-1)[[1, 3]] = kwargs.get("ignore_index", -100)
    elif t_kind == "bin":
        t = rng.random(shape)
        t.reshape(-1)[:3] = [0.0, 1.0, 1.0]
    elif t_kind == "bin_edges":
        t = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.3, 1.0], [1.0, 1.0, 0.0, 0.5]])
    elif t_kind == "prob_zeros":
        p = rng.random(shape)
        p[0, 1] = p[2, 3] = 0.0
        t = p / p.sum(axis=1, keepdims=True)
    elif t_kind == "logp_t":
        t = _log_softmax(rng.standard_normal(shape), 1)
    elif t_kind == "real_ties":
        t = rng.standard_normal(shape) * 2
        t.reshape(-1)[[0, 5]] = x.reshape(-1)[[0, 5]]  # exact ties: the kink's derivative
    else:
        t = rng.standard_normal(shape) * 2
    return x, t


def _torch_kwargs(kwargs: dict, tdt: torch.dtype) -> dict:
    return {k: torch.tensor(v, dtype=tdt) if isinstance(v, list) and k == "weight" else
            (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}  # fmt: skip


def record_layer(name: str, cls: str, kwargs: dict, spec: dict, rng: np.random.Generator,
                 out: dict) -> None:  # fmt: skip
    steps = spec.get("steps", 1)
    calls = [("train", k) for k in range(steps)] + ([("eval", steps)] if spec.get("eval") else [])
    if "idx" in spec:
        xs = [rng.integers(0, kwargs["num_embeddings"], spec["idx"]) for _ in calls]
        for xi in xs:  # the padding row appears, and some row twice
            xi.reshape(-1)[:2] = [kwargs.get("padding_idx", 0) % kwargs["num_embeddings"], 1]
            xi.reshape(-1)[-1] = 1
    else:
        xs = [rng.standard_normal(spec["shape"]) * spec["scale"] + 0.3 * spec["scale"]
              for _ in calls]  # fmt: skip
    mod64 = getattr(torch.nn, cls)(**_torch_kwargs(kwargs, torch.float64), dtype=torch.float64)
    params = {
        n: rng.standard_normal(tuple(p.shape)) * 0.5 + 1.0 for n, p in mod64.named_parameters()
    }
    for dtype in ("float64", "float32"):
        tdt = getattr(torch, dtype)
        mod = getattr(torch.nn, cls)(**_torch_kwargs(kwargs, tdt), dtype=tdt)
        with torch.no_grad():
            for n, p in mod.named_parameters():
                p.copy_(torch.tensor(params[n].astype(dtype)))
                out[f"{name}/{dtype}/p/{n}"] = params[n].astype(dtype)
        for k, ((mode, _), x_np) in enumerate(zip(calls, xs)):
            mod.train(mode == "train")
            for p in mod.parameters():
                p.grad = None
            is_idx = x_np.dtype.kind in "iu"
            x_in = x_np if is_idx else x_np.astype(dtype)
            x = torch.tensor(x_in) if is_idx else torch.tensor(x_in, requires_grad=True)
            y = mod(x)
            g = np.random.default_rng(100 + k).standard_normal(tuple(y.shape)).astype(dtype)
            y.backward(torch.tensor(g))
            key = f"{name}/{dtype}/{k}"
            out[f"{key}/x"] = x_in
            out[f"{key}/grad"] = g
            out[f"{key}/out"] = y.detach().numpy()
            if not is_idx:
                out[f"{key}/dx"] = x.grad.numpy()
            for n, p in mod.named_parameters():
                grad = p.grad
                if grad is not None and grad.is_sparse:
                    grad = grad.coalesce()
                    out[f"{key}/rows"] = np.unique(grad.indices().numpy().reshape(-1))
                    grad = grad.to_dense()
                grad = torch.zeros_like(p) if grad is None else grad
                out[f"{key}/g/{n}"] = grad.detach().numpy()
            for n, b in mod.named_buffers():
                out[f"{key}/b/{n}"] = b.detach().numpy().copy()


def record_loss(name: str, cls: str, kwargs: dict, spec: dict, rng: np.random.Generator,
                out: dict) -> None:  # fmt: skip
    x64, t64 = make_loss_arrays(spec, kwargs, rng)
    for dtype in ("float64", "float32"):
        tdt = getattr(torch, dtype)
        mod = getattr(torch.nn, cls)(**_torch_kwargs(kwargs, tdt))
        x = torch.tensor(x64.astype(dtype), requires_grad=True)
        t_np = t64 if t64.dtype.kind in "iu" else t64.astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = mod(x, torch.tensor(t_np))
        if y.ndim == 0:
            g = np.array(1.0, dtype)
        else:
            g = np.random.default_rng(7).standard_normal(tuple(y.shape)).astype(dtype)
        y.backward(torch.tensor(g))
        key = f"{name}/{dtype}"
        out[f"{key}/x"] = x64.astype(dtype)
        out[f"{key}/target"] = t_np
        out[f"{key}/grad"] = g
        out[f"{key}/out"] = y.detach().numpy()
        out[f"{key}/dx"] = x.grad.numpy()


def record() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(2026)
    for name, kind, cls, kwargs, spec in CASES:
        if kind == "layer":
            record_layer(name, cls, kwargs, spec, rng, out)
        else:
            record_loss(name, cls, kwargs, spec, rng, out)
    out["cases"] = np.array(json.dumps([list(c) for c in CASES]))
    out["torch_version"] = np.array(torch.__version__)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/layers_torch.npz"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    arrays = record()
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({len(CASES)} cases, {len(arrays)} arrays, torch {torch.__version__})")


if __name__ == "__main__":
    main()

"""Record PyTorch 2.13's SparseAdam and LBFGS trajectories (tests/test_sparse_adam_lbfgs_parity.py).

Neither fits the family's least-squares harness (scripts/make_family_fixtures.py): SparseAdam
needs a sparse gradient, which only ``nn.Embedding(sparse=True)`` gives, and LBFGS takes a closure
that it calls many times per ``step()``. Both are recorded in float64 (``torch.float64`` default
dtype, so that LBFGS's scalars and buffers are float64 too).

SparseAdam (``tests/fixtures/sparse_adam_*.npz``): an ``nn.Embedding(20, 6, sparse=True)`` whose
weight starts at a stored ``w0``; 300 steps, each on a batch of 8 indices drawn from rows 0..16
(rows 17..19 never appear, and most rows are absent from any one batch; a row drawn twice sums
its gradients, as the sparse gradient's ``coalesce``), loss
``0.5 * sum_k weight_k * sum_d c_d * (E[idx_k, d] - T[k, d])**2`` with column scales
``c_d = 2**(-6 d)`` (down to 2**-30, so eps dominates ``sqrt(v)`` in the last columns), targets
``T = int8 / 16`` and per-position weights ``weight_k`` (1, or 0 for some positions in the
``zero_rows`` fixture: a row that appears only at such positions is in PyTorch's sparse index set
with a zero gradient, so it steps by its momentum; the dense-gradient path cannot see it). Stored:
the batches, the parameters at the checkpoints, ``||w||`` after every step and the final
``exp_avg``, ``exp_avg_sq`` and ``step`` of PyTorch's state dict.

LBFGS (``tests/fixtures/lbfgs_*.npz``): a logistic regression with L2 term, ``loss(w) =
mean(log(1 + exp(-y * (X @ w)))) + 0.5 * lam * ||w||**2`` for ``X`` (64 x 10, stored) and
``y = +-1``, the loss and gradient written in NumPy and the same function called as the closure on
both sides (torch's closure copies the parameter out to NumPy and the gradient back into
``.grad``). 40 ``step()`` calls of ``torch.optim.LBFGS(..., max_iter=5, history_size=7)``, the
parameter a flat vector of 10 plus a bias of 1 (two tensors, one group); with and without
``line_search_fn="strong_wolfe"``. Stored: the parameters and the loss ``step()`` returned after
every call, the closure's call count per ``step()`` and the final state (``func_evals``,
``n_iter``, ``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``,
``prev_loss``).

Run by hand with the reference libraries (never in the project venv):

    PYTHONPATH=. /work/main/.venv-bench/bin/python scripts/make_sparse_lbfgs_fixtures.py
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent.parent / "tests" / "fixtures"
STEPS = 300
CHECKPOINTS = (1, 2, 5, 20, 100, 300)
N_ROWS, DIM, BATCH, DRAWN = 20, 6, 8, 17

SPARSE_ADAM = [
    dict(name="sparse_adam_eps1e-8", kwargs=dict(lr=1e-2)),
    dict(name="sparse_adam_eps1e-3", kwargs=dict(lr=1e-2, eps=1e-3)),
    dict(name="sparse_adam_maximize_betas", kwargs=dict(lr=3e-3, betas=(0.8, 0.99),
                                                        maximize=True)),
    dict(name="sparse_adam_zero_rows_padding", kwargs=dict(lr=1e-2), padding_idx=3,
         zero_weights=True),
]


def sparse_problem(seed: int, zero_weights: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal((N_ROWS, DIM))
    idx = rng.integers(0, DRAWN, (STEPS, BATCH)).astype(np.int8)
    targets = rng.integers(-64, 64, (STEPS, BATCH, DIM)).astype(np.int8)
    weights = np.ones((STEPS, BATCH), np.int8)
    if zero_weights:
        weights[rng.random((STEPS, BATCH)) < 0.3] = 0
    return {"w0": w0, "idx": idx, "targets": targets, "weights": weights,
            "col_scale": 2.0 ** (-6.0 * np.arange(DIM))}


def record_sparse_adam(fx: dict) -> dict[str, np.ndarray]:
    torch.set_default_dtype(torch.float64)
    prob = sparse_problem(len(fx["name"]), fx.get("zero_weights", False))
    w0 = prob["w0"].copy()
    pad = fx.get("padding_idx")
    if pad is not None:
        w0[pad] = 0
    prob["w0"] = w0
    emb = torch.nn.Embedding(N_ROWS, DIM, padding_idx=pad, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(w0))
    opt = torch.optim.SparseAdam(emb.parameters(), **fx["kwargs"])
    c = torch.from_numpy(prob["col_scale"])
    ckpts, norms = [], []
    for t in range(STEPS):
        opt.zero_grad()
        out = emb(torch.from_numpy(prob["idx"][t].astype(np.int64)))
        T = torch.from_numpy(prob["targets"][t].astype(np.float64) / 16)
        wk = torch.from_numpy(prob["weights"][t].astype(np.float64))
        loss = 0.5 * (wk[:, None] * c[None, :] * (out - T) ** 2).sum()
        loss.backward()
        assert emb.weight.grad.is_sparse
        opt.step()
        w = emb.weight.detach().numpy().copy()
        norms.append(np.linalg.norm(w))
        if t + 1 in CHECKPOINTS:
            ckpts.append(w)
    st = opt.state_dict()["state"][0]
    untouched = np.setdiff1d(np.arange(N_ROWS), prob["idx"].ravel())
    assert (np.asarray(ckpts[-1])[untouched] == w0[untouched]).all()
    return {**prob, "checkpoints": np.array(ckpts), "norms": np.array(norms),
            "exp_avg": st["exp_avg"].numpy(), "exp_avg_sq": st["exp_avg_sq"].numpy(),
            "step": np.array(float(st["step"]))}


LBFGS_STEPS = 40
LBFGS = [
    dict(name="lbfgs_fixed_step", kwargs=dict(lr=0.5, max_iter=5, history_size=7)),
    dict(name="lbfgs_strong_wolfe", kwargs=dict(lr=1.0, max_iter=5, history_size=7,
                                                line_search_fn="strong_wolfe")),
    dict(name="lbfgs_strong_wolfe_defaults", kwargs=dict(line_search_fn="strong_wolfe"),
         steps=30),
]
LBFGS_STATE = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")


LBFGS_MID = 3  # the state is also stored before step 4, far from convergence


def lbfgs_state(st: dict, prefix: str) -> dict[str, np.ndarray]:
    """PyTorch's LBFGS state as float64 arrays ``{prefix}state_{key}`` (``al``: NaN for None)."""
    out = {}
    for key in LBFGS_STATE:
        value = st[key]
        if isinstance(value, list):
            value = [v.numpy() if isinstance(v, torch.Tensor) else v for v in value]
        elif isinstance(value, torch.Tensor):
            value = value.numpy()
        out[f"{prefix}state_{key}"] = np.array(value, dtype=np.float64)
    out[f"{prefix}state_al"] = np.array([np.nan if v is None else float(v) for v in st["al"]])
    return out


def logistic_problem() -> dict[str, np.ndarray]:
    """64 samples of 10 features scaled from 1 down to 2**-3.6, labels +-1 with noise (a finite
    optimum), L2 weight 1e-3 on w; a bias b. Conditioned so that round-off does not grow: a
    1e-13 nudge of w0 moves the 40-step trajectory by less than 1e-11 (checked below; with
    features down to 2**-9 and L2 1e-4 it grew 1e5-fold, and PyTorch's own fused add and BLAS
    dot products then decide the last digits)."""
    rng = np.random.default_rng(2026)
    x = rng.standard_normal((64, 10)) * 2.0 ** (-0.4 * np.arange(10))
    w_true = rng.standard_normal(10) * 2.0 ** (0.4 * np.arange(10)) / 8
    y = np.sign(x @ w_true + 0.5 * rng.standard_normal(64))
    return {"x": x, "y": y, "lam": np.array(1e-3), "w0": rng.standard_normal(10) * 0.1,
            "b0": np.array([0.05])}


def logistic_loss(prob: dict[str, np.ndarray], w: np.ndarray, b: np.ndarray
                  ) -> tuple[float, np.ndarray, np.ndarray]:  # fmt: skip
    """``mean(log(1 + exp(-y (X w + b)))) + 0.5 lam ||w||**2`` and its gradients (NumPy; the
    test has the same function)."""
    z = prob["y"] * (prob["x"] @ w + b[0])
    loss = np.mean(np.logaddexp(0.0, -z)) + 0.5 * prob["lam"] * w.dot(w)
    s = -prob["y"] / (1.0 + np.exp(z)) / z.size
    return float(loss), prob["x"].T @ s + prob["lam"] * w, np.array([s.sum()])


def record_lbfgs(fx: dict, nudge: float = 0.0) -> dict[str, np.ndarray]:
    torch.set_default_dtype(torch.float64)
    prob = logistic_problem()
    prob["w0"] = prob["w0"] * (1 + nudge)
    w = torch.nn.Parameter(torch.from_numpy(prob["w0"].copy()))
    b = torch.nn.Parameter(torch.from_numpy(prob["b0"].copy()))
    opt = torch.optim.LBFGS([w, b], **fx["kwargs"])
    calls = [0]

    def closure() -> float:
        calls[0] += 1
        loss, gw, gb = logistic_loss(prob, w.detach().numpy(), b.detach().numpy())
        w.grad = torch.from_numpy(gw)
        b.grad = torch.from_numpy(gb)
        return loss

    params, losses, evals, iters, ncalls = [], [], [], [], []
    mid: dict[str, np.ndarray] = {}
    for k in range(fx.get("steps", LBFGS_STEPS)):
        if k == LBFGS_MID:
            mid = lbfgs_state(opt.state_dict()["state"][0], "mid_")
        losses.append(float(opt.step(closure)))
        params.append(np.concatenate([w.detach().numpy(), b.detach().numpy()]))
        st = opt.state_dict()["state"][0]
        evals.append(st["func_evals"])
        iters.append(st["n_iter"])
        ncalls.append(calls[0])
    st = opt.state_dict()["state"][0]
    out = {**prob, "params": np.array(params), "losses": np.array(losses),
           "func_evals": np.array(evals), "n_iter": np.array(iters), "calls": np.array(ncalls),
           **mid, **lbfgs_state(st, "")}
    print(fx["name"], "final loss", losses[-1], "n_iter", iters[-1], "func_evals", evals[-1],
          "history", len(st["old_dirs"]))
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    version = importlib.metadata.version("torch")
    for fx in SPARSE_ADAM:
        arrays = record_sparse_adam(fx)
        config = {"name": fx["name"], "optimizer": "SparseAdam", "library": "PyTorch",
                  "library_version": version,
                  "kwargs": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in fx["kwargs"].items()},
                  "padding_idx": fx.get("padding_idx"), "steps": STEPS,
                  "checkpoints": list(CHECKPOINTS), "dtype": "float64"}
        np.savez_compressed(OUT / f"{fx['name']}.npz", config=np.array(json.dumps(config)),
                            **arrays)
        print(fx["name"], "written")
    for fx in LBFGS:
        arrays = record_lbfgs(fx)
        nudged = record_lbfgs(fx, 1e-13)["params"]
        amp = np.abs(nudged - arrays["params"]).max() / np.abs(arrays["params"]).max() / 1e-13
        assert amp < 1e2, f"{fx['name']}: a 1e-13 nudge of w0 grows {amp:.3g}x"
        print(fx["name"], f"sensitivity {amp:.2g}x")
        config = {"name": fx["name"], "optimizer": "LBFGS", "library": "PyTorch",
                  "library_version": version, "kwargs": fx["kwargs"],
                  "steps": fx.get("steps", LBFGS_STEPS), "dtype": "float64"}
        np.savez_compressed(OUT / f"{fx['name']}.npz", config=np.array(json.dumps(config)),
                            **arrays)


if __name__ == "__main__":
    main()

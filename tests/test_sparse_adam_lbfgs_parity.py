"""Replay PyTorch 2.13's SparseAdam and LBFGS (tests/fixtures/sparse_adam_*.npz, lbfgs_*.npz,
recorded by scripts/make_sparse_lbfgs_fixtures.py, whose docstring describes the problems) with
minnet, without torch: float64, within 1e-9 relative at every checkpoint.

SparseAdam is replayed twice: through ``Embedding(sparse=True)``, whose weight's ``grad_rows`` is
PyTorch's sparse index set, and through the dense-gradient path (a plain Parameter whose ``.grad``
is filled by NumPy, an all-zero row counting as absent). The two agree wherever every listed row
has a non-zero gradient; the ``zero_rows`` fixture has rows listed with a zero gradient, which
only the first path sees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minnet.nn import Embedding, Parameter
from minnet.optim import SparseAdam

FIXTURE_DIR = Path(__file__).parent / "fixtures"
SPARSE_ADAM = sorted(FIXTURE_DIR.glob("sparse_adam_*.npz"))
TOL = 1e-9


def load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, arrays) of one fixture."""
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    return json.loads(str(data.pop("config"))), data


def rel_gap(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|; NaN counts as an infinite gap."""
    diff = np.abs(np.asarray(ours, np.float64) - ref).max()
    return float("inf") if not np.isfinite(diff) else float(diff / np.abs(ref).max())


def _kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["kwargs"].items()}


def replay_sparse_adam(cfg: dict[str, Any], arrays: dict[str, np.ndarray], path: str
                       ) -> tuple[list[np.ndarray], np.ndarray, dict[str, Any]]:  # fmt: skip
    """(parameters at the checkpoints, ||w|| after every step, final state entry) of minnet
    through ``path``: ``"embedding"`` (``grad_rows``) or ``"dense"`` (a dense ``.grad``)."""
    pad = cfg["padding_idx"]
    w0 = arrays["w0"]
    c = arrays["col_scale"]
    if path == "embedding":
        emb = Embedding(*w0.shape, padding_idx=pad, sparse=True, dtype=np.float64, _weight=w0)
        w = emb.weight
    else:
        w = Parameter(w0.copy(), "weight")
    opt = SparseAdam([w], **_kwargs(cfg))
    ckpts, norms = [], []
    for t in range(cfg["steps"]):
        idx = arrays["idx"][t].astype(np.int64)
        targets = arrays["targets"][t] / 16
        wk = arrays["weights"][t].astype(np.float64)
        if path == "embedding":
            emb.zero_grad()
            out = np.asarray(emb(idx))
            emb.backward(wk[:, None] * c[None, :] * (out - targets))
        else:
            opt.zero_grad(set_to_none=False)
            g = wk[:, None] * c[None, :] * (w.data[idx] - targets)
            keep = idx != pad if pad is not None else np.ones(idx.size, bool)
            np.add.at(w.grad, idx[keep], g[keep])
        opt.step()
        norms.append(np.linalg.norm(w.data))
        if t + 1 in cfg["checkpoints"]:
            ckpts.append(w.data.copy())
    return ckpts, np.array(norms), opt.state_dict()["state"][0]


@pytest.mark.parametrize("path", ["embedding", "dense"])
@pytest.mark.parametrize("fixture", SPARSE_ADAM, ids=[p.stem for p in SPARSE_ADAM])
def test_sparse_adam_replays_pytorch(fixture: Path, path: str) -> None:
    cfg, arrays = load(fixture)
    assert cfg["library"] == "PyTorch" and cfg["steps"] >= 300 and cfg["dtype"] == "float64"
    ckpts, norms, state = replay_sparse_adam(cfg, arrays, path)
    gaps = [rel_gap(a, b) for a, b in zip(ckpts, arrays["checkpoints"], strict=True)]
    gaps.append(rel_gap(norms, arrays["norms"]))
    zero_rows = "zero_rows" in cfg["name"]
    if path == "dense" and zero_rows:
        # rows listed in PyTorch's sparse gradient with a zero gradient: the dense path cannot
        # tell them from absent rows, so it keeps them where PyTorch moves them
        assert max(gaps) > 1e-6
        return
    assert max(gaps) <= TOL, gaps
    assert state["step"] == float(arrays["step"])
    assert rel_gap(state["exp_avg"], arrays["exp_avg"]) <= TOL
    assert rel_gap(state["exp_avg_sq"], arrays["exp_avg_sq"]) <= TOL
    # rows that never appeared are bit-identical to w0, their moments 0
    never = np.setdiff1d(np.arange(arrays["w0"].shape[0]), arrays["idx"].ravel())
    assert never.size
    assert (ckpts[-1][never] == arrays["w0"][never]).all()
    assert (state["exp_avg"][never] == 0).all() and (state["exp_avg_sq"][never] == 0).all()


def test_sparse_adam_fixtures_cover_the_brief() -> None:
    """eps at its default and at a value that dominates, maximize, padding and zero rows."""
    names = {p.stem for p in SPARSE_ADAM}
    assert {"sparse_adam_eps1e-8", "sparse_adam_eps1e-3", "sparse_adam_maximize_betas",
            "sparse_adam_zero_rows_padding"} <= names  # fmt: skip

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


# -- LBFGS ---------------------------------------------------------------------------------------

LBFGS_FIXTURES = sorted(FIXTURE_DIR.glob("lbfgs_*.npz"))
LBFGS_MID = 3  # the fixtures also hold the state before step 4


def logistic_loss(prob: dict[str, np.ndarray], w: np.ndarray, b: np.ndarray
                  ) -> tuple[float, np.ndarray, np.ndarray]:  # fmt: skip
    """The fixture script's loss and gradients, ``mean(log(1 + exp(-y (X w + b)))) + 0.5 lam
    ||w||**2``, in NumPy."""
    z = prob["y"] * (prob["x"] @ w + b[0])
    loss = np.mean(np.logaddexp(0.0, -z)) + 0.5 * prob["lam"] * w.dot(w)
    s = -prob["y"] / (1.0 + np.exp(z)) / z.size
    return float(loss), prob["x"].T @ s + prob["lam"] * w, np.array([s.sum()])


def lbfgs_run(arrays: dict[str, np.ndarray], kwargs: dict[str, Any], steps: int,
              start: tuple[Any, ...] | None = None) -> dict[str, Any]:  # fmt: skip
    """minnet's LBFGS on the fixture's problem: per-step parameters, losses, counts, closure
    calls, and the optimizer. ``start``: (w, b, state dict) to resume from."""
    from minnet.optim import LBFGS

    w = Parameter(arrays["w0"].copy(), "w")
    b = Parameter(arrays["b0"].copy(), "b")
    opt = LBFGS([w, b], **kwargs)
    if start is not None:
        w.data[...], b.data[...] = start[0], start[1]
        opt.load_state_dict(start[2])
    calls = [0]

    def closure() -> float:
        calls[0] += 1
        loss, gw, gb = logistic_loss(arrays, w.data, b.data)
        w.grad, b.grad = gw, gb
        return loss

    out: dict[str, Any] = {"params": [], "losses": [], "func_evals": [], "n_iter": [],
                           "calls": []}  # fmt: skip
    for k in range(steps):
        if k == LBFGS_MID:
            out["mid"] = opt.state_dict()["state"][0]
        out["losses"].append(opt.step(closure))
        out["params"].append(np.concatenate([w.data, b.data]))
        st = opt.state_dict()["state"][0]
        out["func_evals"].append(st["func_evals"])
        out["n_iter"].append(st["n_iter"])
        out["calls"].append(calls[0])
    out["opt"], out["w"], out["b"] = opt, w, b
    return out


@pytest.mark.parametrize("fixture", LBFGS_FIXTURES, ids=[p.stem for p in LBFGS_FIXTURES])
def test_lbfgs_replays_pytorch(fixture: Path) -> None:
    cfg, arrays = load(fixture)
    assert cfg["library"] == "PyTorch" and cfg["steps"] >= 30 and cfg["dtype"] == "float64"
    run = lbfgs_run(arrays, cfg["kwargs"], cfg["steps"])
    for key in ("func_evals", "n_iter", "calls"):  # the same iterations and closure calls
        np.testing.assert_array_equal(run[key], arrays[key], err_msg=key)
    assert rel_gap(np.array(run["params"]), arrays["params"]) <= TOL
    assert rel_gap(np.array(run["losses"]), arrays["losses"]) <= TOL
    # the state far from convergence, to 1e-9; at the end the problem has converged (|g| ~
    # 1e-9, whose last digits are the loss's round-off), so the gradient-made arrays agree to
    # what round-off leaves of them, 1e-6 relative
    check_lbfgs_state(run["mid"], arrays, "mid_", TOL)
    check_lbfgs_state(run["opt"].state_dict()["state"][0], arrays, "", 1e-6)


def check_lbfgs_state(st: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str,
                      tol: float) -> None:  # fmt: skip
    """minnet's LBFGS state entry against PyTorch's, recorded under ``{prefix}state_{key}``."""
    for key in ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss"):
        ref = arrays[f"{prefix}state_{key}"]
        got = np.array(st[key], np.float64)
        assert got.shape == ref.shape, key
        assert rel_gap(got, ref) <= (TOL if key == "prev_loss" else tol), key
    al = np.array([np.nan if v is None else v for v in st["al"]])
    ref = arrays[f"{prefix}state_al"]
    np.testing.assert_array_equal(np.isnan(al), np.isnan(ref))
    assert rel_gap(al[~np.isnan(al)], ref[~np.isnan(al)]) <= tol


@pytest.mark.parametrize("fixture", LBFGS_FIXTURES[:2], ids=[p.stem for p in LBFGS_FIXTURES[:2]])
def test_lbfgs_resumes_bit_for_bit_from_its_state_dict(fixture: Path) -> None:
    """20 steps, a state dict through minnet.save / minnet.load, 20 more in a new optimizer:
    the same bits as 40 straight."""
    import tempfile

    import minnet

    cfg, arrays = load(fixture)
    straight = lbfgs_run(arrays, cfg["kwargs"], 40)
    half = lbfgs_run(arrays, cfg["kwargs"], 20)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lbfgs.npz"
        minnet.save({"w": half["w"].data, "b": half["b"].data,
                     "opt": half["opt"].state_dict()}, path)  # fmt: skip
        ckpt = minnet.load(path)
    rest = lbfgs_run(arrays, cfg["kwargs"], 20, (ckpt["w"], ckpt["b"], ckpt["opt"]))
    for a, b in zip(straight["params"][20:], rest["params"], strict=True):
        assert a.tobytes() == b.tobytes()
    assert straight["n_iter"][20:] == rest["n_iter"]
    sd_a, sd_b = straight["opt"].state_dict(), rest["opt"].state_dict()
    assert sd_a["param_groups"] == sd_b["param_groups"]
    for key, value in sd_a["state"][0].items():
        other = sd_b["state"][0][key]
        if isinstance(value, list):
            assert len(value) == len(other)
            for u, v in zip(value, other):
                assert np.array_equal(np.asarray(u, float), np.asarray(v, float), equal_nan=True)
        else:
            assert np.asarray(value).tobytes() == np.asarray(other).tobytes(), key

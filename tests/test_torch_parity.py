"""Replay PyTorch trajectories recorded by scripts/make_torch_fixtures.py (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import minnet

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("torch_*.npz"))


def replay(path: Path) -> tuple[dict, np.ndarray, np.ndarray, dict, dict]:
    """Run minnet on a fixture's set-up.

    Returns (config, our losses, PyTorch's losses, our final state_dict, PyTorch's final one).
    """
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    cfg = json.loads(str(data["config"]))
    dtype = np.dtype(cfg["dtype"])
    _, d_in, h, d_out = cfg["shape"]
    model = minnet.nn.Sequential(
        minnet.nn.Linear(d_in, h, bias=cfg["bias"][0], dtype=dtype, rng=0),
        minnet.nn.ReLU(),
        minnet.nn.Linear(h, d_out, bias=cfg["bias"][1], dtype=dtype, rng=0),
    )
    model.load_state_dict({k[len("init/") :]: v for k, v in data.items() if k.startswith("init/")})
    loss_fn = minnet.nn.MSELoss(reduction=cfg["reduction"])
    opt = minnet.optim.Adam(
        model.parameters(),
        lr=cfg["lr"],
        betas=tuple(cfg["betas"]),
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        amsgrad=cfg["amsgrad"],
    )
    x, y = data["x"], data["y"]
    losses = []
    for _ in range(cfg["steps"]):
        loss = loss_fn(model(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    final = {k[len("final/") :]: v for k, v in data.items() if k.startswith("final/")}
    return cfg, np.array(losses), data["losses"], model.state_dict(), final


def test_fixtures_present() -> None:
    names = {p.stem for p in FIXTURES}
    assert {"torch_seed_f64", "torch_seed_f32"} <= names
    assert len(names) >= 6


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_matches_pytorch(path: Path) -> None:
    cfg, ours, theirs, params, final = replay(path)
    if cfg["dtype"] == "float64":
        assert cfg["steps"] >= 200
        rel = np.abs(ours - theirs) / np.abs(theirs)
        assert rel.max() <= 1e-9, f"worst loss gap {rel.max():.3g} at step {rel.argmax()}"
        assert params.keys() == final.keys()
        for name, ref in final.items():
            gap = np.abs(params[name] - ref).max() / np.abs(ref).max()
            assert gap <= 1e-9, f"{name}: relative gap {gap:.3g}"
    else:
        assert cfg["steps"] >= 100
        rel = np.abs(ours - theirs) / np.abs(theirs)
        assert rel.max() <= 1e-3, f"worst loss gap {rel.max():.3g} at step {rel.argmax()}"

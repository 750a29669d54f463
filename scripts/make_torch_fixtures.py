"""Record PyTorch reference trajectories as small .npz fixtures for minnet's parity tests.

Run by hand in an environment with PyTorch (the tests only replay the files and need no torch):

    pip install torch==2.13.0
    python scripts/make_torch_fixtures.py            # writes tests/fixtures/torch_*.npz

Each fixture holds the configuration (as JSON text), PyTorch's initial weights, the data, the
loss printed at every step (before that step's update, as in the classic example) and the final
parameters. Keys: ``config``, ``x``, ``y``, ``init/<name>``, ``losses``, ``final/<name>``, and
``torch_version``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

# One training set-up per fixture. Shapes are (N, D_in, H, D_out); bias per Linear layer.
# fmt: off
_SEED = dict(shape=(64, 1000, 100, 10), bias=(True, True), reduction="sum", lr=1e-4,
             betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=True, seed=0)
_ADAM_WD = dict(shape=(16, 20, 32, 5), bias=(True, True), reduction="mean", lr=1e-2,
                betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2, amsgrad=False, seed=1)
_LOWBETA = dict(shape=(32, 8, 16, 3), bias=(True, False), reduction="sum", lr=3e-3,
                betas=(0.3, 0.95), eps=1e-3, weight_decay=1e-3, amsgrad=True, seed=2)
CONFIGS: list[dict] = [
    # The classic example, exactly.
    dict(name="seed_f64", dtype="float64", steps=250, **_SEED),
    dict(name="seed_f32", dtype="float32", steps=100, **_SEED),
    # Plain Adam, mean reduction, L2 weight decay, other betas and eps.
    dict(name="adam_wd_f64", dtype="float64", steps=300, **_ADAM_WD),
    dict(name="adam_wd_f32", dtype="float32", steps=100, **_ADAM_WD),
    # AMSGrad with beta1 < 0.5 (PyTorch's other lerp branch), a large eps, a bias-free layer.
    dict(name="amsgrad_lowbeta_f64", dtype="float64", steps=300, **_LOWBETA),
    dict(name="amsgrad_lowbeta_f32", dtype="float32", steps=100, **_LOWBETA),
]
# fmt: on


def record(cfg: dict) -> dict[str, np.ndarray]:
    """Run PyTorch on one configuration and return the arrays to store."""
    dtype = getattr(torch, cfg["dtype"])
    torch.manual_seed(cfg["seed"])
    n, d_in, h, d_out = cfg["shape"]
    x = torch.randn(n, d_in, dtype=dtype)
    y = torch.randn(n, d_out, dtype=dtype)
    model = torch.nn.Sequential(
        torch.nn.Linear(d_in, h, bias=cfg["bias"][0]),
        torch.nn.ReLU(),
        torch.nn.Linear(h, d_out, bias=cfg["bias"][1]),
    ).to(dtype)
    loss_fn = torch.nn.MSELoss(reduction=cfg["reduction"])
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=cfg["lr"],
        betas=cfg["betas"],
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        amsgrad=cfg["amsgrad"],
    )
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    losses = []
    for _ in range(cfg["steps"]):
        y_pred = model(x)
        loss = loss_fn(y_pred, y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = {
        "config": np.array(json.dumps(cfg)),
        "torch_version": np.array(torch.__version__),
        "x": x.numpy(),
        "y": y.numpy(),
        "losses": np.array(losses, dtype=np.float64),
    }
    out.update({f"init/{k}": v for k, v in init.items()})
    out.update({f"final/{k}": v.detach().numpy() for k, v in model.state_dict().items()})
    return out


def main() -> None:
    """Write one fixture per configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent.parent / "tests" / "fixtures"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for cfg in CONFIGS:
        arrays = record(cfg)
        path = args.out / f"torch_{cfg['name']}.npz"
        np.savez_compressed(path, **arrays)
        losses = arrays["losses"]
        print(f"{path}: {cfg['steps']} steps, loss {losses[0]:.6g} -> {losses[-1]:.6g}")


if __name__ == "__main__":
    main()

"""The classic PyTorch two-layer program that examples/seed_example.py ports (start-up timing).

64 x 1000 -> Linear(1000, 100) -> ReLU -> Linear(100, 10), MSELoss(reduction='sum'),
Adam(lr=1e-4, eps=1e-8, amsgrad=True), 500 steps; ``--quiet`` prints one summary line as the
minnet example does.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    """Train the seed model with PyTorch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    N, D_in, H, D_out = 64, 1000, 100, 10
    x = torch.randn(N, D_in)
    y = torch.randn(N, D_out)
    model = torch.nn.Sequential(
        torch.nn.Linear(D_in, H), torch.nn.ReLU(), torch.nn.Linear(H, D_out)
    )
    loss_fn = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-8, amsgrad=True)
    start = time.perf_counter()
    for t in range(args.steps):
        y_pred = model(x)
        loss = loss_fn(y_pred, y)
        if not args.quiet:
            print(t, loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    if args.quiet:
        print(f"steps={args.steps} final_loss={loss.item():.6g} time={elapsed:.3f}s")


if __name__ == "__main__":
    main()

"""The classic PyTorch two-layer example, ported to minnet.

    64 x 1000 -> Linear(1000, 100) -> ReLU -> Linear(100, 10), MSELoss(reduction='sum'),
    Adam(lr=1e-4, eps=1e-8, amsgrad=True), 500 steps, printing "t loss" per step.

The only changes from the PyTorch program are the imports and NumPy data: ``loss.backward()``
runs the layers' hand-written backward passes on the state of the calls that produced the loss.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import minnet


def main(argv: list[str] | None = None) -> float:
    """Train the seed model; return the final loss."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights (default 0)")
    parser.add_argument("--quiet", action="store_true", help="print only a final summary line")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")

    rng = np.random.default_rng(args.seed)
    N, D_in, H, D_out = 64, 1000, 100, 10
    x = rng.standard_normal((N, D_in), dtype=np.float32)
    y = rng.standard_normal((N, D_out), dtype=np.float32)
    model = minnet.nn.Sequential(
        minnet.nn.Linear(D_in, H, rng=rng), minnet.nn.ReLU(), minnet.nn.Linear(H, D_out, rng=rng)
    )
    loss_fn = minnet.nn.MSELoss(reduction="sum")
    optimizer = minnet.optim.Adam(model.parameters(), lr=1e-4, eps=1e-8, amsgrad=True)

    start = time.perf_counter()
    first = None
    first_step = 0.0  # the first step loads or compiles the Numba kernels: timed apart
    for t in range(args.steps):
        y_pred = model(x)
        loss = loss_fn(y_pred, y)
        if first is None:
            first = loss.item()
        if not args.quiet:
            print(t, loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if t == 0:
            first_step = time.perf_counter() - start
    elapsed = time.perf_counter() - start - first_step
    if args.quiet:
        rest = max(args.steps - 1, 1)
        print(
            f"steps={args.steps} first_loss={first:.6g} final_loss={loss.item():.6g} "
            f"first_step={first_step:.3f}s (kernels loaded or compiled) "
            f"time={elapsed:.3f}s for the other {args.steps - 1} ({1e3 * elapsed / rest:.3f} "
            "ms/step)"
        )
    return loss.item()


if __name__ == "__main__":
    main()

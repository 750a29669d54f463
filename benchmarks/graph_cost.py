"""What recording the calls costs per seed step: one process alternates three forms of the step.

    python -m benchmarks.graph_cost [THREADS] [ROUNDS]

The seed step (64x1000 -> 100 -> ReLU -> 10, ``MSELoss(reduction='sum')``, ``Adam(amsgrad=True)``)
runs in blocks of 300 steps, the three forms in turn, ``ROUNDS`` times (default 21):

* ``forward() calls``: ``model.forward(x)``, ``loss_fn.forward(...)`` and
  ``model.backward(loss_fn.backward())``: no call is recorded (the layers keep their state in
  their attributes, as before per-call graphs);
* ``loss.backward()``: ``loss_fn(model(x), y)`` and ``loss.backward()``;
* ``model.backward(loss_fn.backward())`` after recorded calls (the hand-written chain).

Each block is timed with the process's CPU time (``time.process_time``: other processes on the
machine add little), and every ratio is taken per round, then the median and quartiles printed.
``THREADS`` (default 1) fixes minnet's thread count; with 2 the CPU time includes the pool's
waiting, so 1 measures the Python-side cost best.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

import minnet

STEPS = 300


def forms() -> dict[str, Callable[[], None]]:
    """The three forms of the step, over one model, loss and optimizer."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1000), dtype=np.float32)
    y = rng.standard_normal((64, 10), dtype=np.float32)
    nn = minnet.nn
    model = nn.Sequential(nn.Linear(1000, 100, rng=rng), nn.ReLU(), nn.Linear(100, 10, rng=rng))
    loss_fn = nn.MSELoss(reduction="sum")
    opt = minnet.optim.Adam(model.parameters(), lr=1e-4, eps=1e-8, amsgrad=True)

    def direct() -> None:
        loss = loss_fn.forward(model.forward(x), y)
        loss.item()
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()

    def recorded() -> None:
        loss = loss_fn(model(x), y)
        loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def chain() -> None:
        loss = loss_fn(model(x), y)
        loss.item()
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()

    return {
        "forward() calls": direct,
        "loss.backward()": recorded,
        "model.backward(loss_fn.backward())": chain,
    }


def main(argv: list[str]) -> None:
    """Print one line per form: median us per step and the per-round ratio to the first."""
    minnet.set_num_threads(int(argv[0]) if argv else 1)
    rounds = int(argv[1]) if len(argv) > 1 else 21
    steps = forms()
    for f in steps.values():
        for _ in range(STEPS):
            f()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, f in steps.items():
            t0 = time.process_time()
            for _ in range(STEPS):
                f()
            times[name].append((time.process_time() - t0) / STEPS * 1e6)
    base = np.array(times["forward() calls"])
    for name, v in times.items():
        r = np.array(v) / base
        print(
            f"{name:36s} median {np.median(v):6.1f} us   ratio {np.median(r):.4f} "
            f"(IQR {np.percentile(r, 25):.4f}-{np.percentile(r, 75):.4f})"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

"""Where minnet's seed training step spends its time: one process times each part of the step.

    python -m benchmarks.parts STEPS [THREADS]

runs the README's seed loop (64x1000 -> 100 -> ReLU -> 10, ``MSELoss(reduction='sum')``,
``Adam(amsgrad=True)``) with a clock read between its parts, and prints one JSON line: for every
part, the per-step times in seconds (after a warm-up), plus the whole step's. The parts call what
``Sequential.forward`` / ``Sequential.backward`` call, module by module, in the same order and
with the same arguments, so the instrumented step does what the plain one does; the clock reads
themselves add ~0.1 us per part. ``THREADS`` fixes minnet's thread count
(``minnet.set_num_threads``); without it the default thread policy runs.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import minnet
from benchmarks import impls

WARM_STEPS = 200


def part_names(model: minnet.nn.Sequential) -> list[str]:
    """The parts in step order, e.g. ``forward 0 Linear(1000->100)``."""

    def name(i: int, m: minnet.nn.Module) -> str:
        if isinstance(m, minnet.nn.Linear):
            return f"{i} Linear({m.in_features}->{m.out_features})"
        return f"{i} {type(m).__name__}"

    layers = list(model)
    return (
        [f"forward {name(i, m)}" for i, m in enumerate(layers)]
        + ["loss", "loss.item()", "optimizer.zero_grad()", "loss_fn.backward()"]
        + [f"backward {name(i, layers[i])}" for i in range(len(layers) - 1, -1, -1)]
        + ["optimizer.step()"]
    )


def run(steps: int, threads: int | None) -> dict[str, list[float]]:
    """Time ``steps`` instrumented seed steps; ``{part: [seconds per step]}`` plus ``"step"``."""
    if threads is not None:
        minnet.set_num_threads(threads)
    data = impls.seed_data()
    x, y = data["x"], data["y"]
    nn = minnet.nn
    model = nn.Sequential(
        nn.Linear(impls.D_IN, impls.H), nn.ReLU(), nn.Linear(impls.H, impls.D_OUT)
    )
    for name, p in model.named_parameters():
        p.data[...] = data[name]
    loss_fn = nn.MSELoss(reduction="sum")
    optimizer = minnet.optim.Adam(model.parameters(), lr=1e-4, eps=1e-8, amsgrad=True)
    layers = list(model)
    last = len(layers) - 1
    clock = time.perf_counter
    names = part_names(model)
    times = np.empty((steps, len(names) + 1))
    marks = [0.0] * (len(names) + 1)
    for t in range(WARM_STEPS + steps):
        j = 0
        marks[0] = clock()
        h = x
        for i, m in enumerate(layers):  # Sequential.forward
            h = m._forward(h, i < last)
            j += 1
            marks[j] = clock()
        loss = loss_fn(h, y)
        marks[j + 1] = clock()
        loss.item()
        marks[j + 2] = clock()
        optimizer.zero_grad()
        marks[j + 3] = clock()
        g = loss_fn.backward()
        j += 4
        marks[j] = clock()
        for i in range(last, -1, -1):  # Sequential.backward (no input gradient)
            g = layers[i]._backward(g, i > 0, i > 0)
            j += 1
            marks[j] = clock()
        optimizer.step()
        marks[j + 1] = clock()
        if t >= WARM_STEPS:
            row = times[t - WARM_STEPS]
            row[:-1] = np.diff(marks)
            row[-1] = marks[-1] - marks[0]
    out = {n: times[:, i].tolist() for i, n in enumerate(names)}
    out["step"] = times[:, -1].tolist()
    return out


def main(argv: list[str]) -> None:
    """Print the JSON line."""
    steps = int(argv[0])
    threads = int(argv[1]) if len(argv) > 1 else None
    print(json.dumps(run(steps, threads)))


if __name__ == "__main__":
    main(sys.argv[1:])

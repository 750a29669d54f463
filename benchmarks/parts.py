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


def _stages(model: minnet.nn.Sequential, backward: bool) -> list[list[int]]:
    """The module indices each call of ``Sequential.forward`` (or ``backward``) covers, in call
    order: ``[i]``, or ``[i, i + 1]`` for a pair that runs as one call (a ReLU before a small
    Linear)."""
    n, pairs, out = len(model), model._pairs, []
    if not backward:
        i = 0
        while i < n:
            out.append([i, i + 1] if i in pairs else [i])
            i += len(out[-1])
    else:
        i = n - 1
        while i >= 0:
            out.append([i - 1, i] if i - 1 in pairs and i > 1 else [i])
            i -= len(out[-1])
    return out


def part_names(model: minnet.nn.Sequential) -> list[str]:
    """The parts in step order, e.g. ``forward 0 Linear(1000->100)``, ``forward 1-2
    ReLU+Linear(100->10)`` for a pair that runs as one call."""

    def name(m: minnet.nn.Module) -> str:
        if isinstance(m, minnet.nn.Linear):
            return f"Linear({m.in_features}->{m.out_features})"
        return type(m).__name__

    def stage(idx: list[int]) -> str:
        return "-".join(map(str, idx)) + " " + "+".join(name(model[i]) for i in idx)

    return (
        [f"forward {stage(s)}" for s in _stages(model, False)]
        + ["loss", "loss.item()", "optimizer.zero_grad()", "loss_fn.backward()"]
        + [f"backward {stage(s)}" for s in _stages(model, True)]
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
    forward_stages, backward_stages = _stages(model, False), _stages(model, True)
    times = np.empty((steps, len(names) + 1))
    marks = [0.0] * (len(names) + 1)
    for t in range(WARM_STEPS + steps):
        j = 0
        marks[0] = clock()
        h = x
        for st in forward_stages:  # Sequential.forward
            i = st[-1]
            if len(st) == 1:
                h = layers[i]._forward(h, i < last)
            else:
                h = layers[i]._forward_pair(layers[i - 1], h, i - 1 < last, i < last)
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
        for st in backward_stages:  # Sequential.backward (no input gradient)
            i = st[-1]
            if len(st) == 1:
                g = layers[i]._backward(g, i > 0, i > 0)
            else:
                g = layers[i]._backward_pair(layers[i - 1], g)
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

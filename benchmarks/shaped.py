"""Adafactor and Muon on one matrix: minnet's step against PyTorch's, per-round ratios.

``python -m benchmarks.shaped`` (needs the ``bench`` extra: torch) times ``step()`` of
``minnet.optim.Adafactor`` and ``minnet.optim.Muon`` (their updates need each matrix's shape:
NumPy/BLAS over shaped views, not an element kernel) against ``torch.optim.Adafactor``
(``foreach=True``, its fastest CPU path) and ``torch.optim.Muon`` on float32 matrices of the seed
model's 1000x100 and of 1024x1024, with the same defaults on both sides. Both libraries run in
this one process on the machine's default threads (NumPy's BLAS and PyTorch's intra-op pool both
use every core); each round times a block of steps of each in turn, and the ratio PyTorch /
minnet is taken per round, then medianed. Prints one line per case: the median microseconds of
each, the median ratio and its range over the rounds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np


def _block(step: Callable[[], None], seconds: float) -> float:
    """Microseconds per call of ``step`` over a block of about ``seconds``."""
    n = 0
    start = time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n * 1e6


def _cases(shape: tuple[int, int]) -> list[tuple[str, Callable[[], None], Callable[[], None]]]:
    """``(name, minnet step, PyTorch step)`` for Adafactor and Muon on a ``shape`` matrix."""
    import torch

    import minnet

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(shape).astype(np.float32) * 0.05
    g0 = rng.standard_normal(shape).astype(np.float32) * 1e-2
    out = []
    for name, ours, theirs in (
        ("Adafactor", lambda ps: minnet.optim.Adafactor(ps),
         lambda ps: torch.optim.Adafactor(ps, foreach=True)),
        ("Muon", lambda ps: minnet.optim.Muon(ps), lambda ps: torch.optim.Muon(ps)),
    ):  # fmt: skip
        p = minnet.nn.Parameter(w0.copy())
        p.grad = g0.copy()
        opt = ours([p])
        t = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        t.grad = torch.from_numpy(g0.copy())
        topt = theirs([t])
        out.append((name, opt.step, topt.step))
    return out


def main(argv: list[str] | None = None) -> None:
    """Run every case and print its line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shaped", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one timed block")
    args = parser.parse_args(argv)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; float32")
    print("case | minnet us | PyTorch us | PyTorch / minnet per round: median (min-max)")
    for shape in ((1000, 100), (1024, 1024)):
        for name, ours, theirs in _cases(shape):
            for _ in range(3):  # warm-up: first-step state, caches
                ours()
                theirs()
            mine, other, ratio = [], [], []
            for _ in range(args.rounds):
                a = _block(ours, args.seconds)
                b = _block(theirs, args.seconds)
                mine.append(a)
                other.append(b)
                ratio.append(b / a)
            print(f"{name} {shape[0]}x{shape[1]} | {np.median(mine):.0f} | "
                  f"{np.median(other):.0f} | {np.median(ratio):.2f}x "
                  f"({min(ratio):.2f}-{max(ratio):.2f})")


if __name__ == "__main__":
    main()

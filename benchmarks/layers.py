"""Convolution and attention layers, minnet against PyTorch CPU: forward + backward per call.

    python -m benchmarks.layers [--rounds R] [--block S] [--threads T] [--only conv|mha]

Two workloads, each one training call's forward and backward (parameter gradients and, where a
layer below would need it, the input gradient), with the upstream gradient fixed:

* ``conv``: the two convolutions of ``examples/digits_cnn.py`` on a digits-sized batch:
  ``(64, 1, 8, 8) -> Conv2d(1, 16, 3, padding=1) -> ReLU -> Conv2d(16, 32, 3, padding=1)``;
* ``mha``: a self-attention block, ``MultiheadAttention(64, 4, batch_first=True)`` on ``(16,
  32, 64)`` (16 sequences of 32 tokens), ``need_weights=False``, with the input gradient.

Method (as ``benchmarks.run``): every implementation lives in its own worker process
(``python -m benchmarks.worker layer NAME THREADS``), built and warmed once; in each round the
parent asks every worker, in a rotated order, for a block of timed calls (at least ``--block``
seconds), with a pause between blocks. Reported: the median of all calls, the interquartile
range, and the ratio to minnet taken per round, then medianed (the machine's slow drift cancels
out). ``--threads T`` fixes both libraries' thread counts (``minnet.set_num_threads`` and
``torch.set_num_threads``; default 1, the examples' setting); the load average is printed. Run
it on an otherwise idle machine: on a shared one the numbers mean little.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np

Step = Callable[[], None]

CONV_X = (64, 1, 8, 8)
MHA_X = (16, 32, 64)
MHA_HEADS = 4


def _data(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(out_shape, dtype=np.float32))  # fmt: skip


def conv_minnet(threads: int) -> Step:
    """minnet's two convolutions: ``model(x)`` then ``out.backward(g)`` (no input gradient for
    the data, as PyTorch's autograd)."""
    import minnet

    minnet.set_num_threads(threads)
    nn = minnet.nn
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, rng=0), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1, rng=1))  # fmt: skip
    x, g = _data(CONV_X, (CONV_X[0], 32, 8, 8))

    def step() -> None:
        model.zero_grad()
        model(x).backward(g)

    return step


def conv_torch(threads: int) -> Step:
    """PyTorch's same two convolutions (its default CPU convolution path)."""
    import torch

    torch.set_num_threads(threads)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 32, 3, padding=1))  # fmt: skip
    x, g = (torch.from_numpy(a) for a in _data(CONV_X, (CONV_X[0], 32, 8, 8)))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).backward(g)

    return step


def mha_minnet(threads: int) -> Step:
    """minnet's self-attention: ``mha(x, x, x)`` then backward with the input gradient."""
    import minnet

    minnet.set_num_threads(threads)
    mha = minnet.nn.MultiheadAttention(MHA_X[2], MHA_HEADS, batch_first=True, rng=0)
    x, g = _data(MHA_X, MHA_X)

    def step() -> None:
        mha.zero_grad()
        mha(x, x, x, need_weights=False)
        mha.backward(g)

    return step


def mha_torch(threads: int) -> Step:
    """PyTorch's ``nn.MultiheadAttention``, the input requiring a gradient."""
    import torch

    torch.set_num_threads(threads)
    mha = torch.nn.MultiheadAttention(MHA_X[2], MHA_HEADS, batch_first=True)
    x_np, g_np = _data(MHA_X, MHA_X)
    x = torch.from_numpy(x_np).requires_grad_()
    g = torch.from_numpy(g_np)

    def step() -> None:
        mha.zero_grad(set_to_none=True)
        x.grad = None
        mha(x, x, x, need_weights=False)[0].backward(g)

    return step


#: ``{workload: {implementation: builder(threads)}}``; minnet first (the ratios' base).
IMPLS: dict[str, dict[str, Callable[[int], Step]]] = {
    "conv": {"minnet": conv_minnet, "PyTorch": conv_torch},
    "mha": {"minnet": mha_minnet, "PyTorch": mha_torch},
}

TITLES = {
    "conv": f"Conv2d(1, 16) -> ReLU -> Conv2d(16, 32), 3x3, padding 1, batch {CONV_X}",
    "mha": f"MultiheadAttention({MHA_X[2]}, {MHA_HEADS}) self-attention, batch_first {MHA_X}",
}


def build(workload: str, name: str, threads: str) -> Step:
    """The worker's entry point (``benchmarks.worker layer WORKLOAD/NAME THREADS``)."""
    return IMPLS[workload][name](int(threads))


def main(argv: list[str] | None = None) -> int:
    """Alternate the workers, print one table per workload."""
    from benchmarks import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=float, default=0.3, help="seconds per block at least")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=sorted(IMPLS), nargs="+", default=sorted(IMPLS))
    args = parser.parse_args(argv)
    if hasattr(os, "getloadavg"):
        print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"threads: {args.threads} (minnet.set_num_threads, torch.set_num_threads); "
          f"{args.rounds} rounds, blocks of >= {args.block} s")  # fmt: skip
    for workload in args.only:
        workers, notes = {}, []
        for name in IMPLS[workload]:
            w = run.Worker("layer", f"{workload}/{name}", str(args.threads))
            if w.skip:
                notes.append(f"{name}: skipped ({w.skip})")
            else:
                workers[name] = w
        ks = {n: run._block_size(w.per_call.get("", 1.0), args.block) for n, w in workers.items()}
        try:
            res = run.alternate(workers, args.rounds, ks)
        finally:
            for w in workers.values():
                w.close()
        print(f"\n{TITLES[workload]}: forward + backward per call")
        run.print_table(run.summarize(res, "minnet"), "minnet")
        for note in notes:
            print(note)
    if hasattr(os, "getloadavg"):
        print(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

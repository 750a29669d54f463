"""Convolution and attention layers, minnet against PyTorch CPU: forward + backward per call.

    python -m benchmarks.layers [--rounds R] [--block S] [--threads T] [--only conv|mha]

Four workloads: two layers, each one training call's forward and backward (parameter gradients
and, where a layer below would need it, the input gradient), with the upstream gradient fixed,
and the whole training step of each of the two examples:

* ``conv``: the two convolutions of ``examples/digits_cnn.py`` on a digits-sized batch:
  ``(64, 1, 8, 8) -> Conv2d(1, 16, 3, padding=1) -> ReLU -> Conv2d(16, 32, 3, padding=1)``;
* ``mha``: a self-attention block, ``MultiheadAttention(64, 4, batch_first=True)`` on ``(16,
  32, 64)`` (16 sequences of 32 tokens), ``need_weights=False``, with the input gradient;
* ``cnn_step``: ``examples/digits_cnn.py``'s step: its CNN (Conv2d-BatchNorm2d-ReLU twice,
  MaxPool2d, Dropout, two Linear) on a batch of 64 8x8 images, ``CrossEntropyLoss``,
  ``zero_grad``, ``loss.backward()``, Adam's step;
* ``char_step``: ``examples/char_transformer.py``'s step: its transformer (d_model 64, 2
  pre-LayerNorm blocks of 4 heads, context 64, vocabulary 101) on a batch of 32 sequences,
  cross-entropy over ``(batch * time, vocab)``, AdamW, ``clip_grad_norm_(1.0)``. PyTorch's side
  is the same architecture written with ``torch.nn`` (its own MultiheadAttention with a causal
  mask, LayerNorm, GELU).

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
from typing import Any

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


CNN_BATCH = 64
CHAR = {"vocab": 101, "context": 64, "d_model": 64, "layers": 2, "heads": 4, "batch": 32}


def _cnn(nn: Any) -> Any:
    """``examples/digits_cnn.py``'s CNN from ``minnet.nn`` or ``torch.nn`` (same signatures)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )  # fmt: skip


def cnn_step_minnet(threads: int) -> Step:
    """``examples/digits_cnn.py``'s training step, minnet."""
    import minnet

    minnet.set_num_threads(threads)
    minnet.manual_seed(0)
    nn = minnet.nn
    model = _cnn(nn)
    x, _ = _data((CNN_BATCH, 1, 8, 8), (1,))
    y = np.random.default_rng(1).integers(0, 10, CNN_BATCH)
    loss_fn = nn.CrossEntropyLoss()
    opt = minnet.optim.Adam(model.parameters(), lr=2e-3)

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def cnn_step_torch(threads: int) -> Step:
    """The same step, PyTorch."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn = torch.nn
    model = _cnn(nn)
    x = torch.from_numpy(_data((CNN_BATCH, 1, 8, 8), (1,))[0])
    y = torch.from_numpy(np.random.default_rng(1).integers(0, 10, CNN_BATCH))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _char_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    idx = rng.integers(0, CHAR["vocab"], (CHAR["batch"], CHAR["context"] + 1))
    return idx[:, :-1], idx[:, 1:]


def char_step_minnet(threads: int) -> Step:
    """``examples/char_transformer.py``'s training step, minnet."""
    import minnet
    from minnet.lab.chars import CharTransformer

    minnet.set_num_threads(threads)
    minnet.manual_seed(0)
    c = CHAR
    model = CharTransformer(c["vocab"], c["context"], c["d_model"], c["layers"], c["heads"])
    x, y = _char_batch()
    loss_fn = minnet.nn.CrossEntropyLoss()
    opt = minnet.optim.AdamW(model.parameters(), lr=1e-2)

    flatten = minnet.nn.Flatten(0, 1)  # as the example: a recorded (B, T, V) -> (B*T, V)

    def step() -> None:
        loss = loss_fn(flatten(model(x)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        minnet.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def char_step_torch(threads: int) -> Step:
    """The same step, PyTorch (the same architecture in ``torch.nn``)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn, c = torch.nn, CHAR
    d = c["d_model"]

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, c["heads"], batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False, is_causal=True)[0]
            return x + self.mlp(self.ln2(x))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(c["vocab"], d), nn.Embedding(c["context"], d)
            self.blocks = nn.ModuleList([Block() for _ in range(c["layers"])])
            self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, c["vocab"])

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            t = idx.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(t)
            x = self.tok(idx) + self.pos(torch.arange(t))
            for block in self.blocks:
                x = block(x, mask)
            return self.head(self.ln_f(x))

    model = Model()
    x, y = (torch.from_numpy(a) for a in _char_batch())
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def step() -> None:
        loss = loss_fn(model(x).reshape(-1, c["vocab"]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


#: ``{workload: {implementation: builder(threads)}}``; minnet first (the ratios' base).
IMPLS: dict[str, dict[str, Callable[[int], Step]]] = {
    "conv": {"minnet": conv_minnet, "PyTorch": conv_torch},
    "mha": {"minnet": mha_minnet, "PyTorch": mha_torch},
    "cnn_step": {"minnet": cnn_step_minnet, "PyTorch": cnn_step_torch},
    "char_step": {"minnet": char_step_minnet, "PyTorch": char_step_torch},
}

TITLES = {
    "conv": f"Conv2d(1, 16) -> ReLU -> Conv2d(16, 32), 3x3, padding 1, batch {CONV_X}",
    "mha": f"MultiheadAttention({MHA_X[2]}, {MHA_HEADS}) self-attention, batch_first {MHA_X}",
    "cnn_step": f"examples/digits_cnn.py's training step, batch {CNN_BATCH}",
    "char_step": "examples/char_transformer.py's training step, " + ", ".join(
        f"{k} {v}" for k, v in CHAR.items()),
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
        what = "one training step" if workload.endswith("_step") else "forward + backward"
        print(f"\n{TITLES[workload]}: {what} per call")
        run.print_table(run.summarize(res, "minnet"), "minnet")
        for note in notes:
            print(note)
    if hasattr(os, "getloadavg"):
        print(f"\nload average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

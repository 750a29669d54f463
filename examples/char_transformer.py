"""A character-level causal transformer, written as the PyTorch program it ports.

The model (``minnet/lab/chars.py``, where the lab's ``char_transformer`` scenario uses it too)::

    Embedding(vocab, 64) + Embedding(64, 64)                   token + learned position
    2 x TransformerBlock (pre-LayerNorm):
        x = x + MultiheadAttention(64, 4, batch_first=True)(LayerNorm(x), causal mask)
        x = x + Linear(256, 64)(GELU(Linear(64, 256)(LayerNorm(x))))
    LayerNorm -> Linear(64, vocab)                             logits (B, T, vocab)

``TransformerBlock`` is a ``minnet.nn.Module`` with a hand-written ``backward``: its residual sums
are NumPy arithmetic, which the per-call graph does not record, so it calls its sub-modules'
backward in reverse and adds the residual gradients itself (README, "Writing a block").
Training: ``CrossEntropyLoss`` over ``(batch * time, vocab)``, ``AdamW(lr=1e-2, betas=(0.9,
0.99), weight_decay=0.1)`` with the decay on matrices only (parameter groups: weights of
``Linear``, ``Embedding`` and attention; no decay on biases and LayerNorm), a linear warm-up
over 30 steps then cosine decay to 0 (``SequentialLR(LinearLR, CosineAnnealingLR)``),
``clip_grad_norm_(..., 1.0)``, random windows of 64 characters in batches of 32. The corpus is
the docstrings of 67 standard-library modules (no download; about 520,000 characters, 101
distinct, on CPython 3.11), or ``--text FILE``; the last 10% is held out.

Prints the batch loss every ``--print-every`` steps beside the training text's unigram entropy
(the loss of the best model that ignores context), the held-out loss at the end, then a sample
drawn with minnet's generator. Measured with the defaults (600 steps, seed 0, CPython 3.11) on
this 2-core machine shared with other jobs (load average 9): the loss falls from 4.76 at step 1
to 1.82 (mean of the last 20 batches), 1.48 nats/char below the unigram entropy of 3.30; the
held-out loss is 1.92. The run takes 98 s (40 s of CPU time; about 65 ms of CPU per step). With
lr 3e-3 the same run ends at 2.28 (held-out 2.32).

What differs from PyTorch: the imports, batches are NumPy arrays, and the block's backward is
written by hand.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import minnet
from minnet import nn
from minnet.lab.chars import CharTransformer, encode, read_text, sample, unigram_entropy
from minnet.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from minnet.random import default_generator


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (ndim >= 2) with ``weight_decay``, the rest (biases, LayerNorm
    weights) without."""
    params = model.parameters()
    return [
        {"params": [p for p in params if p.data.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.data.ndim < 2], "weight_decay": 0.0},
    ]


def batch(ids: np.ndarray, batch_size: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` random windows of ``context`` characters and the next character of
    each position, from minnet's default generator."""
    starts = default_generator().integers(0, len(ids) - context, batch_size)
    rows = starts[:, None] + np.arange(context)
    return ids[rows], ids[rows + 1]


def evaluate(model: nn.Module, ids: np.ndarray, context: int, max_windows: int = 256) -> float:
    """Mean loss (nats/char) over consecutive windows of ``ids`` (at most ``max_windows``)."""
    n = min((len(ids) - 1) // context, max_windows)
    x = ids[: n * context].reshape(n, context)
    y = ids[1 : n * context + 1].reshape(n, context)
    model.eval()
    with minnet.no_grad():
        loss = float(nn.CrossEntropyLoss()(model(x).reshape(-1, model.head.out_features),
                                           y.reshape(-1)))  # fmt: skip
    model.train()
    return loss


@threadpool_limits.wrap(limits=1)  # torch.set_num_threads(1): small products, a shared machine
def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, print, sample; return ``{"first", "last", "held_out", "entropy", "seconds"}``
    (the first and the mean of the last 20 batch losses, in nats/char)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=None, help="a UTF-8 text file (default: the "
                        "standard library's docstrings)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--print-every", type=int, default=50)
    parser.add_argument("--sample", type=int, default=300, help="characters to sample")
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.steps:
        parser.error(f"--warmup must be in (0, --steps), got {args.warmup}")
    start = time.perf_counter()
    minnet.manual_seed(args.seed)  # initial weights, batches and the sample

    text = read_text(args.text)
    ids, vocab = encode(text)
    split = int(0.9 * len(ids))
    train, held_out = ids[:split], ids[split:]
    if len(held_out) <= args.context + 1 or len(train) <= args.context + 1:
        parser.error(f"the text is too short for --context {args.context}")
    entropy = unigram_entropy(train)
    print(f"{len(text):,} characters, {len(vocab)} distinct; unigram entropy "
          f"{entropy:.3f} nats/char")  # fmt: skip

    model = CharTransformer(len(vocab), args.context, args.d_model, args.layers, args.heads)
    flatten = nn.Flatten(0, 1)  # (B, T, vocab) -> (B * T, vocab), as logits.flatten(0, 1)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = minnet.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr,
                                   betas=(0.9, 0.99))  # fmt: skip
    scheduler = SequentialLR(optimizer, [
        LinearLR(optimizer, start_factor=1 / args.warmup, total_iters=args.warmup),
        CosineAnnealingLR(optimizer, T_max=args.steps - args.warmup),
    ], milestones=[args.warmup])  # fmt: skip

    losses = []
    for step in range(1, args.steps + 1):
        xb, yb = batch(train, args.batch_size, args.context)
        loss = loss_fn(flatten(model(xb)), yb.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss))
        if step == 1 or step % args.print_every == 0 or step == args.steps:
            print(f"step {step:5d}  loss {float(loss):.3f}  (unigram entropy {entropy:.3f})  "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}")  # fmt: skip
    held = evaluate(model, held_out, args.context)
    seconds = time.perf_counter() - start
    last = float(np.mean(losses[-20:]))
    print(f"loss {losses[0]:.3f} -> {last:.3f} (mean of the last 20 batches), held-out "
          f"{held:.3f}, unigram entropy {entropy:.3f} nats/char; {seconds:.1f} s")  # fmt: skip
    if args.sample > 0:
        prompt = train[:1]
        out = sample(model, prompt, args.sample, args.temperature)
        print("sample:\n" + "".join(vocab[i] for i in out))
    return {"first": losses[0], "last": last, "held_out": held, "entropy": entropy,
            "seconds": seconds}  # fmt: skip


if __name__ == "__main__":
    main()

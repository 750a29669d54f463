"""A character-level causal transformer and its corpus: ``examples/char_transformer.py`` and the
lab's ``char_transformer`` scenario.

The corpus needs no download: by default the docstrings of a fixed list of Python
standard-library modules (:data:`STDLIB_MODULES`, read in that order, each module's members in
sorted order), or any text file. The model is GPT's layout at a small size::

    Embedding(vocab, d) + Embedding(context, d)                  token + learned position
    n_layers x TransformerBlock:
        x = x + MultiheadAttention(LayerNorm(x))                 causal, batch_first
        x = x + Linear(4d, d)(GELU(Linear(d, 4d)(LayerNorm(x))))
    LayerNorm -> Linear(d, vocab)                                logits (B, T, vocab)

:class:`TransformerBlock` and :class:`CharTransformer` compute their residual sums with NumPy,
which the per-call graph does not record, so each writes its ``backward`` by hand: its
sub-modules' backward in reverse order, with the gradient of each residual sum (``x + f(x)``:
the incoming gradient plus ``f``'s input gradient) added by hand.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import minnet
from minnet import nn
from minnet.lab.problem import Problem
from minnet.random import default_generator

__all__ = [
    "STDLIB_MODULES",
    "CharTransformer",
    "NextCharLoss",
    "TransformerBlock",
    "causal_mask",
    "char_transformer_problem",
    "encode",
    "next_char_loss",
    "read_text",
    "sample",
    "stdlib_docstrings",
    "unigram_entropy",
]

#: The standard-library modules whose docstrings make the default corpus, in this order.
STDLIB_MODULES: tuple[str, ...] = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "collections", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum",
    "fractions", "ftplib", "functools", "gettext", "glob", "gzip", "heapq", "hmac",
    "html.parser", "http.client", "imaplib", "inspect", "ipaddress", "json", "logging",
    "mailbox", "netrc", "numbers", "optparse", "os", "pathlib", "pickle", "pprint", "queue",
    "random", "re", "sched", "selectors", "shlex", "shutil", "smtplib", "socket", "statistics",
    "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "traceback", "turtle", "typing", "unittest.case", "urllib.parse", "urllib.request", "uuid",
    "warnings", "weakref", "zipfile",
)  # fmt: skip


def _docstrings_of(module: Any) -> list[str]:
    """The module's docstring, then those of its public classes and functions (sorted by name;
    only those defined in the module) and of each class's public methods (sorted)."""
    docs = [inspect.getdoc(module) or ""]
    name = module.__name__
    for attr in sorted(vars(module)):
        obj = vars(module)[attr]
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        docs.append(inspect.cleandoc(obj.__doc__ or ""))
        if inspect.isclass(obj):
            for meth in sorted(vars(obj)):
                fn = vars(obj)[meth]
                if not meth.startswith("_") and inspect.isfunction(fn) and fn.__doc__:
                    docs.append(inspect.cleandoc(fn.__doc__))
    return [d for d in docs if d.strip()]


@functools.lru_cache(maxsize=1)
def stdlib_docstrings() -> str:
    """The default corpus: the docstrings of :data:`STDLIB_MODULES` joined by blank lines
    (522,834 characters, 101 distinct, on CPython 3.11; the exact text depends on the Python
    version). A module that is missing from this Python is skipped.

    Raises:
        RuntimeError: if the docstrings were stripped (``python -OO``).
    """
    parts: list[str] = []
    with warnings.catch_warnings():  # typing.io and typing.re warn when looked at
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in STDLIB_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # e.g. turtle without tkinter
                continue
            parts.extend(_docstrings_of(module))
    text = "\n\n".join(parts) + "\n"
    if len(text) < 10_000:
        raise RuntimeError(
            "the standard library's docstrings are missing (python -OO strips them): run "
            "without -OO or pass a text file"
        )
    return text


def encode(text: str) -> tuple[np.ndarray, list[str]]:
    """``(ids, vocab)``: the text as int64 indices into ``vocab``, its sorted distinct
    characters."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), np.int64, len(text)), vocab


def unigram_entropy(ids: np.ndarray) -> float:
    """``-sum_c p_c log p_c`` in nats per character, ``p_c`` the characters' frequencies in
    ``ids``: the loss of the best model that ignores context (it predicts the frequencies)."""
    counts = np.bincount(np.asarray(ids).reshape(-1))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def causal_mask(length: int) -> np.ndarray:
    """``(length, length)`` bool, ``True`` above the diagonal: the keys a position may *not*
    attend to (``MultiheadAttention``'s convention, PyTorch's
    ``Transformer.generate_square_subsequent_mask`` as a bool mask)."""
    return ~np.tri(length, length, dtype=bool)


class TransformerBlock(nn.Module):
    """A pre-LayerNorm transformer block with a hand-written backward::

        x = x + attn(ln1(x))                  causal self-attention, (N, T, d_model)
        y = x + fc2(gelu(fc1(ln2(x))))        MLP of width 4 * d_model

    Args:
        d_model: the width ``d``.
        n_heads: attention heads (``d_model % n_heads == 0``).
        dtype: the parameters' dtype.
    """

    def __init__(self, d_model: int, n_heads: int, *, dtype: Any = np.float32) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, dtype=dtype)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True, dtype=dtype)
        self.ln2 = nn.LayerNorm(d_model, dtype=dtype)
        self.fc1 = nn.Linear(d_model, 4 * d_model, dtype=dtype)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * d_model, d_model, dtype=dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, T, d_model)`` -> ``(N, T, d_model)``; position ``t`` sees positions ``<= t``."""
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=causal_mask(x.shape[-2]), need_weights=False,
                         is_causal=True)  # fmt: skip
        x = np.asarray(x) + np.asarray(a)  # residual: NumPy, not recorded
        return x + np.asarray(self.fc2(self.act(self.fc1(self.ln2(x)))))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """dLoss/dx for dLoss/dy ``grad_out``; adds into every sub-module's ``.grad``."""
        # y = x1 + mlp(x1): the gradient reaches x1 directly and through the MLP
        g = grad_out + self.ln2.backward(self.fc1.backward(self.act.backward(
            self.fc2.backward(grad_out))))  # fmt: skip
        # x1 = x + attn(ln1(x)): likewise (attn's backward is one array: self-attention)
        return g + self.ln1.backward(self.attn.backward(g))


class CharTransformer(nn.Module):
    """Token and learned position embeddings, ``n_layers`` :class:`TransformerBlock` s, a final
    LayerNorm and a linear head: ``(N, T)`` int indices -> ``(N, T, vocab_size)`` logits of the
    next character at each position. ``T <= context``.

    Weights: PyTorch's defaults of each layer (``Embedding`` ``N(0, 1)``, ``Linear``
    ``U(-1/sqrt(in), 1/sqrt(in))``, attention's Xavier ``in_proj_weight``), drawn from ``rng``
    or minnet's default generator (``minnet.manual_seed``).
    """

    def __init__(self, vocab_size: int, context: int, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, *, dtype: Any = np.float32) -> None:  # fmt: skip
        super().__init__()
        self.context = int(context)
        self.tok = nn.Embedding(vocab_size, d_model, dtype=dtype)
        self.pos = nn.Embedding(context, d_model, dtype=dtype)
        self.blocks = nn.ModuleList(
            [TransformerBlock(d_model, n_heads, dtype=dtype) for _ in range(n_layers)]
        )
        self.ln_f = nn.LayerNorm(d_model, dtype=dtype)
        self.head = nn.Linear(d_model, vocab_size, dtype=dtype)

    def forward(self, idx: np.ndarray) -> np.ndarray:
        """Logits ``(N, T, vocab_size)`` for indices ``(N, T)``."""
        idx = np.asarray(idx)
        t = idx.shape[-1]
        if idx.ndim != 2 or t > self.context:
            raise ValueError(
                f"CharTransformer: expected indices of shape (N, T) with T <= context = "
                f"{self.context}, got shape {idx.shape}"
            )
        x = np.asarray(self.tok(idx)) + np.asarray(self.pos(np.arange(t)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def backward(self, grad_out: np.ndarray) -> None:
        """Add into every parameter's ``.grad`` for dLoss/d(logits) ``grad_out`` (the input is
        integer indices: no input gradient, as an ``Embedding``)."""
        g = self.ln_f.backward(self.head.backward(grad_out))
        for block in reversed(self.blocks):
            g = block.backward(g)
        self.pos.backward(g.sum(axis=0))  # every sequence of the batch used the same positions
        self.tok.backward(g)


# ------------------------------------------------------------------------------- the lab


class NextCharLoss(nn.CrossEntropyLoss):
    """``CrossEntropyLoss`` of logits ``(N * T, vocab)`` against next characters ``(N, T)``
    (flattened): the lab's loss, whose batches keep one window per row."""

    def __call__(self, input: Any, target: Any) -> Any:  # type: ignore[override]
        """The loss of ``input`` against ``target`` flattened to ``(N * T,)``."""
        return super().__call__(input, np.asarray(target).reshape(-1))


def next_char_loss(output: np.ndarray, target: np.ndarray) -> float:
    """Mean cross-entropy in nats per character of logits ``(N * T, vocab)`` against next
    characters ``(N, T)``: the lab's metric on held-out text (lower is better)."""
    z = np.asarray(output, np.float64)
    y = np.asarray(target).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.size:
        raise ValueError(f"next_char_loss: output {z.shape} does not match target "
                         f"{np.shape(target)}")  # fmt: skip
    m = z.max(axis=1, keepdims=True)
    logz = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
    return float(np.mean(logz - z[np.arange(y.size), y]))


#: The lab's tiny size: 1 block of width 32, 2 heads, windows of 32 characters.
LAB_SIZE = {"d_model": 32, "n_layers": 1, "n_heads": 2, "context": 32}
_LAB_TRAIN, _LAB_TEST = 65_536, 8_192  # characters of the corpus: the first ones, the next ones


@functools.lru_cache(maxsize=1)
def _lab_windows() -> tuple[np.ndarray, np.ndarray, int]:
    """``(ids of the training characters, ids of the held-out ones, vocab size)``."""
    text = stdlib_docstrings()[: _LAB_TRAIN + _LAB_TEST + 1]
    ids, vocab = encode(text)
    ids.setflags(write=False)
    return ids[: _LAB_TRAIN + 1], ids[_LAB_TRAIN:], len(vocab)


def _windows(ids: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    n = (len(ids) - 1) // t
    return ids[: n * t].reshape(n, t), ids[1 : n * t + 1].reshape(n, t)


def _lab_train() -> tuple[np.ndarray, np.ndarray]:
    return _windows(_lab_windows()[0], LAB_SIZE["context"])


def _lab_test() -> tuple[np.ndarray, np.ndarray]:
    return _windows(_lab_windows()[1], LAB_SIZE["context"])


def _lab_model() -> nn.Module:
    size = LAB_SIZE  # initial weights: from the default generator, which the run seeds
    model = CharTransformer(_lab_windows()[2], size["context"], size["d_model"],
                            size["n_layers"], size["n_heads"])  # fmt: skip
    return nn.Sequential(model, nn.Flatten(0, 1))  # logits (N * T, vocab)


def char_transformer_problem(epochs: int = 1) -> Problem:
    """The ``char_transformer`` scenario: :class:`CharTransformer` at the tiny size
    :data:`LAB_SIZE` on the first 65,536 characters of the standard-library docstrings, cut into
    2,048 windows of 32 (64 steps per epoch at batch 32), ``Adam(lr=3e-3)``, 1 epoch. Loss:
    :class:`NextCharLoss`; metric: :func:`next_char_loss` on the next 8,192 characters (nats per
    character; lower is better). The training text's unigram entropy is 3.28 nats/char, the
    held-out text's 3.43.

    With eps=1e-8 (seed 0) the batch loss falls from 4.71 to about 3.06 in the 64 steps and the
    held-out loss ends at 3.30. eps=0 is NaN from step 2: the rows of the token embedding of
    characters absent from the first batch (27 of the 95, 864 weights) get an exactly zero
    gradient, so their update is ``0 / (sqrt(0) + 0)``."""
    return Problem(
        "char_transformer",
        model=_lab_model,
        data=_lab_train,
        loss_fn=NextCharLoss(),
        metric=next_char_loss,
        eval_data=_lab_test,
        batch_size=32,
        epochs=epochs,
        lr=3e-3,
        metric_name="held-out loss (nats/char)",
    )


def read_text(path: str | Path | None) -> str:
    """The text of ``path`` (UTF-8), or :func:`stdlib_docstrings` for ``None``."""
    if path is None:
        return stdlib_docstrings()
    text = Path(path).read_text(encoding="utf-8")
    if len(text) < 2:
        raise ValueError(f"{path}: the text needs at least 2 characters, got {len(text)}")
    return text


def sample(model: CharTransformer, prompt: np.ndarray, length: int, temperature: float = 1.0,
           rng: np.random.Generator | None = None) -> np.ndarray:  # fmt: skip
    """``prompt`` (1-D indices) followed by ``length`` characters drawn one at a time from
    ``softmax(logits / temperature)`` of the last position (the last ``context`` characters
    as input), with ``rng`` or minnet's default generator; ``temperature=0`` is greedy
    (argmax). Runs in eval mode without keeping anything for backward."""
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"sample: temperature must be >= 0, got {temperature!r}")
    if np.ndim(prompt) != 1 or np.size(prompt) == 0:
        raise ValueError(f"sample: prompt must be a non-empty 1-D array of indices, got shape "
                         f"{np.shape(prompt)}")  # fmt: skip
    gen = default_generator() if rng is None else rng
    out = list(np.asarray(prompt, np.int64))
    model.eval()
    with minnet.no_grad():
        for _ in range(length):
            logits = np.asarray(model(np.array([out[-model.context :]])), np.float64)[0, -1]
            if temperature == 0:
                out.append(int(logits.argmax()))
                continue
            z = logits / temperature
            p = np.exp(z - z.max())
            out.append(int(gen.choice(len(p), p=p / p.sum())))
    model.train()
    return np.array(out, np.int64)

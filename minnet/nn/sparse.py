"""``Embedding``: a lookup table of rows indexed by integers."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from minnet.nn._util import _as_float_array, _asarray, _compute, _float_dtype
from minnet.nn.graph import Output
from minnet.nn.module import Module
from minnet.nn.parameter import Parameter
from minnet.random import resolve_rng

__all__ = ["Embedding"]


class Embedding(Module):
    r"""A table of ``num_embeddings`` rows of size ``embedding_dim``, as PyTorch's
    ``Embedding``: ``y = weight[input]`` for an integer ``input`` of any shape, so ``y`` has
    shape ``(*input.shape, embedding_dim)``.

    The weight starts ``N(0, 1)`` (PyTorch's initialisation) with the ``padding_idx`` row set to
    zeros. Backward adds ``g[..., :]`` into ``weight.grad[input[...]]`` for every position (a
    row used several times sums its gradients; one ``np.bincount`` per column for large
    batches, ``np.add.at`` for small ones), except at ``padding_idx``, whose row receives no
    gradient, as in PyTorch. The input is data: backward returns ``None`` (no gradient flows
    to integer indices).

    ``sparse=True``: PyTorch then gives the weight a sparse gradient holding only the rows
    that appeared. minnet's optimizers work on flat dense buffers, so ``weight.grad`` stays a
    dense array (zeros in the rows that did not appear) and the layer records the rows it
    touched in ``weight.grad_rows``: a sorted, unique int64 array, the union over every backward
    since the last ``zero_grad()`` (``Module.zero_grad()`` and an optimizer's ``zero_grad()``
    both empty it), ``padding_idx`` excluded. A row outside ``grad_rows`` had *no* gradient
    (:class:`minnet.optim.SparseAdam` skips it: its moments stay and no eps is ever divided by),
    a row inside it had a gradient, possibly zero (SparseAdam steps it, as PyTorch's sparse
    gradient lists it).
    With ``sparse=False`` (the default) ``grad_rows`` is ``None``: dense Adam sees a zero
    gradient in every absent row, so their ``m`` and ``v`` decay and, with ``v = 0``, the update
    is ``0 / (0 + eps)`` -- zero, but only thanks to eps.

    Args:
        num_embeddings: number of rows.
        embedding_dim: size of each row.
        padding_idx: a row (negative counts from the end) kept at zeros at initialisation and
            never given a gradient. Default ``None``.
        sparse: record the touched rows (above). Default ``False``.
        dtype: the weight's dtype (float32 by default; float64, float16, bfloat16).
        rng: ``np.random.Generator`` or int seed for the initial values; ``None``: minnet's
            default generator.
        _weight: an initial weight of shape ``(num_embeddings, embedding_dim)`` instead of the
            random one (PyTorch's ``_weight``; :meth:`from_pretrained` uses it).

    Precision: the output is the stored rows (no arithmetic); a 16-bit layer sums each row's
    gradients in float32 and rounds once before adding into ``.grad`` in the weight's dtype.
    """

    _state_attrs = ("_idx",)

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        sparse: bool = False,
        *,
        dtype: Any = np.float32,
        rng: np.random.Generator | int | None = None,
        _weight: Any = None,
    ) -> None:
        for arg, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"Embedding: {arg} must be a positive int, got {v!r}")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
                raise TypeError(
                    f"Embedding: padding_idx must be an int or None, got {padding_idx!r}"
                )
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx must be within num_embeddings (got padding_idx="
                    f"{padding_idx}, num_embeddings={num_embeddings})"
                )
            padding_idx = int(padding_idx) % int(num_embeddings)
        if not isinstance(sparse, (bool, np.bool_)):
            raise TypeError(f"Embedding: sparse must be a bool, got {sparse!r}")
        super().__init__()
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.padding_idx = padding_idx
        self.sparse = bool(sparse)
        self.dtype = _float_dtype(dtype, "Embedding")
        shape = (self.num_embeddings, self.embedding_dim)
        if _weight is None:
            w = resolve_rng(rng, "Embedding").standard_normal(shape).astype(self.dtype)
            if padding_idx is not None:
                w[padding_idx] = 0
        else:
            w = np.array(_asarray(_weight, "Embedding", "_weight"), dtype=self.dtype)
            if w.shape != shape:
                raise ValueError(
                    f"Embedding: _weight must have shape {shape} (num_embeddings, "
                    f"embedding_dim), got {w.shape}"
                )
        self.weight = Parameter(w, "weight")
        if self.sparse:
            self.weight.grad_rows = np.empty(0, np.int64)
        self._idx: np.ndarray | None = None

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Any,
        freeze: bool = True,
        padding_idx: int | None = None,
        sparse: bool = False,
    ) -> Embedding:
        """A layer whose weight is a copy of the 2-D ``embeddings`` (its dtype kept), frozen
        (``requires_grad=False``) unless ``freeze=False``, as PyTorch's."""
        arr = _asarray(embeddings, "Embedding.from_pretrained", "embeddings")
        if arr.ndim != 2:
            raise ValueError(
                f"Embedding.from_pretrained: embeddings must be 2-D, got shape {arr.shape}"
            )
        m = cls(arr.shape[0], arr.shape[1], padding_idx, sparse, dtype=arr.dtype, _weight=arr)
        m.weight.requires_grad = not freeze
        return m

    def _reset(self) -> None:
        self._idx = None

    def reset_parameters(self, generator: Any = None) -> None:
        """Redraw the weight ``N(0, 1)`` in place (from ``generator``: a
        ``np.random.Generator``, an int seed or ``None`` for minnet's default generator) and
        zero the ``padding_idx`` row, PyTorch's initialisation."""
        w = self.weight.data
        w[...] = resolve_rng(generator, "Embedding").standard_normal(w.shape).astype(w.dtype)
        if self.padding_idx is not None:
            w[self.padding_idx] = 0

    def __call__(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        # Indices carry no gradient: an index array computed from a module's output (argmax,
        # sampling) is data here, not a break in the graph.
        if type(input) is Output:
            input = input.view(np.ndarray)
        return super().__call__(input, *args, **kwargs)

    def _indices(self, input: Any) -> np.ndarray:
        idx = _asarray(input, self._label(), "input")
        if idx.dtype.kind not in "iu":
            raise TypeError(
                f"{self._label()}: input must hold integer indices, got dtype {idx.dtype} "
                "(cast with .astype(np.int64))"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            bad = idx[(idx < 0) | (idx >= self.num_embeddings)].reshape(-1)[0]
            raise IndexError(
                f"{self._label()}: index {int(bad)} is out of range for num_embeddings="
                f"{self.num_embeddings} (indices must be in [0, {self.num_embeddings - 1}])"
            )
        return idx

    def forward(self, input: Any) -> np.ndarray:
        """``weight[input]``: shape ``(*input.shape, embedding_dim)``; a new array."""
        idx = self._indices(input)
        out = self.weight.data[idx]  # fancy indexing: a copy
        if self._keep():
            self._idx = idx.reshape(-1).astype(np.intp, copy=True)
        return out

    def backward(self, grad_out: np.ndarray) -> None:
        """Add each position's ``grad_out`` row into ``weight.grad`` at its index (not at
        ``padding_idx``); returns ``None`` (the input is integer data)."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        idx = self._idx
        if idx is None:
            raise self._nothing_saved()
        g = _as_float_array(grad_out, self._label(), "grad_out", self.dtype)
        d = self.embedding_dim
        if g.size != idx.size * d or g.shape[-1:] != (d,):
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape (*input.shape, {d}) "
                f"with {idx.size} positions, got {g.shape}"
            )
        self._idx = None
        self._freed = True
        w = self.weight
        if not w.requires_grad:
            return None
        g2 = g.reshape(-1, d)
        if self.padding_idx is not None:
            keep = idx != self.padding_idx
            if not keep.all():
                idx, g2 = idx[keep], g2[keep]
        rows, inverse = np.unique(idx, return_inverse=True)
        cdt = _compute(self.dtype)
        sums = self._row_sums(inverse.reshape(-1), g2.astype(cdt, copy=False), rows.size)
        if w.grad is None:
            w.grad = np.zeros_like(w.data)
        grad = w.grad
        if (
            not isinstance(grad, np.ndarray)
            or grad.shape != w.data.shape
            or (grad.dtype != w.data.dtype)
        ):
            raise ValueError(
                f"{self._label()}: parameter {w.name!r} has a .grad that was replaced; it must "
                f"be an array of the parameter's shape {w.data.shape} and dtype {w.data.dtype}"
            )
        if sums.dtype == grad.dtype:
            grad[rows] += sums
        else:  # 16-bit: each row's float32 sum rounded once, then added in the weight's dtype
            grad[rows] += sums.astype(grad.dtype)
        if self.sparse:
            prev = getattr(w, "grad_rows", None)
            r = rows.astype(np.int64)
            w.grad_rows = r if prev is None or prev.size == 0 else np.union1d(prev, r)
        return None

    @staticmethod
    def _row_sums(inverse: np.ndarray, g: np.ndarray, n_rows: int) -> np.ndarray:
        """``sums[k] = sum of g[i] over i with inverse[i] == k``, rows added in position order.
        Many positions: one ``np.bincount`` per column (a compiled loop); few: ``np.add.at``."""
        d = g.shape[1]
        if g.shape[0] >= 256 and d <= 4 * g.shape[0]:
            out = np.empty((n_rows, d), g.dtype)
            gt = np.ascontiguousarray(g.T)
            for j in range(d):
                out[:, j] = np.bincount(inverse, weights=gt[j], minlength=n_rows)
            return out
        out = np.zeros((n_rows, d), g.dtype)
        np.add.at(out, inverse, g)
        return out

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.sparse:
            s += ", sparse=True"
        return s

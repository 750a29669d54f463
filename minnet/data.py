"""Datasets and mini-batch loading over NumPy arrays, with ``torch.utils.data``'s names.

>>> x = np.arange(10.0).reshape(5, 2); y = np.arange(5)
>>> loader = DataLoader(TensorDataset(x, y), batch_size=2, shuffle=True, rng=0)
>>> len(loader)                 # ceil(5 / 2) batches per epoch
3
>>> for xb, yb in loader:       # xb: (2, 2), yb: (2,); the last batch has 1 row
...     pass

Every pass over a ``DataLoader`` (an epoch) draws a new order when ``shuffle=True``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from minnet.random import resolve_rng

__all__ = ["DataLoader", "Dataset", "TensorDataset", "Subset", "random_split"]


class Dataset:
    """Base class of map-style datasets: ``len(ds)`` samples, ``ds[i]`` the ``i``-th one.

    Any object with ``__len__`` and ``__getitem__`` works with :class:`DataLoader`; subclassing is
    optional, as in PyTorch.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError


class TensorDataset(Dataset):
    """Samples are rows: ``ds[i] = (arrays[0][i], arrays[1][i], ...)``.

    Args:
        *arrays: one or more arrays (anything ``np.asarray`` takes) with the same length along
            their first dimension (the sample axis).

    The arrays are kept as given (``np.asarray``: no copy of an ndarray) in :attr:`tensors`.
    """

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise ValueError("TensorDataset: expected at least one array")
        tensors = []
        for i, a in enumerate(arrays):
            arr = np.asarray(a)
            if arr.ndim == 0:
                raise ValueError(
                    f"TensorDataset: array {i} is a scalar; every array needs a first (sample) "
                    "dimension"
                )
            tensors.append(arr)
        sizes = [a.shape[0] for a in tensors]
        if len(set(sizes)) > 1:
            shapes = ", ".join(f"array {i}: {a.shape}" for i, a in enumerate(tensors))
            raise ValueError(
                f"TensorDataset: Size mismatch between tensors: the first dimensions differ "
                f"({shapes})"
            )
        self.tensors: tuple[np.ndarray, ...] = tuple(tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: Any) -> tuple[np.ndarray, ...]:
        return tuple(t[index] for t in self.tensors)

    def __repr__(self) -> str:
        shapes = ", ".join(str(t.shape) for t in self.tensors)
        return f"TensorDataset({shapes})"


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order (PyTorch's ``Subset``):
    ``subset[i] = dataset[indices[i]]``."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"Subset: dataset must have __len__ and __getitem__, got {type(dataset).__name__}"
            )
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"Subset: indices must be a 1-D sequence of ints, got {indices!r}")
        n = len(dataset)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"Subset: an index is out of range for a dataset of {n} samples")
        self.dataset = dataset
        self.indices = [int(i) for i in idx]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (list, np.ndarray)):
            return self.dataset[[self.indices[int(i)] for i in index]]
        return self.dataset[self.indices[index]]

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, {len(self)} samples)"


def random_split(dataset: Any, lengths: Sequence[float], generator: Any = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random subsets (:class:`Subset`), as PyTorch's
    ``random_split``: ``lengths`` are sample counts summing to ``len(dataset)``, or fractions
    summing to 1 (each ``floor(n * f)``, the remainder dealt one by one round-robin, as
    PyTorch does). ``generator``: a ``np.random.Generator``, an int seed or ``None`` (minnet's
    default generator); the permutation is NumPy's, not PyTorch's."""
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(f, float) for f in lengths) and math.isclose(sum(lengths), 1):
        if any(f < 0 or f > 1 for f in lengths):
            raise ValueError(f"random_split: fractions must be in [0, 1], got {lengths}")
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0
               for c in lengths):  # fmt: skip
            raise ValueError(
                f"random_split: lengths must be non-negative ints or fractions summing to 1, "
                f"got {lengths}"
            )
        counts = [int(c) for c in lengths]
        if sum(counts) != n:
            raise ValueError(
                "Sum of input lengths does not equal the length of the input dataset! "
                f"({sum(counts)} != {n})"
            )
    order = resolve_rng(generator, "random_split").permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, order[start : start + c].tolist()))
        start += c
    return out


def _collate(items: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch: tuples field by field, arrays/scalars with np.stack."""
    first = items[0]
    if isinstance(first, (tuple, list)):
        return tuple(np.stack([item[k] for item in items]) for k in range(len(first)))
    return np.stack(items)


class DataLoader:
    """Mini-batches of a dataset, as ``torch.utils.data.DataLoader``.

    Args:
        dataset: a :class:`TensorDataset` (batches are gathered with one index per array) or any
            object with ``__len__`` and ``__getitem__`` (samples are stacked with ``np.stack``).
        batch_size: samples per batch (``>= 1``). Default 1.
        shuffle: draw a new random order of the samples at the start of every epoch.
        drop_last: drop the last batch when it has fewer than ``batch_size`` samples.
        rng: the order's generator: an int seed (a generator of the loader's own, created once,
            so epoch ``k`` has the same order on every run), a ``np.random.Generator``, or
            ``None`` for minnet's default generator (see :func:`minnet.manual_seed`).
        generator: PyTorch's name for ``rng`` (give one of the two).
        collate_fn: makes a batch from a list of samples (default: stack each field with
            ``np.stack``); when given, it is used for a :class:`TensorDataset` too.
        num_workers: only ``0`` (batches are made in the calling process, as PyTorch's
            ``num_workers=0``); ``pin_memory``, ``persistent_workers``, ``prefetch_factor``,
            ``worker_init_fn`` and ``timeout`` are accepted for PyTorch code and change nothing
            (``pin_memory=True`` has no meaning without a GPU and raises).

    ``len(loader)`` is ``ceil(len(dataset) / batch_size)`` (``floor`` with ``drop_last``).
    Iterating yields, for a :class:`TensorDataset`, a tuple with one array per dataset array
    (new arrays, never views of the dataset); the first dimension is the batch.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        rng: np.random.Generator | int | None = None,
        *,
        generator: np.random.Generator | int | None = None,
        collate_fn: Any = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        worker_init_fn: Any = None,
        timeout: float = 0,
    ) -> None:
        if generator is not None:
            if rng is not None:
                raise TypeError("DataLoader: give rng or generator, not both")
            rng = generator
        if num_workers != 0:
            raise ValueError(
                f"DataLoader: num_workers={num_workers} is not supported; minnet makes batches "
                "in the calling process (num_workers=0)"
            )
        if pin_memory:
            raise ValueError("DataLoader: pin_memory=True needs a GPU; minnet runs on the CPU")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {collate_fn!r}")
        self.collate_fn = collate_fn
        self.num_workers = 0
        self.pin_memory = False
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"DataLoader: dataset must have __len__ and __getitem__ (e.g. a TensorDataset), "
                f"got {type(dataset).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
            batch_size < 1
        ):
            raise ValueError(
                f"batch_size should be a positive integer value, but got batch_size={batch_size}"
            )
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle should be a boolean value, but got shuffle={shuffle}")
        if not isinstance(drop_last, (bool, np.bool_)):
            raise TypeError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        # An int seed becomes the loader's own generator now (epochs then differ, runs repeat);
        # None is looked up at each epoch, so a later minnet.manual_seed applies.
        self._rng = None if rng is None else resolve_rng(rng, "DataLoader")

    @property
    def generator(self) -> np.random.Generator:
        """The generator the next epoch's order is drawn from (the default one without
        ``rng``); ``minnet.get_rng_state(loader.generator)`` saves its state."""
        return resolve_rng(self._rng, "DataLoader")

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        if self.shuffle:
            order = resolve_rng(self._rng, "DataLoader").permutation(n)
        else:
            order = np.arange(n)
        stop = len(self) * self.batch_size if self.drop_last else n
        tensors = getattr(self.dataset, "tensors", None)
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.collate_fn is not None:
                yield self.collate_fn([self.dataset[int(i)] for i in idx])
            elif isinstance(self.dataset, TensorDataset):
                yield tuple(np.take(t, idx, axis=0) for t in tensors)
            else:
                yield _collate([self.dataset[int(i)] for i in idx])

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last})"
        )

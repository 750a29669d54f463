"""Flat buffers by name: every parameter of one (parameter group, dtype) in contiguous arrays.

:class:`FlatBuffers` packs the parameters it is given into 1-D ``data`` and ``grad`` arrays and
one 1-D array per *named* optimizer state (``"exp_avg"``, ``"momentum_buffer"``, ...), each
filled with its initial value. Parameter ``i`` occupies ``[offsets[i], offsets[i] + sizes[i])``
of every buffer, and its ``.data`` / ``.grad`` become reshaped views of those slices, so one
kernel call over the flat arrays updates every parameter of the group.

Parameters may be float16, bfloat16, float32 or float64, and the state may have its own dtype
(``state_dtype``). Buffers hold their real dtype (users see float16 / bfloat16 ``.data`` and
``.grad``), while the kernel's arguments (:attr:`FlatBuffers.args`) are ``uint16`` views of the
16-bit ones: kernels read and write the bit patterns with :mod:`minnet._lowp` and compute in
:attr:`FlatBuffers.compute_dtype`.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numba
import numpy as np

from minnet import _lowp, _pool
from minnet.dtypes import float32, is_16bit
from minnet.nn import Parameter

__all__ = ["FlatBuffers", "StorageFormats"]


class StorageFormats(NamedTuple):
    """How a kernel reads and writes its buffers, fixed when it is compiled: ``param`` is the
    format of ``param`` and ``grad``, ``state`` that of every state array (``_lowp.NATIVE``,
    ``_lowp.F16`` or ``_lowp.BF16``), ``rounding`` is ``"fused"`` or ``"per_op"``."""

    param: int
    state: int
    rounding: str


#: Every live :class:`FlatBuffers` by ``id`` of its ``data`` array, to tell a user whose
#: parameter a newer optimizer took over which optimizer holds it now.
_LIVE: weakref.WeakValueDictionary[int, FlatBuffers] = weakref.WeakValueDictionary()


def _kernel_view(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16) if is_16bit(a.dtype) else a


@numba.njit(parallel=True, cache=True, nogil=True)
def _zero_segments(buf, segs):  # pragma: no cover - compiled
    """``buf[lo:hi] = 0`` for every ``segs[t, j] = (lo, hi)``, thread ``t`` of the pool over
    its own segments."""
    for t in numba.prange(segs.shape[0]):
        for j in range(segs.shape[1]):
            buf[segs[t, j, 0] : segs[t, j, 1]] = 0  # a slice: one memset (an index loop is not)


class FlatBuffers:
    """Parameters of one dtype packed into contiguous buffers, with named state arrays.

    Args:
        params: the parameters, all of dtype ``dtype`` (their values are copied in, then
            ``p.data`` and ``p.grad`` are replaced by views of the flat buffers).
        dtype: float16, bfloat16, float32 or float64.
        spec: ``{state name: initial value}`` in kernel order, e.g.
            ``{"exp_avg": 0.0, "exp_avg_sq": 0.0}``.
        owner: the optimizer's class name, for error messages.
        state_dtype: the state arrays' dtype (``None``: ``dtype``).
        rounding: ``"fused"`` or ``"per_op"`` (see :attr:`formats`).

    Attributes:
        compute_dtype: the one dtype of a kernel's arithmetic: float32 when the parameters or
            the state are 16-bit, else ``dtype``.
        formats: ``None`` when no buffer is 16-bit (the kernel is the plain float32/float64
            one), else the :class:`StorageFormats` a kernel needs.
        args: ``(data, grad, *state arrays)`` as the kernel takes them (``uint16`` views of
            16-bit buffers).
    """

    def __init__(
        self,
        params: Sequence[Parameter],
        dtype: np.dtype,
        spec: Mapping[str, float],
        owner: str,
        state_dtype: np.dtype | None = None,
        rounding: str = "fused",
    ) -> None:
        self.params = list(params)
        self.dtype = np.dtype(dtype)
        self.state_dtype = self.dtype if state_dtype is None else np.dtype(state_dtype)
        lowp = is_16bit(self.dtype) or is_16bit(self.state_dtype)
        self.compute_dtype = float32 if lowp else self.dtype
        self.formats: StorageFormats | None = None
        if lowp:
            self.formats = StorageFormats(
                _lowp.storage_format(self.dtype), _lowp.storage_format(self.state_dtype), rounding
            )
        self.owner = owner
        self.sizes = [p.data.size for p in self.params]
        self.offsets = [0]
        for size in self.sizes[:-1]:
            self.offsets.append(self.offsets[-1] + size)
        total = sum(self.sizes)
        self.size = total
        self.data = np.empty(total, dtype=self.dtype)
        self.grad = np.empty(total, dtype=self.dtype)
        self.spec = dict(spec)
        #: ``{name: flat array}``, in ``spec`` order.
        self.state: dict[str, np.ndarray] = {
            name: np.full(total, init, dtype=self.state_dtype) for name, init in self.spec.items()
        }
        #: The state arrays in ``spec`` order, as the kernel takes them.
        self.arrays: tuple[np.ndarray, ...] = tuple(self.state.values())
        #: ``(data, grad, *arrays)``: a kernel's leading arguments (16-bit ones as uint16).
        self.args: tuple[np.ndarray, ...] = tuple(
            _kernel_view(a) for a in (self.data, self.grad, *self.arrays)
        )
        #: Holds each coordinate's update while stats are summed (allocated on first use).
        self.scratch = np.empty(0, dtype=self.compute_dtype)
        for p, off, size in zip(self.params, self.offsets, self.sizes):
            data_view = self.data[off : off + size].reshape(p.data.shape)
            grad_view = self.grad[off : off + size].reshape(p.data.shape)
            data_view[...] = p.data
            grad_view[...] = p.grad
            p.data = data_view
            p.grad = grad_view
        self._data_views = [p.data for p in self.params]
        self._grad_views = [p.grad for p in self.params]
        _LIVE[id(self.data)] = self
        self._runs_key: tuple[bool, ...] | None = None
        self._runs: list[tuple[np.ndarray, ...]] = []
        self._all_runs = [self.args]
        self._n_trainable = total
        self._segments_key: tuple[Any, ...] | None = None
        self._segments = np.zeros((0, 0, 2), np.int64)
        self._all_segments = np.zeros((0, 0, 2), np.int64)  # every parameter, for zero_grad

    def __getattr__(self, name: str) -> Any:
        # ``flat.exp_avg`` reads a state array (only reached when normal lookup fails).
        state = self.__dict__.get("state")
        if state is not None and name in state:
            return state[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or state {name!r}")

    def ensure_scratch(self) -> np.ndarray:
        """The scratch array (one value per coordinate), allocated once on first use."""
        if self.scratch.size != self.size:
            self.scratch = np.empty(self.size, dtype=self.compute_dtype)
        return self.scratch

    def check_bound(self) -> None:
        """Raise ``RuntimeError`` if a parameter's ``.data`` or ``.grad`` no longer views the
        flat buffers (the optimizer would silently stop updating it)."""
        for p, d, g in zip(self.params, self._data_views, self._grad_views):
            if p.data is not d or p.grad is not g:
                newer = _LIVE.get(id(p.data.base))
                if newer is not None and newer is not self and newer.data is p.data.base:
                    raise RuntimeError(
                        f"{self.owner}: parameter {p.name or '?'} now belongs to another "
                        f"optimizer ({newer.owner}) created after this one: a parameter's values "
                        "live in one optimizer's flat buffer at a time, and the newer one took "
                        "it over. Step only the newer optimizer, or use one optimizer with "
                        "parameter groups for different settings ([{'params': a}, {'params': b, "
                        "'lr': 1e-2}])."
                    )
                which = ".data" if p.data is not d else ".grad"
                raise RuntimeError(
                    f"{self.owner}: parameter {p.name or '?'} {which} was replaced by another "
                    "array, so the optimizer no longer sees it. Write values in place "
                    "(p.data[...] = x), or create the optimizer after the replacement; a "
                    "parameter can belong to only one optimizer."
                )

    def views(self, name: str) -> list[np.ndarray]:
        """Per-parameter views (shaped like each parameter) of the flat buffer ``name``
        (``"data"``, ``"grad"`` or a state name)."""
        buf = self.state[name] if name in self.state else getattr(self, name)
        return [
            buf[off : off + size].reshape(p.data.shape)
            for p, off, size in zip(self.params, self.offsets, self.sizes)
        ]

    def param_slices(self, j: int, typed: bool = False) -> tuple[np.ndarray, ...]:
        """``(data, grad, *arrays)`` restricted to parameter ``j`` (flat, contiguous views), as
        the kernel takes them, or in their real dtypes with ``typed``."""
        lo, hi = self.offsets[j], self.offsets[j] + self.sizes[j]
        full = (self.data, self.grad, *self.arrays) if typed else self.args
        return tuple(a[lo:hi] for a in full)

    def trainable_runs(self) -> list[tuple[np.ndarray, ...]]:
        """``(data, grad, *arrays)`` over each contiguous run of parameters whose
        ``requires_grad`` is true: ``[self.args]`` when none is frozen (the usual case), so a
        frozen parameter (``module.requires_grad_(False)``) is neither read nor written, as in
        PyTorch, where it has no gradient. Recomputed only when the frozen set changes."""
        for p in self.params:  # the usual case, without allocating anything
            if getattr(p, "requires_grad", True) is False:
                break
        else:
            self._n_trainable = self.size
            return self._all_runs
        key = tuple(getattr(p, "requires_grad", True) is not False for p in self.params)
        if key == self._runs_key:
            return self._runs
        runs: list[tuple[np.ndarray, ...]] = []
        j = 0
        while j < len(key):
            if not key[j]:
                j += 1
                continue
            lo = self.offsets[j]
            while j < len(key) and key[j]:
                j += 1
            hi = self.offsets[j - 1] + self.sizes[j - 1]
            runs.append(
                self.args if (lo, hi) == (0, self.size) else tuple(a[lo:hi] for a in self.args)
            )
        self._runs_key, self._runs = key, runs
        self._n_trainable = sum(r[0].size for r in runs)
        return runs

    def thread_segments(self, threads: int) -> np.ndarray:
        """The row-ownership table of :func:`minnet._pool.thread_segments` over the trainable
        parameters (frozen ones are left out): ``segs[t, j] = (lo, hi)``, the flat range that
        thread ``t`` of ``threads`` updates of the ``j``-th trainable parameter. Recomputed only
        when ``threads`` or the frozen set changes."""
        runs = self.trainable_runs()
        key = (threads, None if runs is self._all_runs else self._runs_key)
        if key != self._segments_key:
            keep = [
                j
                for j, p in enumerate(self.params)
                if getattr(p, "requires_grad", True) is not False
            ]
            self._segments = _pool.thread_segments(
                [self.params[j].data.shape for j in keep], [self.offsets[j] for j in keep], threads
            )
            self._segments_key = key
        return self._segments

    def zero_grad(self, threads: int) -> None:
        """Fill ``grad`` with zeros. With ``threads > 1`` (minnet's pool) and at least
        :data:`minnet._pool.OPTIM_MIN_SIZE` elements, thread ``t`` zeroes the rows it owns
        (:func:`minnet._pool.owned_rows`) of every parameter, frozen ones included: the rows it
        then adds into in a pooled ``Linear`` backward and updates in the step, so they stay in
        its core's cache; else one ``fill``."""
        if threads < 2 or self.size < _pool.OPTIM_MIN_SIZE:
            self.grad.fill(0)
            return
        segs = self._all_segments
        if segs.shape[0] != threads:
            segs = self._all_segments = _pool.thread_segments(
                [p.data.shape for p in self.params], self.offsets, threads
            )
        _zero_segments(self.args[1], segs)

    @property
    def n_trainable(self) -> int:
        """Coordinates updated by a step (as of the latest :meth:`trainable_runs`)."""
        return self._n_trainable

    def reset_state(self) -> None:
        """Refill every state array with its initial value."""
        for name, init in self.spec.items():
            self.state[name].fill(init)

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

A parameter without a gradient (``p.grad is None``, PyTorch's cleared state) keeps its place
in ``grad``, filled with zeros (``Parameter.grad``'s setter and :meth:`FlatBuffers.zero_grad`
keep it so), and a step leaves it out: :meth:`FlatBuffers.step_runs` gives the runs of
parameters that take the step, with their own step counts.
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


#: Bytes between the flat buffers' addresses modulo 4096 (see :func:`_staggered`).
_STAGGER = 512


def _staggered(size: int, dtype: np.dtype, k: int) -> np.ndarray:
    """An uninitialised 1-D array of ``size`` elements that starts ``k * 512`` bytes (mod 4096)
    past a 4096-byte boundary. Large NumPy arrays all start at the same offset within a page,
    so a kernel streaming through several of them meets *4K aliasing*: a load whose address
    has the same low 12 bits as a pending store to another array waits for it. Staggering the
    buffers (data 0, grad 1, state arrays 2, 3, ...) avoids it; every offset is a multiple of
    64 bytes, so vector loads stay cache-line aligned."""
    itemsize = np.dtype(dtype).itemsize
    owner = np.empty(size + 4096 // itemsize, dtype)  # the views' ``base`` (see check_bound)
    start = (k * _STAGGER - owner.ctypes.data) % 4096 // itemsize
    return owner[start : start + size]


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
        tensor_spec: ``{name: initial value}`` of a per-tensor stage's scalar state (one value
            per parameter, float64: :attr:`tensor_state`); empty for every other rule.

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
        tensor_spec: Mapping[str, float] | None = None,
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
        self.data = _staggered(total, self.dtype, 0)
        self.grad = _staggered(total, self.dtype, 1)
        self.spec = dict(spec)
        #: ``{name: flat array}``, in ``spec`` order.
        self.state: dict[str, np.ndarray] = {}
        for k, (name, init) in enumerate(self.spec.items()):
            self.state[name] = _staggered(total, self.state_dtype, 2 + k)
            self.state[name].fill(init)
        #: The state arrays in ``spec`` order, as the kernel takes them.
        self.arrays: tuple[np.ndarray, ...] = tuple(self.state.values())
        #: ``(data, grad, *arrays)``: a kernel's leading arguments (16-bit ones as uint16).
        self.args: tuple[np.ndarray, ...] = tuple(
            _kernel_view(a) for a in (self.data, self.grad, *self.arrays)
        )
        #: Holds each coordinate's update while stats are summed (allocated on first use).
        self.scratch = np.empty(0, dtype=self.compute_dtype)
        self._grad_views: list[np.ndarray] = []
        for p, off, size in zip(self.params, self.offsets, self.sizes):
            data_view = self.data[off : off + size].reshape(p.data.shape)
            grad_view = self.grad[off : off + size].reshape(p.data.shape)
            data_view[...] = p.data
            had_grad = p.grad is not None
            grad_view[...] = p.grad if had_grad else 0  # a None gradient's place holds zeros
            p.data = data_view
            p._home = None
            p.grad = grad_view if had_grad else None
            p._bind_grad(grad_view)
            self._grad_views.append(grad_view)
        self._data_views = [p.data for p in self.params]
        _LIVE[id(self.data.base)] = self  # keyed by the owner of the memory: p.data.base
        #: Each parameter's step count (PyTorch's per-parameter ``"step"``): a step advances
        #: those of the parameters it updates (see :meth:`step_runs`).
        self.steps: list[int] = [0] * len(self.params)
        #: Each parameter's scalar state carried from step to step (NAdam's ``mu_product``).
        self.group_states: list[dict[str, float]] = [{} for _ in self.params]
        self._uniform = True  # every parameter has the same step count and scalar state
        self._all_js = list(range(len(self.params)))
        self._runs_key: tuple[Any, ...] | None = None
        self._runs: list[tuple[int, int, list[int]]] = []
        self._n_trainable = total
        self._segments_key: tuple[Any, ...] | None = None
        self._segments = np.zeros((0, 0, 2), np.int64)
        self._all_segments = np.zeros((0, 0, 2), np.int64)  # every parameter, for zero_grad
        self._bounds: dict[tuple[int, int], np.ndarray] = {}
        #: Each parameter's ``(||p||, ||u||)`` as a per-tensor stage saw them in its latest step
        #: (:class:`minnet.optim._kernel.Tensor`; NaN before one).
        self.tensor_norms = np.full((len(self.params), 2), np.nan)
        #: ``{name: initial value}`` of the per-tensor scalar state, and the values: row ``j``
        #: is parameter ``j``'s, one column per name, float64 (Novograd's ``nu``).
        self.tensor_spec = dict(tensor_spec or {})
        self.tensor_state = np.empty((len(self.params), len(self.tensor_spec)))
        self.tensor_state[...] = list(self.tensor_spec.values())

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
        """Raise ``RuntimeError`` if a parameter's ``.data`` no longer views the flat buffers,
        or its ``.grad`` was replaced by an array that does not fit them (the optimizer would
        silently stop updating it). A ``None`` gradient is fine: the step skips it."""
        for p, d, g in zip(self.params, self._data_views, self._grad_views):
            if p.data is not d or p._home is not g:
                newer = _LIVE.get(id(p.data.base))
                if newer is not None and newer is not self and newer.data.base is p.data.base:
                    raise RuntimeError(
                        f"{self.owner}: parameter {p.name or '?'} now belongs to another "
                        f"optimizer ({newer.owner}) created after this one: a parameter's values "
                        "live in one optimizer's flat buffer at a time, and the newer one took "
                        "it over. Step only the newer optimizer, or use one optimizer with "
                        "parameter groups for different settings ([{'params': a}, {'params': b, "
                        "'lr': 1e-2}])."
                    )
                if p.data is not d:
                    raise RuntimeError(
                        f"{self.owner}: parameter {p.name or '?'} .data was replaced by another "
                        "array, so the optimizer no longer sees it. Write values in place "
                        "(p.data[...] = x), or create the optimizer after the replacement; a "
                        "parameter can belong to only one optimizer."
                    )
                got = p.grad
                what = (
                    f"an array of shape {got.shape} and dtype {got.dtype}"
                    if isinstance(got, np.ndarray)
                    else f"a {type(got).__name__}"
                )
                raise RuntimeError(
                    f"{self.owner}: parameter {p.name or '?'} .grad was set to {what}; a "
                    f"gradient must be an array of the parameter's shape {d.shape} and dtype "
                    f"{d.dtype} (it is then copied into the optimizer's buffer), or None to "
                    "skip the parameter in the next step."
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

    def _taking(self) -> tuple[bool, ...] | None:
        """Which parameters a step updates: those with ``requires_grad`` and a gradient
        (``grad`` not ``None``), as PyTorch's optimizers skip a parameter whose ``grad`` is
        ``None``; ``None`` when all of them (the usual case, checked without allocating)."""
        for p in self.params:
            if p._grad is None or p.requires_grad is False:
                break
        else:
            return None
        return tuple(p._grad is not None and p.requires_grad is not False for p in self.params)

    def step_runs(self) -> list[tuple[tuple[np.ndarray, ...], list[int], int, dict[str, float]]]:
        """What a step updates, as ``(args, js, step, group_state)`` per run: ``args`` the
        kernel's ``(data, grad, *arrays)`` over a contiguous run of parameters ``js`` that
        take this step and share their step count ``step`` (before the step) and scalar
        state. ``[(self.args, every j, ...)]`` in the usual case (one kernel call over the
        whole buffer); a parameter without a gradient or frozen splits it, and so do
        parameters whose step counts differ (each run gets its own bias corrections).
        Updates :attr:`n_trainable`."""
        key = self._taking()
        if key is None and self._uniform:
            self._n_trainable = self.size
            return [(self.args, self._all_js, self.steps[0], self.group_states[0])]
        steps, states = self.steps, self.group_states
        full = (key or (True,) * len(self.params), tuple(steps), self._uniform)
        if full != self._runs_key:
            taking = full[0]
            runs: list[tuple[int, int, list[int]]] = []
            j = 0
            while j < len(taking):
                if not taking[j]:
                    j += 1
                    continue
                js = [j]
                j += 1
                while (
                    j < len(taking)
                    and taking[j]
                    and steps[j] == steps[js[0]]
                    and states[j] == states[js[0]]
                ):
                    js.append(j)
                    j += 1
                runs.append((self.offsets[js[0]], self.offsets[js[-1]] + self.sizes[js[-1]], js))
            self._runs_key, self._runs = full, runs
        out = []
        n = 0
        for lo, hi, js in self._runs:
            args = self.args if (lo, hi) == (0, self.size) else tuple(a[lo:hi] for a in self.args)
            out.append((args, js, steps[js[0]], states[js[0]]))
            n += hi - lo
        self._n_trainable = n
        return out

    def bounds(self, js: list[int]) -> np.ndarray:
        """The starts of parameters ``js`` (a contiguous run) and its end, relative to the
        run's start (int64): the tensors of a per-tensor stage over that run."""
        key = (js[0], js[-1])
        out = self._bounds.get(key)
        if out is None:
            lo = self.offsets[js[0]]
            end = self.offsets[js[-1]] + self.sizes[js[-1]]
            out = np.array([self.offsets[j] - lo for j in js] + [end - lo], np.int64)
            self._bounds[key] = out
        return out

    def advance(self, js: list[int], group_state: dict[str, float]) -> None:
        """After a step over parameters ``js``: their step counts go up by one and their
        scalar state becomes ``group_state``."""
        steps, states = self.steps, self.group_states
        for j in js:
            steps[j] += 1
            states[j] = group_state
        if len(js) != len(steps):
            self.check_uniform()

    def check_uniform(self) -> None:
        """Note whether every parameter has the same step count and scalar state."""
        steps, states = self.steps, self.group_states
        self._uniform = all(s == steps[0] for s in steps) and all(
            g == states[0] for g in states
        )

    def thread_segments(self, threads: int) -> np.ndarray:
        """The row-ownership table of :func:`minnet._pool.thread_segments` over the parameters
        that take the step (as of the latest :meth:`step_runs`; the others are left out):
        ``segs[t, j] = (lo, hi)``, the flat range that thread ``t`` of ``threads`` updates of
        the ``j``-th of them. Recomputed only when ``threads`` or that set changes."""
        key = self._taking()
        if (threads, key) != self._segments_key:
            keep = [j for j in range(len(self.params)) if key is None or key[j]]
            self._segments = _pool.thread_segments(
                [self.params[j].data.shape for j in keep], [self.offsets[j] for j in keep], threads
            )
            self._segments_key = (threads, key)
        return self._segments

    def zero_grad(self, threads: int, set_to_none: bool = False) -> None:
        """Fill ``grad`` with zeros, and with ``set_to_none`` make every parameter's ``.grad``
        ``None`` (PyTorch's cleared state; the zeros are where the next backward adds).
        With ``threads > 1`` (minnet's pool) and at least
        :data:`minnet._pool.OPTIM_MIN_SIZE` elements, thread ``t`` zeroes the rows it owns
        (:func:`minnet._pool.owned_rows`) of every parameter, frozen ones included: the rows it
        then adds into in a pooled ``Linear`` backward and updates in the step, so they stay in
        its core's cache; else one ``fill``."""
        if threads < 2 or self.size < _pool.OPTIM_MIN_SIZE:
            self.grad.fill(0)
        else:
            segs = self._all_segments
            if segs.shape[0] != threads:
                segs = self._all_segments = _pool.thread_segments(
                    [p.data.shape for p in self.params], self.offsets, threads
                )
            _zero_segments(self.args[1], segs)
        if set_to_none:
            for p, g in zip(self.params, self._grad_views):
                if p._home is g:
                    p._grad = None

    @property
    def n_trainable(self) -> int:
        """Coordinates updated by a step (as of the latest :meth:`step_runs`)."""
        return self._n_trainable

    def reset_state(self) -> None:
        """Refill every state array with its initial value."""
        for name, init in self.spec.items():
            self.state[name].fill(init)
        self.tensor_state[...] = list(self.tensor_spec.values())

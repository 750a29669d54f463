r"""Shaped updates: optimizers whose step works on a parameter's matrix shape (Adafactor's
factored second moment, row and column means of ``g**2``).

An element rule (:mod:`minnet.optim._kernel`) sees one coordinate at a time and a per-tensor
stage (``Rule.tensor``) only norms; a *shaped* optimizer declares instead a NumPy update of one
parameter at a time, over arrays shaped as the parameter:

.. code-block:: text

    update(p, g, state, s, o, work, track) -> dominated

    p        the parameter, shaped (float32/float64: a view of the flat buffer, updated in place)
    g        its gradient, shaped, read-only (negated for ``maximize``)
    state    the state arrays of this parameter in ``_state_spec`` order, each shaped as the
             parameter, updated in place (a factored moment keeps its row or column in a slice)
    s, o     the step's constants (``_scalars``: computed once in float64, cast) and options
    work     a scratch array of the parameter's shape in the compute dtype (may be overwritten)
    track    whether the caller counts: return the number of eps-dominated coordinates then
             (0 is fine otherwise)

The update is array math on contiguous float32/float64 arrays (BLAS products, reductions with
``axis``, ``out=`` to reuse ``work``): no Python loop over elements. :class:`ShapedKernel` runs it
for every parameter of a run and does everything the element skeleton does, in one place:

* float32/float64 buffers: ``p`` and ``state`` are reshaped views of the flat buffers (nothing
  copied); 16-bit buffers (``rounding="fused"``): float32 copies, each stored back rounded once
  (NumPy's and ml_dtypes' round-to-nearest-even casts);
* the dry run of ``check_finite`` (``write=False``): the update runs on copies and the kernel
  counts the parameters and state values that would be stored non-finite, writing nothing;
* ``track_stats``: ``eps_dominated`` from the update, ``nonfinite`` over the stored parameters,
  the sum of squares of ``p_new - p`` in float64 (``update_rms``) and, for 16-bit parameters,
  the lost updates (stored new parameter equal to the old one although the update is not 0);
  ``underflow`` is not counted (a factored moment has no per-coordinate second moment).

The kernel takes the element kernel's arguments, ``kernel(param, grad, *state, scratch, s,
bounds=None, shapes=None, record=None)`` over flat 1-D buffers (``uint16`` views of 16-bit ones),
``bounds`` the tensors' starts and the end (as a per-tensor stage's) and ``shapes`` their shapes;
``None`` for both is one 1-D tensor over the whole buffer, which is how the family's table tests
drive every optimizer. It returns the element kernel's counts (3 for float32/float64 buffers, 5
for 16-bit ones). ``record`` is accepted and left alone (the per-tensor norms are the element
stage's). Elementwise optimizers never reach this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minnet._lowp import F16, NATIVE
from minnet.dtypes import load_bfloat16
from minnet.optim._flat import StorageFormats
from minnet.optim._kernel import format_codes

__all__ = ["ShapedKernel", "shaped_kernel", "shaped_reference"]


def _storage(fmt: int) -> np.dtype:
    return np.dtype(np.float16) if fmt == F16 else load_bfloat16()


class ShapedKernel:
    """A shaped update (module docstring) as a kernel over flat buffers, for one set of options,
    flags and storage formats."""

    def __init__(
        self, update: Callable[..., int], options: tuple[Any, ...], track: bool, write: bool,
        formats: StorageFormats | None, negate: bool,
    ) -> None:  # fmt: skip
        self.update = update
        self.options = options
        self.track = track
        self.write = write
        self.fp, self.fs, _ = format_codes(formats)
        self.negate = negate

    def _load(self, a: np.ndarray, fmt: int, shape: tuple[int, ...], copy: bool) -> np.ndarray:
        if fmt == NATIVE:
            a = a.reshape(shape)
            return a.copy() if copy else a
        return a.view(_storage(fmt)).astype(np.float32).reshape(shape)

    def __call__(
        self, param: np.ndarray, grad: np.ndarray, *rest: Any, bounds: Any = None,
        shapes: Sequence[tuple[int, ...]] | None = None, record: Any = None,
    ) -> tuple[Any, ...]:  # fmt: skip
        *state, scratch, s = rest
        n = param.shape[0]
        if bounds is None:
            bounds = (0, n)
        if shapes is None:
            shapes = [(int(bounds[j + 1] - bounds[j]),) for j in range(len(bounds) - 1)]
        fp, fs, track, write = self.fp, self.fs, self.track, self.write
        lowp = fp != NATIVE or fs != NATIVE
        compute = np.dtype(np.float32) if lowp else param.dtype
        n_dominated = n_nonfinite = n_lost = 0
        sum_sq = 0.0
        for j, shape in enumerate(shapes):
            lo, hi = int(bounds[j]), int(bounds[j + 1])
            if hi == lo:
                continue
            copy = not write
            p = self._load(param[lo:hi], fp, shape, copy)
            g = self._load(grad[lo:hi], fp, shape, False)
            if self.negate:
                g = -g
            elif fp == NATIVE:
                g = g.view()
                g.flags.writeable = False
            st = tuple(self._load(a[lo:hi], fs, shape, copy) for a in state)
            if scratch.shape[0] >= hi and scratch.dtype == compute:
                work = scratch[lo:hi].reshape(shape)
            else:
                work = np.empty(shape, compute)
            before = p.copy() if track else None
            with np.errstate(all="ignore"):
                dominated = self.update(p, g, st, s, self.options, work, track)
            p_stored = p if fp == NATIVE else p.astype(_storage(fp))
            if track:
                n_dominated += int(dominated)
                new = p_stored if fp == NATIVE else p_stored.astype(np.float32)
                bad = ~np.isfinite(new)
                if not write:
                    for a in st:
                        stored = a if fs == NATIVE else a.astype(_storage(fs)).astype(np.float32)
                        bad |= ~np.isfinite(stored)
                n_nonfinite += int(bad.sum())
                with np.errstate(all="ignore"):
                    change = (p - before).astype(np.float64).ravel()
                    sum_sq += float(np.dot(change, change))
                if fp != NATIVE:
                    old = before.astype(_storage(fp)).astype(np.float32)  # type: ignore[union-attr]
                    n_lost += int(((new == old) & (p != before)).sum())
            if write and fp != NATIVE:  # float32/float64 ones were updated in place
                param[lo:hi] = p_stored.reshape(-1).view(np.uint16)
            if write and fs != NATIVE:
                for a, v in zip(state, st):
                    a[lo:hi] = v.astype(_storage(fs)).reshape(-1).view(np.uint16)
        counts = (n_dominated, n_nonfinite, sum_sq, 0, n_lost)
        if not track:
            counts = (0, 0, 0.0, 0, 0)
        return counts if lowp else counts[:3]


def shaped_kernel(
    update: Callable[..., int], options: tuple[Any, ...], track: bool, write: bool,
    formats: StorageFormats | None = None, negate: bool = False,
) -> ShapedKernel:  # fmt: skip
    """The kernel of a shaped update for these options, flags and storage formats (``None``:
    float32/float64 buffers)."""
    return ShapedKernel(update, tuple(options), bool(track), bool(write), formats, bool(negate))


def shaped_reference(
    update: Callable[..., int], options: tuple[Any, ...], formats: StorageFormats,
    negate: bool = False,
) -> Callable[..., None]:  # fmt: skip
    """``ref(param, grad, *state, scalars)`` over typed arrays (float16, bfloat16, float32), in
    place: the 16-bit reference of a shaped update, which is the update itself on float32
    copies, stored rounded once (it checks the loads and stores; the float64 reference and the
    library fixtures check the formula)."""
    kernel = ShapedKernel(update, tuple(options), False, True, formats, negate)

    def ref(param: np.ndarray, grad: np.ndarray, *rest: Any) -> None:
        *state, s = rest

        def raw(a: np.ndarray) -> np.ndarray:
            return a.view(np.uint16) if a.itemsize == 2 else a

        kernel(raw(param), raw(grad), *(raw(a) for a in state), np.empty(0, np.float32), s)

    return ref

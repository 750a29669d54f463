r"""Gradient clipping with PyTorch's formulas (``torch.nn.utils.clip_grad_norm_`` /
``clip_grad_value_``), over minnet's flat gradient buffers.

A minnet optimizer packs every gradient into one contiguous buffer per dtype and makes each
``p.grad`` a view into it. The functions here find those buffers (following ``p.grad.base``),
merge the views that sit side by side into runs, and then read or write each run in one Numba
loop, instead of one call per parameter. Gradients that are not such views (or that overlap, as
when a parameter is listed twice) are handled one array at a time, and counted as often as they
are listed, as in PyTorch.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable
from typing import Any

import numba
import numpy as np

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

# Pure reductions: reassociation lets LLVM keep several partial sums in vector registers.
_REDUCE_FLAGS = {"reassoc", "nsz"}


@numba.njit(cache=True, error_model="numpy", fastmath=_REDUCE_FLAGS)
def _sum_sq(buf: np.ndarray) -> float:
    """``sum(float64(x)**2)`` over a 1-D buffer (float32 is widened on load)."""
    acc = 0.0
    for i in range(buf.shape[0]):
        x = np.float64(buf[i])
        acc += x * x
    return acc


@numba.njit(cache=True, error_model="numpy", fastmath=_REDUCE_FLAGS)
def _sum_abs(buf: np.ndarray) -> float:
    """``sum(|float64(x)|)`` over a 1-D buffer."""
    acc = 0.0
    for i in range(buf.shape[0]):
        acc += abs(np.float64(buf[i]))
    return acc


@numba.njit(cache=True, error_model="numpy", fastmath=_REDUCE_FLAGS)
def _sum_pow(buf: np.ndarray, p: float) -> float:
    """``sum(|float64(x)|**p)`` over a 1-D buffer."""
    acc = 0.0
    for i in range(buf.shape[0]):
        acc += abs(np.float64(buf[i])) ** p
    return acc


@numba.njit(cache=True, error_model="numpy")
def _max_abs_bits(bits: np.ndarray, mask: Any) -> Any:
    """``max(bits & mask)`` over the unsigned-integer view of a float buffer.

    With the sign bit masked off, the bit patterns of non-negative floats sort as the floats do,
    and every NaN sorts above ``inf``: the integer maximum is the bit pattern of ``max(|x|)``,
    NaN if any element is NaN (as ``torch.max``). Integer max vectorizes; float max with NaN
    checks does not.
    """
    m = mask - mask
    for i in range(bits.shape[0]):
        v = bits[i] & mask
        if v > m:
            m = v
    return m


_ABS_MASK = {
    np.dtype(np.float32): np.uint32(0x7FFFFFFF),
    np.dtype(np.float64): np.uint64(0x7FFFFFFFFFFFFFFF),
}


@numba.njit(cache=True, error_model="numpy")
def _scale(buf: np.ndarray, coef: Any) -> None:
    """``buf *= coef`` in the buffer's dtype (``coef`` has that dtype)."""
    for i in range(buf.shape[0]):
        buf[i] = buf[i] * coef


@numba.njit(cache=True, error_model="numpy")
def _clamp(buf: np.ndarray, lo: Any, hi: Any) -> None:
    """``buf = min(max(buf, lo), hi)``, NaN kept (``clamp_min_`` then ``clamp_max_``)."""
    for i in range(buf.shape[0]):
        x = buf[i]
        if x < lo:
            x = lo
        if x > hi:
            x = hi
        buf[i] = x


def _grads(parameters: Any) -> tuple[list[Any], list[np.ndarray]]:
    """The parameters (a single one is wrapped in a list) and their non-None gradients."""
    if hasattr(parameters, "grad"):
        params = [parameters]
    else:
        params = list(parameters)
    grads = []
    for i, p in enumerate(params):
        if isinstance(p, np.ndarray) or not hasattr(p, "grad"):
            raise TypeError(
                f"parameters must be Parameters (objects with .grad) or an iterable of them; "
                f"element {i} is {type(p).__name__}"
            )
        g = p.grad
        if g is None:
            continue
        if not isinstance(g, np.ndarray) or g.dtype not in (np.float32, np.float64):
            raise TypeError(
                f"gradient of parameter {i} ({getattr(p, 'name', '') or '?'}) must be a float32 "
                f"or float64 array, got {type(g).__name__} "
                f"{getattr(g, 'dtype', '')}".rstrip()
            )
        grads.append(g)
    return params, grads


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _segments(grads: list[np.ndarray]) -> list[np.ndarray]:
    """1-D arrays covering every gradient once per listing, as few as possible.

    Gradients that are C-contiguous views of one contiguous root buffer of their dtype are
    sorted by offset; views that touch are merged into one run (a whole optimizer buffer becomes
    one segment). Anything else (a standalone array, a non-contiguous view, a buffer whose views
    overlap, e.g. a parameter listed twice) stays as its own segment(s).
    """
    by_root: dict[int, tuple[np.ndarray, list[tuple[int, int, np.ndarray]]]] = {}
    loose: list[np.ndarray] = []
    for g in grads:
        root = _root(g)
        if (
            root is g
            or not g.flags.c_contiguous
            or not root.flags.c_contiguous
            or root.dtype != g.dtype
        ):
            loose.append(g)
            continue
        start = (_address(g) - _address(root)) // g.itemsize
        entry = by_root.setdefault(id(root), (root, []))
        entry[1].append((start, start + g.size, g))
    segments: list[np.ndarray] = []
    for root, spans in by_root.values():
        spans.sort(key=lambda s: s[0])
        if any(spans[k + 1][0] < spans[k][1] for k in range(len(spans) - 1)):
            loose.extend(s[2] for s in spans)
            continue
        flat = root.reshape(-1)
        run_start, run_stop = spans[0][0], spans[0][1]
        for start, stop, _ in spans[1:]:
            if start == run_stop:
                run_stop = stop
            else:
                segments.append(flat[run_start:run_stop])
                run_start, run_stop = start, stop
        segments.append(flat[run_start:run_stop])
    for g in loose:
        if g.flags.c_contiguous:
            segments.append(g.reshape(-1))
        else:
            segments.append(g)  # handled by NumPy (in-place ops on a strided view)
    return segments


def _segment_sum(seg: np.ndarray, p: float) -> float:
    if seg.ndim == 1 and seg.flags.c_contiguous:
        if p == 2.0:
            return _sum_sq(seg)
        if p == 1.0:
            return _sum_abs(seg)
        return _sum_pow(seg, p)
    a = np.abs(seg, dtype=np.float64)
    return float(np.sum(a * a) if p == 2.0 else np.sum(a**p))


def _segment_max(seg: np.ndarray) -> float:
    if seg.ndim == 1 and seg.flags.c_contiguous:
        mask = _ABS_MASK[seg.dtype]
        bits = _max_abs_bits(seg.view(mask.dtype), mask)
        return float(np.array(bits, dtype=mask.dtype).view(seg.dtype))
    return float(np.max(np.abs(seg))) if seg.size else 0.0


def _total_norm(grads: list[np.ndarray], segments: list[np.ndarray], p: float) -> float:
    """The norm of all gradients taken as one vector, in float64."""
    if p == math.inf:
        # np.max, unlike max(), propagates a NaN from any segment.
        return float(np.max([_segment_max(s) for s in segments])) if segments else 0.0
    if p == -math.inf:
        # PyTorch: min over tensors of min |g| (an empty gradient contributes +inf).
        return float(np.min([np.min(np.abs(g)) if g.size else math.inf for g in grads]))
    if p == 0.0:
        # PyTorch takes the 0-"norm" (count of non-zeros) of the per-tensor counts: the number
        # of gradients with any non-zero entry.
        return float(sum(1 for g in grads if np.count_nonzero(g)))
    total = math.fsum(_segment_sum(s, p) for s in segments)
    return total ** (1.0 / p)


def _scale_segments(segments: list[np.ndarray], coef: float) -> None:
    for seg in segments:
        c = seg.dtype.type(coef)
        if seg.ndim == 1 and seg.flags.c_contiguous:
            _scale(seg, c)
        else:
            np.multiply(seg, c, out=seg)


def _check_foreach(foreach: object) -> None:
    if foreach is not None and not isinstance(foreach, (bool, np.bool_)):
        raise TypeError(f"foreach must be None or a bool, got {type(foreach).__name__}")


def clip_grad_norm_(
    parameters: Any | Iterable[Any],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> np.floating:
    r"""Scale all gradients in place so that their joint norm is at most ``max_norm``.

    With ``g`` every gradient concatenated into one vector (PyTorch's definition):

    .. code-block:: text

        total_norm = (sum |g|**norm_type) ** (1 / norm_type)      (max |g| for norm_type=inf)
        clip_coef  = max_norm / (total_norm + 1e-6)
        g          = g * min(clip_coef, 1)

    The ``1e-6`` is PyTorch's fixed guard against a zero norm (not configurable there either);
    after clipping the norm is slightly *below* ``max_norm`` (by a factor
    ``total_norm / (total_norm + 1e-6)``). Gradients are only scaled down, never up.

    Precision: the sums are accumulated in float64 even for float32 gradients (PyTorch
    accumulates each gradient's norm in its own dtype), then ``total_norm`` is rounded to the
    gradients' dtype (float64 if any gradient is float64) and ``clip_coef`` is computed in that
    dtype as PyTorch does, ``max_norm * (1 / (total_norm + 1e-6))``. The result therefore equals
    PyTorch's up to PyTorch's own float32 round-off in the norm (a few ulp), and is at least as
    accurate; with float32 and float64 gradients mixed, PyTorch rounds each float32 gradient's
    norm to float32 before combining them in float64, so the two agree to float32 round-off.

    Layout: gradients that are views into one flat buffer (as a minnet optimizer makes them) are
    read in one Numba pass per buffer and scaled in a second pass (skipped when the coefficient
    is exactly 1); other gradients are processed one array at a time.

    ``norm_type`` follows ``torch.linalg.vector_norm`` applied per gradient and then to the
    per-gradient norms: ``-inf`` is the smallest ``|g|`` and ``0`` is, as in PyTorch, the
    number of gradients with any non-zero entry.

    Args:
        parameters: a :class:`minnet.nn.Parameter` or an iterable of them (any object with a
            ``.grad`` array; ``grad is None`` is skipped, as in PyTorch).
        max_norm: the largest allowed norm.
        norm_type: order of the norm, a float; ``float("inf")`` (or ``"inf"``) for the max norm.
            Default ``2.0``.
        error_if_nonfinite: raise ``RuntimeError`` (PyTorch's message) when ``total_norm`` is
            NaN or infinite, leaving the gradients unchanged. Default ``False``: the gradients
            are then multiplied by the NaN or zero coefficient, as in PyTorch.
        foreach: accepted for PyTorch compatibility and ignored (the flat pass is always used).

    Returns:
        ``total_norm`` before clipping, a NumPy scalar of the gradients' dtype (PyTorch returns a
        0-d tensor of that dtype); ``float32`` ``0.0`` when there are no gradients.
    """
    _check_foreach(foreach)
    if isinstance(parameters, types.GeneratorType):
        params, grads = _grads(parameters)
        if not params:
            warnings.warn(
                "`parameters` is an empty generator, no gradient clipping will occur.",
                stacklevel=2,
            )
    else:
        params, grads = _grads(parameters)
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not grads:
        return np.float32(0.0)
    dtype = np.result_type(*grads)
    segments = _segments(grads)
    total = dtype.type(_total_norm(grads, segments, norm_type))
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )
    one = dtype.type(1.0)
    with np.errstate(all="ignore"):
        coef = dtype.type(max_norm) * (one / (total + dtype.type(1e-6)))
    coef = np.minimum(coef, one)  # NaN stays NaN, as torch.clamp
    if not coef == one:
        _scale_segments(segments, float(coef))
    return total


def clip_grad_value_(
    parameters: Any | Iterable[Any],
    clip_value: float,
    foreach: bool | None = None,
) -> None:
    r"""Clamp every gradient element into ``[-clip_value, clip_value]``, in place.

    .. code-block:: text

        g = min(max(g, -clip_value), clip_value)

    As PyTorch's ``clamp_min_(-c)`` then ``clamp_max_(c)``: NaN stays NaN, and a negative
    ``clip_value`` sets every element to ``clip_value``. ``clip_value`` is rounded to each
    gradient's dtype. Views into a flat buffer are clamped in one Numba pass per buffer.

    Args:
        parameters: a :class:`minnet.nn.Parameter` or an iterable of them (``grad is None`` is
            skipped).
        clip_value: the bound.
        foreach: accepted for PyTorch compatibility and ignored.
    """
    _check_foreach(foreach)
    _, grads = _grads(parameters)
    clip_value = float(clip_value)
    for seg in _segments(grads):
        lo = seg.dtype.type(-clip_value)
        hi = seg.dtype.type(clip_value)
        if seg.ndim == 1 and seg.flags.c_contiguous:
            _clamp(seg, lo, hi)
        else:
            np.maximum(seg, lo, out=seg)
            np.minimum(seg, hi, out=seg)

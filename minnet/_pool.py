"""One thread pool for a whole training step, with row ownership.

When the thread policy (:mod:`minnet.threads`) gives minnet ``T > 1`` threads, large float32 /
float64 ``Linear`` layers and optimizer steps run in Numba ``parallel=True`` loops over ``T``
blocks, on Numba's OpenMP threading layer. Inside a block, matrix products are single-threaded
calls of the OpenBLAS that NumPy ships (``cblas_sgemm`` / ``cblas_dgemm``), and OpenBLAS's own
thread pool is held at one thread, so one pool of ``T`` threads does all the work of a step.

Row ownership (:func:`owned_rows`, the one rule that layers and optimizer share): a parameter
whose leading dimension has ``rows`` rows is split over ``T`` threads as rows
``[rows * t // T, rows * (t + 1) // T)`` for thread ``t`` (a 1-D parameter's elements are its
rows; a 0-d parameter is one row). Thread ``t`` computes those rows of a layer's output in the
forward pass, of the weight and bias gradient in the backward pass (accumulated straight into
``.grad``), and updates them in ``optimizer.step()`` (the flat buffers store each parameter
contiguously, so a thread's rows are one contiguous slice). The data a thread writes stays in
its core's cache, and no core writes what another has just read.

Availability (:func:`available`) needs: a NumPy linked to an ILP64 OpenBLAS that exports
``cblas_sgemm64_``-style symbols (NumPy's wheels: ``scipy_cblas_sgemm64_``), found with
``threadpoolctl``; and Numba's OpenMP threading layer (it needs the system's ``libgomp``). The
compiled code calls the BLAS functions by a fixed symbol name (``minnet_cblas_sgemm64``, bound to
the library's address with ``llvmlite.binding.add_symbol`` in every process), so it is cached on
disk like every other minnet kernel. Without them everything runs the serial code path (NumPy
products on BLAS's own threads, one optimizer kernel call per group), deliberately: Numba's other
layers (``workqueue``, ``tbb``) are not used by minnet, and a ``NUMBA_THREADING_LAYER`` other than
``omp`` set by the user turns the pool off. ``MINNET_POOL=0`` turns it off as well.

Between two parallel loops, OpenMP's idle threads spin-wait (libgomp: 300,000 spins by default,
~0.1 s), then sleep. Unless the user has set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, minnet
sets ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` before the OpenMP layer loads: long enough to span
the gap between a step's parallel loops (a passive wait, a futex wake-up per loop, made the pool
no faster than one thread), short enough that a thread the policy no longer uses goes to sleep
within about a millisecond. On a loaded machine the thread policy runs one thread, so nothing
spins; a user who fixes two threads on a loaded machine should also set
``OMP_WAIT_POLICY=PASSIVE`` (see the README's Performance section for the measurements).
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

from minnet._jitcache import Undescribable, cache_on_source, describe, generated

__all__ = [
    "SPIN_COUNT",
    "available",
    "reason",
    "threading_layer",
    "owned_rows",
    "param_rows",
    "thread_segments",
    "linear_forward",
    "linear_backward",
    "optimizer_driver",
    "optimizer_step",
    "LINEAR_MIN_WORK",
    "OPTIM_MIN_SIZE",
    # the single-threaded products that small layers call directly (minnet.nn.linear)
    "gemm",
    "add_column_sums",
    "operand",
    "NO_TRANS",
    "TRANS",
    "EMPTY",
    "EMPTY2",
]

#: ``GOMP_SPINCOUNT`` set before Numba's OpenMP layer loads, unless the user set it or
#: ``OMP_WAIT_POLICY``: spins before an idle pool thread sleeps (about a millisecond here).
SPIN_COUNT = "20000"
#: A Linear layer takes the pool path when ``N * in_features * out_features`` is at least this.
LINEAR_MIN_WORK = 1 << 20
#: An optimizer group's buffers take the pool path when they hold at least this many elements.
OPTIM_MIN_SIZE = 1 << 15

_ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's layout and transpose flags
_SGEMM, _DGEMM = "minnet_cblas_sgemm64", "minnet_cblas_dgemm64"
_i64, _i32, _ptr = types.int64, types.int32, types.voidptr
_sgemm = types.ExternalFunction(
    _SGEMM,
    types.void(
        _i32, _i32, _i32, _i64, _i64, _i64, types.float32, _ptr, _i64, _ptr, _i64,
        types.float32, _ptr, _i64,
    ),
)  # fmt: skip
_dgemm = types.ExternalFunction(
    _DGEMM,
    types.void(
        _i32, _i32, _i32, _i64, _i64, _i64, types.float64, _ptr, _i64, _ptr, _i64,
        types.float64, _ptr, _i64,
    ),
)  # fmt: skip

# ILP64 names of cblas_?gemm in OpenBLAS builds (NumPy >= 2 wheels first).
_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"), ("cblas_sgemm64_", "cblas_dgemm64_"))


# -- the ownership rule -----------------------------------------------------------------------


def owned_rows(rows: int, t: int, threads: int) -> tuple[int, int]:
    """Rows ``[rows * t // threads, rows * (t + 1) // threads)``: thread ``t``'s share of a
    parameter (or layer output) with ``rows`` rows, out of ``threads`` threads."""
    return rows * t // threads, rows * (t + 1) // threads


def param_rows(shape: Sequence[int]) -> tuple[int, int]:
    """``(rows, elements per row)`` of a parameter of this shape: its leading dimension; a 1-D
    parameter's elements are rows; a 0-d parameter is one row of one element."""
    if len(shape) == 0:
        return 1, 1
    rows = int(shape[0])
    return rows, (int(np.prod(shape[1:])) if len(shape) > 1 else 1)


def thread_segments(
    shapes: Sequence[Sequence[int]], offsets: Sequence[int], threads: int
) -> np.ndarray:
    """``segs[t, j] = (lo, hi)``: the flat-buffer range that thread ``t`` owns of parameter
    ``j`` (parameter ``j`` stored at ``offsets[j]``, shape ``shapes[j]``), by :func:`owned_rows`.
    An int64 array of shape ``(threads, len(shapes), 2)``."""
    segs = np.zeros((threads, len(shapes), 2), np.int64)
    for j, (shape, off) in enumerate(zip(shapes, offsets)):
        rows, per_row = param_rows(shape)
        for t in range(threads):
            r0, r1 = owned_rows(rows, t, threads)
            segs[t, j] = off + r0 * per_row, off + r1 * per_row
    return segs


# -- availability -----------------------------------------------------------------------------


class _Status:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checked = False
        self.ok = False
        self.why = "not checked yet"
        self.blas_path: str | None = None


_status = _Status()


def _find_blas() -> tuple[str | None, str]:
    """Bind the gemm symbols of NumPy's OpenBLAS to minnet's names; ``(path, why-not)``."""
    from threadpoolctl import threadpool_info

    libs = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    if not libs:
        return None, "NumPy's BLAS is not OpenBLAS"
    libs.sort(key=lambda i: "numpy" not in str(i.get("filepath", "")))
    from llvmlite import binding

    for info in libs:
        path = info.get("filepath")
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for s_name, d_name in _SYMBOLS:
            try:
                s_fn, d_fn = getattr(lib, s_name), getattr(lib, d_name)
            except AttributeError:
                continue
            binding.add_symbol(_SGEMM, ctypes.cast(s_fn, ctypes.c_void_p).value)
            binding.add_symbol(_DGEMM, ctypes.cast(d_fn, ctypes.c_void_p).value)
            return path, ""
    return None, "no ILP64 cblas_sgemm64_/cblas_dgemm64_ symbol in NumPy's OpenBLAS"


def _check_omp() -> str:
    """Make Numba use its OpenMP layer (unless the user chose one); ``""`` or why not."""
    from numba.np.ufunc import parallel

    layer = str(numba.config.THREADING_LAYER).lower()
    if parallel._is_initialized:
        return "" if numba.threading_layer() == "omp" else (
            f"Numba's threading layer is {numba.threading_layer()!r}, not 'omp'"
        )  # fmt: skip
    if layer not in ("default", "omp"):
        return f"NUMBA_THREADING_LAYER={layer!r} (minnet's pool needs 'omp')"
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        from numba.np.ufunc import omppool  # noqa: F401  (loads libgomp)
    except ImportError as e:
        return f"Numba's OpenMP threading layer cannot load ({e})"
    numba.config.THREADING_LAYER = "omp"
    return ""


def available() -> bool:
    """Whether the pool path can run in this process (checked once; see the module docstring)."""
    if _status.checked:
        return _status.ok
    with _status.lock:
        if not _status.checked:
            why = ""
            if os.environ.get("MINNET_POOL", "").strip() == "0":
                why = "MINNET_POOL=0"
            if not why:
                path, why = _find_blas()
                _status.blas_path = path
            if not why:
                why = _check_omp()
            _status.ok = not why
            _status.why = why
            _status.checked = True
    return _status.ok


def reason() -> str:
    """Why the pool path is off (``""`` when :func:`available`)."""
    available()
    return _status.why


def _force(ok: bool, why: str = "forced off") -> None:
    """Tests: pretend the pool is (un)available."""
    available()
    _status.ok = ok and not _status.why
    if not ok:
        _status.why = why


def threading_layer() -> str:
    """Numba's threading layer in use (``"omp"`` on the pool path), or why there is none yet."""
    from numba.np.ufunc import parallel

    if parallel._is_initialized:
        return str(numba.threading_layer())
    return "not started" if available() else f"none (pool off: {reason()})"


# -- Linear -----------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def gemm(single, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):  # pragma: no cover - compiled
    """``C = op(A) @ op(B) + beta * C`` (row-major; pointers as integers; one thread)."""
    if single:
        _sgemm(_ROW_MAJOR, ta, tb, m, n, k, np.float32(1.0), a, lda, b, ldb, np.float32(beta),
               c, ldc)  # fmt: skip
    else:
        _dgemm(_ROW_MAJOR, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _forward(w, bias, b, b_trans, out_t, threads):  # pragma: no cover - compiled
    rows, d = w.shape
    n = out_t.shape[1]
    size = w.itemsize
    single = size == 4
    ldb = d if b_trans else n
    tb = TRANS if b_trans else NO_TRANS
    has_bias = bias.shape[0] > 0
    for t in prange(threads):
        r0 = rows * t // threads
        r1 = rows * (t + 1) // threads
        if r1 > r0:
            gemm(single, NO_TRANS, tb, r1 - r0, n, d, w.ctypes.data + r0 * d * size, d,
                  b.ctypes.data, ldb, 0.0, out_t.ctypes.data + r0 * n * size, n)  # fmt: skip
            if has_bias:
                for i in range(r0, r1):
                    v = bias[i]
                    for j in range(n):
                        out_t[i, j] += v


def linear_forward(
    w: np.ndarray, bias: np.ndarray | None, x: np.ndarray, out_t: np.ndarray, threads: int
) -> bool:
    """``out_t[r0:r1] = W[r0:r1] @ x.T (+ bias[r0:r1])`` on ``threads`` threads, each over its
    :func:`owned_rows` of the output; ``False`` (nothing done) for a layout it does not take."""
    b, b_trans = operand(x)
    if b is None or not (w.flags.c_contiguous and out_t.flags.c_contiguous):
        return False
    _forward(w, EMPTY[w.dtype.char] if bias is None else bias, b, b_trans, out_t, threads)
    return True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def add_column_sums(gb, g, g_trans, r0, r1):  # pragma: no cover - compiled
    """``gb[i] += G[:, i].sum()`` for ``i`` in ``r0:r1`` (the batch rows added in order, as
    NumPy's ``sum(axis=0)``); ``g`` is ``G`` (``g_trans``) or ``G.T``, C-contiguous."""
    n = g.shape[0] if g_trans else g.shape[1]
    for i in range(r0, r1):
        s = gb[i] - gb[i]  # zero of gb's dtype
        if g_trans:
            for j in range(n):
                s += g[j, i]
        else:
            for j in range(n):
                s += g[i, j]
        gb[i] += s


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _backward(g, g_trans, b, b_trans, gw, gb, w, dx, threads):  # pragma: no cover - compiled
    # g: G (N, out) when g_trans, else G.T (out, N); b: x (N, d) when b_trans, else x.T
    # (the flags of ``operand``: True when the array itself is C-contiguous)
    rows = gw.shape[0] if gw.shape[0] > 0 else gb.shape[0]
    n = g.shape[0] if g_trans else g.shape[1]
    out = g.shape[1] if g_trans else g.shape[0]
    d = b.shape[1] if b_trans else b.shape[0]
    size = g.itemsize
    single = size == 4
    ta = TRANS if g_trans else NO_TRANS
    lda = out if g_trans else n
    tb = NO_TRANS if b_trans else TRANS
    ldb = d if b_trans else n
    do_w = gw.shape[0] > 0
    do_b = gb.shape[0] > 0
    do_x = dx.shape[0] > 0
    for t in prange(threads):
        r0 = rows * t // threads
        r1 = rows * (t + 1) // threads
        if do_w and r1 > r0:
            a = g.ctypes.data + (r0 * size if g_trans else r0 * n * size)
            gemm(single, ta, tb, r1 - r0, d, n, a, lda, b.ctypes.data, ldb, 1.0,
                  gw.ctypes.data + r0 * d * size, d)  # fmt: skip
        if do_b:
            add_column_sums(gb, g, g_trans, r0, r1)
        if do_x:
            n0 = n * t // threads
            n1 = n * (t + 1) // threads
            if n1 > n0:
                # dx[n0:n1] = G[n0:n1] @ W
                ta2 = NO_TRANS if g_trans else TRANS
                a = g.ctypes.data + (n0 * out * size if g_trans else n0 * size)
                gemm(single, ta2, NO_TRANS, n1 - n0, d, out, a, lda, w.ctypes.data, d, 0.0,
                      dx.ctypes.data + n0 * d * size, d)  # fmt: skip


def linear_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight_grad: np.ndarray | None,
    bias_grad: np.ndarray | None,
    w: np.ndarray,
    dx: np.ndarray | None,
    threads: int,
) -> bool:
    """On ``threads`` threads, thread ``t`` over its :func:`owned_rows` ``[r0, r1)`` of the
    weight: ``weight_grad[r0:r1] += G[:, r0:r1].T @ x`` (straight into ``.grad``: BLAS's
    ``beta=1``), ``bias_grad[r0:r1] += G[:, r0:r1].sum(0)``, and, if ``dx`` is given, its share
    of the batch rows of ``dx = G @ W``. ``None`` skips a part. ``False`` (nothing done) for a
    layout it does not take."""
    g, g_trans = operand(grad_out)
    b, b_trans = operand(x)
    if g is None or b is None:
        return False
    empty2 = EMPTY2[w.dtype.char]
    empty1 = EMPTY[w.dtype.char]
    for a in (weight_grad, bias_grad, dx):
        if a is not None and not a.flags.c_contiguous:
            return False
    _backward(
        g, g_trans, b, b_trans,
        empty2 if weight_grad is None else weight_grad,
        empty1 if bias_grad is None else bias_grad,
        w, empty2 if dx is None else dx, threads,
    )  # fmt: skip
    return True


def operand(a: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """A 2-D ``(R, C)`` array as a C-contiguous operand: ``(a, True)`` if ``a`` is C-contiguous
    (read as transposed relative to ``a.T``), ``(a.T, False)`` if ``a.T`` is, else ``None``."""
    if a.flags.c_contiguous:
        return a, True
    if a.T.flags.c_contiguous:
        return a.T, False
    return None, False


#: Empty float32 / float64 stand-ins (by dtype char) for an absent bias or output argument.
EMPTY = {c: np.empty(0, c) for c in "fd"}
EMPTY2 = {c: np.empty((0, 0), c) for c in "fd"}


# -- the optimizer ----------------------------------------------------------------------------


def _slices(arrays, lo, hi):  # type: ignore[no-untyped-def]  # pragma: no cover - typed only
    """``(arrays[0][lo:hi], arrays[1][lo:hi], ...)``."""


@overload(_slices)
def _slices_impl(arrays, lo, hi):  # type: ignore[no-untyped-def]
    items = "".join(f"arrays[{k}][lo:hi], " for k in range(len(arrays.types)))
    return generated(f"def impl(arrays, lo, hi):\n    return ({items})\n", __file__)


def _driver_source(kernel: Any) -> Callable[..., Any]:
    # Thread t runs ``kernel`` over its segment of every parameter, for any number of state
    # arrays (``state``, a tuple). The call with the state's slices is a function of its own:
    # Numba's parallel loops do not take tuple unpacking in their body.
    @numba.njit(error_model="numpy", nogil=True)
    def segment(p, g, state, scratch, s, lo, hi):  # pragma: no cover - compiled
        return kernel(p[lo:hi], g[lo:hi], *_slices(state, lo, hi), scratch[lo:hi], s)

    def driver(p, g, state, scratch, s, segs):  # pragma: no cover - compiled
        a = 0
        b = 0
        c = 0.0
        for t in prange(segs.shape[0]):
            for j in range(segs.shape[1]):
                lo = segs[t, j, 0]
                hi = segs[t, j, 1]
                if hi > lo:
                    r = segment(p, g, state, scratch, s, lo, hi)
                    a += r[0]
                    b += r[1]
                    c += r[2]
        return a, b, c

    return driver


@functools.cache
def optimizer_driver(kernel: Any) -> Callable[..., Any] | None:
    """The parallel driver of one optimizer kernel, built on first use and cached on disk:
    ``driver(param, grad, state, scratch, scalars, segs) -> (n_eps_dominated, n_nonfinite,
    sum_sq_update)``, the kernel's three results summed over the segments, for any number of
    state arrays. ``segs`` is :func:`thread_segments`'s table; thread ``t`` runs the kernel
    over ``segs[t, j]`` for each parameter ``j``. ``None`` for a kernel it cannot drive (not a
    Numba function, or closure constants it cannot key)."""
    if not isinstance(kernel, numba.core.registry.CPUDispatcher):
        return None
    try:
        describe(kernel)
    except Undescribable:
        return None
    driver = numba.njit(parallel=True, error_model="numpy", nogil=True)(_driver_source(kernel))
    cache_on_source(driver)
    return driver


_refused: set[Any] = set()
_used: set[Any] = set()  # the kernels whose drivers ran (tests read their cache stats)


def optimizer_step(
    kernel: Any, args: Sequence[np.ndarray], scratch: np.ndarray, scalars: Any, segs: np.ndarray
) -> Any:
    """Run ``kernel`` over ``args = (param, grad, *state)`` on the pool, thread ``t`` over the
    segments ``segs[t]`` (see :func:`optimizer_driver`); the summed results, or ``None`` (nothing
    done) when the kernel cannot be driven, so the caller runs it serially."""
    if kernel in _refused:
        return None
    driver = optimizer_driver(kernel)
    if driver is None:
        return None
    try:
        out = driver(args[0], args[1], tuple(args[2:]), scratch, scalars, segs)
    except numba.core.errors.NumbaError:  # typing failed: nothing ran
        _refused.add(kernel)
        return None
    _used.add(kernel)
    return out

"""``Linear``: the affine layer."""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from minnet import _pool
from minnet import threads as _threads
from minnet.nn._util import FLOAT32, _as_float_array, _float_dtype, _is_low
from minnet.nn.activation import ReLU, _relu_into
from minnet.nn.grad_mode import is_grad_enabled
from minnet.nn.module import Module
from minnet.nn.parameter import Parameter, _accumulate_grad, _grad_to_add_into
from minnet.random import resolve_rng


@numba.njit(cache=True, nogil=True)
def _add_bias_rows(out_t: np.ndarray, bias: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out_t[i, :] += bias[i]`` in place. NumPy's broadcast add stages the operands through a
    fresh 8192-element buffer on every call; this loop allocates nothing and is faster."""
    for i in range(out_t.shape[0]):
        b = bias[i]
        for j in range(out_t.shape[1]):
            out_t[i, j] += b


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _small_forward(w, bias, b, b_trans, out_t):  # pragma: no cover - compiled
    """``out_t = W @ x.T + bias`` in one call: one single-threaded BLAS product (the one NumPy's
    ``matmul`` makes) and the bias loop. ``b`` is ``x`` (``b_trans``) or ``x.T``, C-contiguous;
    an empty ``bias`` adds nothing."""
    rows, d = w.shape
    n = out_t.shape[1]
    tb = _pool.TRANS if b_trans else _pool.NO_TRANS
    ldb = d if b_trans else n
    _pool.gemm(w.itemsize == 4, _pool.NO_TRANS, tb, rows, n, d, w.ctypes.data, d,
                b.ctypes.data, ldb, 0.0, out_t.ctypes.data, n)  # fmt: skip
    if bias.shape[0] > 0:
        for i in range(rows):
            v = bias[i]
            for j in range(n):
                out_t[i, j] += v


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _small_backward(g, g_trans, b, b_trans, gw, gb, w, dx):  # pragma: no cover - compiled
    """A small layer's backward in one call: ``gw += G.T @ x`` (BLAS's ``beta = 1``, straight
    into ``.grad``), ``gb += G.sum(0)`` (rows added in order, as NumPy's ``sum(axis=0)``) and
    ``dx = G @ W``; an empty ``gw``/``gb``/``dx`` skips that part. ``g`` is ``G`` (``g_trans``)
    or ``G.T``, ``b`` is ``x`` (``b_trans``) or ``x.T``; all C-contiguous."""
    n = g.shape[0] if g_trans else g.shape[1]
    out = g.shape[1] if g_trans else g.shape[0]
    d = b.shape[1] if b_trans else b.shape[0]
    single = g.itemsize == 4
    lda = out if g_trans else n
    if gw.shape[0] > 0:
        ta = _pool.TRANS if g_trans else _pool.NO_TRANS
        tb = _pool.NO_TRANS if b_trans else _pool.TRANS
        ldb = d if b_trans else n
        _pool.gemm(single, ta, tb, out, d, n, g.ctypes.data, lda, b.ctypes.data, ldb, 1.0,
                    gw.ctypes.data, d)  # fmt: skip
    if gb.shape[0] > 0:
        _pool.add_column_sums(gb, g, g_trans, 0, out)
    if dx.shape[0] > 0:
        ta2 = _pool.NO_TRANS if g_trans else _pool.TRANS
        _pool.gemm(single, ta2, _pool.NO_TRANS, n, d, out, g.ctypes.data, lda, w.ctypes.data,
                    d, 0.0, dx.ctypes.data, d)  # fmt: skip


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _relu_small_forward(x, h, w, bias, out_t, y):  # pragma: no cover - compiled
    """A ``ReLU`` followed by a small ``Linear`` in one call: ``h = max(x, 0)`` (``h``
    C-contiguous, ``x`` any layout), then ``out_t = W @ h.T + bias`` (:func:`_small_forward`),
    and ``y = out_t.T`` as a C-contiguous copy unless ``y`` is empty."""
    _relu_into(x, h)
    _small_forward(w, bias, h, True, out_t)
    if y.shape[0] > 0:
        for j in range(y.shape[0]):
            for i in range(y.shape[1]):
                y[j, i] = out_t[i, j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _small_backward_relu(g, g_trans, h, gw, gb, w, dx):  # pragma: no cover - compiled
    """A small ``Linear``'s backward (:func:`_small_backward`, input ``h``) and the backward
    of the ``ReLU`` before it in one call: ``dx = where(h > 0, G @ W, 0)``."""
    _small_backward(g, g_trans, h, True, gw, gb, w, dx)
    zero = h.dtype.type(0)
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            if not h[i, j] > zero:
                dx[i, j] = zero


class Linear(Module):
    """Affine layer ``y = x @ W.T + b``.

    Args:
        in_features: size of each input row.
        out_features: size of each output row.
        bias: learn an additive bias. Default ``True``.
        dtype: ``np.float32`` (default), ``np.float64``, ``np.float16`` or bfloat16
            (``ml_dtypes.bfloat16`` or the string ``"bfloat16"``).
        rng: ``np.random.Generator`` or int seed for the initial values; ``None`` draws fresh
            entropy.

    Weight ``(out_features, in_features)`` and bias ``(out_features,)`` both start
    ``U(-1/sqrt(in_features), 1/sqrt(in_features))``, PyTorch's distribution.

    Backward, for ``G = dLoss/dy`` of shape ``(N, out)``: ``dW += G.T @ x``, ``db += G.sum(0)``,
    ``dx = G @ W``.

    float32/float64 layers with ``N * in_features * out_features >= 2**20`` run on minnet's
    thread pool when it has ``T > 1`` threads (:mod:`minnet._pool`): thread ``t`` computes its
    own block of output rows ``[out * t // T, out * (t + 1) // T)`` (one single-threaded BLAS
    call), then adds the same rows of ``dW`` and ``db`` straight into ``.grad``, and the
    optimizer updates those rows on the same thread. Same formulas; the summation order of
    the products may differ in the last bits from the serial path.

    16-bit layers (float16, bfloat16): the input (cast to the layer's dtype if it is another
    float), the weight, the bias and ``G`` are widened to float32; every product (``x @ W.T``,
    ``G.T @ x``, ``G @ W``) is a float32 NumPy matmul, so it accumulates in float32 as PyTorch's
    CPU half/bfloat16 matmul does, and the bias is added in float32 before the single rounding
    of the output to the layer's dtype (round to nearest even). ``dW`` and ``db`` (summed in
    float32) are rounded to the parameter dtype, then added into ``.grad`` in that dtype, as
    PyTorch accumulates gradients of half parameters. The results are bit for bit the float32
    layer's on the widened values, rounded. These layers reuse no buffers (float32 and float64
    layers inside a ``Sequential`` do).
    """

    _state_attrs = ("_x",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: Any = np.float32,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Linear: {arg} must be a positive int, got {value!r}")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Linear: bias must be a bool, got {bias!r}")
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.dtype = _float_dtype(dtype, "Linear")
        gen = resolve_rng(rng, "Linear")
        bound = 1.0 / math.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(gen.uniform(-bound, bound, shape).astype(self.dtype), "weight")
        self.bias = (
            Parameter(gen.uniform(-bound, bound, self.out_features).astype(self.dtype), "bias")
            if bias
            else None
        )
        self._x: np.ndarray | None = None
        # Buffers reused from step to step (see "Performance" in the README): the output kept as
        # (out_features, N), the weight-gradient product, and the input gradient.
        self._out_t: np.ndarray | None = None
        self._dw: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._scratch_t: np.ndarray | None = None  # (out, N), never handed out (_forward_pair)
        self._grads_ok: tuple[Any, ...] = ()  # the .grad arrays _grad_targets last accepted

    @classmethod
    def _from_parameters(cls, weight: Parameter, bias: Parameter | None) -> Linear:
        """A layer over existing parameters (``nn.functional.linear``): no initial draw."""
        m = cls.__new__(cls)
        Module.__init__(m)
        if weight.data.ndim != 2:
            raise ValueError(f"linear: weight must be 2-D (out, in), got shape {weight.shape}")
        out, inp = weight.data.shape
        if bias is not None and bias.data.shape != (out,):
            raise ValueError(f"linear: bias must have shape ({out},), got {bias.shape}")
        m.in_features, m.out_features, m.dtype = inp, out, weight.data.dtype
        object.__setattr__(m, "weight", weight)  # not registered: the caller owns them
        object.__setattr__(m, "bias", bias)
        m._reset()
        return m

    def _reset(self) -> None:
        self._x = self._out_t = self._dw = self._dx = self._scratch_t = None
        self._grads_ok = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x @ W.T + b`` for ``x`` of shape ``(*, in_features)``; a new array of shape
        ``(*, out_features)``, as PyTorch's.

        An input of other than two dimensions (a sequence batch ``(N, T, in_features)``, a
        single row ``(in_features,)``) is reshaped to ``(-1, in_features)`` (a view when NumPy
        can make one), runs the 2-D products, and the result and the input gradient are
        reshaped back.
        """
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        x = _as_float_array(x, self._label(), "input", self.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features or x.shape[0] == 0:
            if x.ndim != 2 and x.ndim >= 1 and x.shape[-1] == self.in_features and x.size > 0:
                return self._forward_nd(x)
            raise ValueError(
                f"{self._label()}: expected input of shape (N, {self.in_features}) (or (*, "
                f"{self.in_features})) with at least one row (in_features={self.in_features}), "
                f"got shape {x.shape}"
            )
        keep = self._keep()
        if keep:
            self._x = x
        else:
            internal = False  # under no_grad: touch no buffer a pending backward reads
        if _is_low(self.dtype):
            return self._forward_low(x)
        # Computed as (W @ x.T).T: one BLAS call on transposed views (no copies); OpenBLAS runs
        # this orientation faster than x @ W.T when in_features is the long dimension.
        n = x.shape[0]
        if internal:
            out_t = self._out_t
            if out_t is None or out_t.shape[1] != n:
                out_t = self._out_t = np.empty((self.out_features, n), self.dtype)
        else:
            out_t = np.empty((self.out_features, n), self.dtype)
        threads = self._pool_threads(n)
        w = self.weight.data
        bias = None if self.bias is None else self.bias.data
        if threads > 1 and _pool.linear_forward(w, bias, x, out_t, threads):
            pass
        elif self._small(n) and (b := _pool.operand(x))[0] is not None and w.flags.c_contiguous:
            _small_forward(w, _pool.EMPTY[w.dtype.char] if bias is None else bias, *b, out_t)
        else:
            np.matmul(w, x.T, out=out_t)
            if bias is not None:
                _add_bias_rows(out_t, bias)
        # Inside a Sequential the (N, out) view goes to the next module; a caller gets its own
        # C-contiguous array, so a kept y_pred is never overwritten by the next forward.
        return out_t.T if internal else np.ascontiguousarray(out_t.T)

    def _forward_nd(self, x: np.ndarray) -> np.ndarray:
        """The forward of an input ``(*, in_features)`` of other than 2 dimensions: the 2-D
        forward on ``(-1, in_features)``, reshaped; the N-D input is kept, so that backward
        knows the shape to return."""
        lead = x.shape[:-1]
        out = self._forward(x.reshape(-1, self.in_features), False)
        if self._x is not None and is_grad_enabled():
            self._x = x
        return out.reshape(lead + (self.out_features,))

    def _backward_nd(self, x: np.ndarray, grad_out: Any, input_grad: bool) -> Any:
        """The backward of :meth:`_forward_nd`'s call: the 2-D backward on the reshaped
        arrays, the input gradient reshaped to ``x``'s shape."""
        lead = x.shape[:-1]
        g = _as_float_array(grad_out, self._label(), "grad_out", self.dtype)
        expected = lead + (self.out_features,)
        if g.shape != expected:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {expected}, got {g.shape}"
            )
        self._x = x.reshape(-1, self.in_features)
        dx = self._backward(g.reshape(-1, self.out_features), False, input_grad)
        return None if dx is None else dx.reshape(x.shape)

    def _forward_low(self, x: np.ndarray) -> np.ndarray:
        """The 16-bit forward: float32 products and bias, one rounding to ``self.dtype``."""
        out_t = np.empty((self.out_features, x.shape[0]), FLOAT32)
        np.matmul(self.weight.data.astype(FLOAT32), x.astype(FLOAT32).T, out=out_t)
        if self.bias is not None:
            _add_bias_rows(out_t, self.bias.data.astype(FLOAT32))
        return out_t.T.astype(self.dtype, order="C")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Add ``G.T @ x`` to ``weight.grad``, ``G.sum(0)`` to ``bias.grad``; return ``G @ W``."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        x = self._x
        if x is None:
            raise self._nothing_saved()
        if x.ndim != 2:
            return self._backward_nd(x, grad_out, input_grad)
        grad_out = _as_float_array(grad_out, self._label(), "grad_out", self.dtype)
        expected = (x.shape[0], self.out_features)
        if grad_out.shape != expected:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {expected}, "
                f"got {grad_out.shape}"
            )
        self._x = None
        self._freed = True
        if _is_low(self.dtype):
            return self._backward_low(x, grad_out, input_grad)
        threads = self._pool_threads(x.shape[0])
        if threads > 1 or self._small(x.shape[0]):
            done = self._backward_pool(x, grad_out, internal, input_grad, threads)
            if done is not False:
                return done
        weight = self.weight
        if weight.requires_grad:
            dw = self._dw
            if dw is None or dw.shape != weight.data.shape:
                dw = self._dw = np.empty(weight.data.shape, self.dtype)
            np.matmul(grad_out.T, x, out=dw)
            _accumulate_grad(weight, dw, self)
        if self.bias is not None and self.bias.requires_grad:
            _accumulate_grad(self.bias, grad_out.sum(axis=0), self)
        if not input_grad:
            return None
        if not internal:
            return grad_out @ weight.data
        dx = self._dx
        if dx is None or dx.shape[0] != grad_out.shape[0]:
            dx = self._dx = np.empty((grad_out.shape[0], self.in_features), self.dtype)
        np.matmul(grad_out, weight.data, out=dx)
        return dx

    def _pool_threads(self, n: int) -> int:
        """Threads for this layer's pool path (:mod:`minnet._pool`) with a batch of ``n``; 1: the
        serial path (16-bit layers, one thread, or a layer too small to be worth it)."""
        if _is_low(self.dtype) or n * self.in_features * self.out_features < _pool.LINEAR_MIN_WORK:
            return 1
        threads = _threads.pool_threads()
        return threads if self.out_features >= threads else 1

    def _small(self, n: int) -> bool:
        """Whether a float32/float64 layer below the pool's size (batch ``n``) runs each pass as
        one compiled call (:func:`_small_forward`, :func:`_small_backward`: the same
        single-threaded BLAS products NumPy makes, without NumPy's per-call costs). Needs the
        BLAS symbols that :func:`minnet._pool.available` binds; else NumPy's calls."""
        return (
            n * self.in_features * self.out_features < _pool.LINEAR_MIN_WORK
            and not _is_low(self.dtype)
            and _pool.available()
        )

    def _grad_targets(self) -> list[np.ndarray | None] | None:
        """``[weight.grad, bias.grad]`` for a backward that adds straight into them (``None``
        for a frozen or missing parameter; a ``None`` ``.grad`` becomes zeros first, PyTorch's
        cleared state); ``None`` when a ``.grad`` is not a writeable C-contiguous array of
        its parameter's shape and dtype (the NumPy path then raises or handles it)."""
        weight, bias = self.weight, self.bias
        ok = self._grads_ok
        if ok and ok[0] is weight.grad and ok[1] is (None if bias is None else bias.grad):
            # the arrays accepted last time (a flat buffer's views, usually): only the frozen
            # set may have changed
            return [
                ok[0] if weight.requires_grad else None,
                ok[1] if bias is not None and bias.requires_grad else None,
            ]
        grads: list[np.ndarray | None] = []
        for p in (weight, bias):
            if p is None or not p.requires_grad:
                grads.append(None)
                continue
            g = _grad_to_add_into(p)  # a None (cleared) .grad starts from zeros
            if (
                not isinstance(g, np.ndarray)
                or g.shape != p.data.shape
                or g.dtype != p.data.dtype
                or not g.flags.c_contiguous
                or not g.flags.writeable
            ):
                return None
            grads.append(g)
        if grads[0] is not None and (bias is None or grads[1] is not None):
            self._grads_ok = (grads[0], grads[1])
        return grads

    # A ReLU right before this layer in a Sequential runs in this layer's compiled call (both
    # passes): Sequential asks _pairs_with, then calls _forward_pair / _backward_pair. Each
    # falls back to the two modules' own calls whenever the one-call path does not apply, so
    # results, errors and kept state are those of the two calls in turn.

    def _pairs_with(self, prev: Module) -> bool:
        """Whether ``prev`` (the module before this one) runs inside this layer's calls."""
        return type(prev) is ReLU

    def _forward_pair(
        self, relu: Module, x: np.ndarray, relu_internal: bool, internal: bool
    ) -> np.ndarray:
        """``self._forward(relu._forward(x, relu_internal), internal)``, in one compiled call
        for a small float32/float64 layer when ``x`` is a 2-D ``(N, in_features)`` array of the
        layer's dtype and the ReLU keeps its output in its buffer."""
        n = x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 2 else 0
        w = self.weight.data
        if not (
            relu_internal  # implies grad mode: both keep what backward needs
            and n > 0
            and x.dtype == self.dtype
            and x.shape[1] == self.in_features
            and self._small(n)
            and w.flags.c_contiguous
        ):
            return self._forward(relu._forward(x, relu_internal), internal)
        relu._freed = self._freed = False  # what _keep() does in grad mode
        h = relu._buf
        if h is None or h.shape != x.shape or h.dtype != x.dtype:
            h = relu._buf = np.empty(x.shape, x.dtype)  # C order, as ReLU's own buffer
        # The product lands in (out, N) as on the other paths; a last layer also gets a fresh
        # C-contiguous copy in the same call (its own (out, N) scratch is never handed out).
        out_t = self._out_t if internal else self._scratch_t
        if out_t is None or out_t.shape[1] != n:
            out_t = np.empty((self.out_features, n), self.dtype)
            if internal:
                self._out_t = out_t
            else:
                self._scratch_t = out_t
        y = _pool.EMPTY2[w.dtype.char] if internal else np.empty((n, self.out_features), w.dtype)
        bias = _pool.EMPTY[w.dtype.char] if self.bias is None else self.bias.data
        _relu_small_forward(x, h, w, bias, out_t, y)
        relu._out = h
        self._x = h
        return out_t.T if internal else y

    def _backward_pair(self, relu: Module, grad_out: np.ndarray) -> Any:
        """``relu._backward(self._backward(grad_out, True, True), True, True)``, in one
        compiled call for a small float32/float64 layer whose input is the ReLU's kept output
        (the ReLU's input gradient lands in its own buffer)."""
        x = self._x
        h = relu._out
        if not (
            x is not None
            and x is h
            and isinstance(grad_out, np.ndarray)
            and grad_out.dtype == self.dtype
            and grad_out.shape == (x.shape[0], self.out_features)
            and self._small(x.shape[0])
            and h.flags.c_contiguous
            and self.weight.data.flags.c_contiguous
        ):
            return relu._backward(self._backward(grad_out, True, True), True, True)
        g = _pool.operand(grad_out)
        grads = self._grad_targets() if g[0] is not None else None
        if grads is None:
            return relu._backward(self._backward(grad_out, True, True), True, True)
        dx = relu._grad
        if dx is None or dx.shape != h.shape or dx.dtype != h.dtype:
            dx = relu._grad = np.empty(h.shape, h.dtype)  # C order, as ReLU's own buffer
        w = self.weight.data
        empty2 = _pool.EMPTY2[w.dtype.char]
        _small_backward_relu(
            *g, h,
            empty2 if grads[0] is None else grads[0],
            _pool.EMPTY[w.dtype.char] if grads[1] is None else grads[1],
            w, dx,
        )  # fmt: skip
        self._x = relu._out = None
        self._freed = relu._freed = True
        return dx

    def _backward_pool(
        self, x: np.ndarray, grad_out: np.ndarray, internal: bool, input_grad: bool, threads: int
    ) -> Any:
        """The backward on minnet's pool (``threads > 1``: each thread adds its own rows of
        ``dW`` and ``db`` straight into ``.grad``, and computes its share of ``dx``'s rows if
        asked), or in one compiled call for a small layer (``threads == 1``, the same sums);
        ``False`` when a ``.grad`` is not a C-contiguous array of the parameter's shape and
        dtype (the serial path then raises or handles it as before)."""
        weight = self.weight
        grads = self._grad_targets()
        if grads is None:
            return False
        dx = None
        if input_grad:
            if internal:
                dx = self._dx
                if dx is None or dx.shape[0] != grad_out.shape[0]:
                    dx = self._dx = np.empty((grad_out.shape[0], self.in_features), self.dtype)
            else:
                dx = np.empty((grad_out.shape[0], self.in_features), self.dtype)
        if threads > 1:
            if not _pool.linear_backward(grad_out, x, grads[0], grads[1], weight.data, dx, threads):
                return False
            return dx
        g, b, w = _pool.operand(grad_out), _pool.operand(x), weight.data
        if g[0] is None or b[0] is None or not w.flags.c_contiguous:
            return False
        empty2 = _pool.EMPTY2[w.dtype.char]
        _small_backward(
            *g, *b,
            empty2 if grads[0] is None else grads[0],
            _pool.EMPTY[w.dtype.char] if grads[1] is None else grads[1],
            w, empty2 if dx is None else dx,
        )  # fmt: skip
        return dx

    def _backward_low(self, x: np.ndarray, grad_out: np.ndarray, input_grad: bool) -> Any:
        """The 16-bit backward: float32 products and bias sum, each rounded to ``self.dtype``
        once, then added into ``.grad`` in the parameter's dtype."""
        g = grad_out.astype(FLOAT32)
        weight = self.weight
        if weight.requires_grad:
            dw = np.empty(weight.data.shape, FLOAT32)
            np.matmul(g.T, x.astype(FLOAT32), out=dw)
            _accumulate_grad(weight, dw.astype(self.dtype), self)
        if self.bias is not None and self.bias.requires_grad:
            _accumulate_grad(self.bias, g.sum(axis=0).astype(self.dtype), self)
        if not input_grad:
            return None
        return (g @ weight.data.astype(FLOAT32)).astype(self.dtype)

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, dtype={self.dtype})"
        )

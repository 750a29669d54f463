r"""SparseAdam (PyTorch's ``torch.optim.SparseAdam``): the class, its element rule, a row kernel
that visits only the rows that had a gradient, and a plain-NumPy reference, side by side.

SparseAdam is Adam made *lazy*: a step moves the moments and the parameter of the rows that had
a gradient and leaves every other row as it is: no decay of its ``exp_avg`` and ``exp_avg_sq``,
no update, no division. PyTorch's version takes a sparse gradient (``nn.Embedding(sparse=True)``)
and refuses a dense one; minnet has no sparse tensors, so it takes the dense ``.grad`` of the
flat buffers and finds the rows in one of two ways (the class docstring says which wins):

* the rows an ``Embedding(sparse=True)`` recorded on its weight Parameter, ``weight.grad_rows``
  (a sorted, unique int64 array: the rows that appeared in a backward since the last
  ``zero_grad``), exactly PyTorch's sparse gradient's index set, a row whose gradient sums to 0
  included;
* otherwise, every row (first dimension; for a 1-D parameter, every element) that holds a
  non-zero value of the gradient: an all-zero row counts as absent.

The update of a row is in :class:`SparseAdam`'s docstring, in the order of operations of
``torch.optim._functional.sparse_adam`` (PyTorch 2.13), so float64 agrees with PyTorch to
round-off. The element rule :func:`update` is that formula for one coordinate; the row kernel
(:func:`row_kernel`) runs the skeleton's loop of :mod:`minnet.optim._kernel` over each touched
row only, so a step costs the touched rows, not the table. The base class's dense kernel of the
same rule (every row touched) is what the family tests hold against the reference.

16-bit storage: ``rounding="fused"`` computes each touched coordinate in float32 and rounds once
on store. ``rounding="per_op"`` rounds each op of ``_functional.sparse_adam`` to the dtype of the
tensor it writes (PyTorch's half tensors: every op in the parameter's dtype, eps included, so
``eps=1e-8`` is 0 in float16); no PyTorch fixture covers it, it is a transcription of the source
checked against the rule run by NumPy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numba
import numpy as np

from minnet import threads as _threads
from minnet._jitcache import cache_on_source
from minnet._lowp import NATIVE, load, round_to
from minnet.nn import Parameter
from minnet.optim._flat import FlatBuffers, StorageFormats
from minnet.optim._kernel import Rule, _loop, element, format_codes
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_betas,
    check_real,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SparseAdam", "touched_rows"]


class SparseAdamScalars(NamedTuple):
    """Per-step constants of the SparseAdam update, already in the arrays' dtype."""

    one_minus_beta1: np.floating
    one_minus_beta2: np.floating
    eps: np.floating
    neg_step_size: np.floating  # -(lr * sqrt(1 - beta2**t) / (1 - beta1**t))
    sqrt_bc2: np.floating  # sqrt(1 - beta2**t), the multiplier's numerator


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One touched coordinate (:mod:`minnet.optim._kernel`'s rule contract), in the order of
    ``_functional.sparse_adam``; no options. ``"per_op"`` rounds every op to the state dtype
    (``rs``; PyTorch's moments are ``zeros_like(param)``) and the update and the new parameter
    to the parameter dtype (``rp``)."""
    m, v = state[0], state[1]
    up1 = round_to(round_to(g - m, rs) * s.one_minus_beta1, rs)  # grad.sub(old).mul_(1 - b1)
    m = round_to(m + up1, rs)  # exp_avg.add_(...); numer = up1.add_(old) is the same sum
    g2 = round_to(g * g, rs)  # grad_values.pow(2)
    up2 = round_to(round_to(g2 - v, rs) * s.one_minus_beta2, rs)
    v = round_to(v + up2, rs)  # exp_avg_sq.add_(...); up2.add_(old) is the same sum
    denom, dominated = denominator(v, s, rs)
    delta = round_to(round_to(m / denom, rs) * s.neg_step_size, rp)  # -step_size * numer/denom
    return p, round_to(p + delta, rp), (m, v), delta, delta, dominated, g


@element
def denominator(v, s, rs):  # pragma: no cover - compiled
    """``(sqrt(v) + eps, eps >= sqrt(v))``, eps before the bias correction
    (``sqrt_().add_(eps)``): the one place SparseAdam's eps is written."""
    root = round_to(np.sqrt(v), rs)
    return round_to(root + s.eps, rs), s.eps >= root


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``param -= lr * k * m_hat``: ``sqrt(bc2) / (sqrt(v) + eps)``, Adam's "hat"
    multiplier (an untouched row's is that of its stored ``v``, the step it would take)."""
    return s.sqrt_bc2 / denominator(state[1], s, NATIVE)[0]


#: SparseAdam's element rule; the second moment ``exp_avg_sq`` is state 1.
RULE = Rule(update, second_moment=1, multiplier=multiplier)


def sparse_adam_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: SparseAdamScalars, o: tuple,
    rows: np.ndarray | None = None,
) -> None:  # fmt: skip
    """The same update with whole-array NumPy, in place (the rule's arguments): every
    coordinate, or with ``rows`` (and 2-D-reshapeable arrays: ``param`` of shape ``(n, ...)``)
    only those rows of the first dimension, as PyTorch's sparse gradient with that index set."""
    exp_avg, exp_avg_sq = state
    if rows is not None:
        views = [a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
                 for a in (param, grad, exp_avg, exp_avg_sq)]  # fmt: skip
        p2, g2, m2, v2 = views
        p, g, m, v = p2[rows], g2[rows], m2[rows], v2[rows]
        sparse_adam_reference(p, g, (m, v), s, o)
        p2[rows], m2[rows], v2[rows] = p, m, v
        return
    with np.errstate(all="ignore"):
        old_m = exp_avg.copy()
        old_v = exp_avg_sq.copy()
        up1 = (grad - old_m) * s.one_minus_beta1
        exp_avg += up1
        up2 = (grad**2 - old_v) * s.one_minus_beta2
        exp_avg_sq += up2
        numer = up1 + old_m
        denom = np.sqrt(up2 + old_v) + s.eps
        param += s.neg_step_size * (numer / denom)


# -- the rows of a step ------------------------------------------------------------------------


@functools.cache
def _touched(fp: int) -> Callable[..., Any]:
    """The compiled scan of :func:`touched_rows` for storage format ``fp``."""

    def scan(grad, ncols, out):  # pragma: no cover - compiled
        n = 0
        for r in range(grad.shape[0] // ncols):
            base = r * ncols
            for c in range(ncols):
                if load(grad[base + c], fp) != 0:  # NaN counts as touched
                    out[n] = r
                    n += 1
                    break
        return n

    compiled = numba.njit(error_model="numpy", nogil=True)(scan)
    cache_on_source(compiled)
    return compiled


def touched_rows(grad: np.ndarray, ncols: int, fp: int = NATIVE) -> np.ndarray:
    """The rows (of ``ncols`` coordinates each) of the flat gradient ``grad`` that hold a
    non-zero value, sorted, int64: the dense-gradient path's stand-in for PyTorch's sparse
    index set. One compiled pass that stops reading a row at its first non-zero (``fp``: the
    storage format of a ``uint16`` view of 16-bit values)."""
    out = np.empty(grad.shape[0] // ncols, np.int64)
    return out[: _touched(int(fp))(grad, ncols, out)]


@functools.cache
def row_kernel(track: bool, write: bool, fp: int, fs: int, per_op: bool, negate: bool) -> Any:
    """The compiled pass ``kernel(param, grad, exp_avg, exp_avg_sq, scratch, s, rows, ncols)``
    over one parameter's flat slices: the skeleton's loop (:mod:`minnet.optim._kernel`, the same
    loads, rule, counts and stores as every optimizer's) over each row ``rows[k]``, the
    coordinates ``[rows[k] * ncols, (rows[k] + 1) * ncols)``; no other coordinate is read or
    written. Returns the skeleton's counts (3 for float32/float64 buffers, 5 for 16-bit)."""
    upd = RULE.update
    rp = fp if per_op else NATIVE
    rs = fs if per_op else NATIVE
    n_counts = 3 if fp == NATIVE and fs == NATIVE else 5
    o = ()

    def run(param, grad, m, v, scratch, s, rows, ncols):  # pragma: no cover - compiled
        c0 = 0
        c1 = 0
        c2 = 0.0
        c3 = 0
        c4 = 0
        for k in range(rows.shape[0]):
            lo = rows[k] * ncols
            hi = lo + ncols
            c = _loop(
                param[lo:hi], grad[lo:hi], (m[lo:hi], v[lo:hi]), scratch[lo:hi], s, 0, upd, o,
                track, write, fp, fs, rp, rs, 1, negate,
            )  # fmt: skip
            c0 += c[0]
            c1 += c[1]
            c2 += c[2]
            c3 += c[3]
            c4 += c[4]
        return (c0, c1, c2, c3, c4)[:n_counts]

    compiled = numba.njit(error_model="numpy", nogil=True)(run)
    cache_on_source(compiled)
    return compiled


class _FlatPass:
    """The base class's kernel contract, ``kernel(param, grad, exp_avg, exp_avg_sq, scratch,
    s) -> counts``, over flat buffers seen as one 1-D parameter (every element a row, so an
    element whose gradient is 0 is absent): the touched elements found by :func:`touched_rows`,
    then :func:`row_kernel`'s compiled pass over them. This is what :meth:`SparseAdam.step`
    does for a 1-D parameter, so the family's tests of kernels (against the reference, dry run,
    disk cache, machine code: ``compiled``, ``call_args``) hold for the lazy step."""

    def __init__(self, compiled: Any, fp: int) -> None:
        self.compiled = compiled
        self.fp = fp

    @property
    def stats(self) -> Any:
        return self.compiled.stats

    def call_args(
        self, param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
        scratch: np.ndarray, s: Any,
    ) -> tuple[Any, ...]:  # fmt: skip
        """The arguments of the compiled call: the touched elements as rows of 1."""
        return param, grad, exp_avg, exp_avg_sq, scratch, s, touched_rows(grad, 1, self.fp), 1

    def __call__(self, *args: Any) -> Any:
        return self.compiled(*self.call_args(*args))


def _lazy(ref: Callable[..., None]) -> Callable[..., None]:
    """``ref(param, grad, *state, s)`` applied to the elements whose gradient is not 0 only
    (flat buffers as one 1-D parameter, as :class:`_FlatPass`)."""

    def lazy(param: np.ndarray, grad: np.ndarray, *rest: Any) -> None:
        *state, s = rest
        touched = grad != 0
        touched |= np.isnan(grad.astype(np.float32))
        parts = [a[touched] for a in (param, *state)]
        ref(parts[0], grad[touched], *parts[1:], s)
        for a, b in zip((param, *state), parts):
            a[touched] = b

    return lazy


def _check_lr(lr: object) -> float:
    """PyTorch's SparseAdam check, ``Invalid learning rate: {lr}`` unless ``lr > 0``."""
    v = check_real("lr", lr)
    if not 0.0 < v:
        raise ValueError(f"Invalid learning rate: {lr}")
    return v


def _check_eps(eps: object) -> float:
    """PyTorch's SparseAdam check, ``Invalid epsilon value: {eps}`` unless ``eps > 0``."""
    v = check_real("eps", eps)
    if not 0.0 < v:
        raise ValueError(f"Invalid epsilon value: {eps}")
    return v


class SparseAdam(Optimizer):
    r"""SparseAdam with PyTorch's exact semantics (``torch.optim.SparseAdam``, PyTorch 2.13): a
    lazy Adam that updates only the rows that had a gradient, one compiled pass over them.

    With ``t`` the parameter's step count (``"step"``: every :meth:`step` in which the
    parameter's ``grad`` is not ``None`` counts, even one in which no row had a gradient, as
    PyTorch counts it), ``g`` a touched row's gradient (``-grad`` with ``maximize``), and
    ``m``/``exp_avg``, ``v``/``exp_avg_sq`` its moments (from 0), in the order of operations of
    ``torch.optim._functional.sparse_adam``:

    .. code-block:: text

        u1        = (g - m) * (1 - beta1)
        m         = m + u1
        u2        = (g**2 - v) * (1 - beta2)
        v         = v + u2
        step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)        (float64, once per step)
        param     = param + (-step_size) * (m / (sqrt(v) + eps))

    for every coordinate of a touched row; an untouched row keeps its ``param``, ``m`` and
    ``v`` bit for bit. **Where eps sits:** next to the *raw* ``sqrt(v)``, *before* the bias
    correction (which is folded into ``step_size``): the update is ``lr * m_hat / (sqrt(v_hat)
    + eps / sqrt(1 - beta2**t))``, Adam's ``eps_mode="hat"`` (Keras's placement), not
    ``torch.optim.Adam``'s ``outside``. Early steps therefore feel eps up to
    ``1/sqrt(1 - beta2)`` (~32x) more than Adam's.

    **Eps never meets a zero row.** The division runs only on touched rows, whose ``v`` has just
    taken ``(1 - beta2) * g**2``; a row that never had a gradient is never divided at all.
    Dense :class:`~minnet.optim.Adam` on the same embedding sees ``g = 0`` in every absent row:
    it decays that row's ``m`` and ``v`` each step and *moves the row by its momentum*
    (``m_hat / (sqrt(v_hat) + eps)`` with ``m != 0`` from earlier batches), and a row that never
    had a gradient steps ``0 / (0 + eps)``, zero only because eps is not; SparseAdam keeps an
    absent row where it is, moments included. (Within a touched row, a coordinate whose
    gradient and moments are all 0 steps ``0 / eps``; PyTorch requires ``eps > 0``, so that is
    0.)

    **Which rows are touched.** PyTorch's gradient is sparse; minnet's is the dense ``.grad``:

    * if the Parameter carries ``grad_rows`` (an ``Embedding(..., sparse=True)``'s weight: the
      layer records the rows of every backward on the **Parameter**, ``weight.grad_rows``, and
      ``Module.zero_grad()`` or this optimizer's :meth:`zero_grad` empties it), exactly those
      rows step, as PyTorch's sparse index set: a listed row whose gradient summed to 0 still
      steps (its moments decay), a row not listed does not, whatever ``.grad`` holds there;
    * otherwise a row steps when its ``.grad`` holds a non-zero value: an all-zero row (for a
      1-D parameter, a zero element; a 0-d parameter is one row) counts as absent.

    **State** (PyTorch's names and layout, one entry per parameter in :meth:`state_dict`):
    ``"step"`` (float, the count above), ``"exp_avg"`` and ``"exp_avg_sq"`` (arrays shaped like
    the parameter, 0 in every row that never had a gradient). A state dict saved by PyTorch's
    SparseAdam (``step`` an int there) loads, and one saved here loads into PyTorch's.

    Defaults are PyTorch's: ``lr=1e-3``, ``betas=(0.9, 0.999)``, ``eps=1e-8``; PyTorch requires
    ``lr > 0`` and ``eps > 0`` (strictly, unlike Adam) and so does minnet, with its messages.
    Keras 3 and optax have no SparseAdam (optax's ``masked`` or a lazy ``adam`` on JAX's dense
    gradients is another algorithm). Parameter groups, ``track_stats`` (``eps_dominated``: the
    share of *all* coordinates of the parameters that took the step whose ``sqrt(v) <= eps``;
    untouched rows count as not dominated and as a zero update in ``update_rms``; ``nonfinite``
    counts the touched rows' new values, as an untouched row is not read) and
    ``check_finite`` (a dry run over the touched rows) work as for every optimizer.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``> 0``. Default ``1e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
        eps: added to ``sqrt(v)`` before the bias correction, ``> 0``. Default ``1e-8``.
        maximize: ascend the gradient. Default ``False``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default) or ``"per_op"`` (the module docstring).

    PyTorch's SparseAdam has none of the ``foreach``/``fused``/``capturable``/``differentiable``
    switches, so neither does this class.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    _load_optional = ("maximize",)

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize)
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(sparse_adam_reference)
    checks = {"lr": _check_lr, "eps": _check_eps, "betas": check_betas}

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _scalars(
        self, group: Mapping[str, Any], dtype: np.dtype, step: int
    ) -> SparseAdamScalars:
        beta1, beta2 = group["betas"]
        t = float(step)
        step_size = group["lr"] * (1.0 - beta2**t) ** 0.5 / (1.0 - beta1**t)
        return cast_scalars(SparseAdamScalars, dtype, 1.0 - beta1, 1.0 - beta2, group["eps"],
                            -step_size, (1.0 - beta2**t) ** 0.5)  # fmt: skip

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v)"``: eps is added to the root of the raw (not bias-corrected) second
        moment."""
        return "sqrt(v)"

    # -- the lazy step ---------------------------------------------------------------------

    def _kernel(self, group: Mapping[str, Any], track: bool, write: bool,
                formats: StorageFormats | None = None) -> Callable[..., Any]:  # fmt: skip
        """The lazy pass over flat buffers seen as one 1-D parameter (:class:`_FlatPass`):
        an element with a zero gradient keeps its value and state, as :meth:`step` keeps it."""
        self._refuse_per_op(group, formats)
        fp, fs, per_op = format_codes(formats)
        return _FlatPass(row_kernel(track, write, fp, fs, per_op, bool(group["maximize"])), fp)

    def _reference(self, group: Mapping[str, Any], formats: StorageFormats | None = None
                   ) -> Callable[..., None]:  # fmt: skip
        """The base's reference (float64 :func:`sparse_adam_reference`, or the rule run by NumPy
        for 16-bit ``formats``), applied lazily as :meth:`_kernel`: only to the elements whose
        gradient is not 0."""
        return _lazy(super()._reference(group, formats))

    @staticmethod
    def _rows(p: Parameter, flat: FlatBuffers, j: int, grad: np.ndarray) -> tuple[np.ndarray, int]:
        """Parameter ``j``'s touched rows and its row length (class docstring)."""
        shape = p.data.shape
        ncols = flat.sizes[j] // shape[0] if len(shape) and shape[0] else 1
        rows = p.grad_rows
        if rows is None:
            fp = format_codes(flat.formats)[0]
            return touched_rows(grad, ncols, fp), ncols
        rows = np.asarray(rows)
        n = flat.sizes[j] // ncols if ncols else 0
        if rows.size and (rows.dtype != np.int64 or rows.ndim != 1 or rows.min() < 0
                          or rows.max() >= n or (np.diff(rows) <= 0).any()):  # fmt: skip
            raise ValueError(
                f"SparseAdam: parameter {p.name or '?'} has grad_rows {rows!r}; it must be a "
                f"sorted, unique 1-D int64 array of rows in [0, {n}) (what "
                "Embedding(sparse=True) records)"
            )
        return rows, ncols

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One lazy update of every parameter that has a gradient: only its touched rows
        (class docstring) move, each parameter's step count advances. ``closure`` as in
        :meth:`Optimizer.step`."""
        _threads.tick()
        loss = closure() if closure is not None else None
        plans = self._plan_step()
        track = self.track_stats
        work = []  # (group, flat, run, j, slices, rows, ncols, kernel)
        for i, flat, _, runs in plans:
            group = self.param_groups[i]
            fp, fs, per_op = format_codes(flat.formats)
            negate = bool(group["maximize"])
            for run in runs:
                for j in run.js:
                    sl = flat.param_slices(j)
                    rows, ncols = self._rows(flat.params[j], flat, j, sl[1])
                    work.append((i, flat, run, j, sl, rows, ncols, (fp, fs, per_op, negate)))
        if self.check_finite:
            bad = []
            for i, flat, run, j, sl, rows, ncols, key in work:
                lo = flat.offsets[j]
                scratch = flat.ensure_scratch()[lo : lo + flat.sizes[j]]
                n_bad = row_kernel(True, False, *key)(*sl, scratch, run.scalars, rows, ncols)[1]
                if n_bad:
                    slices = flat.param_slices(j, typed=True)
                    bad.append((i, flat.params[j], n_bad, slices, run.step, {}))
            self._raise_nonfinite(bad)
        counts = [0, 0, 0.0, 0, 0]
        for _, flat, run, j, sl, rows, ncols, key in work:
            if track:
                lo = flat.offsets[j]
                scratch = flat.ensure_scratch()[lo : lo + flat.sizes[j]]
            else:
                scratch = flat.scratch
            got = row_kernel(track, True, *key)(*sl, scratch, run.scalars, rows, ncols)
            for k, c in enumerate(got):
                counts[k] += c
        self._finish_step(plans, tuple(counts))  # type: ignore[arg-type]
        return loss

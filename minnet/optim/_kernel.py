r"""The one loop of minnet's optimizers: load, apply the optimizer's element rule, count, store.

An optimizer is its element rule (:class:`Rule`): a compiled function of one coordinate,

.. code-block:: text

    update(p, g, state, s, o, rp, rs) -> (p_in, p_new, new_state, delta, change, dominated, g2)

    p, g       the parameter and its gradient, loaded in the compute dtype (float32 for
               16-bit buffers, else the buffers' dtype)
    state      the optimizer's state values of this coordinate, a tuple in ``_state_spec``
               order (an optional array that a variant lacks, such as AMSGrad's max, is
               missing from the tuple: read it with :func:`slot`)
    s          the per-step constants (a NamedTuple, computed once in float64 and cast)
    o          the rule's compile-time options (a tuple: eps placement, variant flags)
    rp, rs     the rounding of the ``per_op`` model: the storage format of the parameter (and
               gradient) and of the state when every op rounds, ``NATIVE`` otherwise, so that
               ``round_to(x, rp)`` compiles to nothing for float32/float64 and ``"fused"``
    p_in       the parameter the update is added to (``p`` after a decoupled decay)
    p_new      the new parameter, before it is rounded to its storage format
    new_state  the new state values: the full tuple (the skeleton stores as many as there are
               arrays)
    delta      the update added to ``p_in``
    change     what ``update_rms`` measures (``delta``, or ``p_new - p`` with a decoupled decay)
    dominated  whether eps is at least what it is added to or compared with
    g2         the gradient as the second moment sees it (for the underflow count)

The same rule, run by NumPy over whole arrays, is every optimizer's 16-bit reference
(:mod:`minnet.optim._reference`), so a rule branches only on its options and constants; a
choice per element is ``select(cond, a, b)`` or ``np.maximum``, never an ``if`` on a value.

:func:`kernel` builds, for one rule, one set of options and one storage format, the compiled
pass ``kernel(param, grad, *state, scratch, s)`` over flat 1-D buffers (16-bit ones as
``uint16`` views). Every count is defined here, once:

    eps_dominated  coordinates whose rule says ``dominated``
    nonfinite      coordinates whose new parameter is NaN or infinite (as stored, for 16-bit);
                   in the dry run (``write=False``, what ``check_finite`` runs) also those
                   whose new state values would be stored NaN or infinite
    sum of squares ``sum(float64(change)**2)``, for ``update_rms``
    underflow      (16-bit buffers) coordinates whose stored second moment, the state array
                   ``Rule.second_moment``, is 0 although ``g2`` is not
    lost updates   (16-bit buffers) coordinates whose stored new parameter equals ``p_in``
                   although ``delta != 0``

A kernel returns ``(eps_dominated, nonfinite, sum of squares)`` over float32/float64 buffers
and those plus ``(underflow, lost updates)`` over 16-bit ones (zeros when not tracked).
``write=False`` is the dry run of ``check_finite``: it counts and stores nothing. All-bfloat16
buffers under ``"fused"`` rounding take a loop that reads and writes two elements per 32-bit
word (no widening or narrowing shuffles) for their plain update.

Rules with a per-tensor stage (``Rule.tensor``, a :class:`Tensor`: LAMB's and LARS's trust
ratios) get :func:`tensor_kernel` instead, one compiled call over a run of parameters: pass 1
runs the element rule over the whole range and keeps its ``change`` (the direction ``u``) in
``scratch``; then for each tensor ``[bounds[j], bounds[j + 1])`` one pass sums ``p**2`` and
``u**2`` in float64, ``scale`` turns them into the tensor's scalar ``k`` (and updates the
tensor's own scalar state, ``Tensor.state``, if the stage keeps one: Novograd's ``nu``), and
pass 2 runs ``apply`` over the tensor. The counts are the same (a tensor whose ``scale`` says
eps dominates counts all its coordinates). Elementwise rules never reach this code.

Rules with a global reduction (``Rule.reduce``, a :class:`Reduction`: Prodigy's distance
estimate, sums over every parameter of the model) get a second compiled pass,
:func:`reduce_kernel`: a read-only pass over the same buffers that sums, in float64, the values
``reduce(p, g, state, s, o)`` gives per coordinate; the optimizer turns the sums of every run
of every group into the step's scalars (``Optimizer._reduce_group_state``) before the update
pass, which is the element rule's ordinary kernel. The reduction is serial and not reassociated
(its float64 sum does not vectorize), so that it stays exactly reproducible.

Compiled kernels are cached on disk, keyed on the rule's source, the options and the source
files the kernel reaches (the rule's module and those of what it calls, this skeleton,
``_lowp.py``: :mod:`minnet._jitcache`) and the float16 conversion chosen at import (F16C's
instructions or integer code, ``_lowp.F16_HARDWARE``), so a second process compiles nothing,
an edit of the rule recompiles its kernels, and an edit elsewhere recompiles none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numba
import numpy as np
from numba.extending import overload

from minnet._jitcache import cache_on_source, generated
from minnet._lowp import BF16, LITTLE_ENDIAN, NATIVE, hi16, lo16, load, pack16, store
from minnet.optim._flat import StorageFormats

__all__ = ["Rule", "Tensor", "Reduction", "kernel", "reduce_kernel", "slot", "select", "element",
           "sqrt_plus_eps"]


class Rule(NamedTuple):
    """An optimizer's element rule and what the skeleton needs to know about it.

    Attributes:
        update: the compiled element function (see the module docstring), made with
            :func:`element`.
        second_moment: the index in the state tuple of the array whose stored zeros count as
            underflow (Adam's ``exp_avg_sq``); ``-1`` when the rule has none.
        common: optional compiled ``common(s) -> (bool, s2)``: whether this step's constants
            are the common case and those constants rebuilt with literal values (e.g. a zero
            weight decay), so that the word-pair loop of all-bfloat16 buffers gets a copy in
            which the branches they decide are gone. ``None``: one copy.
        branch: optional compiled ``branch(s) -> bool``, a choice made once per step (RAdam's
            rectified or not): the kernel holds one loop for each value, appended to the
            options (``o[-1]``), so the element rule's branch on it is decided at compile time.
        tensor: optional per-tensor stage (:class:`Tensor`).
        multiplier: optional ``multiplier(state, s, o) -> k``, made with :func:`element`: the
            step multiplier ``k`` in ``param -= lr * k * m_hat`` (``1 / (denominator including
            eps)``) from the state values after a step and that step's constants. It is never
            compiled into a kernel: :meth:`~minnet.optim.optimizer.Optimizer.multipliers` runs
            it by NumPy over whole float64 arrays. It calls the same piece that the update
            divides by (e.g. Adam's ``denominator``), so eps is written once. ``None``: the
            update has no eps.
    """

    update: Any
    second_moment: int = -1
    common: Any = None
    branch: Any = None
    tensor: Any = None
    multiplier: Any = None
    reduce: Any = None


class Reduction(NamedTuple):
    """A rule's global reduction (``Rule.reduce``): sums over every coordinate of the model that
    the optimizer needs before its update (Prodigy's ``sum(g * (p0 - p))`` and ``sum(|s|)``).

    Attributes:
        fn: the compiled element function ``fn(p, g, state, s, o) -> tuple`` of ``n`` values of
            the compute dtype (made with :func:`element`; it reads and writes nothing else).
        n: the number of values, and of float64 sums :func:`reduce_kernel` returns.
    """

    fn: Any
    n: int


class Tensor(NamedTuple):
    """A rule's per-tensor stage (``Rule.tensor``): what LAMB's and LARS's trust ratios need,
    a scalar per parameter tensor (a segment of the flat buffers) from norms over the tensor.

    With a stage, the kernel is three steps over each run of parameters (module docstring,
    "Rules with a per-tensor stage"): the element rule (pass 1) updates the state arrays
    ``[0, first)`` and hands its ``change`` (the raw direction ``u``) to the stage through the
    scratch array; then, per tensor, ``k, dominated = scale(sum(p**2), sum(u**2), s, o)``
    (float64 sums over the tensor's coordinates, before its update); then pass 2,
    ``apply(p, u, k, state, s, o, rp, rs) -> (p_in, p_new, new_state, delta, change)`` per
    coordinate, with ``k`` cast to the compute dtype and ``state`` the arrays ``[first, ..)``.

    A stage may keep scalars per tensor from step to step (Novograd's ``nu``, an EMA of the
    tensor's squared gradient norm): ``state``, ``((name, initial value), ...)``. They live in
    float64, one row per parameter (``FlatBuffers.tensor_state``; the state dict holds each as
    a float under its name), and the kernel takes them as ``tensor_state`` (float64,
    ``(tensors, len(state))``). With them the stage is ``scale(pp, uu, s, o, ts)``: ``ts`` is a
    float64 array of the tensor's values before the step, which ``scale`` overwrites with the
    new ones; the kernel stores them back only when it writes (not in ``check_finite``'s dry
    run). Without them ``scale`` takes four arguments and the loop has no per-tensor state.

    Attributes:
        scale: the compiled per-tensor function (a plain ``numba.njit`` of scalars).
        apply: the compiled element function of pass 2, made with :func:`element`.
        first: the number of state arrays pass 1 updates; the rest are pass 2's.
        state: the per-tensor scalar state, ``((name, initial value), ...)``; ``()``: none.
    """

    scale: Any
    apply: Any
    first: int = 0
    state: tuple[tuple[str, float], ...] = ()


def element(fn: Callable[..., Any]) -> Any:
    """Compile an element rule, or a piece that rules share (inlined into the skeleton's loop
    before typing, so that the options and formats it branches on are constants there). The
    16-bit reference runs it, and the pieces it calls, by NumPy over whole arrays."""
    compiled = numba.njit(inline="always", error_model="numpy")(fn)
    compiled.is_element = True
    return compiled


@numba.njit(inline="always", error_model="numpy")
def select(cond, a, b):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """``a if cond else b`` for a per-element condition: a rule's branch on a value (both sides
    are computed; the reference run by NumPy over whole arrays reads it as ``np.where``)."""
    return a if cond else b


@element
def sqrt_plus_eps(x, eps):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """``(sqrt(x) + eps, eps >= sqrt(x))``: the denominator of an Adam-like update with eps
    outside the root, and whether eps dominates it (AdaBelief, Yogi, Adan, AdEMAMix, LAMB: each
    rule's update and its ``multiplier`` call it, so that eps is written once)."""
    root = np.sqrt(x)
    return root + eps, eps >= root


# -- tuples of state arrays and values ----------------------------------------------------------
#
# The number of state arrays differs between optimizers and variants, so the loads and stores
# are generated for each tuple length while typing (Numba cannot build a tuple in a loop).


def _compiled(source: str, **names: Any) -> Callable[..., Any]:
    return generated(source, __file__, **names)


def _gather(arrays, i, fmt):  # type: ignore[no-untyped-def]  # pragma: no cover - typed only
    """``(load(arrays[0][i], fmt), load(arrays[1][i], fmt), ...)``."""


@overload(_gather, prefer_literal=True)
def _gather_impl(arrays, i, fmt):  # type: ignore[no-untyped-def]
    items = "".join(f"load(arrays[{k}][i], fmt), " for k in range(len(arrays.types)))
    return _compiled(f"def impl(arrays, i, fmt):\n    return ({items})\n", load=load)


def _scatter(arrays, i, values, fmt):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``arrays[k][i] = store(values[k], fmt)`` for every array (``values`` may be longer)."""


@overload(_scatter, prefer_literal=True)
def _scatter_impl(arrays, i, values, fmt):  # type: ignore[no-untyped-def]
    lines = "".join(
        f"    arrays[{k}][i] = store(values[{k}], fmt)\n" for k in range(len(arrays.types))
    )
    return _compiled(f"def impl(arrays, i, values, fmt):\n{lines}    return 0\n", store=store)


def _words(arrays, n):  # type: ignore[no-untyped-def]  # pragma: no cover - typed only
    """``(arrays[0][:n].view(np.uint32), ...)``."""


@overload(_words)
def _words_impl(arrays, n):  # type: ignore[no-untyped-def]
    items = "".join(f"arrays[{k}][:n].view(np.uint32), " for k in range(len(arrays.types)))
    return _compiled(f"def impl(arrays, n):\n    return ({items})\n", np=np)


def _gather_pair(words, k, fmt):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The low and the high element of word ``k`` of every array, loaded: two tuples."""


@overload(_gather_pair, prefer_literal=True)
def _gather_pair_impl(words, k, fmt):  # type: ignore[no-untyped-def]
    n = len(words.types)
    lo = "".join(f"load(lo16(words[{j}][k]), fmt), " for j in range(n))
    hi = "".join(f"load(hi16(words[{j}][k]), fmt), " for j in range(n))
    return _compiled(
        f"def impl(words, k, fmt):\n    return ({lo}), ({hi})\n", load=load, lo16=lo16, hi16=hi16
    )


def _scatter_pair(words, k, lo, hi, fmt):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``words[j][k] = pack16(store(lo[j], fmt), store(hi[j], fmt))`` for every array."""


@overload(_scatter_pair, prefer_literal=True)
def _scatter_pair_impl(words, k, lo, hi, fmt):  # type: ignore[no-untyped-def]
    lines = "".join(
        f"    words[{j}][k] = pack16(store(lo[{j}], fmt), store(hi[{j}], fmt))\n"
        for j in range(len(words.types))
    )
    return _compiled(
        f"def impl(words, k, lo, hi, fmt):\n{lines}    return 0\n", pack16=pack16, store=store
    )


def _stored_finite(arrays, values, fmt):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Whether every value that would be stored in ``arrays`` (the first ``len(arrays)`` of
    ``values``, rounded to ``fmt``) is finite."""


@overload(_stored_finite, prefer_literal=True)
def _stored_finite_impl(arrays, values, fmt):  # type: ignore[no-untyped-def]
    terms = " and ".join(
        f"np.isfinite(load(store(values[{k}], fmt), fmt))" for k in range(len(arrays.types))
    )
    return _compiled(
        f"def impl(arrays, values, fmt):\n    return {terms or 'True'}\n",
        np=np, load=load, store=store,
    )  # fmt: skip


def slot(values, k, default):  # type: ignore[no-untyped-def]
    """``values[k]`` if the tuple has an element ``k`` (a literal index), else ``default``: a
    rule's optional state (AMSGrad's max exists only with ``amsgrad``)."""
    return values[k] if k < len(values) else default


@overload(slot, prefer_literal=True)
def _slot_impl(values, k, default):  # type: ignore[no-untyped-def]
    index = k.literal_value
    if index < len(values.types):
        return _compiled(f"def impl(values, k, default):\n    return values[{index}]\n")
    return _compiled("def impl(values, k, default):\n    return default\n")


# -- the loop ----------------------------------------------------------------------------------


@numba.njit(error_model="numpy", fastmath={"reassoc"})
def sum_squares(x, n):  # pragma: no cover - compiled
    """``sum(float64(x[:n])**2)``, for the kernels' ``update_rms``. ``reassoc`` lets this
    reduction alone use SIMD lanes; it is a separate function so that the flag never touches
    an update's arithmetic."""
    total = 0.0
    for i in range(n):
        d = np.float64(x[i])
        total += d * d
    return total


@numba.njit(inline="always", error_model="numpy")
def _loop(
    param, grad, arrays, scratch, s, start, update, o, track, write, fp, fs, rp, rs, second,
    negate,
):  # pragma: no cover - compiled  # fmt: skip
    """Elements ``start ..`` of the flat buffers: load, update, count, store (module
    docstring). Every argument after ``start`` is a compile-time constant."""
    lowp = fp != NATIVE or fs != NATIVE
    n_dominated = 0
    n_nonfinite = 0
    n_underflow = 0
    n_lost = 0
    for i in range(start, param.shape[0]):
        g = load(grad[i], fp)
        p_in, p, new, delta, change, dominated, g2 = update(
            load(param[i], fp), -g if negate else g, _gather(arrays, i, fs), s, o, rp, rs
        )
        p_bits = store(p, fp)
        if track:
            n_dominated += dominated
            p_new = load(p_bits, fp)
            if not write:  # check_finite's dry run: the state must stay finite too
                n_nonfinite += not (np.isfinite(p_new) and _stored_finite(arrays, new, fs))
            else:
                n_nonfinite += not np.isfinite(p_new)
            if lowp:
                if second >= 0:
                    n_underflow += (load(store(new[second], fs), fs) == 0) & (g2 != 0)
                n_lost += (p_new == p_in) & (delta != 0)
            scratch[i] = change
        if write:
            param[i] = p_bits
            _scatter(arrays, i, new, fs)
    if not track:
        return 0, 0, 0.0, 0, 0
    return n_dominated, n_nonfinite, sum_squares(scratch, param.shape[0]), n_underflow, n_lost


@numba.njit(inline="always", error_model="numpy")
def _pairs(param, grad, arrays, s, update, o, negate):  # pragma: no cover - compiled
    """The plain update of elements ``0 .. 2*(n//2) - 1`` of all-bfloat16 buffers under
    ``"fused"`` rounding, two neighbours per step read and written as one uint32 word (see
    ``minnet._lowp.pack16``): the same arithmetic per element as :func:`_loop`, without the
    widening and narrowing shuffles. Returns the number of elements done."""
    n = param.shape[0] // 2 * 2
    pw = param[:n].view(np.uint32)
    gw = grad[:n].view(np.uint32)
    words = _words(arrays, n)
    for k in range(pw.shape[0]):
        a = pw[k]
        b = gw[k]
        st0, st1 = _gather_pair(words, k, BF16)
        g0 = load(lo16(b), BF16)
        g1 = load(hi16(b), BF16)
        if negate:
            g0 = -g0
            g1 = -g1
        r0 = update(load(lo16(a), BF16), g0, st0, s, o, NATIVE, NATIVE)
        r1 = update(load(hi16(a), BF16), g1, st1, s, o, NATIVE, NATIVE)
        pw[k] = pack16(store(r0[1], BF16), store(r1[1], BF16))
        _scatter_pair(words, k, r0[2], r1[2], BF16)
    return n


def format_codes(formats: StorageFormats | None) -> tuple[int, int, bool]:
    """``(parameter format, state format, per_op)`` of buffers' storage formats, the codes the
    compiled passes branch on (``None``: float32/float64 buffers, ``NATIVE`` for both)."""
    if formats is None:
        return NATIVE, NATIVE, False
    return int(formats.param), int(formats.state), formats.rounding == "per_op"


def kernel(
    rule: Rule, options: tuple[Any, ...], track: bool, write: bool,
    formats: StorageFormats | None = None, negate: bool = False,
) -> Any:  # fmt: skip
    """The compiled pass of ``rule`` with compile-time ``options`` over buffers of
    ``formats`` (``None``: float32/float64 ones): ``kernel(param, grad, *state, scratch, s)``
    (module docstring). ``negate`` hands the rule ``-grad`` (PyTorch's ``maximize``). Built on
    first use, cached in memory and on disk.

    A rule with a per-tensor stage (``rule.tensor``) gets :func:`tensor_kernel`'s pass instead,
    ``kernel(param, grad, *state, scratch, s, bounds=None, record=None)``."""
    fp, fs, per_op = format_codes(formats)
    if rule.tensor is not None:
        return tensor_kernel(rule, tuple(options), bool(track), bool(write), fp, fs, per_op,
                             bool(negate))  # fmt: skip
    return _kernel(rule, tuple(options), bool(track), bool(write), fp, fs, per_op, bool(negate))


@functools.cache
def _kernel(
    rule: Rule, o: tuple[Any, ...], track: bool, write: bool, fp: int, fs: int, per_op: bool,
    negate: bool,
) -> Any:  # fmt: skip
    update = rule.update
    second = int(rule.second_moment)
    rp = fp if per_op else NATIVE
    rs = fs if per_op else NATIVE
    native = fp == NATIVE and fs == NATIVE
    pairs = write and not track and fp == BF16 and fs == BF16 and not per_op and LITTLE_ENDIAN
    common = rule.common

    # The whole pass for options ``o``: the word-pair loop first where it applies (with its own
    # copy for the rule's common case), then the element loop over the rest.
    if not pairs:

        def body(param, grad, arrays, scratch, s, o):  # pragma: no cover - compiled
            return _loop(
                param, grad, arrays, scratch, s, 0, update, o, track, write, fp, fs, rp, rs,
                second, negate,
            )  # fmt: skip

    elif common is None:

        def body(param, grad, arrays, scratch, s, o):  # pragma: no cover - compiled
            start = _pairs(param, grad, arrays, s, update, o, negate)
            return _loop(
                param, grad, arrays, scratch, s, start, update, o, track, write, fp, fs, rp, rs,
                second, negate,
            )  # fmt: skip

    else:

        def body(param, grad, arrays, scratch, s, o):  # pragma: no cover - compiled
            usual, s_usual = common(s)
            if usual:
                start = _pairs(param, grad, arrays, s_usual, update, o, negate)
            else:
                start = _pairs(param, grad, arrays, s, update, o, negate)
            return _loop(
                param, grad, arrays, scratch, s, start, update, o, track, write, fp, fs, rp, rs,
                second, negate,
            )  # fmt: skip

    whole = numba.njit(inline="always", error_model="numpy")(body)
    n = 3 if native else 5  # float32/float64 buffers have no underflow or lost-update count
    branch = rule.branch
    if branch is None:

        def run(param, grad, *rest):  # pragma: no cover - compiled
            return whole(param, grad, rest[:-2], rest[-2], rest[-1], o)[:n]

    else:
        o_true = (*o, True)
        o_false = (*o, False)

        def run(param, grad, *rest):  # pragma: no cover - compiled
            if branch(rest[-1]):
                return whole(param, grad, rest[:-2], rest[-2], rest[-1], o_true)[:n]
            return whole(param, grad, rest[:-2], rest[-2], rest[-1], o_false)[:n]

    compiled = numba.njit(error_model="numpy", nogil=True)(run)
    cache_on_source(compiled)
    return compiled


# -- rules with a per-tensor stage ------------------------------------------------------------


@numba.njit(inline="always", error_model="numpy")
def _first_pass(
    param, grad, arrays, scratch, s, update, o, track, write, fp, fs, rp, rs, second, negate
):  # pragma: no cover - compiled  # fmt: skip
    """Pass 1 of a rule with a per-tensor stage: the element rule updates its state arrays and
    its ``change``, the direction ``u``, goes to ``scratch``. In the dry run a coordinate whose
    stored state would be non-finite gets ``u = NaN`` (its tensor's update is then NaN, as it
    would be at the next step). Returns ``(dominated, underflow)`` counts."""
    n_dominated = 0
    n_underflow = 0
    for i in range(param.shape[0]):
        g = load(grad[i], fp)
        _, _, new, _, u, dominated, g2 = update(
            load(param[i], fp), -g if negate else g, _gather(arrays, i, fs), s, o, rp, rs
        )
        scratch[i] = u
        if track:
            n_dominated += dominated
            if not write and not _stored_finite(arrays, new, fs):
                scratch[i] = np.nan
            if fs != NATIVE and second >= 0:
                n_underflow += (load(store(new[second], fs), fs) == 0) & (g2 != 0)
        if write:
            _scatter(arrays, i, new, fs)
    return n_dominated, n_underflow


@numba.njit(error_model="numpy", fastmath={"reassoc"})
def _segment_sums(param, u, lo, hi, fp):  # pragma: no cover - compiled
    """``(sum(float64(param[lo:hi])**2), sum(float64(u[lo:hi])**2))``, in one pass (``reassoc``
    lets the reductions use SIMD lanes; nothing else is in this function)."""
    pp = 0.0
    uu = 0.0
    for i in range(lo, hi):
        p = np.float64(load(param[i], fp))
        d = np.float64(u[i])
        pp += p * p
        uu += d * d
    return pp, uu


@numba.njit(inline="always", error_model="numpy")
def _second_pass(
    param, arrays, scratch, k, s, lo, hi, apply, o, track, write, fp, fs, rp, rs
):  # pragma: no cover - compiled  # fmt: skip
    """Pass 2 over one tensor ``[lo, hi)``: ``apply`` with the tensor's scalar ``k``; with
    ``track`` the update's change replaces ``u`` in ``scratch``. Returns ``(nonfinite, lost)``."""
    lowp = fp != NATIVE or fs != NATIVE
    n_nonfinite = 0
    n_lost = 0
    for i in range(lo, hi):
        p_in, p, new, delta, change = apply(
            load(param[i], fp), scratch[i], k, _gather(arrays, i, fs), s, o, rp, rs
        )
        p_bits = store(p, fp)
        if track:
            p_new = load(p_bits, fp)
            if not write:
                n_nonfinite += not (np.isfinite(p_new) and _stored_finite(arrays, new, fs))
            else:
                n_nonfinite += not np.isfinite(p_new)
            if lowp:
                n_lost += (p_new == p_in) & (delta != 0)
            scratch[i] = change
        if write:
            param[i] = p_bits
            _scatter(arrays, i, new, fs)
    return n_nonfinite, n_lost


def tensor_kernel(
    rule: Rule, o: tuple[Any, ...], track: bool, write: bool, fp: int, fs: int, per_op: bool,
    negate: bool,
) -> Callable[..., Any]:  # fmt: skip
    """The pass of a rule with a per-tensor stage (:class:`Tensor`), for one set of options and
    storage formats: ``kernel(param, grad, *state, scratch, s, bounds=None, record=None,
    tensor_state=None)``.

    ``scratch`` holds ``u`` between the passes (one value per coordinate in the compute dtype;
    a shorter one is replaced by a new array); ``bounds`` (int64) are the tensors' starts and
    the end, ``[0, n]`` (one tensor) when ``None``; ``record`` (float64, ``(tensors, 2)``)
    receives each tensor's ``(||p||, ||u||)`` as the stage saw them; ``tensor_state`` (float64,
    ``(tensors, len(Tensor.state))``, updated in place) is the stage's per-tensor state,
    fresh initial values when ``None``. Returns the counts of :func:`kernel`. One compiled call
    does pass 1 over the whole range, the stage and pass 2 per tensor."""
    return _TensorPass(_tensor_kernel(rule, o, track, write, fp, fs, per_op, negate),
                       fp == NATIVE and fs == NATIVE, rule.tensor.state)  # fmt: skip


class _TensorPass:
    """:func:`tensor_kernel`'s callable: the defaults of ``bounds``, ``record`` and a short
    ``scratch`` around the one compiled call (``compiled``; ``stats`` are its cache's)."""

    def __init__(self, compiled: Any, native: bool, state: tuple[tuple[str, float], ...]) -> None:
        self.compiled = compiled
        self.native = native
        self.initial = np.array([value for _, value in state], np.float64)

    @property
    def stats(self) -> Any:
        return self.compiled.stats

    def __call__(self, param: np.ndarray, grad: np.ndarray, *rest: Any, bounds: Any = None,
                 record: Any = None, tensor_state: Any = None) -> Any:  # fmt: skip
        *state, scratch, s = rest
        n = param.shape[0]
        if scratch.shape[0] < n:
            scratch = np.empty(n, param.dtype if self.native else np.float32)
        if bounds is None:
            bounds = np.array([0, n], np.int64)
        if record is None:
            record = np.empty((bounds.shape[0] - 1, 2))
        if tensor_state is None:
            tensor_state = np.tile(self.initial, (bounds.shape[0] - 1, 1))
        return self.compiled(param, grad, tuple(state), scratch, s, bounds, record, tensor_state)


@functools.cache
def _tensor_kernel(
    rule: Rule, o: tuple[Any, ...], track: bool, write: bool, fp: int, fs: int, per_op: bool,
    negate: bool,
) -> Any:  # fmt: skip
    assert rule.branch is None and rule.common is None, "a per-tensor rule has neither"
    update, stage = rule.update, rule.tensor
    scale, apply, first = stage.scale, stage.apply, int(stage.first)
    second = int(rule.second_moment)
    rp = fp if per_op else NATIVE
    rs = fs if per_op else NATIVE
    n_counts = 3 if fp == NATIVE and fs == NATIVE else 5
    n_ts = len(stage.state)
    if n_ts:
        stage_scale = scale
    else:  # no per-tensor state: the four-argument stage of Lamb and Lars

        @numba.njit(inline="always", error_model="numpy")
        def stage_scale(pp, uu, s, o, ts):  # pragma: no cover - compiled
            return scale(pp, uu, s, o)

    def run(param, grad, arrays, scratch, s, bounds, record, tensor_state):  # pragma: no cover
        n = param.shape[0]
        n_dominated, n_underflow = _first_pass(
            param, grad, arrays[:first], scratch[:n], s, update, o, track, write, fp, fs, rp,
            rs, second, negate,
        )  # fmt: skip
        later = arrays[first:]
        ks = np.empty(1, scratch.dtype)  # k in the compute dtype
        ts = np.empty(n_ts)  # the tensor's scalar state, in float64
        n_nonfinite = 0
        n_lost = 0
        for j in range(bounds.shape[0] - 1):
            lo, hi = bounds[j], bounds[j + 1]
            pp, uu = _segment_sums(param, scratch, np.uint64(lo), np.uint64(hi), fp)
            record[j, 0] = np.sqrt(pp)
            record[j, 1] = np.sqrt(uu)
            for q in range(n_ts):
                ts[q] = tensor_state[j, q]
            k, dominated = stage_scale(pp, uu, s, o, ts)
            if write:
                for q in range(n_ts):
                    tensor_state[j, q] = ts[q]
            ks[0] = k
            if track and dominated:
                n_dominated += hi - lo
            # unsigned bounds: the indices are then known to be >= 0, so the loop carries no
            # negative-index wraparound and vectorizes
            bad, lost = _second_pass(
                param, later, scratch, ks[0], s, np.uint64(lo), np.uint64(hi), apply, o, track,
                write, fp, fs, rp, rs,
            )  # fmt: skip
            n_nonfinite += bad
            n_lost += lost
        if not track:
            return (0, 0, 0.0, 0, 0)[:n_counts]
        counts = (n_dominated, n_nonfinite, sum_squares(scratch, n), n_underflow, n_lost)
        return counts[:n_counts]

    compiled = numba.njit(error_model="numpy", nogil=True)(run)
    cache_on_source(compiled)
    return compiled


# -- rules with a global reduction ------------------------------------------------------------


def reduce_kernel(rule: Rule, options: tuple[Any, ...], formats: StorageFormats | None = None
                  ) -> Any:  # fmt: skip
    """The read-only pass of ``rule.reduce`` (a :class:`Reduction`) with compile-time
    ``options`` over buffers of ``formats`` (``None``: float32/float64 ones):
    ``kernel(param, grad, *state, s) -> float64 array of the n sums``. Built on first use,
    cached in memory and on disk."""
    fp, fs, _ = format_codes(formats)
    return _reduce_kernel(rule, tuple(options), fp, fs)


@functools.cache
def _reduce_kernel(rule: Rule, o: tuple[Any, ...], fp: int, fs: int) -> Any:
    fn, n = rule.reduce.fn, int(rule.reduce.n)

    def run(param, grad, *rest):  # pragma: no cover - compiled
        arrays, s = rest[:-1], rest[-1]
        acc = np.zeros(n)
        for i in range(param.shape[0]):
            values = fn(load(param[i], fp), load(grad[i], fp), _gather(arrays, i, fs), s, o)
            for k in range(n):
                acc[k] += np.float64(values[k])
        return acc

    compiled = numba.njit(error_model="numpy", nogil=True)(run)
    cache_on_source(compiled)
    return compiled

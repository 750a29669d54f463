"""The 16-bit reference of every optimizer: its element rule run by NumPy over whole arrays.

:func:`rule_reference` turns a :class:`~minnet.optim._kernel.Rule` into a plain-NumPy update of
float16 / bfloat16 / float32 arrays: the rule's own Python source, called once with whole
float32 arrays in place of scalars, ``round_to`` done by NumPy's and ml_dtypes' casts (round to
nearest even) instead of :mod:`minnet._lowp`'s bit manipulation, and each stored array rounded
once with ``astype``. It checks the skeleton (the conversions, the loads and stores, the word
pairs, the dry run), not the formula: each optimizer's hand-written float64 reference and its
library fixtures check the formula.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numpy as np

from minnet._lowp import F16, NATIVE
from minnet.dtypes import load_bfloat16
from minnet.optim._flat import StorageFormats

__all__ = ["rule_reference", "numpy_rule"]

_F32 = np.float32


def _round_to(x: Any, fmt: int) -> Any:
    """NumPy's ``minnet._lowp.round_to``: ``x`` rounded to ``fmt``'s precision, as float32."""
    if fmt == NATIVE:
        return x
    return np.asarray(x, _F32).astype(np.float16 if fmt == F16 else load_bfloat16()).astype(_F32)


def numpy_rule(compiled: Any) -> Callable[..., Any]:
    """The Python function behind a compiled element rule (or hook), with ``round_to`` done
    by NumPy casts, ``select`` as ``np.where`` and every other element it calls (a piece that
    rules share, made with :func:`~minnet.optim._kernel.element`) turned the same way, so that
    it runs on whole arrays."""
    f = compiled.py_func
    namespace = dict(f.__globals__, round_to=_round_to, select=np.where)
    for name in f.__code__.co_names:  # the elements it calls, by name
        value = namespace.get(name)
        if getattr(value, "is_element", False) and value is not compiled:
            namespace[name] = numpy_rule(value)
    return types.FunctionType(f.__code__, namespace, f.__name__, f.__defaults__, f.__closure__)


def rule_reference(
    rule: Any, options: tuple[Any, ...], formats: StorageFormats, negate: bool = False
) -> Callable[..., None]:
    """``ref(param, grad, *state, scalars)``: the update of :func:`minnet.optim._kernel.kernel`
    for these options, formats and ``negate``, in place, over typed arrays (float16, bfloat16,
    float32) with float32 ``scalars``."""
    if rule.tensor is not None:
        return _tensor_reference(rule, options, formats, negate)
    update = numpy_rule(rule.update)
    branch = None if rule.branch is None else numpy_rule(rule.branch)
    per_op = formats.rounding == "per_op"
    rp = formats.param if per_op else NATIVE
    rs = formats.state if per_op else NATIVE

    def reference(param: np.ndarray, grad: np.ndarray, *rest: Any) -> None:
        *state, s = rest
        o = options if branch is None else (*options, bool(branch(s)))
        loaded = tuple(a.astype(_F32) for a in state)
        g = -grad.astype(_F32) if negate else grad.astype(_F32)
        with np.errstate(all="ignore"):
            out = update(param.astype(_F32), g, loaded, s, o, rp, rs)
        param[...] = np.asarray(out[1], _F32).astype(param.dtype)
        for a, value in zip(state, out[2]):
            a[...] = np.asarray(value, _F32).astype(a.dtype)

    return reference


def _tensor_reference(
    rule: Any, options: tuple[Any, ...], formats: StorageFormats, negate: bool
) -> Callable[..., None]:
    """:func:`rule_reference` of a rule with a per-tensor stage, the whole array one tensor
    (``minnet.optim._kernel.tensor_kernel``): pass 1 by NumPy, the stage on float64 sums of
    squares, pass 2 by NumPy with the tensor's scalar in float32; the stage's per-tensor scalar
    state (``Tensor.state``) is ``tensor_state`` (float64 ``(1, names)``, updated in place;
    fresh initial values when ``None``)."""
    update, apply = numpy_rule(rule.update), numpy_rule(rule.tensor.apply)
    scale, first = rule.tensor.scale.py_func, int(rule.tensor.first)
    initial = [value for _, value in rule.tensor.state]
    per_op = formats.rounding == "per_op"
    rp = formats.param if per_op else NATIVE
    rs = formats.state if per_op else NATIVE

    def reference(
        param: np.ndarray, grad: np.ndarray, *rest: Any, tensor_state: Any = None
    ) -> None:
        *state, s = rest
        loaded = tuple(a.astype(_F32) for a in state)
        ts = np.array(initial if tensor_state is None else tensor_state[0], np.float64)
        p = param.astype(_F32)
        g = -grad.astype(_F32) if negate else grad.astype(_F32)
        with np.errstate(all="ignore"):
            out = update(p, g, loaded[:first], s, options, rp, rs)
            u = np.asarray(out[4], _F32) * np.ones_like(p)
            pp = float(np.sum(p.astype(np.float64) ** 2))
            uu = float(np.sum(u.astype(np.float64) ** 2))
            k = _F32((scale(pp, uu, s, options, ts) if initial else scale(pp, uu, s, options))[0])
            later = apply(p, u, k, loaded[first:], s, options, rp, rs)
        param[...] = np.asarray(later[1], _F32).astype(param.dtype)
        if tensor_state is not None:
            tensor_state[0] = ts
        for a, value in zip(state[:first], out[2]):
            a[...] = np.asarray(value, _F32).astype(a.dtype)
        for a, value in zip(state[first:], later[2]):
            a[...] = np.asarray(value, _F32).astype(a.dtype)

    return reference

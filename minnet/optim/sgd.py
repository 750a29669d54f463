r"""SGD with momentum, dampening, Nesterov and weight decay: the class, its Numba kernel and a
plain-NumPy reference, side by side. The baseline without eps.

One step ``t`` (counting from 1), in PyTorch's order of operations (``torch.optim.SGD``):

    g = -grad if maximize else grad
    g = g + weight_decay * param                              (only if weight_decay != 0)
    b = g                                                     (t = 1: momentum_buffer = g)
    b = momentum * b + (1 - dampening) * g                    (t > 1)
    g = g + momentum * b if nesterov else b                   (only if momentum != 0)
    param = param + (-lr) * g

The first step's ``b = g`` is computed as ``0 * b + 1 * g`` on a zero buffer, which is exactly
``g``; the per-step constants (``SGDScalars``) carry ``momentum = 0`` and ``1 - dampening = 1``
for that step.

16-bit storage (float16 / bfloat16 parameters or state; ``R_p``/``R_s`` round a float32 value to
the parameter's / the state's dtype, ``lp_p(c)``/``lp_s(c)`` a constant). ``rounding="fused"``
loads every value to float32, runs the update above in float32 and rounds once per stored array
(PyTorch's ``fused=True`` formula: ``b32 = b * momentum + g * (1 - dampening)``, ``param =
R_p(param - b32 * lr)``). ``rounding="per_op"`` is PyTorch's single-tensor ``_single_tensor_sgd``
on half tensors, each op rounding its result (scalars given as ``alpha=`` are rounded to the
storage dtype first, as PyTorch does):

    g = -grad if maximize else grad                          (exact)
    g = R_p(g + lp_p(weight_decay) * param)                  grad.add(param, alpha=wd)
    b = R_s(g)                                               t = 1: buf = grad.clone()
    b = R_s(b * momentum);  b = R_s(b + lp_s(1 - dampening) * g)
                                                             buf.mul_(m).add_(g, alpha=1-d)
    g = R_p(g + lp_p(momentum) * b) if nesterov else b       grad.add(buf, alpha=m)
    param = R_p(param + lp_p(-lr) * g)                       param.add_(g, alpha=-lr)

(``lr=1e-2`` becomes 0.0099945 in float16 there.) Every op computes in float32; products and sums
are separate float32 roundings (PyTorch fuses some into one fma, so a rare last-bit difference
before the 16-bit rounding can remain).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numba
import numpy as np

from minnet._lowp import load, round_to, store
from minnet.nn import Parameter
from minnet.optim._flat import StorageFormats, sum_squares
from minnet.optim._reference import fused, rounder
from minnet.optim.optimizer import (
    Optimizer,
    check_bool,
    check_lr,
    check_momentum,
    check_real,
    check_weight_decay,
)

__all__ = [
    "SGD",
    "SGDScalars",
    "sgd_scalars",
    "sgd_kernel_for",
    "sgd_lowp_kernel_for",
    "sgd_step_reference",
    "sgd_step_reference_lowp",
]


class SGDScalars(NamedTuple):
    """Per-step constants of the SGD update, already in the arrays' dtype."""

    neg_lr: np.floating  # -lr
    sign: np.floating  # -1 if maximize else 1
    weight_decay: np.floating
    momentum: np.floating  # the buffer's decay this step: 0 at t = 1, else momentum
    one_minus_dampening: np.floating  # the gradient's weight in the buffer: 1 at t = 1
    nesterov_momentum: np.floating  # momentum, for Nesterov's g + momentum * b


def sgd_scalars(
    dtype: np.dtype,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    maximize: bool,
    step: int,
) -> SGDScalars:
    """Step ``step``'s constants, computed in float64 and cast to ``dtype``."""
    first = step == 1
    with np.errstate(over="ignore"):
        c = np.array(
            [-lr, -1.0 if maximize else 1.0, weight_decay, 0.0 if first else momentum,
             1.0 if first else 1.0 - dampening, momentum],
            dtype,
        ).tolist()  # fmt: skip
    t = dtype.type
    return SGDScalars(t(c[0]), t(c[1]), t(c[2]), t(c[3]), t(c[4]), t(c[5]))


@numba.njit(inline="always", error_model="numpy")
def _element(p, g, b, s, has_momentum, nesterov):  # pragma: no cover - compiled
    """One coordinate in the arrays' arithmetic; returns (delta, new buffer)."""
    g = g * s.sign
    if s.weight_decay != 0:
        g = g + s.weight_decay * p
    if has_momentum:
        b = b * s.momentum
        b = b + s.one_minus_dampening * g
        if nesterov:
            g = g + s.nesterov_momentum * b
        else:
            g = b
    return s.neg_lr * g, b


@numba.njit(inline="always", error_model="numpy")
def _loop(param, grad, buf, scratch, s, has_momentum, nesterov, track, write):  # pragma: no cover
    """The pass over all coordinates; the flags are compile-time constants."""
    n_nonfinite = 0
    for i in range(param.shape[0]):
        p = param[i]
        b_in = buf[i] if has_momentum else p
        delta, b = _element(p, grad[i], b_in, s, has_momentum, nesterov)
        new = p + delta
        if track:
            n_nonfinite += not np.isfinite(new)
            scratch[i] = delta
        if write:
            param[i] = new
            if has_momentum:
                buf[i] = b
    if not track:
        return 0, 0, 0.0
    return 0, n_nonfinite, sum_squares(scratch, param.shape[0])


@numba.njit(inline="always", error_model="numpy")
def _element_per_op(p, g, b, s, has_momentum, nesterov, fp, fs):  # pragma: no cover - compiled
    """One coordinate of PyTorch's ``_single_tensor_sgd`` on 16-bit tensors: every op in float32,
    its result rounded to the dtype it is stored in (``fp``: parameter and gradient, ``fs``:
    the buffer); ``alpha=`` scalars rounded to that dtype first. Returns (delta, new buffer)."""
    g = g * s.sign
    if s.weight_decay != 0:  # grad.add(param, alpha=weight_decay)
        g = round_to(g + round_to(s.weight_decay, fp) * p, fp)
    if has_momentum:  # buf.mul_(momentum).add_(grad, alpha=1 - dampening); t = 1: buf = grad
        b = round_to(b * s.momentum, fs)
        b = round_to(b + round_to(s.one_minus_dampening, fs) * g, fs)
        if nesterov:  # grad.add(buf, alpha=momentum)
            g = round_to(g + round_to(s.nesterov_momentum, fp) * b, fp)
        else:
            g = b
    return round_to(s.neg_lr, fp) * g, b  # param.add_(grad, alpha=-lr)


@numba.njit(inline="always", error_model="numpy")
def _loop_lowp(
    param, grad, buf, scratch, s, has_momentum, nesterov, track, write, fp, fs, per_op
):  # pragma: no cover - compiled
    """:func:`_loop` over storage formats ``fp`` (param, grad) and ``fs`` (buffer): loads to
    float32, computes in float32 (``per_op`` rounds after each op), rounds when storing.
    Tracked, it also counts coordinates whose stored parameter did not move although
    ``delta != 0`` (SGD has no second moment: its underflow count is 0)."""
    n_nonfinite = 0
    n_lost = 0
    for i in range(param.shape[0]):
        p = load(param[i], fp)
        g = load(grad[i], fp)
        b_in = load(buf[i], fs) if has_momentum else p
        if per_op:
            delta, b = _element_per_op(p, g, b_in, s, has_momentum, nesterov, fp, fs)
        else:
            delta, b = _element(p, g, b_in, s, has_momentum, nesterov)
        p_bits = store(p + delta, fp)
        if track:
            p_new = load(p_bits, fp)
            n_nonfinite += not np.isfinite(p_new)
            n_lost += (p_new == p) & (delta != 0)
            scratch[i] = delta
        if write:
            param[i] = p_bits
            if has_momentum:
                buf[i] = store(b, fs)
    if not track:
        return 0, 0, 0.0, 0, 0
    return 0, n_nonfinite, sum_squares(scratch, param.shape[0]), 0, n_lost


def sgd_kernel_for(
    has_momentum: bool, nesterov: bool, track: bool, write: bool
) -> Callable[..., tuple]:
    """The compiled kernel for one variant: ``kernel(param, grad[, momentum_buffer], scratch,
    scalars) -> (0, n_nonfinite, sum_sq_update)`` (the buffer only with momentum). No eps, so
    the eps-dominated count is always 0."""
    return _sgd_kernel_for(bool(has_momentum), bool(nesterov), bool(track), bool(write))


@functools.cache
def _sgd_kernel_for(has_momentum: bool, nesterov: bool, track: bool, write: bool) -> Callable:
    if has_momentum:

        @numba.njit(cache=True, error_model="numpy", nogil=True)
        def kernel_momentum(param, grad, buf, scratch, s):  # pragma: no cover
            return _loop(param, grad, buf, scratch, s, True, nesterov, track, write)

        return kernel_momentum

    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def kernel(param, grad, scratch, s):  # pragma: no cover
        return _loop(param, grad, grad, scratch, s, False, False, track, write)

    return kernel


def sgd_lowp_kernel_for(
    has_momentum: bool, nesterov: bool, track: bool, write: bool, formats: StorageFormats
) -> Callable[..., tuple]:
    """:func:`sgd_kernel_for` for buffers with a 16-bit parameter or state format (16-bit
    buffers as ``uint16`` views, float32 scalars), returning ``(0, n_nonfinite, sum_sq_update,
    0, n_lost_updates)``. The formats and the rounding model are closure constants."""
    return _sgd_lowp_kernel_for(
        bool(has_momentum), bool(nesterov), bool(track), bool(write), int(formats.param),
        int(formats.state), formats.rounding == "per_op",
    )  # fmt: skip


@functools.cache
def _sgd_lowp_kernel_for(
    has_momentum: bool, nesterov: bool, track: bool, write: bool, fp: int, fs: int, per_op: bool
) -> Callable:
    if has_momentum:

        @numba.njit(cache=True, error_model="numpy", nogil=True)
        def kernel_momentum(param, grad, buf, scratch, s):  # pragma: no cover
            return _loop_lowp(
                param, grad, buf, scratch, s, True, nesterov, track, write, fp, fs, per_op
            )

        return kernel_momentum

    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def kernel(param, grad, scratch, s):  # pragma: no cover
        return _loop_lowp(param, grad, grad, scratch, s, False, False, track, write, fp, fs, per_op)

    return kernel


def sgd_step_reference(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    scalars: SGDScalars,
    nesterov: bool,
) -> None:
    """The same update with whole-array NumPy (``momentum_buffer`` is ``None`` without
    momentum), in place."""
    s = scalars
    with np.errstate(all="ignore"):
        g = grad * s.sign
        if s.weight_decay != 0:
            g = g + s.weight_decay * param
        if momentum_buffer is not None:
            momentum_buffer *= s.momentum
            momentum_buffer += s.one_minus_dampening * g
            g = g + s.nesterov_momentum * momentum_buffer if nesterov else momentum_buffer
        param += s.neg_lr * g


def sgd_step_reference_lowp(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    scalars: SGDScalars,
    nesterov: bool,
    rounding: str,
) -> None:
    """:func:`sgd_step_reference` for arrays of any float dtype (float16, bfloat16, ...), in
    place, with float32 ``scalars``: ``"fused"`` computes on float32 copies and rounds each
    stored array once; ``"per_op"`` rounds every op's float32 result to the dtype of the array
    it belongs to, in PyTorch's order (module docstring)."""
    f32 = np.float32
    if rounding == "fused":
        fused(sgd_step_reference, param, grad, (momentum_buffer,), scalars, nesterov)
        return
    s = scalars

    rp = rounder(param.dtype)  # round to the parameter dtype
    rs = rounder(momentum_buffer.dtype)  # round to the state dtype

    with np.errstate(all="ignore"):
        p = param.astype(f32)
        g = grad.astype(f32) * s.sign
        if s.weight_decay != 0:
            g = rp(g + rp(s.weight_decay)[()] * p)
        if momentum_buffer is not None:
            b = rs(momentum_buffer.astype(f32) * s.momentum)
            b = rs(b + rs(s.one_minus_dampening)[()] * g)
            g = rp(g + rp(s.nesterov_momentum)[()] * b) if nesterov else b
            momentum_buffer[...] = b.astype(momentum_buffer.dtype)
        param[...] = (p + rp(s.neg_lr)[()] * g).astype(param.dtype)


class SGD(Optimizer):
    r"""Stochastic gradient descent with PyTorch's exact semantics (``torch.optim.SGD``).

    .. code-block:: text

        g = -grad if maximize else grad
        g = g + weight_decay * param                         (L2 penalty in the gradient)
        b = g                                                (first step)
        b = momentum * b + (1 - dampening) * g               (later steps)
        g = g + momentum * b  (nesterov)   or   g = b        (when momentum != 0)
        param = param - lr * g

    There is no eps: ``stats.eps_dominated`` is always 0 and :meth:`multipliers` is ``None``.
    The state array ``"momentum_buffer"`` exists only when ``momentum != 0`` (so ``momentum``
    cannot change between zero and non-zero after the group is created). Parameter groups,
    ``state_dict``, ``track_stats`` and ``check_finite`` are
    :class:`~minnet.optim.optimizer.Optimizer`'s; its state dict also stores each parameter's
    ``"step"`` (PyTorch's SGD keeps none).

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        momentum: momentum factor, ``>= 0``. Default ``0``.
        dampening: dampening of the gradient's weight in the buffer. Default ``0``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        maximize: maximize the objective (ascend the gradient). Default ``False``.
        track_stats: record :class:`~minnet.optim.optimizer.OptimizerStats` in every step
            (over 16-bit buffers also ``lost_updates``: coordinates whose update rounded away).
        check_finite: refuse a step that would make a parameter NaN or infinite.
        state_dtype: the momentum buffer's dtype (``None``: the parameter's); see
            :class:`~minnet.optim.optimizer.Optimizer`.
        rounding: ``"fused"`` (default) or ``"per_op"`` for 16-bit buffers (module
            docstring): fused is PyTorch's ``fused=True`` formula, per_op its default
            single-tensor loop on half tensors.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        track_stats: bool = False,
        check_finite: bool = False,
        state_dtype: Any = None,
        rounding: str = "fused",
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(
            params, defaults, track_stats=track_stats, check_finite=check_finite,
            state_dtype=state_dtype, rounding=rounding,
        )  # fmt: skip

    _supports_lowp = True

    def _validate(self, group: Mapping[str, Any]) -> dict[str, Any]:
        lr = check_lr(group["lr"])
        momentum = check_momentum(group["momentum"])
        weight_decay = check_weight_decay(group["weight_decay"])
        dampening = check_real("dampening", group["dampening"])
        if not math.isfinite(dampening):
            raise ValueError(f"Invalid dampening value: {group['dampening']}")
        nesterov = check_bool("nesterov", group["nesterov"])
        maximize = check_bool("maximize", group["maximize"])
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        return {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if group["momentum"] != 0 else {}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> SGDScalars:
        return sgd_scalars(
            dtype,
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            step=step,
        )

    def _kernel(
        self,
        group: Mapping[str, Any],
        track: bool,
        write: bool,
        formats: StorageFormats | None = None,
    ) -> Callable[..., Any]:
        args = (group["momentum"] != 0, group["nesterov"], track, write)
        if formats is None:
            return sgd_kernel_for(*args)
        return sgd_lowp_kernel_for(*args, formats)

    def _reference(
        self, group: Mapping[str, Any], formats: StorageFormats | None = None
    ) -> Callable[..., None]:
        nesterov = group["nesterov"]

        def reference(param, grad, *rest):  # type: ignore[no-untyped-def]
            buf, scalars = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
            if formats is None:
                sgd_step_reference(param, grad, buf, scalars, nesterov)
            else:
                sgd_step_reference_lowp(param, grad, buf, scalars, nesterov, formats.rounding)

        return reference

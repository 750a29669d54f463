r"""Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"): the
class, its shaped update and a plain-NumPy reference, side by side. PyTorch 2.13's
``torch.optim.Muon``.

SGD momentum (Nesterov by default) whose direction is *orthogonalized* per matrix: a quintic
Newton-Schulz iteration maps the momentum ``G`` (scaled to a Frobenius norm of at most 1) to
about ``U V^T`` of its SVD, every singular value near 1. The iteration needs the parameter's
matrix shape and matrix products, so the update is a shaped one (:mod:`minnet.optim._shaped`):
NumPy over each parameter's views of the flat buffers, three BLAS products per iteration
(``X @ X.T``, ``A @ A``, ``B @ X`` on the wide orientation of the matrix).

**Where the iteration computes.** PyTorch runs it in bfloat16 whatever the parameter's dtype
(``grad.bfloat16()``); minnet runs it in the parameter's dtype by default (float32 for 16-bit
storage) and in PyTorch's bfloat16 with ``ns_dtype="bfloat16"``: every product and sum of the
iteration is computed in float32 from bfloat16 inputs and rounded to bfloat16, as PyTorch's
CPU ``mm``/``addmm`` round their float32 results (the float32 sums' order is BLAS's, not
PyTorch's, so an occasional element rounds to the neighbouring bfloat16: the fixtures measure
the gap). The bfloat16 iteration is ~3 significant digits: its orthogonalized direction differs
from the float64 one by ~1e-2 relative (tests/test_muon.py measures it).

PyTorch's Muon takes only 2-D parameters (a ``ValueError`` for any other, as PyTorch): biases,
norms and embeddings go to another optimizer (a second optimizer over those parameters).

16-bit storage: ``rounding="fused"`` computes the step in float32 (the iteration in float32, or
bfloat16 with ``ns_dtype``) and rounds each stored value once; ``rounding="per_op"`` is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.dtypes import load_bfloat16
from minnet.nn import Parameter
from minnet.optim.optimizer import (
    Optimizer,
    TorchOptions,
    cast_scalars,
    check_choice,
    check_eps,
    check_lr,
    check_momentum,
    check_real,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Muon", "newton_schulz"]

#: PyTorch's ``adjust_lr_fn`` values (``None`` is ``"original"``).
ADJUST_LR_FNS = ("original", "match_rms_adamw")
#: The dtypes of the Newton-Schulz iteration: ``None`` (the compute dtype) or PyTorch's.
NS_DTYPES = (None, "bfloat16")


class MuonScalars(NamedTuple):
    """Per-step constants of the Muon update, already in the arrays' dtype."""

    w: np.floating  # the momentum lerp's weight, 1 - momentum
    one_minus_w: np.floating  # 1 - (1 - momentum), as PyTorch's lerp computes it
    momentum: np.floating  # the Nesterov lerp's weight
    one_minus_momentum: np.floating
    eps: np.floating
    lr: np.floating
    decay: np.floating  # 1 - lr * weight_decay


def _lerp(a: np.ndarray, end: np.ndarray, w: Any, one_minus_w: Any, out: np.ndarray) -> None:
    """PyTorch's ``lerp(a, end, w)`` into ``out``: ``a + w * (end - a)`` for ``w < 0.5``,
    else ``end - (end - a) * (1 - w)``."""
    np.subtract(end, a, out=out)
    if w < 0.5:
        out *= w
        out += a
    else:
        out *= one_minus_w
        np.subtract(end, out, out=out)


def _bf16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bfloat16 (round to nearest even), as float32."""
    return x.astype(load_bfloat16()).astype(np.float32)


def newton_schulz(
    g: np.ndarray, coefficients: tuple[float, float, float], steps: int, eps: float,
    bfloat16: bool = False,
) -> np.ndarray:  # fmt: skip
    """PyTorch's ``_zeropower_via_newtonschulz``: ``X = G / max(||G||_F, eps)`` on the wide
    orientation (``G.T`` if it has more rows than columns), then ``steps`` times ``A = X X^T;
    B = b A + c A A; X = a X + B X``, transposed back. In ``g``'s dtype, or with ``bfloat16``
    PyTorch's bfloat16 arithmetic (each product and sum in float32, rounded to bfloat16)."""
    a, b, c = coefficients
    tall = g.shape[0] > g.shape[1]
    if bfloat16:
        x = _bf16(g.astype(np.float32))
        x = x.T if tall else x
        norm = _bf16(np.array(math.sqrt(float(np.dot(x.ravel(), x.ravel())))))
        x = _bf16(x / np.float32(max(float(norm), float(_bf16(np.array(eps))))))
        for _ in range(steps):
            gram = _bf16(x @ x.T)
            update = _bf16(np.float32(b) * gram + np.float32(c) * (gram @ gram))
            x = _bf16(np.float32(a) * x + update @ x)
        return np.ascontiguousarray(x.T) if tall else x
    x = g.T if tall else g
    x = x / max(math.sqrt(float(np.dot(x.ravel(), x.ravel()))), eps)
    for _ in range(steps):
        gram = x @ x.T
        update = b * gram + c * (gram @ gram)
        x = a * x + update @ x
    return np.ascontiguousarray(x.T) if tall else x


def adjusted_ratio(shape: tuple[int, ...], adjust: str | None) -> float:
    """PyTorch's ``_adjust_lr`` factor: ``sqrt(max(1, A / B))`` (``"original"``, ``None``) or
    ``0.2 * sqrt(max(A, B))`` (``"match_rms_adamw"``) for a parameter of shape ``(A, B)``."""
    rows, cols = shape[:2]
    if adjust == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def update(p, g, state, s, o, work, track) -> int:  # type: ignore[no-untyped-def]
    """One parameter, shaped (:mod:`minnet.optim._shaped`'s contract), in place: ``o =
    (nesterov, ns_coefficients, ns_steps, adjust_lr_fn, bfloat16)``. Returns the coordinates
    whose momentum's norm is at most eps (the whole matrix, or nothing), with ``track``."""
    nesterov, coefficients, steps, adjust, bfloat16 = o
    buf = state[0]
    _lerp(buf, g, s.w, s.one_minus_w, out=work)  # buf.lerp_(grad, 1 - momentum)
    buf[...] = work
    if nesterov:
        _lerp(g, buf, s.momentum, s.one_minus_momentum, out=work)  # grad.lerp(buf, momentum)
        u = work
    else:
        u = buf
    shape = u.shape if u.ndim == 2 else (1, u.size)  # (the family's table drives vectors)
    u2 = u.reshape(shape)
    eps = float(s.eps)
    dominated = 0
    if track:
        dominated = u.size if math.sqrt(float(np.dot(u2.ravel(), u2.ravel()))) <= eps else 0
    x = newton_schulz(u2, coefficients, steps, eps, bfloat16)
    ratio = adjusted_ratio(shape, adjust)
    p *= s.decay
    x = x.astype(p.dtype, copy=False).reshape(p.shape)
    x *= -float(s.lr) * ratio
    p += x
    return dominated


def muon_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: MuonScalars, o: tuple,
    bounds: Any = None, shapes: Any = None,
) -> None:  # fmt: skip
    """The same update, in place over flat arrays, written from PyTorch's ``_single_tensor_muon``
    line by line: tensor ``j`` is ``[bounds[j], bounds[j + 1])`` with shape ``shapes[j]``
    (``None``: one row vector)."""
    nesterov, coefficients, steps, adjust, bfloat16 = o
    edges = [0, param.size] if bounds is None else [int(b) for b in bounds]
    shapes = [(1, hi - lo) for lo, hi in zip(edges[:-1], edges[1:])] if shapes is None else shapes
    for (lo, hi), shape in zip(zip(edges[:-1], edges[1:]), shapes):
        p = param[lo:hi].reshape(shape)
        g = grad[lo:hi].reshape(shape)
        buf = state[0][lo:hi].reshape(shape)
        with np.errstate(all="ignore"):
            w, momentum = float(s.w), float(s.momentum)
            buf[...] = buf + w * (g - buf) if w < 0.5 else g - (g - buf) * float(s.one_minus_w)
            if nesterov:
                if momentum < 0.5:
                    u = g + momentum * (buf - g)
                else:
                    u = buf - (buf - g) * float(s.one_minus_momentum)
            else:
                u = buf
            x = newton_schulz(u, coefficients, steps, float(s.eps), bfloat16)
            p *= float(s.decay)
            p -= float(s.lr) * adjusted_ratio(shape, adjust) * x.astype(p.dtype)


def check_ns_coefficients(value: object) -> tuple[float, float, float]:
    """Three real numbers (PyTorch's ``Coefficients must be a tuple of exactly 3 values``)."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = (check_real(f"ns_coefficients[{i}]", v) for i, v in enumerate(value))
    return (a, b, c)


def check_ns_steps(value: object) -> int:
    """An int in ``[0, 100)`` (PyTorch's ``Number of steps must be less than 100 ...``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"ns_steps must be an int, got {value!r}")
    if not 0 <= value:
        raise ValueError(f"Invalid ns_steps value: {value}")
    if value >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    return int(value)


def check_adjust_lr_fn(value: object) -> str | None:
    """``None``, ``"original"`` or ``"match_rms_adamw"`` (PyTorch's message)."""
    if value is not None and value not in ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {value} is not supported")
    return value  # type: ignore[return-value]


def check_ns_dtype(value: object) -> str | None:
    """``None`` or ``"bfloat16"``."""
    if value is None:
        return None
    return check_choice("ns_dtype", value, ("bfloat16",))


class Muon(Optimizer):
    r"""Muon with PyTorch 2.13's exact semantics (``torch.optim.Muon``), the Newton-Schulz
    iteration in the parameter's dtype (default) or in PyTorch's bfloat16 (``ns_dtype``).

    For each 2-D parameter ``W`` of shape ``(A, B)``, with ``buf`` (``momentum_buffer``)
    starting at 0:

    .. code-block:: text

        buf = buf.lerp(g, 1 - momentum)                = momentum * buf + (1 - momentum) * g
        u   = g.lerp(buf, momentum) if nesterov else buf
        X   = u (u.T if A > B);  X = X / max(||X||_F, eps)
        ns_steps times:  G = X @ X.T;  X = a * X + (b * G + c * G @ G) @ X
        O   = X (X.T if A > B)                          (about U V^T of u's SVD)
        W   = W * (1 - lr * weight_decay)
        W   = W - lr * ratio * O,   ratio = sqrt(max(1, A / B))         (adjust_lr_fn=None,
                                                                         "original")
                                    ratio = 0.2 * sqrt(max(A, B))       ("match_rms_adamw")

    **eps** (default 1e-7) is a **floor** on the Frobenius norm of the momentum direction,
    ``max(||u||, eps)``, before the iteration: it only matters where ``||u|| < eps``, a matrix
    whose gradients have been (nearly) 0, and keeps ``0 / 0`` away (with ``eps=0`` such a
    matrix's update is NaN). Keras 3 (``keras.optimizers.Muon``: eps 1e-7 *added* to the norm,
    no ``1 - momentum`` factor, lr scaled by ``0.2 * sqrt(max(A, B))``, AdamW for every
    non-matrix parameter) and optax (``optax.contrib.muon``: eps 1e-8 added) are not modelled
    (see the README).

    Defaults are PyTorch's: ``Muon(lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
    ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None)``.

    Args:
        params: iterable of 2-D :class:`minnet.nn.Parameter`, or of dicts defining groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        weight_decay: decoupled, ``W *= 1 - lr * weight_decay``, ``>= 0``. Default ``0.1``.
        momentum: ``>= 0``. Default ``0.95``.
        nesterov: Nesterov's momentum. Default ``True``.
        ns_coefficients: ``(a, b, c)`` of the quintic iteration.
        eps: the floor of the momentum's norm, ``>= 0``. Default ``1e-7``.
        ns_steps: iterations, ``0 <= ns_steps < 100``. Default ``5``.
        adjust_lr_fn: ``None``/``"original"`` or ``"match_rms_adamw"`` (above).
        ns_dtype: ``None`` (default): the iteration in the parameter's dtype (float32 for
            16-bit storage); ``"bfloat16"``: PyTorch's bfloat16 iteration.
        foreach: PyTorch's switch, accepted and ignored.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default); ``"per_op"`` with 16-bit buffers raises ``ValueError``.

    Raises:
        ValueError: on an invalid hyperparameter (NaN is rejected), or a parameter that is not
            2-D (PyTorch's message).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        ns_dtype: str | None = None,
        **options: Unpack[TorchOptions],
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                        adjust_lr_fn=adjust_lr_fn, ns_dtype=ns_dtype)  # fmt: skip
        super().__init__(params, defaults, **options)

    shaped = staticmethod(update)
    reference = staticmethod(muon_reference)
    checks = {"lr": check_lr, "momentum": check_momentum, "weight_decay": check_weight_decay,
              "adjust_lr_fn": check_adjust_lr_fn, "ns_coefficients": check_ns_coefficients,
              "eps": check_eps, "ns_steps": check_ns_steps,
              "ns_dtype": check_ns_dtype}  # fmt: skip
    _load_optional = ("ns_dtype",)

    def _prepare_group(self, param_group: Any, seen: set[int]) -> dict[str, Any]:
        group = super()._prepare_group(param_group, seen)
        for p in group["params"]:
            if p.data.ndim != 2:
                raise ValueError("Muon only supports 2D parameters whereas we found a parameter "
                                 f"with size: {tuple(p.data.shape)}")  # fmt: skip
        return group

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"momentum_buffer": 0.0}

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (group["nesterov"], tuple(group["ns_coefficients"]), group["ns_steps"],
                group["adjust_lr_fn"], group["ns_dtype"] == "bfloat16")  # fmt: skip

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> MuonScalars:
        m, lr = group["momentum"], group["lr"]
        w = 1.0 - m
        return cast_scalars(MuonScalars, dtype, w, 1.0 - w, m, 1.0 - m, group["eps"], lr,
                            1.0 - lr * group["weight_decay"])  # fmt: skip

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        return (
            "Muon: rounding='per_op' rounds every op in the order of PyTorch's for-loop "
            "implementation, which minnet does not model for Muon; use rounding='fused' (and "
            "ns_dtype='bfloat16' for PyTorch's bfloat16 iteration)"
        )

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"||u||_F (a floor)"``: eps floors the momentum direction's Frobenius norm."""
        return "||u||_F (a floor)"

    def _multipliers(
        self, group: Mapping[str, Any], state: dict[str, np.ndarray], step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``1 / max(||buf||_F, eps)`` (float64) over the parameter: the scale the iteration's
        input gets (from the momentum buffer; the Nesterov direction also needs the gradient)."""
        buf = state["momentum_buffer"].astype(np.float64)
        norm = float(np.linalg.norm(buf))
        with np.errstate(divide="ignore"):
            return np.full(buf.shape, 1.0 / max(norm, group["eps"]))

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        """eps = 0 with a zero momentum: ``0 / 0`` before the iteration."""
        if group["eps"] == 0 and not np.any(state["momentum_buffer"]) and not np.any(grad):
            return (f"eps=0 and the momentum of {name} is 0, so the iteration's input is 0/0 = "
                    "NaN; use eps > 0")  # fmt: skip
        return None

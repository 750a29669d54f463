"""Optimizers. ``Adam`` validates its arguments, owns the flat state buffers and calls the kernel.

The math lives in :mod:`minnet._kernels`; this module is the thin class around it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from minnet._kernels import adam_scalars, adam_step_numba
from minnet.nn import Parameter

__all__ = ["Adam"]


def _is_real_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _real(name: str, value: object) -> float:
    if not _is_real_number(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}: {value!r}")
    return float(value)  # type: ignore[arg-type]


def validate_adam_hyperparameters(
    lr: object, betas: object, eps: object, weight_decay: object, amsgrad: object
) -> dict[str, Any]:
    """Check Adam's hyperparameters as PyTorch does (same messages) and return them as floats.

    Comparisons are written ``not 0.0 <= x`` so that NaN fails them. Wrong types raise
    ``TypeError``; out-of-range values raise ``ValueError``.
    """
    lr_f = _real("lr", lr)
    if not 0.0 <= lr_f:
        raise ValueError(f"Invalid learning rate: {lr}")
    eps_f = _real("eps", eps)
    if not 0.0 <= eps_f:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2) of floats, got {betas!r}")
    b = (_real("betas[0]", betas[0]), _real("betas[1]", betas[1]))
    for i in (0, 1):
        if not 0.0 <= b[i] < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
    wd_f = _real("weight_decay", weight_decay)
    if not 0.0 <= wd_f:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if not isinstance(amsgrad, (bool, np.bool_)):
        raise TypeError(f"amsgrad must be a bool, got {type(amsgrad).__name__}: {amsgrad!r}")
    return {"lr": lr_f, "betas": b, "eps": eps_f, "weight_decay": wd_f, "amsgrad": bool(amsgrad)}


class _FlatGroup:
    """Every parameter of one dtype, packed into contiguous buffers.

    ``data``, ``grad``, ``exp_avg`` (V_dw), ``exp_avg_sq`` (S_dw) and ``max_exp_avg_sq`` are 1-D
    arrays; parameter ``i`` occupies ``[offsets[i], offsets[i] + sizes[i])`` of each, and its
    ``.data`` / ``.grad`` are reshaped views of those slices.
    """

    def __init__(self, params: list[Parameter], dtype: np.dtype, amsgrad: bool) -> None:
        self.params = params
        self.dtype = dtype
        self.sizes = [p.data.size for p in params]
        self.offsets = [0]
        for size in self.sizes[:-1]:
            self.offsets.append(self.offsets[-1] + size)
        total = sum(self.sizes)
        self.data = np.empty(total, dtype=dtype)
        self.grad = np.empty(total, dtype=dtype)
        self.exp_avg = np.zeros(total, dtype=dtype)
        self.exp_avg_sq = np.zeros(total, dtype=dtype)
        self.max_exp_avg_sq = np.zeros(total if amsgrad else 0, dtype=dtype)
        for p, off, size in zip(params, self.offsets, self.sizes):
            data_view = self.data[off : off + size].reshape(p.data.shape)
            grad_view = self.grad[off : off + size].reshape(p.data.shape)
            data_view[...] = p.data
            grad_view[...] = p.grad
            p.data = data_view
            p.grad = grad_view
        self._data_views = [p.data for p in params]
        self._grad_views = [p.grad for p in params]

    def check_bound(self) -> None:
        """Raise if a parameter's ``.data`` or ``.grad`` no longer views this group's buffers."""
        for p, d, g in zip(self.params, self._data_views, self._grad_views):
            if p.data is not d or p.grad is not g:
                which = ".data" if p.data is not d else ".grad"
                raise RuntimeError(
                    f"Adam: parameter {p.name or '?'} {which} was replaced by another array, so "
                    "the optimizer no longer sees it. Write values in place "
                    "(p.data[...] = x), or create the optimizer after the replacement; a "
                    "parameter can belong to only one optimizer."
                )

    def slices(self, name: str) -> list[np.ndarray]:
        buf = getattr(self, name)
        return [
            buf[off : off + size].reshape(p.data.shape)
            for p, off, size in zip(self.params, self.offsets, self.sizes)
        ]


class Adam:
    r"""Adam and AMSGrad with PyTorch's exact semantics, as one fused Numba kernel.

    With ``t`` the step count (1 on the first call of :meth:`step`), ``g`` the gradient,
    ``V_dw``/``exp_avg`` and ``S_dw``/``exp_avg_sq`` the moments (both start at zero):

    .. code-block:: text

        g      = g + weight_decay * param            (L2 penalty folded into the gradient)
        V_dw   = beta1 * V_dw + (1 - beta1) * g      (computed as PyTorch's lerp)
        S_dw   = beta2 * S_dw + (1 - beta2) * g**2
        V_hat  = V_dw / (1 - beta1**t)
        S_hat  = S_dw / (1 - beta2**t)                              (Adam)
        S_hat  = max(S_dw over steps 1..t) / (1 - beta2**t)         (amsgrad=True: the running
                                                                     max of the *raw* S_dw,
                                                                     corrected by step t's
                                                                     bias correction)
        param  = param - lr * V_hat / (sqrt(S_hat) + eps)

    ``eps`` sits *outside* the square root and is added *after* bias correction. With ``eps=0``
    a coordinate whose gradient has always been zero gets 0/0 = NaN, exactly as in PyTorch.

    On construction every parameter is copied into one contiguous buffer per dtype, and each
    parameter's ``.data`` and ``.grad`` become views into it: one kernel call then updates the
    whole model. Keep using ``p.data`` (write values in place with ``p.data[...] = x``); an array
    you fetched before creating the optimizer is no longer the parameter.

    Difference from PyTorch: gradients are arrays that :meth:`zero_grad` fills with zeros (never
    ``None``), so a parameter that got no gradient in a step still takes that step with ``g = 0``.

    Args:
        params: iterable of :class:`minnet.nn.Parameter` (e.g. ``model.parameters()``).
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
        eps: added to the denominator, ``>= 0``. Default ``1e-8``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        amsgrad: use AMSGrad's running max of the second moment. Default ``False``.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message (NaN is rejected).
        TypeError: on a hyperparameter of the wrong type.
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        hp = validate_adam_hyperparameters(lr, betas, eps, weight_decay, amsgrad)
        self.lr: float = hp["lr"]
        self.betas: tuple[float, float] = hp["betas"]
        self.eps: float = hp["eps"]
        self.weight_decay: float = hp["weight_decay"]
        self.amsgrad: bool = hp["amsgrad"]
        if isinstance(params, Parameter):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Parameters, "
                "got a single Parameter; wrap it in a list"
            )
        plist = list(params)
        if not plist:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(plist):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"optimizer can only optimize minnet.nn.Parameter objects, but element {i} "
                    f"is {type(p).__name__}"
                )
        if len({id(p) for p in plist}) != len(plist):
            raise ValueError("some parameters appear more than once in the parameter list")
        self.params: list[Parameter] = plist
        self.step_count = 0
        by_dtype: dict[np.dtype, list[Parameter]] = {}
        for p in plist:
            by_dtype.setdefault(p.data.dtype, []).append(p)
        self._groups = [_FlatGroup(ps, dt, self.amsgrad) for dt, ps in by_dtype.items()]

    def zero_grad(self) -> None:
        """Set every gradient to zero (one fill per flat buffer)."""
        for group in self._groups:
            group.grad.fill(0)

    def step(self) -> None:
        """Apply one Adam/AMSGrad update to every parameter, in place."""
        for group in self._groups:
            group.check_bound()
        self.step_count += 1
        beta1, beta2 = self.betas
        for group in self._groups:
            s = adam_scalars(
                group.dtype,
                lr=self.lr,
                beta1=beta1,
                beta2=beta2,
                eps=self.eps,
                weight_decay=self.weight_decay,
                step=self.step_count,
            )
            adam_step_numba(
                group.data,
                group.grad,
                group.exp_avg,
                group.exp_avg_sq,
                group.max_exp_avg_sq,
                *s,
                self.amsgrad,
            )

    # -- state ------------------------------------------------------------------------------

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "amsgrad": self.amsgrad,
        }

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state in PyTorch's layout, as copies.

        ``{"state": {i: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}},
        "param_groups": [{"lr", "betas", "eps", "weight_decay", "amsgrad", "params": [0..n-1]}]}``
        where ``i`` is the parameter's position in the list given to the constructor. Before the
        first step ``"state"`` is empty, as in PyTorch.
        """
        state: dict[int, dict[str, Any]] = {}
        if self.step_count > 0:
            index = {id(p): i for i, p in enumerate(self.params)}
            for group in self._groups:
                names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if self.amsgrad else [])
                per_buffer = {name: group.slices(name) for name in names}
                for j, p in enumerate(group.params):
                    entry: dict[str, Any] = {"step": float(self.step_count)}
                    for name in names:
                        entry[name] = per_buffer[name][j].copy()
                    state[index[id(p)]] = entry
        group_dict = self._hyperparameters()
        group_dict["params"] = list(range(len(self.params)))
        return {"state": state, "param_groups": [group_dict]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`: hyperparameters, step counter and moments.

        Everything is checked before anything is written, so a bad dict leaves the optimizer as
        it was. Raises ``ValueError`` naming what does not fit.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(
                f"Adam.load_state_dict expects keys ['param_groups', 'state'], got {got}"
            )
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1:
            raise ValueError("Adam.load_state_dict expects exactly one param group")
        group = dict(groups[0])
        n_params = len(self.params)
        indices = list(group.get("params", []))
        if indices != list(range(n_params)):
            raise ValueError(
                f"loaded state dict has {len(indices)} parameters, this optimizer has {n_params}"
            )
        names = ("lr", "betas", "eps", "weight_decay", "amsgrad")
        missing = [k for k in names if k not in group]
        if missing:
            raise ValueError(f"loaded param group lacks {missing}")
        hp = validate_adam_hyperparameters(*(group[k] for k in names))
        if hp["amsgrad"] != self.amsgrad:
            raise ValueError(
                f"loaded state has amsgrad={hp['amsgrad']} but this optimizer has "
                f"amsgrad={self.amsgrad}; create the optimizer with the same setting"
            )
        state = state_dict["state"]
        buffers = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if self.amsgrad else [])
        step = 0
        if state:
            keys = sorted(int(k) for k in state)
            if keys != list(range(n_params)):
                raise ValueError(
                    f"loaded state has entries for parameters {keys}, expected 0..{n_params - 1}"
                )
            state = {int(k): v for k, v in state.items()}
            steps = {float(entry["step"]) for entry in state.values()}
            if len(steps) != 1:
                raise ValueError(f"loaded state has different step counts: {sorted(steps)}")
            step_f = steps.pop()
            if not (step_f >= 0 and step_f == math.floor(step_f)):
                raise ValueError(f"loaded step count must be a non-negative integer, got {step_f}")
            step = int(step_f)
            for i, p in enumerate(self.params):
                for name in buffers:
                    if name not in state[i]:
                        raise ValueError(f"loaded state for parameter {i} lacks '{name}'")
                    shape = np.shape(state[i][name])
                    if shape != p.data.shape:
                        raise ValueError(
                            f"loaded state '{name}' for parameter {i} ({p.name or '?'}) has "
                            f"shape {shape}, expected {p.data.shape}"
                        )
        # Every check passed: write.
        self.lr, self.betas, self.eps = hp["lr"], hp["betas"], hp["eps"]
        self.weight_decay = hp["weight_decay"]
        self.step_count = step
        index = {id(p): i for i, p in enumerate(self.params)}
        for group_buffers in self._groups:
            for name in buffers:
                for p, view in zip(group_buffers.params, group_buffers.slices(name)):
                    view[...] = state[index[id(p)]][name] if step else 0

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self._hyperparameters().items())
        return f"Adam({hp})"

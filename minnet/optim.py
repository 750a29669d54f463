"""Optimizers. ``Adam`` validates its arguments, owns the flat state buffers and calls the kernel.

The math lives in :mod:`minnet._kernels`; this module is the thin class around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from minnet._kernels import (
    AMSGRAD_MAX_MODES,
    EPS_MODES,
    adam_scalars,
    adam_step_numba,
    ams_kind,
)
from minnet.nn import Parameter

__all__ = ["Adam", "AdamStats", "EPS_MODES", "AMSGRAD_MAX_MODES"]


def _is_real_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _real(name: str, value: object) -> float:
    if not _is_real_number(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}: {value!r}")
    return float(value)  # type: ignore[arg-type]


def validate_adam_hyperparameters(
    lr: object,
    betas: object,
    eps: object,
    weight_decay: object,
    amsgrad: object,
    eps_mode: object = "outside",
    amsgrad_max: object = "raw",
) -> dict[str, Any]:
    """Check Adam's hyperparameters as PyTorch does (same messages) and return them normalized.

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
    if eps_mode not in EPS_MODES:
        raise ValueError(f"Invalid eps_mode: {eps_mode!r}; expected one of {EPS_MODES}")
    if amsgrad_max not in AMSGRAD_MAX_MODES:
        raise ValueError(
            f"Invalid amsgrad_max: {amsgrad_max!r}; expected one of {AMSGRAD_MAX_MODES}"
        )
    if amsgrad_max != "raw" and not amsgrad:
        raise ValueError(f"amsgrad_max={amsgrad_max!r} needs amsgrad=True")
    return {
        "lr": lr_f,
        "betas": b,
        "eps": eps_f,
        "weight_decay": wd_f,
        "amsgrad": bool(amsgrad),
        "eps_mode": str(eps_mode),
        "amsgrad_max": str(amsgrad_max),
    }


_GROUP_KEYS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "eps_mode", "amsgrad_max")


class _GroupOption:
    """An ``Adam`` hyperparameter kept in ``param_groups[0]``, validated on assignment."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.param_groups[0][self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj._set_hyperparameter(self.name, value)


class AdamStats(NamedTuple):
    """What ``Adam(track_stats=True)`` measured during its latest step, in the same kernel pass.

    ``eps_dominated`` is the fraction of coordinates whose eps term is at least the second-moment
    term it is added to (``eps >= sqrt(S_hat)`` for "outside", ``eps >= sqrt(S_dw)`` uncorrected
    for "hat", ``eps >= S_hat`` for "inside", never for "atan2"); ``nonfinite`` counts parameters
    that are NaN or infinite after the step; ``update_rms`` is ``sqrt(mean(delta**2))`` of the
    applied update over all ``n_params`` coordinates.
    """

    step: int
    eps_dominated: float
    nonfinite: int
    update_rms: float
    n_params: int


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
    ``V_dw``/``exp_avg`` and ``S_dw``/``exp_avg_sq`` the moments (both start at zero), the
    default (``eps_mode="outside"``, ``amsgrad_max="raw"``) is PyTorch's ``torch.optim.Adam``:

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

    The epsilon lab's variants change only where eps goes and how the AMSGrad max is kept:

    .. code-block:: text

        eps_mode="hat"      param -= lr*sqrt(1-beta2**t)/(1-beta1**t) * V_dw / (sqrt(S_dw) + eps)
                            (TensorFlow/Keras "epsilon hat": eps added before bias correction)
        eps_mode="inside"   param -= lr * V_hat / sqrt(S_hat + eps)     (optax eps_root, eps=0)
        eps_mode="atan2"    param -= 1.27 * lr * atan2(V_hat, sqrt(S_hat))   (Adam-atan2; eps
                            unused. The adam-atan2-pytorch package defaults to betas=(0.9, 0.99)
                            and decays weights decoupled (AdamW-style); here weight_decay
                            stays the L2 term above, so pass betas explicitly to compare)
        amsgrad_max="corrected"  S_max = max(S_max, S_hat_t); S_hat = S_max       (optax)
        amsgrad_max="paper"      S_max = max(S_max, S_dw); S_hat = S_max, V_hat = V_dw: no bias
                                 correction at all (Reddi et al. 2018, Algorithm 2; optax's
                                 amsgrad with bias_correction_mu=bias_correction_nu=False)

    On construction every parameter is copied into one contiguous buffer per dtype, and each
    parameter's ``.data`` and ``.grad`` become views into it: one kernel call then updates the
    whole model. Keep using ``p.data`` (write values in place with ``p.data[...] = x``); an array
    you fetched before creating the optimizer is no longer the parameter.

    Hyperparameters live in ``param_groups[0]`` as in PyTorch, so a schedule written
    ``for g in optimizer.param_groups: g["lr"] = x`` works; so does ``optimizer.lr = x``. Either
    way the value is validated (on assignment, or at the next :meth:`step`). One group only:
    ``params`` may be PyTorch's ``[{"params": ..., "lr": ...}]`` with a single dict.

    Difference from PyTorch: gradients are arrays that :meth:`zero_grad` fills with zeros (never
    ``None``), so a parameter that got no gradient in a step still takes that step with ``g = 0``.

    Args:
        params: iterable of :class:`minnet.nn.Parameter` (e.g. ``model.parameters()``).
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``. Default ``(0.9, 0.999)``.
        eps: added to the denominator, ``>= 0``. Default ``1e-8``.
        weight_decay: L2 penalty, ``>= 0``. Default ``0``.
        amsgrad: use AMSGrad's running max of the second moment. Default ``False``.
        eps_mode: ``"outside"`` (default), ``"hat"``, ``"inside"`` or ``"atan2"``.
        amsgrad_max: ``"raw"`` (default), ``"corrected"`` or ``"paper"``; needs ``amsgrad``.
        track_stats: record :class:`AdamStats` in every step (read ``optimizer.stats``).
        check_finite: refuse a step that would make a parameter NaN or infinite: raise
            ``FloatingPointError`` and leave parameters and state as they were. Costs one extra
            read-only pass over the buffers; off by default (PyTorch lets NaN through).

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
        *,
        eps_mode: str = "outside",
        amsgrad_max: str = "raw",
        track_stats: bool = False,
        check_finite: bool = False,
    ) -> None:
        given = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                 "amsgrad": amsgrad, "eps_mode": eps_mode, "amsgrad_max": amsgrad_max}  # fmt: skip
        params = self._one_group(params, given)
        hp = validate_adam_hyperparameters(*(given[k] for k in _GROUP_KEYS))
        for name, flag in (("track_stats", track_stats), ("check_finite", check_finite)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}: {flag!r}")
        self.track_stats = bool(track_stats)
        self.check_finite = bool(check_finite)
        self.stats: AdamStats | None = None
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
            if p.data.dtype not in (np.float32, np.float64) or p.grad.dtype != p.data.dtype:
                raise TypeError(
                    f"Adam: parameter {i} ({p.name or '?'}) has data of dtype {p.data.dtype} and "
                    f"grad of dtype {p.grad.dtype}; both must be float32 or both float64"
                )
            if p.grad.shape != p.data.shape:
                raise ValueError(
                    f"Adam: parameter {i} ({p.name or '?'}) has grad of shape {p.grad.shape}, "
                    f"expected its data's shape {p.data.shape}"
                )
        if len({id(p) for p in plist}) != len(plist):
            raise ValueError("some parameters appear more than once in the parameter list")
        self.params: list[Parameter] = plist
        #: PyTorch's layout, one group: ``optimizer.param_groups[0]["lr"] = x`` works as there
        #: (the next ``step()`` validates any change).
        self.param_groups: list[dict[str, Any]] = [{"params": plist, **hp}]
        self._checked = self._hyperparameter_key()
        self.step_count = 0
        by_dtype: dict[np.dtype, list[Parameter]] = {}
        for p in plist:
            by_dtype.setdefault(p.data.dtype, []).append(p)
        self._groups = [_FlatGroup(ps, dt, self.amsgrad) for dt, ps in by_dtype.items()]
        # Holds each coordinate's update while stats are summed (tracked or checked steps only).
        self._scratch = [np.empty(0, g.dtype) for g in self._groups]

    @staticmethod
    def _one_group(params: Any, given: dict[str, Any]) -> Any:
        """Accept PyTorch's ``[{"params": ..., "lr": ...}]`` form for a single group: its options
        override ``given`` (the constructor's arguments); return the parameters."""
        if isinstance(params, dict):
            params = [params]
        if isinstance(params, (list, tuple)) and params and isinstance(params[0], dict):
            if len(params) != 1:
                raise ValueError(
                    f"minnet's Adam takes one parameter group, got {len(params)}; create one "
                    "optimizer per group"
                )
            group = dict(params[0])
            if "params" not in group:
                raise ValueError("a parameter group needs a 'params' entry")
            unknown = set(group) - {"params", *_GROUP_KEYS}
            if unknown:
                raise ValueError(f"unknown parameter group option(s): {sorted(unknown)}")
            for key in _GROUP_KEYS:
                if key in group:
                    given[key] = group[key]
            return group["params"]
        return params

    def _hyperparameter_key(self) -> tuple[Any, ...]:
        group = self.param_groups[0]
        return tuple(group[k] for k in _GROUP_KEYS)

    def _set_hyperparameter(self, name: str, value: Any) -> None:
        group = dict(self.param_groups[0])
        group[name] = value
        self._validate_group(group)

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Check a (possibly user-edited) group and store it normalized; amsgrad is fixed."""
        hp = validate_adam_hyperparameters(*(group[k] for k in _GROUP_KEYS))
        if hp["amsgrad"] != self._checked[_GROUP_KEYS.index("amsgrad")]:
            raise ValueError(
                "amsgrad cannot change after the optimizer is created (it decides which state "
                "buffers exist); create a new optimizer"
            )
        self.param_groups[0].update(hp)
        self._checked = self._hyperparameter_key()

    lr = _GroupOption()
    betas = _GroupOption()
    eps = _GroupOption()
    weight_decay = _GroupOption()
    amsgrad = _GroupOption()
    eps_mode = _GroupOption()
    amsgrad_max = _GroupOption()

    def zero_grad(self) -> None:
        """Set every gradient to zero (one fill per flat buffer)."""
        for group in self._groups:
            group.grad.fill(0)

    def _scalars(self, group: _FlatGroup, step: int) -> Any:
        return adam_scalars(
            group.dtype,
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            eps=self.eps,
            weight_decay=self.weight_decay,
            step=step,
            eps_mode=self.eps_mode,
            amsgrad=self.amsgrad,
            amsgrad_max=self.amsgrad_max,
        )

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply one update to every parameter, in place.

        ``closure``, as in PyTorch, is called first (it should recompute the loss and the
        gradients) and its value is returned.
        """
        loss = closure() if closure is not None else None
        if self._hyperparameter_key() != self._checked:
            self._validate_group(self.param_groups[0])
        for group in self._groups:
            group.check_bound()
        step = self.step_count + 1
        mode = EPS_MODES.index(self.eps_mode)
        ams = ams_kind(self.amsgrad, self.amsgrad_max)
        scalars = [self._scalars(group, step) for group in self._groups]
        track = self.track_stats
        if (track or self.check_finite) and self._scratch[0].size == 0:
            self._scratch = [np.empty_like(g.data) for g in self._groups]
        if self.check_finite:
            self._refuse_nonfinite(step, mode, ams, scalars)
        n_dominated = n_nonfinite = 0
        sum_sq = 0.0
        for group, scratch, s in zip(self._groups, self._scratch, scalars):
            counts = adam_step_numba(
                group.data, group.grad, group.exp_avg, group.exp_avg_sq, group.max_exp_avg_sq,
                scratch, s, mode, ams, track, True,
            )  # fmt: skip
            n_dominated += counts[0]
            n_nonfinite += counts[1]
            sum_sq += counts[2]
        self.step_count = step
        if track:
            n = sum(group.data.size for group in self._groups)
            self.stats = AdamStats(step, n_dominated / n, n_nonfinite, math.sqrt(sum_sq / n), n)
        return loss

    def _refuse_nonfinite(self, step: int, mode: int, ams: int, scalars: list[Any]) -> None:
        """Dry-run the step; if a parameter would end non-finite, raise and change nothing."""
        bad = []
        for group, scratch, s in zip(self._groups, self._scratch, scalars):
            counts = adam_step_numba(
                group.data, group.grad, group.exp_avg, group.exp_avg_sq, group.max_exp_avg_sq,
                scratch, s, mode, ams, True, False,
            )  # fmt: skip
            if counts[1] == 0:
                continue
            # Rare path: find which parameters, and why, one slice at a time.
            names = ("data", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
            for p, o, n in zip(group.params, group.offsets, group.sizes):
                args = [getattr(group, name)[o : o + n] for name in names]
                if not self.amsgrad:
                    args[-1] = group.max_exp_avg_sq  # empty
                n_bad = adam_step_numba(*args, scratch[:n], s, mode, ams, True, False)[1]
                if n_bad:
                    bad.append((p, n_bad, args))
        if not bad:
            return
        parts = []
        causes = set()
        for p, n_bad, (data, grad, _, exp_avg_sq, _) in bad:
            parts.append(f"{p.name or '?'} ({n_bad} of {p.data.size} elements)")
            if not np.isfinite(grad).all():
                causes.add(f"{p.name or '?'} has a NaN or infinite gradient")
            elif not np.isfinite(data).all():
                causes.add(f"{p.name or '?'} was already NaN or infinite before this step")
            elif (
                self.eps == 0
                and self.eps_mode != "atan2"
                and (((exp_avg_sq == 0) & (grad == 0)).any())
            ):
                causes.add(
                    f"eps=0 and some coordinates of {p.name or '?'} have only ever had zero "
                    "gradient (S_dw = 0), so their update is 0/0 = NaN; use eps > 0 or "
                    "eps_mode='atan2'"
                )
            else:
                causes.add(f"the update of {p.name or '?'} overflows; lower the learning rate")
        raise FloatingPointError(
            f"Adam (check_finite=True): step {step} would make parameters non-finite: "
            + ", ".join(parts)
            + ". Likely cause: "
            + "; ".join(sorted(causes))
            + ". Parameters and optimizer state are unchanged."
        )

    # -- state ------------------------------------------------------------------------------

    def _hyperparameters(self) -> dict[str, Any]:
        group = self.param_groups[0]
        return {k: group[k] for k in _GROUP_KEYS}

    def _moment_names(self) -> list[str]:
        """The per-parameter state buffers, in ``state_dict`` order."""
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if self.amsgrad else [])

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state in PyTorch's layout, as copies.

        ``{"state": {i: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}},
        "param_groups": [{"lr", "betas", "eps", "weight_decay", "amsgrad", "eps_mode",
        "amsgrad_max", "params": [0..n-1]}]}``
        where ``i`` is the parameter's position in the list given to the constructor. Before the
        first step ``"state"`` is empty, as in PyTorch.
        """
        state: dict[int, dict[str, Any]] = {}
        if self.step_count > 0:
            index = {id(p): i for i, p in enumerate(self.params)}
            for group in self._groups:
                names = self._moment_names()
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
        # PyTorch's state dicts have no eps_mode / amsgrad_max: they are the defaults.
        hp = validate_adam_hyperparameters(
            *(group[k] for k in names),
            group.get("eps_mode", "outside"),
            group.get("amsgrad_max", "raw"),
        )
        if hp["amsgrad"] != self.amsgrad:
            raise ValueError(
                f"loaded state has amsgrad={hp['amsgrad']} but this optimizer has "
                f"amsgrad={self.amsgrad}; create the optimizer with the same setting"
            )
        state = state_dict["state"]
        if not isinstance(state, dict):
            raise ValueError(f"loaded 'state' must be a dict, got {type(state).__name__}")
        buffers = self._moment_names()
        step = 0
        loaded: dict[tuple[int, str], np.ndarray] = {}  # converted copies, written only at the end
        if state:
            try:
                state = {int(k): v for k, v in state.items()}
            except (TypeError, ValueError):
                raise ValueError(
                    f"loaded state keys must be parameter indices, got {sorted(map(str, state))}"
                ) from None
            if sorted(state) != list(range(n_params)):
                raise ValueError(
                    f"loaded state has entries for parameters {sorted(state)}, "
                    f"expected 0..{n_params - 1}"
                )
            steps = set()
            for i, entry in state.items():
                if not isinstance(entry, dict) or "step" not in entry:
                    raise ValueError(f"loaded state for parameter {i} lacks 'step'")
                value = entry["step"]
                value = value.item() if isinstance(value, np.ndarray) and value.size == 1 else value
                if not _is_real_number(value) or not (
                    math.isfinite(value) and value >= 0 and float(value) == math.floor(value)
                ):
                    raise ValueError(
                        f"loaded step count for parameter {i} must be a non-negative integer, "
                        f"got {value!r}"
                    )
                steps.add(int(value))
            if len(steps) != 1:
                raise ValueError(f"loaded state has different step counts: {sorted(steps)}")
            step = steps.pop()
            for i, p in enumerate(self.params):
                for name in buffers:
                    if name not in state[i]:
                        raise ValueError(f"loaded state for parameter {i} lacks '{name}'")
                    arr = np.asarray(state[i][name])
                    where = f"loaded state '{name}' for parameter {i} ({p.name or '?'})"
                    if arr.dtype.kind not in "fiu":
                        raise ValueError(f"{where} has dtype {arr.dtype}, expected real numbers")
                    if arr.shape != p.data.shape:
                        raise ValueError(f"{where} has shape {arr.shape}, expected {p.data.shape}")
                    loaded[i, name] = arr.astype(p.data.dtype)
        # Every check passed: write.
        self.param_groups[0].update(hp)
        self._checked = self._hyperparameter_key()
        self.step_count = step
        self.stats = None
        index = {id(p): i for i, p in enumerate(self.params)}
        for group_buffers in self._groups:
            for name in buffers:
                for p, view in zip(group_buffers.params, group_buffers.slices(name)):
                    view[...] = loaded[index[id(p)], name] if step else 0

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self._hyperparameters().items())
        return f"Adam({hp})"

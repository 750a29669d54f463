r"""The base class of every minnet optimizer: parameter groups, flat buffers, state, checks.

:class:`Optimizer` owns everything generic, as ``torch.optim.Optimizer`` does: PyTorch's
``params`` argument (Parameters, or dicts that form parameter groups), ``defaults``,
``param_groups``, :meth:`~Optimizer.add_param_group`, :meth:`~Optimizer.zero_grad`,
:meth:`~Optimizer.step`, :meth:`~Optimizer.state_dict` / :meth:`~Optimizer.load_state_dict` in
PyTorch's layout, the validation helpers with PyTorch's messages, ``track_stats`` and
``check_finite``. A subclass holds one update rule and nothing else.

``optimizer.step()`` goes: this class (groups, per-step constants, ``check_finite``'s dry run,
the thread pool or one call per buffer) -> :mod:`minnet.optim._kernel` (the one loop: load,
rule, counts, store) -> the optimizer's element rule. The pool (:mod:`minnet._pool`) runs any
kernel over each thread's rows and knows no optimizer.

Writing an optimizer: the subclass contract
===========================================

One file per optimizer (``minnet/optim/<name>.py``) holds its math and a thin class:

* the per-step constants, a NamedTuple computed once per step in float64 and cast to the
  buffers' compute dtype (so every per-element operation stays in one dtype and vectorizes);
* the element rule, ``@element def update(p, g, state, s, o, rp, rs)`` (the contract is in
  :mod:`minnet.optim._kernel`), and ``RULE = Rule(update, ...)``: the only place the formula and
  its eps are written in compiled code. Wrap each op that PyTorch's for-loop implementation
  rounds in ``round_to(x, rp)`` (parameter/gradient dtype) or ``round_to(x, rs)`` (state dtype):
  that is the 16-bit ``rounding="per_op"`` model, and it compiles to nothing otherwise;
* a hand-written NumPy reference of the same update over whole float arrays, with the rule's
  arguments, ``reference(param, grad, state, s, o)``, in place (tests hold the kernel to it,
  1e-12 relative in float64; a reference generated from the rule would check nothing);
* the class: ``rule = RULE``, ``reference = staticmethod(<the reference>)`` and

``__init__(self, params, <hyperparameters with PyTorch's names and defaults>, **options:
Unpack[TorchOptions])``
    Calls ``super().__init__(params, defaults, **options)`` with ``defaults`` the dict of its
    hyperparameters (every group option, in signature order). ``options`` are the base's
    keywords (:class:`Options`: ``track_stats``, ``check_finite``, ``state_dtype``,
    ``rounding``; :class:`TorchOptions` adds PyTorch's ``foreach``, ``fused``, ``capturable``,
    ``differentiable`` for an optimizer PyTorch has); the signature that ``help()`` and
    ``inspect`` show lists them with their defaults.

``checks: dict[str, Callable]``
    Each non-flag option's check, ``{name: check(value) -> normalized value}`` (the helpers
    below, with PyTorch's messages), in PyTorch's order of checks; flags are checked as bools
    and ``eps_mode`` against ``eps_modes``. Checks that involve several options go in
    ``_check_group(self, hp)``. The base's ``_validate`` runs them for each group at
    construction, by :meth:`~Optimizer.add_param_group`, by :meth:`~Optimizer.load_state_dict`,
    and at the next :meth:`~Optimizer.step` after a user edited ``param_groups[i]``.

``_state_spec(self, group: Mapping[str, Any]) -> dict[str, float]``
    The per-parameter state arrays, ``{name: initial value}``, in the order the rule takes
    them (PyTorch's names: ``"exp_avg"``, ``"momentum_buffer"``, ...). May depend on options
    (``amsgrad`` adds ``"max_exp_avg_sq"``); an option that changes this dict cannot change
    after the group is created.

``_scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> NamedTuple``
    The per-step constants for step ``step`` (1 on the first call of ``step()``), computed in
    float64 and cast by :func:`cast_scalars`.

Optional:

``_options(self, group, formats=None) -> tuple``
    The rule's compile-time options for a group and storage formats (``o`` in the rule): each
    value compiles its own loop, branch-free. Default ``()``.
``_per_op_refusal(self, group) -> str | None`` (or ``no_pytorch = "<name>"``)
    Why ``rounding="per_op"`` has no model for this group's variant (PyTorch has no such
    for-loop implementation): the message of the ``ValueError`` raised when such a group is
    created. Default ``None``.
``eps_compared_with_options(options) -> str | None`` (static or class method)
    What eps is added to or compared with, as short text (``"sqrt(v_hat)"``); ``None`` when
    the update has no eps. :meth:`Optimizer.eps_compared_with` asks it for a group.
``Rule(..., multiplier=...)``
    The per-coordinate step multiplier ``k`` in ``param -= lr * k * m_hat`` (``1 /
    (denominator including eps)``) for :meth:`~Optimizer.multipliers`, from the state after a
    step and that step's constants: an element function that calls the piece the update
    divides by, so that eps is written once. ``None`` (no multiplier) when the update has no
    eps. A class without such a piece overrides ``_multipliers(group, state, step,
    group_state=None)`` instead (per parameter and shaped for a shaped update).
``_nonfinite_cause(self, group, name, grad, state) -> str | None``
    Why a parameter with a finite value and a finite gradient would end non-finite, for
    ``check_finite``'s message; ``None`` falls back to overflow. The default covers eps meeting
    the rule's second moment (eps=0 where it is 0: 0/0; eps rounded to 0 by ``"per_op"``).
``_group_state_spec(self, group) -> dict[str, float]`` and
``_advance_group_state(self, group, state, step) -> dict[str, float]``
    Scalars that a group carries from step to step (NAdam's running product ``mu_product``),
    ``{name: initial value}``, and the rule that gives their values after step ``step`` from
    those before it (computed in float64). With a non-empty spec, :meth:`~Optimizer.step`
    calls ``_scalars(group, dtype, step, group_state)`` with the advanced values, and keeps
    them only once the step has been applied (a step that ``check_finite`` refuses leaves them
    as they were). They are kept per parameter, as PyTorch does (a parameter that skips a step
    keeps its values): every state-dict entry holds them as floats right after ``"step"``.
    Default: no group state.
``Rule(..., tensor=Tensor(scale, apply, first))`` (:class:`minnet.optim._kernel.Tensor`)
    A per-tensor stage, for updates that need a norm per parameter (LAMB's and LARS's trust
    ratios): pass 1, the element rule, updates the state arrays ``[0, first)`` and returns the
    raw direction ``u`` as its ``change``; per parameter (its segment of the flat buffer) the
    compiled ``scale(sum(p**2), sum(u**2), s, o) -> (k, dominated)`` gives one scalar from
    float64 sums; pass 2, ``apply(p, u, k, state, s, o, rp, rs) -> (p_in, p_new, new_state,
    delta, change)``, updates the parameter and the arrays ``[first, ..)``. One compiled call per
    run of parameters (:meth:`FlatBuffers.bounds` gives its tensors), serial (the pool's row
    split would cut tensors); ``reference`` takes an optional ``bounds`` for several tensors;
    the rule's ``multiplier`` also gets each tensor's ``param_norm`` and ``update_norm`` per
    coordinate, after the state arrays.
    :mod:`minnet.optim.lamb` and :mod:`minnet.optim.lars` are the examples. A stage may keep
    scalars per tensor (``Tensor(..., state=(("nu", 0.0),))``: Novograd's EMA of the squared
    gradient norm): each parameter's are float64 values (``FlatBuffers.tensor_state``), saved
    in its state-dict entry as floats under their names (loaded back, any real value), handed
    to ``reference`` as ``tensor_state`` (float64 ``(tensors, names)``, updated in place; fresh
    initial values when absent), to the ``multiplier`` repeated over each tensor's
    coordinates, and to :meth:`_nonfinite_cause` as 0-d arrays beside the state arrays.
    :mod:`minnet.optim.novograd` is the example.
``_prepare_run(self, group, flat, js, step) -> Callable[[], None] | None``
    Called by :meth:`~Optimizer.step` for each run of parameters that takes the step
    (``js``: their indices in ``flat.params``; ``step``: their step count including this step),
    before ``check_finite``'s dry run and the kernel: a rule that reads values made outside the
    kernel (:class:`~minnet.optim.noisy_sgd.NoisySGD`'s noise) writes them into its state
    arrays (``flat.state[name]``) here. It may return an undo function, which a step that
    ``check_finite`` refuses calls, so that the refused step leaves the state as it was.
    Default: nothing.
``shaped = staticmethod(update)`` (instead of ``rule``; :mod:`minnet.optim._shaped`)
    A *shaped* update, for optimizers whose step needs a parameter's matrix shape (Adafactor's
    factored second moment): ``update(p, g, state, s, o, work, track) -> dominated``, NumPy
    over one parameter whose arrays are shaped as it (float32/float64: reshaped views of the
    flat buffers, updated in place; 16-bit: float32 copies that the base stores rounded once).
    The base runs it per parameter of each run (the per-tensor route, serial), with the dry run
    of ``check_finite`` on copies and the tracked counts; state arrays keep the parameter's size
    (a factored moment keeps its row or column in one slice); ``reference`` takes ``bounds``
    and ``shapes``; ``_multipliers`` gets one parameter's state at a time, shaped.
    ``rounding="per_op"`` has no model (refuse it in ``_per_op_refusal``).
    :mod:`minnet.optim.adafactor` is the example. Elementwise optimizers do not reach this code.
``_load_optional: tuple[str, ...]``
    Options that a loaded state dict may lack (minnet's own knobs that PyTorch's state dicts
    do not have); they take their defaults.
``step`` itself, for an update that is not one pass of the rule over every coordinate
    (:class:`~minnet.optim.SparseAdam` visits only the rows that had a gradient):
    :meth:`~Optimizer._plan_step` does the first half of the base's step (groups synced and
    revalidated, buffers checked, one plan per flat buffer with each run's step count and
    constants), :meth:`~Optimizer._raise_nonfinite` raises ``check_finite``'s error for what a
    dry run found, and :meth:`~Optimizer._finish_step` advances the step counts and records the
    stats from the summed counts. An optimizer with no element rule at all
    (:class:`~minnet.optim.LBFGS`) overrides ``step`` and keeps ``rule = None``.
``Rule(..., reduce=Reduction(fn, n))`` (:class:`minnet.optim._kernel.Reduction`) and
``_reduce_group_state(self, parts) -> dict[str, float]``
    A global reduction, for updates whose scalars need sums over every parameter of the model
    (Prodigy's distance estimate). Each step is then two compiled passes over each run of
    parameters: first :func:`~minnet.optim._kernel.reduce_kernel`, read-only, sums (float64)
    the ``n`` values ``fn(p, g, state, s, o)`` with ``s = _scalars(group, dtype, step,
    group_state)`` (the group state before the step); then ``_reduce_group_state(parts)``,
    with ``parts`` a list of ``(group, step, group_state, sums)`` over every run of every group
    and dtype, gives the one new group state of every parameter that takes the step; then the
    update pass (the element rule's kernel, with the pool) with ``_scalars(group, dtype, step,
    group_state, new_state)``. ``_advance_group_state`` is not used, ``_group_state_spec`` is
    (the state-dict floats), and ``reduce_reference(param, grad, state, s, o) -> tuple`` (a
    static method, NumPy) is the reduction's float reference. :mod:`minnet.optim.prodigy` is
    the example.
``_param_state: tuple[str, ...]``
    State arrays that start as a copy of the parameter instead of their ``_state_spec`` value
    (schedule-free's ``z``, Prodigy's initial point ``p0``): :meth:`~Optimizer.step` copies the
    parameter's values into them right before the parameter's first step (a parameter whose
    step count is 0, also after :meth:`~Optimizer.load_state_dict` gave it no state), as
    PyTorch optimizers create such state lazily. Default ``()``.

What the base class derives from the rule: ``_kernel(group, track, write, formats=None)``, the
compiled pass over flat buffers of any storage format (float64, float32, float16, bfloat16:
:func:`minnet.optim._kernel.kernel`), and ``_reference(group, formats=None)``, the float
reference or, for 16-bit ``formats``, the rule itself run by NumPy
(:func:`minnet.optim._reference.rule_reference`).

A worked example, complete (``tests/test_optim_family.py`` runs it): gradient descent with a
decoupled shrink, ``param = param * (1 - lr * decay) - lr * grad``, no state, no eps.

.. code-block:: python

    from functools import partial
    from typing import NamedTuple

    import numpy as np

    from minnet.optim._kernel import Rule, element
    from minnet.optim.optimizer import Optimizer, cast_scalars, check_lr, check_nonnegative


    class SDScalars(NamedTuple):
        neg_lr: np.floating  # -lr
        decay: np.floating  # 1 - lr * decay


    @element
    def sd_update(p, g, state, s, o, rp, rs):
        new = p * s.decay + s.neg_lr * g
        # (p_in, p_new, new state, delta, change, eps-dominated, g for the 2nd moment)
        return p, new, (), new - p, new - p, False, g


    def sd_reference(param, grad, state, s, o):
        param[...] = param * s.decay + s.neg_lr * grad


    class SD(Optimizer):
        # param = param * (1 - lr * decay) - lr * grad
        rule = Rule(sd_update)
        reference = staticmethod(sd_reference)
        checks = {"lr": check_lr, "decay": partial(check_nonnegative, "decay")}

        def __init__(self, params, lr=1e-3, decay=0.0, **options: "Unpack[Options]"):
            super().__init__(params, {"lr": lr, "decay": decay}, **options)

        def _state_spec(self, group):
            return {}  # e.g. {"momentum_buffer": 0.0}

        def _scalars(self, group, dtype, step):
            lr, decay = group["lr"], group["decay"]
            return cast_scalars(SDScalars, dtype, -lr, 1.0 - lr * decay)

:mod:`minnet.optim.lion` and :mod:`minnet.optim.sgd` are the smallest real ones;
:mod:`minnet.optim.adam` the largest.

Parameters without a gradient, as in PyTorch: :meth:`~Optimizer.zero_grad` (default
``set_to_none=True``) makes every ``p.grad`` ``None`` until a backward writes it, and
:meth:`~Optimizer.step` skips a parameter whose ``grad`` is ``None`` or whose
``requires_grad`` is false (frozen with ``module.requires_grad_(False)``): neither it, its
state nor its own step count changes. Each parameter has its own step count (the state dict's
``"step"``) and scalar state. The usual step, where every parameter takes it with one step
count, is one kernel call over the whole flat buffer; otherwise the kernel runs over each
contiguous run of parameters that take the step with equal step counts, with that run's
constants (:meth:`minnet.optim._flat.FlatBuffers.step_runs`).
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypedDict, TypeVar

import numpy as np

from minnet import _lowp, _pool
from minnet import threads as _threads
from minnet.dtypes import as_dtype, float64, is_16bit, is_bfloat16, is_float_dtype
from minnet.nn import Parameter
from minnet.optim._flat import FlatBuffers, StorageFormats
from minnet.optim._kernel import Rule, kernel, reduce_kernel
from minnet.optim._reference import numpy_rule, rule_reference
from minnet.optim._shaped import shaped_kernel, shaped_reference

__all__ = [
    "Optimizer",
    "OptimizerStats",
    "AdamStats",
    "EpsWarning",
    "LowPrecisionWarning",
    "ROUNDING_MODES",
    "StorageFormats",
    "required",
    "check_real",
    "check_bool",
    "check_choice",
    "check_lr",
    "check_eps",
    "check_betas",
    "check_weight_decay",
    "check_momentum",
    "check_nonnegative",
    "cast_scalars",
    "Options",
    "TorchOptions",
]

T = TypeVar("T")


# -- validation helpers (PyTorch's messages; ``not 0.0 <= x`` so that NaN fails) ----------------


class _Required:
    """The ``required`` sentinel of PyTorch: a default every parameter group must set."""

    def __repr__(self) -> str:
        return "<required parameter>"


#: A default that every parameter group must give (PyTorch's ``torch.optim.optimizer.required``).
required = _Required()


def _is_real_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def check_real(name: str, value: object) -> float:
    """``float(value)``; ``TypeError`` naming ``name`` unless ``value`` is a real number."""
    if not _is_real_number(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}: {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_bool(name: str, value: object) -> bool:
    """``bool(value)``; ``TypeError`` unless ``value`` is a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}: {value!r}")
    return bool(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError("Invalid {name}: ...")``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Invalid {name}: {value!r}; expected one of {choices}")
    return value


def check_nonnegative(name: str, value: object, label: str | None = None) -> float:
    """A real number ``>= 0``: PyTorch's ``ValueError(f"Invalid {label} value: {value}")``
    (``label`` defaults to ``name``), NaN included."""
    v = check_real(name, value)
    if not 0.0 <= v:
        raise ValueError(f"Invalid {label or name} value: {value}")
    return v


def check_lr(lr: object) -> float:
    """PyTorch's ``Invalid learning rate: {lr}`` check (``lr >= 0``)."""
    v = check_real("lr", lr)
    if not 0.0 <= v:
        raise ValueError(f"Invalid learning rate: {lr}")
    return v


def check_eps(eps: object, name: str = "eps") -> float:
    """PyTorch's ``Invalid epsilon value: {eps}`` check (``eps >= 0``)."""
    v = check_real(name, eps)
    if not 0.0 <= v:
        raise ValueError(f"Invalid epsilon value: {eps}")
    return v


def check_weight_decay(weight_decay: object) -> float:
    """PyTorch's ``Invalid weight_decay value: {weight_decay}`` check (``>= 0``)."""
    return check_nonnegative("weight_decay", weight_decay)


def check_momentum(momentum: object) -> float:
    """PyTorch's ``Invalid momentum value: {momentum}`` check (``>= 0``)."""
    return check_nonnegative("momentum", momentum)


def _check_beta_tuple(betas: object, kind: str) -> tuple[float, ...]:
    """``betas`` as a ``kind`` (``"pair"`` or ``"triple"``) of reals, each in ``[0, 1)``: PyTorch's
    ``Invalid beta parameter at index {i}: {beta}``; ``TypeError`` for anything else."""
    n = 2 if kind == "pair" else 3
    if not isinstance(betas, (tuple, list)) or len(betas) != n:
        names = ", ".join(f"beta{i + 1}" for i in range(n))
        raise TypeError(f"betas must be a {kind} ({names}) of floats, got {betas!r}")
    b = tuple(check_real(f"betas[{i}]", betas[i]) for i in range(n))
    for i in range(n):
        if not 0.0 <= b[i] < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
    return b


def check_betas(betas: object) -> tuple[float, float]:
    """A pair ``(beta1, beta2)``, each in ``[0, 1)``: PyTorch's ``Invalid beta parameter at
    index {i}: {beta}``; ``TypeError`` for anything but a pair of real numbers."""
    return _check_beta_tuple(betas, "pair")  # type: ignore[return-value]


def check_betas3(betas: object) -> tuple[float, float, float]:
    """A triple ``(beta1, beta2, beta3)``, each in ``[0, 1)`` (Adan, AdEMAMix), checked as
    :func:`check_betas` checks a pair."""
    return _check_beta_tuple(betas, "triple")  # type: ignore[return-value]


def cast_scalars(cls: Callable[..., T], dtype: np.dtype, *values: float) -> T:
    """``cls(*values)`` with every value (computed in float64, as PyTorch computes its
    per-step constants in Python) cast to ``dtype`` in one conversion, so that every per-element
    operation of the rule stays in one dtype. An lr too large for float32 becomes inf, as in
    PyTorch's float32 arithmetic. A field ``one_minus_lerp_w`` (pass 0.0 for it) becomes
    ``1 - lerp_w`` computed in ``dtype``, the weight PyTorch's ``lerp`` uses for ``w >= 0.5``.
    This runs once per step and buffer, so it is kept to one array conversion (~2 us)."""
    if -_F32_MAX < min(values) and max(values) < _F32_MAX:  # also False for a NaN
        c = np.array(values, dtype)
    else:
        with np.errstate(over="ignore"):
            c = np.array(values, dtype)
    pair = _complement_fields(cls)
    if pair is not None:
        c[pair[0]] = 1 - c[pair[1]]
    return cls(*c)


_F32_MAX = float(np.finfo(np.float32).max)


@functools.cache
def _complement_fields(cls: Any) -> tuple[int, int] | None:
    """The indices of ``one_minus_lerp_w`` and ``lerp_w`` in a scalars class, if it has both."""
    fields = getattr(cls, "_fields", ())
    if "one_minus_lerp_w" in fields and "lerp_w" in fields:
        return fields.index("one_minus_lerp_w"), fields.index("lerp_w")
    return None


# -- the keywords every optimizer takes --------------------------------------------------------


class Options(TypedDict, total=False):
    """The keywords of every optimizer besides its hyperparameters (:class:`Optimizer`'s);
    an optimizer's ``__init__`` takes them as ``**options: Unpack[Options]``."""

    track_stats: bool
    check_finite: bool
    state_dtype: Any
    rounding: str


class TorchOptions(Options, total=False):
    """:class:`Options` plus PyTorch's implementation switches, for the optimizers PyTorch
    has (``**options: Unpack[TorchOptions]``; see :meth:`Optimizer._check_torch_flags`)."""

    foreach: bool | None
    fused: bool | None
    capturable: bool
    differentiable: bool


_TORCH_FLAGS = tuple(TorchOptions.__annotations__)[len(Options.__annotations__):]


# -- stats ------------------------------------------------------------------------------------


class OptimizerStats(NamedTuple):
    """What an optimizer with ``track_stats=True`` measured during its latest step, in the
    same kernel pass as the update.

    ``eps_dominated`` is the fraction of coordinates whose eps term is at least what it is
    added to or compared with (see :meth:`Optimizer.eps_compared_with`; always 0 without eps);
    ``nonfinite`` counts parameters that are NaN or infinite after the step; ``update_rms`` is
    ``sqrt(mean(delta**2))`` of the applied update over all ``n_params`` coordinates.
    ``underflow`` counts coordinates whose stored second moment is 0 although their gradient
    is not (it underflowed in the state dtype); ``lost_updates`` counts coordinates whose
    update was lost to rounding (``p + delta == p`` in the parameter dtype with ``delta != 0``).
    Both are measured by kernels over 16-bit buffers and are 0 for float32/float64 ones.
    """

    step: int
    eps_dominated: float
    nonfinite: int
    update_rms: float
    n_params: int
    underflow: int = 0
    lost_updates: int = 0


#: The ``rounding`` models of 16-bit kernels (see the module docstring).
ROUNDING_MODES = ("fused", "per_op")


class EpsWarning(UserWarning):
    """What an optimizer's eps does not do in this set-up (``eps=0`` where a zero gradient
    gives 0/0, or an eps that 16-bit storage loses): warned once when the optimizer is
    created."""


class LowPrecisionWarning(EpsWarning):
    """What 16-bit storage loses: an eps that rounds to 0 or to a subnormal where the chosen
    rounding model holds it, or a second moment that float16 state stores as 0 for small
    gradients: warned once when the optimizer is created."""


def _lowp_format(dtype: np.dtype) -> int:
    return _lowp.storage_format(np.dtype(dtype))


class _Run(NamedTuple):
    """Parameters that one kernel call updates in a step: ``args`` the kernel's ``(data, grad,
    *state)`` over their contiguous range, ``js`` their positions in the flat buffer, ``step``
    their step count after this step, ``state`` their scalar state after it (NAdam's
    ``mu_product``; ``{}`` for most optimizers), ``scalars`` the step's constants."""

    args: tuple[np.ndarray, ...]
    js: list[int]
    step: int
    state: dict[str, float]
    scalars: Any


#: The name ``Adam(track_stats=True)`` used before the family; the same class.
AdamStats = OptimizerStats

_MISSING = object()


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside ``minnet.optim``."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("minnet.optim"):
        frame, level = frame.f_back, level + 1
    return level


# -- the base class ---------------------------------------------------------------------------


class Optimizer:
    """Base class of minnet's optimizers (PyTorch's ``torch.optim.Optimizer`` layout).

    Args:
        params: an iterable of :class:`minnet.nn.Parameter`, or of dicts that define parameter
            groups: ``{"params": [...], "lr": 0.1, ...}``; a group's options override
            ``defaults``, and keys the optimizer does not know are kept (schedulers store
            ``"initial_lr"`` there). A single dict is one group.
        defaults: every hyperparameter and its default.
        track_stats: record :class:`OptimizerStats` in every step (read ``optimizer.stats``).
        check_finite: refuse a step that would make a parameter NaN or infinite: raise
            ``FloatingPointError`` naming the parameters and the likely cause, and leave
            parameters and state as they were. Costs one extra read-only pass over the
            buffers; off by default (PyTorch lets NaN through). Also turns the warning about
            an eps that 16-bit storage loses into a ``ValueError`` at construction when the
            loss is fatal (a zero gradient then gives 0/0, as ``rounding="per_op"`` with
            ``eps=1e-8`` in float16); a set-up that works (``rounding="fused"`` keeps eps in
            float32) only warns.
        state_dtype: the dtype of the optimizer state (``"float16"``, ``"bfloat16"``,
            ``"float32"``, ``"float64"`` or a NumPy dtype); ``None`` (default): each
            parameter's dtype. float64 only goes with float64.
        rounding: how kernels over 16-bit buffers round. ``"fused"`` (default): load every
            value to float32, compute the whole update in float32 and round once when storing
            (PyTorch's ``fused=True``, optax with float32 promotion, mixed-precision
            recipes); the default because it is the accurate one and the one that trains.
            ``"per_op"``: round every intermediate result to its storage dtype in PyTorch's
            order of operations (PyTorch's default for-loop implementation on half tensors,
            where ``eps=1e-8`` becomes 0 in float16). Both are the same for float32/float64.

    Attributes:
        defaults: the hyperparameters given to the constructor.
        param_groups: a list of dicts, PyTorch's layout (``"params"`` and every option). Edit
            options in place (``group["lr"] = x``); the edit is validated at the next step.
        stats: the latest :class:`OptimizerStats` (``track_stats``), else ``None``.

    On construction every parameter is copied into one contiguous buffer per (group, dtype),
    and its ``.data`` and ``.grad`` become views into it. Write values in place
    (``p.data[...] = x``); an array fetched before creating the optimizer is no longer the
    parameter. See the module docstring for the subclass contract.
    """

    #: Options a loaded state dict may lack (they take their defaults).
    _load_optional: tuple[str, ...] = ()
    #: State arrays that start as a copy of the parameter, at its first step (module docstring).
    _param_state: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass ``__init__`` that ends in ``**options: Unpack[Options]`` (or
        ``TorchOptions``) gets a signature that lists those keywords with their defaults, so
        ``help()``, ``inspect.signature`` and the lab see them."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        params = list(sig.parameters.values())
        if not params or params[-1].kind is not inspect.Parameter.VAR_KEYWORD:
            return
        torch = "TorchOptions" in str(params[-1].annotation)
        base = [
            p for p in inspect.signature(Optimizer.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and (torch or p.name not in _TORCH_FLAGS)
        ]  # fmt: skip
        init.__signature__ = sig.replace(parameters=[*params[:-1], *base])
        cls._torch_flags = torch

    #: Whether the constructor takes PyTorch's implementation switches (``TorchOptions``).
    _torch_flags = True

    def __init__(
        self,
        params: Any,
        defaults: Mapping[str, Any],
        *,
        track_stats: bool = False,
        check_finite: bool = False,
        state_dtype: Any = None,
        rounding: str = "fused",
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        **unexpected: Any,
    ) -> None:
        if unexpected:  # a misspelt keyword, named for the class the user called
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword "
                            f"argument {next(iter(unexpected))!r}")  # fmt: skip
        if not self._torch_flags:
            given = [k for k, v in (("foreach", foreach), ("fused", fused)) if v is not None]
            given += [k for k, v in (("capturable", capturable),
                                     ("differentiable", differentiable)) if v]  # fmt: skip
            if given:
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword "
                                f"argument {given[0]!r}")  # fmt: skip
        object.__setattr__(self, "defaults", dict(defaults))
        self.track_stats = check_bool("track_stats", track_stats)
        self.check_finite = check_bool("check_finite", check_finite)
        self.state_dtype = None if state_dtype is None else as_dtype(state_dtype, "state_dtype")
        self.rounding = check_choice("rounding", rounding, ROUNDING_MODES)
        self._check_torch_flags(
            {"foreach": foreach, "fused": fused, "capturable": capturable,
             "differentiable": differentiable}
        )  # fmt: skip
        self._warned_lowp = False
        self.stats: OptimizerStats | None = None
        self.param_groups: list[dict[str, Any]] = []
        self._keys = tuple(self.defaults)
        self._checked: list[tuple[Any, ...]] = []  # each group's options as last validated
        self._valid: list[dict[str, Any]] = []  # ... and as a dict (normalized)
        self._kernels: list[dict[tuple[Any, ...], Any]] = []  # each group's kernels, by flags
        self._flats: list[list[FlatBuffers]] = []  # each group's buffers, one per dtype
        self._groups: list[FlatBuffers] = []  # every group's buffers, in order
        self._index: dict[int, int] = {}  # id(parameter) -> position across all groups
        self._all_params: list[Parameter] = []
        if isinstance(params, Parameter):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Parameters "
                "or dicts, but got Parameter"
            )
        if isinstance(params, dict):
            params = [params]
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of parameters in sets will change between runs. Please use a list "
                "instead."
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        # Check every group before any parameter is rebound to a flat buffer.
        prepared = []
        seen: set[int] = set()
        for group in groups:
            new = self._prepare_group(group, seen)
            seen.update(id(p) for p in new["params"])
            prepared.append(new)
        for new in prepared:
            self._install_group(new)

    def _check_torch_flags(self, flags: Mapping[str, Any]) -> None:
        """PyTorch's implementation switches, accepted so that its calls port unchanged:
        ``foreach`` and ``capturable`` change nothing here (one fused kernel, no CUDA graphs);
        ``fused=True`` is ``rounding="fused"`` (PyTorch's fused kernels compute in float32 and
        round once: minnet's default) and refuses ``rounding="per_op"``; ``fused=False`` or
        ``None`` change nothing (PyTorch's for-loop rounding of 16-bit tensors is
        ``rounding="per_op"``); ``differentiable=True`` needs autograd and is refused."""
        owner = type(self).__name__
        for name, value in flags.items():
            if value is not None and not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool or None, got {type(value).__name__}")
        if flags.get("differentiable"):
            raise ValueError(
                f"{owner}: differentiable=True differentiates through the optimizer step with "
                "autograd, which minnet does not have; leave it False"
            )
        if flags.get("fused") and self.rounding == "per_op":
            raise ValueError(
                f"{owner}: fused=True is rounding='fused' (PyTorch's fused kernels compute the "
                "update in float32 and round once); it contradicts rounding='per_op'"
            )

    # -- hyperparameters as attributes (``optimizer.lr``) ----------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: an option reads from param_groups.
        defaults = self.__dict__.get("defaults")
        groups = self.__dict__.get("param_groups")
        if defaults is not None and groups and name in defaults:
            values = [g.get(name, _MISSING) for g in groups]
            if all(v == values[0] for v in values[1:]):
                return values[0]
            raise AttributeError(
                f"{type(self).__name__} has {len(groups)} parameter groups with different "
                f"{name}; read optimizer.param_groups[i][{name!r}]"
            )
        raise AttributeError(f"{type(self).__name__} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        defaults = self.__dict__.get("defaults")
        if defaults is not None and name in defaults and self.__dict__.get("param_groups"):
            # ``optimizer.lr = x``: validated now, applied to every group.
            for i in range(len(self.param_groups)):
                candidate = dict(self.param_groups[i])
                candidate[name] = value
                self._check_options(i, candidate)
            for i, group in enumerate(self.param_groups):
                group[name] = value
                self._revalidate(i)
            return
        object.__setattr__(self, name, value)

    # -- groups -------------------------------------------------------------------------------

    @property
    def params(self) -> list[Parameter]:
        """Every parameter, in state-dict index order (groups in order)."""
        return list(self._all_params)

    @property
    def step_count(self) -> int:
        """The largest step count of any parameter (calls of :meth:`step` that updated it;
        parameters that always have a gradient share it)."""
        return max((max(flat.steps) for flat in self._groups), default=0)

    def _prepare_group(self, param_group: Any, seen: set[int]) -> dict[str, Any]:
        """Check one group (PyTorch's ``add_param_group`` checks) and return it completed with
        the defaults and normalized; nothing is modified."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("a parameter group needs a 'params' entry")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of parameters in sets will change between runs. Please use a list "
                "instead."
            )
        else:
            params = list(params)
        owner = type(self).__name__
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"optimizer can only optimize minnet.nn.Parameter objects, but element {i} "
                    f"is {type(p).__name__}"
                )
            grad = p.grad
            if grad is not None and not isinstance(grad, np.ndarray):
                raise TypeError(
                    f"{owner}: parameter {i} ({p.name or '?'}) has a grad of type "
                    f"{type(grad).__name__}; it must be an array or None"
                )
            if not is_float_dtype(p.data.dtype) or (
                grad is not None and grad.dtype != p.data.dtype
            ):
                got = "" if grad is None else f" and grad of dtype {grad.dtype}"
                raise TypeError(
                    f"{owner}: parameter {i} ({p.name or '?'}) has data of dtype "
                    f"{p.data.dtype}{got}; both must be the same of float16, bfloat16, "
                    "float32 or float64"
                )
            self._state_dtype_for(p.data.dtype, f"parameter {i} ({p.name or '?'})")
            if grad is not None and grad.shape != p.data.shape:
                raise ValueError(
                    f"{owner}: parameter {i} ({p.name or '?'}) has grad of shape "
                    f"{p.grad.shape}, expected its data's shape {p.data.shape}"
                )
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("some parameters appear more than once in the parameter list")
        if not seen.isdisjoint(ids) or not set(self._index).isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        group["params"] = params
        for name, default in self.defaults.items():
            if name not in group:
                if default is required:
                    raise ValueError(
                        "parameter group didn't specify a value of required optimization "
                        f"parameter {name}"
                    )
                group[name] = default
        group.update(self._validate(group))
        self._check_eps_representable(group, params)
        return group

    #: Whether the kernels read and write 16-bit buffers (``_kernel`` takes ``formats``);
    #: ``None``: when the optimizer has an element rule (the skeleton reads every format).
    _supports_lowp: bool | None = None

    def _state_dtype_for(self, dtype: np.dtype, where: str = "") -> np.dtype:
        """The state dtype of parameters of dtype ``dtype``; ``TypeError`` for a combination
        no kernel has (float64 with anything else, 16-bit without kernel support)."""
        owner = type(self).__name__
        state = np.dtype(dtype) if self.state_dtype is None else self.state_dtype
        if (state == float64) != (dtype == float64):
            raise TypeError(
                f"{owner}: state_dtype={state} with {where} of dtype {dtype}: float64 "
                "parameters need float64 state and float64 state needs float64 parameters"
            )
        supports = (self.rule is not None or self.shaped is not None
                    if self._supports_lowp is None else self._supports_lowp)  # fmt: skip
        if (is_16bit(dtype) or is_16bit(state)) and not supports:
            raise TypeError(
                f"{owner} does not support float16/bfloat16 parameters or state yet "
                f"({where}: dtype {dtype}, state_dtype {state})"
            )
        return state

    #: The eps options (checked by :meth:`_check_eps_representable`): ``("eps",)``; AdaBelief
    #: adds ``"eps_root"``.
    _eps_options: tuple[str, ...] = ("eps",)
    #: The eps options that the update adds into a state array, which stores them in the state
    #: dtype whatever the rounding model (AdaBelief's ``"eps_root"``).
    _eps_in_state: tuple[str, ...] = ()

    def _check_eps_representable(self, group: Mapping[str, Any], params: list[Any]) -> None:
        """Warn once about what the group's eps options lose in this set-up, for the
        rounding model in use (see :meth:`_eps_problems`). ``check_finite`` turns it into a
        ``ValueError`` only where no eps survives at all (a denominator that can be 0)."""
        messages, lowp, fatal = self._eps_problems(group, params)
        if not messages:
            return
        message = "; ".join(messages)
        if self.check_finite and fatal:
            raise ValueError(message + " (check_finite=True)")
        if not self._warned_lowp:
            self._warned_lowp = True
            category = LowPrecisionWarning if lowp else EpsWarning
            warnings.warn(message, category, stacklevel=_caller_level())

    def _eps_holder(self, option: str, dtype: np.dtype) -> np.dtype:
        """The dtype that holds ``option`` for parameters of ``dtype``: the state dtype for an
        option stored in the state or with ``rounding="per_op"`` (each op rounded to its
        storage dtype, PyTorch's for-loop model), else the kernel's compute dtype (float32
        for 16-bit buffers, as PyTorch's ``fused=True``)."""
        state = self._state_dtype_for(dtype)
        if option in self._eps_in_state or self.rounding == "per_op":
            return state
        return np.dtype(np.float32) if is_16bit(dtype) or is_16bit(state) else state

    def _eps_problems(
        self, group: Mapping[str, Any], params: list[Any]
    ) -> tuple[list[str], bool, bool]:
        """What the group's eps options lose in this set-up, as messages; whether one of them
        is about 16-bit storage; whether the loss is fatal (a coordinate whose gradient is 0
        gets 0/0 in the 16-bit set-up although it does not in float64).

        An eps is lost where the dtype that holds it (:meth:`_eps_holder`) rounds it to 0 or
        a subnormal; an eps option that the update stores in a state array
        (:attr:`_eps_in_state`) is still added in float32 within a step with
        ``rounding="fused"``, only not carried from step to step; float16 state stores the
        second moment (``Rule.second_moment``) as 0 for small gradients in both rounding
        models; ``eps=0`` warns where a zero gradient gives 0/0 (float64 included)."""
        owner = type(self).__name__
        options = [o for o in self._eps_options if isinstance(group.get(o), float)]
        if not options:
            return [], False, False
        messages: list[str] = []
        dtypes = list(dict.fromkeys(p.data.dtype for p in params))
        for option in options:
            eps = group[option]
            if not eps > 0:
                continue
            for dt in dtypes:
                holder = self._eps_holder(option, dt)
                if holder == np.float64:
                    continue
                tiny = float(np.finfo(np.float16 if holder == np.float16 else np.float32).tiny)
                with np.errstate(under="ignore"):
                    stored = float(np.float32(eps).astype(holder))
                if stored >= tiny:
                    continue
                name = "bfloat16" if is_bfloat16(holder) else str(holder)
                what = "0" if stored == 0 else f"the subnormal {stored:.6g}"
                if option in self._eps_in_state:
                    lost = (
                        f"{option}={eps} is added to the state and stored there every step: "
                        f"{name} state holds it as {what}, so it does not accumulate from "
                        "step to step as in float32/float64"
                    )
                    if self.rounding == "fused":
                        lost += " (each step still adds it in float32 before the division)"
                    else:
                        lost += " and each op rounds it to the state dtype"
                else:
                    where = name
                    if self.rounding == "per_op" and holder == self._state_dtype_for(dt):
                        where += " (the state dtype: rounding='per_op' rounds every op to it)"
                    effect = (
                        "so it cannot keep the denominator away from 0"
                        if stored == 0
                        else "so it keeps the denominator away from 0 with few bits"
                    )
                    lost = f"{option}={eps} is {what} in {where}, {effect}"
                fixes = f"use a larger {option} (at least {tiny:.6g}, the smallest normal "
                fixes += f"{name} number) or state_dtype='float32'"
                if self.rounding == "per_op" and option not in self._eps_in_state:
                    fixes += ", or rounding='fused' (which keeps eps in float32)"
                messages.append(f"{owner}: {lost}; {fixes}")
                break
        underflow = self._second_moment_underflow(group, dtypes)
        if underflow is not None:
            messages.append(underflow)
        lowp = bool(messages)
        fatal = lowp and self._zero_gradient_gives_nan(group, dtypes)
        if any(group[o] == 0 for o in options) and self._zero_gradient_gives_nan(group, []):
            zero = ", ".join(f"{o}=0" for o in options if group[o] == 0)
            messages.append(
                f"{owner}: with {zero}, a coordinate whose gradient has been 0 so far (its "
                "state still at its initial value) divides 0 by 0: its update and then its "
                "parameter are NaN (check_finite=True refuses such a step)"
            )
        return messages, lowp, fatal

    def _probe(
        self,
        group: Mapping[str, Any],
        grads: np.ndarray,
        param_dtype: np.dtype | None = None,
        steps: int = 1,
    ) -> dict[str, np.ndarray]:
        """``steps`` steps from the initial state on ``param = 1`` with gradient ``grads``
        (a 1-D array) every step, by the hand-written float64 reference (``param_dtype``
        ``None``) or by the rule in this optimizer's 16-bit set-up for parameters of
        ``param_dtype``: the parameter and the state arrays after them, by name."""
        if param_dtype is None:
            formats, dt, state_dt = None, np.dtype(np.float64), np.dtype(np.float64)
            compute = dt
        else:
            dt, state_dt = np.dtype(param_dtype), self._state_dtype_for(param_dtype)
            formats = StorageFormats(_lowp_format(dt), _lowp_format(state_dt), self.rounding)
            compute = np.dtype(np.float32)
        spec = self._state_spec(group)
        param = np.ones(grads.size, dt)
        g = grads.astype(dt)
        arrays = {n: np.full(grads.size, 1.0 if n in self._param_state else v, state_dt)
                  for n, v in spec.items()}  # fmt: skip
        ref = self._reference(group, formats)
        group_state = self._group_state_spec(group)
        reduce = self.rule is not None and self.rule.reduce is not None
        tensor_spec = self._tensor_spec()  # a per-tensor stage's scalars, carried over steps
        kw = {"tensor_state": np.array([list(tensor_spec.values())])} if tensor_spec else {}
        with np.errstate(all="ignore"):
            for t in range(1, steps + 1):
                extra: tuple[Any, ...] = ()
                if reduce:  # the global reduction, by its float reference
                    s0 = self._scalars(group, compute, t, group_state)
                    assert self.reduce_reference is not None
                    sums = self.reduce_reference(
                        param.astype(np.float64), g.astype(np.float64),
                        tuple(a.astype(np.float64) for a in arrays.values()), s0,
                        self._options(group))  # fmt: skip
                    new = self._reduce_group_state([(group, t, group_state, sums)])
                    extra = (group_state, new)
                    group_state = new
                elif group_state:
                    group_state = self._advance_group_state(group, group_state, t)
                    extra = (group_state,)
                ref(param, g, *arrays.values(), self._scalars(group, compute, t, *extra), **kw)
        return {"param": param, **arrays}

    def _second_moment_underflow(
        self, group: Mapping[str, Any], dtypes: list[np.dtype]
    ) -> str | None:
        """For float16 state: the largest gradient for which a first step stores the second
        moment (``Rule.second_moment``) as 0 where float64 keeps it non-zero, as a message;
        ``None`` without float16 state, without a second moment, or if no gradient of at
        least 1e-7 underflows."""
        owner = type(self).__name__
        second = -1 if self.rule is None else int(self.rule.second_moment)
        if second < 0:
            return None
        name = list(self._state_spec(group))[second]
        for dt in dtypes:
            if self._state_dtype_for(dt) != np.float16:
                continue
            grads = np.logspace(-7, 0, 141)
            if dt == np.float16:
                grads = grads.astype(np.float16).astype(np.float64)
            low = self._probe(group, grads, dt)[name]
            high = self._probe(group, grads)[name]
            lost = (low == 0) & (high != 0)
            if not lost.any():
                return None
            g = float(grads[lost].max())
            against = self.eps_compared_with_options(group) or "its denominator"
            kept = (
                "eps stays in float32 with rounding='fused', so such a step is finite but "
                "as large as eps lets it be"
                if self.rounding == "fused"
                else "with rounding='per_op' eps is rounded to float16 as well"
            )
            return (
                f"{owner}: float16 state stores {name} as 0 after a first step whose gradient "
                f"is below about {g:.2g} in magnitude (float16's smallest subnormal is "
                f"{float(np.finfo(np.float16).smallest_subnormal):.3g}); there {against} is "
                f"0 and eps alone remains; {kept}. optimizer.stats.underflow "
                "(track_stats=True) counts such coordinates; state_dtype='float32' keeps them"
            )
        return None

    def _zero_gradient_gives_nan(self, group: Mapping[str, Any], dtypes: list[np.dtype]) -> bool:
        """Whether ten steps with a zero gradient from the initial state make the parameter
        NaN (0/0): by the float64 reference (``dtypes`` empty), or in this optimizer's 16-bit
        set-up for one of ``dtypes`` while the float64 reference stays finite."""
        try:
            if not dtypes:
                return bool(np.isnan(self._probe(group, np.zeros(1), None, 10)["param"]).any())
            if self._zero_gradient_gives_nan(group, []):
                return False
            for dt in dtypes:
                state = self._state_dtype_for(dt)
                if not (is_16bit(dt) or is_16bit(state)):
                    continue
                if self.rounding == "per_op" and self._per_op_refusal(group) is not None:
                    continue  # refused when the group is installed
                if np.isnan(self._probe(group, np.zeros(1), dt, 10)["param"]).any():
                    return True
        except NotImplementedError:  # an optimizer without a reference
            return False
        return False

    def _install_group(self, group: dict[str, Any]) -> None:
        """Append a prepared group: rebind its parameters to new flat buffers."""
        spec = self._state_spec(group)
        by_dtype: dict[np.dtype, list[Parameter]] = {}
        for p in group["params"]:
            by_dtype.setdefault(p.data.dtype, []).append(p)
        owner = type(self).__name__
        tensor_spec = self._tensor_spec()
        flats = [
            FlatBuffers(ps, dt, spec, owner, self._state_dtype_for(dt), self.rounding, tensor_spec)
            for dt, ps in by_dtype.items()
        ]
        for p in group["params"]:
            self._index[id(p)] = len(self._all_params)
            self._all_params.append(p)
        self.param_groups.append(group)
        self._checked.append(self._snapshot(group))
        self._valid.append({k: group[k] for k in self._keys})
        group_state = dict(self._group_state_spec(group))
        for flat in flats:
            flat.group_states = [group_state] * len(flat.params)
        self._kernels.append({})
        self._flats.append(flats)
        self._groups.extend(flats)
        for flat in flats:  # a variant without a per_op model is refused now, not at a step
            self._refuse_per_op(group, flat.formats)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (PyTorch's ``add_param_group``): ``{"params": [...], ...}``
        with options overriding ``defaults``. Its step count starts at 0."""
        self._install_group(self._prepare_group(param_group, set()))

    def _sync_groups(self) -> None:
        """Install the groups appended to ``param_groups`` directly (``append``, ``extend``:
        PyTorch's own tests do so) as :meth:`add_param_group` would, all checked before any is
        installed; refuse a removed group with a message that says what to do."""
        groups, n = self.param_groups, len(self._valid)
        if len(groups) == n:
            return
        owner = type(self).__name__
        if len(groups) < n:
            raise RuntimeError(
                f"{owner}: param_groups has {len(groups)} groups but the optimizer holds {n}: "
                "a group cannot be removed (its parameters live in the optimizer's buffers); "
                "create a new optimizer over the parameters you want"
            )
        prepared, seen = [], set()
        for group in groups[n:]:
            new = self._prepare_group(group, seen)
            seen.update(id(p) for p in new["params"])
            prepared.append(new)
        del groups[n:]
        for new in prepared:
            self._install_group(new)

    def _snapshot(self, group: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(group.get(k, _MISSING) for k in self._keys)

    def _spec_changers(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
        """Options whose change from ``old`` to ``new`` alone changes the state arrays."""
        names = list(self._state_spec(old))
        out = []
        for k in self._keys:
            if old[k] != new[k]:
                trial = dict(old)
                trial[k] = new[k]
                if list(self._state_spec(trial)) != names:
                    out.append(k)
        return out or [k for k in self._keys if old[k] != new[k]]

    def _check_options(self, i: int, group: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a candidate for group ``i``; the state arrays it implies must not change."""
        missing = [k for k in self._keys if k not in group]
        if missing:
            raise ValueError(f"parameter group {i} lacks option(s) {missing}")
        hp = self._validate(group)
        current = self._valid[i]
        if list(self._state_spec(hp)) != list(self._state_spec(current)):
            keys = self._spec_changers(current, hp)
            raise ValueError(
                f"{', '.join(keys)} cannot change after the optimizer is created (it decides "
                f"which state buffers exist: {list(self._state_spec(current))} -> "
                f"{list(self._state_spec(hp))}); create a new optimizer"
            )
        return hp

    def _revalidate(self, i: int) -> None:
        """Check a (possibly user-edited) group and store its options normalized."""
        group = self.param_groups[i]
        hp = self._check_options(i, group)
        group.update(hp)
        self._checked[i] = self._snapshot(group)
        self._valid[i] = hp
        self._kernels[i].clear()

    # -- stepping -----------------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients, as PyTorch's ``Optimizer.zero_grad``.

        ``set_to_none=True`` (default): every ``p.grad`` becomes ``None`` until a backward
        writes it, and :meth:`step` skips a parameter whose ``grad`` is still ``None`` (its
        values, state and step count stay as they are). ``set_to_none=False``: gradients are
        filled with zeros, so a parameter that gets no gradient takes the next step with
        ``g = 0`` (its moments decay, its step count advances).

        Either way the flat gradient buffer is filled with zeros (one fill per buffer; on
        minnet's pool each thread fills the rows it owns, see :meth:`FlatBuffers.zero_grad`):
        a backward adds into them once it has made the gradient visible again. A parameter
        that records which rows received a gradient (``grad_rows``: a sparse ``Embedding``'s
        weight) records none afterwards.
        """
        self._sync_groups()
        threads = _threads.pool_threads()
        for flat in self._groups:
            flat.zero_grad(threads, set_to_none)
        for p in self._all_params:
            if p.grad_rows is not None:
                p.grad_rows = np.empty(0, np.int64)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply one update to every parameter that has a gradient, in place (every group,
        every dtype). A parameter whose ``grad`` is ``None`` or whose ``requires_grad`` is
        false is skipped, as in PyTorch: its values, state and step count stay as they are.

        ``closure``, as in PyTorch, is called first (it should recompute the loss and the
        gradients) and its value is returned. Options edited in ``param_groups`` are validated
        first; an invalid edit raises and changes nothing. It also lets the thread policy sample
        the machine (:func:`minnet.threads.tick`, at most every 0.1 s).
        """
        _threads.tick()
        loss = closure() if closure is not None else None
        undo: list[Callable[[], None]] = []
        plans = self._plan_step(undo)
        track = self.track_stats
        if self.check_finite:
            try:
                self._refuse_nonfinite(plans)
            except FloatingPointError:
                for restore in undo:
                    restore()
                raise
        n_dominated = n_nonfinite = n_underflow = n_lost = 0
        sum_sq = 0.0
        per_tensor = self._per_tensor
        if per_tensor:
            n_dominated, n_nonfinite, sum_sq, n_underflow, n_lost = self._step_per_tensor(plans)
        threads = _threads.pool_threads()
        for _, flat, run_kernel, runs in plans:
            if not runs or per_tensor:
                continue
            scratch = flat.ensure_scratch() if track else flat.scratch
            pooled = flat.formats is None or not track  # 16-bit: the 5 counts are not summed
            first = runs[0]
            if (
                threads > 1
                and pooled
                and flat.size >= _pool.OPTIM_MIN_SIZE
                and all(r.step == first.step and r.state == first.state for r in runs)
            ):
                # minnet's pool (minnet._pool): thread t updates the rows it owns of every
                # parameter, the rows whose gradient it computed in a pooled Linear backward
                # (16-bit layers keep the serial route, but their optimizer step is split the
                # same way: every kernel is elementwise, so the bits do not depend on it).
                segs = flat.thread_segments(threads)
                counts = _pool.optimizer_step(run_kernel, flat.args, scratch, first.scalars, segs)
                if counts is not None:
                    n_dominated += counts[0]
                    n_nonfinite += counts[1]
                    sum_sq += counts[2]
                    continue
            for run in runs:
                args = run.args
                run_scratch = scratch[: args[0].size] if track else scratch
                counts = run_kernel(*args, run_scratch, run.scalars)
                n_dominated += counts[0]
                n_nonfinite += counts[1]
                sum_sq += counts[2]
                if len(counts) > 3:
                    n_underflow += counts[3]
                    n_lost += counts[4]
        self._finish_step(plans, (n_dominated, n_nonfinite, sum_sq, n_underflow, n_lost))
        return loss

    def _plan_step(
        self, undo: list[Callable[[], None]] | None = None
    ) -> list[tuple[int, FlatBuffers, Any, list[_Run]]]:
        """The first half of :meth:`step`, for a subclass that overrides it (SparseAdam): sync
        and revalidate the groups, check the buffers are bound, and return one plan per flat
        buffer, ``(group index, buffer, kernel, runs)``: its kernel (built, not yet compiled)
        and, per run of parameters that take the step with one step count (the whole buffer,
        usually), a :class:`_Run` with the step's constants. Each run's :meth:`_prepare_run`
        is called here; the undo functions it returns are appended to ``undo``."""
        self._sync_groups()
        groups = self.param_groups
        checked = self._checked
        for i, group in enumerate(groups):
            if self._snapshot(group) != checked[i]:
                self._revalidate(i)
        for flat in self._groups:
            flat.check_bound()
        track = self.track_stats
        reduce = self.rule is not None and self.rule.reduce is not None
        plans: list[tuple[int, FlatBuffers, Any, list[_Run]]] = []
        for i, group in enumerate(groups):
            for flat in self._flats[i]:
                kernel = self._kernel_of(i, track, True, flat.formats)
                runs = []
                for args, js, before, group_state in flat.step_runs():
                    if before == 0 and self._param_state:
                        self._start_from_param(flat, js)
                    step = before + 1
                    if reduce:
                        new = group_state  # the reduction's pass first (_reduce_plans)
                        scalars = self._scalars(group, flat.compute_dtype, step, group_state)
                    elif group_state:
                        new = self._advance_group_state(group, group_state, step)
                        scalars = self._scalars(group, flat.compute_dtype, step, new)
                    else:
                        new = group_state
                        scalars = self._scalars(group, flat.compute_dtype, step)
                    runs.append(_Run(args, js, step, new, scalars))
                    restore = self._prepare_run(group, flat, js, step)
                    if restore is not None and undo is not None:
                        undo.append(restore)
                plans.append((i, flat, kernel, runs))
        if reduce:
            plans = self._reduce_plans(plans)
        return plans

    def _finish_step(
        self, plans: list[tuple[int, FlatBuffers, Any, list[_Run]]],
        counts: tuple[int, int, float, int, int],
    ) -> None:  # fmt: skip
        """The last part of :meth:`step`: advance the step counts of every run of ``plans``
        and, with ``track_stats``, record :attr:`stats` from the summed kernel ``counts``
        ``(eps_dominated, nonfinite, sum of squares, underflow, lost updates)``."""
        for _, flat, _, runs in plans:
            for run in runs:
                flat.advance(run.js, run.state)
        if self.track_stats:
            n_dominated, n_nonfinite, sum_sq, n_underflow, n_lost = counts
            n = sum(flat.n_trainable for flat in self._groups)
            self.stats = OptimizerStats(
                self.step_count,
                n_dominated / n if n else 0.0,
                n_nonfinite,
                math.sqrt(sum_sq / n) if n else 0.0,
                n,
                n_underflow,
                n_lost,
            )

    def _reduce_plans(
        self, plans: list[tuple[int, FlatBuffers, Any, list[_Run]]]
    ) -> list[tuple[int, FlatBuffers, Any, list[_Run]]]:
        """A rule with a global reduction: its read-only pass over every run (the scalars of
        each run computed from its group state before the step), the one new group state from
        all the sums (:meth:`_reduce_group_state`), and each run's update scalars from it."""
        parts = []
        for i, flat, _, runs in plans:
            group = self.param_groups[i]
            reduce = reduce_kernel(self.rule, self._options(group, flat.formats), flat.formats)
            for run in runs:
                sums = reduce(*run.args, run.scalars)
                parts.append((group, run.step, run.state, tuple(float(x) for x in sums)))
        if not parts:
            return plans
        new = self._reduce_group_state(parts)
        out = []
        for i, flat, run_kernel, runs in plans:
            group = self.param_groups[i]
            done = [
                run._replace(state=new, scalars=self._scalars(
                    group, flat.compute_dtype, run.step, run.state, new))
                for run in runs
            ]  # fmt: skip
            out.append((i, flat, run_kernel, done))
        return out

    def _reduce_group_state(
        self, parts: list[tuple[Mapping[str, Any], int, Mapping[str, float], tuple[float, ...]]]
    ) -> dict[str, float]:
        """A rule with a global reduction: the group state after this step, from ``(group,
        step, group state before it, sums)`` of every run (module docstring)."""
        raise NotImplementedError

    #: A rule with a global reduction: its NumPy reference, ``(param, grad, state, s, o) ->
    #: tuple of sums`` (float64).
    reduce_reference: Callable[..., tuple[float, ...]] | None = None

    def _start_from_param(self, flat: FlatBuffers, js: list[int]) -> None:
        """Copy parameters ``js`` (a contiguous run before its first step) into the state arrays
        named by :attr:`_param_state`."""
        lo = flat.offsets[js[0]]
        hi = flat.offsets[js[-1]] + flat.sizes[js[-1]]
        for name in self._param_state:
            flat.state[name][lo:hi] = flat.data[lo:hi].astype(flat.state[name].dtype)

    def _tensor_spec(self) -> dict[str, float]:
        """The per-tensor stage's scalar state, ``{name: initial value}`` (``Tensor.state``);
        empty for a rule without one."""
        if self.rule is None or self.rule.tensor is None:
            return {}
        return dict(self.rule.tensor.state)

    def _step_per_tensor(
        self, plans: list[tuple[int, FlatBuffers, Any, list[_Run]]]
    ) -> tuple[int, int, float, int, int]:
        """:meth:`step`'s kernel calls for a rule with a per-tensor stage: one call per run of
        parameters (the whole buffer, usually), each parameter a tensor (its segment of the
        flat buffer, :meth:`FlatBuffers.bounds`); the summed counts. Serial: the pool's row
        split would cut the tensors whose norms the stage takes."""
        counts = [0, 0, 0.0, 0, 0]
        for _, flat, run_kernel, runs in plans:
            scratch = flat.ensure_scratch()
            for run in runs:
                args, js = run.args, run.js
                got = run_kernel(*args, scratch[: args[0].size], run.scalars,
                                 record=flat.tensor_norms[js[0] : js[-1] + 1],
                                 **self._tensor_keywords(flat, js))  # fmt: skip
                for k, c in enumerate(got):
                    counts[k] += c
        return tuple(counts)  # type: ignore[return-value]

    def _tensor_keywords(self, flat: FlatBuffers, js: list[int]) -> dict[str, Any]:
        """The keywords of a per-tensor or shaped kernel's call over parameters ``js`` (a
        contiguous run) of ``flat``: the tensors' ``bounds``, and the parameters' ``shapes``
        (a shaped update) or the stage's ``tensor_state`` rows."""
        if self.shaped is not None:
            return {"bounds": flat.bounds(js), "shapes": [flat.params[j].data.shape for j in js]}
        return {"bounds": flat.bounds(js), "tensor_state": flat.tensor_state[js[0] : js[-1] + 1]}

    def _kernel_of(
        self, i: int, track: bool, write: bool, formats: StorageFormats | None = None
    ) -> Callable[..., Any]:
        """Group ``i``'s kernel for these flags and storage formats (looked up once per
        validated options); ``formats`` is ``None`` for float32/float64 buffers."""
        kernels = self._kernels[i]
        kernel = kernels.get((track, write, formats))
        if kernel is None:
            group = self.param_groups[i]
            if formats is None:
                kernel = self._kernel(group, track, write)
            else:
                kernel = self._kernel(group, track, write, formats)  # type: ignore[call-arg]
            kernels[track, write, formats] = kernel
        return kernel

    def _refuse_nonfinite(self, plans: list[tuple[int, FlatBuffers, Any, list[_Run]]]) -> None:
        """Dry-run the step; if a parameter or a state value would end non-finite, raise and
        change nothing."""
        bad = []
        for i, flat, _, runs in plans:
            dry = self._kernel_of(i, True, False, flat.formats)
            scratch = flat.ensure_scratch()
            tensor = self._per_tensor
            for run in runs:
                a = run.args
                extra = self._tensor_keywords(flat, run.js) if tensor else {}
                if dry(*a, scratch[: a[0].size], run.scalars, **extra)[1] == 0:
                    continue
                # Rare path: find which parameters, and why, one slice at a time.
                for j in run.js:
                    args = flat.param_slices(j)
                    one = self._tensor_keywords(flat, [j]) if tensor else {}
                    n_bad = dry(*args, scratch[: flat.sizes[j]], run.scalars, **one)[1]
                    if n_bad:
                        p = flat.params[j]
                        scalars = dict(zip(flat.tensor_spec, map(np.asarray, flat.tensor_state[j])))
                        bad.append((i, p, n_bad, flat.param_slices(j, typed=True), run.step,
                                    scalars))  # fmt: skip
        self._raise_nonfinite(bad)

    def _raise_nonfinite(self, bad: list[tuple[Any, ...]]) -> None:
        """``check_finite``'s ``FloatingPointError`` for the parameters a dry run found,
        ``(group index, parameter, non-finite count, its typed (data, grad, *state) slices,
        step, its per-tensor scalars by name)`` each, naming the likely cause; nothing when
        ``bad`` is empty."""
        if not bad:
            return
        parts = []
        causes = set()
        for i, p, n_bad, (data, grad, *arrays), _, scalars in bad:
            name = p.name or "?"
            parts.append(f"{name} ({n_bad} of {p.data.size} elements)")
            if not np.isfinite(grad).all():
                causes.add(f"{name} has a NaN or infinite gradient")
            elif not np.isfinite(data).all():
                causes.add(f"{name} was already NaN or infinite before this step")
            elif not all(np.isfinite(a).all() for a in arrays):
                causes.add(f"the optimizer state of {name} was already NaN or infinite")
            else:
                group = self.param_groups[i]
                state = {**dict(zip(self._state_spec(group), arrays)), **scalars}
                cause = self._nonfinite_cause(group, name, grad, state)
                causes.add(cause or f"the update of {name} overflows; lower the learning rate")
        step = max(b[4] for b in bad)
        raise FloatingPointError(
            f"{type(self).__name__} (check_finite=True): step {step} would make parameters "
            "or optimizer state non-finite: " + ", ".join(parts) + ". Likely cause: "
            + "; ".join(sorted(causes)) + ". Parameters and optimizer state are unchanged."
        )  # fmt: skip

    # -- what eps does (for the lab) ----------------------------------------------------------

    #: The constructor argument that plays eps's role: the one the lab sweeps as eps and
    #: :meth:`eps_compared_with` describes. ``"eps"`` for every optimizer with an eps; an
    #: optimizer whose library has no argument of that name names its own (Keras's FTRL:
    #: ``"initial_accumulator_value"``). An optimizer without it in its signature has no eps.
    eps_arg: str = "eps"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """What eps is added to or compared with for these group options, as short text
        (``"sqrt(v_hat)"``); ``None`` when the update has no eps (this default)."""
        return None

    def eps_compared_with(self, group: int = 0) -> str | None:
        """What eps is added to or compared with in group ``group``'s update (the quantity
        behind ``stats.eps_dominated``), as short text; ``None`` without eps."""
        return self.eps_compared_with_options(self.param_groups[group])

    def _multipliers(
        self,
        group: Mapping[str, Any],
        state: dict[str, np.ndarray],
        step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> np.ndarray | None:
        """``k`` over one run of coordinates (float64) after step ``step``: the rule's
        ``multiplier`` run by NumPy on the float64 state with that step's float64 constants;
        ``None`` when the rule has none."""
        rule = self.rule
        if rule is None or rule.multiplier is None:
            return None
        f64 = np.dtype(np.float64)
        if group_state:
            s = self._scalars(group, f64, step, group_state)  # type: ignore[call-arg]
        else:
            s = self._scalars(group, f64, step)
        o = self._options(group)
        if rule.branch is not None:
            o = (*o, bool(numpy_rule(rule.branch)(s)))
        arrays = tuple(a.astype(np.float64) for a in state.values())
        with np.errstate(all="ignore"):
            k = numpy_rule(rule.multiplier)(arrays, s, o)
        if k is None:
            return None
        return np.broadcast_to(np.asarray(k, np.float64), arrays[0].shape).copy()

    def multipliers(self) -> np.ndarray | None:
        """The per-coordinate step multiplier ``k`` in ``param -= lr * k * m_hat`` (``1 /
        (denominator including eps)``) after the latest step, as a float64 array over every
        parameter in state-dict index order; ``None`` when the update has no eps. It comes from
        the rule (``Rule.multiplier``, the same piece the update divides by). Each parameter's
        multiplier uses its own step count; a parameter that no step has updated yet gets NaN.
        Raises ``ValueError`` before the first step."""
        if self.step_count == 0:
            raise ValueError("multipliers() needs at least one optimizer step")
        per_param: dict[int, np.ndarray] = {}
        for i, group in enumerate(self.param_groups):
            for flat in self._flats[i]:
                full = self._multiplier_state(flat)
                steps, states = flat.steps, flat.group_states
                shaped = self.shaped is not None  # its state goes to it shaped as the parameter
                if not shaped and steps and all(t == steps[0] > 0 and g == states[0]
                                                for t, g in zip(steps, states)):  # fmt: skip
                    k = self._multipliers(group, full, steps[0], states[0])
                    if k is None:
                        return None
                    parts = [k[off : off + size] for off, size in zip(flat.offsets, flat.sizes)]
                else:  # one parameter at a time: step counts differ, or a shaped update
                    parts = []
                    for j, (t, g) in enumerate(zip(steps, states)):
                        lo, size = flat.offsets[j], flat.sizes[j]
                        if t == 0:
                            parts.append(np.full(size, np.nan))
                            continue
                        shape = flat.params[j].data.shape if shaped else (size,)
                        state = {n: a[lo : lo + size].reshape(shape) for n, a in full.items()}
                        k = self._multipliers(group, state, t, g)
                        if k is None:
                            return None
                        parts.append(np.asarray(k, np.float64).reshape(-1))
                for p, k in zip(flat.params, parts):
                    per_param[self._index[id(p)]] = k
        return np.concatenate([per_param[j] for j in range(len(self._all_params))])

    def _multiplier_state(self, flat: FlatBuffers) -> dict[str, np.ndarray]:
        """The arrays :meth:`_multipliers` gets: the state, and for a rule with a per-tensor
        stage also ``"param_norm"`` and ``"update_norm"``, each tensor's norms of its latest
        step (``FlatBuffers.tensor_norms``), and its per-tensor scalar state by name, each
        repeated over the tensor's coordinates."""
        if self.rule is None or self.rule.tensor is None:
            return flat.state
        norms = flat.tensor_norms
        scalars = {name: np.repeat(flat.tensor_state[:, q], flat.sizes)
                   for q, name in enumerate(flat.tensor_spec)}  # fmt: skip
        return {
            **flat.state,
            "param_norm": np.repeat(norms[:, 0], flat.sizes),
            "update_norm": np.repeat(norms[:, 1], flat.sizes),
            **scalars,
        }

    #: Another way out than ``eps > 0``, for the message of :meth:`_nonfinite_cause`.
    _eps0_advice = ""

    def _nonfinite_cause(
        self, group: Mapping[str, Any], name: str, grad: np.ndarray, state: dict[str, np.ndarray]
    ) -> str | None:
        """Why ``check_finite`` refused parameter ``name``, where the rule's second moment
        (:attr:`Rule.second_moment`) meets eps: ``rounding="per_op"`` rounds eps to 0 in a 16-bit
        state (``g/0``), or ``eps=0`` where the moment and the gradient are 0 (0/0 = NaN)."""
        k = -1 if self.rule is None else self.rule.second_moment
        eps = group.get("eps")
        if k < 0 or self.eps_compared_with_options(group) is None:
            return None
        key = list(state)[k]
        dt = state[key].dtype
        if eps and self.rounding == "per_op" and is_16bit(dt):
            with np.errstate(under="ignore"):
                stored = float(np.float32(eps).astype(dt))
            if stored == 0:
                return (
                    f"eps={eps} is 0 in {'bfloat16' if is_bfloat16(dt) else dt} and "
                    "rounding='per_op' adds it in the state dtype, so where "
                    f"{key} of {name} is or underflows to 0 the update is g/0 = inf (0/0 = NaN "
                    "for a zero gradient); use a larger eps, state_dtype='float32' or "
                    "rounding='fused'"
                )
        if eps == 0 and ((state[key] == 0) & (grad == 0)).any():
            return (
                f"eps=0 and some coordinates of {name} have only ever had zero gradient ({key} "
                f"= 0), so their update is 0/0 = NaN; use eps > 0{self._eps0_advice}"
            )
        return None

    def _prepare_run(self, group: Mapping[str, Any], flat: FlatBuffers, js: list[int],
                     step: int) -> Callable[[], None] | None:  # fmt: skip
        """Write what the kernel reads but cannot compute into the state arrays of parameters
        ``js`` of ``flat`` before step ``step``, and return how to undo it if ``check_finite``
        refuses the step (module docstring); nothing by default."""
        return None

    def _group_state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {}

    def _advance_group_state(
        self, group: Mapping[str, Any], state: Mapping[str, float], step: int
    ) -> dict[str, float]:
        return dict(state)

    # -- the subclass contract (see the module docstring) ----------------------------------

    #: Each option's check, ``{name: check(value) -> normalized value}``, in PyTorch's order of
    #: checks (so that the first error is PyTorch's). Options not listed are flags
    #: (:func:`check_bool`), or ``eps_mode`` (one of :attr:`eps_modes`).
    checks: Mapping[str, Callable[[Any], Any]] = {}

    def _validate(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """One group's options checked by :attr:`checks` and :meth:`_check_group`, normalized,
        in ``defaults`` order."""
        hp = {name: check(group[name]) for name, check in self.checks.items()}
        for name in self._keys:
            if name not in hp:
                value = group[name]
                hp[name] = (
                    check_choice(name, value, self.eps_modes)
                    if name == "eps_mode"
                    else check_bool(name, value)
                )
        self._check_group(hp)
        return {name: hp[name] for name in self._keys}

    def _check_group(self, hp: Mapping[str, Any]) -> None:
        """Checks that involve several (already normalized) options; raise ``ValueError``."""

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> Any:
        raise NotImplementedError

    #: The element rule of the update (:class:`minnet.optim._kernel.Rule`).
    rule: Rule | None = None
    #: A shaped update instead of an element rule (:mod:`minnet.optim._shaped`: NumPy over
    #: each parameter's shaped views; Adafactor), a plain function; ``None`` for every
    #: elementwise optimizer.
    shaped: Callable[..., int] | None = None

    @property
    def _per_tensor(self) -> bool:
        """Whether a step runs per tensor (a per-tensor stage or a shaped update): serially,
        one call per run of parameters with their bounds."""
        return self.shaped is not None or (self.rule is not None and self.rule.tensor is not None)
    #: The values of the ``eps_mode`` keyword, default first; ``()`` without one.
    eps_modes: tuple[str, ...] = ()

    def _options(
        self, group: Mapping[str, Any], formats: StorageFormats | None = None
    ) -> tuple[Any, ...]:
        """The rule's compile-time options for a group (eps placement, variant flags) and
        storage formats (``None``: float32/float64 buffers)."""
        return ()

    #: The optimizer's name in "PyTorch has no ..." when PyTorch lacks it, so that
    #: ``rounding="per_op"`` (PyTorch's op-by-op rounding) has no model for any of its groups;
    #: ``None`` for an optimizer PyTorch has.
    no_pytorch: str | None = None

    def _per_op_refusal(self, group: Mapping[str, Any]) -> str | None:
        """Why ``rounding="per_op"`` has no model for this group's variant, or ``None``: by
        default, for an optimizer PyTorch lacks (:attr:`no_pytorch`), the one message."""
        if self.no_pytorch is None:
            return None
        return (
            f"{type(self).__name__}: rounding='per_op' rounds every op in the order of "
            f"PyTorch's for-loop implementation, and PyTorch has no {self.no_pytorch}; use "
            "rounding='fused' (per_op exists for the optimizers PyTorch has)"
        )

    def _refuse_per_op(self, group: Mapping[str, Any], formats: StorageFormats | None) -> None:
        if formats is not None and formats.rounding == "per_op":
            why = self._per_op_refusal(group)
            if why is not None:
                raise ValueError(why)

    def _kernel(
        self,
        group: Mapping[str, Any],
        track: bool,
        write: bool,
        formats: StorageFormats | None = None,
    ) -> Callable[..., Any]:
        """The rule's compiled pass for a group, flags and storage formats (``None``:
        float32/float64 buffers): ``kernel(param, grad, *state, scratch, scalars)``."""
        self._refuse_per_op(group, formats)
        options = self._options(group, formats)
        negate = bool(group.get("maximize"))
        if self.shaped is not None:
            return shaped_kernel(type(self).shaped, options, track, write, formats, negate)
        return kernel(self.rule, options, track, write, formats, negate)

    #: The hand-written NumPy update of whole float arrays, in place:
    #: ``reference(param, grad, state, s, o)`` with the rule's arguments (``state`` a tuple of
    #: arrays, ``s`` the step's constants, ``o`` the group's :meth:`_options`).
    reference: Callable[..., None] | None = None

    def _float_reference(self, group: Mapping[str, Any]) -> Callable[..., None]:
        """:attr:`reference` for a group, as ``ref(param, grad, *state, scalars)``."""
        ref, o = type(self).reference, self._options(group)
        assert ref is not None, f"{type(self).__name__} has no reference"
        return lambda param, grad, *rest, **kw: ref(param, grad, rest[:-1], rest[-1], o, **kw)

    def _reference(
        self, group: Mapping[str, Any], formats: StorageFormats | None = None
    ) -> Callable[..., None]:
        """``ref(param, grad, *state, scalars)``, in place: the hand-written float reference,
        or for 16-bit ``formats`` the rule itself run by NumPy (:mod:`minnet.optim._reference`)."""
        maximize = bool(group.get("maximize"))
        if formats is None:
            ref = self._float_reference(group)
            if not maximize:
                return ref
            return lambda param, grad, *rest, **kw: ref(param, -grad, *rest, **kw)
        self._refuse_per_op(group, formats)
        if self.shaped is not None:
            return shaped_reference(type(self).shaped, self._options(group, formats), formats,
                                    maximize)  # fmt: skip
        return rule_reference(self.rule, self._options(group, formats), formats, maximize)

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state in PyTorch's layout, as copies.

        ``{"state": {i: {"step": float, <state name>: array, ...}}, "param_groups": [{<every
        option>, "params": [i, ...]}]}`` where ``i`` numbers the parameters across all groups
        in order. ``"step"`` is the parameter's own step count (the steps that updated it:
        a step skips a parameter whose ``grad`` is ``None`` or that is frozen); a parameter
        that no step has updated has no entry in ``"state"``, as PyTorch's state is created at
        a parameter's first step.
        """
        self._sync_groups()
        state: dict[int, dict[str, Any]] = {}
        groups = []
        for i, group in enumerate(self.param_groups):
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [self._index[id(p)] for p in group["params"]]
            groups.append(packed)
            for flat in self._flats[i]:
                if not any(flat.steps):
                    continue
                views = {name: flat.views(name) for name in flat.state}
                for j, p in enumerate(flat.params):
                    if flat.steps[j] == 0:
                        continue
                    entry: dict[str, Any] = {"step": float(flat.steps[j])}
                    entry.update(flat.group_states[j])
                    for name in flat.state:
                        entry[name] = views[name][j].copy()
                    for q, name in enumerate(flat.tensor_spec):  # a per-tensor stage's scalars
                        entry[name] = float(flat.tensor_state[j, q])
                    state[self._index[id(p)]] = entry
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`: options, step counts and state arrays.

        Saved parameters map to this optimizer's by position, group by group (as PyTorch).
        Everything is checked before anything is written, so a bad dict leaves the optimizer
        as it was. Raises ``ValueError`` naming what does not fit.
        """
        owner = type(self).__name__
        self._sync_groups()
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(
                f"{owner}.load_state_dict expects keys ['param_groups', 'state'], got {got}"
            )
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)) or not all(
            isinstance(g, dict) for g in saved_groups
        ):
            raise ValueError("loaded 'param_groups' must be a list of dicts")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, this optimizer "
                f"has {len(self.param_groups)}"
            )
        state = state_dict["state"]
        if not isinstance(state, dict):
            raise ValueError(f"loaded 'state' must be a dict, got {type(state).__name__}")
        try:
            state = {int(k): v for k, v in state.items()}
        except (TypeError, ValueError):
            raise ValueError(
                f"loaded state keys must be parameter indices, got {sorted(map(str, state))}"
            ) from None
        new_groups: list[dict[str, Any]] = []
        new_steps: dict[int, int] = {}  # by id(parameter)
        new_group_states: dict[int, dict[str, float]] = {}
        tensor_spec = self._tensor_spec()
        new_tensor_states: dict[int, list[float]] = {}  # a per-tensor stage's scalars
        loaded: dict[int, dict[str, np.ndarray]] = {}  # converted copies, written at the end
        used_ids: set[int] = set()
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            params = group["params"]
            ids = saved.get("params")
            if not isinstance(ids, (list, tuple)):
                raise ValueError(f"loaded param group {i} lacks a 'params' list")
            if len(ids) != len(params):
                raise ValueError(
                    f"loaded state dict has {len(ids)} parameters in group {i}, this "
                    f"optimizer has {len(params)}"
                )
            if not all(_is_real_number(k) and int(k) == k for k in ids) or len(
                set(map(int, ids))
            ) != len(ids):
                raise ValueError(f"loaded param group {i} has bad parameter indices {ids}")
            ids = [int(k) for k in ids]
            if not used_ids.isdisjoint(ids):
                raise ValueError("loaded param groups share parameter indices")
            used_ids.update(ids)
            optional = {*self._load_optional, "maximize"}  # PyTorch fills these in __setstate__
            missing = [k for k in self._keys if k not in saved and k not in optional]
            if missing:
                raise ValueError(f"loaded param group lacks {missing}")
            self._refuse_other_options(saved)
            candidate = {k: v for k, v in saved.items() if k != "params"}
            for k in self._keys:
                candidate.setdefault(k, self.defaults[k])
            hp = self._validate(candidate)
            candidate.update(hp)
            current = self._valid[i]
            if list(self._state_spec(hp)) != list(self._state_spec(current)):
                keys = self._spec_changers(current, hp)
                have = ", ".join(f"{k}={current[k]}" for k in keys)
                got = ", ".join(f"{k}={hp[k]}" for k in keys)
                raise ValueError(
                    f"loaded state has {got} but this optimizer has {have}; create the "
                    "optimizer with the same setting"
                )
            candidate["params"] = params
            new_groups.append(candidate)
            spec_state = dict(self._group_state_spec(current))
            names = list(self._state_spec(current))
            for k, p in zip(ids, params):
                if k not in state:  # a parameter no step has updated (PyTorch: no state)
                    new_steps[id(p)] = 0
                    new_group_states[id(p)] = spec_state
                    new_tensor_states[id(p)] = list(tensor_spec.values())
                    continue
                entry = state[k]
                if not isinstance(entry, dict):
                    raise ValueError(f"loaded state for parameter {k} must be a dict")
                value = entry.get("step", self._missing_step(entry))
                if value is None:
                    raise ValueError(f"loaded state for parameter {k} lacks 'step'")
                extra = sorted(n for n, v in entry.items() if v is not None and n != "step"
                               and n not in names and n not in spec_state
                               and n not in tensor_spec)  # fmt: skip
                if extra:
                    raise ValueError(
                        f"loaded state for parameter {k} has {extra}, which {owner} "
                        f"({', '.join(f'{o}={current[o]}' for o in self._keys)}) does not "
                        f"keep (it keeps {names}); it was saved by another optimizer or setting"
                    )
                value = value.item() if isinstance(value, np.ndarray) and value.size == 1 else value
                if not _is_real_number(value) or not (
                    math.isfinite(value) and value >= 0 and float(value) == math.floor(value)
                ):
                    raise ValueError(
                        f"loaded step count for parameter {k} must be a non-negative integer, "
                        f"got {value!r}"
                    )
                new_steps[id(p)] = int(value)
                group_state = dict(spec_state)
                for name in group_state:
                    if name not in entry:
                        raise ValueError(f"loaded state for parameter {k} lacks '{name}'")
                    value = entry[name]
                    if isinstance(value, np.ndarray) and value.size == 1:
                        value = value.item()
                    if not _is_real_number(value) or not math.isfinite(value):
                        raise ValueError(
                            f"loaded '{name}' for parameter {k} must be a finite real number, "
                            f"got {value!r}"
                        )
                    group_state[name] = float(value)
                new_group_states[id(p)] = group_state
                scalars = []
                for name in tensor_spec:
                    if name not in entry:
                        raise ValueError(f"loaded state for parameter {k} lacks '{name}'")
                    value = entry[name]
                    if isinstance(value, np.ndarray) and value.size == 1:
                        value = value.item()
                    if not _is_real_number(value):
                        raise ValueError(
                            f"loaded '{name}' for parameter {k} must be a real number, "
                            f"got {value!r}"
                        )
                    scalars.append(float(value))
                new_tensor_states[id(p)] = scalars
                arrays = {}
                for name in names:
                    if name not in entry:
                        raise ValueError(f"loaded state for parameter {k} lacks '{name}'")
                    arr = np.asarray(entry[name])
                    where = f"loaded state '{name}' for parameter {k} ({p.name or '?'})"
                    if arr.dtype.kind not in "fiu" and not is_bfloat16(arr.dtype):
                        raise ValueError(f"{where} has dtype {arr.dtype}, expected real numbers")
                    if arr.shape != p.data.shape:
                        raise ValueError(f"{where} has shape {arr.shape}, expected {p.data.shape}")
                    arrays[name] = arr.astype(self._state_dtype_for(p.data.dtype))
                loaded[id(p)] = arrays
        unknown = sorted(set(state) - used_ids)
        if unknown:
            raise ValueError(f"loaded state has entries for unknown parameters {unknown}")
        # Every check passed: write.
        for i, (group, new) in enumerate(zip(self.param_groups, new_groups)):
            group.clear()
            group.update(new)
            self._checked[i] = self._snapshot(group)
            self._valid[i] = {k: group[k] for k in self._keys}
            self._kernels[i].clear()
            for flat in self._flats[i]:
                flat.reset_state()
                flat.steps = [new_steps[id(p)] for p in flat.params]
                flat.group_states = [new_group_states[id(p)] for p in flat.params]
                if tensor_spec:
                    flat.tensor_state[...] = [new_tensor_states[id(p)] for p in flat.params]
                flat.check_uniform()
                for name in flat.state:
                    for p, view in zip(flat.params, flat.views(name)):
                        if id(p) in loaded:
                            view[...] = loaded[id(p)][name]
        self.stats = None

    def _missing_step(self, entry: Mapping[str, Any]) -> int | None:
        """The step count of a loaded state entry without ``"step"``, or ``None`` (refused).
        PyTorch's SGD keeps no step: :class:`~minnet.optim.sgd.SGD` infers it."""
        return None

    def _refuse_other_options(self, saved: Mapping[str, Any]) -> None:
        """Refuse a loaded param group that holds another optimizer's options (Adam's
        ``amsgrad`` in RAdam's, Adam's ``eps`` in Lion's): it was saved by another class. Keys
        that no minnet optimizer has (a scheduler's ``initial_lr``, a user's own) are kept,
        as PyTorch keeps them."""
        known: dict[str, list[str]] = {}
        todo = list(Optimizer.__subclasses__())
        while todo:
            cls = todo.pop()
            todo.extend(cls.__subclasses__())
            for name in cls._option_names():
                known.setdefault(name, []).append(cls.__name__)
        other = sorted(k for k in saved if k in known and k not in self._keys)
        if other:
            owners = sorted({c for k in other for c in known[k]})
            raise ValueError(
                f"loaded param group has {other}, options of {', '.join(owners)} that "
                f"{type(self).__name__} does not have: the state dict was saved by another "
                "optimizer"
            )

    @classmethod
    def _option_names(cls) -> tuple[str, ...]:
        """The options a class takes (its constructor's keywords that are group options)."""
        init = cls.__dict__.get("__init__")
        if init is None:
            return ()
        skip = {"self", "params", *TorchOptions.__annotations__}
        return tuple(n for n in inspect.signature(init).parameters if n not in skip)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

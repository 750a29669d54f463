r"""Learning-rate schedulers with PyTorch's API, semantics and formulas.

The schedules of ``torch.optim.lr_scheduler`` people use, with the same names and arguments.

A scheduler only reads and writes ``optimizer.param_groups``: a list of dicts, each with an
``"lr"`` (and ``"betas"`` or ``"momentum"`` for :class:`OneCycleLR` with ``cycle_momentum``). Any
minnet optimizer works, with one parameter group or several; so does any object with such a
``param_groups`` list.

The protocol is PyTorch's:

- Construction with ``last_epoch=-1`` stores each group's current ``lr`` as ``group["initial_lr"]``
  (unless already there), copies those into ``base_lrs``, and takes an initial step that sets
  ``last_epoch`` to 0 and writes the epoch-0 learning rate into every group.
- Call :meth:`LRScheduler.step` once per epoch (or per batch), *after* ``optimizer.step()``. It adds
  one to ``last_epoch`` and writes the new learning rates. Most schedules are *chainable*: the new
  lr is computed from the group's current ``lr`` (so two schedulers on one optimizer multiply), and
  each also has PyTorch's closed form, used when ``step(epoch)`` is given an epoch (deprecated in
  PyTorch, kept here with the same warning).
- ``get_last_lr()`` returns the learning rates of the latest step; ``state_dict()`` is every
  attribute but the optimizer, and ``load_state_dict()`` restores them.

As PyTorch, a scheduler wraps its optimizer's ``step`` (on the instance) to notice whether it
ran: a first ``scheduler.step()`` before any ``optimizer.step()`` warns with PyTorch's message.
``verbose=`` (removed from PyTorch's schedulers after its deprecation) is accepted by every
scheduler for older PyTorch code, with PyTorch's deprecation warning when set.

Differences from PyTorch: ``lr`` values are Python floats (no tensor learning rates).
Where PyTorch accepts an argument that later divides by zero (``StepLR(step_size=0)``,
``CosineAnnealingLR(T_max=0)``), minnet raises a ``ValueError`` at construction instead.
"""

from __future__ import annotations

import functools
import math
import types
import warnings
import weakref
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, SupportsFloat

__all__ = [
    "LRScheduler",
    "ConstantLR",
    "PolynomialLR",
    "CosineAnnealingWarmRestarts",
    "ChainedScheduler",
    "CyclicLR",
    "LambdaLR",
    "StepLR",
    "MultiStepLR",
    "LinearLR",
    "ExponentialLR",
    "SequentialLR",
    "CosineAnnealingLR",
    "ReduceLROnPlateau",
    "OneCycleLR",
]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)


class OptimizerLike(Protocol):
    """What a scheduler needs: ``param_groups``, a list of dicts that each hold an ``"lr"``."""

    param_groups: list[dict[str, Any]]


def _check_optimizer(optimizer: Any) -> None:
    groups = getattr(optimizer, "param_groups", None)
    if (
        not isinstance(groups, list)
        or not groups
        or not all(isinstance(g, dict) and "lr" in g for g in groups)
    ):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _format_param(name: str, optimizer: OptimizerLike, param: Any) -> list[Any]:
    """One value per param group: a list/tuple must have one entry per group; a scalar is
    repeated (PyTorch's ``_format_param``, same message)."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has "
                f"{len(optimizer.param_groups)}."
            )
        return list(param)
    return [param] * len(optimizer.param_groups)


def _group_values(optimizer: OptimizerLike, key: str) -> list[Any]:
    return [group[key] for group in optimizer.param_groups]


def _positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


_STEP_BEFORE_OPTIMIZER = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
    "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
    "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
    "will result in PyTorch skipping the first value of the learning rate schedule. "
    "See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)
_STEP_OVERRIDDEN = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
    "initialization. Please, make sure to call `optimizer.step()` before "
    "`lr_scheduler.step()`. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)


def _patch_track_step_called(optimizer: Any) -> None:
    """Wrap ``optimizer.step`` (on the instance) so that it sets ``optimizer._opt_called``, as
    PyTorch's schedulers do; an optimizer whose ``step`` cannot be wrapped is left alone."""
    step = getattr(optimizer, "step", None)
    if step is None or hasattr(step, "_wrapped_by_lr_sched"):
        return
    func = getattr(step, "__func__", None)
    if func is None:
        return
    opt_ref = weakref.ref(optimizer)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opt = opt_ref()
        opt._opt_called = True  # type: ignore[union-attr]
        return func.__get__(opt, opt.__class__)(*args, **kwargs)

    wrapper._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    try:
        optimizer.step = wrapper
    except (AttributeError, TypeError):
        pass


def _warn_get_lr_called_within_step(scheduler: LRScheduler) -> None:
    if not scheduler._get_lr_called_within_step:
        warnings.warn(
            "To get the last learning rate computed by the scheduler, "
            "please use `get_last_lr()`.",
            UserWarning,
            stacklevel=3,
        )


def _accept_verbose(init: Callable[..., None]) -> Callable[..., None]:
    """Accept PyTorch's removed ``verbose=`` keyword (PyTorch 2.2-2.6 warned for any value
    but ``"deprecated"``, as this does); it prints nothing."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, verbose: Any = "deprecated", **kwargs: Any) -> None:
        if verbose != "deprecated":
            warnings.warn(
                "The verbose parameter is deprecated. Please use get_last_lr() to access the "
                "learning rate.",
                UserWarning,
                stacklevel=2,
            )
        init(self, *args, **kwargs)

    return wrapper


class LRScheduler:
    r"""Base class of the schedulers (PyTorch's ``torch.optim.lr_scheduler.LRScheduler``).

    Subclasses implement :meth:`get_lr`, the chainable rule giving the next lr of every group
    from ``last_epoch`` and the groups' current ``lr``, and optionally ``_get_closed_form_lr``,
    the same schedule as a function of ``last_epoch`` and ``base_lrs`` alone.

    Args:
        optimizer: an object with ``param_groups`` (list of dicts with ``"lr"``).
        last_epoch: index of the last epoch seen; ``-1`` (default) starts a new schedule. Any
            other value resumes one and needs ``"initial_lr"`` in every group (``KeyError``
            otherwise, with PyTorch's message).

    Raises:
        TypeError: if ``optimizer`` has no list ``param_groups`` of dicts with ``"lr"``
            (PyTorch's message: ``"<name> is not an Optimizer"``).
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _accept_verbose(init)  # type: ignore[method-assign]

    def __init__(self, optimizer: OptimizerLike, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                        "scheduler with last_epoch >= 0.\n"
                        "This typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't "
                        "properly loaded the optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run (not recommended)"
                    )
        self.base_lrs: list[float] = _group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        _patch_track_step_called(optimizer)
        self._initial_step()

    def _initial_step(self) -> None:
        """Reset the step count and take the construction step (``last_epoch`` -1 -> 0)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def state_dict(self) -> dict[str, Any]:
        """Every attribute of the scheduler except the optimizer (PyTorch's layout)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes from :meth:`state_dict`'s output."""
        self.__dict__.update(state_dict)

    def get_last_lr(self) -> list[float]:
        """The learning rates (one per param group) written by the latest step."""
        return list(self._last_lr)

    def get_lr(self) -> list[float]:
        """The next learning rate of every param group (called by :meth:`step`)."""
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule one epoch (``last_epoch += 1``) and write each group's ``lr``.

        Call it after ``optimizer.step()`` (a first call before it warns, as PyTorch).
        ``epoch`` (deprecated, with PyTorch's warning) sets ``last_epoch = epoch`` and uses the
        closed form where the scheduler has one.
        """
        if self._step_count == 1:
            if not hasattr(getattr(self.optimizer, "step", None), "_wrapped_by_lr_sched"):
                # replaced after construction (an optimizer that could not be wrapped has no
                # step of its own on the instance: nothing to say)
                if "step" in getattr(self.optimizer, "__dict__", {}):
                    warnings.warn(_STEP_OVERRIDDEN, UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, "_opt_called", False):
                warnings.warn(_STEP_BEFORE_OPTIMIZER, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed = getattr(self, "_get_closed_form_lr", None)
                values = closed() if closed is not None else self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        groups = self.optimizer.param_groups
        if len(values) != len(groups):
            raise ValueError(
                f"{type(self).__name__} computed {len(values)} learning rates for "
                f"{len(groups)} param groups"
            )
        for group, lr in zip(groups, values):
            group["lr"] = lr
        self._last_lr: list[float] = _group_values(self.optimizer, "lr")


class LambdaLR(LRScheduler):
    r"""Each group's lr is its initial lr times a function of the epoch.

    .. code-block:: text

        lr_t = initial_lr * lr_lambda(t)

    Args:
        optimizer: object with ``param_groups``.
        lr_lambda: a function of the integer epoch, or a list with one function per group.
        last_epoch: see :class:`LRScheduler`.

    Only callable objects (not plain functions or lambdas) have their ``__dict__`` saved by
    :meth:`state_dict`, as in PyTorch.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if not isinstance(lr_lambda, (list, tuple)):
            self.lr_lambdas: list[Callable[[int], float]] = [lr_lambda] * n
        else:
            if len(lr_lambda) != n:
                raise ValueError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Attributes except the optimizer; ``lr_lambdas`` holds each callable object's
        ``__dict__`` (``None`` for functions and lambdas)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes, and each callable object's ``__dict__``."""
        state = dict(state_dict)
        lr_lambdas = state.pop("lr_lambdas")
        self.__dict__.update(state)
        for idx, fn in enumerate(lr_lambdas):
            if fn is not None:
                self.lr_lambdas[idx].__dict__.update(fn)

    def get_lr(self) -> list[float]:
        """``base_lr * lr_lambda(last_epoch)`` for each group."""
        _warn_get_lr_called_within_step(self)
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]


class StepLR(LRScheduler):
    r"""Multiply each group's lr by ``gamma`` every ``step_size`` epochs.

    .. code-block:: text

        chainable:   lr_t = lr_{t-1} * gamma   if t > 0 and t % step_size == 0, else lr_{t-1}
        closed form: lr_t = initial_lr * gamma ** (t // step_size)

    Args:
        optimizer: object with ``param_groups``.
        step_size: period of the decay, a positive integer.
        gamma: multiplicative factor. Default ``0.1``.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        step_size: int,
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        _positive_int("StepLR", "step_size", step_size)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The chainable rule above."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Multiply each group's lr by ``gamma`` at every milestone (a repeated milestone counts
    as many times as it appears).

    .. code-block:: text

        chainable:   lr_t = lr_{t-1} * gamma ** (number of milestones equal to t)
        closed form: lr_t = initial_lr * gamma ** (number of milestones <= t)

    Args:
        optimizer: object with ``param_groups``.
        milestones: epoch indices (any order, repeats allowed).
        gamma: multiplicative factor. Default ``0.1``.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The chainable rule above."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch not in self.milestones:
            return _group_values(self.optimizer, "lr")
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        milestones = sorted(self.milestones.elements())
        k = bisect_right(milestones, self.last_epoch)
        return [base * self.gamma**k for base in self.base_lrs]


class LinearLR(LRScheduler):
    r"""Scale each group's lr by a factor that moves linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` epochs, then stays.

    .. code-block:: text

        closed form: lr_t = initial_lr * (start + (end - start) * min(t, total_iters) / total_iters)
        chainable:   lr_0 = lr * start
                     lr_t = lr_{t-1} * (1 + (end - start)
                                         / (total_iters * start + (t - 1) * (end - start)))
                            for 1 <= t <= total_iters, else lr_{t-1}

    Args:
        optimizer: object with ``param_groups``.
        start_factor: factor at epoch 0, in ``(0, 1]``. Default ``1/3``.
        end_factor: factor from epoch ``total_iters`` on, in ``[0, 1]``. Default ``1.0``.
        total_iters: length of the ramp. Default ``5``.
        last_epoch: see :class:`LRScheduler`.

    Raises:
        ValueError: with PyTorch's messages, for a factor out of range.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError(
                "Starting multiplicative factor expected to be greater than 0 and less or "
                "equal to 1."
            )
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The chainable rule above."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        delta = self.end_factor - self.start_factor
        factor = 1.0 + delta / (
            self.total_iters * self.start_factor + (self.last_epoch - 1) * delta
        )
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        delta = self.end_factor - self.start_factor
        frac = min(self.total_iters, self.last_epoch) / self.total_iters
        return [base * (self.start_factor + delta * frac) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    r"""Multiply each group's lr by ``gamma`` every epoch.

    .. code-block:: text

        chainable:   lr_t = lr_{t-1} * gamma   (t >= 1)
        closed form: lr_t = initial_lr * gamma ** t

    Args:
        optimizer: object with ``param_groups``.
        gamma: multiplicative factor.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(self, optimizer: OptimizerLike, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The chainable rule above."""
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the initial lr down to ``eta_min`` over ``T_max`` epochs (SGDR
    without restarts), in PyTorch's recursive form.

    .. code-block:: text

        closed form: lr_t = eta_min + (initial_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2

        recursive (what step() computes, as PyTorch does):
            lr_t = lr_{t-1} + (initial_lr - eta_min) * (1 - cos(pi / T_max)) / 2
                                                   if (t - 1 - T_max) % (2 * T_max) == 0
            lr_t = eta_min + (lr_{t-1} - eta_min) * (1 + cos(pi * t / T_max))
                                                   / (1 + cos(pi * (t - 1) / T_max))    otherwise

    The two agree up to round-off when this scheduler alone sets the lr; past ``T_max`` the lr
    rises again along the same cosine (period ``2 * T_max``). The recursive form composes with
    other schedulers and with manual lr changes; the closed form (``step(epoch)``) does not.

    Args:
        optimizer: object with ``param_groups``.
        T_max: half-period, in epochs, a positive integer.
        eta_min: minimum learning rate. Default ``0.0``.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        T_max: int,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The recursive rule above."""
        _warn_get_lr_called_within_step(self)
        groups = self.optimizer.param_groups
        t, T, eta = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        if self._step_count == 1 and t > 0:
            cos_t = 1 + math.cos(t * math.pi / T)
            return [eta + (base - eta) * cos_t / 2 for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [
                group["lr"] + (base - eta) * (1 - math.cos(math.pi / T)) / 2
                for base, group in zip(self.base_lrs, groups)
            ]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (group["lr"] - eta) + eta for group in groups]

    def _get_closed_form_lr(self) -> list[float]:
        t, T, eta = self.last_epoch, self.T_max, self.eta_min
        return [eta + (base - eta) * (1 + math.cos(math.pi * t / T)) / 2 for base in self.base_lrs]


class _OfSchedulers(LRScheduler):
    """A scheduler made of other schedulers (``self._schedulers``): its state dict holds each
    one's own."""

    _schedulers: list[LRScheduler]

    def _check_schedulers(self, optimizer: Any, schedulers: Sequence[Any]) -> None:
        """PyTorch's checks of the schedulers it is made of, with PyTorch's messages."""
        name = type(self).__name__
        for idx, scheduler in enumerate(schedulers):
            if not hasattr(scheduler, "optimizer"):
                raise TypeError(f"{name} at index {idx} should have `optimizer` as its attribute.")
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(
                    f"{name} does not support `ReduceLROnPlateau` scheduler as it requires "
                    "additional kwargs to be specified when calling `step`, but got one at "
                    f"index {idx} in the given schedulers sequence."
                )
            if optimizer is not scheduler.optimizer:
                raise ValueError(
                    f"{name} expects all schedulers to belong to the same optimizer, but got "
                    f"scheduler {type(scheduler).__name__} at index {idx} has "
                    f"{scheduler.optimizer}, which is different from {type(optimizer).__name__}."
                )

    def state_dict(self) -> dict[str, Any]:
        """Attributes except the optimizer, with each scheduler's own state dict."""
        state = {
            k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")
        }
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes and each scheduler's state."""
        state = dict(state_dict)
        schedulers = state.pop("_schedulers")
        self.__dict__.update(state)
        for s, sd in zip(self._schedulers, schedulers):
            s.load_state_dict(sd)


class SequentialLR(_OfSchedulers):
    r"""Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]``, and so on.

    At a milestone ``m_i`` the next scheduler restarts from its own epoch 0 (its closed form at
    epoch 0, from its ``base_lrs``); in between, each scheduler steps as it would alone. On
    construction every group's lr is reset to ``initial_lr`` and the first scheduler's initial
    step is redone, as in PyTorch.

    Args:
        optimizer: object with ``param_groups``, shared by every scheduler.
        schedulers: the schedulers, in order (not :class:`ReduceLROnPlateau`).
        milestones: ``len(schedulers) - 1`` increasing epochs.
        last_epoch: see :class:`LRScheduler`.

    Raises:
        ValueError, TypeError: with PyTorch's messages.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        schedulers: list[LRScheduler],
        milestones: list[int],
        last_epoch: int = -1,
    ) -> None:
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
        self._check_schedulers(optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than "
                f"the number of milestone points, but got number of schedulers {len(schedulers)} "
                f"and the number of milestones to be equal to {len(milestones)}"
            )
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def recursive_undo(self, sched: Any = None) -> None:
        """Take back the initial step of every (nested) scheduler: ``last_epoch -= 1``."""
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for s in scheds._schedulers:
                self.recursive_undo(s)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        """Advance one epoch: restart the next scheduler at a milestone, else step the
        current one."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ReduceLROnPlateau(LRScheduler):
    r"""Divide the lr when a metric has stopped improving (PyTorch's ``ReduceLROnPlateau``).

    Call ``step(metric)`` once per epoch. With ``best`` the best metric so far:

    .. code-block:: text

        better(a) = a < best * (1 - threshold)   mode="min", threshold_mode="rel"
                    a < best - threshold         mode="min", threshold_mode="abs"
                    a > best * (1 + threshold)   mode="max", threshold_mode="rel"
                    a > best + threshold         mode="max", threshold_mode="abs"
        better -> best = a, num_bad_epochs = 0;   else num_bad_epochs += 1
        in cooldown (cooldown_counter > 0) -> cooldown_counter -= 1, num_bad_epochs = 0
        num_bad_epochs > patience ->
            for each group: new_lr = max(lr * factor, min_lr)
                            lr = new_lr   only if lr - new_lr > eps
            cooldown_counter = cooldown, num_bad_epochs = 0

    ``eps`` here is not an optimizer's epsilon: it is the *minimal decay* of the learning rate.
    A reduction smaller than ``eps`` (because ``min_lr`` is reached, or the lr is already tiny)
    is skipped, so with the default ``eps=1e-8`` an lr below about ``1e-8 / (1 - factor)``
    never changes again. It is compared with the absolute lr change, not with a gradient.

    Args:
        optimizer: object with ``param_groups``.
        mode: ``"min"`` (default; the metric should fall) or ``"max"``.
        factor: ``new_lr = lr * factor``, must be ``< 1.0``. Default ``0.1``.
        patience: epochs without improvement tolerated before a reduction. Default ``10``.
        threshold: what counts as an improvement (see above). Default ``1e-4``.
        threshold_mode: ``"rel"`` (default) or ``"abs"``.
        cooldown: epochs to wait after a reduction before counting bad epochs. Default ``0``.
        min_lr: lower bound of the lr, one float or one per group. Default ``0``.
        eps: minimal decay applied to the lr (see above). Default ``1e-8``.

    Raises:
        ValueError, TypeError: with PyTorch's messages.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            self.default_min_lr: float | None = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * n
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _group_values(optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record one epoch's metric and reduce the lr if it has plateaued (see above)."""
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the `optimizer` ({len(groups)}) differs from "
                    f"when `ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually due "
                    "to a new param group being added to the optimizer. Please modify the "
                    "`min_lrs` field to match the length of the `optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for i, group in enumerate(groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    @property
    def in_cooldown(self) -> bool:
        """Whether the scheduler is waiting after a reduction."""
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in {"min", "max"}:
            raise ValueError("mode " + str(mode) + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + str(threshold_mode) + " is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes (and the comparison they define)."""
        self.__dict__.update(state_dict)
        self._init_is_better(
            mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode
        )


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy (Smith & Topin 2018) with PyTorch's phases and formulas; step it once
    per batch, ``total_steps`` times in all.

    Each group gets ``initial_lr = max_lr / div_factor`` and ``min_lr = initial_lr /
    final_div_factor`` (written into the group with ``max_lr``). With ``T = total_steps`` and
    ``p = pct_start``, the lr and momentum follow phases (``anneal(start, end, pct)`` is
    ``end + (start - end) / 2 * (1 + cos(pi * pct))`` for ``"cos"``, ``(end - start) * pct +
    start`` for ``"linear"``; ``pct = (t - phase start) / (phase end - phase start)``):

    .. code-block:: text

        two phases:   [0, p*T - 1]          lr initial_lr -> max_lr   momentum max -> base
                      [p*T - 1, T - 1]      lr max_lr -> min_lr       momentum base -> max
        three_phase:  [0, p*T - 1]          lr initial_lr -> max_lr   momentum max -> base
                      [p*T - 1, 2*p*T - 2]  lr max_lr -> initial_lr   momentum base -> max
                      [2*p*T - 2, T - 1]    lr initial_lr -> min_lr   momentum max (constant)

    With ``cycle_momentum`` (default) the momentum goes into ``group["betas"][0]`` when the
    optimizer has ``betas`` (Adam family), else into ``group["momentum"]``; which one is decided
    from ``optimizer.defaults`` when the optimizer has it, else from ``param_groups[0]``.
    Stepping more than ``total_steps`` times raises ``ValueError``.

    Args:
        optimizer: object with ``param_groups``.
        max_lr: peak lr, one float or one per group.
        total_steps: number of steps; or give ``epochs`` and ``steps_per_epoch``.
        epochs, steps_per_epoch: ``total_steps = epochs * steps_per_epoch``.
        pct_start: fraction of the cycle spent rising, a float in ``[0, 1]``. Default ``0.3``.
        anneal_strategy: ``"cos"`` (default) or ``"linear"``.
        cycle_momentum: cycle momentum/beta1 inversely to the lr. Default ``True``.
        base_momentum: lowest momentum (at the lr peak). Default ``0.85``.
        max_momentum: highest momentum. Default ``0.95``.
        div_factor: ``initial_lr = max_lr / div_factor``. Default ``25.0``.
        final_div_factor: ``min_lr = initial_lr / final_div_factor``. Default ``1e4``.
        three_phase: use the three-phase schedule. Default ``False``.
        last_epoch: see :class:`LRScheduler`.

    Raises:
        ValueError, TypeError: with PyTorch's messages.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(
                    f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}"
                )
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        T = self.total_steps
        if three_phase:
            self._schedule_phases = [
                {"end_step": float(pct_start * T) - 1, "start_lr": "initial_lr",
                 "end_lr": "max_lr", "start_momentum": "max_momentum",
                 "end_momentum": "base_momentum"},
                {"end_step": float(2 * pct_start * T) - 2, "start_lr": "max_lr",
                 "end_lr": "initial_lr", "start_momentum": "base_momentum",
                 "end_momentum": "max_momentum"},
                {"end_step": T - 1, "start_lr": "initial_lr", "end_lr": "min_lr",
                 "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
            ]  # fmt: skip
        else:
            self._schedule_phases = [
                {"end_step": float(pct_start * T) - 1, "start_lr": "initial_lr",
                 "end_lr": "max_lr", "start_momentum": "max_momentum",
                 "end_momentum": "base_momentum"},
                {"end_step": T - 1, "start_lr": "max_lr", "end_lr": "min_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            ]  # fmt: skip
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(
                "anneal_strategy must be one of 'cos' or 'linear', instead got "
                f"{anneal_strategy}"
            )
        self._anneal_func_type = anneal_strategy
        max_lrs = _format_param("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for idx, group in enumerate(optimizer.param_groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if self.cycle_momentum:
            defaults = getattr(optimizer, "defaults", None)
            keys = defaults if isinstance(defaults, dict) else optimizer.param_groups[0]
            if "momentum" not in keys and "betas" not in keys:
                raise ValueError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
                )
            self.use_beta1 = "betas" in keys
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for m_mom, b_mom, group in zip(
                    max_momentums, base_momentums, optimizer.param_groups
                ):
                    if self.use_beta1:
                        group["betas"] = (m_mom, *group["betas"][1:])
                    else:
                        group["momentum"] = m_mom
                    group["max_momentum"] = m_mom
                    group["base_momentum"] = b_mom
        super().__init__(optimizer, last_epoch)

    def _anneal_func(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return self._annealing_cos(start, end, pct)
        return self._annealing_linear(start, end, pct)

    @staticmethod
    def _annealing_cos(start: float, end: float, pct: float) -> float:
        """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    @staticmethod
    def _annealing_linear(start: float, end: float, pct: float) -> float:
        """Straight line from ``start`` (pct 0) to ``end`` (pct 1)."""
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        """The phase rule above; also writes each group's momentum or ``betas[0]``."""
        _warn_get_lr_called_within_step(self)
        lrs = []
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(
                f"Tried to step {step_num} times. The specified number of total steps is "
                f"{self.total_steps}"
            )
        last = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == last:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lr = self._anneal_func(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal_func(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct
                        )
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


class ConstantLR(LRScheduler):
    r"""Multiply each group's lr by ``factor`` until epoch ``total_iters``, then restore it.

    .. code-block:: text

        closed form: lr_t = initial_lr * (factor if t < total_iters else 1)
        chainable:   lr_0 = lr * factor; lr_t = lr_{t-1} / factor at t == total_iters, else
                     lr_{t-1}

    Args:
        optimizer: object with ``param_groups``.
        factor: the factor, in ``[0, 1]``. Default ``1/3``.
        total_iters: epochs with the factor applied. Default ``5``.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The chainable rule above."""
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            base * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
            for base in self.base_lrs
        ]


class PolynomialLR(LRScheduler):
    r"""Decay each group's lr polynomially to 0 over ``total_iters`` epochs.

    .. code-block:: text

        closed form: lr_t = initial_lr * (1 - min(t, total_iters) / total_iters) ** power
        chainable:   lr_t = lr_{t-1} * ((1 - t / total_iters) / (1 - (t - 1) / total_iters))
                            ** power   for 1 <= t <= total_iters, else lr_{t-1}

    Args:
        optimizer: object with ``param_groups``.
        total_iters: epochs of decay. Default ``5``.
        power: the polynomial's power. Default ``1.0``.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        total_iters: int = 5,
        power: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The chainable rule above."""
        _warn_get_lr_called_within_step(self)
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        decay = (
            (1.0 - self.last_epoch / self.total_iters)
            / (1.0 - (self.last_epoch - 1) / self.total_iters)
        ) ** self.power
        return [group["lr"] * decay for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        frac = min(self.total_iters, self.last_epoch) / self.total_iters
        return [base * (1.0 - frac) ** self.power for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts (SGDR): the lr follows a cosine from the initial lr
    down to ``eta_min`` over ``T_i`` epochs, then restarts; ``T_0`` is the first period and
    each period is ``T_mult`` times the previous one.

    .. code-block:: text

        lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    ``step()`` advances ``T_cur`` by one (restarting when it reaches ``T_i``);
    ``step(epoch)`` takes a fractional epoch (``step(epoch + i / iters)`` per batch, as in
    PyTorch, without a deprecation warning).

    Args:
        optimizer: object with ``param_groups``.
        T_0: epochs of the first period, a positive integer.
        T_mult: growth of the period after each restart, an integer >= 1. Default ``1``.
        eta_min: minimum learning rate. Default ``0.0``.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if isinstance(T_0, bool) or not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if isinstance(eta_min, bool) or not isinstance(eta_min, (float, int)):
            raise ValueError(
                f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
            )
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur: float = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The formula above."""
        _warn_get_lr_called_within_step(self)
        cos = 1 + math.cos(math.pi * self.T_cur / self.T_i)
        return [self.eta_min + (base - self.eta_min) * cos / 2 for base in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        """Advance ``T_cur`` by one epoch (``epoch=None``) or set the (fractional) epoch."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._get_lr_called_within_step = True
        try:
            values = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = _group_values(self.optimizer, "lr")


class ChainedScheduler(_OfSchedulers):
    r"""Step several schedulers of one optimizer together: ``step()`` calls each one's
    ``step()`` in order, so chainable schedules multiply (PyTorch's ``ChainedScheduler``).

    Args:
        schedulers: the schedulers (not :class:`ReduceLROnPlateau`), all of one optimizer.
        optimizer: that optimizer (default: the first scheduler's).
    """

    def __init__(
        self, schedulers: Sequence[LRScheduler], optimizer: OptimizerLike | None = None
    ) -> None:
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(
                f"{name} expects at least one scheduler to be chained, but got no scheduler."
            )
        optimizer = optimizer or schedulers[0].optimizer
        self._check_schedulers(optimizer, schedulers)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        """``step()`` of every scheduler, in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")


def _triangular_scale_fn(x: float) -> float:
    return 1.0


def _triangular2_scale_fn(x: float) -> float:
    return 1 / (2.0 ** (x - 1))


class CyclicLR(LRScheduler):
    r"""Cyclical learning rates (Smith, 2017), PyTorch's ``CyclicLR``: each group's lr cycles
    between ``base_lr`` and ``max_lr`` (up over ``step_size_up`` steps, down over
    ``step_size_down``), and the momentum (or Adam's ``beta1``) in the opposite direction.
    Step it after every batch.

    .. code-block:: text

        cycle = floor(1 + t / (up + down)); x = 1 + t / (up + down) - cycle
        s = x / r if x <= r else (x - 1) / (r - 1)        (r = up / (up + down))
        lr = base_lr + (max_lr - base_lr) * s * scale     momentum = max_m - (max_m - base_m) * s
                                                          * scale
        scale = 1 ("triangular"), 1 / 2**(cycle - 1) ("triangular2"), gamma**t ("exp_range"),
                or scale_fn(cycle or t) (``scale_mode`` "cycle" / "iterations")

    Args:
        optimizer: object with ``param_groups`` (and ``defaults`` with ``"momentum"`` or
            ``"betas"`` when ``cycle_momentum``).
        base_lr, max_lr: the cycle's bounds, a float or one per group.
        step_size_up: steps of the rising half. Default ``2000``.
        step_size_down: steps of the falling half. Default: ``step_size_up``.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; ignored with ``scale_fn``.
        gamma: ``exp_range``'s base. Default ``1.0``.
        scale_fn: a custom scaling function of one argument. Default ``None``.
        scale_mode: ``"cycle"`` or ``"iterations"``: what ``scale_fn`` is a function of.
        cycle_momentum: cycle the momentum as well. Default ``True``.
        base_momentum, max_momentum: the momentum's bounds. Defaults ``0.8``, ``0.9``.
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: OptimizerLike,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            defaults = getattr(optimizer, "defaults", {})
            if "momentum" not in defaults and "betas" not in defaults:
                raise ValueError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
                )
            self.use_beta1 = "betas" in defaults
            self.base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            self.max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for m_mom, b_mom, group in zip(
                    self.max_momentums, self.base_momentums, optimizer.param_groups
                ):
                    if self.use_beta1:
                        group["betas"] = (m_mom, *group["betas"][1:])
                    else:
                        group["momentum"] = m_mom
                    group["max_momentum"] = m_mom
                    group["base_momentum"] = b_mom
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref: Callable[[float], float] = _triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = _triangular2_scale_fn
            self.scale_mode = "cycle"
        else:
            gamma = self.gamma
            self._scale_fn_ref = lambda x: gamma**x
            self.scale_mode = "iterations"

    def scale_fn(self, x: float) -> float:
        """The scaling of the cycle's height (``scale_fn`` or the mode's)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    def get_lr(self) -> list[float]:
        """The formula above; writes the momentum (or ``beta1``) too with ``cycle_momentum``."""
        _warn_get_lr_called_within_step(self)
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        at = cycle if self.scale_mode == "cycle" else self.last_epoch
        lrs = [
            base + (top - base) * scale_factor * self.scale_fn(at)
            for base, top in zip(self.base_lrs, self.max_lrs)
        ]
        if self.cycle_momentum:
            moms = [
                top - (top - base) * scale_factor * self.scale_fn(at)
                for base, top in zip(self.base_momentums, self.max_momentums)
            ]
            for group, m in zip(self.optimizer.param_groups, moms):
                if self.use_beta1:
                    group["betas"] = (m, *group["betas"][1:])
                else:
                    group["momentum"] = m
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """Attributes except the optimizer and the scale functions (as PyTorch: a custom
        ``scale_fn`` is not saved)."""
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("optimizer", "_scale_fn_ref", "_scale_fn_custom")
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes and rebuild the mode's scale function."""
        self.__dict__.update(state_dict)
        self._init_scale_fn()

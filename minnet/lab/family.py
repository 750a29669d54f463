"""The optimizers the lab knows: name, eps placements, and a learning rate for the seed problem.

The lab sweeps any optimizer of :mod:`minnet.optim`; this registry only says, per optimizer,
what the lab cannot ask the optimizer itself: ``lr``, a learning rate that trains the seed
problem (64x1000 -> 100 -> ReLU -> 10, MSE sum) in 500 steps without diverging, used when a run
sets none.

Everything else comes from the optimizer: its eps placements (the class's ``eps_modes``,
default first; empty when it has no ``eps_mode`` keyword: one fixed placement, recorded as
``eps_mode="none"`` in ``runs.csv``), whether it has an eps at all (an ``eps`` argument, or the
argument its class names as ``eps_arg``: Ftrl's ``initial_accumulator_value`` and Fromage's
``min_norm``, which the lab sweeps as eps; SGD, Lion, Rprop, ASGD, SignSGD, Signum and NoisySGD
have none: the lab trains them once per seed and scenario and records ``eps`` as NaN),
what eps is compared with and the step multiplier
(:meth:`~minnet.optim.Optimizer.eps_compared_with`, :meth:`~minnet.optim.Optimizer.multipliers`).
Optimizers listed here but not (yet) in :mod:`minnet.optim` are absent from :func:`available`.

Two optimizers of :mod:`minnet.optim` are not members. ``SparseAdam`` is Adam for embedding
tables (only the rows a batch looked up move); the seed problem has no embedding: its dense
layers give every row a gradient each step, so SparseAdam there would be Adam with eps before
the bias correction (Adam's ``eps_mode="hat"``, already swept) plus frozen dead ReLU units,
and it would say nothing about what it is for. ``LBFGS`` has no eps (its tolerances end its
loop; they are not added to anything) and takes a closure that it calls many times per step,
so an eps sweep has nothing to vary (and the lab's runner calls ``step()`` without one).
SparseAdam is still accepted by name (``minnet sweep --optimizer SparseAdam``, lr 1e-4), as
any optimizer class with an element rule is.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import minnet.optim

__all__ = ["FAMILY", "NO_PLACEMENT", "Member", "available", "lookup", "resolve_name"]

#: ``eps_mode`` recorded for an optimizer without an ``eps_mode`` keyword.
NO_PLACEMENT = "none"


@dataclass(frozen=True)
class Member:
    """One optimizer of the family, as the lab sees it.

    Attributes:
        name: the class name in :mod:`minnet.optim` (PyTorch's: ``"RMSprop"``).
        lr: learning rate for the seed problem and its zero-features / dead-units variants.
        note: why this lr (shown in ``minnet sweep --help`` and the atlas caption).
    """

    name: str
    lr: float
    note: str = ""

    @property
    def cls(self) -> Any:
        """The optimizer class (``AttributeError`` if :mod:`minnet.optim` lacks it)."""
        return getattr(minnet.optim, self.name)

    @property
    def eps_modes(self) -> tuple[str, ...]:
        """The values of its ``eps_mode`` keyword, its default first (the class's
        ``eps_modes``); ``()`` when its constructor takes no such keyword."""
        if "eps_mode" not in inspect.signature(self.cls).parameters:
            return ()
        return tuple(getattr(self.cls, "eps_modes", ()))

    @property
    def eps_arg(self) -> str:
        """The constructor argument the lab sweeps as eps (the class's ``eps_arg``: ``"eps"``,
        or the argument that plays its role, Ftrl's ``"initial_accumulator_value"``)."""
        return str(getattr(self.cls, "eps_arg", "eps"))

    @property
    def has_eps(self) -> bool:
        """Whether its update has an eps (its constructor takes :attr:`eps_arg`)."""
        return self.eps_arg in inspect.signature(self.cls).parameters

    @property
    def default_mode(self) -> str:
        """The placement a run gets when it names none."""
        return self.eps_modes[0] if self.eps_modes else NO_PLACEMENT

    @property
    def placements(self) -> tuple[str, ...]:
        """Every value of the ``eps_mode`` column this optimizer can have."""
        return self.eps_modes or (NO_PLACEMENT,)


#: Every optimizer of the family, in order of increasing complexity. The learning rates were
#: checked on the seed problem (500 steps, float32, seeds 0 and 1, default eps): each trains it
#: from a loss of about 630 to below 3 (Adam's lr 1e-4 where that works, else the optimizer's
#: own default).
FAMILY: tuple[Member, ...] = (
    Member("SGD", 1e-4, "Adam's lr (trains the sum-MSE seed problem; 3e-4 too)"),
    Member("Adam", 1e-4, "the seed problem's lr"),
    Member("AdamW", 1e-4, "Adam's lr (weight_decay 1e-2)"),
    Member("RMSprop", 1e-4, "Adam's lr"),
    Member("Adagrad", 1e-2, "its default lr (steps shrink as 1/sqrt(t))"),
    Member("Adadelta", 1.0, "its default lr (eps sets the step size)"),
    Member("Adamax", 1e-3, "max |g| exceeds Adam's RMS, so 10x Adam's lr (its default is 2e-3)"),
    Member("NAdam", 1e-4, "Adam's lr"),
    Member("RAdam", 1e-4, "Adam's lr"),
    Member("AdaBelief", 1e-4, "Adam's lr"),
    Member("Lion", 1e-4, "its default lr (sign steps of size lr)"),
    Member("Rprop", 1e-2, "its default lr (only the initial step size, which adapts)"),
    Member("ASGD", 1e-4, "SGD's lr (its default 1e-2 diverges on the sum-MSE problem)"),
    Member("Yogi", 1e-3, "10x Adam's lr (Adam's trains it too, more slowly)"),
    Member("ADOPT", 1e-4, "Adam's lr (its first step only initialises v)"),
    Member("Adan", 1e-3, "its authors' default (Adam's 1e-4 ends at 0.025: beta1=0.98 is slow)"),
    Member("AdEMAMix", 1e-3, "its authors' default (Adam's 1e-4 ends at 0.16)"),
    Member("Ftrl", 1e-2, "Adagrad's lr (eps: its initial_accumulator_value)"),
    Member("SignSGD", 1e-4, "Lion's lr (sign steps of size lr)"),
    Member("Signum", 1e-4, "Lion's lr (sign steps of size lr)"),
    Member("Lamb", 1e-3, "its (Keras's) default lr: steps of about lr times each tensor's norm"),
    Member("Lars", 1.0, "its default lr (steps of lr * 1e-3 times each tensor's norm)"),
    Member("OptimisticAdam", 1e-4, "Adam's lr (optimism = lr, the optax alias's default)"),
    Member("NoisySGD", 1e-4, "SGD's lr (noise variance 0.01 / t**0.55, optax's defaults)"),
    Member("ScheduleFreeAdamW", 1e-3, "10x Adam's lr (no momentum: x averages the z steps)"),
    Member("Prodigy", 1.0, "its default lr (a factor on the distance estimate d)"),
    Member("Novograd", 1e-3, "its default lr (steps of about lr / (1 - beta1) * g / ||g||)"),
    Member("Fromage", 1e-3, "steps of lr times each tensor's norm (the paper's 1e-2: 0.2-0.6)"),
    Member("Adafactor", 1e-2, "its (PyTorch's) default lr: steps of at most lr times each "
           "parameter's RMS"),
)

_BY_KEY = {m.name.lower(): m for m in FAMILY}


def available() -> list[Member]:
    """The members whose class :mod:`minnet.optim` exports, in :data:`FAMILY` order."""
    return [m for m in FAMILY if hasattr(minnet.optim, m.name)]


def resolve_name(name: str) -> str:
    """The class name in :mod:`minnet.optim` for ``name``, case-insensitive (``"rmsprop"`` ->
    ``"RMSprop"``); any other optimizer class of :mod:`minnet.optim` is accepted by its exact
    name, except one without an element rule (LBFGS: a closure-based step with no eps, which
    the lab's runner cannot drive). Raises ``ValueError`` listing the available optimizers."""
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a name in minnet.optim, got {name!r}")
    member = _BY_KEY.get(name.lower())
    if member is not None and hasattr(minnet.optim, member.name):
        return member.name
    obj = getattr(minnet.optim, name, None)
    if isinstance(obj, type) and issubclass(obj, minnet.optim.Optimizer):
        if obj.rule is None:
            raise ValueError(
                f"the lab cannot sweep {name}: it has no eps, and its step(closure) evaluates "
                "the loss itself (family.py's docstring)"
            )
        return name
    names = ", ".join(m.name for m in available())
    raise ValueError(f"unknown optimizer {name!r}; available: {names}")


def lookup(name: str) -> Member:
    """The :class:`Member` for an optimizer name (any case). An optimizer of
    :mod:`minnet.optim` outside :data:`FAMILY` gets lr 1e-4."""
    cls_name = resolve_name(name)
    member = _BY_KEY.get(cls_name.lower())
    if member is not None:
        return member
    return Member(cls_name, 1e-4, "not in the lab's family: lr 1e-4")

"""The optimizers the lab knows: name, eps placements, and a learning rate for the seed problem.

The lab sweeps any optimizer of :mod:`minnet.optim`; this registry only says, per optimizer,
what the lab cannot ask the optimizer itself:

* ``eps_modes``: the values its ``eps_mode`` keyword takes, default first (empty when it has no
  such keyword: one fixed placement, recorded as ``eps_mode="none"`` in ``runs.csv``);
* ``has_eps``: whether its update has an eps at all (SGD and Lion have none: the lab trains them
  once per seed and scenario and records ``eps`` as NaN);
* ``lr``: a learning rate that trains the seed problem (64x1000 -> 100 -> ReLU -> 10, MSE sum)
  in 500 steps without diverging, used when a run sets none.

What eps is compared with and the step multiplier come from the optimizer
(:meth:`~minnet.optim.Optimizer.eps_compared_with`, :meth:`~minnet.optim.Optimizer.multipliers`),
never from here. Optimizers listed here but not (yet) in :mod:`minnet.optim` are absent from
:func:`available`.
"""

from __future__ import annotations

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
        eps_modes: the values of its ``eps_mode`` keyword, its default first; ``()`` when it
            has no such keyword.
        has_eps: whether its update has an eps.
        lr: learning rate for the seed problem and its zero-features / dead-units variants.
        note: why this lr (shown in ``minnet sweep --help`` and the atlas caption).
    """

    name: str
    eps_modes: tuple[str, ...]
    has_eps: bool
    lr: float
    note: str = ""

    @property
    def cls(self) -> Any:
        """The optimizer class (``AttributeError`` if :mod:`minnet.optim` lacks it)."""
        return getattr(minnet.optim, self.name)

    @property
    def default_mode(self) -> str:
        """The placement a run gets when it names none."""
        return self.eps_modes[0] if self.eps_modes else NO_PLACEMENT

    @property
    def placements(self) -> tuple[str, ...]:
        """Every value of the ``eps_mode`` column this optimizer can have."""
        return self.eps_modes or (NO_PLACEMENT,)


_ADAM_MODES = ("outside", "hat", "inside", "atan2")

#: Every optimizer of the family, in order of increasing complexity. The learning rates were
#: checked on the seed problem (500 steps, float32, seeds 0 and 1, default eps): each trains it
#: from a loss of about 630 to below 3 (Adam's lr 1e-4 where that works, else the optimizer's
#: own default).
FAMILY: tuple[Member, ...] = (
    Member("SGD", (), False, 1e-4, "Adam's lr (trains the sum-MSE seed problem; 3e-4 too)"),
    Member("Adam", _ADAM_MODES, True, 1e-4, "the seed problem's lr"),
    Member("AdamW", _ADAM_MODES, True, 1e-4, "Adam's lr (weight_decay 1e-2)"),
    Member("RMSprop", ("outside", "inside"), True, 1e-4, "Adam's lr"),
    Member("Adagrad", ("outside", "inside", "inside_guarded"), True, 1e-2,
           "its default lr (steps shrink as 1/sqrt(t))"),  # fmt: skip
    Member("Adadelta", (), True, 1.0, "its default lr (eps sets the step size)"),
    Member("Adamax", ("max", "outside"), True, 1e-3,
           "max |g| exceeds Adam's RMS, so 10x Adam's lr (its default is 2e-3)"),  # fmt: skip
    Member("NAdam", (), True, 1e-4, "Adam's lr"),
    Member("RAdam", (), True, 1e-4, "Adam's lr"),
    Member("AdaBelief", (), True, 1e-4, "Adam's lr"),
    Member("Lion", (), False, 1e-4, "its default lr (sign steps of size lr)"),
)

_BY_KEY = {m.name.lower(): m for m in FAMILY}


def available() -> list[Member]:
    """The members whose class :mod:`minnet.optim` exports, in :data:`FAMILY` order."""
    return [m for m in FAMILY if hasattr(minnet.optim, m.name)]


def resolve_name(name: str) -> str:
    """The class name in :mod:`minnet.optim` for ``name``, case-insensitive (``"rmsprop"`` ->
    ``"RMSprop"``); any other optimizer class of :mod:`minnet.optim` is accepted by its exact
    name. Raises ``ValueError`` listing the available optimizers."""
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a name in minnet.optim, got {name!r}")
    member = _BY_KEY.get(name.lower())
    if member is not None and hasattr(minnet.optim, member.name):
        return member.name
    obj = getattr(minnet.optim, name, None)
    if isinstance(obj, type) and issubclass(obj, minnet.optim.Optimizer):
        return name
    names = ", ".join(m.name for m in available())
    raise ValueError(f"unknown optimizer {name!r}; available: {names}")


def lookup(name: str) -> Member:
    """The :class:`Member` for an optimizer name (any case). An optimizer of
    :mod:`minnet.optim` outside :data:`FAMILY` gets an entry built from the class: placements
    from nothing (one fixed placement), ``has_eps`` from its ``eps`` argument, lr 1e-4."""
    cls_name = resolve_name(name)
    member = _BY_KEY.get(cls_name.lower())
    if member is not None:
        return member
    import inspect

    params = inspect.signature(getattr(minnet.optim, cls_name)).parameters
    return Member(cls_name, (), "eps" in params, 1e-4, "not in the lab's family: lr 1e-4")

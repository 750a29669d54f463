"""The lab on your own problem: a model factory, data, a loss and a metric, swept like a scenario.

>>> from minnet.lab import Problem, accuracy, grid, sweep
>>> problem = Problem("mine", model=make_model, data=(x, y), loss_fn=minnet.nn.MSELoss(),
...                   metric=accuracy, eval_data=(x_test, y_test), batch_size=64, epochs=5,
...                   lr=1e-3)                                             # doctest: +SKIP
>>> result = sweep(grid([0, 1e-8], scenarios=[problem], seeds=[0, 1]))  # doctest: +SKIP

Each run of a :class:`Problem` (see :func:`train_problem`), for its seed ``s``:

1. seeds minnet's default generator with ``s`` (for this run's thread only; as
   ``minnet.manual_seed(s)``), so that ``model()``'s initial weights, the batch order and dropout
   masks drawn from it depend on ``s`` alone;
2. builds ``model()``, the loss, the data and the optimizer (``minnet.optim.<optimizer>`` with the
   run's ``lr`` and ``eps`` and, where it takes them, ``betas``, ``amsgrad``, ``eps_mode``,
   ``amsgrad_max``, ``track_stats=True``, plus ``optimizer_kwargs``);
3. trains ``epochs`` passes over the data (or ``steps`` optimizer steps, when the run sets them),
   recording per step the loss of the batch and the optimizer's stats, and at the end of every
   epoch (and after the last step) ``metric(model(x_eval), y_eval)``, in ``eval()`` mode.

Worker processes and Dask workers receive the problem by pickling: the model factory, a data
factory and the metric must be functions defined at the top level of a module (or of the script,
run under ``if __name__ == "__main__":``), not lambdas or nested functions.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import minnet
from minnet.data import DataLoader, TensorDataset
from minnet.random import seeded_default_generator

__all__ = ["Problem", "accuracy", "make_optimizer", "train_problem"]


def accuracy(output: np.ndarray, target: np.ndarray) -> float:
    """Fraction of rows whose largest output is the target class: ``mean(argmax(output, 1) ==
    target)``; ``target`` holds class indices ``(N,)`` or one-hot/probability rows ``(N, C)``.

    A row with a NaN counts as class 0 (NumPy's argmax of a NaN row), so a model that has gone
    NaN scores the share of class 0: chance level on balanced classes.
    """
    output = np.asarray(output)
    target = np.asarray(target)
    if output.ndim != 2:
        raise ValueError(f"accuracy: output must have shape (N, C), got {output.shape}")
    labels = target.argmax(axis=1) if target.ndim == 2 else target
    if labels.shape != (output.shape[0],):
        raise ValueError(
            f"accuracy: target shape {target.shape} does not match output shape {output.shape}"
        )
    return float(np.mean(output.argmax(axis=1) == labels))


@dataclass(frozen=True, eq=False)
class Problem:
    """A training problem of your own, for :func:`minnet.lab.grid` (``scenarios=[problem]``).

    Attributes:
        name: the label in the ``scenario`` column of ``runs.csv`` (no comma).
        model: a factory: ``model()`` returns a fresh :class:`minnet.nn.Module`. Draw the initial
            weights from minnet's default generator (``Linear(..., rng=None)``) so the run's seed
            decides them.
        data: the training data: a tuple of arrays ``(x, y)``, or a factory ``data()`` that
            returns either such a tuple or an iterable of ``(x, y)`` batches (e.g. a
            :class:`minnet.data.DataLoader`; it is iterated once per epoch).
        loss_fn: the loss, e.g. ``minnet.nn.MSELoss()``; each run trains with its own copy.
            ``loss_fn(output, y)`` gives the loss, ``loss_fn.backward()`` dLoss/d(output).
        metric: ``metric(output, y) -> float`` on the evaluation data, e.g. :func:`accuracy`;
            ``None`` leaves the ``metric`` column NaN.
        eval_data: ``(x, y)`` or a factory returning it, for ``metric``; default: the training
            arrays (when ``data`` gives arrays).
        batch_size: with array data, mini-batches of this size in a new order every epoch
            (``DataLoader(..., shuffle=True)`` on the run's default generator); ``None`` trains on
            the whole array at every step.
        epochs: passes over the data per run (``>= 1``), unless the run sets ``steps``.
        lr: the learning rate of runs that do not set one.
        optimizer: a name in :mod:`minnet.optim` (``"Adam"``) or an optimizer class/factory
            ``optimizer(params, lr=..., eps=..., ...)``.
        optimizer_kwargs: further keyword arguments of the optimizer (``weight_decay=1e-4``);
            not ``lr`` or ``eps``, which each run sets.
        metric_name: how the figures name the metric (default: the metric function's name,
            e.g. ``"accuracy"``).
        metric_range: ``(low, high)``, the range the metric's panel shows at least (default:
            ``(0, 1)`` for :func:`accuracy`, else the range of the values recorded).
        metric_chance: the metric's chance level, drawn as a dashed line (default: for
            :func:`accuracy`, 1 / the number of classes of the evaluation targets; else none).
    """

    name: str
    model: Callable[[], Any]
    data: tuple | Callable[[], Any]
    loss_fn: Any
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None
    eval_data: tuple | Callable[[], tuple] | None = None
    batch_size: int | None = None
    epochs: int = 1
    lr: float = 1e-3
    optimizer: str | Callable[..., Any] = "Adam"
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    metric_name: str | None = None
    metric_range: tuple[float, float] | None = None
    metric_chance: float | None = None

    def __post_init__(self) -> None:
        self._check_metric_description()
        if not isinstance(self.name, str) or not self.name or "," in self.name:
            raise ValueError(
                f"Problem: name must be a non-empty str without ',', got {self.name!r}"
            )
        if not callable(self.model):
            raise TypeError(f"Problem {self.name!r}: model must be a factory (a function), "
                            f"got {type(self.model).__name__}")  # fmt: skip
        if not (callable(self.data) or isinstance(self.data, (tuple, list))):
            raise TypeError(f"Problem {self.name!r}: data must be a tuple of arrays (x, y) or a "
                            f"factory, got {type(self.data).__name__}")  # fmt: skip
        if isinstance(self.data, list):
            object.__setattr__(self, "data", tuple(self.data))
        if not (callable(self.loss_fn) and hasattr(self.loss_fn, "backward")):
            raise TypeError(f"Problem {self.name!r}: loss_fn must be a loss with .backward(), "
                            f"got {self.loss_fn!r}")  # fmt: skip
        if self.metric is not None and not callable(self.metric):
            raise TypeError(f"Problem {self.name!r}: metric must be callable or None")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(
                f"Problem {self.name!r}: batch_size must be an int >= 1 or None, "
                f"got {self.batch_size!r}"
            )
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"Problem {self.name!r}: epochs must be an int >= 1, "
                             f"got {self.epochs!r}")  # fmt: skip
        if not (isinstance(self.optimizer, str) or callable(self.optimizer)):
            raise TypeError(f"Problem {self.name!r}: optimizer must be a name in minnet.optim or "
                            "a class")  # fmt: skip
        if isinstance(self.optimizer, str) and not hasattr(minnet.optim, self.optimizer):
            raise ValueError(f"Problem {self.name!r}: minnet.optim has no optimizer "
                             f"{self.optimizer!r}")  # fmt: skip
        clash = sorted({"lr", "eps", "params"} & set(self.optimizer_kwargs))
        if clash:
            raise ValueError(
                f"Problem {self.name!r}: optimizer_kwargs must not set {', '.join(clash)} "
                "(each run sets lr and eps: use Problem(lr=...) or grid(lr=..., eps=...))"
            )
        object.__setattr__(self, "optimizer_kwargs", dict(self.optimizer_kwargs))

    def _check_metric_description(self) -> None:
        if self.metric_name is not None and not (
            isinstance(self.metric_name, str) and self.metric_name.strip()
        ):
            raise ValueError(f"Problem {self.name!r}: metric_name must be a non-empty str or "
                             f"None, got {self.metric_name!r}")  # fmt: skip
        if self.metric_range is not None:
            bounds = self.metric_range
            ok = isinstance(bounds, (tuple, list)) and len(bounds) == 2 and all(
                _is_real(b) and math.isfinite(b) for b in bounds
            ) and bounds[0] < bounds[1]  # fmt: skip
            if not ok:
                raise ValueError(f"Problem {self.name!r}: metric_range must be (low, high) with "
                                 f"finite low < high, got {bounds!r}")  # fmt: skip
            object.__setattr__(self, "metric_range", (float(bounds[0]), float(bounds[1])))
        if self.metric_chance is not None and not (
            _is_real(self.metric_chance) and math.isfinite(self.metric_chance)
        ):
            raise ValueError(f"Problem {self.name!r}: metric_chance must be a finite number or "
                             f"None, got {self.metric_chance!r}")  # fmt: skip

    def metric_description(self) -> dict[str, Any] | None:
        """How the figures draw the metric: ``{"name": str, "range": [low, high] or None,
        "chance": float or None}`` (see the ``metric_*`` attributes); ``None`` without a metric.

        For :func:`accuracy` without ``metric_chance`` the chance level is 1 / the number of
        classes of the evaluation targets (their one-hot width, or the distinct labels), which
        loads the evaluation data once.
        """
        if self.metric is None:
            return None
        name = self.metric_name or getattr(self.metric, "__name__", "") or "metric"
        if name == "<lambda>":
            name = "metric"
        bounds = self.metric_range
        chance = self.metric_chance
        if self.metric is accuracy:
            bounds = bounds or (0.0, 1.0)
            if chance is None:
                chance = self._classes_chance()
        return {
            "name": name,
            "range": None if bounds is None else [float(bounds[0]), float(bounds[1])],
            "chance": None if chance is None else float(chance),
        }

    def _classes_chance(self) -> float | None:
        """1 / the number of classes of the evaluation targets (None if they are not arrays)."""
        data = self.eval_data if self.eval_data is not None else self.data
        data = data() if callable(data) else data
        if not (isinstance(data, (tuple, list)) and len(data) >= 2):
            return None
        y = np.asarray(data[1])
        n = y.shape[1] if y.ndim == 2 else len(np.unique(y)) if y.ndim == 1 else 0
        return 1.0 / n if n >= 2 else None

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Problem(name={self.name!r}, epochs={self.epochs}, batch_size={self.batch_size})"


def _is_real(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating))


_SPEC_KNOBS_DEFAULTS = {
    "betas": (0.9, 0.999),
    "amsgrad": False,
    "eps_mode": "outside",
    "amsgrad_max": "raw",
}


def make_optimizer(
    optimizer: str | Callable[..., Any],
    params: list,
    *,
    lr: float,
    eps: float,
    knobs: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """``minnet.optim.<optimizer>(params, lr=lr, eps=eps, **knobs, **extra)`` for any optimizer.

    ``knobs`` (``betas``, ``amsgrad``, ``eps_mode``, ``amsgrad_max``) and ``track_stats=True`` are
    passed only where the optimizer's signature takes them; a knob it does not take must be at
    its default (else ``ValueError`` naming it). ``eps`` is required of the optimizer, since the
    lab sweeps it, unless it is NaN (the lab's eps for an optimizer without one: SGD, Lion); it
    is passed as the argument the class names ``eps_arg`` (``eps``; Ftrl's
    ``initial_accumulator_value``).
    """
    cls = getattr(minnet.optim, optimizer) if isinstance(optimizer, str) else optimizer
    name = getattr(cls, "__name__", repr(cls))
    try:
        sig = inspect.signature(cls)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        accepted = set(sig.parameters)
    except (TypeError, ValueError):  # no signature: pass everything
        takes_any, accepted = True, set()

    def takes(key: str) -> bool:
        return takes_any or key in accepted

    kwargs: dict[str, Any] = {"lr": lr}
    eps_arg = str(getattr(cls, "eps_arg", "eps"))  # Ftrl: initial_accumulator_value
    if takes(eps_arg):
        kwargs[eps_arg] = eps
    elif not math.isnan(eps):  # NaN: the lab's record of "this optimizer has no eps"
        raise ValueError(f"the lab sweeps eps, but optimizer {name} takes no eps argument")
    for key, value in (knobs or {}).items():
        if takes(key):
            kwargs[key] = value
        elif value != _SPEC_KNOBS_DEFAULTS.get(key, value):
            raise ValueError(f"optimizer {name} takes no {key} argument, but the run sets "
                             f"{key}={value!r}")  # fmt: skip
    if takes("track_stats"):
        kwargs["track_stats"] = True
    kwargs.update(extra or {})
    return cls(params, **kwargs)


def _arrays(data: Any, what: str, name: str) -> tuple[np.ndarray, ...]:
    if not (isinstance(data, (tuple, list)) and len(data) >= 2):
        raise TypeError(f"Problem {name!r}: {what} must be a tuple (x, y) of arrays")
    return tuple(np.asarray(a) for a in data)


def _batches(problem: Problem) -> tuple[Iterable, tuple | None]:
    """The per-epoch iterable of training batches, and the training arrays if any."""
    data = problem.data() if callable(problem.data) else problem.data
    if not isinstance(data, (tuple, list)):
        return data, None  # a loader or other iterable of batches
    arrays = _arrays(data, "data", problem.name)
    if problem.batch_size is None:
        return [arrays], arrays
    return DataLoader(TensorDataset(*arrays), batch_size=problem.batch_size, shuffle=True), arrays


def _nonfinite(params: list) -> int:
    return int(sum(p.data.size - np.count_nonzero(np.isfinite(p.data)) for p in params))


def train_problem(
    problem: Problem,
    *,
    seed: int,
    lr: float,
    eps: float,
    knobs: Mapping[str, Any],
    steps: int | None,
) -> dict[str, Any]:
    """Train one run of ``problem`` (see the module docstring) and return its records.

    Returns a dict of per-step arrays ``loss``, ``eps_dominated``, ``nonfinite``, ``update_rms``,
    ``metric`` (NaN where not evaluated) and the trained ``optimizer``. Stats the optimizer does
    not keep are NaN (``nonfinite`` is then counted from the parameters).
    """
    with seeded_default_generator(seed):
        model = problem.model()
        params = model.parameters()
        loss_fn = copy.deepcopy(problem.loss_fn)
        batches, train_arrays = _batches(problem)
        if problem.eval_data is None:
            eval_arrays = train_arrays
        else:
            ev = problem.eval_data() if callable(problem.eval_data) else problem.eval_data
            eval_arrays = _arrays(ev, "eval_data", problem.name)
        if problem.metric is not None and eval_arrays is None:
            raise ValueError(f"Problem {problem.name!r}: a metric needs eval_data when data is a "
                             "loader")  # fmt: skip
        optimizer = make_optimizer(problem.optimizer, params, lr=lr, eps=eps, knobs=knobs,
                                   extra=problem.optimizer_kwargs)  # fmt: skip
        stats_kept = hasattr(optimizer, "stats")
        sequential = isinstance(model, minnet.nn.Sequential)
        no_grad = getattr(minnet, "no_grad", nullcontext)

        def evaluate() -> float:
            if problem.metric is None:
                return math.nan
            if hasattr(model, "eval"):
                model.eval()
            with no_grad():
                out = model(eval_arrays[0])
            if hasattr(model, "train"):
                model.train()
            return float(problem.metric(out, eval_arrays[1]))

        records: dict[str, list] = {k: [] for k in
                                    ("loss", "eps_dominated", "nonfinite", "update_rms", "metric")}
        limit = steps if steps is not None else math.inf
        epoch_limit = problem.epochs if steps is None else math.inf
        epoch = 0
        if hasattr(model, "train"):
            model.train()
        while len(records["loss"]) < limit and epoch < epoch_limit:
            n_before = len(records["loss"])
            for xb, yb in batches:
                out = model(xb)
                records["loss"].append(float(loss_fn(out, yb)))
                optimizer.zero_grad()
                grad = loss_fn.backward()
                if sequential:
                    model.backward(grad, input_grad=False)
                else:
                    model.backward(grad)
                optimizer.step()
                if stats_kept:
                    s = optimizer.stats
                    records["eps_dominated"].append(s.eps_dominated)
                    records["nonfinite"].append(s.nonfinite)
                    records["update_rms"].append(s.update_rms)
                else:
                    records["eps_dominated"].append(math.nan)
                    records["nonfinite"].append(_nonfinite(params))
                    records["update_rms"].append(math.nan)
                records["metric"].append(math.nan)
                if len(records["loss"]) >= limit:
                    break
            if len(records["loss"]) == n_before:
                raise ValueError(f"Problem {problem.name!r}: the data gave no batch")
            epoch += 1
            records["metric"][-1] = evaluate()
    out: dict[str, Any] = {k: np.asarray(v, dtype=np.int64 if k == "nonfinite" else np.float64)
                           for k, v in records.items()}  # fmt: skip
    out["optimizer"] = optimizer
    return out

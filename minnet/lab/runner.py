"""Sweeps: train one run per (eps, variant, dtype, seed, scenario) and collect a tidy table.

>>> from minnet.lab import grid, sweep
>>> result = sweep(grid(eps=[0, 1e-8, 1.0], seeds=[0], steps=50), workers=2)  # doctest: +SKIP
>>> result.runs.rows()[0]                                                       # doctest: +SKIP
{'run': 0, 'scenario': 'seed', 'eps': 0.0, 'eps_mode': 'outside', 'amsgrad': False, ...}
>>> result.write("runs/demo")  # runs.csv, multipliers.csv                   # doctest: +SKIP

Each run trains :func:`minnet.lab.scenarios.make_problem` with its optimizer, by default
``Adam(lr, betas, eps, amsgrad=..., eps_mode=..., amsgrad_max=..., track_stats=True)``, or any
optimizer of :mod:`minnet.optim` (``RunSpec(optimizer="rmsprop", hyperparameters={...})``;
:mod:`minnet.lab.family` lists their placements and learning rates), and records, for every
optimizer step ``t = 1..steps``, one row of :data:`RUN_COLUMNS`:

* ``loss``: the loss of the forward pass whose gradient step ``t`` applies (so step 1 holds the
  initial loss, and a NaN made by step ``t`` shows in the loss of step ``t + 1``);
* ``eps_dominated``, ``nonfinite``, ``update_rms``: ``optimizer.stats`` right after step ``t``
  (fraction of coordinates whose eps term is at least the second-moment term it is added to,
  number of parameters that are NaN/inf, RMS of the applied update).
* ``optimizer``, ``hyperparameters`` (JSON), ``eps_compared_with``: the optimizer's class name,
  its further keyword arguments, and its own answer to what eps is added to or compared with
  (:meth:`minnet.optim.Optimizer.eps_compared_with`; empty without eps, where ``eps`` is NaN);
* ``metric``: a :class:`~minnet.lab.problem.Problem`'s metric on its evaluation data after step
  ``t``, where it was evaluated (the end of every epoch); NaN elsewhere and for the built-in
  scenarios.
* ``state_dtype``, ``rounding`` (the run's optimizer state dtype and rounding model, see
  :class:`RunSpec`), ``underflow``, ``lost_updates``: ``optimizer.stats`` after step ``t``
  (coordinates whose stored second moment is 0 although their gradient is not; coordinates
  whose update was lost to rounding, ``p + delta == p`` with ``delta != 0``). Both counts are
  measured by the 16-bit kernels and are 0 for float32/float64 runs.

Problems of your own (:class:`~minnet.lab.problem.Problem`: a model factory, data, a loss and a
metric) go into :func:`grid` as scenarios and are swept the same way.

At the end of each run the per-parameter step multiplier (see :func:`step_multiplier`) is
histogrammed into :data:`MULTIPLIER_COLUMNS` rows (none for an optimizer without eps). Runs
that diverge (NaN or inf) are recorded like any other, never dropped.

Executors: ``workers=1`` trains in this process; ``workers=N`` (default: every core) fans the runs
out to N local worker processes (spawned, each single-threaded, reused for every run; a worker
exits by itself when the process that started it dies);
``scheduler="tcp://host:port"`` sends the same chunks to a Dask distributed cluster (``pip install
'minnet[dask]'``; minnet must be importable on the workers). Each run limits BLAS to one thread
and is seeded by its spec alone, so the rows are identical whichever executor trained them.

Output directory: ``sweep(specs, out="runs/demo")`` holds a lock on the directory for the whole
sweep (a second sweep into it fails at once, :class:`SweepOutputError`), checks that it can be
written before the first run, saves each run as it finishes (atomically, with
:func:`minnet.save`, under ``out/.runs/``), and writes ``runs.csv`` and ``multipliers.csv`` at
the end. ``resume=True`` keeps the runs a killed or interrupted sweep finished and trains only
the others: the tables are then the same, row for row, as those of an uninterrupted sweep.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import math
import os
import re
import secrets
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from minnet import threads as _threads
from minnet.checkpoint import CheckpointError
from minnet.checkpoint import load as _load_checkpoint
from minnet.checkpoint import save as _save_checkpoint
from minnet.dtypes import as_dtype
from minnet.lab.family import NO_PLACEMENT, lookup
from minnet.lab.problem import Problem, train_problem
from minnet.lab.scenarios import Scenario, make_problem
from minnet.nn import Parameter
from minnet.optim import Adam, Optimizer
from minnet.optim.optimizer import ROUNDING_MODES, EpsWarning

__all__ = [
    "DEFAULT_EPS",
    "MULTIPLIER_COLUMNS",
    "MULTIPLIER_EDGES",
    "RUN_COLUMNS",
    "RunResult",
    "RunSpec",
    "SweepInterrupted",
    "SweepOutputError",
    "SweepResult",
    "Table",
    "grid",
    "lock_output",
    "prepare_output",
    "run",
    "step_multiplier",
    "sweep",
]

#: The default eps values of a sweep: 0, then 1e-16 .. 100 (13 values).
DEFAULT_EPS: tuple[float, ...] = (
    0.0, 1e-16, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0,
)  # fmt: skip

#: Columns of ``runs.csv`` (one row per run and step), with their types.
RUN_COLUMNS: dict[str, type] = {
    "run": int,
    "scenario": str,
    "eps": float,
    "eps_mode": str,
    "amsgrad": bool,
    "amsgrad_max": str,
    "seed": int,
    "dtype": str,
    "lr": float,
    "optimizer": str,
    "hyperparameters": str,
    "eps_compared_with": str,
    "step": int,
    "loss": float,
    "eps_dominated": float,
    "nonfinite": int,
    "update_rms": float,
    "metric": float,
    "state_dtype": str,
    "rounding": str,
    "underflow": int,
    "lost_updates": int,
}
#: Columns of ``multipliers.csv``: per run, how many parameters have
#: ``log10(multiplier)`` in ``[log10_lo, log10_hi)``. Infinite multipliers are counted in a row
#: with ``log10_lo = log10_hi = inf``, NaN ones in a row with both ``nan``; empty bins are left out.
MULTIPLIER_COLUMNS: dict[str, type] = {
    "run": int,
    "log10_lo": float,
    "log10_hi": float,
    "count": int,
}
#: Bin edges (log10 of the multiplier) of the histogram; the outer bins reach -inf and +inf.
MULTIPLIER_EDGES = np.concatenate(([-np.inf], np.arange(-4.0, 16.0 + 1e-9, 0.25), [np.inf]))
_N_BINS = len(MULTIPLIER_EDGES) - 1  # finite-value bins; then one for +inf and one for NaN

# Columns that describe the run (the same on each of its rows), in RUN_COLUMNS order.
_RUN_KEYS = ("run", "scenario", "eps", "eps_mode", "amsgrad", "amsgrad_max", "seed", "dtype", "lr",
             "optimizer", "hyperparameters", "eps_compared_with", "state_dtype", "rounding")
#: Run columns added with the optimizer family, and what a ``runs.csv`` written before them holds.
_FAMILY_KEYS = ("optimizer", "hyperparameters", "eps_compared_with")
#: Columns added with 16-bit runs (at the end of ``runs.csv``).
_LOWP_KEYS = ("state_dtype", "rounding", "underflow", "lost_updates")
_STEP_KEYS = ("step", "loss", "eps_dominated", "nonfinite", "update_rms", "metric", "underflow",
              "lost_updates")
_NUMPY_TYPES: dict[type, Any] = {int: np.int64, float: np.float64, bool: np.bool_, str: np.str_}
_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# -- runs -----------------------------------------------------------------------------------------


def _builtin_problem(name: str) -> bool:
    """Whether ``name`` is a built-in Problem's (:data:`minnet.lab.digits.PROBLEMS`)."""
    from minnet.lab.digits import PROBLEMS

    return name in PROBLEMS


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run (the run is a pure function of it).

    Attributes:
        eps: the optimizer's epsilon, finite and ``>= 0``. For an optimizer without eps (SGD,
            Lion) it is ignored and recorded as NaN.
        eps_mode: where eps goes: one of the optimizer's placements
            (:attr:`minnet.lab.family.Member.eps_modes`, e.g. ``minnet.optim.EPS_MODES`` for
            Adam); ``"none"`` for an optimizer without an ``eps_mode`` keyword. Default: the
            optimizer's default placement.
        amsgrad: AMSGrad's running max of the second moment (Adam and AdamW only).
        amsgrad_max: which max (``minnet.optim.AMSGRAD_MAX_MODES``); not ``"raw"`` only with
            ``amsgrad=True``.
        seed: seed of the data and the initial weights.
        scenario: a :class:`~minnet.lab.scenarios.Scenario` or its name (``"zero_features=100"``),
            a :class:`~minnet.lab.problem.Problem` of your own, or a built-in problem's name
            (``"digits"``, ``"digits_cnn"``, ``"char_transformer"``,
            :data:`minnet.lab.digits.PROBLEMS`).
        dtype: ``"float32"``, ``"float64"``, ``"float16"`` or ``"bfloat16"``: the seed problem's
            data, model and parameters (:func:`~minnet.lab.scenarios.make_problem`); a Problem's
            model decides its own (``"float32"`` or ``"float64"`` only, recorded as given).
        state_dtype: the optimizer's ``state_dtype`` (its moments' dtype): ``None`` or
            ``"same"`` (default) for the parameters' dtype, recorded as ``dtype`` (``"same"``
            for a Problem), or one of the four dtypes (``"float32"``: float32 master state for
            16-bit parameters).
        rounding: the optimizer's ``rounding`` model for 16-bit buffers, ``"fused"`` (default)
            or ``"per_op"`` (:class:`minnet.optim.Optimizer`). It is passed to the optimizer
            only when a parameter or the state is 16-bit (it changes nothing otherwise).
        steps: optimizer steps, ``>= 1``. Default (``None``): 500 for a Scenario; a Problem's
            ``epochs`` full passes over its data.
        lr: learning rate. Default (``None``): for a Scenario the optimizer's
            :attr:`~minnet.lab.family.Member.lr` (Adam: the seed problem's ``1e-4``), a
            Problem's ``lr``.
        betas: ``(beta1, beta2)`` for optimizers that take them. Default (``None``): Adam's
            ``(0.9, 0.999)`` for Adam and AdamW, the optimizer's own default otherwise.
        optimizer: a name of :mod:`minnet.optim`, any case (``"rmsprop"`` -> ``"RMSprop"``).
            Default (``None``): ``"Adam"``, or a Problem's own optimizer.
        hyperparameters: further keyword arguments of the optimizer (``{"momentum": 0.9}``);
            not ``lr``, ``eps``, ``eps_mode``, ``betas``, ``amsgrad``, ``amsgrad_max`` (fields
            above) or ``params``/``track_stats``.
    """

    eps: float
    eps_mode: str | None = None
    amsgrad: bool = False
    amsgrad_max: str = "raw"
    seed: int = 0
    scenario: Scenario | Problem | str = "seed"
    dtype: str = "float32"
    steps: int | None = None
    lr: float | None = None
    betas: tuple[float, float] | None = None
    optimizer: str | None = None
    hyperparameters: Any = ()
    state_dtype: str | None = None
    rounding: str = "fused"

    def __post_init__(self) -> None:
        self._check_dtypes()
        scenario = self.scenario
        if isinstance(scenario, str):
            from minnet.lab.digits import PROBLEMS

            scenario = PROBLEMS[scenario]() if scenario in PROBLEMS else Scenario.parse(scenario)
        elif not isinstance(scenario, (Scenario, Problem)):
            raise TypeError(f"scenario must be a Scenario, a Problem or a name, got {scenario!r}")
        object.__setattr__(self, "scenario", scenario)
        name = self.optimizer
        if name is None:
            if isinstance(scenario, Problem) and not isinstance(scenario.optimizer, str):
                name = getattr(scenario.optimizer, "__name__", "Adam")
            else:
                name = scenario.optimizer if isinstance(scenario, Problem) else "Adam"
        if isinstance(scenario, Problem) and not isinstance(scenario.optimizer, str) and (
            self.optimizer is None
        ):
            member = None  # a Problem's own optimizer class: the Problem validates it
        else:
            member = lookup(name)
            name = member.name
        object.__setattr__(self, "optimizer", name)
        hyper = dict(self.hyperparameters)
        clash = sorted(set(hyper) & {"lr", "eps", "eps_mode", "betas", "amsgrad", "amsgrad_max",
                                     "params", "track_stats", "state_dtype", "rounding",
                                     member.eps_arg if member else "eps"})
        if clash:
            raise ValueError(f"hyperparameters must not set {', '.join(clash)} (RunSpec fields "
                             "or set by the lab)")  # fmt: skip
        object.__setattr__(self, "hyperparameters", tuple(sorted(hyper.items())))
        if self.eps_mode is None:
            object.__setattr__(self, "eps_mode", member.default_mode if member else NO_PLACEMENT)
        if self.lr is None:
            lr = scenario.lr if isinstance(scenario, Problem) else (member.lr if member else 1e-4)
            object.__setattr__(self, "lr", lr)
        if self.betas is None and name in ("Adam", "AdamW"):
            object.__setattr__(self, "betas", (0.9, 0.999))
        if self.steps is None and isinstance(scenario, Scenario):
            object.__setattr__(self, "steps", 500)
        eps = self.eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
            raise TypeError(f"eps must be a real number, got {eps!r}")
        if member is not None and not member.has_eps:
            object.__setattr__(self, "eps", math.nan)
        else:
            if not (math.isfinite(eps) and eps >= 0):
                raise ValueError(f"eps must be finite and >= 0, got {eps}")
            object.__setattr__(self, "eps", float(eps))
        # The optimizer's own checks (lr, betas, modes and their combination), before any run.
        if name in ("Adam", "AdamW"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EpsWarning)  # eps=0 is swept on purpose
                Adam([Parameter(np.zeros(1))], lr=self.lr, betas=self.betas, eps=self.eps,
                     amsgrad=self.amsgrad, eps_mode=self.eps_mode, amsgrad_max=self.amsgrad_max)
        if member is not None:
            if self.amsgrad or self.amsgrad_max != "raw":
                if name not in ("Adam", "AdamW"):
                    raise ValueError(f"{name} has no AMSGrad: amsgrad=False and "
                                     "amsgrad_max='raw' only")  # fmt: skip
            takes = inspect.signature(member.cls).parameters
            for key, value in self._precision_kwargs().items():
                if key not in takes:
                    raise ValueError(f"{name} takes no {key} argument (it has no float16/"
                                     f"bfloat16 kernels yet), but the run sets {key}={value!r}")
            if not member.eps_modes and self.eps_mode != NO_PLACEMENT:
                raise ValueError(f"{name} has one eps placement (no eps_mode keyword): "
                                 f"eps_mode must be {NO_PLACEMENT!r}, got {self.eps_mode!r}")
            # Build it once on a 1-element parameter of the run's dtype: its own checks (16-bit
            # support, rounding models), with its own messages.
            dt = "float32" if isinstance(scenario, Problem) else self.dtype
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EpsWarning)  # the point of the sweep
                member.cls([Parameter(np.zeros(1, dtype=as_dtype(dt)))],
                           **self._constructor_kwargs())  # fmt: skip
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.steps is None:
            pass  # a Problem's epochs
        elif isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)):
            raise TypeError(f"steps must be an int, got {self.steps!r}")
        elif self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def _check_dtypes(self) -> None:
        """Normalize ``dtype``, ``state_dtype`` and ``rounding`` (names, ``"same"`` resolved)."""
        problem = isinstance(self.scenario, Problem) or (
            isinstance(self.scenario, str) and _builtin_problem(self.scenario)
        )
        dtype, state = _resolve_precision(self.dtype, self.state_dtype, problem)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "state_dtype", state)
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")

    @property
    def low_precision(self) -> bool:
        """Whether the parameters or the optimizer state are float16/bfloat16."""
        return any(d in ("float16", "bfloat16") for d in (self.dtype, self.state_dtype))

    @property
    def scenario_name(self) -> str:
        """The scenario's name, as in the ``scenario`` column."""
        return str(self.scenario)

    @property
    def hyperparameters_json(self) -> str:
        """:attr:`hyperparameters` as JSON with sorted keys (the ``hyperparameters`` column)."""
        return json.dumps(dict(self.hyperparameters), sort_keys=True)

    def _precision_kwargs(self) -> dict[str, Any]:
        """``state_dtype`` and ``rounding`` where they change something (so that an optimizer
        without 16-bit kernels still trains float32 runs)."""
        kwargs: dict[str, Any] = {}
        if self.state_dtype not in ("same", self.dtype):
            kwargs["state_dtype"] = self.state_dtype
        if self.low_precision and self.rounding != "fused":
            kwargs["rounding"] = self.rounding
        return kwargs

    def _constructor_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"lr": self.lr}
        member = lookup(self.optimizer)  # type: ignore[arg-type]
        if member.has_eps:
            kwargs[member.eps_arg] = self.eps
        if member.eps_modes:
            kwargs["eps_mode"] = self.eps_mode
        if self.betas is not None:
            kwargs["betas"] = self.betas
        if self.optimizer in ("Adam", "AdamW"):
            kwargs["amsgrad"] = self.amsgrad
            kwargs["amsgrad_max"] = self.amsgrad_max
        kwargs.update(dict(self.hyperparameters))
        kwargs.update(self._precision_kwargs())
        return kwargs

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``minnet.optim.<optimizer>`` for this run (``track_stats`` on).

        For Adam: ``lr, betas, eps, amsgrad, eps_mode, amsgrad_max``; for any optimizer only
        the arguments it takes (no ``eps`` without eps, no ``eps_mode`` without placements),
        plus :attr:`hyperparameters`, plus ``state_dtype`` when it is not the parameters' and
        ``rounding`` when it is not ``"fused"`` and a buffer is 16-bit.
        """
        return {**self._constructor_kwargs(), "track_stats": True}


def _resolve_precision(dtype: Any, state_dtype: Any, problem: bool) -> tuple[str, str]:
    """``(dtype, state_dtype)`` as names, ``state_dtype`` None/"same" resolved to ``dtype``
    (kept ``"same"`` for a Problem, whose model decides its dtype); ``ValueError`` otherwise."""
    names = "'float32', 'float64', 'float16' or 'bfloat16'"
    try:
        name = as_dtype(dtype).name if isinstance(dtype, str) else None
    except TypeError:
        name = None
    if name is None:
        raise ValueError(f"dtype must be {names}, got {dtype!r}")
    if problem and name not in ("float32", "float64"):
        raise ValueError(
            f"dtype={name!r} applies to the seed problem and its scenarios; a Problem's "
            "model decides its own dtype (build it in that dtype)"
        )
    if state_dtype is None or state_dtype == "same":
        return name, "same" if problem else name
    try:
        state = as_dtype(state_dtype).name if isinstance(state_dtype, str) else None
    except TypeError:
        state = None
    if state is None:
        raise ValueError(f"state_dtype must be 'same' or {names}, got {state_dtype!r}")
    return name, state


@dataclass
class RunResult:
    """What one run recorded: per-step arrays (one entry per optimizer step) and the final
    histogram. ``metric`` is NaN except where a Problem's metric was evaluated."""

    spec: RunSpec
    loss: np.ndarray
    eps_dominated: np.ndarray
    nonfinite: np.ndarray
    update_rms: np.ndarray
    multiplier_counts: np.ndarray  # _N_BINS finite bins, then +inf, then NaN
    metric: np.ndarray | None = None  # None: NaN at every step
    eps_compared_with: str = ""  # the optimizer's answer; "" without eps
    underflow: np.ndarray | None = None  # None: 0 at every step
    lost_updates: np.ndarray | None = None  # None: 0 at every step


def step_multiplier(optimizer: Optimizer) -> np.ndarray:
    """The per-parameter step multiplier after the latest step: ``optimizer.multipliers()``.

    The multiplier ``k`` is the optimizer's own (:meth:`minnet.optim.Optimizer.multipliers`):
    ``1 / (the denominator that includes eps)``, e.g. for Adam ``param -= lr * k * m_hat`` with
    ``k = 1 / (sqrt(v_hat) + eps)`` for "outside". Returns a float64 array over all parameters,
    in parameter order; ``inf`` where the denominator is 0 (``eps=0`` and a coordinate that never
    saw a gradient). Raises ``ValueError`` for an optimizer without eps (no multiplier).
    """
    if optimizer.step_count == 0:
        raise ValueError("step_multiplier needs at least one optimizer step")
    k = optimizer.multipliers()
    if k is None:
        raise ValueError(f"{type(optimizer).__name__} has no eps, so no step multiplier")
    return k


def _multiplier_histogram(optimizer: Any) -> np.ndarray:
    """The histogram of :func:`step_multiplier`; all zeros (no rows in ``multipliers.csv``)
    for an optimizer that has no eps or no ``multipliers()``."""
    ask = getattr(optimizer, "multipliers", None)
    k = ask() if ask is not None and getattr(optimizer, "step_count", 0) > 0 else None
    if k is None:
        return np.zeros(_N_BINS + 2, dtype=np.int64)
    return _histogram(k)


def _histogram(k: np.ndarray) -> np.ndarray:
    counts = np.zeros(_N_BINS + 2, dtype=np.int64)
    nan = np.isnan(k)
    inf = np.isinf(k) & (k > 0)
    finite = k[~nan & ~inf]
    with np.errstate(divide="ignore"):
        logk = np.log10(finite)  # k >= 0, so log10(0) = -inf lands in the first bin
    idx = np.searchsorted(MULTIPLIER_EDGES[1:-1], logk, side="right")
    counts[:_N_BINS] = np.bincount(idx, minlength=_N_BINS)
    counts[_N_BINS] = int(inf.sum())
    counts[_N_BINS + 1] = int(nan.sum())
    return counts


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: threadpool_limits | None = None


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread while any run is training in this process.

    BLAS thread limits are process-wide, so concurrent runs (Dask worker threads) share one
    limiter: the first run in sets it, the last run out restores the original limits. One thread
    makes every run's matrix products, hence its results, the same on every executor; minnet's
    thread policy (:mod:`minnet.threads`) is held meanwhile.
    """
    with _threads.hold(), _one_blas_thread_unheld():
        yield


@contextmanager
def _one_blas_thread_unheld() -> Iterator[None]:
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = threadpool_limits(limits=1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def run(spec: RunSpec) -> RunResult:
    """Train one run (BLAS limited to one thread; NaN/inf arithmetic is silent) and record it."""
    if isinstance(spec.scenario, Problem):
        return _run_problem(spec)
    with _one_blas_thread(), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", EpsWarning)  # an eps that rounds to 0: swept
        problem = make_problem(spec.scenario, seed=spec.seed, dtype=spec.dtype)
        model, x, y, loss_fn = problem.model, problem.x, problem.y, problem.loss_fn
        optimizer = lookup(spec.optimizer).cls(model.parameters(), **spec.optimizer_kwargs())
        n = spec.steps
        loss = np.empty(n)
        dominated = np.empty(n)
        nonfinite = np.empty(n, dtype=np.int64)
        rms = np.empty(n)
        underflow = np.zeros(n, dtype=np.int64)
        lost = np.zeros(n, dtype=np.int64)
        for t in range(n):
            loss[t] = loss_fn(model(x), y)
            optimizer.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            optimizer.step()
            stats = optimizer.stats
            dominated[t] = stats.eps_dominated
            nonfinite[t] = stats.nonfinite
            rms[t] = stats.update_rms
            underflow[t] = stats.underflow
            lost[t] = stats.lost_updates
        counts = _multiplier_histogram(optimizer)
        compared = optimizer.eps_compared_with() or ""
    return RunResult(spec, loss, dominated, nonfinite, rms, counts, None, compared, underflow,
                     lost)  # fmt: skip


def _run_problem(spec: RunSpec) -> RunResult:
    problem = spec.scenario
    assert isinstance(problem, Problem)
    own = problem.optimizer if isinstance(problem.optimizer, str) else None
    if spec.hyperparameters or (own is not None and lookup(own).name != spec.optimizer):
        problem = replace(problem, optimizer=spec.optimizer,
                          optimizer_kwargs={**problem.optimizer_kwargs,
                                            **dict(spec.hyperparameters)})  # fmt: skip
    knobs = {"betas": spec.betas, "amsgrad": spec.amsgrad, "eps_mode": spec.eps_mode,
             "amsgrad_max": spec.amsgrad_max}  # fmt: skip
    knobs = {k: v for k, v in knobs.items() if v is not None and v != NO_PLACEMENT}
    if spec.state_dtype != "same":
        knobs["state_dtype"] = spec.state_dtype
    if spec.rounding != "fused":
        knobs["rounding"] = spec.rounding
    with _one_blas_thread(), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", EpsWarning)
        rec = train_problem(problem, seed=spec.seed, lr=spec.lr, eps=spec.eps,
                            knobs=knobs, steps=spec.steps)  # fmt: skip
        optimizer = rec["optimizer"]
        counts = _multiplier_histogram(optimizer)
        ask = getattr(optimizer, "eps_compared_with", None)
        compared = (ask() if ask is not None else None) or ""
    return RunResult(spec, rec["loss"], rec["eps_dominated"], rec["nonfinite"],
                     rec["update_rms"], counts, rec["metric"], compared, rec.get("underflow"),
                     rec.get("lost_updates"))  # fmt: skip


def _run_chunk(chunk: list[tuple[int, RunSpec]]) -> list[tuple[int, RunResult]]:
    return [(i, run(spec)) for i, spec in chunk]


def grid(
    eps: Iterable[float] = DEFAULT_EPS,
    *,
    eps_modes: Iterable[str] | None = None,
    amsgrad: Iterable[bool] = (False, True),
    amsgrad_max: Iterable[str] | None = None,
    seeds: Iterable[int] = (0, 1, 2),
    scenarios: Iterable[Scenario | Problem | str] = ("seed",),
    dtype: str = "float32",
    steps: int | None = None,
    lr: float | Mapping[str, float] | None = None,
    optimizers: Iterable[str] | None = None,
    optimizer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    dtypes: Iterable[str] | None = None,
    state_dtypes: Iterable[str | None] = ("same",),
    roundings: Iterable[str] = ("fused",),
    refused: str = "error",
) -> list[RunSpec]:
    """Every combination of the arguments, as :class:`RunSpec` objects in a fixed order.

    ``scenarios`` takes built-in scenarios (by name or :class:`Scenario`) and problems of your
    own (:class:`~minnet.lab.problem.Problem`). ``steps`` and ``lr`` default to each scenario's
    own (500 steps for the seed problem, at each optimizer's lr,
    :attr:`minnet.lab.family.Member.lr`: Adam's is 1e-4; a Problem's ``epochs`` and ``lr``);
    ``lr`` may also map optimizer names to learning rates (``{"sgd": 1e-6}``).

    ``optimizers``: names in :mod:`minnet.optim`, any case (``["adam", "rmsprop"]``); default:
    Adam (a Problem's own optimizer for a Problem). ``optimizer_kwargs`` maps an optimizer name
    to its further hyperparameters (``{"rmsprop": {"momentum": 0.9}}``). Per optimizer:

    * ``eps_modes`` keeps the placements that optimizer has (``"all"``: every one); default: its
      default placement. An optimizer without placements runs once (``eps_mode="none"``).
    * ``amsgrad`` and ``amsgrad_max`` apply to Adam and AdamW; other optimizers run without.
    * an optimizer without eps (SGD, Lion) runs once per scenario and seed, with ``eps`` NaN.

    Precision: ``dtypes`` (default: ``[dtype]``) are the seed problem's dtypes (``"float32"``,
    ``"float64"``, ``"float16"``, ``"bfloat16"``), ``state_dtypes`` the optimizer's state dtypes
    (``"same"``: the parameters'; ``"float32"``: float32 master state for 16-bit parameters)
    and ``roundings`` its rounding models (``"fused"``, ``"per_op"``), crossed. Combinations
    that are the same run are trained once: a state dtype equal to the parameters' is
    ``"same"``, and a run with no 16-bit buffer (float32 parameters and state) gets only the
    first of ``roundings`` (rounding changes nothing there). A combination an optimizer refuses
    (16-bit buffers in an optimizer without 16-bit kernels, ``rounding="per_op"`` with a
    variant it does not follow, float64 with another dtype) raises ``ValueError`` naming the
    optimizer, the combination and the optimizer's reason; with ``refused="skip"`` those runs
    are left out instead and one ``UserWarning`` lists every combination skipped and why.
    Nothing is dropped silently.

    Order (outermost first): scenario, optimizer, dtype, state_dtype, rounding, eps_mode,
    amsgrad, amsgrad_max, eps, seed.
    ``amsgrad_max`` only applies with ``amsgrad=True``; runs without AMSGrad get ``"raw"`` once.
    The defaults are ``minnet sweep``'s: 13 eps values x AMSGrad off/on x 3 seeds = 78 runs of
    500 steps.

    Raises ``ValueError`` if ``amsgrad_max`` is given but ``amsgrad`` holds no ``True`` (it would
    select nothing), if an eps_mode is a placement of none of the optimizers, or if an optimizer
    with placements has none of ``eps_modes``. Warns (``UserWarning``) if Adam's ``eps_modes``
    hold ``"atan2"`` with more than one eps: atan2 has no eps, so those runs are identical (they
    are kept, so that every eps_mode is drawn against the same eps values).
    """
    eps_list = list(eps)
    modes = None if eps_modes is None else list(eps_modes)
    ams_list = list(amsgrad)
    max_list = ["raw"] if amsgrad_max is None else list(amsgrad_max)
    seed_list, scen_list = list(seeds), list(scenarios)
    opt_list: list[str | None] = [None] if optimizers is None else list(optimizers)
    if dtypes is not None and dtype != "float32":
        raise ValueError("grid: pass dtype or dtypes, not both")
    if refused not in ("error", "skip"):
        raise ValueError(f"grid: refused must be 'error' or 'skip', got {refused!r}")
    dtype_list = [dtype] if dtypes is None else list(dict.fromkeys(dtypes))
    state_list = list(dict.fromkeys("same" if d is None else d for d in state_dtypes))
    rounding_list = list(dict.fromkeys(roundings))
    for name, values in (
        ("dtypes", dtype_list),
        ("state_dtypes", state_list),
        ("roundings", rounding_list),
        ("eps", eps_list),
        ("eps_modes", [] if modes is None else modes),
        ("amsgrad", ams_list),
        ("amsgrad_max", max_list),
        ("seeds", seed_list),
        ("scenarios", scen_list),
        ("optimizers", opt_list),
    ):
        if not values and not (name == "eps_modes" and modes is None):
            raise ValueError(f"grid: {name} is empty")
    if amsgrad_max is not None and not any(bool(a) for a in ams_list):
        raise ValueError(
            f"grid: amsgrad_max={max_list} applies only to AMSGrad runs, and amsgrad="
            f"{[bool(a) for a in ams_list]} has none; pass amsgrad=[True] or leave amsgrad_max out"
        )
    chosen: dict[str, Any] = {}
    for o in opt_list:
        if o is not None:
            chosen.setdefault(lookup(o).name, lookup(o))
    if optimizers is not None:
        opt_list = list(chosen)  # resolved and without repeats ("adam", "Adam")
    per_opt_kwargs: dict[str, dict[str, Any]] = {}
    for key, value in (optimizer_kwargs or {}).items():
        member = lookup(key)
        if member.name not in [m.name for m in chosen.values()] and not (
            optimizers is None and member.name == "Adam"
        ):
            raise ValueError(f"grid: optimizer_kwargs names {member.name}, which is not among "
                             "the optimizers swept")  # fmt: skip
        per_opt_kwargs[member.name] = dict(value)
    lr_of: Callable[[str], float | None]
    if isinstance(lr, Mapping):
        lr_map = {lookup(k).name: v for k, v in lr.items()}
        lr_of = lr_map.get
    else:
        lr_of = lambda name: lr  # noqa: E731
    members_with_modes = [m for m in chosen.values() if m.eps_modes] or (
        [lookup("Adam")] if optimizers is None else []
    )
    if modes is not None and "all" not in modes:
        for mode in dict.fromkeys(modes):
            if not any(mode in m.eps_modes for m in members_with_modes):
                have = "; ".join(f"{m.name}: {', '.join(m.placements)}"
                                 for m in (members_with_modes or chosen.values()))  # fmt: skip
                raise ValueError(f"grid: eps_mode {mode!r} is a placement of none of the "
                                 f"optimizers swept ({have})")  # fmt: skip

    def placements(member: Any) -> list[str]:
        if member is None or not member.eps_modes:
            return [NO_PLACEMENT]
        if modes is None:
            return [member.default_mode]
        if "all" in modes:
            return list(member.eps_modes)
        mine = [m for m in dict.fromkeys(modes) if m in member.eps_modes]
        if not mine:
            raise ValueError(f"grid: {member.name} has none of the eps_modes "
                             f"{', '.join(modes)} (its placements: "
                             f"{', '.join(member.eps_modes)})")  # fmt: skip
        return mine

    adam_modes = placements(lookup("Adam")) if (
        optimizers is None or "Adam" in [m.name for m in chosen.values()]
    ) else []  # fmt: skip
    if "atan2" in adam_modes and len(set(map(float, eps_list))) > 1:
        warnings.warn(atan2_ignores_eps(eps_list), UserWarning, stacklevel=2)
    def precisions(scenario: Any) -> list[tuple[str, str, str]]:
        """The distinct (dtype, state_dtype, rounding) runs (see the docstring)."""
        out: dict[tuple[str, str, str], None] = {}
        problem = isinstance(scenario, Problem) or (
            isinstance(scenario, str) and _builtin_problem(scenario)
        )
        for dt in dtype_list:
            for sd in state_list:
                dt_name, sd_name = _resolve_precision(dt, sd, problem)
                low = {dt_name, sd_name} & {"float16", "bfloat16"}
                for r in rounding_list:
                    out[(dt_name, sd_name, r if low or problem else rounding_list[0])] = None
        return list(out)

    specs = []
    skipped: dict[str, None] = {}
    for scenario in scen_list:
        combos = precisions(scenario)
        for opt in opt_list:
            if opt is None:  # Adam, or the Problem's own optimizer
                own = scenario.optimizer if isinstance(scenario, Problem) else "Adam"
                member = lookup(own) if isinstance(own, str) else None
            else:
                member = chosen[opt]
            name = None if opt is None else member.name
            has_ams = member is None or member.name in ("Adam", "AdamW")
            has_eps = member is None or member.has_eps
            hyper = per_opt_kwargs.get(member.name, {}) if member is not None else {}
            for dt, sd, rounding in combos:
                more, refusals = _precision_specs(
                    member, dt, sd, rounding, placements(member), ams_list, max_list, has_ams,
                    has_eps, eps_list, seed_list, scenario, steps, lr_of, name, hyper,
                )
                if refusals and refused == "error":
                    raise ValueError(f"grid: {refusals[0]}")
                specs += more
                skipped.update(dict.fromkeys(refusals))
    if skipped:
        warnings.warn(f"grid: skipped {len(skipped)} combination(s) refused by the optimizer: "
                      + " | ".join(skipped), UserWarning, stacklevel=2)  # fmt: skip
    return specs


def _precision_specs(
    member: Any, dt: str, sd: str, rounding: str, modes: list[str], ams_list: list,
    max_list: list[str], has_ams: bool, has_eps: bool, eps_list: list[float],
    seed_list: list[int], scenario: Any, steps: int | None, lr_of: Callable[[str], Any],
    name: str | None, hyper: Mapping[str, Any],
) -> tuple[list[RunSpec], list[str]]:
    """The runs of one (scenario, optimizer, dtype, state_dtype, rounding) of :func:`grid`,
    and a message for each variant (placement, AMSGrad max) the optimizer refuses in it."""
    specs: list[RunSpec] = []
    refusals: list[str] = []
    lr_value = lr_of(member.name) if member else lr_of("")
    low = any(d in ("float16", "bfloat16") for d in (dt, sd)) or rounding != "fused"
    for mode in modes:
        for ams in [bool(a) for a in ams_list] if has_ams else [False]:
            for amax in max_list if ams else ["raw"]:
                try:
                    specs += [
                        RunSpec(eps=e, eps_mode=None if mode == NO_PLACEMENT else mode,
                                amsgrad=ams, amsgrad_max=amax, seed=seed, scenario=scenario,
                                dtype=dt, steps=steps, lr=lr_value, optimizer=name,
                                hyperparameters=hyper, state_dtype=sd, rounding=rounding)
                        for e in (eps_list if has_eps else eps_list[:1]) for seed in seed_list
                    ]  # fmt: skip
                except (ValueError, TypeError) as exc:
                    if not (low or sd not in ("same", dt)):
                        raise
                    who = member.name if member is not None else "the optimizer"
                    variant = "" if mode == NO_PLACEMENT else f", eps_mode={mode!r}"
                    variant += f", amsgrad_max={amax!r}" if ams else ""
                    refusals.append(f"{who} refuses dtype={dt!r}, state_dtype={sd!r}, "
                                    f"rounding={rounding!r}{variant}: {exc}")  # fmt: skip
    return specs, refusals


def atan2_ignores_eps(eps: Iterable[float]) -> str:
    """The warning for a sweep of ``eps_mode="atan2"`` over several eps values."""
    values = ", ".join(f"{e:g}" for e in dict.fromkeys(map(float, eps)))
    return (
        f"eps_mode 'atan2' has no eps: its runs for eps {values} are identical "
        "(same seed and scenario)"
    )


# -- the table ------------------------------------------------------------------------------------


@dataclass
class Table:
    """A small column table: ``columns[name]`` is a 1-D NumPy array, all of one length.

    Tidy: one observation per row. :meth:`rows` gives a list of dicts, :meth:`where` filters,
    :meth:`to_csv` / :meth:`read_csv` round-trip exactly (floats are written with ``repr``).
    """

    columns: dict[str, np.ndarray]
    schema: dict[str, type] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {name: len(col) for name, col in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Table columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def names(self) -> list[str]:
        """Column names, in order."""
        return list(self.columns)

    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of ``{column: Python value}`` dicts."""
        cols = [(n, c.tolist()) for n, c in self.columns.items()]
        return [{n: c[i] for n, c in cols} for i in range(len(self))]

    def where(self, mask: np.ndarray | None = None, **equal: Any) -> Table:
        """Rows where ``mask`` holds and each named column equals the given value."""
        keep = np.ones(len(self), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        for name, value in equal.items():
            keep = keep & (self.columns[name] == value)
        return Table({n: c[keep] for n, c in self.columns.items()}, self.schema)

    def unique(self, name: str) -> list[Any]:
        """Sorted distinct values of a column, as Python values."""
        return np.unique(self.columns[name]).tolist()

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the table as CSV, atomically (a temporary file renamed over ``path``)."""
        path = Path(path)
        formatted = []
        for col in self.columns.values():
            if col.dtype.kind == "f":
                formatted.append([repr(v) for v in col.tolist()])
            else:
                formatted.append([str(v) for v in col.tolist()])
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        # O_EXCL: never follow or clobber an existing file; mode 0o666 lets the umask decide (a
        # tempfile.mkstemp file is 0o600, which the rename would carry over to ``path``).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(self.names)
                writer.writerows(zip(*formatted))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def read_csv(cls, path: str | os.PathLike, schema: dict[str, type]) -> Table:
        """Read a CSV written by :meth:`to_csv`; ``schema`` gives each known column's type.

        Raises ``ValueError`` naming the file if a column of ``schema`` is missing.
        """
        path = Path(path)
        with open(path, newline="") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise ValueError(f"{path}: empty file, expected a CSV header") from None
            missing = [n for n in schema if n not in header]
            if missing:
                raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
        for line, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise ValueError(
                    f"{path}, line {line}: {len(row)} fields, expected {len(header)} "
                    f"({', '.join(header)})"
                )
        raw = list(zip(*rows)) if rows else [()] * len(header)
        columns = {}
        for name, values in zip(header, raw):
            kind = schema.get(name, str)
            try:
                if kind is bool:
                    bad = [v for v in values if v not in ("True", "False")]
                    if bad:
                        raise ValueError(f"expected True or False, got {bad[0]!r}")
                    columns[name] = np.array([v == "True" for v in values], dtype=bool)
                elif kind is int:
                    columns[name] = np.array([int(v) for v in values], dtype=np.int64)
                elif kind is float:
                    columns[name] = np.array([float(v) for v in values], dtype=np.float64)
                else:
                    columns[name] = np.array(values, dtype=object).astype(str)
            except ValueError as exc:
                raise ValueError(f"{path}: column {name!r}: {exc}") from None
        return cls(columns, schema)


def _build_tables(results: list[RunResult]) -> tuple[Table, Table]:
    per_run: dict[str, list[Any]] = {k: [] for k in _RUN_KEYS}
    steps = []
    for i, r in enumerate(results):
        s = r.spec
        values = (i, s.scenario_name, s.eps, s.eps_mode, s.amsgrad, s.amsgrad_max, s.seed,
                  s.dtype, s.lr, s.optimizer, s.hyperparameters_json, r.eps_compared_with,
                  s.state_dtype, s.rounding)
        for key, value in zip(_RUN_KEYS, values):
            per_run[key].append(value)
        steps.append(len(r.loss))
    reps = np.array(steps, dtype=np.int64)
    cols: dict[str, np.ndarray] = {}
    for key in _RUN_KEYS:
        dtype = _NUMPY_TYPES[RUN_COLUMNS[key]]
        cols[key] = np.repeat(np.array(per_run[key], dtype=dtype), reps)

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype=dtype)

    cols["step"] = cat([np.arange(1, n + 1) for n in steps], np.int64)
    cols["loss"] = cat([r.loss for r in results], np.float64)
    cols["eps_dominated"] = cat([r.eps_dominated for r in results], np.float64)
    cols["nonfinite"] = cat([r.nonfinite for r in results], np.int64)
    cols["update_rms"] = cat([r.update_rms for r in results], np.float64)
    cols["metric"] = cat(
        [np.full(len(r.loss), np.nan) if r.metric is None else r.metric for r in results],
        np.float64,
    )
    for key in ("underflow", "lost_updates"):
        parts = [getattr(r, key) for r in results]
        cols[key] = cat([np.zeros(len(r.loss), np.int64) if p is None else p
                         for r, p in zip(results, parts)], np.int64)  # fmt: skip
    runs_table = Table({k: cols[k] for k in RUN_COLUMNS}, RUN_COLUMNS)

    lo = np.concatenate((MULTIPLIER_EDGES[:-1], [np.inf, np.nan]))
    hi = np.concatenate((MULTIPLIER_EDGES[1:], [np.inf, np.nan]))
    m_run, m_lo, m_hi, m_count = [], [], [], []
    for i, r in enumerate(results):
        nz = np.flatnonzero(r.multiplier_counts)
        m_run.append(np.full(len(nz), i, dtype=np.int64))
        m_lo.append(lo[nz])
        m_hi.append(hi[nz])
        m_count.append(r.multiplier_counts[nz])
    mult_table = Table(
        {
            "run": cat(m_run, np.int64),
            "log10_lo": cat(m_lo, np.float64),
            "log10_hi": cat(m_hi, np.float64),
            "count": cat(m_count, np.int64),
        },
        MULTIPLIER_COLUMNS,
    )
    return runs_table, mult_table


@dataclass
class SweepResult:
    """The outcome of a sweep: ``runs`` (one row per run and step), ``multipliers``
    (the end-of-training histogram of :func:`step_multiplier`, one row per run and bin) and
    ``metrics``: for each scenario that is a :class:`~minnet.lab.problem.Problem` with a metric,
    how to draw it (:meth:`~minnet.lab.problem.Problem.metric_description`; written to
    ``metrics.json``)."""

    runs: Table
    multipliers: Table
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run_table(self) -> Table:
        """One row per run: the run columns plus ``final_loss`` (loss at the last step),
        ``final_metric`` (the last metric evaluated, NaN if none),
        ``diverged`` (a non-finite loss or parameter at any step) and ``first_nonfinite_step``
        (first step after which a parameter was NaN/inf, as a float; NaN for a run whose
        parameters stayed finite, as ``final_metric`` without a metric, so that pandas reads
        it as missing: ``df.first_nonfinite_step.isna()`` selects those runs)."""
        t = self.runs
        run_ids = t["run"]
        starts = np.flatnonzero(np.r_[True, run_ids[1:] != run_ids[:-1]])
        ends = np.r_[starts[1:], len(t)] - 1
        cols = {k: t[k][starts] for k in _RUN_KEYS}
        cols["steps"] = t["step"][ends]
        cols["final_loss"] = t["loss"][ends]
        final_metric = np.full(len(starts), np.nan)
        for j, (a, b) in enumerate(zip(starts, ends)):
            seen = np.flatnonzero(~np.isnan(t["metric"][a : b + 1]))
            if len(seen):
                final_metric[j] = t["metric"][a + seen[-1]]
        cols["final_metric"] = final_metric
        bad = ~np.isfinite(t["loss"]) | (t["nonfinite"] > 0)
        cols["diverged"] = np.logical_or.reduceat(bad, starts) if len(t) else bad
        first = np.full(len(starts), np.nan)
        for j, (a, b) in enumerate(zip(starts, ends)):
            hits = np.flatnonzero(t["nonfinite"][a : b + 1] > 0)
            if len(hits):
                first[j] = t["step"][a + hits[0]]
        cols["first_nonfinite_step"] = first
        return Table(cols)

    def diverged_summary(self) -> str:
        """One line on the runs that diverged (NaN or inf): how many, and which settings, e.g.
        ``"2 of 24 runs diverged (NaN/inf, kept): zero_features=20 Adam eps=0 (2 runs)"``."""
        info = self.run_table()
        n, bad = len(info), info.where(diverged=True)
        if not len(bad):
            return f"none of {n} run{'s' if n != 1 else ''} diverged"
        # Name the settings that vary in this sweep (scenario, optimizer, placement, AMSGrad,
        # dtypes, rounding) and eps; seeds are counted.
        keys = [k for k in ("scenario", "optimizer", "eps_mode", "amsgrad", "dtype",
                            "state_dtype", "rounding") if len(set(info[k].tolist())) > 1]
        if not keys:
            keys = ["optimizer"]
        groups: dict[str, int] = {}
        for row in bad.rows():
            parts = []
            for k in keys:
                v = row[k]
                parts.append(("AMSGrad" if v else "no AMSGrad") if k == "amsgrad" else
                             f"{k}={v}" if k in ("dtype", "state_dtype", "rounding") else str(v))
            if not math.isnan(row["eps"]):
                parts.append(f"eps={row['eps']:g}")
            label = " ".join(parts)
            groups[label] = groups.get(label, 0) + 1
        shown = [f"{g} ({c} run{'s' if c != 1 else ''})" for g, c in list(groups.items())[:6]]
        if len(groups) > 6:
            shown.append(f"and {len(groups) - 6} more settings")
        return f"{len(bad)} of {n} runs diverged (NaN/inf, kept): " + "; ".join(shown)

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``runs.csv`` and ``multipliers.csv`` into ``out_dir`` (created if needed), each
        atomically. Raises :class:`SweepOutputError` if a sweep in another process is writing
        into ``out_dir`` (see :func:`lock_output`) or it cannot be written."""
        with lock_output(out_dir) as out:
            self.runs.to_csv(out / "runs.csv")
            self.multipliers.to_csv(out / "multipliers.csv")
            metrics = out / "metrics.json"
            if self.metrics:
                tmp = out / f".metrics.json.{secrets.token_hex(6)}.tmp"
                tmp.write_text(json.dumps(self.metrics, indent=1, sort_keys=True) + "\n")
                os.replace(tmp, metrics)
            elif metrics.exists():
                metrics.unlink()  # another sweep's, not this one's
        return out

    @classmethod
    def read(cls, out_dir: str | os.PathLike) -> SweepResult:
        """Read what :meth:`write` wrote (``multipliers.csv`` may be absent: empty table)."""
        out = Path(out_dir)
        with open(out / "runs.csv", newline="") as f:
            header = next(csv.reader(f), [])
        # Columns added over time; a runs.csv written before them still reads: no metric
        # (NaN), before the optimizer family every run was Adam's, and before 16-bit runs the
        # state had the parameters' dtype, rounding was moot and nothing underflowed.
        later = [k for k in ("metric", *_FAMILY_KEYS, *_LOWP_KEYS) if header and k not in header]
        schema = {k: v for k, v in RUN_COLUMNS.items() if k not in later}
        runs = Table.read_csv(out / "runs.csv", schema)
        if later:
            n = len(runs)
            fill: dict[str, np.ndarray] = {
                "metric": np.full(n, np.nan),
                "optimizer": np.full(n, "Adam"),
                "hyperparameters": np.full(n, "{}"),
                # before 16-bit runs: state in the parameters' dtype, no 16-bit stats
                "state_dtype": np.array(
                    [d if _is_scenario_name(sc) else "same"
                     for d, sc in zip(runs["dtype"], runs["scenario"])], dtype=str
                ) if n else np.empty(0, dtype=str),  # fmt: skip
                "rounding": np.full(n, "fused"),
                "underflow": np.zeros(n, dtype=np.int64),
                "lost_updates": np.zeros(n, dtype=np.int64),
            }
            if "eps_compared_with" in later:
                modes = runs["eps_mode"] if "eps_mode" in runs.columns else np.full(n, "outside")
                fill["eps_compared_with"] = np.array(
                    [Adam.eps_compared_with_options({"eps_mode": m}) or "" for m in modes],
                    dtype=str,
                ) if n else np.empty(0, dtype=str)  # fmt: skip
            cols = {k: (runs[k] if k in runs.columns else fill[k]) for k in RUN_COLUMNS}
            runs = Table(cols, RUN_COLUMNS)
        mpath = out / "multipliers.csv"
        if mpath.exists():
            mult = Table.read_csv(mpath, MULTIPLIER_COLUMNS)
        else:
            mult = Table({k: np.empty(0, dtype=v) for k, v in MULTIPLIER_COLUMNS.items()})
        return cls(runs, mult, _read_metrics(out / "metrics.json"))


def _read_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """``metrics.json`` (absent: no descriptions); ``ValueError`` naming the file if damaged."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        ok = isinstance(data, dict) and all(
            isinstance(d, dict) and isinstance(d.get("name"), str) for d in data.values()
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not ok:
        raise ValueError(f"{path}: expected {{scenario: {{name, range, chance}}}}")
    return data


def _is_scenario_name(name: str) -> bool:
    try:
        Scenario.parse(name)
    except ValueError:
        return False
    return True


# -- executors ------------------------------------------------------------------------------------


@contextmanager
def _single_threaded_env() -> Iterator[None]:
    """Set the BLAS/OpenMP thread variables to 1 while worker processes are being spawned."""
    saved = {k: os.environ.get(k) for k in _BLAS_ENV}
    os.environ.update({k: "1" for k in _BLAS_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def warm_up(dtypes: Iterable[str] = ("float32",), specs: Iterable[RunSpec] = ()) -> None:
    """Compile (or load from Numba's on-disk cache) the kernels for ``dtypes`` (Adam) and for
    each distinct optimizer variant and precision of ``specs`` (one step of the seed problem)
    in this process, so that worker processes find the cache written instead of compiling it
    each."""
    for dt in dict.fromkeys(dtypes):
        run(RunSpec(eps=1e-8, steps=1, dtype=dt))
    seen = set()
    for spec in specs:
        if isinstance(spec.scenario, Problem):
            continue
        key = (spec.optimizer, spec.eps_mode, spec.amsgrad, spec.amsgrad_max, spec.dtype,
               spec.state_dtype, spec.rounding, spec.hyperparameters_json)  # fmt: skip
        if key not in seen:
            seen.add(key)
            run(replace(spec, steps=1, scenario="seed", seed=0))


def _chunks(
    indexed: Sequence[tuple[int, RunSpec]], size: int
) -> list[list[tuple[int, RunSpec]]]:
    return [list(indexed[i : i + size]) for i in range(0, len(indexed), size)]


# -- the output directory -------------------------------------------------------------------------

#: The lock file a sweep holds in its output directory while it writes there.
LOCK_NAME = ".minnet-sweep.lock"
#: The sub-directory of the output where each run is saved as it finishes.
FINISHED_DIR = ".runs"
#: Bumped when what a run records changes, so that ``resume`` never mixes old runs in.
_RUN_FORMAT = 1
_RUN_FILE = re.compile(r"[0-9a-f]{32}\.npz")
_TEMP_FILE = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # Table.to_csv's and minnet.save's

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class SweepOutputError(OSError):
    """The output directory of a sweep cannot be used: it cannot be written, another sweep is
    writing into it, or it holds results that the call would replace without being asked."""


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C (``KeyboardInterrupt``). ``finished`` of ``total`` runs had
    finished; with an output directory ``out`` they are saved there, and ``sweep(...,
    out=out, resume=True)`` trains the others."""

    def __init__(self, finished: int, total: int, out: Path | None) -> None:
        super().__init__(f"sweep interrupted: {finished} of {total} runs finished")
        self.finished, self.total, self.out = finished, total, out


_held_guard = threading.Lock()
_held: dict[str, list[int]] = {}  # real path of a locked output -> [fd, depth]


@contextmanager
def lock_output(out: str | os.PathLike) -> Iterator[Path]:
    """Create the directory ``out`` if needed, check that it can be written, and hold its lock
    (``out/.minnet-sweep.lock``, an advisory ``flock``) until the block ends.

    Another process that asks for the same lock meanwhile gets :class:`SweepOutputError` at
    once, naming the holder's pid; in this process the lock is re-entrant. The lock goes with
    the process that holds it, so a killed sweep never leaves the directory locked.

    Raises:
        SweepOutputError: ``out`` is not a directory, cannot be created or written, or another
            process holds its lock.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepOutputError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepOutputError(f"cannot create {out}: {exc.strerror or exc}") from exc
    key = os.path.realpath(out)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            fd = None
        else:
            fd = _acquire(out)
            _held[key] = [fd, 1]
    try:
        yield out
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                os.close(_held.pop(key)[0])  # releases the lock


def _acquire(out: Path) -> int:
    """Open and lock ``out``'s lock file, then probe that ``out`` takes new files."""
    path = out / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise SweepOutputError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise SweepOutputError(
                    f"{out} is in use by another sweep{who}; wait for it to finish or choose "
                    "another output directory"
                ) from None
        else:  # pragma: no cover - Windows: lock the first byte
            import msvcrt

            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                raise SweepOutputError(f"{out} is in use by another sweep; wait for it to "
                                       "finish or choose another output directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        probe = out / f".{LOCK_NAME}.{secrets.token_hex(6)}.tmp"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
    except SweepOutputError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise SweepOutputError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def _locked(out: Path) -> None:
    if os.path.realpath(out) not in _held:
        raise RuntimeError(f"{out}: the output directory must be locked (lock_output)")


def _run_key(spec: RunSpec) -> str:
    """What identifies a run's result: every setting it depends on, floats bit for bit."""

    def num(x: Any) -> Any:
        return None if x is None else float(x).hex()

    return json.dumps({
        "format": _RUN_FORMAT, "scenario": spec.scenario_name,
        "problem": isinstance(spec.scenario, Problem), "eps": num(spec.eps),
        "eps_mode": spec.eps_mode, "amsgrad": spec.amsgrad, "amsgrad_max": spec.amsgrad_max,
        "seed": int(spec.seed), "dtype": spec.dtype, "state_dtype": spec.state_dtype,
        "rounding": spec.rounding, "steps": None if spec.steps is None else int(spec.steps),
        "lr": num(spec.lr), "betas": None if spec.betas is None else [num(b) for b in spec.betas],
        "optimizer": spec.optimizer, "hyperparameters": spec.hyperparameters_json,
    }, sort_keys=True)  # fmt: skip


def _run_path(out: Path, key: str) -> Path:
    return out / FINISHED_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def _save_run(out: Path, result: RunResult) -> None:
    key = _run_key(result.spec)
    _save_checkpoint({
        "key": key, "loss": result.loss, "eps_dominated": result.eps_dominated,
        "nonfinite": result.nonfinite, "update_rms": result.update_rms,
        "multiplier_counts": result.multiplier_counts, "metric": result.metric,
        "eps_compared_with": result.eps_compared_with, "underflow": result.underflow,
        "lost_updates": result.lost_updates,
    }, _run_path(out, key))  # fmt: skip


def _load_run(out: Path, spec: RunSpec) -> RunResult | None:
    """The saved result of ``spec``, or None if there is none (or it is unreadable: warns)."""
    key = _run_key(spec)
    path = _run_path(out, key)
    if not path.exists():
        return None
    try:
        d = _load_checkpoint(path)
        if not isinstance(d, dict) or d.get("key") != key:
            raise CheckpointError(f"{path}: holds another run")
        return RunResult(spec, d["loss"], d["eps_dominated"], d["nonfinite"], d["update_rms"],
                         d["multiplier_counts"], d["metric"], d["eps_compared_with"],
                         d["underflow"], d["lost_updates"])  # fmt: skip
    except (CheckpointError, KeyError, OSError) as exc:
        warnings.warn(f"sweep: cannot use the saved run {path} ({exc}); training it again",
                      RuntimeWarning, stacklevel=3)  # fmt: skip
        return None


def prepare_output(
    out: str | os.PathLike, specs: Sequence[RunSpec], *, resume: bool = False,
    overwrite: bool = False,
) -> dict[int, RunResult]:
    """Get a locked output directory ready for ``specs``; return the runs already finished there
    (by index in ``specs``; empty unless ``resume``). Call it inside :func:`lock_output`.

    ``out`` must hold neither a ``runs.csv`` nor runs of an unfinished sweep unless ``resume``
    (keep the finished runs: those whose settings match a spec) or ``overwrite`` (delete them
    and start over) says what to do with them; otherwise :class:`SweepOutputError`.
    """
    out = Path(out)
    _locked(out)
    if resume and overwrite:
        raise ValueError("sweep: pass resume=True or overwrite=True, not both")
    runs_dir = out / FINISHED_DIR
    try:
        runs_dir.mkdir(exist_ok=True)
        # The lock is held: a temporary file in here belongs to no live writer.
        for d in (out, runs_dir):
            for entry in os.listdir(d):
                if _TEMP_FILE.fullmatch(entry) and (d == runs_dir or entry.startswith(
                        (".runs.csv.", ".multipliers.csv.", ".metrics.json.",
                         f".{LOCK_NAME}."))):  # fmt: skip
                    (d / entry).unlink()
        saved = [e for e in os.listdir(runs_dir) if _RUN_FILE.fullmatch(e)]
    except OSError as exc:
        raise SweepOutputError(f"cannot write to {runs_dir}: {exc.strerror or exc}") from exc
    if not (resume or overwrite):
        if (out / "runs.csv").exists():
            raise SweepOutputError(
                f"{out / 'runs.csv'} already exists; pass overwrite=True to start over, "
                "resume=True to keep its finished runs, or another output directory"
            )
        if saved:
            raise SweepOutputError(
                f"{out} holds {len(saved)} finished run{'s' if len(saved) != 1 else ''} of an "
                "unfinished sweep; pass resume=True to keep them and train the rest, "
                "overwrite=True to start over, or another output directory"
            )
    if overwrite:
        for entry in saved:
            (runs_dir / entry).unlink()
        return {}
    finished: dict[int, RunResult] = {}
    if resume:
        for i, spec in enumerate(specs):
            got = _load_run(out, spec)
            if got is not None:
                finished[i] = got
    return finished


# -- sweeps ---------------------------------------------------------------------------------------


def _worker_init(parent: int) -> None:
    """In each local worker process: leave Ctrl-C to the parent (which stops the sweep and
    ends the workers), and exit as soon as the parent is gone, whatever killed it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="minnet-parent-watch", daemon=True).start()


def sweep(
    specs: Sequence[RunSpec],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    chunksize: int | None = None,
    progress: bool | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> SweepResult:
    """Train every run of ``specs`` and return the tidy result (runs in ``specs`` order).

    Args:
        specs: the runs, e.g. from :func:`grid`. The ``run`` column is the index in ``specs``.
        workers: local worker processes (default: ``os.cpu_count()``); ``1`` trains in this
            process. Ignored when ``scheduler`` is given.
        scheduler: address of a Dask distributed scheduler (``"tcp://host:port"``); needs the
            ``dask`` extra.
        chunksize: runs per task (default: 1 for local workers, so that each run is saved and
            counted as it finishes; enough for about four tasks per worker on Dask).
        progress: show a tqdm progress bar: runs done / total, elapsed time and an estimate
            of the time left (default: only on a terminal, for sweeps of more than one run).
        out: an output directory. The sweep then holds its lock (:func:`lock_output`), checks
            that it can be written before the first run, saves each run there as it finishes
            (atomically), and writes ``runs.csv`` and ``multipliers.csv`` at the end.
        resume: keep the runs of ``specs`` already finished in ``out`` (by an interrupted or
            killed sweep) and train only the others; the result is the same, row for row. A
            run is recognised by its settings (the run columns of ``runs.csv`` plus ``steps``
            and ``betas``; a Problem by its name), so resume with the same minnet and problems.
        overwrite: start over in an ``out`` that holds a ``runs.csv`` or finished runs.

    Raises:
        SweepOutputError: ``out`` cannot be written, is in use by another sweep, or holds
            results and neither ``resume`` nor ``overwrite`` is given; before any run.
        SweepInterrupted: (a ``KeyboardInterrupt``) Ctrl-C; the worker processes are ended,
            and the runs finished so far are kept in ``out``.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("sweep: no runs given")
    for i, s in enumerate(specs):
        if not isinstance(s, RunSpec):
            raise TypeError(f"sweep: specs[{i}] is {type(s).__name__}, expected RunSpec")
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"sweep: workers must be an int >= 1, got {workers!r}")
    if out is None:
        if resume or overwrite:
            raise ValueError("sweep: resume and overwrite need an output directory (out=)")
        return _build_result(_train(specs, {}, None, workers, scheduler, chunksize, progress))
    with lock_output(out) as where:
        finished = prepare_output(where, specs, resume=resume, overwrite=overwrite)
        results = _train(specs, finished, where, workers, scheduler, chunksize, progress)
        result = _build_result(results)
        result.write(where)
    return result


def _build_result(results: list[RunResult]) -> SweepResult:
    runs_table, mult_table = _build_tables(results)
    metrics: dict[str, dict[str, Any]] = {}
    for r in results:
        scenario = r.spec.scenario
        if isinstance(scenario, Problem) and str(scenario) not in metrics:
            described = scenario.metric_description()
            if described is not None:
                metrics[str(scenario)] = described
    return SweepResult(runs_table, mult_table, metrics)


def _train(
    specs: list[RunSpec],
    finished: dict[int, RunResult],
    out: Path | None,
    workers: int,
    scheduler: str | None,
    chunksize: int | None,
    progress: bool | None,
) -> list[RunResult]:
    """Train the runs of ``specs`` not in ``finished``; save each in ``out`` as it finishes."""
    from tqdm.auto import tqdm

    results: list[RunResult | None] = [None] * len(specs)
    for i, r in finished.items():
        results[i] = r
    todo = [(i, s) for i, s in enumerate(specs) if i not in finished]
    slots = workers if scheduler is None else 4 * workers
    if chunksize is None:
        chunksize = 1 if scheduler is None else max(1, math.ceil(len(todo) / (4 * slots)))
    chunks = _chunks(todo, chunksize)
    disable = (len(specs) < 2) if progress is None else not progress
    if progress is None and not disable:
        disable = None  # tqdm: off when not writing to a terminal
    done = len(finished)
    try:
        # Held for the whole sweep from this thread: OpenBLAS's thread count is process-wide,
        # and setting it from a Dask worker thread of this process (processes=False) does not
        # always take; held here, in-process runs on any thread see one BLAS thread.
        with (
            _one_blas_thread(),
            tqdm(total=len(specs), initial=done, unit="run", desc="sweep",
                 disable=disable) as bar,  # fmt: skip
        ):

            def collect(pairs: list[tuple[int, RunResult]]) -> None:
                nonlocal done
                for i, r in pairs:
                    if out is not None:
                        _save_run(out, r)
                    results[i] = r
                    done += 1
                    bar.update(1)

            if not chunks:
                pass
            elif scheduler is not None:
                _sweep_dask(chunks, scheduler, collect)
            elif workers == 1 or len(todo) == 1:
                for i, spec in todo:
                    collect([(i, run(spec))])
            else:
                _sweep_local(chunks, workers, collect, [s for _, s in todo], out)
    except SweepInterrupted:
        raise
    except KeyboardInterrupt:
        if out is not None:  # Ctrl-C may land between a run's file and ``done += 1``: count files
            done = sum(_run_path(out, _run_key(s)).exists() for s in specs)
        raise SweepInterrupted(done, len(specs), out) from None
    return results  # type: ignore[return-value]


def _sweep_local(
    chunks: list[list[tuple[int, RunSpec]]],
    workers: int,
    collect: Callable[[list[tuple[int, RunResult]]], None],
    specs: list[RunSpec],
    out: Path | None,
) -> None:
    warm_up({s.dtype for s in specs if not s.low_precision},
            [s for s in specs if s.low_precision])  # fmt: skip
    with _single_threaded_env():
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(chunks)), mp_context=get_context("spawn"),
            initializer=_worker_init, initargs=(os.getpid(),),
        )  # fmt: skip
    try:
        futures = [pool.submit(_run_chunk, c) for c in chunks]
        for fut in as_completed(futures):
            collect(fut.result())
    except BrokenProcessPool as exc:
        kept = (f"; the runs finished so far are kept in {out}: resume=True trains the "
                "others") if out else ""  # fmt: skip
        raise RuntimeError(
            "sweep: a worker process died (killed, or out of memory?). If sweep() runs from a "
            "script, call it under 'if __name__ == \"__main__\":' (worker processes are "
            f"spawned and import the script), or pass workers=1{kept}"
        ) from exc
    except BaseException:
        # Ctrl-C or an error: end the workers now rather than after their current runs.
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _sweep_dask(
    chunks: list[list[tuple[int, RunSpec]]],
    scheduler: str,
    collect: Callable[[list[tuple[int, RunResult]]], None],
) -> None:
    try:
        from distributed import Client
        from distributed import as_completed as dask_as_completed
    except ImportError as exc:
        raise ImportError(
            "a Dask scheduler needs dask.distributed: pip install 'minnet[dask]'"
        ) from exc
    with Client(scheduler, timeout="10s") as client:
        futures = client.map(_run_chunk, chunks, pure=False)
        for fut in dask_as_completed(futures):
            collect(fut.result())

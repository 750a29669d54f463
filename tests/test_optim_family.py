"""Every optimizer of the family against the base class's contract (PyTorch common_optimizers
style): one table per concern, each covering every optimizer and every variant of it.

* ``VARIANTS`` / ``HYPER``: the options that select a different kernel or formula, and the
  hyperparameters the property test draws: the kernel against the hand-written float64 NumPy
  reference (1e-12 relative), float32, the dry run, the tracked and plain paths.
* ``FAMILY``: one row per variant for parameter groups, state dicts, stats and check_finite.
* ``ERROR_INPUTS`` / ``ACCEPTED`` / ``DEFAULTS`` / ``STATE_NAMES``: PyTorch's messages, edge
  values, signatures and state-dict layouts.
* ``EPS_ZERO``, ``EPS_COMPARED``, ``RESUME``, ``CONVERGENCE``: eps = 0's 0/0, what eps is
  compared with, resume in a new process, optax's test problems. The Numba disk cache is
  checked for every optimizer in a second process.

What is specific to one optimizer (its formula facts, its eps placements, its library's
behaviours) stays in that optimizer's test file; machine code is in
tests/test_kernels_vectorized.py, 16-bit storage in tests/test_optim_lowp_family.py.

Adding an optimizer: add rows to ``VARIANTS``, ``HYPER``, ``FAMILY``, ``ERROR_INPUTS``,
``DEFAULTS``, ``STATE_NAMES``, ``EPS_COMPARED``, ``RESUME`` and ``CONVERGENCE`` (and
``EPS_ZERO`` if it has an eps); every test below then runs on it.
"""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _train_with_checkpoints import checkpoint, fresh, train
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoint import assert_identical

import minnet
from minnet.nn import Parameter
from minnet.optim import (
    ADOPT,
    ASGD,
    LBFGS,
    SGD,
    AdaBelief,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamStats,
    AdamW,
    Adan,
    AdEMAMix,
    Fromage,
    Ftrl,
    Lamb,
    Lars,
    Lion,
    Muon,
    NAdam,
    NoisySGD,
    Novograd,
    OptimisticAdam,
    Optimizer,
    OptimizerStats,
    Prodigy,
    RAdam,
    RMSprop,
    Rprop,
    ScheduleFreeAdamW,
    SignSGD,
    Signum,
    SparseAdam,
    Yogi,
)
from minnet.optim.adagrad import ADAGRAD_EPS_MODES
from minnet.optim.adam import AMSGRAD_MAX_MODES, EPS_MODES
from minnet.optim.adamax import ADAMAX_EPS_MODES
from minnet.optim.optimizer import _Run, required
from minnet.optim.rmsprop import RMSPROP_EPS_MODES

# the tables take eps=0 on purpose (0/0 is what several tests check)
pytestmark = pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")

CLASSES: list[type[Optimizer]] = [
    SGD, Adam, AdamW, RMSprop, Adagrad, Adamax, Adadelta, NAdam, RAdam, AdaBelief, Lion, Rprop,
    ASGD, Yogi, ADOPT, Adan, AdEMAMix, Ftrl, SignSGD, Signum, Lamb, Lars, SparseAdam,
    OptimisticAdam, NoisySGD, ScheduleFreeAdamW, Prodigy, Novograd, Fromage, Adafactor,
]  # fmt: skip
#: Optimizers with a per-tensor stage (a trust ratio or a second moment over each parameter's
#: norms) or a shaped update (Adafactor: the parameter's RMS and the update's).
PER_TENSOR = (Lamb, Lars, Novograd, Fromage, Adafactor)
#: Optimizers whose first step moves nothing (in every variant, or in the one named).
FIRST_STEP_STILL = {ADOPT: {}, Rprop: {"variant": "optax"}}
HELPER = str(Path(__file__).with_name("_train_with_checkpoints.py"))


def row_id(cls: type, kwargs: dict[str, Any]) -> str:
    """A test id: the class name and its options."""
    return "-".join([cls.__name__, *(f"{k}={v}" for k, v in kwargs.items())])


# -- the family: one row per variant, for groups, state dicts, stats and check_finite ---------

FAMILY: list[tuple[type[Optimizer], dict[str, Any]]] = [
    (SGD, {"lr": 0.05}),
    (SGD, {"lr": 0.05, "weight_decay": 0.1, "maximize": True}),
    (SGD, {"lr": 0.05, "momentum": 0.9}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (Adam, {"lr": 0.05}),
    (Adam, {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1}),
    (Adam, {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (AdamW, {"lr": 0.05}),
    (AdamW, {"lr": 0.05, "amsgrad": True, "eps_mode": "hat"}),
    (AdamW, {"lr": 0.05, "amsgrad": True, "amsgrad_max": "corrected", "eps_mode": "inside"}),
    (AdamW, {"lr": 0.05, "amsgrad": True, "amsgrad_max": "paper"}),
    (AdamW, {"lr": 0.05, "eps_mode": "atan2", "weight_decay": 0.5}),
    (RMSprop, {"lr": 0.01}),
    (RMSprop, {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
    (RMSprop, {"lr": 0.01, "eps_mode": "inside", "centered": True, "eps": 1e-6}),
    (RMSprop, {"lr": 0.01, "eps_mode": "inside", "momentum": 0.5, "maximize": True}),
    (Adagrad, {"lr": 0.05}),
    (Adagrad, {"lr": 0.05, "lr_decay": 0.1, "initial_accumulator_value": 0.1,
               "weight_decay": 0.1}),
    (Adagrad, {"lr": 0.05, "eps_mode": "inside", "maximize": True}),
    (Adagrad, {"lr": 0.05, "eps_mode": "inside_guarded", "eps": 0.0}),
    (Adamax, {"lr": 0.05}),
    (Adamax, {"lr": 0.05, "eps_mode": "outside", "weight_decay": 0.1}),
    (Adamax, {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),  # AdamaxW
    (Adadelta, {"lr": 1.0}),
    (Adadelta, {"lr": 0.5, "rho": 0.95, "weight_decay": 0.1}),
    (NAdam, {"lr": 0.05}),
    (NAdam, {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True,
             "momentum_decay": 0.1}),
    (NAdam, {"lr": 0.05, "variant": "optax"}),
    (NAdam, {"lr": 0.05, "variant": "optax", "weight_decay": 0.1,
             "decoupled_weight_decay": True}),
    (RAdam, {"lr": 0.05}),  # unrectified for the first 5 steps, rectified after
    (RAdam, {"lr": 0.05, "betas": (0.9, 0.9), "weight_decay": 0.1,
             "decoupled_weight_decay": True}),
    (RAdam, {"lr": 0.05, "variant": "optax"}),
    (AdaBelief, {"lr": 0.05}),
    (AdaBelief, {"lr": 0.05, "eps": 0.0, "eps_root": 1e-12}),
    (Lion, {"lr": 0.01}),
    (Lion, {"lr": 0.01, "betas": (0.8, 0.95), "weight_decay": 0.1}),
    (Rprop, {"lr": 0.01}),
    (Rprop, {"lr": 0.01, "etas": (0.3, 1.5), "step_sizes": (1e-4, 0.1), "maximize": True}),
    (Rprop, {"lr": 0.01, "variant": "optax"}),
    (ASGD, {"lr": 0.05}),
    (ASGD, {"lr": 0.05, "lambd": 0.1, "t0": 1.0, "weight_decay": 0.1, "maximize": True}),
    (Yogi, {"lr": 0.05}),
    (Yogi, {"lr": 0.05, "eps": 1e-8, "initial_accumulator_value": 0.0}),
    (ADOPT, {"lr": 0.05}),
    (ADOPT, {"lr": 0.05, "nesterov": True, "use_clipping": False}),
    (Adan, {"lr": 0.05}),
    (Adan, {"lr": 0.05, "eps": 0.0, "eps_root": 1e-12, "weight_decay": 0.1}),
    (AdEMAMix, {"lr": 0.05}),
    (AdEMAMix, {"lr": 0.05, "betas": (0.8, 0.99, 0.9), "alpha": 2.0, "eps": 0.0,
                "eps_root": 1e-12, "weight_decay": 0.1}),
    (Ftrl, {"lr": 0.05}),
    (Ftrl, {"lr": 0.05, "learning_rate_power": -0.3, "initial_accumulator_value": 1e-6,
            "l1_regularization_strength": 1e-3, "l2_regularization_strength": 0.1,
            "l2_shrinkage_regularization_strength": 0.05, "beta": 0.5}),
    (SignSGD, {"lr": 0.01}),
    (Signum, {"lr": 0.01}),
    (Signum, {"lr": 0.01, "beta": 0.5}),
    (Lamb, {"lr": 0.05}),
    (Lamb, {"lr": 0.05, "variant": "optax", "weight_decay": 0.1}),
    (Lars, {"lr": 0.5}),
    (Lars, {"lr": 0.5, "eps": 1e-3, "weight_decay": 0.1, "nesterov": True}),
    (Lars, {"lr": 0.05, "trust_ratio": False, "momentum": 0.5}),
    (SparseAdam, {"lr": 0.05}),
    (SparseAdam, {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-3, "maximize": True}),
    (OptimisticAdam, {"lr": 0.05}),
    (OptimisticAdam, {"lr": 0.05, "optimism": 0.1, "nesterov": False, "eps": 0.0,
                      "eps_root": 1e-12}),
    # eta=0: no noise. The draws are keyed on each parameter's index in its optimizer, so two
    # optimizers of one group each draw other numbers than one of two groups (the noise's own
    # tests are in tests/test_noisy_sgd.py).
    (NoisySGD, {"lr": 0.05, "eta": 0.0}),
    (ScheduleFreeAdamW, {"lr": 0.05}),
    (ScheduleFreeAdamW, {"lr": 0.05, "variant": "keras", "weight_decay": 0.1,
                         "warmup_steps": 2}),
    (Prodigy, {"lr": 1.0}),
    (Prodigy, {"lr": 0.5, "weight_decay": 0.1, "safeguard_warmup": True}),
    (Novograd, {"lr": 0.05}),
    (Novograd, {"lr": 0.05, "eps": 1e-3, "eps_root": 1e-4, "weight_decay": 0.1}),
    (Fromage, {"lr": 0.05}),
    (Fromage, {"lr": 0.05, "min_norm": 0.0}),
    (Adafactor, {"lr": 0.05}),
    (Adafactor, {"lr": 0.05, "weight_decay": 0.1, "maximize": True, "eps": (1e-6, 1e-2)}),
    (Adafactor, {"lr": 0.05, "variant": "keras"}),
    (Adafactor, {"lr": 0.05, "variant": "optax", "weight_decay": 0.1,
                 "min_dim_size_to_factor": 2}),
]  # fmt: skip
FAMILY_IDS = [row_id(c, kw) for c, kw in FAMILY]


def two_params(dtype: Any = np.float64) -> list[Parameter]:
    """A 2x3 weight ``w`` and a bias ``b`` of 2, in ``dtype``."""
    return [Parameter(np.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "w"),
            Parameter(np.array([0.5, -0.25], dtype=dtype), "b")]  # fmt: skip


def fill_grads(params: list[Parameter], rng: np.random.Generator) -> None:
    """Standard normal gradients."""
    for p in params:
        p.grad[...] = rng.standard_normal(p.data.shape)


def test_every_optimizer_is_in_every_table() -> None:
    """An optimizer exported by minnet.optim and missing from a table fails here."""
    exported = {getattr(minnet.optim, n) for n in minnet.optim.__all__}
    exported = {c for c in exported if isinstance(c, type) and issubclass(c, Optimizer)}
    # LBFGS is no element rule (closure, dot products, one group): tests/test_optim_lbfgs.py.
    # Muon takes only 2-D parameters (as PyTorch's), which these tables' vectors are not: its
    # share of them is tests/test_muon.py.
    assert exported - {Optimizer, LBFGS, Muon} == set(CLASSES)
    for table in (FAMILY, ERROR_INPUTS, ACCEPTED, STATE_NAMES, EPS_COMPARED, CONVERGENCE):
        assert {row[0] for row in table} == set(CLASSES)
    for cls in CLASSES:
        assert cls in VARIANTS and cls in HYPER and cls in DEFAULTS
        assert any(v["optimizer"] == cls.__name__ for v in RESUME.values())
    with_eps = {c for c in CLASSES if "eps" in inspect.signature(c).parameters}
    # Lars: eps is next to a tensor's norm, and a zero norm takes the ratio 1: never 0/0.
    # SparseAdam: eps must be > 0 (PyTorch's check), and it never divides an untouched row.
    # Novograd: 0/0 only where a whole tensor's gradient has been 0 (its own test).
    assert {row[0] for row in EPS_ZERO} == with_eps - {Lars, SparseAdam, Novograd}


# -- errors (PyTorch's messages), edge values, defaults ----------------------------------------

_BETA_ERRORS = [
    ({"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0$"),
    ({"betas": (-0.1, 0.999)}, ValueError, "Invalid beta parameter at index 0: -0.1$"),
    ({"betas": (math.nan, 0.999)}, ValueError, "Invalid beta parameter at index 0: nan$"),
    ({"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0$"),
    ({"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1$"),
    ({"betas": (0.9, math.nan)}, ValueError, "Invalid beta parameter at index 1: nan$"),
    ({"betas": 0.9}, TypeError, "betas must be a pair"),
    ({"betas": (0.9,)}, TypeError, "betas must be a pair"),
    ({"betas": (0.9, 0.99, 0.999)}, TypeError, "betas must be a pair"),
]
_EPS_ERRORS = [
    ({"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08$"),
    ({"eps": math.nan}, ValueError, "Invalid epsilon value: nan$"),
]
#: (class, kwargs, exception, message): PyTorch's wording where PyTorch has one. The message
#: starts the exception's text (is all of it when it ends with ``$``); a row whose keys are
#: all group options is also refused when set by editing ``param_groups``, at the next step.
ERROR_INPUTS: list[tuple[type[Optimizer], dict[str, Any], type, str]] = [
    *[(cls, kw, exc, msg) for cls in CLASSES for kw, exc, msg in [
        ({"lr": -1e-3}, ValueError, "Invalid learning rate: -0.001$"),
        ({"lr": math.nan}, ValueError, "Invalid learning rate: nan$"),
        ({"lr": "0.1"}, TypeError, "lr must be a real number, got str: '0.1'$"),
        ({"track_stats": 1}, TypeError, "track_stats must be a bool"),
        ({"check_finite": "no"}, TypeError, "check_finite must be a bool"),
    ]],
    *[(cls, kw, exc, msg) for cls in CLASSES
      if cls not in (AdaBelief, Rprop, Yogi, ADOPT, Ftrl, SignSGD, Signum, SparseAdam,
                     OptimisticAdam, NoisySGD, Fromage)
      for kw, exc, msg in [
        ({"weight_decay": -0.5}, ValueError, "Invalid weight_decay value: -0.5$"),
        ({"weight_decay": math.nan}, ValueError, "Invalid weight_decay value: nan$"),
    ]],
    *[(cls, kw, exc, msg) for cls in CLASSES
      if cls not in (SGD, Lion, Rprop, ASGD, Ftrl, SignSGD, Signum, NoisySGD, Fromage)
      for kw, exc, msg in _EPS_ERRORS],
    *[(cls, kw, exc, msg)
      for cls in (Adam, AdamW, Adamax, NAdam, RAdam, AdaBelief, Lion, Yogi, ADOPT, Lamb,
                  SparseAdam, OptimisticAdam, ScheduleFreeAdamW, Prodigy, Novograd)
      for kw, exc, msg in _BETA_ERRORS],
    # PyTorch's SparseAdam wants lr > 0 and eps > 0, strictly (its own messages)
    (SparseAdam, {"lr": 0.0}, ValueError, "Invalid learning rate: 0.0$"),
    (SparseAdam, {"eps": 0.0}, ValueError, "Invalid epsilon value: 0.0$"),
    *[(cls, kw, exc, msg) for cls in (Adam, AdamW) for kw, exc, msg in [
        ({"betas": (0.9, None)}, TypeError, "betas[1] must be a real number"),
        ({"amsgrad": "yes"}, TypeError, "amsgrad must be a bool"),
        ({"eps_mode": "below"}, ValueError, "Invalid eps_mode: 'below'; expected one of"),
        ({"amsgrad": True, "amsgrad_max": "max"}, ValueError, "Invalid amsgrad_max: 'max'"),
        ({"amsgrad_max": "paper"}, ValueError, "amsgrad_max='paper' needs amsgrad=True"),
    ]],
    *[(cls, {"decoupled_weight_decay": 1}, TypeError, "decoupled_weight_decay must be a bool")
      for cls in (Adam, NAdam, RAdam)],
    (SGD, {"momentum": -0.1}, ValueError, "Invalid momentum value: -0.1$"),
    (SGD, {"momentum": math.nan}, ValueError, "Invalid momentum value: nan$"),
    (SGD, {"momentum": None}, TypeError, "momentum must be a real number"),
    (SGD, {"dampening": math.nan}, ValueError, "Invalid dampening value: nan$"),
    (SGD, {"nesterov": True}, ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (SGD, {"nesterov": 1, "momentum": 0.9}, TypeError, "nesterov must be a bool"),
    (SGD, {"maximize": "no"}, TypeError, "maximize must be a bool"),
    (RMSprop, {"momentum": -0.5}, ValueError, "Invalid momentum value: -0.5$"),
    (RMSprop, {"alpha": -0.1}, ValueError, "Invalid alpha value: -0.1$"),
    (RMSprop, {"alpha": math.nan}, ValueError, "Invalid alpha value: nan$"),
    (RMSprop, {"centered": 1}, TypeError, "centered must be a bool"),
    (RMSprop, {"eps_mode": "hat"}, ValueError, "Invalid eps_mode: 'hat'"),
    (Adagrad, {"lr_decay": -1e-3}, ValueError, "Invalid lr_decay value: -0.001$"),
    (Adagrad, {"lr_decay": math.nan}, ValueError, "Invalid lr_decay value: nan$"),
    (Adagrad, {"initial_accumulator_value": -0.1}, ValueError,
     "Invalid initial_accumulator_value value: -0.1$"),
    (Adagrad, {"maximize": "no"}, TypeError, "maximize must be a bool"),
    (Adagrad, {"eps_mode": "guarded"}, ValueError, "Invalid eps_mode: 'guarded'"),
    # PyTorch checks lr first, then eps, then betas, then weight_decay.
    (Adamax, {"lr": -1.0, "eps": -1.0}, ValueError, "Invalid learning rate: -1.0$"),
    (Adamax, {"eps": -1.0, "betas": (2.0, 0.9)}, ValueError, "Invalid epsilon value: -1.0$"),
    (Adamax, {"eps_mode": "inside"}, ValueError,
     "Invalid eps_mode: 'inside'; expected one of ('max', 'outside')$"),
    (Adamax, {"betas": 0.9}, TypeError,
     "betas must be a pair (beta1, beta2) of floats, got 0.9$"),
    (Adadelta, {"rho": 1.5}, ValueError, "Invalid rho value: 1.5$"),
    (Adadelta, {"rho": -0.1}, ValueError, "Invalid rho value: -0.1$"),
    (Adadelta, {"rho": math.nan}, ValueError, "Invalid rho value: nan$"),
    (Adadelta, {"rho": 2.0, "eps": -1.0}, ValueError, "Invalid rho value: 2.0$"),
    (Adadelta, {"rho": "0.9"}, TypeError, "rho must be a real number, got str: '0.9'$"),
    (NAdam, {"momentum_decay": -4e-3}, ValueError, "Invalid momentum_decay value: -0.004$"),
    (NAdam, {"momentum_decay": math.nan}, ValueError, "Invalid momentum_decay value: nan$"),
    (AdaBelief, {"eps": -1e-16}, ValueError, "Invalid epsilon value: -1e-16$"),
    (AdaBelief, {"eps_root": -1.0}, ValueError, "Invalid eps_root value: -1.0$"),
    (AdaBelief, {"eps_root": math.nan}, ValueError, "Invalid eps_root value: nan$"),
    (AdaBelief, {"eps_root": None}, TypeError, "eps_root must be a real number"),
    (AdaBelief, {"weight_decay": 0.1}, TypeError, "unexpected keyword argument"),
    (Lion, {"lr": [1e-4]}, TypeError, "lr must be a real number"),
    (Lion, {"betas": (0.9, 1.5)}, ValueError, "Invalid beta parameter at index 1: 1.5$"),
    (Lion, {"weight_decay": "1e-3"}, TypeError, "weight_decay must be a real number"),
    (Lion, {"eps": 1e-8}, TypeError, "unexpected keyword argument"),
    # Rprop: PyTorch's eta check; the step-size bounds must be ordered (PyTorch checks none).
    (Rprop, {"etas": (1.0, 1.2)}, ValueError, "Invalid eta values: 1.0, 1.2$"),
    (Rprop, {"etas": (0.5, 1.0)}, ValueError, "Invalid eta values: 0.5, 1.0$"),
    (Rprop, {"etas": (0.0, 1.2)}, ValueError, "Invalid eta values: 0.0, 1.2$"),
    (Rprop, {"etas": (math.nan, 1.2)}, ValueError, "Invalid eta values: nan, 1.2$"),
    (Rprop, {"etas": 0.5}, TypeError, "etas must be a pair (eta_minus, eta_plus)"),
    (Rprop, {"step_sizes": (1.0, 1e-6)}, ValueError,
     "Invalid step_sizes: 1.0, 1e-06; expected 0 <= min <= max$"),
    (Rprop, {"step_sizes": (-1.0, 50)}, ValueError, "Invalid step_sizes: -1.0, 50"),
    (Rprop, {"step_sizes": (1e-6, math.nan)}, ValueError, "Invalid step_sizes: 1e-06, nan"),
    (Rprop, {"step_sizes": (1e-6, None)}, TypeError, "step_sizes[1] must be a real number"),
    (Rprop, {"variant": "keras"}, ValueError,
     "Invalid variant: 'keras'; expected one of ('torch', 'optax')$"),
    (Rprop, {"maximize": "no"}, TypeError, "maximize must be a bool"),
    (Rprop, {"weight_decay": 0.1}, TypeError, "unexpected keyword argument"),
    # ASGD: PyTorch checks lr and weight_decay; minnet also refuses a NaN or infinite schedule.
    (ASGD, {"lr": -1.0, "weight_decay": -1.0}, ValueError, "Invalid learning rate: -1.0$"),
    (ASGD, {"lambd": math.nan}, ValueError, "Invalid lambd value: nan$"),
    (ASGD, {"alpha": math.inf}, ValueError, "Invalid alpha value: inf$"),
    (ASGD, {"t0": "1e6"}, TypeError, "t0 must be a real number"),
    (ASGD, {"maximize": 1}, TypeError, "maximize must be a bool"),
    (ASGD, {"eps": 1e-8}, TypeError, "unexpected keyword argument"),
    (Yogi, {"initial_accumulator_value": -1e-6}, ValueError,
     "Invalid initial_accumulator_value value: -1e-06$"),
    (Yogi, {"weight_decay": 0.1}, TypeError, "unexpected keyword argument"),
    (Yogi, {"maximize": True}, TypeError, "unexpected keyword argument"),
    (ADOPT, {"nesterov": 1}, TypeError, "nesterov must be a bool"),
    (ADOPT, {"use_clipping": "yes"}, TypeError, "use_clipping must be a bool"),
    (ADOPT, {"weight_decay": 0.1}, TypeError, "unexpected keyword argument"),
    # Adan: three betas, two epsilons (optax's b1, b2, b3, eps, eps_root).
    (Adan, {"betas": (0.98, 0.92, 1.0)}, ValueError, "Invalid beta parameter at index 2: 1.0$"),
    (Adan, {"betas": (0.98, math.nan, 0.99)}, ValueError,
     "Invalid beta parameter at index 1: nan$"),
    (Adan, {"betas": (-0.1, 0.92, 0.99)}, ValueError, "Invalid beta parameter at index 0: -0.1$"),
    (Adan, {"betas": (0.98, 0.92)}, TypeError, "betas must be a triple (beta1, beta2, beta3)"),
    (Adan, {"betas": (0.98, 0.92, None)}, TypeError, "betas[2] must be a real number"),
    (Adan, {"eps_root": -1e-8}, ValueError, "Invalid eps_root value: -1e-08$"),
    (Adan, {"eps_root": math.nan}, ValueError, "Invalid eps_root value: nan$"),
    (Adan, {"maximize": True}, TypeError, "unexpected keyword argument"),
    # optax's placements on PyTorch's optimizers
    (NAdam, {"variant": "keras"}, ValueError, "Invalid variant: 'keras'"),
    (RAdam, {"variant": None}, ValueError, "Invalid variant: None"),
    (Adamax, {"decoupled_weight_decay": "yes"}, TypeError,
     "decoupled_weight_decay must be a bool"),
    # OptimisticAdam: optax's optimism (None: lr), eps_root, nesterov.
    (OptimisticAdam, {"optimism": -0.1}, ValueError, "Invalid optimism value: -0.1$"),
    (OptimisticAdam, {"optimism": math.nan}, ValueError, "Invalid optimism value: nan$"),
    (OptimisticAdam, {"optimism": "lr"}, TypeError, "optimism must be a real number"),
    (OptimisticAdam, {"eps_root": -1e-8}, ValueError, "Invalid eps_root value: -1e-08$"),
    (OptimisticAdam, {"nesterov": "yes"}, TypeError, "nesterov must be a bool"),
    (OptimisticAdam, {"weight_decay": 0.1}, TypeError, "unexpected keyword argument"),
    # NoisySGD: the variance eta / t**gamma; seed and noise_fn are the optimizer's, not a group's.
    (NoisySGD, {"eta": -0.01}, ValueError, "Invalid eta value: -0.01$"),
    (NoisySGD, {"eta": math.nan}, ValueError, "Invalid eta value: nan$"),
    (NoisySGD, {"gamma": math.nan}, ValueError, "Invalid gamma value: nan$"),
    (NoisySGD, {"seed": -1}, ValueError, "Invalid seed value: -1$"),
    (NoisySGD, {"seed": 1.5}, TypeError, "seed must be an int or None"),
    (NoisySGD, {"seed": True}, TypeError, "seed must be an int or None"),
    (NoisySGD, {"noise_fn": 3}, TypeError, "noise_fn must be callable or None"),
    (NoisySGD, {"eps": 1e-8}, TypeError, "unexpected keyword argument"),
    # AdEMAMix: three betas (the fast EMA, the second moment, the slow EMA), alpha, two epsilons.
    (AdEMAMix, {"betas": (0.9, 0.999, 1.0)}, ValueError,
     "Invalid beta parameter at index 2: 1.0$"),
    (AdEMAMix, {"betas": (0.9, 0.999)}, TypeError,
     "betas must be a triple (beta1, beta2, beta3)"),
    (AdEMAMix, {"alpha": math.nan}, ValueError, "Invalid alpha value: nan$"),
    (AdEMAMix, {"alpha": math.inf}, ValueError, "Invalid alpha value: inf$"),
    (AdEMAMix, {"alpha": "5"}, TypeError, "alpha must be a real number"),
    (AdEMAMix, {"eps_root": -1.0}, ValueError, "Invalid eps_root value: -1.0$"),
    (AdEMAMix, {"b3_scheduler": None}, TypeError, "unexpected keyword argument"),
    (AdEMAMix, {"maximize": True}, TypeError, "unexpected keyword argument"),
    # Ftrl: Keras's checks (every strength >= 0, learning_rate_power <= 0), PyTorch's wording.
    (Ftrl, {"initial_accumulator_value": -0.1}, ValueError,
     "Invalid initial_accumulator_value value: -0.1$"),
    (Ftrl, {"initial_accumulator_value": math.nan}, ValueError,
     "Invalid initial_accumulator_value value: nan$"),
    (Ftrl, {"learning_rate_power": 0.5}, ValueError, "Invalid learning_rate_power value: 0.5$"),
    (Ftrl, {"learning_rate_power": math.nan}, ValueError,
     "Invalid learning_rate_power value: nan$"),
    (Ftrl, {"l1_regularization_strength": -1.0}, ValueError,
     "Invalid l1_regularization_strength value: -1.0$"),
    (Ftrl, {"l2_regularization_strength": math.nan}, ValueError,
     "Invalid l2_regularization_strength value: nan$"),
    (Ftrl, {"l2_shrinkage_regularization_strength": -1e-3}, ValueError,
     "Invalid l2_shrinkage_regularization_strength value: -0.001$"),
    (Ftrl, {"beta": -0.5}, ValueError, "Invalid beta value: -0.5$"),
    (Ftrl, {"beta": "0"}, TypeError, "beta must be a real number"),
    (Ftrl, {"learning_rate": 0.1}, TypeError, "unexpected keyword argument"),
    (Ftrl, {"eps": 1e-8}, TypeError, "unexpected keyword argument"),
    (SignSGD, {"eps": 1e-8}, TypeError, "unexpected keyword argument"),
    (SignSGD, {"weight_decay": 0.1}, TypeError, "unexpected keyword argument"),
    (Signum, {"beta": 1.0}, ValueError, "Invalid beta parameter: 1.0$"),
    (Signum, {"beta": math.nan}, ValueError, "Invalid beta parameter: nan$"),
    (Signum, {"beta": -0.1}, ValueError, "Invalid beta parameter: -0.1$"),
    (Signum, {"beta": None}, TypeError, "beta must be a real number"),
    (Signum, {"eps": 1e-8}, TypeError, "unexpected keyword argument"),
    (Lamb, {"variant": "torch"}, ValueError, "Invalid variant: 'torch'; expected one of"),
    (Lamb, {"weight_decay": 0.1}, ValueError, "Lamb: weight_decay=0.1 is optax's"),
    (Lamb, {"maximize": True}, TypeError, "unexpected keyword argument"),
    (Lamb, {"fused": True}, TypeError, "unexpected keyword argument"),
    (Lars, {"momentum": -0.9}, ValueError, "Invalid momentum value: -0.9$"),
    (Lars, {"trust_coefficient": math.nan}, ValueError,
     "Invalid trust_coefficient value: nan$"),
    (Lars, {"nesterov": 1}, TypeError, "nesterov must be a bool"),
    (Lars, {"trust_ratio": "yes"}, TypeError, "trust_ratio must be a bool"),
    (Lars, {"betas": (0.9, 0.99)}, TypeError, "unexpected keyword argument"),
    (ScheduleFreeAdamW, {"betas": (0.0, 0.999)}, ValueError,
     "Invalid beta parameter at index 0: 0.0 (schedule-free needs beta1 > 0"),
    (ScheduleFreeAdamW, {"warmup_steps": -1}, ValueError, "Invalid warmup_steps value: -1$"),
    (ScheduleFreeAdamW, {"warmup_steps": 2.5}, ValueError, "Invalid warmup_steps value: 2.5$"),
    (ScheduleFreeAdamW, {"warmup_steps": math.nan}, ValueError,
     "Invalid warmup_steps value: nan$"),
    (ScheduleFreeAdamW, {"weight_lr_power": -1.0}, ValueError,
     "Invalid weight_lr_power value: -1.0$"),
    (ScheduleFreeAdamW, {"variant": "torch"}, ValueError, "Invalid variant: 'torch'"),
    (ScheduleFreeAdamW, {"variant": "keras", "weight_lr_power": 1.0}, ValueError,
     "ScheduleFreeAdamW: weight_lr_power=1.0 is optax's"),
    (ScheduleFreeAdamW, {"maximize": True}, TypeError, "unexpected keyword argument"),
    (ScheduleFreeAdamW, {"fused": True}, TypeError, "unexpected keyword argument"),
    (Prodigy, {"beta3": 1.0}, ValueError, "Invalid beta3 value: 1.0$"),
    (Prodigy, {"beta3": math.nan}, ValueError, "Invalid beta3 value: nan$"),
    (Prodigy, {"estim_lr0": 0.0}, ValueError, "Invalid estim_lr0 value: 0.0$"),
    (Prodigy, {"estim_lr0": math.nan}, ValueError, "Invalid estim_lr0 value: nan$"),
    (Prodigy, {"estim_lr_coef": -1.0}, ValueError, "Invalid estim_lr_coef value: -1.0$"),
    (Prodigy, {"safeguard_warmup": 1}, TypeError, "safeguard_warmup must be a bool"),
    (Prodigy, {"maximize": True}, TypeError, "unexpected keyword argument"),
    (Novograd, {"eps_root": -1e-8}, ValueError, "Invalid eps_root value: -1e-08$"),
    (Novograd, {"eps_root": math.nan}, ValueError, "Invalid eps_root value: nan$"),
    (Novograd, {"maximize": True}, TypeError, "unexpected keyword argument"),
    (Fromage, {"min_norm": -1e-6}, ValueError, "Invalid min_norm value: -1e-06$"),
    (Fromage, {"min_norm": math.nan}, ValueError, "Invalid min_norm value: nan$"),
    (Fromage, {"min_norm": None}, TypeError, "min_norm must be a real number"),
    (Fromage, {"eps": 1e-8}, TypeError, "unexpected keyword argument"),
    (Fromage, {"weight_decay": 0.1}, TypeError, "unexpected keyword argument"),
    (Adafactor, {"beta2_decay": 0.1}, ValueError, "beta2_decay should be <= 0 but is: 0.1$"),
    (Adafactor, {"beta2_decay": math.nan}, ValueError,
     "beta2_decay should be <= 0 but is: nan$"),
    (Adafactor, {"eps": (-1.0, 1e-3)}, ValueError, "epsilon1 should be >= 0 but is: -1.0$"),
    (Adafactor, {"eps": (None, math.nan)}, ValueError, "epsilon2 should be >= 0 but is: nan$"),
    (Adafactor, {"eps": (1e-30,)}, TypeError, "eps must be a pair (eps1, eps2) or a number"),
    (Adafactor, {"d": 0.5}, ValueError, "Clipping threshold d should be >= 1 but is: 0.5$"),
    (Adafactor, {"d": math.nan}, ValueError, "Clipping threshold d should be >= 1 but is: nan$"),
    (Adafactor, {"variant": "jax"}, ValueError, "Invalid variant: 'jax'; expected one of"),
    (Adafactor, {"variant": "keras", "weight_decay": 0.1}, ValueError,
     "Adafactor: weight_decay=0.1 is PyTorch's or optax's"),
    (Adafactor, {"min_dim_size_to_factor": 8}, ValueError,
     "Adafactor: min_dim_size_to_factor is optax's"),
    (Adafactor, {"variant": "optax", "min_dim_size_to_factor": -1}, ValueError,
     "Invalid min_dim_size_to_factor value: -1$"),
    (Adafactor, {"maximize": "yes"}, TypeError, "maximize must be a bool"),
]  # fmt: skip
def check_message(text: str, message: str) -> None:
    """``text`` is ``message`` without its ``$`` (a whole message), contains it (a TypeError of
    Python's own about the signature) or starts with it."""
    if message.endswith("$"):
        assert text == message[:-1]
    elif "unexpected keyword" in message:
        assert message in text, text
    else:
        assert text.startswith(message), text


@pytest.mark.parametrize(
    ("cls", "kwargs", "exc", "message"),
    ERROR_INPUTS,
    ids=[row_id(c, kw) for c, kw, _, _ in ERROR_INPUTS],
)
def test_invalid_hyperparameters(cls: type, kwargs: dict, exc: type, message: str) -> None:
    params = two_params()
    before = [p.data for p in params]
    with pytest.raises(exc) as info:
        cls(params, **kwargs)
    check_message(str(info.value), message)
    assert all(p.data is b for p, b in zip(params, before))  # nothing was rebound
    if not set(kwargs) <= set(cls([Parameter(np.zeros(2))]).defaults):
        return
    # The same check guards an edited parameter group at the next step, which changes nothing.
    p = Parameter(np.ones(3))
    opt = cls([p])
    opt.param_groups[0].update(kwargs)
    p.grad[...] = 1.0
    with pytest.raises(exc) as info:
        opt.step()
    check_message(str(info.value), message)
    assert (p.data == 1.0).all() and opt.step_count == 0 and opt.state_dict()["state"] == {}


@pytest.mark.parametrize("cls", CLASSES)
def test_invalid_params_with_pytorchs_messages(cls: type) -> None:
    p, q = two_params()
    cases = [
        (p, TypeError, "params argument given to the optimizer should be an iterable of "
         "Parameters or dicts, but got Parameter"),
        ([], ValueError, "optimizer got an empty parameter list"),
        ([np.zeros(2)], TypeError, "element 0 is ndarray"),
        ({p, q}, TypeError, "ordering of parameters in sets will change"),
        ([{"params": [p]}, {"params": [q, p]}], ValueError,
         "some parameters appear in more than one parameter group"),
        ([p, p], ValueError, "some parameters appear more than once"),
        ([{"lr": 0.1}], ValueError, "a parameter group needs a 'params' entry"),
        ([{"params": [p], "lr": -1.0}], ValueError, "Invalid learning rate: -1.0"),
    ]  # fmt: skip
    for params, exc, message in cases:
        with pytest.raises(exc) as info:
            cls(params)
        assert message in str(info.value), (params, str(info.value))
    # A failed group leaves the earlier (valid) group's parameters untouched too.
    data = p.data
    with pytest.raises(ValueError):
        cls([{"params": [p]}, {"params": [q], "lr": math.nan}])
    assert p.data is data


def test_required_option_message_as_pytorch() -> None:
    p, q = two_params()
    with pytest.raises(ValueError, match="didn't specify a value of required optimization "
                       "parameter lr"):  # fmt: skip
        SGD([p], lr=required)
    opt = SGD([{"params": [p], "lr": 0.5}, {"params": [q], "lr": 0.25}], lr=required)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.25]


#: Edge values PyTorch accepts (zeros; rho = 1).
ACCEPTED: list[tuple[type[Optimizer], dict[str, Any]]] = [
    (SGD, {"lr": 0.0, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0}),
    (Adam, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "weight_decay": 0.0, "amsgrad": True}),
    (AdamW, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "weight_decay": 0.0}),
    (RMSprop, {"lr": 0.0, "alpha": 0.0, "eps": 0.0, "momentum": 0.0, "weight_decay": 0.0}),
    (Adagrad, {"lr": 0.0, "lr_decay": 0.0, "eps": 0.0, "initial_accumulator_value": 0.0}),
    (Adamax, {"lr": 0.0, "eps": 0.0, "betas": (0.0, 0.0), "weight_decay": 0.0}),
    (Adadelta, {"lr": 0.0, "rho": 0.0, "eps": 0.0, "weight_decay": 0.0}),
    (Adadelta, {"rho": 1.0}),
    (NAdam, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "momentum_decay": 0.0}),
    (RAdam, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "weight_decay": 0.0}),
    (AdaBelief, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "eps_root": 0.0}),
    (Lion, {"lr": 0.0, "betas": (0.0, 0.0), "weight_decay": 0.0}),
    (Rprop, {"lr": 0.0, "etas": (0.01, 100.0), "step_sizes": (0.0, 0.0)}),
    (ASGD, {"lr": 0.0, "lambd": 0.0, "alpha": 0.0, "t0": 0.0, "weight_decay": 0.0}),
    (Yogi, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "initial_accumulator_value": 0.0}),
    (ADOPT, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0}),
    (Adan, {"lr": 0.0, "betas": (0.0, 0.0, 0.0), "eps": 0.0, "eps_root": 0.0,
            "weight_decay": 0.0}),
    (AdEMAMix, {"lr": 0.0, "betas": (0.0, 0.0, 0.0), "alpha": 0.0, "eps": 0.0, "eps_root": 0.0,
                "weight_decay": 0.0}),
    (AdEMAMix, {"alpha": -1.0}),  # optax takes any alpha
    (Ftrl, {"lr": 0.0, "learning_rate_power": 0.0, "initial_accumulator_value": 0.0,
            "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0,
            "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0}),
    (SignSGD, {"lr": 0.0}),
    (Signum, {"lr": 0.0, "beta": 0.0}),
    (Lamb, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "weight_decay": 0.0}),
    (Lamb, {"variant": "optax", "weight_decay": 1.0}),
    (Lars, {"lr": 0.0, "weight_decay": 0.0, "trust_coefficient": 0.0, "eps": 0.0,
            "momentum": 0.0}),
    (SparseAdam, {"lr": 1e-300, "betas": (0.0, 0.0), "eps": 1e-300, "maximize": True}),
    (OptimisticAdam, {"lr": 0.0, "optimism": 0.0, "betas": (0.0, 0.0), "eps": 0.0,
                      "eps_root": 0.0}),
    (NoisySGD, {"lr": 0.0, "eta": 0.0, "gamma": 0.0}),
    (ScheduleFreeAdamW, {"lr": 0.0, "betas": (1e-3, 0.0), "eps": 0.0, "weight_decay": 0.0,
                         "warmup_steps": 0, "weight_lr_power": 0.0}),
    (Prodigy, {"lr": 0.0, "betas": (0.0, 0.0), "beta3": 0.0, "eps": 0.0, "estim_lr_coef": 0.0,
               "weight_decay": 0.0}),
    (Novograd, {"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0, "eps_root": 0.0,
                "weight_decay": 0.0}),
    (Fromage, {"lr": 0.0, "min_norm": 0.0}),
    (Adafactor, {"lr": 0.0, "beta2_decay": 0.0, "eps": (0.0, 0.0), "d": 1.0,
                 "weight_decay": 0.0}),
    (Adafactor, {"eps": (None, 1e-3), "variant": "optax", "min_dim_size_to_factor": 0}),
]


@pytest.mark.parametrize(("cls", "kwargs"), ACCEPTED, ids=[row_id(*r) for r in ACCEPTED])
def test_edge_values_that_pytorch_accepts(cls: type, kwargs: dict[str, Any]) -> None:
    opt = cls([Parameter(np.zeros(2))], **kwargs)
    for key, value in kwargs.items():
        assert opt.param_groups[0][key] == value
        assert getattr(opt, key) == value


_ADAM_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                  "amsgrad": False, "decoupled_weight_decay": False, "eps_mode": "outside",
                  "amsgrad_max": "raw", "maximize": False}  # fmt: skip
#: Every group option with its default, in PyTorch's positional order (minnet's own knobs,
#: ``eps_mode`` and ``amsgrad_max``, last).
DEFAULTS: dict[type[Optimizer], dict[str, Any]] = {
    SGD: {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
          "nesterov": False, "maximize": False},
    Adam: _ADAM_DEFAULTS,
    AdamW: {**_ADAM_DEFAULTS, "weight_decay": 1e-2, "decoupled_weight_decay": True},
    RMSprop: {"lr": 1e-2, "momentum": 0.0, "alpha": 0.99, "eps": 1e-8, "centered": False,
              "weight_decay": 0.0, "maximize": False, "eps_mode": "outside"},
    Adagrad: {"lr": 1e-2, "lr_decay": 0.0, "eps": 1e-10, "weight_decay": 0.0,
              "initial_accumulator_value": 0.0, "maximize": False, "eps_mode": "outside"},
    Adamax: {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
             "eps_mode": "max", "maximize": False, "decoupled_weight_decay": False},
    Adadelta: {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0, "maximize": False},
    NAdam: {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
            "momentum_decay": 4e-3, "decoupled_weight_decay": False, "maximize": False,
            "variant": "torch"},
    RAdam: {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
            "decoupled_weight_decay": False, "maximize": False, "variant": "torch"},
    AdaBelief: {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-16, "eps_root": 1e-16},
    Lion: {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0},
    Rprop: {"lr": 1e-2, "etas": (0.5, 1.2), "step_sizes": (1e-6, 50), "maximize": False,
            "variant": "torch"},
    ASGD: {"lr": 1e-2, "lambd": 1e-4, "alpha": 0.75, "t0": 1e6, "weight_decay": 0.0,
           "maximize": False},
    Yogi: {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-3, "initial_accumulator_value": 1e-6},
    ADOPT: {"lr": 1e-3, "betas": (0.9, 0.9999), "eps": 1e-6, "nesterov": False,
            "use_clipping": True},
    Adan: {"lr": 1e-3, "betas": (0.98, 0.92, 0.99), "eps": 1e-8, "eps_root": 1e-8,
           "weight_decay": 0.0},
    AdEMAMix: {"lr": 1e-3, "betas": (0.9, 0.999, 0.9999), "alpha": 5.0, "eps": 1e-8,
               "eps_root": 0.0, "weight_decay": 0.0},
    Ftrl: {"lr": 1e-3, "learning_rate_power": -0.5, "initial_accumulator_value": 0.1,
           "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0,
           "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0},
    SignSGD: {"lr": 1e-3},
    Signum: {"lr": 1e-3, "beta": 0.9},
    Lamb: {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.0,
           "variant": "keras"},
    Lars: {"lr": 1.0, "weight_decay": 0.0, "trust_coefficient": 1e-3, "eps": 0.0,
           "trust_ratio": True, "momentum": 0.9, "nesterov": False},
    SparseAdam: {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "maximize": False},
    OptimisticAdam: {"lr": 1e-3, "optimism": None, "betas": (0.9, 0.999), "eps": 1e-8,
                     "eps_root": 0.0, "nesterov": True},
    NoisySGD: {"lr": 1e-3, "eta": 0.01, "gamma": 0.55},
    ScheduleFreeAdamW: {"lr": 0.0025, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                        "warmup_steps": 0, "weight_lr_power": 2.0, "variant": "optax"},
    Prodigy: {"lr": 1.0, "betas": (0.9, 0.999), "beta3": None, "eps": 1e-8, "estim_lr0": 1e-6,
              "estim_lr_coef": 1.0, "weight_decay": 0.0, "safeguard_warmup": False},
    Novograd: {"lr": 1e-3, "betas": (0.9, 0.25), "eps": 1e-6, "eps_root": 0.0,
               "weight_decay": 0.0},
    Fromage: {"lr": 1e-2, "min_norm": 1e-6},
    Adafactor: {"lr": 1e-2, "beta2_decay": -0.8, "eps": (None, 1e-3), "d": 1.0,
                "weight_decay": 0.0, "maximize": False, "variant": "torch",
                "min_dim_size_to_factor": None},
}  # fmt: skip
#: Keywords of the optimizer itself, not group options (not in ``defaults``), with defaults.
OPTIMIZER_KEYWORDS: dict[type[Optimizer], dict[str, Any]] = {
    NoisySGD: {"seed": 0, "noise_fn": None},
}
#: Group keys that are not options: schedule-free's mode (the ``schedulefree`` package's).
GROUP_EXTRAS: dict[type[Optimizer], dict[str, Any]] = {ScheduleFreeAdamW: {"train_mode": True}}
_COMMON = {"track_stats": False, "check_finite": False, "state_dtype": None, "rounding": "fused"}
#: PyTorch's implementation switches, in the signature of every optimizer PyTorch has.
_TORCH_FLAGS = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}


@pytest.mark.parametrize("cls", CLASSES)
def test_signature_defaults_and_empty_state_dict_are_pytorchs(cls: type) -> None:
    expected = DEFAULTS[cls]
    opt = cls([Parameter(np.zeros(2))])
    assert opt.defaults == expected and list(opt.defaults) == list(expected)
    signature = inspect.signature(cls).parameters
    defaults = {k: p.default for k, p in signature.items() if p.default is not p.empty}
    # (PyTorch's SparseAdam has none of its implementation switches)
    options_only = (AdaBelief, Lion, Yogi, ADOPT, Adan, AdEMAMix, Ftrl, SignSGD, Signum, Lamb, Lars,
                    SparseAdam, OptimisticAdam, NoisySGD, ScheduleFreeAdamW, Prodigy, Novograd,
                    Fromage)
    flags = _TORCH_FLAGS if cls not in options_only else {}
    for key, value in OPTIMIZER_KEYWORDS.get(cls, {}).items():
        assert defaults.pop(key) == value
    if cls in (Lamb, Adafactor):  # eps=None: the variant's (Keras's 1e-7 for Lamb's default)
        assert defaults.pop("eps") is None
        defaults["eps"] = expected["eps"]
    if cls is Adafactor:  # lr=None: the variant's (PyTorch's 1e-2 for the default variant)
        assert defaults.pop("lr") is None
        defaults["lr"] = expected["lr"]
    assert defaults == {**{k: v for k, v in expected.items() if k in defaults}, **_COMMON, **flags}
    assert set(expected) - set(defaults) <= {"decoupled_weight_decay"}  # fixed in AdamW
    # Positional arguments in PyTorch's order.
    positional = [k for k, p in signature.items() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
    built = cls([Parameter(np.zeros(2))], *(expected[k] for k in positional))
    assert built.param_groups[0] == {**opt.param_groups[0], "params": built.params}
    # Before the first step: no state, and the group's options as PyTorch lists them.
    sd = opt.state_dict()
    extras = GROUP_EXTRAS.get(cls, {})
    assert sd["state"] == {} and sd["param_groups"] == [{**expected, **extras, "params": [0]}]


#: The state-dict entries of a parameter after a step, in order (PyTorch's names and order).
STATE_NAMES: list[tuple[type[Optimizer], dict[str, Any], list[str]]] = [
    (SGD, {}, []),
    (SGD, {"momentum": 0.9}, ["momentum_buffer"]),
    (Adam, {}, ["exp_avg", "exp_avg_sq"]),
    (Adam, {"amsgrad": True}, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    (AdamW, {"amsgrad": True}, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    (RMSprop, {}, ["square_avg"]),
    (RMSprop, {"centered": True}, ["square_avg", "grad_avg"]),
    (RMSprop, {"momentum": 0.9, "centered": True}, ["square_avg", "momentum_buffer", "grad_avg"]),
    (Adagrad, {"lr_decay": 0.1, "initial_accumulator_value": 0.1}, ["sum"]),
    (Adagrad, {"eps_mode": "inside_guarded", "eps": 0.0}, ["sum"]),
    (Adamax, {}, ["exp_avg", "exp_inf"]),
    (Adadelta, {}, ["square_avg", "acc_delta"]),
    (NAdam, {}, ["mu_product", "exp_avg", "exp_avg_sq"]),
    (RAdam, {}, ["exp_avg", "exp_avg_sq"]),
    (AdaBelief, {}, ["exp_avg", "exp_avg_var"]),
    (Lion, {}, ["exp_avg"]),
    (Rprop, {}, ["prev", "step_size"]),
    (Rprop, {"variant": "optax"}, ["prev", "step_size"]),
    (ASGD, {}, ["eta", "mu", "ax"]),
    (Yogi, {}, ["exp_avg", "exp_avg_sq"]),
    (ADOPT, {}, ["exp_avg", "exp_avg_sq"]),
    (Adan, {}, ["exp_avg", "exp_avg_diff", "exp_avg_sq", "g"]),
    (AdEMAMix, {}, ["exp_avg_fast", "exp_avg_slow", "exp_avg_sq"]),
    (Ftrl, {}, ["accumulator", "linear"]),
    (SignSGD, {}, []),
    (Signum, {}, ["exp_avg"]),
    (Lamb, {}, ["exp_avg", "exp_avg_sq"]),
    (Lars, {}, ["trace"]),
    (SparseAdam, {}, ["exp_avg", "exp_avg_sq"]),
    (OptimisticAdam, {}, ["exp_avg", "exp_avg_sq", "previous_gradient"]),
    (NoisySGD, {}, ["noise"]),
    (ScheduleFreeAdamW, {}, ["weight_sum", "lr_max", "z", "exp_avg_sq"]),
    (Prodigy, {}, ["estim_lr", "numerator_weighted", "exp_avg", "exp_avg_sq", "grad_sum",
                   "params0"]),
    (Novograd, {}, ["exp_avg", "nu"]),
    (Fromage, {}, []),
    (Adafactor, {}, ["row_var", "col_var"]),
    (Adafactor, {"variant": "optax"}, ["row_var", "col_var"]),
]
#: Group scalars that PyTorch keeps per parameter (floats in the state dict, not arrays), and
#: a per-tensor stage's scalar state (Novograd's ``nu``, a float per parameter as in optax).
GROUP_SCALARS = {"mu_product", "eta", "mu", "weight_sum", "lr_max", "estim_lr",
                 "numerator_weighted", "nu"}


@pytest.mark.parametrize(("cls", "kwargs", "names"), STATE_NAMES,
                         ids=[row_id(c, kw) for c, kw, _ in STATE_NAMES])  # fmt: skip
def test_state_dict_layout_is_pytorchs(cls: type, kwargs: dict, names: list[str]) -> None:
    params = [Parameter(np.ones((2, 3))), Parameter(np.ones(4, np.float32))]
    opt = cls(params, lr=1e-2, **kwargs)
    for _ in range(3):
        for p in params:
            p.grad[...] = 1.0
        opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0, 1]
    for i, p in enumerate(params):
        entry = sd["state"][i]
        assert list(entry) == ["step", *names] and entry["step"] == 3.0
        for name in names:
            if name in GROUP_SCALARS:  # a group scalar, kept per parameter as in PyTorch
                assert isinstance(entry[name], float)
            else:
                assert entry[name].shape == p.data.shape and entry[name].dtype == p.data.dtype


#: (class, options, an edit of an option that adds or removes a state array).
STATE_CHANGES: list[tuple[type[Optimizer], dict[str, Any], dict[str, Any]]] = [
    (SGD, {}, {"momentum": 0.9}),
    (SGD, {"momentum": 0.9}, {"momentum": 0.0}),
    (Adam, {"amsgrad": True}, {"amsgrad": False}),
    (AdamW, {}, {"amsgrad": True}),
    (RMSprop, {}, {"centered": True}),
    (RMSprop, {}, {"momentum": 0.9}),
    (RMSprop, {"momentum": 0.5}, {"momentum": 0.0}),
]


@pytest.mark.parametrize(("cls", "options", "change"), STATE_CHANGES,
                         ids=[row_id(c, {**o, **ch}) for c, o, ch in STATE_CHANGES])  # fmt: skip
def test_options_that_add_state_cannot_change(cls: type, options: dict, change: dict) -> None:
    p = Parameter(np.ones(3))
    opt = cls([p], **options)
    opt.param_groups[0].update(change)
    p.grad[...] = 1.0
    with pytest.raises(ValueError, match="cannot change after the optimizer is created"):
        opt.step()
    assert (p.data == 1.0).all() and opt.step_count == 0
    key, value = next(iter(change.items()))
    opt.param_groups[0][key] = options.get(key, DEFAULTS[cls][key])
    with pytest.raises(ValueError, match=f"{key} cannot change"):
        setattr(opt, key, value)  # the attribute is checked at once


# -- parameter groups ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls, kwargs", FAMILY, ids=FAMILY_IDS)
def test_two_groups_equal_two_optimizers_bit_for_bit(cls: type, kwargs: dict) -> None:
    if cls.rule is not None and cls.rule.reduce is not None:
        pytest.skip("a global reduction (Prodigy's d) couples the groups: test_optim_prodigy.py")
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(s) for s in ((2, 3), (2,), (4,))] for _ in range(6)]
    override = {"lr": 0.01}
    if "eps" in inspect.signature(cls).parameters:
        override["eps"] = 1e-3
    # Group 1 holds a float32 parameter too: groups and dtypes both split the buffers.
    grouped = two_params() + [Parameter(np.arange(4, dtype=np.float32), "c")]
    separate = two_params() + [Parameter(np.arange(4, dtype=np.float32), "c")]
    opt = cls([{"params": grouped[:1]}, {"params": grouped[1:], **override}], **kwargs)
    opt_a = cls(separate[:1], **kwargs)
    opt_b = cls(separate[1:], **{**kwargs, **override})
    assert len(opt.param_groups) == 2 and len(opt._groups) == 3
    for g in grads:
        for p, q, x in zip(grouped, separate, g):
            p.grad[...] = x
            q.grad[...] = x
        opt.step()
        opt_a.step()
        opt_b.step()
    for p, q in zip(grouped, separate):
        assert p.data.dtype == q.data.dtype
        np.testing.assert_array_equal(p.data, q.data)
    sd, sd_a, sd_b = opt.state_dict(), opt_a.state_dict(), opt_b.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1, 2]]
    assert_identical(sd["state"][0], sd_a["state"][0])
    assert_identical(sd["state"][2], sd_b["state"][1])


@pytest.mark.parametrize("cls, kwargs", FAMILY[::3], ids=FAMILY_IDS[::3])
def test_add_param_group_starts_its_own_step_count(cls: type, kwargs: dict) -> None:
    rng = np.random.default_rng(1)
    p, q = two_params()
    q_alone = Parameter(q.data.copy(), "b")
    opt = cls([p], **kwargs)
    fill_grads([p], rng)
    opt.step()
    opt.add_param_group({"params": [q], "lr": 0.02, "initial_lr": 0.02})
    alone = cls([q_alone], **{**kwargs, "lr": 0.02})
    assert opt.param_groups[1]["initial_lr"] == 0.02  # unknown keys are kept, as in PyTorch
    for _ in range(3):
        fill_grads([p, q], rng)
        q_alone.grad[...] = q.grad
        opt.step()
        alone.step()
    np.testing.assert_array_equal(q.data, q_alone.data)
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 4.0 and sd["state"][1]["step"] == 3.0
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [p]})


def test_group_edits_are_per_group_and_attribute_access_needs_agreement() -> None:
    p, q = two_params()
    opt = SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1, momentum=0.9)
    with pytest.raises(AttributeError, match="2 parameter groups with different lr"):
        _ = opt.lr
    assert opt.momentum == 0.9
    opt.lr = 0.25  # sets every group, validated
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        opt.lr = -1
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    opt.param_groups[1]["momentum"] = 0.0  # would remove the momentum buffer
    with pytest.raises(ValueError, match="momentum cannot change after the optimizer"):
        opt.step()
    opt.param_groups[1]["momentum"] = 0.5  # changing its value is fine
    opt.step()
    assert opt.param_groups[1]["momentum"] == 0.5


# -- state dicts --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, kwargs", FAMILY, ids=FAMILY_IDS)
def test_state_dict_round_trip_with_groups(cls: type, kwargs: dict) -> None:
    def make() -> tuple[list[Parameter], Optimizer]:
        ps = two_params() + [Parameter(np.ones(3, dtype=np.float32), "c")]
        return ps, cls([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], **kwargs)

    def train(ps: list[Parameter], opt: Optimizer, seeds: range) -> None:
        for seed in seeds:
            fill_grads(ps, np.random.default_rng(seed))
            opt.step()

    ps_a, a = make()
    train(ps_a, a, range(20))
    ps_b, b = make()
    train(ps_b, b, range(10))
    sd = b.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2] and sd["state"][2]["step"] == 10.0
    ps_c, c = make()
    for p, q in zip(ps_c, ps_b):
        p.data[...] = q.data
    c.load_state_dict(sd)
    assert_identical(c.state_dict(), sd)
    train(ps_c, c, range(10, 20))
    for p, q in zip(ps_c, ps_a):
        np.testing.assert_array_equal(p.data, q.data)
    assert_identical(c.state_dict(), a.state_dict())
    assert_identical(sd, b.state_dict())  # a copy: the loaded optimizer's steps left it as it was


def test_load_state_dict_checks_groups_before_writing() -> None:
    ps = two_params() + [Parameter(np.zeros(2), "c")]
    opt = SGD([{"params": ps[:1]}, {"params": ps[1:]}], momentum=0.9)
    fill_grads(ps, np.random.default_rng(0))
    opt.step()
    before = opt.state_dict()
    bad_groups = [
        (lambda sd: sd["param_groups"].pop(), "1 parameter groups, this optimizer has 2"),
        (lambda sd: sd["param_groups"][1]["params"].append(5), "3 parameters in group 1"),
        (lambda sd: sd["param_groups"][1].update(momentum=0.0),
         "loaded state has momentum=0.0 but this optimizer has momentum=0.9"),
        (lambda sd: sd["state"][1].update(step=-1.0), "must be a non-negative integer"),
        (lambda sd: sd["state"].update({7: {"step": 1.0}}), "unknown parameters [7]"),
        (lambda sd: sd["param_groups"][0].update(lr=math.nan), "Invalid learning rate: nan"),
    ]  # fmt: skip
    for mutate, message in bad_groups:
        sd = opt.state_dict()
        mutate(sd)
        with pytest.raises(ValueError) as info:
            opt.load_state_dict(sd)
        assert message in str(info.value), str(info.value)
        assert_identical(before, opt.state_dict())


def test_pytorch_layout_loads_without_minnet_only_options() -> None:
    p = Parameter(np.ones(3))
    opt = Adam([p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    for key in ("eps_mode", "amsgrad_max", "decoupled_weight_decay"):
        del sd["param_groups"][0][key]
    sd["param_groups"][0].update(foreach=None, maximize=False)  # PyTorch's extra keys are kept
    other = Adam([Parameter(np.ones(3))])
    other.load_state_dict(sd)
    group = other.state_dict()["param_groups"][0]
    assert group["eps_mode"] == "outside" and group["foreach"] is None and group["lr"] == 0.1


# -- stats, check_finite, eps descriptions --------------------------------------------------


@pytest.mark.parametrize("cls, kwargs", FAMILY, ids=FAMILY_IDS)
def test_stats_measure_the_applied_update(cls: type, kwargs: dict) -> None:
    ps = two_params()
    opt = cls(ps, track_stats=True, **kwargs)
    assert AdamStats is OptimizerStats
    for seed in range(3):
        fill_grads(ps, np.random.default_rng(seed))
        ps[1].grad[...] = 0.0  # zero gradients: where eps dominates
        before = np.concatenate([p.data.ravel() for p in ps])
        opt.step()
        after = np.concatenate([p.data.ravel() for p in ps])
        st = opt.stats
        assert st.step == seed + 1 and st.n_params == 8 and st.nonfinite == 0
        assert st.update_rms == pytest.approx(np.sqrt(np.mean((after - before) ** 2)), rel=1e-9)
        if opt.eps_compared_with() is None:
            assert st.eps_dominated == 0.0
    group = opt.param_groups[0]
    if cls in (Adam, AdamW) and group["eps_mode"] == "outside":
        l2 = group["weight_decay"] != 0 and not group["decoupled_weight_decay"]
        assert (st.eps_dominated > 0) is not l2  # eps dominates where g = 0 (no L2 term in g)


def test_eps_descriptions_and_multipliers() -> None:
    p = Parameter(np.ones(3))
    sgd = SGD([p], lr=0.1)
    p.grad[...] = 1.0
    sgd.step()
    assert sgd.eps_compared_with() is None and sgd.multipliers() is None
    q = Parameter(np.ones(3))
    adam = Adam([q], eps=1e-3)
    with pytest.raises(ValueError, match="at least one optimizer step"):
        adam.multipliers()
    q.grad[...] = [0.0, 1.0, 2.0]
    adam.step()
    assert adam.eps_compared_with() == "sqrt(v_hat)"
    np.testing.assert_allclose(adam.multipliers(), 1 / (np.abs(q.grad) + 1e-3), rtol=1e-12)
    expected = {"outside": "sqrt(v_hat)", "hat": "sqrt(v)", "inside": "v_hat", "atan2": None}
    for mode, text in expected.items():
        assert Adam.eps_compared_with_options({"eps_mode": mode}) == text


#: The multiplier of each optimizer whose older tests do not check it, written out from its
#: docstring (``state`` the state dict's arrays after step ``t``, ``g`` the group options).
_DOCSTRING_MULTIPLIERS: dict[str, Callable[[dict, dict, int], np.ndarray]] = {
    "Yogi": lambda st, g, t: 1 / (np.sqrt(st["exp_avg_sq"] / (1 - g["betas"][1] ** t)) + g["eps"]),
    "ADOPT": lambda st, g, t: 1 / np.maximum(np.sqrt(st["exp_avg_sq"]), g["eps"]),
    "Adan": lambda st, g, t: 1 / (np.sqrt(st["exp_avg_sq"] / (1 - g["betas"][2] ** t)
                                          + g["eps_root"]) + g["eps"]),
    "AdEMAMix": lambda st, g, t: 1 / (np.sqrt(st["exp_avg_sq"] / (1 - g["betas"][1] ** t)
                                              + g["eps_root"]) + g["eps"]),
    "Lamb": lambda st, g, t: 1 / (np.sqrt(st["exp_avg_sq"] / (1 - g["betas"][1] ** t)) + g["eps"]),
    "OptimisticAdam": lambda st, g, t: 1 / (np.sqrt(st["exp_avg_sq"] / (1 - g["betas"][1] ** t)
                                                    + g["eps_root"]) + g["eps"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_DOCSTRING_MULTIPLIERS))
def test_rule_multiplier_matches_the_docstring(name: str) -> None:
    """``multipliers()`` comes from the rule's ``multiplier`` (the piece its update divides by):
    it equals the docstring's ``1 / (denominator including eps)`` after a few steps."""
    rng = np.random.default_rng(3)
    p = Parameter(rng.standard_normal(50))
    opt = getattr(minnet.optim, name)([p], eps=1e-3)
    for _ in range(3):
        p.grad = rng.standard_normal(50) * (rng.random(50) < 0.7)
        opt.step()
    state = {k: v for k, v in opt.state_dict()["state"][0].items() if isinstance(v, np.ndarray)}
    expected = _DOCSTRING_MULTIPLIERS[name](state, opt.param_groups[0], 3)
    np.testing.assert_allclose(opt.multipliers(), expected, rtol=1e-12)


def test_multipliers_follow_state_dict_order_across_groups_and_dtypes() -> None:
    ps = [Parameter(np.ones(2, np.float32), "a"), Parameter(np.ones(3), "b"),
          Parameter(np.ones(2, np.float32), "c")]  # fmt: skip
    opt = Adam([{"params": ps[:2]}, {"params": ps[2:], "eps": 1e-2}], eps=1e-4)
    for p, g in zip(ps, ([1.0, 0.0], [2.0, 0.0, 4.0], [0.0, 8.0])):
        p.grad[...] = g
    opt.step()
    sd = opt.state_dict()
    eps = [1e-4, 1e-4, 1e-2]
    expected = np.concatenate([
        1 / (np.sqrt(sd["state"][i]["exp_avg_sq"].astype(np.float64) / (1 - 0.999)) + eps[i])
        for i in range(3)
    ])  # fmt: skip
    np.testing.assert_allclose(opt.multipliers(), expected, rtol=1e-12)


@pytest.mark.parametrize("cls, kwargs", FAMILY, ids=FAMILY_IDS)
def test_check_finite_refuses_a_nan_gradient_and_changes_nothing(cls: type, kwargs: dict) -> None:
    ps = two_params()
    opt = cls(ps, check_finite=True, **kwargs)
    fill_grads(ps, np.random.default_rng(0))
    opt.step()
    ps[1].grad[0] = np.nan
    before = ([p.data.copy() for p in ps], opt.state_dict())
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert f"{cls.__name__} (check_finite=True): step 2" in msg
    # A per-tensor stage spreads the NaN over its tensor (its norm is NaN), as the libraries do;
    # Keras's Lamb takes the ratio 1 for a NaN norm and keeps it to the one element.
    # Adafactor: Keras's and optax's clip (jnp.maximum of a NaN RMS) spread it too, PyTorch's
    # Python max(1.0, nan) does not.
    whole = (cls is Lars and kwargs.get("trust_ratio", True)) or (
        cls is Lamb and kwargs.get("variant") == "optax") or cls in (Novograd, Fromage) or (
        cls is Adafactor and kwargs.get("variant", "torch") != "torch")
    n_bad = 2 if whole else 1
    # a global reduction (Prodigy's d) spreads it everywhere
    if cls.rule is not None and cls.rule.reduce is not None:
        assert "b (2 of 2 elements)" in msg and "w (6 of 6 elements)" in msg
    else:
        assert f"b ({n_bad} of 2 elements)" in msg and "w (" not in msg
    assert "NaN or infinite gradient" in msg
    assert_identical(before, ([p.data.copy() for p in ps], opt.state_dict()))


def test_sgd_overflow_is_refused_with_the_overflow_cause() -> None:
    w = Parameter(np.array([1e308, 0.0]), "w")
    opt = SGD([w], lr=1.0, check_finite=True)
    w.grad[...] = [-1e308, 1.0]
    with pytest.raises(FloatingPointError, match="the update of w overflows"):
        opt.step()
    np.testing.assert_array_equal(w.data, [1e308, 0.0])


def test_adamw_is_adam_with_decoupled_decay() -> None:
    a, b = Parameter(np.linspace(-2, 2, 5)), Parameter(np.linspace(-2, 2, 5))
    opt_a = AdamW([a], lr=0.1, amsgrad=True)
    opt_b = Adam([b], lr=0.1, amsgrad=True, weight_decay=1e-2, decoupled_weight_decay=True)
    assert opt_a.weight_decay == 1e-2 and opt_a.decoupled_weight_decay is True
    for seed in range(5):
        a.grad[...] = np.random.default_rng(seed).standard_normal(5)
        b.grad[...] = a.grad
        opt_a.step()
        opt_b.step()
    np.testing.assert_array_equal(a.data, b.data)
    # The decay differs from the L2 term: one step from the same state moves differently.
    c = Parameter(np.linspace(-2, 2, 5))
    opt_c = Adam([c], lr=0.1, weight_decay=0.5)
    d = Parameter(np.linspace(-2, 2, 5))
    opt_d = AdamW([d], lr=0.1, weight_decay=0.5)
    for p, opt in ((c, opt_c), (d, opt_d)):
        p.grad[...] = 1.0
        opt.step()
    assert np.abs(c.data - d.data).max() > 1e-3
    # First AdamW step by hand: decay, then Adam's m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps).
    expected = np.linspace(-2, 2, 5) * (1 - 0.1 * 0.5) - 0.1 * 1.0 / (1.0 + 1e-8)
    np.testing.assert_allclose(d.data, expected, rtol=1e-15)


# -- eps = 0: check_finite refuses 0/0, and without it NaN as in the libraries ---------------

#: (class, options, steps before the first 0/0): eps=0 on coordinates that never saw a
#: gradient. RAdam's unrectified steps have no eps.
EPS_ZERO: list[tuple[type[Optimizer], dict[str, Any], int]] = [
    (Adam, {}, 0),
    (Adam, {"amsgrad": True}, 0),
    (AdamW, {"eps_mode": "inside"}, 0),
    (RMSprop, {}, 0),
    (RMSprop, {"eps_mode": "inside"}, 0),
    (Adagrad, {}, 0),
    (Adagrad, {"eps_mode": "inside"}, 0),
    (Adamax, {"eps_mode": "max"}, 0),
    (Adamax, {"eps_mode": "outside"}, 0),
    (Adadelta, {}, 0),
    (NAdam, {}, 0),
    (RAdam, {}, 5),
    (RAdam, {"variant": "optax"}, 5),  # rho_t >= 5 first at step 6 as well
    (AdaBelief, {"eps_root": 0.0}, 0),
    (Yogi, {"initial_accumulator_value": 0.0}, 0),  # v starts at 1e-6 by default: never 0
    (ADOPT, {}, 0),  # step 1: 0 * (0/0) for a zero gradient, as optax
    (Adan, {"eps_root": 0.0}, 0),  # its default eps_root=1e-8 keeps sqrt(n_hat) off 0
    (AdEMAMix, {}, 0),
    (OptimisticAdam, {}, 0),
    (Lamb, {}, 0),  # Keras's trust ratio is 1 for a NaN norm: the NaN stays where the 0/0 is
    (ScheduleFreeAdamW, {}, 0),
    (Prodigy, {}, 0),
    (Adafactor, {}, 0),  # eps1=0: the 2x2 matrix's factored v_hat is 0 in column 1
]


@pytest.mark.parametrize(("cls", "options", "warmup"), EPS_ZERO,
                         ids=[row_id(c, o) for c, o, _ in EPS_ZERO])  # fmt: skip
def test_check_finite_refuses_eps_zero_zero_over_zero(
    cls: type, options: dict, warmup: int
) -> None:
    grad = [[0.5, 0.0], [0.25, 0.0]]  # column 1 never sees a gradient

    def warmed_up(eps: float) -> tuple[Parameter, Optimizer]:
        w = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]), name="w")
        opt = cls([w], **options, eps=eps, check_finite=True)
        for _ in range(warmup):
            w.grad[...] = grad
            opt.step()
        w.grad[...] = grad
        return w, opt

    w, opt = warmed_up(0.0)
    data, before = w.data.copy(), opt.state_dict()
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert f"{cls.__name__} (check_finite=True): step {warmup + 1}" in msg, msg
    assert "w (2 of 4 elements)" in msg and "eps=0" in msg, msg
    assert w.data.tobytes() == data.tobytes() and opt.step_count == warmup
    assert_identical(opt.state_dict(), before)
    # Without the check, the same step gives NaN exactly there (0/0), as in PyTorch ...
    opt.check_finite = False
    with np.errstate(all="ignore"):
        opt.step()
    np.testing.assert_array_equal(np.isnan(w.data), [[False, True], [False, True]])
    # ... and with eps > 0 it goes through the check.
    w, opt = warmed_up(1e-8)
    opt.step()
    assert np.isfinite(w.data).all() and opt.step_count == warmup + 1


def test_lars_eps_zero_never_divides_zero_by_zero() -> None:
    """optax's trust ratio is 1 where a norm is 0: a tensor with all-zero weights or gradient
    takes a plain momentum step, and check_finite lets eps=0 through."""
    w = Parameter(np.zeros((2, 2)), name="w")
    b = Parameter(np.array([1.0, 2.0]), name="b")
    opt = Lars([w, b], lr=0.5, eps=0.0, check_finite=True, track_stats=True)
    w.grad[...] = [[1.0, 0.0], [0.0, 0.0]]
    b.grad[...] = 0.0
    opt.step()
    np.testing.assert_array_equal(w.data, [[-0.5, 0.0], [0.0, 0.0]])  # ||w|| = 0: ratio 1
    np.testing.assert_array_equal(b.data, [1.0, 2.0])  # ||u|| = 0: ratio 1, u = 0
    assert opt.stats is not None and opt.stats.nonfinite == 0


def test_novograd_eps_zero_divides_zero_by_zero_only_for_an_all_zero_tensor() -> None:
    """optax's nu is one number per tensor: with eps = eps_root = 0 a tensor whose gradient is
    all zero (nu = 0) gets 0/0 on every coordinate, and a tensor with a zero coordinate but a
    nonzero norm does not; check_finite refuses the first and names it; eps > 0 steps it by 0."""
    def make(eps: float) -> tuple[Parameter, Parameter, Novograd]:
        w = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]), name="w")
        b = Parameter(np.array([1.0, 2.0]), name="b")
        opt = Novograd([w, b], lr=0.1, eps=eps, check_finite=True)
        w.grad[...] = [[0.5, 0.0], [0.25, 0.0]]
        b.grad[...] = 0.0
        return w, b, opt

    w, b, opt = make(0.0)
    with pytest.raises(FloatingPointError) as info:
        opt.step()
    msg = str(info.value)
    assert "b (2 of 2 elements)" in msg and "w (" not in msg, msg
    assert "eps=0 and eps_root=0 and the gradient of b has been all zero so far" in msg, msg
    assert opt.step_count == 0 and (b.data == [1.0, 2.0]).all()
    opt.check_finite = False
    with np.errstate(all="ignore"):
        opt.step()
    assert np.isnan(b.data).all() and np.isfinite(w.data).all()
    w, b, opt = make(1e-6)
    opt.step()
    np.testing.assert_array_equal(b.data, [1.0, 2.0])  # 0 / (0 + eps) = 0
    g = np.array([[0.5, 0.0], [0.25, 0.0]])
    expected = np.array([[1.0, 2.0], [3.0, 4.0]]) - 0.1 * g / (np.linalg.norm(g) + 1e-6)
    np.testing.assert_allclose(w.data, expected, rtol=1e-15)
    assert opt.state_dict()["state"][1]["nu"] == 0.0


def test_novograd_nu_is_a_float_per_parameter_in_the_state_dict() -> None:
    """nu round-trips through state_dict / load_state_dict (the next step continues as without
    the round trip), and a state dict without it is refused, naming it."""
    rng = np.random.default_rng(0)
    ps = [Parameter(rng.standard_normal((3, 2))), Parameter(rng.standard_normal(4))]
    qs = [Parameter(p.data.copy()) for p in ps]
    opt, other = Novograd(ps, lr=0.1), Novograd(qs, lr=0.1)
    for _ in range(2):
        for p, q in zip(ps, qs):
            p.grad[...] = q.grad[...] = rng.standard_normal(p.data.shape)
        opt.step()
        other.step()
    sd = opt.state_dict()
    nus = [sd["state"][i]["nu"] for i in range(2)]
    assert all(isinstance(v, float) and v > 0 for v in nus) and nus[0] != nus[1]
    fresh = [Parameter(p.data.copy()) for p in ps]
    loaded = Novograd(fresh, lr=0.1)
    loaded.load_state_dict(sd)
    for p, q, r in zip(ps, qs, fresh):
        p.grad[...] = q.grad[...] = r.grad[...] = rng.standard_normal(p.data.shape)
    opt.step()
    loaded.step()
    for p, r in zip(ps, fresh):
        assert p.data.tobytes() == r.data.tobytes()
    del sd["state"][1]["nu"]
    with pytest.raises(ValueError, match="loaded state for parameter 1 lacks 'nu'"):
        Novograd([Parameter(p.data.copy()) for p in ps]).load_state_dict(sd)


@pytest.mark.parametrize("min_norm", [1e-6, 0.0])
def test_fromage_zero_norm_tensors_as_optax(min_norm: float) -> None:
    """optax's safe_norm floors both norms at min_norm, and a floored norm of 0 (min_norm=0)
    takes the ratio 1: a zero tensor steps by lr * mult * min_norm * g / ||g|| (by lr * mult *
    g with min_norm=0), a zero-gradient tensor only shrinks by mult; never 0/0."""
    w = Parameter(np.zeros((2, 2)), name="w")
    b = Parameter(np.array([1.0, 2.0]), name="b")
    lr = 0.1
    opt = Fromage([w, b], lr=lr, min_norm=min_norm, check_finite=True, track_stats=True)
    g = np.array([[3.0, 0.0], [0.0, 4.0]])
    w.grad[...] = g
    b.grad[...] = 0.0
    opt.step()
    mult = 1 / (1 + lr**2) ** 0.5
    ratio = min_norm / 5.0 if min_norm else 1.0
    np.testing.assert_allclose(w.data, (g * ratio) * -(lr * mult), rtol=1e-15)
    np.testing.assert_allclose(b.data, [mult, 2 * mult], rtol=1e-15)
    assert opt.stats is not None and opt.stats.nonfinite == 0
    assert opt.stats.eps_dominated == 1.0  # w's norm and b's gradient norm are floored


#: What eps is added to or compared with (``eps_compared_with``), by options.
EPS_COMPARED: list[tuple[type[Optimizer], dict[str, Any], str | None]] = [
    (SGD, {"momentum": 0.9}, None),
    *[(Adam, {"eps_mode": m}, t) for m, t in (("outside", "sqrt(v_hat)"), ("hat", "sqrt(v)"),
                                               ("inside", "v_hat"), ("atan2", None))],
    (AdamW, {}, "sqrt(v_hat)"),
    (RMSprop, {}, "sqrt(v)"),
    (RMSprop, {"centered": True}, "sqrt(v - avg**2)"),
    (RMSprop, {"eps_mode": "inside"}, "v"),
    (RMSprop, {"eps_mode": "inside", "centered": True}, "v - avg**2"),
    (Adagrad, {}, "sqrt(sum)"),
    (Adagrad, {"eps_mode": "inside"}, "sum"),
    (Adagrad, {"eps_mode": "inside_guarded"}, "sum"),
    (Adamax, {}, "|g|"),
    (Adamax, {"eps_mode": "outside"}, "u"),
    (Adadelta, {}, "square_avg"),
    (NAdam, {}, "sqrt(v_hat)"),
    (NAdam, {"variant": "optax"}, "sqrt(v_hat)"),
    (RAdam, {}, "sqrt(v)"),
    (RAdam, {"variant": "optax"}, "sqrt(v_hat)"),
    (AdaBelief, {}, "sqrt(s_hat)"),
    (Lion, {}, None),
    (Rprop, {}, None),
    (Rprop, {"variant": "optax"}, None),
    (ASGD, {}, None),
    (Yogi, {}, "sqrt(v_hat)"),
    (ADOPT, {}, "sqrt(v)"),
    (Adan, {}, "sqrt(n_hat + eps_root)"),
    (Adan, {"eps_root": 0.0}, "sqrt(n_hat)"),
    (AdEMAMix, {}, "sqrt(nu_hat)"),
    (AdEMAMix, {"eps_root": 1e-8}, "sqrt(nu_hat + eps_root)"),
    (Ftrl, {}, "sum(g**2)"),
    (Ftrl, {"beta": 0.5, "learning_rate_power": 0.0}, "sum(g**2)"),
    (SignSGD, {}, None),
    (Signum, {}, None),
    (Lamb, {}, "sqrt(v_hat)"),
    (Lamb, {"variant": "optax"}, "sqrt(v_hat)"),
    (Lars, {}, "||u|| (per tensor)"),
    (SparseAdam, {}, "sqrt(v)"),
    (OptimisticAdam, {}, "sqrt(v_hat)"),
    (OptimisticAdam, {"eps_root": 1e-8}, "sqrt(v_hat + eps_root)"),
    (NoisySGD, {}, None),
    (ScheduleFreeAdamW, {}, "sqrt(v_hat)"),
    (ScheduleFreeAdamW, {"variant": "keras"}, "sqrt(v_hat)"),
    (Prodigy, {}, "sqrt(v) / d"),
    (Novograd, {}, "sqrt(nu) (per tensor)"),
    (Fromage, {}, "||g|| and ||w|| (per tensor, floor)"),
    (Adafactor, {}, "v_hat (eps1**2 a floor)"),
    (Adafactor, {"variant": "keras"}, "g**2"),
    (Adafactor, {"variant": "optax"}, "g**2"),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "options", "text"), EPS_COMPARED,
                         ids=[row_id(c, o) for c, o, _ in EPS_COMPARED])  # fmt: skip
def test_eps_compared_with(cls: type, options: dict, text: str | None) -> None:
    p = Parameter(np.ones(3))
    opt = cls([p], **options, track_stats=True)
    assert opt.eps_compared_with() == text
    assert cls.eps_compared_with_options({**opt.defaults, **options}) == text
    if text is None:  # no eps (atan2's multiplier has none either, but exists)
        p.grad[...] = 1.0
        opt.step()
        assert opt.stats.eps_dominated == 0.0
        assert (opt.multipliers() is None) is ("eps" not in inspect.signature(cls).parameters)
    else:
        with pytest.raises(ValueError, match="at least one optimizer step"):
            opt.multipliers()


# -- the variants, and the hyperparameters the property test draws ----------------------------

#: Every option combination that compiles a different kernel or selects a different formula.
VARIANTS: dict[type[Optimizer], list[dict[str, Any]]] = {
    SGD: [{"momentum": m, "dampening": d, "nesterov": n}
          for m, d, n in ((0.0, 0.0, False), (0.9, 0.0, False), (0.5, 0.3, False),
                          (0.9, 0.0, True))],
    Adam: [{"eps_mode": e, "amsgrad": ams, "amsgrad_max": amax}
           for e in EPS_MODES
           for ams, amax in [(False, "raw")] + [(True, m) for m in AMSGRAD_MAX_MODES]],
    AdamW: [{}],
    RMSprop: [{"eps_mode": e, "centered": c, "momentum": m}
              for e in RMSPROP_EPS_MODES for c in (False, True) for m in (0.0, 0.9)],
    Adagrad: [{"eps_mode": e} for e in ADAGRAD_EPS_MODES],
    Adamax: [{"eps_mode": e} for e in ADAMAX_EPS_MODES] + [{"decoupled_weight_decay": True}],
    Adadelta: [{}],
    NAdam: [{}, {"variant": "optax"}],
    RAdam: [{}, {"variant": "optax"}],
    AdaBelief: [{}],
    Lion: [{}],
    Rprop: [{"variant": v} for v in ("torch", "optax")],
    ASGD: [{}],
    Yogi: [{}],
    ADOPT: [{"nesterov": n, "use_clipping": c} for n in (False, True) for c in (True, False)],
    Adan: [{}],
    AdEMAMix: [{}],
    Ftrl: [{"learning_rate_power": q} for q in (-0.5, -0.3)],  # sqrt, or a power
    SignSGD: [{}],
    Signum: [{}],
    Lamb: [{"variant": v} for v in ("keras", "optax")],
    Lars: [{"trust_ratio": r, "nesterov": n} for r in (True, False) for n in (False, True)],
    SparseAdam: [{}],  # its kernel and reference are lazy: a zero-gradient element stays
    OptimisticAdam: [{"nesterov": n} for n in (True, False)],
    NoisySGD: [{"eta": 0.0}],  # no draw outside the kernel (the property test draws eta)
    ScheduleFreeAdamW: [{"variant": v} for v in ("optax", "keras")],
    Prodigy: [{}],
    Novograd: [{}],
    Fromage: [{}],
    Adafactor: [{"variant": v} for v in ("torch", "keras", "optax")],
}  # fmt: skip
KERNEL_ROWS = [(cls, v) for cls in CLASSES for v in VARIANTS[cls]]
KERNEL_IDS = [row_id(c, v) for c, v in KERNEL_ROWS]

_LR = st.sampled_from([0.0, 1e-4, 1e-3, 0.1])
_WD = st.sampled_from([0.0, 1e-2])
_ADAM_BETAS = st.tuples(
    st.sampled_from([0.0, 0.3, 0.5, 0.9, 0.99]), st.sampled_from([0.0, 0.9, 0.999, 0.9999])
)
_ADAM = {"lr": _LR, "betas": _ADAM_BETAS, "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
         "weight_decay": _WD}  # fmt: skip
#: The hyperparameters each optimizer's property test draws (0 included: 0/0 gives NaN in the
#: kernel and the reference alike; lr=0, beta=0, rho=1 and the other edges too).
HYPER: dict[type[Optimizer], Any] = {
    SGD: st.fixed_dictionaries(
        {"lr": st.sampled_from([0.0, 1e-3, 0.1]), "weight_decay": _WD, "maximize": st.booleans()}
    ),
    Adam: st.fixed_dictionaries({**_ADAM, "decoupled_weight_decay": st.booleans()}),
    AdamW: st.fixed_dictionaries(
        {**_ADAM, "weight_decay": st.sampled_from([0.0, 1e-2, 0.5]), "amsgrad": st.booleans()}
    ),
    RMSprop: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 1e-3, 0.1]),
        "alpha": st.sampled_from([0.0, 0.3, 0.5, 0.9, 0.99]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "weight_decay": _WD,
        "maximize": st.booleans(),
    }),
    Adagrad: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 1e-3, 0.1]),
        "lr_decay": st.sampled_from([0.0, 0.1]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-10, 1e-3, 1.0]),
        "weight_decay": _WD,
        "initial_accumulator_value": st.sampled_from([0.0, 0.1]),
        "maximize": st.booleans(),
    }),
    Adamax: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 1e-3, 0.1]),
        "betas": st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.5, 0.999])),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-2, 1.0]),
        "weight_decay": _WD,
    }),
    Adadelta: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 0.1, 1.0]),
        "rho": st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-6, 1e-2, 1.0]),
        "weight_decay": _WD,
    }),
    NAdam: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 1e-3, 2e-3, 0.1]),
        "betas": st.sampled_from([(0.0, 0.0), (0.5, 0.9), (0.9, 0.999), (0.99, 0.9999)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "weight_decay": _WD,
        "momentum_decay": st.sampled_from([0.0, 4e-3, 0.1]),
        "decoupled_weight_decay": st.booleans(),
    }),
    RAdam: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 1e-3, 0.1]),
        # beta2 = 0.9 and 0.999 rectify from step 6; beta2 <= 2/3 never does
        "betas": st.sampled_from([(0.0, 0.0), (0.5, 0.9), (0.9, 0.999), (0.99, 0.6)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "weight_decay": _WD,
        "decoupled_weight_decay": st.booleans(),
    }),
    AdaBelief: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.999), (0.5, 0.9), (0.99, 0.9999)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "eps_root": st.sampled_from([0.0, 1e-16, 1e-8, 1e-2]),
    }),
    Lion: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.99), (0.5, 0.9), (0.99, 0.999)]),
        "weight_decay": st.sampled_from([0.0, 1e-3, 0.1]),
    }),
    Rprop: st.fixed_dictionaries({
        "lr": _LR,
        "etas": st.sampled_from([(0.5, 1.2), (0.1, 3.0), (0.9, 1.01)]),
        "step_sizes": st.sampled_from([(1e-6, 50.0), (0.0, 1e-3), (1e-2, 1e-2), (0.0, 0.0)]),
        "maximize": st.booleans(),
    }),
    ASGD: st.fixed_dictionaries({
        "lr": _LR,
        "lambd": st.sampled_from([0.0, 1e-4, 0.5]),
        "alpha": st.sampled_from([0.0, 0.75, 1.0]),
        "t0": st.sampled_from([0.0, 3.0, 1e6]),  # averaging from step 1, from step 5, never
        "weight_decay": _WD,
        "maximize": st.booleans(),
    }),
    Yogi: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.999), (0.5, 0.9), (0.99, 0.9999)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "initial_accumulator_value": st.sampled_from([0.0, 1e-6, 1.0]),
    }),
    ADOPT: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.9999), (0.5, 0.9), (0.99, 0.999)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-6, 1e-2, 1.0]),
    }),
    Adan: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.0, 0.0, 0.0), (0.98, 0.92, 0.99), (0.5, 0.9, 0.999),
                                  (0.9, 0.0, 0.5)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "eps_root": st.sampled_from([0.0, 1e-16, 1e-8, 1e-2]),
        "weight_decay": st.sampled_from([0.0, 1e-2]),
    }),
    AdEMAMix: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.0, 0.0, 0.0), (0.9, 0.999, 0.9999), (0.5, 0.9, 0.99),
                                  (0.99, 0.9999, 0.0)]),
        "alpha": st.sampled_from([0.0, 2.0, 5.0, -1.0]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "eps_root": st.sampled_from([0.0, 1e-16, 1e-8, 1e-2]),
        "weight_decay": st.sampled_from([0.0, 1e-2]),
    }),
    Ftrl: st.fixed_dictionaries({
        "lr": _LR,
        "initial_accumulator_value": st.sampled_from([0.0, 1e-6, 0.1]),
        "l1_regularization_strength": st.sampled_from([0.0, 1e-3, 1.0]),
        "l2_regularization_strength": st.sampled_from([0.0, 0.1]),
        "l2_shrinkage_regularization_strength": st.sampled_from([0.0, 0.1]),
        "beta": st.sampled_from([0.0, 1e-8, 1.0]),
    }),
    SignSGD: st.fixed_dictionaries({"lr": _LR}),
    Signum: st.fixed_dictionaries({"lr": _LR, "beta": st.sampled_from([0.0, 0.5, 0.9, 0.99])}),
    Lamb: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.999), (0.5, 0.9), (0.99, 0.9999)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-7, 1e-3, 1.0]),
    }),
    Lars: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 1e-3, 0.1, 1.0]),
        "weight_decay": _WD,
        "trust_coefficient": st.sampled_from([0.0, 1e-3, 1.0]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-3, 1.0]),
        "momentum": st.sampled_from([0.0, 0.5, 0.9]),
    }),
    SparseAdam: st.fixed_dictionaries({  # PyTorch wants lr > 0 and eps > 0
        "lr": st.sampled_from([1e-4, 1e-3, 0.1]),
        "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.999), (0.5, 0.9), (0.99, 0.9999)]),
        "eps": st.sampled_from([1e-16, 1e-8, 1e-3, 1.0]),
        "maximize": st.booleans(),
    }),
    OptimisticAdam: st.fixed_dictionaries({
        "lr": _LR,
        "optimism": st.sampled_from([None, 0.0, 1e-3, 0.1]),
        "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.999), (0.5, 0.9), (0.99, 0.9999)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "eps_root": st.sampled_from([0.0, 1e-16, 1e-8, 1e-2]),
    }),
    # the noise state starts (and, the kernel reading it only, stays) at 0 here: the noise
    # term is checked against the reference in tests/test_noisy_sgd.py
    NoisySGD: st.fixed_dictionaries({
        "lr": _LR,
        "eta": st.sampled_from([0.0, 0.01, 1.0]),
        "gamma": st.sampled_from([0.0, 0.55, 1.0]),
    }),
    ScheduleFreeAdamW: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.9, 0.999), (0.5, 0.0), (1e-3, 0.9), (0.99, 0.9999)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "weight_decay": _WD,
        "warmup_steps": st.sampled_from([0, 3]),
    }),
    Prodigy: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 0.1, 1.0]),
        "betas": st.sampled_from([(0.9, 0.999), (0.0, 0.0), (0.5, 0.9)]),
        "beta3": st.sampled_from([None, 0.0, 0.9]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "estim_lr0": st.sampled_from([1e-6, 1e-2]),
        "weight_decay": _WD,
        "safeguard_warmup": st.booleans(),
    }),
    Novograd: st.fixed_dictionaries({
        "lr": _LR,
        "betas": st.sampled_from([(0.0, 0.0), (0.9, 0.25), (0.5, 0.9), (0.99, 0.999)]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-6, 1e-3, 1.0]),
        "eps_root": st.sampled_from([0.0, 1e-16, 1e-4]),
        "weight_decay": _WD,
    }),
    Fromage: st.fixed_dictionaries({
        "lr": st.sampled_from([0.0, 1e-3, 0.1, 1.0]),
        "min_norm": st.sampled_from([0.0, 1e-16, 1e-6, 1e-3, 1.0]),
    }),
    Adafactor: st.fixed_dictionaries({
        "lr": _LR,
        "beta2_decay": st.sampled_from([0.0, -0.5, -0.8]),
        "eps": st.sampled_from([0.0, 1e-30, 1e-16, 1e-3, 1.0, (None, 1e-3), (1e-8, 0.0)]),
        "d": st.sampled_from([1.0, 2.0]),
    }),
}  # fmt: skip
#: Property-test examples per variant row (about what each optimizer's own file drew before).
EXAMPLES: dict[type[Optimizer], int] = {
    SGD: 40, Adam: 15, AdamW: 100, RMSprop: 40, Adagrad: 40, Adamax: 80, Adadelta: 80,
    NAdam: 150, RAdam: 150, AdaBelief: 150, Lion: 150, Rprop: 80, ASGD: 150, Yogi: 150,
    ADOPT: 40, Adan: 150, AdEMAMix: 150, Ftrl: 75, SignSGD: 40, Signum: 60, Lamb: 60, Lars: 40,
    SparseAdam: 100,
    OptimisticAdam: 60, NoisySGD: 20,
    ScheduleFreeAdamW: 75, Prodigy: 100,
    Novograd: 60, Fromage: 60,
    Adafactor: 60,
}  # fmt: skip


def step_kernels(
    opt: Optimizer,
    param: np.ndarray,
    grad: np.ndarray,
    runs: dict[str, list[np.ndarray]],
    t: int,
    nan_in: np.ndarray | None = None,
    tensor_states: dict[str, np.ndarray] | None = None,
) -> tuple[Any, Any]:
    """Step ``t`` of group 0 on every run of ``runs`` ("plain", "tracked", "reference": each
    ``[param, *state]``), and a dry run on the tracked arrays first; checks that the dry run
    wrote nothing and counted what the tracked step counts, that the plain kernel counts
    nothing, and that tracking changes no bit (on the coordinates of ``nan_in``, parameters that
    were NaN before the first step, only no value: the sign of the NaN may differ). A per-tensor
    stage's scalar state (Novograd's ``nu``) is carried from step to step in ``tensor_states``
    (by run, as the kernel's and the reference's ``tensor_state``). Returns (tracked counts,
    dry-run counts)."""
    ts = {k: {} if tensor_states is None else {"tensor_state": tensor_states[k]}
          for k in runs}  # fmt: skip
    group = opt.param_groups[0]
    dtype = param.dtype
    n = grad.size
    s = opt._scalars(group, dtype, t)
    scratch = np.empty(n, dtype)
    tracked = runs["tracked"]
    before = [a.copy() for a in tracked]
    with np.errstate(all="ignore"):
        ts_before = {k: v.copy() for k, v in ts["tracked"].items()}
        dry = opt._kernel(group, True, False)(tracked[0], grad, *tracked[1:], scratch, s,
                                              **ts["tracked"])  # fmt: skip
        for a, b in zip(tracked, before, strict=True):
            assert a.tobytes() == b.tobytes()  # the dry run stored nothing
        for k, v in ts_before.items():
            assert v.tobytes() == ts["tracked"][k].tobytes()  # ... not even per tensor
        plain = runs["plain"]
        assert opt._kernel(group, False, True)(plain[0], grad, *plain[1:], scratch[:0], s,
                                               **ts["plain"]) == (0, 0, 0.0)  # fmt: skip
        counts = opt._kernel(group, True, True)(tracked[0], grad, *tracked[1:], scratch, s,
                                                **ts["tracked"])  # fmt: skip
        ref = runs["reference"]
        opt._reference(group)(ref[0], grad, *ref[1:], s, **ts["reference"])
    keep = slice(None) if nan_in is None else ~nan_in
    for a, b in zip(plain, tracked, strict=True):
        assert a[keep].tobytes() == b[keep].tobytes()  # tracking changes no bit
        np.testing.assert_array_equal(a, b)
    assert dry[:2] == counts[:2]
    # SparseAdam reads only the touched elements (gradient not 0): an untouched NaN is not seen
    seen = (grad != 0) | np.isnan(grad) if isinstance(opt, SparseAdam) else slice(None)
    assert counts[1] == int((~np.isfinite(tracked[0][seen])).sum())
    return counts, dry


def step_scalars(opt: Optimizer, flat: Any, t: int) -> Any:
    """The constants ``step()`` uses for step ``t`` of group 0's buffer ``flat`` (after a
    global reduction's pass, for a rule that has one)."""
    group = opt.param_groups[0]
    if opt.rule is None or opt.rule.reduce is None:
        return opt._scalars(group, flat.dtype, t)
    state = flat.group_states[0]
    run = _Run(flat.args, list(range(len(flat.params))), t, state,
               opt._scalars(group, flat.dtype, t, state))  # fmt: skip
    return opt._reduce_plans([(0, flat, None, [run])])[0][3][0].scalars


def run_kernel_and_reference(
    cls: type[Optimizer],
    kwargs: dict[str, Any],
    n: int,
    steps: int,
    zero_frac: float,
    seed: int,
    dtype: Any = np.float64,
    spread: bool = False,
    n_nan: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``steps`` updates of one flat buffer by the plain and tracked kernels (with a dry run
    before each, see :func:`step_kernels`) and by the hand-written NumPy reference. Gradients
    are standard normal, a fraction ``zero_frac`` of them zero, scaled by ``10**k`` for a
    random ``k`` in [-12, 1] each when ``spread``; the first ``n_nan`` parameters are NaN.
    Returns the kernel's and the reference's ``[param, *state]``."""
    opt = cls([Parameter(np.zeros(1, dtype))], **kwargs)
    spec = opt._state_spec(opt.param_groups[0])
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    param[:n_nan] = np.nan
    runs = {k: [param.copy(), *(np.full(n, v, dtype) for v in spec.values())]
            for k in ("plain", "tracked", "reference")}  # fmt: skip
    tensor_spec = opt._tensor_spec()  # a per-tensor stage's scalars: carried over the steps
    tensor_states = None
    if tensor_spec:
        tensor_states = {k: np.array([list(tensor_spec.values())]) for k in runs}
    for t in range(1, steps + 1):
        grad = rng.standard_normal(n) * (rng.random(n) >= zero_frac)
        if spread:
            grad *= 10.0 ** rng.integers(-12, 2, n)
        step_kernels(opt, param, grad.astype(dtype), runs, t, np.isnan(param), tensor_states)
    if tensor_states is not None:  # the per-tensor state agrees too
        np.testing.assert_allclose(tensor_states["tracked"], tensor_states["reference"],
                                   rtol=1e-12)  # fmt: skip
    return runs["tracked"], runs["reference"]


def assert_matches_reference(
    ours: list[np.ndarray], ref: list[np.ndarray], kwargs: dict[str, Any], per_tensor: bool = False
) -> None:
    """NaN exactly where the reference has NaN, else 1e-12 relative (with ``eps_mode="atan2"``,
    1e-12 of the buffer's scale: ``p + atan2(...)`` near 0 keeps ``p``'s absolute error, and
    atan2 may differ by an ulp between Numba's libm and NumPy's). With ``per_tensor`` (Lamb,
    Lars), also 1e-12 of the parameters' starting scale (standard normal draws: 1) or of the
    largest value of any array, whichever is larger: the kernel sums a tensor's squares in SIMD
    lanes and NumPy pairwise, so the trust ratio can differ in its last bit, and where an update
    cancels the parameter to 0 the two keep different round-off residues (2.8e-17 against 0;
    after that the reference's zero norm takes the ratio 1 and the kernel's residue another one,
    so the residues never meet again)."""
    scale = 0.0
    if per_tensor:
        finite = [np.abs(b[np.isfinite(b)]) for b in ref]
        scale = max((float(f.max()) for f in finite if f.size), default=0.0)
        scale = max(scale, 1.0)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        atol = max(1e-300, 1e-12 * scale)
        if kwargs.get("eps_mode") == "atan2":
            finite = np.abs(b[np.isfinite(b)])
            atol = 1e-12 * float(finite.max()) if finite.size else 0.0
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=atol, equal_nan=True)


@pytest.mark.parametrize(("cls", "variant"), KERNEL_ROWS, ids=KERNEL_IDS)
def test_kernel_matches_reference_float64(cls: type[Optimizer], variant: dict[str, Any]) -> None:
    """The kernel (plain, tracked and dry run) against the hand-written float64 reference."""

    @settings(max_examples=EXAMPLES[cls], deadline=None)
    @given(
        hp=HYPER[cls],
        n=st.integers(1, 200),
        steps=st.integers(1, 9),
        zero_frac=st.sampled_from([0.0, 0.5, 1.0]),
        seed=st.integers(0, 2**32 - 1),
        spread=st.booleans(),
        n_nan=st.sampled_from([0, 0, 2]),
    )
    def check(hp, n, steps, zero_frac, seed, spread, n_nan) -> None:  # type: ignore[no-untyped-def]
        kwargs = {**variant, **hp}
        ours, ref = run_kernel_and_reference(
            cls, kwargs, n, steps, zero_frac, seed, spread=spread, n_nan=n_nan
        )
        assert_matches_reference(ours, ref, kwargs, per_tensor=cls in PER_TENSOR)

    check()


EPS_ROWS = [(c, v) for c, v in KERNEL_ROWS if "eps" in inspect.signature(c).parameters
            and c is not SparseAdam]  # SparseAdam: eps > 0 (PyTorch's check)


@pytest.mark.parametrize(("cls", "variant"), EPS_ROWS, ids=[row_id(*r) for r in EPS_ROWS])
def test_eps_zero_and_zero_gradients_match_reference(
    cls: type[Optimizer], variant: dict[str, Any]
) -> None:
    """The corner the property test may not draw every time: eps=0 on coordinates that never
    saw a gradient (0/0: NaN in both, never an exception), past RAdam's first rectified step."""
    kwargs = {**variant, "eps": 0.0, "lr": 1e-2}
    if cls in (AdaBelief, Adan, AdEMAMix, OptimisticAdam):
        kwargs["eps_root"] = 0.0
    if cls is Yogi:  # its moments start at 1e-6 by default: no 0/0
        kwargs["initial_accumulator_value"] = 0.0
    ours, ref = run_kernel_and_reference(cls, kwargs, 64, 8, 0.5, 1)
    guarded = variant.get("eps_mode") == "inside_guarded"
    assert np.isnan(ours[0]).any() is not guarded
    assert_matches_reference(ours, ref, kwargs, per_tensor=cls in PER_TENSOR)


@pytest.mark.parametrize(("cls", "variant"), KERNEL_ROWS, ids=KERNEL_IDS)
def test_kernel_matches_reference_float32(cls: type[Optimizer], variant: dict[str, Any]) -> None:
    """float32 buffers stay float32 (so do the per-step constants) and agree with the reference
    to float32 round-off."""
    kwargs = dict(variant)
    if "weight_decay" in inspect.signature(cls).parameters and variant.get("variant") != "keras":
        kwargs["weight_decay"] = 1e-2
    opt = cls([Parameter(np.zeros(1, np.float32))], **kwargs)
    s = opt._scalars(opt.param_groups[0], np.dtype(np.float32), 1)
    assert all(np.asarray(v).dtype in (np.float32, np.bool_) for v in s), s
    ours, ref = run_kernel_and_reference(cls, kwargs, 10_001, 8, 0.3, 7, np.float32)
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(ours[0], ref[0] * 0)  # it moved


@pytest.mark.parametrize(("cls", "variant"), KERNEL_ROWS, ids=KERNEL_IDS)
def test_dry_run_writes_nothing_and_counts_like_the_real_step(
    cls: type[Optimizer], variant: dict[str, Any]
) -> None:
    """Through ``step()``'s own flat buffers and reachable state (8 steps: past RAdam's first
    rectified step): the dry run of check_finite stores nothing and returns what the real step
    returns; tracking the stats changes no bit of the update or the state."""
    rng = np.random.default_rng(3)
    grads = rng.standard_normal((8, 500)) * (rng.random((8, 500)) < 0.5)
    runs = []
    for track, check in ((False, False), (True, False), (True, True)):
        w = Parameter(np.linspace(-1.0, 1.0, 500))
        opt = cls([w], **variant, lr=1e-2, track_stats=track, check_finite=check)
        group = opt.param_groups[0]
        flat = opt._flats[0][0]
        for t, g in enumerate(grads, 1):
            w.grad[...] = g
            if t == 1:  # state that starts as the parameter (schedule-free's z), as step() does
                opt._start_from_param(flat, [0])
            before = [a.copy() for a in flat.args]
            s = step_scalars(opt, flat, t)
            # a per-tensor stage's scalars (Novograd's nu) as the step will see them
            ts = {"tensor_state": flat.tensor_state.copy()} if flat.tensor_spec else {}
            dry = opt._kernel(group, True, False)(*flat.args, flat.ensure_scratch(), s, **ts)
            assert all(a.tobytes() == b.tobytes() for a, b in zip(flat.args, before, strict=True))
            if ts:
                ts["tensor_state"] = flat.tensor_state.copy()
            real = opt._kernel(group, True, True)(*before, flat.ensure_scratch(), s, **ts)
            still = t == 1 and cls in FIRST_STEP_STILL and (
                FIRST_STEP_STILL[cls].items() <= variant.items())
            assert real == dry and (real[2] > 0) is not still  # it computed the update ...
            opt.step()
            # ... which is the step's own, bit for bit
            assert all(a.tobytes() == b.tobytes() for a, b in zip(flat.args, before, strict=True))
        runs.append((w.data.copy(), opt.state_dict()))
    for data, sd in runs[1:]:
        assert data.tobytes() == runs[0][0].tobytes()
        assert_identical(sd, runs[0][1])


# -- the Numba disk cache: a second process compiles nothing -----------------------------------

CACHE_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import minnet.optim as optim
    from minnet.nn import Parameter
    for name in {names!r}:
        p = Parameter(np.ones(8, np.float32))
        opt = getattr(optim, name)([p])
        kernel = opt._kernel(opt.param_groups[0], False, True)
        p.grad[...] = 1.0
        opt.step()
        print(name, sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))
    """
)


@pytest.mark.slow
def test_a_second_process_loads_every_kernel_from_the_disk_cache(tmp_path: Path) -> None:
    """Each optimizer's default kernel is compiled by the first process (a miss) and only loaded
    by the second (a hit), from a fresh cache directory."""
    names = [c.__name__ for c in CLASSES if c.shaped is None]  # a shaped update is NumPy
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = CACHE_SCRIPT.format(names=names)
    first, second = (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=600).stdout.split("\n")[: len(names)]
        for _ in range(2)
    )  # fmt: skip
    assert first == [f"{n} 0 1" for n in names]  # the first process compiles ...
    assert second == [f"{n} 1 0" for n in names]  # ... the second one only loads


# -- 250 + 250 steps across a save / load in a new process -------------------------------------

#: Runs of tests/_train_with_checkpoints.py's model (a float32 and a float64 layer: two flat
#: buffers), by name: the class and its options (the checkpoint stores them). Adam's own
#: variants are in tests/test_kill_resume.py.
RESUME: dict[str, dict[str, Any]] = {
    "sgd-momentum": {"optimizer": "SGD", "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-3},
    "adam": {"optimizer": "Adam", "lr": 3e-2, "amsgrad": True, "weight_decay": 1e-3},
    "adamw": {"optimizer": "AdamW", "lr": 3e-2, "eps_mode": "atan2"},
    "rmsprop-outside": {"optimizer": "RMSprop", "lr": 3e-3, "weight_decay": 1e-3},
    "rmsprop-inside-centered-momentum": {
        "optimizer": "RMSprop", "lr": 1e-3, "eps": 1e-6, "momentum": 0.9, "centered": True,
        "eps_mode": "inside",
    },
    "adagrad-outside": {
        "optimizer": "Adagrad", "lr": 3e-2, "lr_decay": 1e-2, "initial_accumulator_value": 0.1,
        "weight_decay": 1e-3,
    },
    "adagrad-inside_guarded-eps0": {
        "optimizer": "Adagrad", "lr": 3e-2, "eps": 0.0, "eps_mode": "inside_guarded",
    },
    "adamax-max": {"optimizer": "Adamax", "lr": 1e-2, "weight_decay": 1e-3},
    "adamax-outside": {"optimizer": "Adamax", "lr": 1e-2, "eps": 1e-3, "eps_mode": "outside"},
    "adadelta": {"optimizer": "Adadelta", "lr": 1.0, "rho": 0.9, "weight_decay": 1e-3},
    "nadam": {"optimizer": "NAdam", "lr": 3e-2, "betas": (0.9, 0.99), "weight_decay": 1e-3},
    "radam": {"optimizer": "RAdam", "lr": 3e-2, "betas": (0.9, 0.99), "weight_decay": 1e-3},
    "nadamw-optax": {"optimizer": "NAdam", "lr": 3e-2, "variant": "optax", "weight_decay": 1e-3,
                     "decoupled_weight_decay": True},
    "radam-optax": {"optimizer": "RAdam", "lr": 3e-2, "betas": (0.9, 0.99), "variant": "optax"},
    "adamaxw": {"optimizer": "Adamax", "lr": 1e-2, "weight_decay": 1e-3,
                "decoupled_weight_decay": True},
    "adabelief": {"optimizer": "AdaBelief", "lr": 1e-2, "betas": (0.9, 0.99)},
    "adabelief-eps0": {"optimizer": "AdaBelief", "lr": 1e-2, "eps": 0.0, "eps_root": 1e-12},
    "lion": {"optimizer": "Lion", "lr": 1e-3},
    "lion-wd": {"optimizer": "Lion", "lr": 1e-3, "betas": (0.8, 0.95), "weight_decay": 0.1},
    "rprop": {"optimizer": "Rprop", "lr": 1e-3, "step_sizes": (1e-6, 1e-2)},
    "rprop-optax": {"optimizer": "Rprop", "lr": 1e-3, "step_sizes": (1e-6, 1e-2),
                    "variant": "optax"},
    "asgd": {"optimizer": "ASGD", "lr": 1e-2, "lambd": 1e-2, "t0": 100.0,
             "weight_decay": 1e-3},
    "yogi": {"optimizer": "Yogi", "lr": 1e-2, "betas": (0.9, 0.99)},
    "adopt": {"optimizer": "ADOPT", "lr": 1e-2, "nesterov": True},
    "adan": {"optimizer": "Adan", "lr": 1e-2, "weight_decay": 1e-3},
    "ademamix": {"optimizer": "AdEMAMix", "lr": 1e-2, "betas": (0.9, 0.99, 0.999),
                 "weight_decay": 1e-3},
    "ftrl": {"optimizer": "Ftrl", "lr": 3e-2, "l1_regularization_strength": 1e-4,
             "l2_shrinkage_regularization_strength": 1e-3, "beta": 0.1},
    "signsgd": {"optimizer": "SignSGD", "lr": 1e-3},
    "signum": {"optimizer": "Signum", "lr": 1e-3, "beta": 0.8},
    "lamb": {"optimizer": "Lamb", "lr": 1e-2, "variant": "optax", "weight_decay": 1e-2},
    "lars": {"optimizer": "Lars", "lr": 1.0, "nesterov": True},
    "sparse_adam": {"optimizer": "SparseAdam", "lr": 3e-2, "betas": (0.9, 0.99)},
    "optimisticadam": {"optimizer": "OptimisticAdam", "lr": 1e-2, "optimism": 3e-2},
    # the draws are a function of (seed, parameter, step): a resumed run draws the same numbers
    "noisysgd": {"optimizer": "NoisySGD", "lr": 1e-3, "eta": 1e-4},
    "schedule-free-adamw": {"optimizer": "ScheduleFreeAdamW", "lr": 1e-2, "warmup_steps": 20,
                            "weight_decay": 1e-3},
    "prodigy": {"optimizer": "Prodigy", "lr": 1.0, "weight_decay": 1e-3},
    "novograd": {"optimizer": "Novograd", "lr": 1e-3, "weight_decay": 1e-3},
    "fromage": {"optimizer": "Fromage", "lr": 1e-2},
    "adafactor": {"optimizer": "Adafactor", "lr": 1e-2, "eps": (1e-30, 1e-3),
                  "weight_decay": 1e-3},
}  # fmt: skip


def test_resume_in_a_new_process_is_bit_identical(tmp_path: Path) -> None:
    """250 steps, a checkpoint, 250 more in a new process: bit-identical to 500 straight."""
    straight, halfway = {}, {}
    for name, variant in RESUME.items():
        straight[name] = checkpoint(train(fresh(variant), 500))
        halfway[name] = checkpoint(train(fresh(variant), 250))
    minnet.save(halfway, tmp_path / "halfway.npz")
    subprocess.run(
        [sys.executable, HELPER, "resume", str(tmp_path / "halfway.npz"),
         str(tmp_path / "resumed.npz"), "500"],
        check=True,
        timeout=300,
    )  # fmt: skip
    resumed = minnet.load(tmp_path / "resumed.npz")
    assert list(resumed) == list(straight)
    for name in straight:
        assert_identical(straight[name], resumed[name], name)
        assert not np.array_equal(
            halfway[name]["model"]["0.weight"], straight[name]["model"]["0.weight"]
        )


# -- convergence: optax's test problems ---------------------------------------------------------


def parabola(w: np.ndarray) -> tuple[float, np.ndarray]:
    """optax's parabola ``sum((w - [1, -1, 1])**2)`` from ``[-1, 10, 1]``: loss, gradient."""
    d = w - np.array([1.0, -1.0, 1.0])
    return float(np.sum(d * d)), 2 * d


def rosenbrock(w: np.ndarray) -> tuple[float, np.ndarray]:
    """optax's ``(1 - x)**2 + 100 * (y - x**2)**2`` (minimum at ``[1, 1]``) from 0: loss,
    gradient."""
    x, y = w
    loss = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    return float(loss), np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def quadratic(w: np.ndarray) -> tuple[float, np.ndarray]:
    """``sum(c * (w - [3, -2, 0.5, 1])**2)`` with curvatures ``c`` from 1e-2 to 1e4, from 0."""
    c = np.array([1e-2, 1.0, 1e2, 1e4])
    d = w - np.array([3.0, -2.0, 0.5, 1.0])
    return float(np.sum(c * d * d)), 2 * c * d


PROBLEMS: dict[str, tuple[Callable[[np.ndarray], tuple[float, np.ndarray]], list[float]]] = {
    "parabola": (parabola, [-1.0, 10.0, 1.0]),
    "rosenbrock": (rosenbrock, [0.0, 0.0]),
    "quadratic": (quadratic, [0.0, 0.0, 0.0, 0.0]),
}
SOLUTIONS = {"parabola": [1.0, -1.0, 1.0], "rosenbrock": [1.0, 1.0],
             "quadratic": [3.0, -2.0, 0.5, 1.0]}  # fmt: skip
#: (class, options, problem, steps, atol). The loss must also fall below 1e-2 of the first.
CONVERGENCE: list[tuple[type[Optimizer], dict[str, Any], str, int, float]] = [
    (SGD, {"lr": 1e-1}, "parabola", 10_000, 1e-2),
    (SGD, {"lr": 1e-2, "momentum": 0.9, "nesterov": True}, "parabola", 10_000, 1e-2),
    (SGD, {"lr": 1.5e-3}, "rosenbrock", 10_000, 1e-2),
    (SGD, {"lr": 1e-3, "momentum": 0.9}, "rosenbrock", 10_000, 1e-2),
    (Adam, {"lr": 1e-1}, "parabola", 10_000, 1e-2),
    (Adam, {"lr": 1e-2, "amsgrad": True}, "rosenbrock", 10_000, 1e-2),
    (Adam, {"lr": 1e-2}, "rosenbrock", 10_000, 1e-2),
    *[(Adam, {"lr": 0.02, "eps_mode": m, "amsgrad": a, "amsgrad_max": x}, "quadratic", 4000,
       5e-2) for m in EPS_MODES for a, x in [(False, "raw")] + [(True, y) for y in
                                                                 AMSGRAD_MAX_MODES]],
    (AdamW, {"lr": 1e-1, "weight_decay": 1e-4}, "parabola", 10_000, 1e-2),
    (AdamW, {"lr": 1e-2, "weight_decay": 1e-4}, "rosenbrock", 10_000, 1e-2),
    *[(RMSprop, kw, problem, 10_000, 6e-2) for problem in ("parabola", "rosenbrock")
      for kw in ({"lr": 5e-3}, {"lr": 5e-3, "eps_mode": "inside"},
                 {"lr": 1e-3, "momentum": 0.9, "centered": True})],
    *[(Adagrad, kw, problem, 10_000, 6e-2) for problem in ("parabola", "rosenbrock")
      for kw in ({"lr": 1.0},
                 {"lr": 1.0, "initial_accumulator_value": 0.1, "eps": 1e-7, "eps_mode": "inside"},
                 {"lr": 1.0, "initial_accumulator_value": 0.1, "eps": 1e-7,
                  "eps_mode": "inside_guarded"})],
    (Adamax, {"lr": 1e-1}, "parabola", 2000, 2e-2),
    (Adamax, {"lr": 1e-1, "eps_mode": "outside"}, "parabola", 2000, 2e-2),
    (Adamax, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    (Adamax, {"lr": 1e-2, "eps_mode": "outside"}, "rosenbrock", 10_000, 2e-2),
    (Adamax, {"lr": 1e-1, "weight_decay": 1e-4, "decoupled_weight_decay": True}, "parabola",
     2000, 2e-2),
    (Adadelta, {"lr": 1.0, "rho": 0.9, "eps": 1e-3}, "parabola", 2000, 2e-2),
    # Rosenbrock's curved valley needs a small lr: at lr >= 0.3 Adadelta overshoots it.
    (Adadelta, {"lr": 0.02, "rho": 0.95, "eps": 1e-6}, "rosenbrock", 10_000, 2e-2),
    (NAdam, {"lr": 0.1}, "parabola", 2000, 1e-4),
    (NAdam, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    (NAdam, {"lr": 0.1, "variant": "optax"}, "parabola", 2000, 1e-4),
    (RAdam, {"lr": 0.1}, "parabola", 2000, 1e-4),
    (RAdam, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    (RAdam, {"lr": 1e-2, "variant": "optax"}, "rosenbrock", 10_000, 2e-2),
    (AdaBelief, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (AdaBelief, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    # Lion's sign steps end in a cycle of amplitude ~lr around the minimum.
    (Lion, {"lr": 1e-2}, "parabola", 10_000, 2e-2),
    (Lion, {"lr": 1e-3}, "rosenbrock", 10_000, 2e-2),
    (Rprop, {"lr": 1e-2}, "parabola", 2000, 1e-4),
    (Rprop, {"lr": 1e-3}, "rosenbrock", 10_000, 2e-2),
    (Rprop, {"lr": 1e-2, "variant": "optax"}, "parabola", 2000, 1e-4),
    (Rprop, {"lr": 1e-3, "variant": "optax"}, "rosenbrock", 10_000, 2e-2),
    (ASGD, {"lr": 1e-1}, "parabola", 2000, 1e-4),
    (ASGD, {"lr": 1.5e-3}, "rosenbrock", 10_000, 2e-2),
    (Yogi, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (Yogi, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    (ADOPT, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (ADOPT, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    (Adan, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (Adan, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    (AdEMAMix, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (AdEMAMix, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    (Ftrl, {"lr": 1.0}, "parabola", 10_000, 2e-2),
    (Ftrl, {"lr": 0.1}, "rosenbrock", 10_000, 2e-2),
    # Sign steps end in a cycle of amplitude ~lr around the minimum, as Lion's. Without momentum
    # they move every coordinate by lr, so SignSGD cannot follow Rosenbrock's curved valley
    # (still 0.1 away after 20,000 steps at lr 1e-4): it gets the quadratic's curvatures instead.
    (SignSGD, {"lr": 1e-2}, "parabola", 10_000, 2e-2),
    (SignSGD, {"lr": 1e-3}, "quadratic", 10_000, 2e-2),
    (Signum, {"lr": 3e-3}, "parabola", 10_000, 2e-2),
    (Signum, {"lr": 2e-4}, "rosenbrock", 10_000, 2e-2),
    (Lamb, {"lr": 1e-2}, "parabola", 10_000, 2e-2),
    (Lamb, {"lr": 1e-3, "variant": "optax"}, "rosenbrock", 10_000, 2e-2),
    (Lars, {"lr": 1.0}, "parabola", 10_000, 2e-2),
    (Lars, {"lr": 0.1}, "rosenbrock", 10_000, 2e-2),
    (SparseAdam, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (SparseAdam, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    (OptimisticAdam, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (OptimisticAdam, {"lr": 1e-2}, "rosenbrock", 10_000, 2e-2),
    # the noise's variance decays as t**-0.55: after 10,000 steps its std is 1e-3 * sqrt(eta)
    (NoisySGD, {"lr": 1e-2, "eta": 1e-2}, "parabola", 10_000, 2e-2),
    (NoisySGD, {"lr": 1e-3, "eta": 1e-4}, "rosenbrock", 10_000, 2e-2),
    (ScheduleFreeAdamW, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (ScheduleFreeAdamW, {"lr": 1e-2, "variant": "keras", "warmup_steps": 100}, "rosenbrock",
     10_000, 2e-2),
    (Prodigy, {"lr": 1.0}, "parabola", 10_000, 2e-2),
    (Prodigy, {"lr": 1.0, "safeguard_warmup": True}, "rosenbrock", 10_000, 2e-2),
    # Normalised steps (Novograd's g / ||g||, Fromage's lr * ||w||) end in a cycle of about
    # their length around the minimum. Fromage's step is relative to ||w||: from Rosenbrock's
    # start at 0 it takes lr * min_norm steps until ||w|| grows, so it gets min_norm=1e-2.
    (Novograd, {"lr": 1e-2}, "parabola", 10_000, 2e-2),
    (Novograd, {"lr": 1e-3}, "rosenbrock", 10_000, 2e-2),
    (Fromage, {"lr": 1e-3}, "parabola", 10_000, 2e-2),
    (Fromage, {"lr": 1e-2, "min_norm": 1e-2}, "rosenbrock", 10_000, 2e-2),
    # Adafactor: a relative step size times the parameter's RMS, capped by 1/sqrt(t), so
    # Rosenbrock's valley takes 30,000 steps (0.007 away; 0.023 after 10,000).
    (Adafactor, {"lr": 1e-1}, "parabola", 10_000, 2e-2),
    (Adafactor, {"lr": 1e-2, "variant": "keras"}, "rosenbrock", 30_000, 2e-2),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "kwargs", "problem", "steps", "atol"),
    CONVERGENCE,
    ids=[f"{row_id(c, kw)}-{p}" for c, kw, p, _, _ in CONVERGENCE],
)
def test_converges_on_optax_test_problems(
    cls: type, kwargs: dict, problem: str, steps: int, atol: float
) -> None:
    fn, start = PROBLEMS[problem]
    w = Parameter(np.array(start))
    opt = cls([w], **kwargs)
    first = fn(w.data)[0]
    for _ in range(steps):
        w.grad[...] = fn(w.data)[1]
        opt.step()
    np.testing.assert_allclose(w.data, SOLUTIONS[problem], rtol=0, atol=atol)
    assert fn(w.data)[0] < 1e-2 * first


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_converges_on_a_quadratic_in_float32_and_float64(amsgrad: bool, dtype: type) -> None:
    """Very different curvatures, in either buffer dtype (which stays as it is)."""
    target = np.array([3.0, -2.0, 0.5, 10.0], dtype=dtype)
    curv = np.array([1e-2, 1.0, 1e2, 1e4], dtype=dtype)
    w = Parameter(np.zeros(4, dtype=dtype))
    opt = Adam([w], lr=0.05, amsgrad=amsgrad)
    for _ in range(3000):
        w.grad[...] = 2 * curv * (w.data - target)
        opt.step()
    assert w.data.dtype == dtype
    np.testing.assert_allclose(w.data, target, atol=2e-2)


# -- the documented subclass contract -----------------------------------------------------------


def test_the_contracts_worked_example_runs(tmp_path, monkeypatch) -> None:
    """The example in minnet/optim/optimizer.py's docstring is a working optimizer."""
    import importlib
    import textwrap

    import minnet.optim.optimizer as base

    doc = base.__doc__
    start = doc.index(".. code-block:: python", doc.index("A worked example"))
    block = doc[start:].split("\n", 2)[2]
    code = textwrap.dedent(block[: block.index("\n:mod:")])
    (tmp_path / "sd_example.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sd = importlib.import_module("sd_example")
    w = Parameter(np.array([1.0, -2.0, 3.0]), "w")
    opt = sd.SD([w], lr=0.1, decay=0.5, track_stats=True, check_finite=True)
    w.grad[...] = [1.0, 0.0, -1.0]
    opt.step()
    np.testing.assert_allclose(w.data, np.array([1.0, -2.0, 3.0]) * 0.95 - 0.1 * w.grad)
    assert opt.stats.nonfinite == 0 and opt.multipliers() is None
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        sd.SD([Parameter(np.ones(2))], lr=-1)
    w.grad[0] = np.inf
    with pytest.raises(FloatingPointError, match="w has a NaN or infinite gradient"):
        opt.step()
    ours, ref = run_kernel_and_reference(sd.SD, {"decay": 0.3, "lr": 0.1}, 50, 3, 0.5, 0)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # The rule alone gives it 16-bit storage: bfloat16 parameters, one rounding per value.
    from minnet.dtypes import bfloat16

    h = Parameter(np.array([1.0, -2.0, 3.0], bfloat16), "h")
    opt16 = sd.SD([h], lr=0.1, decay=0.5, track_stats=True)
    h.grad[...] = np.array([1.0, 0.0, -1.0], bfloat16)
    opt16.step()
    g32 = np.array([1.0, 0.0, -1.0], np.float32)
    expected = np.array([1.0, -2.0, 3.0], np.float32) * np.float32(0.95) - np.float32(0.1) * g32
    np.testing.assert_array_equal(h.data, expected.astype(bfloat16))

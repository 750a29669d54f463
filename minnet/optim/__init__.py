"""Optimizers with PyTorch's names, defaults, formulas and messages, each one fused Numba kernel.

:class:`Optimizer` (in :mod:`minnet.optim.optimizer`) owns parameter groups, flat buffers,
``state_dict``, validation, ``track_stats`` and ``check_finite``; :mod:`minnet.optim._kernel`
is the one loop that runs every optimizer's element rule; each optimizer is one file with its
constants, its rule, a float64 NumPy reference and its class (:mod:`~minnet.optim.lion` is the
smallest, :mod:`~minnet.optim.adam` the largest). :mod:`~minnet.optim.lr_scheduler` has
PyTorch's learning-rate schedules.
"""

from minnet.optim import lr_scheduler  # PyTorch: torch.optim.lr_scheduler
from minnet.optim.adabelief import AdaBelief
from minnet.optim.adadelta import Adadelta
from minnet.optim.adafactor import Adafactor
from minnet.optim.adagrad import Adagrad
from minnet.optim.adam import AMSGRAD_MAX_MODES, EPS_MODES, Adam
from minnet.optim.adamax import Adamax
from minnet.optim.adamw import AdamW
from minnet.optim.adan import Adan
from minnet.optim.ademamix import AdEMAMix
from minnet.optim.adopt import ADOPT
from minnet.optim.asgd import ASGD
from minnet.optim.fromage import Fromage
from minnet.optim.ftrl import Ftrl
from minnet.optim.lamb import Lamb
from minnet.optim.lars import Lars
from minnet.optim.lbfgs import LBFGS
from minnet.optim.lion import Lion
from minnet.optim.muon import Muon
from minnet.optim.nadam import NAdam
from minnet.optim.noisy_sgd import NoisySGD
from minnet.optim.novograd import Novograd
from minnet.optim.optimistic_adam import OptimisticAdam
from minnet.optim.optimizer import (
    AdamStats,
    EpsWarning,
    LowPrecisionWarning,
    Optimizer,
    OptimizerStats,
)
from minnet.optim.prodigy import Prodigy
from minnet.optim.radam import RAdam
from minnet.optim.rmsprop import RMSprop
from minnet.optim.rprop import Rprop
from minnet.optim.schedule_free_adamw import ScheduleFreeAdamW
from minnet.optim.sgd import SGD
from minnet.optim.signsgd import SignSGD
from minnet.optim.signum import Signum
from minnet.optim.sparse_adam import SparseAdam
from minnet.optim.yogi import Yogi

__all__ = [
    "Optimizer",
    "OptimizerStats",
    "AdamStats",
    "EpsWarning",
    "LowPrecisionWarning",
    "Adam",
    "AdamW",
    "SGD",
    "RMSprop",
    "Adagrad",
    "NAdam",
    "RAdam",
    "AdaBelief",
    "Lion",
    "Adamax",
    "Adadelta",
    "Rprop",
    "ASGD",
    "Yogi",
    "ADOPT",
    "Adan",
    "AdEMAMix",
    "Ftrl",
    "SignSGD",
    "Signum",
    "Lamb",
    "Adafactor",
    "Muon",
    "Lars",
    "SparseAdam",
    "LBFGS",
    "OptimisticAdam",
    "NoisySGD",
    "ScheduleFreeAdamW",
    "Prodigy",
    "Novograd",
    "Fromage",
    "EPS_MODES",
    "AMSGRAD_MAX_MODES",
    "lr_scheduler",
]

"""minnet: a small, fast, from-scratch neural-network framework that shows what Adam's eps does.

``minnet.nn`` has the layers and losses (hand-written forward and backward passes), and
``minnet.optim`` the optimizers (SGD, Adam/AMSGrad, AdamW), each one fused Numba kernel;
``minnet.save`` and ``minnet.load`` write and read checkpoints atomically and safely
(``minnet.checkpoint``).
``minnet.lab`` is the epsilon lab (scenarios, sweeps, plots), also run as ``minnet sweep``.
"""

from minnet import nn, optim
from minnet.checkpoint import CheckpointError, load, save

__all__ = ["nn", "optim", "save", "load", "CheckpointError"]
__version__ = "0.1.0"

"""minnet: a small, fast, from-scratch neural-network framework that shows what Adam's eps does.

``minnet.nn`` has the layers and losses (hand-written forward and backward passes), and
``minnet.optim`` the optimizers (SGD, Adam/AMSGrad, AdamW, RMSprop, Adagrad, ... each one fused
Numba kernel) and ``minnet.optim.lr_scheduler``; ``minnet.save`` and ``minnet.load`` write and
read checkpoints atomically and safely (``minnet.checkpoint``). ``minnet.data`` has
``TensorDataset`` and ``DataLoader``; ``minnet.manual_seed`` seeds the default generator
(``minnet.random``).
``minnet.set_num_threads`` / ``minnet.get_num_threads`` fix or read the matrix products' thread
count (by default read from the machine, see ``minnet.threads``).
``minnet.lab`` is the epsilon lab (scenarios, sweeps, plots), also run as ``minnet sweep``.
"""

from minnet import data, nn, optim, testing, threads
from minnet.checkpoint import CheckpointError, load, save
from minnet.nn.grad_mode import no_grad
from minnet.random import get_rng_state, manual_seed, set_rng_state
from minnet.threads import get_num_threads, set_num_threads

__all__ = [
    "nn",
    "optim",
    "data",
    "manual_seed",
    "get_rng_state",
    "set_rng_state",
    "testing",
    "save",
    "load",
    "CheckpointError",
    "no_grad",
    "threads",
    "set_num_threads",
    "get_num_threads",
]
__version__ = "0.1.0"

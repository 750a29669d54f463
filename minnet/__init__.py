"""minnet: a small, fast, from-scratch neural-network framework that shows what Adam's eps does.

``minnet.nn`` has the layers and losses (hand-written forward and backward passes), and
``minnet.optim`` the Adam/AMSGrad optimizer built on one fused Numba kernel.
"""

from minnet import nn, optim

__all__ = ["nn", "optim"]
__version__ = "0.1.0"

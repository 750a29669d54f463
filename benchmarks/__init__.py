"""minnet's benchmark suite: ``python -m benchmarks`` (see ``python -m benchmarks --help``).

It times the seed training step (64x1000 -> 100 -> ReLU -> 10, MSE sum, AMSGrad) for minnet, a
plain-NumPy reference, PyTorch (default and ``fused=True`` Adam) and jitted JAX + optax when they
are installed; the optimizer step alone against PyTorch's fused AMSGrad and, over sizes, against a
no-arithmetic loop with the same memory streams; every optimizer of ``minnet.optim`` alone at
10^5, 10^6 and 10^7 parameters against PyTorch's fastest CPU implementation (or optax's jitted
update where PyTorch has none; ``--only optimizers`` runs this table alone); and the
whole-process start-up of the seed example. Each implementation
runs in its own worker process so that one library's idle thread pool cannot slow another's; the
parent alternates the workers over several rounds and reports medians and spread.

Nothing here runs in ``make test``.
"""

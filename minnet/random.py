"""minnet's default random generator, as ``torch.random``'s default generator.

Whatever draws random numbers without being given an ``rng`` draws them from one process-wide
``np.random.Generator``: :func:`default_generator`. It starts from fresh OS entropy;
:func:`manual_seed` replaces it by ``np.random.default_rng(seed)``, so that everything drawn after
it (initial weights, shuffled batch orders, dropout masks) repeats from run to run::

    minnet.manual_seed(0)
    model = minnet.nn.Sequential(minnet.nn.Linear(64, 10))   # the same weights every run
    loader = minnet.data.DataLoader(dataset, batch_size=64, shuffle=True)  # the same order

Code that takes an ``rng`` argument resolves it with :func:`resolve_rng`: an int seed gives a new
``np.random.Generator`` of its own, a Generator is used as it is, and ``None`` means the default
generator (at the moment of drawing).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "default_generator", "manual_seed", "resolve_rng", "seeded_default_generator",
    "get_rng_state", "set_rng_state",
]  # fmt: skip

_default: np.random.Generator = np.random.default_rng()
_local = threading.local()  # a per-thread override, set only by seeded_default_generator


def default_generator() -> np.random.Generator:
    """The process-wide generator used when no ``rng`` is given (see :func:`manual_seed`)."""
    override = getattr(_local, "generator", None)
    return _default if override is None else override


@contextmanager
def seeded_default_generator(seed: int) -> Iterator[np.random.Generator]:
    """Within the block, in this thread only, the default generator is
    ``np.random.default_rng(seed)``; the one before comes back after it.

    The epsilon lab trains each run under this, so that runs sharing a process on several
    threads (a Dask worker) each draw from their own generator, seeded by their spec alone.
    """
    saved = getattr(_local, "generator", None)
    _local.generator = np.random.default_rng(seed)
    try:
        yield _local.generator
    finally:
        _local.generator = saved


def manual_seed(seed: int) -> np.random.Generator:
    """Reset the default generator to ``np.random.default_rng(seed)`` and return it.

    As ``torch.manual_seed``: every later draw that was given no ``rng`` (``Linear``'s initial
    weights, ``DataLoader(shuffle=True)``, ``Dropout``) comes from this generator, in call order.

    Args:
        seed: a non-negative int.
    """
    global _default
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed expected an int seed, got {seed!r}")
    if seed < 0:
        raise ValueError(f"manual_seed expected a seed >= 0, got {seed}")
    gen = np.random.default_rng(int(seed))
    if getattr(_local, "generator", None) is not None:
        _local.generator = gen  # inside seeded_default_generator: this thread's generator
    else:
        _default = gen
    return gen


def resolve_rng(rng: np.random.Generator | int | None, where: str = "rng") -> np.random.Generator:
    """The generator an ``rng`` argument stands for.

    ``None`` gives :func:`default_generator`, an int seed gives ``np.random.default_rng(seed)``,
    a Generator is returned as it is. Anything else raises ``TypeError`` naming ``where`` (e.g.
    ``"DataLoader"``).
    """
    if rng is None:
        return default_generator()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"{where}: rng must be a numpy Generator, an int seed or None, got {rng!r}")
    if rng < 0:
        raise ValueError(f"{where}: rng seed must be >= 0, got {rng}")
    return np.random.default_rng(int(rng))


def get_rng_state(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """The state of ``generator`` (default: the default generator), as PyTorch's
    ``torch.get_rng_state()``: a dict of plain ints and strings that ``minnet.save`` stores;
    :func:`set_rng_state` with it makes the generator repeat the same draws (dropout masks,
    shuffled orders, initial weights) bit for bit."""
    gen = default_generator() if generator is None else generator
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"get_rng_state: expected a numpy Generator, got {type(gen).__name__}")
    return copy.deepcopy(gen.bit_generator.state)


def set_rng_state(state: dict[str, Any], generator: np.random.Generator | None = None) -> None:
    """Restore a state from :func:`get_rng_state` into ``generator`` (default: the default
    generator, in place, so every module holding it sees the restored state)."""
    gen = default_generator() if generator is None else generator
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"set_rng_state: expected a numpy Generator, got {type(gen).__name__}")
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise TypeError("set_rng_state: expected a state from minnet.get_rng_state()")
    if state["bit_generator"] != type(gen.bit_generator).__name__:
        raise ValueError(
            f"set_rng_state: the state is of a {state['bit_generator']} generator, this one is "
            f"{type(gen.bit_generator).__name__}"
        )
    gen.bit_generator.state = copy.deepcopy(state)

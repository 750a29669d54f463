r"""Noisy SGD (Neelakantan et al. 2015, "Adding Gradient Noise Improves Learning for Very Deep
Networks"): the class, its element rule and a plain-NumPy reference, side by side. optax's
``optax.noisy_sgd`` (optax 0.2.8: ``add_noise(eta, gamma, key)`` then
``scale_by_learning_rate``).

SGD on the gradient plus Gaussian noise whose variance decays with the step count. There is no
eps. The update is in :class:`NoisySGD`'s docstring, in optax's order of operations.

**The noise is not optax's.** optax draws it with JAX's PRNG (``jax.random.split`` of its key
every step, ``jax.random.normal``), which minnet does not reproduce. minnet draws standard
normal numbers with NumPy Generators (:mod:`minnet.random`) and applies optax's variance
schedule to them; the element rule gets the draw through the state array ``noise``, which
:meth:`NoisySGD._prepare_run` fills before each step (the kernel cannot draw). The parity
fixture therefore records optax's trajectory *and* the standard normal numbers optax drew
(computed in the fixture script with optax's own key splitting) and replays them through the
documented ``noise_fn`` hook: it proves the formula and the variance schedule given the same
draws, not the draws themselves.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once (the draw is stored in the state dtype); ``rounding="per_op"`` is refused: PyTorch has no
noisy SGD.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet import random as _random
from minnet.nn import Parameter
from minnet.optim._flat import FlatBuffers
from minnet.optim._kernel import Rule, element
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_lr,
    check_nonnegative,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["NoisySGD", "noise_std"]

#: ``noise_fn(step, index, size) -> array``: the standard normal draw of parameter ``index``
#: (its state-dict index) for step ``step`` (from 1), ``size`` numbers in the parameter's
#: flattened (C) order.
NoiseFn = Callable[[int, int, int], Any]


class NoisySGDScalars(NamedTuple):
    """Per-step constants of the noisy SGD update, already in the arrays' dtype."""

    std: np.floating  # sqrt(eta / t**gamma)
    neg_lr: np.floating  # -lr


def noise_std(eta: float, gamma: float, step: int) -> float:
    """The noise's standard deviation at step ``step`` (from 1), optax's
    ``sqrt(eta / count**gamma)`` in float64: its variance is ``eta / step**gamma`` (optax's
    docstring writes ``eta / (1 + t)**gamma`` with ``t`` counted from 0)."""
    return float(np.sqrt(eta / float(step) ** gamma))


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); no options, no per_op
    model (refused by the class). ``state[0]`` is this step's standard normal draw."""
    z = state[0]
    delta = (g + s.std * z) * s.neg_lr
    return p, p + delta, (z,), delta, delta, False, g


#: Noisy SGD's element rule (no second moment).
RULE = Rule(update)


def noisy_sgd_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: NoisySGDScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    (noise,) = state
    with np.errstate(all="ignore"):
        param += (grad + s.std * noise) * s.neg_lr


def _check_seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}: {seed!r}")
    if seed < 0:
        raise ValueError(f"Invalid seed value: {seed}")
    return int(seed)


class NoisySGD(Optimizer):
    r"""Noisy SGD with optax's formula and variance schedule (``optax.noisy_sgd``), as one
    fused Numba kernel; the noise is drawn by NumPy, not by JAX (module docstring).

    With ``t`` the step count (1 on the first call of :meth:`step`) and ``z`` a standard normal
    draw per coordinate and step (the state ``noise``):

    .. code-block:: text

        std   = sqrt(eta / t**gamma)                 (variance eta / t**gamma)
        param = param + (g + std * z) * (-lr)

    There is **no eps**: ``stats.eps_dominated`` is 0, :meth:`eps_compared_with` and
    :meth:`~minnet.optim.optimizer.Optimizer.multipliers` are ``None``. optax's docstring writes
    the variance ``eta / (1 + t)**gamma`` with ``t`` counted from 0; its code is
    ``sqrt(eta / count**gamma)`` with the count from 1, which is the same.

    **Where the draws come from.** ``seed`` an int (default 0, as optax's ``key=0``): the draw of
    parameter ``i`` (its state-dict index) at step ``t`` is
    ``np.random.default_rng([seed, i, t]).standard_normal(size)``, a pure function of the seed,
    the parameter and its step count, as optax's draw is a pure function of its key and count
    (but not the same numbers: JAX's PRNG is not replayed). A run resumed from a state dict
    therefore draws what the uninterrupted run drew, and the pool's split of the buffer does not
    matter. ``seed=None``: every draw comes from :func:`minnet.random.default_generator` in
    order (reproducible after :func:`minnet.manual_seed`, not across a resume). ``noise_fn``
    replaces both: ``noise_fn(step, index, size)`` returns the standard normal numbers (the
    parity test passes optax's recorded draws this way). With ``eta = 0`` nothing is drawn.
    ``seed`` and ``noise_fn`` belong to the optimizer, not to a parameter group, and are not in
    the state dict: create the optimizer that loads a checkpoint with the same ``seed``.

    The ``noise`` state holds each parameter's latest draw (in the state dtype). It is written
    before ``check_finite``'s dry run, which sees the step's own noise; a step that it refuses
    puts the previous draws back (with ``seed=None`` the default generator has still advanced;
    with an int ``seed`` the retried step draws the same numbers).

    Defaults: optax's ``noisy_sgd(learning_rate, eta=0.01, gamma=0.55, key=None, *,
    seed=None)`` has no default learning rate (its ``key`` defaults to 0 with a warning);
    minnet's ``lr=1e-3``. PyTorch and Keras 3 have no noisy SGD.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``1e-3``.
        eta: the noise variance at step 1, ``>= 0``. Default ``0.01``.
        gamma: the decay exponent of the variance, ``>= 0``. Default ``0.55``.
        seed: an int ``>= 0`` (counter-based draws, above) or ``None`` (minnet's default
            generator). Default ``0``.
        noise_fn: ``noise_fn(step, index, size) -> array`` of ``size`` standard normal numbers,
            or ``None`` (draw from ``seed``). Default ``None``.
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no noisy SGD whose op-by-op rounding it would follow.

    Raises:
        ValueError: on an invalid hyperparameter (PyTorch's message style; NaN is rejected):
            ``Invalid learning rate: ...``, ``Invalid eta value: ...``, ``Invalid gamma value:
            ...``, ``Invalid seed value: ...``.
        TypeError: on a hyperparameter of the wrong type, or an unknown keyword.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        eta: float = 0.01,
        gamma: float = 0.55,
        *,
        seed: int | None = 0,
        noise_fn: NoiseFn | None = None,
        **options: Unpack[Options],
    ) -> None:
        if noise_fn is not None and not callable(noise_fn):
            raise TypeError(f"noise_fn must be callable or None, got {type(noise_fn).__name__}")
        self.seed = _check_seed(seed)
        self.noise_fn = noise_fn
        super().__init__(params, dict(lr=lr, eta=eta, gamma=gamma), **options)

    rule = RULE
    reference = staticmethod(noisy_sgd_reference)
    checks = {"lr": check_lr, "eta": partial(check_nonnegative, "eta"),
              "gamma": partial(check_nonnegative, "gamma")}  # fmt: skip

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"noise": 0.0}

    def _scalars(self, group: Mapping[str, Any], dtype: np.dtype, step: int) -> NoisySGDScalars:
        std = noise_std(group["eta"], group["gamma"], step)
        return cast_scalars(NoisySGDScalars, dtype, std, -group["lr"])

    def _draw(self, step: int, index: int, size: int) -> np.ndarray:
        """The standard normal draw of parameter ``index`` for step ``step`` (class docstring)."""
        if self.noise_fn is not None:
            z = np.asarray(self.noise_fn(step, index, size), dtype=np.float64).reshape(-1)
            if z.shape != (size,):
                raise ValueError(f"noise_fn returned {z.size} numbers for a parameter of {size}")
            return z
        if self.seed is None:
            return _random.default_generator().standard_normal(size)
        return np.random.default_rng([self.seed, index, step]).standard_normal(size)

    def _prepare_run(self, group: Mapping[str, Any], flat: FlatBuffers, js: list[int],
                     step: int) -> Callable[[], None] | None:  # fmt: skip
        """Draw this step's noise into the ``noise`` state of parameters ``js``; with
        ``check_finite``, return what puts the previous draws back if the step is refused."""
        if group["eta"] == 0:  # std = 0: the draw would be multiplied by 0
            return None
        noise = flat.state["noise"]
        lo, hi = flat.offsets[js[0]], flat.offsets[js[-1]] + flat.sizes[js[-1]]
        saved = noise[lo:hi].copy() if self.check_finite else None
        for j in js:
            start, size = flat.offsets[j], flat.sizes[j]
            noise[start : start + size] = self._draw(step, self._index[id(flat.params[j])], size)
        if saved is None:
            return None

        def restore() -> None:
            noise[lo:hi] = saved

        return restore

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "noisy SGD"

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``None``: the update has no eps."""
        return None

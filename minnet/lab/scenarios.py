"""Training problems for the epsilon lab.

Every scenario starts from the seed problem of ``examples/seed_example.py``::

    x: (64, 1000) standard normal    y: (64, 10) standard normal
    Linear(1000, 100) -> ReLU -> Linear(100, 10),  MSELoss(reduction="sum"),  lr = 1e-4

and can add two conditions under which epsilon decides everything:

* ``zero_features=K``: input features ``0..K-1`` are zero in every sample, so the first layer's
  weight columns ``0..K-1`` get an exactly zero gradient at every step. Their moments stay 0, and
  Adam's update for them is ``0 / (sqrt(0) + eps)``: 0 for any ``eps > 0``, ``0/0 = NaN`` for
  ``eps = 0``. A NaN weight then multiplies its zero input, and ``NaN * 0 = NaN``, so every hidden
  unit, the output and the loss become NaN from the next step on.
* ``dead_units=K``: hidden units ``0..K-1`` start dead: their bias is set to ``DEAD_BIAS`` (-1000),
  far below any pre-activation the data can produce, so ReLU outputs 0 for every sample. Their
  incoming weights and bias and their outgoing weight column get zero gradient at every step, with
  the same consequence as above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

import minnet
from minnet.dtypes import as_dtype

__all__ = ["DEAD_BIAS", "SEED_SHAPE", "Scenario", "SeedProblem", "make_problem"]

#: (N, D_in, H, D_out) of the seed problem.
SEED_SHAPE = (64, 1000, 100, 10)
#: Bias given to the hidden units that ``dead_units=K`` kills (pre-activations are O(1)).
DEAD_BIAS = -1000.0

_NAME_RE = re.compile(r"^(zero_features|dead_units)=(\d+)$")


@dataclass(frozen=True)
class Scenario:
    """Which variant of the seed problem to train.

    Attributes:
        zero_features: number of input features (of 1000) that are zero in every sample.
        dead_units: number of hidden units (of 100) that start dead.

    ``str(scenario)`` (also :attr:`name`) is ``"seed"``, ``"zero_features=K"``,
    ``"dead_units=K"`` or ``"zero_features=K,dead_units=J"``; :meth:`parse` reads it back.
    """

    zero_features: int = 0
    dead_units: int = 0

    def __post_init__(self) -> None:
        _, d_in, hidden, _ = SEED_SHAPE
        for field, value, top in (
            ("zero_features", self.zero_features, d_in),
            ("dead_units", self.dead_units, hidden),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Scenario: {field} must be an int, got {value!r}")
            if not 0 <= value <= top:
                raise ValueError(f"Scenario: {field} must be in [0, {top}], got {value}")

    @property
    def name(self) -> str:
        """The scenario's label, as written in the ``scenario`` column of ``runs.csv``."""
        parts = []
        if self.zero_features:
            parts.append(f"zero_features={self.zero_features}")
        if self.dead_units:
            parts.append(f"dead_units={self.dead_units}")
        return ",".join(parts) or "seed"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> Scenario:
        """Inverse of :attr:`name`: ``Scenario.parse("zero_features=100")``."""
        if name == "seed":
            return cls()
        kwargs: dict[str, int] = {}
        for part in name.split(","):
            match = _NAME_RE.match(part.strip())
            if match is None or match.group(1) in kwargs:
                raise ValueError(
                    f"unknown scenario {name!r}: expected 'seed', 'zero_features=K', "
                    "'dead_units=K' or both joined by a comma"
                )
            kwargs[match.group(1)] = int(match.group(2))
        return cls(**kwargs)


@dataclass
class SeedProblem:
    """The seed problem of a scenario, built: a model, its data and its loss, ready to train."""

    model: minnet.nn.Sequential
    x: np.ndarray
    y: np.ndarray
    loss_fn: minnet.nn.MSELoss


def make_problem(
    scenario: Scenario | str = "seed", *, seed: int = 0, dtype: str | np.dtype = "float32"
) -> SeedProblem:
    """Build the seed problem for ``seed`` and apply ``scenario`` (see the module docstring).

    Data and initial weights come from ``np.random.default_rng(seed)`` in the order of
    ``examples/seed_example.py`` (x, y, then the two layers), so scenario ``"seed"`` with
    ``dtype="float32"`` is exactly that example's problem. ``dtype`` may be ``"float16"`` or
    ``"bfloat16"`` too: the same float32 data and initial weights, rounded to it (round to
    nearest even), and a model of that dtype (16-bit layers compute in float32).
    """
    if isinstance(scenario, str):
        scenario = Scenario.parse(scenario)
    dt = as_dtype(dtype, "dtype")
    draw = dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
    n, d_in, hidden, d_out = SEED_SHAPE
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in), dtype=draw).astype(dt, copy=False)
    y = rng.standard_normal((n, d_out), dtype=draw).astype(dt, copy=False)
    model = minnet.nn.Sequential(
        minnet.nn.Linear(d_in, hidden, rng=rng, dtype=dt),
        minnet.nn.ReLU(),
        minnet.nn.Linear(hidden, d_out, rng=rng, dtype=dt),
    )
    if scenario.zero_features:
        x[:, : scenario.zero_features] = 0
    if scenario.dead_units:
        model[0].bias.data[: scenario.dead_units] = DEAD_BIAS
    return SeedProblem(model=model, x=x, y=y, loss_fn=minnet.nn.MSELoss(reduction="sum"))

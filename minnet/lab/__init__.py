"""The epsilon lab: scenarios, sweeps over an optimizer's ``eps`` and its placements, and plots.

* :mod:`minnet.lab.scenarios` builds the training problems (the seed problem, and variants with
  input features that are always zero or hidden units that start dead);
* :mod:`minnet.lab.problem` wraps a problem of your own (a model factory, data, a loss and a
  metric) as a :class:`Problem` that sweeps like a scenario; :mod:`minnet.lab.digits` holds the
  built-in ``digits`` and ``digits_cnn`` classifiers and :mod:`minnet.lab.chars` the
  ``char_transformer`` language model (the list of built-in problems is
  :data:`minnet.lab.digits.PROBLEMS`);
* :mod:`minnet.lab.runner` trains one run per (eps, variant, seed, scenario) on local processes or a
  Dask cluster and returns a tidy :class:`~minnet.lab.runner.Table` (one row per run and step);
* :mod:`minnet.lab.family` lists the optimizers it knows (placements, learning rates);
* :mod:`minnet.lab.plots` draws the figures from that table (also from its CSV).

The command line front end is ``minnet sweep`` / ``minnet plot`` (:mod:`minnet.cli`).
"""

from minnet.lab.problem import Problem, accuracy
from minnet.lab.runner import (
    RunSpec,
    SweepInterrupted,
    SweepOutputError,
    SweepResult,
    Table,
    grid,
    run,
    sweep,
)
from minnet.lab.scenarios import Scenario, SeedProblem, make_problem

__all__ = [
    "Problem",
    "SeedProblem",
    "accuracy",
    "RunSpec",
    "Scenario",
    "SweepInterrupted",
    "SweepOutputError",
    "SweepResult",
    "Table",
    "grid",
    "make_problem",
    "run",
    "sweep",
]

"""The digits classifier: examples/digits.py and the lab's digits scenario (real runs)."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pytest

import minnet

pytest.importorskip("sklearn")
pytestmark = pytest.mark.skipif(
    not all(hasattr(minnet.nn, n) for n in ("CrossEntropyLoss", "Tanh", "Dropout")),
    reason="needs minnet.nn.CrossEntropyLoss, Tanh and Dropout",
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.py"


def test_digits_example_reaches_97_percent() -> None:
    main = runpy.run_path(str(EXAMPLE))["main"]
    assert main([]) >= 0.97


def test_digits_scenario_eps_zero_ends_nan_at_chance_while_1e_8_trains() -> None:
    from minnet.lab import RunSpec, run
    from minnet.lab.digits import load_digits_split

    epochs = 3
    results = {e: run(RunSpec(eps=e, scenario="digits", steps=epochs * 23)) for e in (0.0, 1e-8)}
    _, _, _, y_test = load_digits_split()
    nan_run, good = results[0.0], results[1e-8]
    n_params = 64 * 128 + 128 + 128 * 10 + 10
    assert np.isnan(nan_run.loss[1:]).all() and nan_run.nonfinite[0] > 0
    # Step 1: exactly the coordinates with v = 0 (a zero gradient) end NaN; step 2: all of them.
    assert nan_run.nonfinite[0] == round(nan_run.eps_dominated[0] * n_params)
    assert (nan_run.nonfinite[1:] == n_params).all()
    x_train = load_digits_split()[0]
    assert nan_run.nonfinite[0] >= 128 * int((x_train.max(axis=0) == 0).sum()) > 0
    final_nan = nan_run.metric[~np.isnan(nan_run.metric)][-1]
    assert final_nan == pytest.approx(float(np.mean(y_test == 0)))  # chance: argmax(NaN) = 0
    assert np.isfinite(good.loss).all() and (good.nonfinite == 0).all()
    assert good.loss[-1] < 0.5 * good.loss[0]
    assert good.metric[~np.isnan(good.metric)][-1] > 0.8  # after 3 epochs; chance is 0.1
    assert math.isclose(nan_run.loss[0], good.loss[0])  # same seed, same first batch and model

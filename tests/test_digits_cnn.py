"""The digits CNN: examples/digits_cnn.py and the lab's digits_cnn scenario (short real runs)."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from minnet.cli import main as cli_main  # noqa: E402
from minnet.lab import RunSpec, run  # noqa: E402
from minnet.lab.runner import SweepResult  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn.py"


def test_digits_cnn_example_learns_in_one_epoch(capsys: pytest.CaptureFixture) -> None:
    main = runpy.run_path(str(EXAMPLE))["main"]
    accuracy = main(["--epochs", "1", "--seed", "0"])
    assert accuracy > 0.7  # 23 steps from chance (0.1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("epoch   1  last batch loss") and "test accuracy" in lines[-1]


def test_digits_cnn_scenario_trains_with_eps_1e_8_and_is_nan_with_eps_0() -> None:
    good = run(RunSpec(eps=1e-8, scenario="digits_cnn", steps=12))
    assert np.isfinite(good.loss).all() and (good.nonfinite == 0).all()
    assert good.loss[-1] < good.loss[0]
    bad = run(RunSpec(eps=0.0, scenario="digits_cnn", steps=3))
    # exactly the coordinates with a zero gradient at step 1 turn NaN, then everything
    assert 0 < bad.nonfinite[0] and np.isnan(bad.loss[1:]).all()


def test_minnet_sweep_runs_the_digits_cnn_scenario(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "--scenarios", "digits_cnn", "--eps", "0", "1e-8", "--amsgrad", "off",
            "--seeds", "1", "--steps", "3", "--workers", "1", "--no-progress", "--no-plots",
            "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    result = SweepResult.read(out)
    table = result.run_table()
    assert set(table["scenario"]) == {"digits_cnn"}
    assert sorted(table["eps"]) == [0.0, 1e-8]
    assert len(result.runs) == 2 * 3

"""The scenario figure's metric panel takes the metric's name, range and chance level from the
Problem (``metrics.json`` next to ``runs.csv``), or from the values, and draws any metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import minnet
import minnet.lab.plots as plots
from minnet.cli import main
from minnet.lab import Problem, SweepResult, accuracy, grid, sweep


def _features() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)


def regression_data() -> tuple[np.ndarray, np.ndarray]:
    x = _features()
    return x, (50.0 + x @ np.array([[1.0], [2.0], [-1.0], [0.5]])).astype(np.float32)


def binary_data() -> tuple[np.ndarray, np.ndarray]:
    x = _features()
    return x, (x[:, 0] > 0).astype(np.int64)


def rmse(output: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((output - target) ** 2)))


def linear(n_out: int) -> minnet.nn.Module:
    return minnet.nn.Sequential(minnet.nn.Linear(4, n_out))


def regression(**kw: object) -> Problem:
    return Problem("regress", model=lambda: linear(1), data=regression_data,
                   loss_fn=minnet.nn.MSELoss(), metric=rmse, epochs=3, lr=1e-3,
                   **kw)  # type: ignore[arg-type]  # fmt: skip


def binary() -> Problem:
    return Problem("binary", model=lambda: linear(2), data=binary_data,
                   loss_fn=minnet.nn.CrossEntropyLoss(), metric=accuracy, epochs=3, lr=1e-2)


def _metric_axes(result: SweepResult, scenario: str, path: Path, monkeypatch) -> object:
    figures: list[Figure] = []
    finish = plots._finish

    def keep(fig: Figure, p: Path) -> Path:
        figures.append(fig)
        return finish(fig, p)

    monkeypatch.setattr(plots, "_finish", keep)
    assert plots.plot_scenario(result, path, scenario) == path
    assert len(figures[-1].axes) == 3
    return figures[-1].axes[2]


def _metric_values(result: SweepResult) -> np.ndarray:
    m = result.runs["metric"]
    return m[np.isfinite(m)]


def test_a_regression_metric_is_drawn_inside_its_panel(tmp_path: Path, monkeypatch) -> None:
    result = sweep(grid([0.0, 1e-8], amsgrad=[False], seeds=[0], scenarios=[regression()]),
                   workers=1)  # fmt: skip
    values = _metric_values(result)
    assert len(values) and values.min() > 40  # an RMSE about 51: outside 0..1
    ax = _metric_axes(result, "regress", tmp_path / "s.png", monkeypatch)
    low, high = ax.get_ylim()
    assert low < values.min() and values.max() < high and high - low < 10 * np.ptp(values) + 5
    assert ax.get_ylabel() == "rmse on the evaluation data (end of each epoch)"
    assert ax.get_title() == "rmse"
    assert "chance" not in ax.get_title()
    assert result.metrics == {"regress": {"name": "rmse", "range": None, "chance": None}}


def test_accuracy_of_two_classes_has_chance_one_half(tmp_path: Path, monkeypatch) -> None:
    result = sweep(grid([1e-8], amsgrad=[False], seeds=[0], scenarios=[binary()]), workers=1)
    ax = _metric_axes(result, "binary", tmp_path / "s.png", monkeypatch)
    assert ax.get_title() == "accuracy (dashed: chance level 0.5)"
    low, high = ax.get_ylim()
    assert low < 0 < 1 < high
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [tuple(line.get_ydata()) for line in dashed] == [(0.5, 0.5)]
    assert result.metrics == {"binary": {"name": "accuracy", "range": [0.0, 1.0], "chance": 0.5}}


def test_metric_description_round_trips_and_a_bare_csv_draws_from_the_values(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    problem = regression(metric_name="RMSE (test)", metric_range=(0.0, 60.0), metric_chance=51)
    result = sweep(grid([1e-8], amsgrad=[False], seeds=[0], scenarios=[problem]), workers=1)
    result.write(tmp_path)
    back = SweepResult.read(tmp_path)
    assert back.metrics == result.metrics == {
        "regress": {"name": "RMSE (test)", "range": [0.0, 60.0], "chance": 51.0}
    }
    ax = _metric_axes(back, "regress", tmp_path / "a.png", monkeypatch)
    assert ax.get_title() == "RMSE (test) (dashed: chance level 51)"
    assert ax.get_ylim()[0] < 0 and ax.get_ylim()[1] > 60
    # Without metrics.json (a sweep written before it): a plain "metric" over its values.
    (tmp_path / "metrics.json").unlink()
    ax = _metric_axes(SweepResult.read(tmp_path), "regress", tmp_path / "b.png", monkeypatch)
    values = _metric_values(result)
    low, high = ax.get_ylim()
    assert ax.get_title() == "metric" and 40 < low < values.min() <= values.max() < high < 60
    assert main(["plot", str(tmp_path)]) == 0
    assert "scenario_regress.png" in capsys.readouterr().out
    # A sweep without a Problem leaves no metrics.json behind in the directory it rewrites.
    (tmp_path / "metrics.json").write_text("{}")
    sweep(grid([1e-8], amsgrad=[False], seeds=[0], steps=2), workers=1).write(tmp_path)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric_name": ""}, "metric_name must be a non-empty str or None, got ''"),
        ({"metric_range": (1.0, 0.0)}, "metric_range must be (low, high) with finite low < high"),
        ({"metric_range": (0.0, float("inf"))}, "metric_range must be (low, high)"),
        ({"metric_chance": float("nan")}, "metric_chance must be a finite number or None"),
    ],
)
def test_problem_rejects_bad_metric_descriptions(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        regression(**kwargs)

"""``final_loss_vs_eps.png`` fits what was swept: every point inside the frame, a y range near the
data, and the eps=0 break named only when eps=0 was swept."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import minnet.lab.plots as plots
from minnet.lab import SweepResult, grid, sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _final_loss_figure(result: SweepResult, path: Path, monkeypatch: pytest.MonkeyPatch) -> Figure:
    figures: list[Figure] = []
    finish = plots._finish

    def keep(fig: Figure, p: Path) -> Path:
        figures.append(fig)
        return finish(fig, p)

    monkeypatch.setattr(plots, "_finish", keep)
    assert plots.plot_final_loss(result, path) == path
    assert path.read_bytes()[:8] == PNG_MAGIC
    return figures[0]


def _points(ax) -> np.ndarray:
    """The data points of the labelled lines (the medians), not the axis-break mark."""
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    xy = [np.column_stack(line.get_data()) for line in lines]
    xy = np.concatenate([p for p in xy if len(p)]).astype(float)
    return xy[np.isfinite(xy).all(axis=1) & (xy[:, 1] > 0)]


def _decades_inside(value: float, low: float, high: float) -> float:
    """How far (in decades) ``value`` sits inside ``[low, high]`` on a log axis."""
    return min(math.log10(value / low), math.log10(high / value))


@pytest.mark.parametrize(
    "eps, zero_in_label",
    [([1e-8], False), ([1e-8, 1.0], False), ([0.0, 1e-8, 1.0], True)],
)
def test_final_loss_plot_fits_the_sweep(
    eps: list[float], zero_in_label: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = sweep(grid(eps=eps, seeds=[0, 1], steps=5), workers=1)
    fig = _final_loss_figure(result, tmp_path / "final.png", monkeypatch)
    ax = fig.axes[0]
    xy = _points(ax)
    assert len(xy) == 2 * len(eps)  # Adam and AMSGrad, one median per eps
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for x, y in xy:
        assert _decades_inside(x, x0, x1) >= 0.3, (x, ax.get_xlim())
        assert _decades_inside(y, y0, y1) >= 0.3, (y, ax.get_ylim())
    finals = result.run_table()["final_loss"]
    # The y range spans the data plus about a decade, not five decades of empty space.
    assert math.log10(y1 / y0) <= math.log10(finals.max() / finals.min()) + 1.5
    label = ax.get_xlabel()
    assert label.startswith("eps (log scale")
    assert ("0 at the left" in label) == zero_in_label
    assert [t.get_text() for t in ax.get_xticklabels()][0] == ("0" if zero_in_label else "1e-8")

"""Every optimizer of a sweep gets the one-optimizer figures (loss curves, final loss,
eps-dominated, multipliers, scenarios), and what cannot be drawn is named."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import minnet.lab.plots as plots
from minnet.cli import main
from minnet.lab import grid, sweep

PER_OPTIMIZER = ("loss_curves", "final_loss_vs_eps", "eps_dominated", "multipliers",
                 "scenario_zero_features10")  # fmt: skip


def test_plot_all_draws_every_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = sweep(grid(eps=[1e-8, 1.0], amsgrad=[False], seeds=[0], steps=3,
                        optimizers=["rmsprop", "adagrad", "adadelta"],
                        scenarios=["seed", "zero_features=10"]), workers=1)  # fmt: skip
    titles: dict[str, str] = {}
    finish = plots._finish

    def keep(fig: Figure, path: Path) -> Path:
        titles[path.name] = fig.get_suptitle() or fig.axes[0].get_title()
        return finish(fig, path)

    monkeypatch.setattr(plots, "_finish", keep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every optimizer has eps: nothing is left out
        paths = plots.plot_all(result, tmp_path)
    names = {p.name for p in paths}
    # RMSprop is the reference (no Adam, first of the family with eps): the plain names.
    for optimizer, suffix in [("RMSprop", ""), ("Adagrad", "_adagrad"),
                              ("Adadelta", "_adadelta")]:
        for stem in PER_OPTIMIZER:
            name = f"{stem}{suffix}.png"
            assert name in names, (name, sorted(names))
            assert optimizer in titles[name], titles[name]
    assert "eps_atlas.png" in names


def test_optimizers_without_eps_are_named_as_left_out(tmp_path: Path, capsys) -> None:
    argv = ["sweep", "--optimizer", "adagrad", "sgd", "lion", "--eps", "1e-8", "1",
            "--amsgrad", "off", "--seeds", "1", "--steps", "3", "--workers", "1",
            "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ("minnet sweep: note: SGD, Lion have no eps: no loss-curve, final-loss, eps-dominated, "
            "variants or scenario figures (the runs are in eps_atlas.png)\n") in out
    assert (tmp_path / "loss_curves.png").exists()  # Adagrad's
    assert not list(tmp_path.glob("loss_curves_*.png"))
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "again")]) == 0
    assert "minnet plot: note: SGD, Lion have no eps" in capsys.readouterr().out

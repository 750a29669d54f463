"""``minnet.lab.grid``: an AMSGrad max without AMSGrad runs is refused; atan2 over eps warns."""

from __future__ import annotations

import warnings

import pytest

from minnet.lab import grid


@pytest.mark.parametrize("amsgrad_max", [["raw"], ["corrected", "paper"]])
def test_amsgrad_max_without_amsgrad_runs_is_refused(amsgrad_max: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        grid(eps=[1e-8], amsgrad=[False], amsgrad_max=amsgrad_max)
    assert str(info.value) == (
        f"grid: amsgrad_max={amsgrad_max} applies only to AMSGrad runs, and amsgrad=[False] has "
        "none; pass amsgrad=[True] or leave amsgrad_max out"
    )


def test_amsgrad_max_default_and_with_amsgrad_runs() -> None:
    assert {s.amsgrad_max for s in grid(eps=[1e-8], amsgrad=[False])} == {"raw"}
    specs = grid(eps=[1e-8], amsgrad=[False, True], amsgrad_max=["paper"], seeds=[0])
    assert [(s.amsgrad, s.amsgrad_max) for s in specs] == [(False, "raw"), (True, "paper")]


def test_atan2_over_several_eps_warns() -> None:
    with pytest.warns(UserWarning) as record:
        specs = grid(eps=[0, 1e-8, 1e-8, 1], eps_modes=["outside", "atan2"], seeds=[0])
    assert [str(w.message) for w in record] == [
        "eps_mode 'atan2' has no eps: its runs for eps 0, 1e-08, 1 are identical "
        "(same seed and scenario)"
    ]
    assert record[0].filename == __file__  # points at the caller
    assert sum(s.eps_mode == "atan2" for s in specs) == 2 * 4  # kept: Adam/AMSGrad x 4 eps


@pytest.mark.parametrize(
    "eps, modes", [([0, 1e-8, 1], ["outside", "hat", "inside"]), ([1e-8], ["atan2"])]
)
def test_no_warning_when_eps_matters_or_is_single(eps: list[float], modes: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grid(eps=eps, eps_modes=modes)

"""Every file minnet writes (CSV tables, checkpoints, plots) gets the mode the umask allows."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import minnet
from minnet.lab import SweepResult, grid, sweep
from minnet.lab.plots import plot_loss_curves


@pytest.fixture(scope="module")
def tiny_result() -> SweepResult:
    return sweep(grid(eps=[1e-8], amsgrad=[False], seeds=[0], steps=2), workers=1)


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_respect_the_umask(
    tmp_path: Path, umask: int, tiny_result: SweepResult
) -> None:
    expected = 0o666 & ~umask
    out = tiny_result.write(tmp_path / "sweep")
    minnet.save({"w": np.ones(3)}, tmp_path / "ckpt.npz")
    png = plot_loss_curves(tiny_result, tmp_path / "loss.png")
    assert png is not None
    written = [out / "runs.csv", out / "multipliers.csv", tmp_path / "ckpt.npz", png]
    modes = {p.name: oct(_mode(p)) for p in written}
    assert modes == {p.name: oct(expected) for p in written}
    # Rewriting over an existing file gives the same mode (the temporary file's mode wins).
    tiny_result.write(out)
    assert _mode(out / "runs.csv") == expected
    assert not list(out.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))

"""The seed example, end to end (as `make demo` runs it)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "seed_example.py"


def test_seed_example_prints_500_falling_losses(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 500
    steps, losses = zip(*(line.split() for line in lines))
    assert [int(s) for s in steps] == list(range(500))
    losses = [float(v) for v in losses]
    assert losses[0] > 300  # several hundred at the start
    assert losses[-1] < 1e-3


def test_seed_example_quiet_summary(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--steps", "20", "--seed", "3", "--quiet"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("steps=20 first_loss=")

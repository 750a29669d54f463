"""The ``minnet`` command: help, argparse-style errors (exit 2, no traceback), sweep and plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from minnet.cli import main
from minnet.lab.runner import SweepResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


@pytest.mark.parametrize(
    "argv, flags",
    [
        (["--help"], ["sweep", "plot"]),
        (["sweep", "--help"], ["--eps", "--eps-modes", "--amsgrad", "--amsgrad-max", "--seeds",
                               "--steps", "--lr", "--zero-features", "--dead-units", "--dtype",
                               "--state-dtype", "--rounding",
                               "--workers", "--scheduler", "--out", "--overwrite", "--resume",
                               "--no-plots",
                               "--no-progress"]),
        (["plot", "--help"], ["DIR", "--out"]),
    ],
)  # fmt: skip
def test_help_explains_every_flag(argv: list[str], flags: list[str], capsys) -> None:
    assert _exit_code(argv) == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "--eps", "-1"], "argument --eps: eps must be finite and >= 0, got '-1'"),
        (["sweep", "--eps", "nan"], "argument --eps: eps must be finite and >= 0, got 'nan'"),
        (["sweep", "--eps", "tiny"], "argument --eps: not a number: 'tiny'"),
        (["sweep", "--eps-modes", "middle"], "argument --eps-modes: invalid choice: 'middle'"),
        (["sweep", "--amsgrad", "yes"], "argument --amsgrad: invalid choice: 'yes'"),
        (["sweep", "--amsgrad-max", "max"], "argument --amsgrad-max: invalid choice: 'max'"),
        (["sweep", "--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
        (["sweep", "--steps", "1.5"], "argument --steps: not an integer: '1.5'"),
        (["sweep", "--lr", "0"], "argument --lr: must be finite and > 0, got '0'"),
        (["sweep", "--zero-features", "1001"],
         "argument --zero-features: must be in [0, 1000], got 1001"),
        (["sweep", "--dead-units", "-1"], "argument --dead-units: must be in [0, 100], got -1"),
        (["sweep", "--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
        (["sweep", "--state-dtype", "int8"], "argument --state-dtype: invalid choice: 'int8'"),
        (["sweep", "--rounding", "stochastic"],
         "argument --rounding: invalid choice: 'stochastic'"),
        (["sweep", "--workers", "0"], "argument --workers: must be >= 1, got 0"),
        (["sweep", "--scheduler", "localhost"],
         "--scheduler must look like tcp://HOST:PORT, got 'localhost'"),
        (["sweep", "--bogus"], "unrecognized arguments: --bogus"),
        (["plot", "/nonexistent/dir"],
         "/nonexistent/dir/runs.csv not found: DIR must hold a 'minnet sweep' output"),
        ([], "the following arguments are required: {sweep,plot}"),
        (["sweep", "--resume"], "--resume needs the --out DIR of the sweep to resume"),
        (["sweep", "--resume", "--overwrite", "--out", "x"],
         "--resume keeps the finished runs and --overwrite deletes them: pass one"),
        (["sweep", "--amsgrad", "off", "--amsgrad-max", "raw"],
         "--amsgrad-max applies only to AMSGrad runs, and --amsgrad off trains none"),
        (["sweep", "--amsgrad", "off", "--amsgrad-max", "corrected", "paper"],
         "--amsgrad-max applies only to AMSGrad runs, and --amsgrad off trains none"),
    ],
)  # fmt: skip
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    # argparse reports unknown flags from the top-level parser, the rest from the subcommand's.
    prog = "minnet" if not argv or "unrecognized" in message else f"minnet {argv[0]}"
    # One line: the error and where the usage is; the usage block itself stays on --help.
    assert err.count("\n") == 1 and err.endswith(f" (see '{prog} --help')\n"), err
    assert err.startswith(f"{prog}: error: ")
    assert message in err
    assert "usage:" not in err and "Traceback" not in err


def test_atan2_with_several_eps_warns_that_the_runs_are_identical(tmp_path: Path, capsys) -> None:
    argv = ["sweep", "--eps", "0", "1e-8", "1", "--eps-modes", "atan2", "--amsgrad", "off",
            "--seeds", "1", "--steps", "3", "--workers", "1", "--no-progress", "--no-plots",
            "--out", str(tmp_path / "a")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == (
        "minnet sweep: warning: eps_mode 'atan2' has no eps: its runs for eps 0, 1e-08, 1 are "
        "identical (same seed and scenario)\n"
    )
    info = SweepResult.read(tmp_path / "a").run_table()
    assert len(info) == 3 and len(set(info["final_loss"].tolist())) == 1  # what the warning says
    # One eps, or atan2 not swept: no warning.
    for extra in (["--eps", "1e-8", "--eps-modes", "atan2"], ["--eps", "0", "1"]):
        argv = ["sweep", *extra, "--amsgrad", "on", "--amsgrad-max", "paper", "--seeds", "1",
                "--steps", "2", "--workers", "1", "--no-progress", "--no-plots",
                "--out", str(tmp_path / extra[-1])]  # fmt: skip
        assert main(argv) == 0
        assert capsys.readouterr().err == ""


def test_bad_flag_from_the_real_command_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "minnet", "sweep", "--steps", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "minnet sweep: error: argument --steps: must be >= 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sweep_writes_csv_and_plots_and_plot_redraws_them(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "--eps", "0", "1e-8", "1", "--eps-modes", "outside", "atan2",
            "--amsgrad", "both", "--seeds", "1", "--steps", "4", "--zero-features", "0", "20",
            "--workers", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = SweepResult.read(out)
    # 2 scenarios x 2 modes x (Adam + AMSGrad) x 3 eps x 1 seed = 24 runs of 4 steps
    assert len(result.runs) == 24 * 4
    info = result.run_table()
    assert set(info.where(diverged=True)["scenario"]) == {"zero_features=20"}
    assert set(info.where(diverged=True)["eps"]) == {0.0}
    pngs = sorted(p.name for p in out.glob("*.png"))
    expected = ["loss_curves.png", "final_loss_vs_eps.png", "eps_dominated.png", "variants.png",
                "multipliers.png", "scenario_zero_features20.png", "eps_atlas.png"]  # fmt: skip
    assert pngs == sorted(expected)
    out_text = capsys.readouterr().out
    assert "24 runs of 4 steps" in out_text
    assert ("minnet sweep: 2 of 24 runs diverged (NaN/inf, kept): zero_features=20 outside no "
            "AMSGrad eps=0 (1 run); zero_features=20 outside AMSGrad eps=0 (1 run)\n") in out_text

    # the same directory again is refused (nothing is overwritten) ...
    assert _exit_code(argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    # ... and `minnet plot` redraws every figure from the CSV alone
    redraw = tmp_path / "redraw"
    assert main(["plot", str(out), "--out", str(redraw)]) == 0
    assert sorted(p.name for p in redraw.glob("*.png")) == pngs
    for png in redraw.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC


def test_plot_of_a_damaged_csv_exits_2_naming_the_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs.csv").write_text("run,step\n0,1\n")
    assert _exit_code(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'runs.csv'}: missing column(s) scenario, eps, eps_mode" in err
    assert "Traceback" not in err and not list(tmp_path.glob("*.png"))

"""The lab in low precision: dtypes, state dtypes and rounding models in grid, the CLI and the
CSV; the eps_lowp figure; and the float16 failure reproduced by real runs (no torch)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import minnet
from minnet.cli import main
from minnet.lab import RunSpec, SweepResult, grid, run
from minnet.lab.plots import PLOT_FILES, draw_eps_lowp, plot_all, plot_eps_lowp
from minnet.lab.runner import RUN_COLUMNS
from minnet.optim import Adam
from minnet.optim.optimizer import LowPrecisionWarning

ROOT = Path(__file__).resolve().parents[1]


def _precisions(specs: list[RunSpec]) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys((s.dtype, s.state_dtype, s.rounding) for s in specs))


# -- grid and RunSpec -----------------------------------------------------------------------------


def test_grid_crosses_dtypes_state_dtypes_and_roundings_once_per_distinct_run() -> None:
    specs = grid([1e-8, 1e-4], amsgrad=[False], seeds=[0], steps=2,
                 dtypes=["float32", "float16", "bfloat16"], state_dtypes=["same", "float32"],
                 roundings=["fused", "per_op"])  # fmt: skip
    # float32: "same" is float32 and rounding changes nothing, so one run per eps; each 16-bit
    # dtype: 2 state dtypes x 2 roundings.
    assert _precisions(specs) == [
        ("float32", "float32", "fused"),
        ("float16", "float16", "fused"), ("float16", "float16", "per_op"),
        ("float16", "float32", "fused"), ("float16", "float32", "per_op"),
        ("bfloat16", "bfloat16", "fused"), ("bfloat16", "bfloat16", "per_op"),
        ("bfloat16", "float32", "fused"), ("bfloat16", "float32", "per_op"),
    ]  # fmt: skip
    assert len(specs) == 9 * 2
    assert [s.eps for s in specs[:2]] == [1e-8, 1e-4]  # eps inside the precision loops
    assert not specs[0].low_precision and specs[2].low_precision
    # the kwargs an optimizer gets: state_dtype only when not the parameters', rounding only
    # for 16-bit buffers
    f16_fused, f16_per_op, f16_master = specs[2], specs[4], specs[6]
    assert (f16_fused.dtype, f16_fused.state_dtype, f16_fused.rounding) == (
        "float16", "float16", "fused")  # fmt: skip
    assert not {"state_dtype", "rounding"} & set(f16_fused.optimizer_kwargs())
    assert f16_per_op.optimizer_kwargs()["rounding"] == "per_op"
    assert f16_master.optimizer_kwargs()["state_dtype"] == "float32"
    assert "rounding" not in specs[0].optimizer_kwargs()  # float32: nothing to round


def test_old_dtype_argument_and_defaults_are_unchanged() -> None:
    old = grid([1e-8], seeds=[0], steps=2, dtype="float64")
    assert _precisions(old) == [("float64", "float64", "fused")]
    assert _precisions(grid([1e-8], seeds=[0], steps=2)) == [("float32", "float32", "fused")]
    with pytest.raises(ValueError, match="pass dtype or dtypes, not both"):
        grid([1e-8], dtype="float64", dtypes=["float32"])
    with pytest.raises(ValueError, match="grid: roundings is empty"):
        grid([1e-8], roundings=[])


def test_a_refused_combination_is_a_one_line_error_naming_it() -> None:
    with pytest.raises(ValueError) as info:
        grid([1e-8], eps_modes=["outside", "hat"], amsgrad=[False], seeds=[0],
             dtypes=["float16"], roundings=["fused", "per_op"])  # fmt: skip
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "grid: Adam refuses dtype='float16', state_dtype='float16', rounding='per_op', "
        "eps_mode='hat': rounding='per_op' follows PyTorch's for-loop Adam: it needs "
        "eps_mode='outside'"
    )
    with pytest.raises(ValueError, match="grid: Adam refuses dtype='float64', "
                       "state_dtype='float32'.*float64 parameters need float64 state"):
        grid([1e-8], seeds=[0], dtypes=["float64"], state_dtypes=["float32"])
    with pytest.raises(ValueError, match="applies to the seed problem and its scenarios"):
        RunSpec(eps=1e-8, scenario="digits", dtype="float16")


def test_refused_combinations_can_be_skipped_with_a_warning_listing_them(
    capsys, tmp_path: Path
) -> None:
    kwargs = {"eps_modes": ["outside", "hat"], "amsgrad": [False], "seeds": [0],
              "dtypes": ["float32", "float16"], "roundings": ["fused", "per_op"]}  # fmt: skip
    with pytest.warns(UserWarning) as record:
        specs = grid([1e-8], refused="skip", **kwargs)
    messages = [str(w.message) for w in record]
    assert messages == [
        "grid: skipped 1 combination(s) refused by the optimizer: Adam refuses "
        "dtype='float16', state_dtype='float16', rounding='per_op', eps_mode='hat': "
        + messages[0].split("eps_mode='hat': ", 1)[1]
    ]
    assert "eps_mode='outside'" in messages[0]
    got = {(s.eps_mode, s.dtype, s.rounding) for s in specs}
    # float32 runs once per placement; float16 per_op only for "outside", the rest kept
    assert got == {("outside", "float32", "fused"), ("hat", "float32", "fused"),
                   ("outside", "float16", "fused"), ("hat", "float16", "fused"),
                   ("outside", "float16", "per_op")}  # fmt: skip
    with pytest.raises(ValueError, match="refused must be 'error' or 'skip'"):
        grid([1e-8], refused="drop")
    assert main(["sweep", "--eps", "1e-8", "--eps-modes", "outside", "hat", "--amsgrad", "off",
                 "--seeds", "1", "--steps", "1", "--dtype", "float16", "--rounding", "per_op",
                 "--skip-refused", "--workers", "1", "--no-plots", "--no-progress",
                 "--out", str(tmp_path / "skip")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "minnet sweep: note: skipped 1 combination(s) refused by the optimizer: Adam " in out
    assert "minnet sweep: 1 runs of 1 steps" in out  # float16 per_op, eps outside


class NoLowp(Adam):
    """An optimizer without 16-bit kernels and without the precision keywords."""

    _supports_lowp = False

    def __init__(self, params: Any, lr: float = 1e-3, eps: float = 1e-8, *,
                 track_stats: bool = False) -> None:  # fmt: skip
        super().__init__(params, lr=lr, eps=eps, track_stats=track_stats)


def test_an_optimizer_without_16_bit_support_is_refused_not_dropped(monkeypatch) -> None:
    monkeypatch.setattr(minnet.optim, "NoLowp", NoLowp, raising=False)
    assert len(grid([1e-8], optimizers=["NoLowp"], seeds=[0], steps=1)) == 1  # float32 trains
    with pytest.raises(ValueError, match=r"grid: NoLowp refuses dtype='float16', "
                       r"state_dtype='float16', rounding='fused': NoLowp does not support "
                       r"float16/bfloat16 parameters or state yet"):  # fmt: skip
        grid([1e-8], optimizers=["adam", "NoLowp"], seeds=[0], dtypes=["float32", "float16"])
    with pytest.raises(ValueError, match="NoLowp takes no state_dtype argument"):
        grid([1e-8], optimizers=["NoLowp"], seeds=[0], state_dtypes=["bfloat16"])


# -- real runs: the float16 failure and its fixes -------------------------------------------


def _run(**kwargs: Any) -> Any:
    return run(RunSpec(**{"steps": 12, "seed": 0, **kwargs}))


@pytest.mark.parametrize("scenario", ["seed", "zero_features=100"])
def test_float16_per_op_default_eps_is_nan_from_step_1(scenario: str) -> None:
    r = _run(eps=1e-8, scenario=scenario, dtype="float16", rounding="per_op")
    assert r.nonfinite[0] > 0  # step 1 made parameters NaN/inf
    assert math.isfinite(r.loss[0]) and np.isnan(r.loss[1:]).all()
    if scenario == "seed":
        # ... because second moments underflowed to 0 (|g| < ~5.5e-3) and eps=1e-8 is 0 too
        assert r.underflow[0] > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rounding": "fused"},  # PyTorch fused=True: eps stays a float32 1e-8
        {"rounding": "per_op", "eps": 1e-4},  # the usual fix: an eps float16 can hold
        {"rounding": "per_op", "state_dtype": "float32"},  # float32 master state
    ],
)
@pytest.mark.parametrize("scenario", ["seed", "zero_features=100"])
def test_float16_fixes_train(kwargs: dict, scenario: str) -> None:
    r = _run(**{"eps": 1e-8, "scenario": scenario, "dtype": "float16", **kwargs})
    assert (r.nonfinite == 0).all() and np.isfinite(r.loss).all()
    assert r.loss[-1] < 0.9 * r.loss[0]


def test_bfloat16_keeps_eps_but_loses_updates_and_float32_loses_nothing() -> None:
    bf = _run(eps=1e-8, dtype="bfloat16", rounding="per_op")
    assert (bf.nonfinite == 0).all() and bf.lost_updates.max() > 0
    f32 = _run(eps=1e-8, dtype="float32", rounding="per_op")
    assert not f32.underflow.any() and not f32.lost_updates.any()


# -- the CLI and the CSV ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lowp") / "sweep"
    code = main(["sweep", "--eps", "0", "1e-8", "1e-4", "--amsgrad", "off", "--seeds", "1",
                 "--steps", "3", "--zero-features", "0", "100", "--dtype", "float32", "float16",
                 "--state-dtype", "same", "float32", "--rounding", "fused", "per_op",
                 "--workers", "1", "--no-progress", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_cli_sweep_records_the_precision_columns_at_the_end(cli_sweep: Path, capsys) -> None:
    header = (cli_sweep / "runs.csv").read_text().splitlines()[0].split(",")
    assert header == list(RUN_COLUMNS)
    assert header[-4:] == ["state_dtype", "rounding", "underflow", "lost_updates"]
    info = SweepResult.read(cli_sweep).run_table()
    # 2 scenarios x 3 eps x (float32 once + float16 x {same, float32} x {fused, per_op})
    assert len(info) == 2 * 3 * 5
    got = sorted(set(zip(info["dtype"], info["state_dtype"], info["rounding"])))
    assert got == [("float16", "float16", "fused"), ("float16", "float16", "per_op"),
                   ("float16", "float32", "fused"), ("float16", "float32", "per_op"),
                   ("float32", "float32", "fused")]  # fmt: skip
    runs = SweepResult.read(cli_sweep).runs
    per_op16 = runs.where(dtype="float16", state_dtype="float16", rounding="per_op", eps=1e-8,
                          scenario="seed", step=1)  # fmt: skip
    assert per_op16["underflow"][0] > 0 and per_op16["nonfinite"][0] > 0
    assert (cli_sweep / PLOT_FILES["eps_lowp"]).is_file()


def test_cli_refusal_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--eps", "1e-8", "--eps-modes", "hat", "--dtype", "float16",
              "--rounding", "per_op", "--out", str(tmp_path / "x")])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Adam refuses dtype='float16', state_dtype='float16', rounding='per_op', " in err


def test_csv_without_the_precision_columns_still_reads(cli_sweep: Path, tmp_path: Path) -> None:
    lines = (cli_sweep / "runs.csv").read_text().splitlines()
    header = lines[0].split(",")
    cut = header.index("state_dtype")
    (tmp_path / "runs.csv").write_text(
        "\n".join(",".join(line.split(",")[:cut]) for line in lines) + "\n"
    )
    legacy = SweepResult.read(tmp_path).runs
    assert legacy.names == list(RUN_COLUMNS)
    assert legacy["state_dtype"].tolist() == legacy["dtype"].tolist()
    assert set(legacy["rounding"]) == {"fused"}
    assert not legacy["underflow"].any() and not legacy["lost_updates"].any()


# -- the figure ------------------------------------------------------------------------------------


def _x_marks(ax: Any) -> int:
    return sum(1 for line in ax.get_lines() if line.get_marker() == "X")


def test_eps_lowp_figure_marks_every_nan_run(cli_sweep: Path, tmp_path: Path) -> None:
    result = SweepResult.read(cli_sweep)
    fig = draw_eps_lowp(result)
    assert fig is not None
    info = result.run_table()
    top = [ax for ax in fig.axes if ax.get_title().startswith("final loss, scenario")]
    assert [ax.get_title() for ax in top] == ["final loss, scenario seed",
                                              "final loss, scenario zero_features=100"]
    for ax, scenario in zip(top, ["seed", "zero_features=100"]):
        sub = info.where(scenario=scenario)
        n_nan = int((~np.isfinite(sub["final_loss"])).sum())
        assert n_nan > 0 and _x_marks(ax) == n_nan
        labels = {ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        assert labels == {"float32", "float16, fused", "float16, per_op",
                          "float16 params + float32 state, fused",
                          "float16 params + float32 state, per_op"}  # fmt: skip
    bottom = [ax for ax in fig.axes if "scenario seed, eps=1e-8" in ax.get_title()]
    assert len(bottom) == 2 and all(len(ax.get_lines()) >= 5 for ax in bottom)
    # one-precision float32 sweeps have no low-precision figure; 16-bit ones are in plot_all
    f32 = SweepResult(result.runs.where(dtype="float32"), result.multipliers)
    assert plot_eps_lowp(f32, tmp_path / "none.png") is None
    assert tmp_path / "all" / PLOT_FILES["eps_lowp"] in plot_all(result, tmp_path / "all")


def test_other_figures_show_the_reference_precision_only(cli_sweep: Path) -> None:
    from minnet.lab.plots import _Runs

    runs = _Runs(SweepResult.read(cli_sweep))
    assert runs.precision == ("float32", "float32", "fused")
    assert set(runs.info["dtype"]) == {"float32"} and runs.dtype_label == "float32"


def test_the_example_builds_the_lowp_sweep() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import eps_comparison
    finally:
        sys.path.pop(0)
    specs = eps_comparison.lowp_specs(steps=2)
    assert "lowp" in eps_comparison.SWEEPS
    assert _precisions(specs)[:1] == [("float32", "float32", "fused")]
    assert sorted(_precisions(specs)) == sorted([
        ("float32", "float32", "fused"),
        ("float16", "float16", "fused"), ("float16", "float16", "per_op"),
        ("bfloat16", "bfloat16", "fused"), ("bfloat16", "bfloat16", "per_op"),
        ("float16", "float32", "fused"), ("float16", "float32", "per_op"),
    ])  # fmt: skip
    assert len(specs) == 7 * 2 * len(eps_comparison.LOWP_EPS)


# -- the README -------------------------------------------------------------------------------


def test_readme_headline_snippet_reproduces_pytorchs_float16_example(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    section = text.index("## Epsilon in low precision")
    start = text.index("```python\n", section) + len("```python\n")
    code = text[start : text.index("```", start)]
    assert '"rounding"' in code and len(code.splitlines()) < 16
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # the README quotes the output it shows
    close = start + len(code) + len("```\n")  # the python block's closing fence
    opened = text.index("```\n", close) + len("```\n")  # the output block right after it
    assert text[close:opened].strip() == "```"
    quoted = text[opened : text.index("```", opened)]
    assert out == quoted
    assert out.splitlines()[0].endswith("[-inf  nan -inf]")
    # the first two lines are what PyTorch 2.13 stored (foreach=False, fused=True)
    for line, rounding in zip(out.splitlines(), ("per_op", "fused")):
        data = np.load(ROOT / "tests" / "fixtures" / f"lowp_headline_adam_float16_{rounding}.npz")
        assert line == f"{{'rounding': '{rounding}'}}: {data['params'][-1].view(np.float16)}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = minnet.nn.Parameter(np.zeros(3, dtype=np.float16))
        opt = Adam([p], lr=1e-3, rounding="per_op")
    for _ in range(3):
        p.grad[...] = np.array([1e-3, 0.0, 3e-5], dtype=np.float16)
        opt.step()
    assert np.isneginf(p.data[0]) and np.isnan(p.data[1]) and np.isneginf(p.data[2])
    # eps=1e-7, a float16 subnormal: finite, but the steps are huge (the README quotes -25.2)
    p = minnet.nn.Parameter(np.zeros(3, dtype=np.float16))
    with pytest.warns(LowPrecisionWarning, match="eps=1e-07 is the subnormal 1.19209e-07"):
        opt = Adam([p], lr=1e-3, eps=1e-7, rounding="per_op")
    for _ in range(3):
        p.grad[...] = np.array([1e-3, 0.0, 3e-5], dtype=np.float16)
        opt.step()
    assert np.isfinite(p.data).all() and f"{float(p.data[0]):.1f}" == "-25.2"
    assert "gradient is\n-25.2 after three steps" in text

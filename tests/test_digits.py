"""The digits classifier: examples/digits.py and the lab's digits scenario (real runs)."""

from __future__ import annotations

import math
import os
import re
import runpy
import subprocess
import sys
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


def test_minnet_sweep_scenarios_digits(tmp_path: Path, capsys) -> None:
    from minnet.cli import main
    from minnet.lab.runner import SweepResult

    out = tmp_path / "digits"
    argv = ["sweep", "--scenarios", "digits", "--eps", "0", "1e-8", "--amsgrad", "off",
            "--seeds", "1", "--steps", "30", "--workers", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert "2 runs of 30 steps" in capsys.readouterr().out
    info = SweepResult.read(out).run_table()
    assert info["scenario"].tolist() == ["digits", "digits"]
    assert info["lr"].tolist() == [1e-3, 1e-3]  # the problem's own lr
    assert info["diverged"].tolist() == [True, False]  # eps 0, eps 1e-8
    assert np.isfinite(info["final_metric"]).all()  # test accuracy, after the last step
    assert (out / "scenario_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_minnet_sweep_scenarios_adds_to_the_seed_scenarios(tmp_path: Path, capsys) -> None:
    from minnet.cli import main
    from minnet.lab.runner import SweepResult

    out = tmp_path / "mixed"
    argv = ["sweep", "--scenarios", "digits", "--zero-features", "0", "100", "--eps", "1e-8",
            "--amsgrad", "off", "--seeds", "1", "--steps", "2", "--workers", "1",
            "--no-progress", "--no-plots", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    info = SweepResult.read(out).run_table()
    assert info["scenario"].tolist() == ["seed", "zero_features=100", "digits"]
    assert info["lr"].tolist() == [1e-4, 1e-4, 1e-3]  # each scenario's own lr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "--scenarios", "mnist"], "argument --scenarios: unknown scenario 'mnist': "
                                            "expected char_transformer, digits, digits_cnn, seed, "
                                            "zero_features=K"),
        (["sweep", "--scenarios", "zero_features=x"], "unknown scenario 'zero_features=x'"),
    ],
)  # fmt: skip
def test_minnet_sweep_rejects_unknown_scenarios(argv: list[str], message: str, capsys) -> None:
    from minnet.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert "--scenarios" in capsys.readouterr().out


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_python_block(after: str) -> str:
    """The first ```python block of the README after the text ``after``."""
    text = README.read_text()
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start : text.index("```", start)]


def _run_script(code: str, tmp_path: Path) -> str:
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_readme_lab_on_your_own_problem_snippet_runs(tmp_path: Path) -> None:
    code = _readme_python_block("### The lab on your own problem")
    assert "Problem(" in code and "sweep(" in code
    assert len([line for line in code.splitlines() if line.strip()]) < 15
    rows = eval(_run_script(code, tmp_path), {"__builtins__": {}}, {"nan": math.nan})
    from minnet.lab.digits import load_digits_split

    _, _, _, y_test = load_digits_split()
    assert [(r["eps"], r["seed"]) for r in rows] == [(0.0, 0), (0.0, 1), (1e-8, 0), (1e-8, 1)]
    for r in rows:
        assert r["scenario"] == "digits" and r["steps"] == 10 * 23
        if r["eps"] == 0:
            assert r["diverged"] and r["first_nonfinite_step"] == 1
            assert r["final_metric"] == pytest.approx(float(np.mean(y_test == 0)))
        else:
            assert not r["diverged"] and r["final_metric"] > 0.9


def test_readme_classification_snippet_runs(tmp_path: Path) -> None:
    code = _readme_python_block("Classification reads the same way")
    assert "CrossEntropyLoss" in code and "DataLoader" in code and "no_grad" in code
    out = _run_script(code, tmp_path)
    match = re.fullmatch(r"loss (\S+), test accuracy (\S+)\n", out)
    assert match is not None, out
    assert float(match.group(1)) < 0.2 and float(match.group(2)) > 0.88
    assert f"test accuracy {match.group(2)}`" in README.read_text()  # what the README quotes

"""``make test`` / ``make lint`` lint the project's own code, not every Python file in the clone."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_LINT_ERRORS = "import os, sys\nx=1;y = undefined_name\n"  # F401, E401, E702, F821


def _ruff_paths(target: str) -> list[str]:
    """The paths the Makefile target passes to ``ruff check`` (from ``make -n``)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, check=True
    ).stdout
    lines = [shlex.split(line) for line in out.splitlines() if " ruff check" in line]
    assert len(lines) == 1, out
    words = lines[0]
    return words[words.index("check") + 1 :]


@pytest.mark.parametrize("target", ["test", "lint"])
def test_lint_target_names_the_project_paths(target: str) -> None:
    paths = _ruff_paths(target)
    assert "." not in paths and "./" not in paths
    assert {"minnet", "tests", "scripts", "benchmarks", "examples"} <= set(paths)
    for path in paths:
        assert (ROOT / path).is_dir(), f"the Makefile lints {path!r}, which does not exist"


def test_scratch_file_in_the_clone_root_does_not_fail_lint(tmp_path: Path) -> None:
    pytest.importorskip("ruff")
    paths = _ruff_paths("lint")
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(ROOT / "pyproject.toml", clone)
    for path in paths:
        shutil.copytree(
            ROOT / path, clone / path, ignore=shutil.ignore_patterns("__pycache__", "*.npz")
        )
    (clone / "scratch.py").write_text(_LINT_ERRORS)
    ruff = [sys.executable, "-m", "ruff", "check", "--no-cache", *paths]
    res = subprocess.run(ruff, cwd=clone, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    # The same command does catch the same errors inside the project's own code.
    (clone / "minnet" / "scratch.py").write_text(_LINT_ERRORS)
    res = subprocess.run(ruff, cwd=clone, capture_output=True, text=True)
    assert res.returncode == 1 and "minnet/scratch.py" in res.stdout, res.stdout + res.stderr

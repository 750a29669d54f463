"""Replay every Adam variant's reference trajectory (scripts/make_variant_fixtures.py).

Each ``tests/fixtures/variant_*.npz`` was recorded, in float64, from the library that defines the
variant: ``torch.optim.Adam`` and ``optax.adam`` (eps_mode="outside"), Keras 3's ``Adam``
("hat", AMSGrad max over raw v), ``optax.adam(eps=0, eps_root=eps)`` ("inside"),
``optax.amsgrad`` (amsgrad_max="corrected", and "paper" with bias correction switched off) and
``adam_atan2_pytorch.AdamAtan2`` ("atan2"). amsgrad_max="paper" is additionally checked against
``reddi2018_amsgrad``, a NumPy transcription of Reddi et al. 2018, Algorithm 2, kept in the script
(no bias correction, max over raw v, eps added outside the square root since the paper has none):
that fixture is a transcription of the paper, not a recording of a library.

The problem is least squares with gradient ``A.T @ (A @ w - b) / n`` computed here in NumPy from
the current parameters, exactly as the recording did; ``A`` has all-zero columns and columns
scaled down to 2**-36 so that eps matters. No reference library is needed to run these tests.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

import minnet
from minnet.nn import Parameter

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("variant_*.npz"))
TOL = 1e-9  # float64 relative gap


def load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, arrays) of one fixture."""
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    return json.loads(str(data.pop("config"))), data


def replay(data: dict[str, np.ndarray], steps: int, **kwargs: object) -> np.ndarray:
    """Run minnet's Adam with ``kwargs`` on the fixture's problem; parameters after each step."""
    a = data["a_int8"].astype(np.float64) * np.exp2(data["a_col_exp"].astype(np.float64))
    b = data["b"]
    p = Parameter(data["w0"].copy())
    opt = minnet.optim.Adam([p], **kwargs)
    out = np.empty((steps, p.data.size))
    for t in range(steps):
        p.grad[...] = a.T @ (a @ p.data - b) / a.shape[0]
        opt.step()
        out[t] = p.data
    return out


@functools.cache
def replayed(path: Path, instrumented: bool = False) -> tuple[dict, dict, np.ndarray]:
    """(config, fixture arrays, minnet's trajectory with the fixture's variant), once per file.

    ``instrumented`` turns on ``track_stats`` and ``check_finite``, which select other kernels of
    the family; they must take the very same steps.
    """
    cfg, data = load(path)
    kw = dict(cfg["minnet_kwargs"])
    kw["betas"] = tuple(kw["betas"])
    if instrumented:
        kw.update(track_stats=True, check_finite=True)
    return cfg, data, replay(data, cfg["steps"], **kw)


def rel_gap(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (NaN in ours counts as an infinite gap)."""
    diff = np.abs(ours - ref).max()
    return float("inf") if not np.isfinite(diff) else float(diff / np.abs(ref).max())


def test_every_variant_has_fixtures() -> None:
    """Each variant the issue names is covered, each with at least two eps values."""
    seen: dict[tuple[str, bool, str, str], set[float]] = {}
    for path in FIXTURES:
        cfg, _ = load(path)
        kw = cfg["minnet_kwargs"]
        key = (cfg["library"], kw["amsgrad"], kw["eps_mode"], kw["amsgrad_max"])
        seen.setdefault(key, set()).add(kw["eps"])
    expected = {
        ("PyTorch", False, "outside", "raw"),
        ("PyTorch", True, "outside", "raw"),
        ("optax", False, "outside", "raw"),
        ("optax", False, "inside", "raw"),
        ("Keras 3", False, "hat", "raw"),
        ("Keras 3", True, "hat", "raw"),
        ("optax", True, "outside", "corrected"),
        ("optax", True, "inside", "corrected"),
        ("optax", True, "outside", "paper"),
        ("optax", True, "inside", "paper"),
        ("NumPy transcription of Reddi et al. 2018, Alg. 2", True, "outside", "paper"),
        ("adam-atan2-pytorch", False, "atan2", "raw"),
    }
    assert set(seen) == expected
    for key, eps_values in seen.items():
        assert len(eps_values) >= 2, f"{key}: only eps {sorted(eps_values)}"


@pytest.mark.parametrize("instrumented", [False, True], ids=["plain", "stats+check_finite"])
@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_matches_reference_library(path: Path, instrumented: bool) -> None:
    cfg, data, ours = replayed(path, instrumented)
    assert cfg["dtype"] == "float64" and data["w0"].dtype == np.float64
    assert cfg["steps"] >= 200 and ours.shape == (cfg["steps"], data["w0"].size)
    assert cfg["checkpoints"][-1] == cfg["steps"]
    where = f"{cfg['reference']} ({cfg['library']} {cfg['library_version']})"
    for step, ref in zip(cfg["checkpoints"], data["checkpoints"], strict=True):
        gap = rel_gap(ours[step - 1], ref)
        assert gap <= TOL, f"after step {step}: relative gap {gap:.3g} to {where}"
    gap = rel_gap(ours[-1], data["final"])
    assert gap <= TOL, f"final parameters: relative gap {gap:.3g} to {where}"
    norms = np.linalg.norm(ours, axis=1)
    step_gaps = np.abs(norms - data["norms"]) / data["norms"]
    worst = int(step_gaps.argmax())
    assert step_gaps[worst] <= TOL, (
        f"||w|| after step {worst + 1}: relative gap {step_gaps[worst]:.3g} to {where}"
    )


def is_default_variant(path: Path) -> bool:
    kw = load(path)[0]["minnet_kwargs"]
    return (kw["eps_mode"], kw["amsgrad_max"]) == ("outside", "raw")


NON_DEFAULT = [p for p in FIXTURES if not is_default_variant(p)]


@pytest.mark.parametrize("path", NON_DEFAULT, ids=[p.stem for p in NON_DEFAULT])
def test_fixture_tells_variant_from_default(path: Path) -> None:
    """The problem is sensitive enough: PyTorch's formula would miss every other fixture."""
    cfg, data, _ = replayed(path)
    kw = dict(cfg["minnet_kwargs"], betas=tuple(cfg["minnet_kwargs"]["betas"]))
    kw.update(eps_mode="outside", amsgrad_max="raw")
    gap = rel_gap(replay(data, cfg["steps"], **kw)[-1], data["final"])
    assert gap > 1e-3, f"{path.stem}: default Adam is only {gap:.3g} away"

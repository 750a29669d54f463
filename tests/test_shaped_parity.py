"""Replay the shaped optimizers (Adafactor, Muon) against the library each variant names, and
hold Adafactor's shaped update to its hand-written reference on matrices.

Each ``tests/fixtures/shaped_*.npz`` was recorded by scripts/make_shaped_fixtures.py from
PyTorch 2.13, Keras 3 (JAX backend) or optax 0.2.8 in float64: 300 steps on a separable
quadratic (``tests/fixtures/shaped_problem.npz``: curvatures down to 2**-36 and 5% zero, so
that eps matters). Adafactor's parameters are a 130x140 matrix (factored by every library), an
8x10 one (not by optax: below its ``min_dim_size_to_factor=128``), a 40-vector and a ``(1,)``;
Muon's (2-D only) the two matrices and a tall 12x5 one. minnet replays each with
``getattr(minnet.optim, optimizer)(params, **minnet_kwargs)``, computing the same gradient from
its own parameters, and must stay within the fixture's tolerance (1e-9 relative; 1e-7 for Keras
with its float32 means, 1e-4 for PyTorch's bfloat16 Newton-Schulz iteration: see the script) at
every checkpoint and in every parameter's norm after every step. No reference library is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import minnet.optim
from minnet.dtypes import bfloat16, float16
from minnet.nn import Parameter
from minnet.optim import Adafactor
from minnet.optim.adafactor import adafactor_reference

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURES = sorted(FIXTURE_DIR.glob("shaped_*_*.npz"))


def load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    return json.loads(str(data.pop("config"))), data


def problem() -> dict[str, np.ndarray]:
    with np.load(FIXTURE_DIR / "shaped_problem.npz") as f:
        return {k: f[k].astype(np.float64) for k in f.files}


def replay(config: dict[str, Any], kwargs: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(parameters at the checkpoints, flat; each parameter's norm after every step)."""
    prob = problem()
    names = list(config["shapes"])
    ps = [Parameter(prob[f"w0_{k}"].copy()) for k in names]
    kw = dict(config["minnet_kwargs"] if kwargs is None else kwargs)
    if isinstance(kw.get("eps"), list):
        kw["eps"] = tuple(kw["eps"])
    opt = getattr(minnet.optim, config["optimizer"])(ps, **kw)
    scale = config["grad_scale"]
    checkpoints, norms = [], []
    for t in range(1, config["steps"] + 1):
        for k, p in zip(names, ps):
            p.grad[...] = scale * prob[f"h_{k}"] * (p.data - prob[f"star_{k}"])
        opt.step()
        norms.append([np.linalg.norm(p.data) for p in ps])
        if t in config["checkpoints"]:
            checkpoints.append(np.concatenate([p.data.ravel() for p in ps]))
    return np.array(checkpoints), np.array(norms)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_every_fixture_is_here() -> None:
    names = {p.stem for p in FIXTURES}
    for variant in ("torch", "keras", "optax"):
        assert sum(n.startswith(f"shaped_adafactor_{variant}_") for n in names) >= 3
    assert sum(n.startswith("shaped_muon_torch_") for n in names) >= 4
    assert sum(p.stat().st_size for p in FIXTURE_DIR.glob("shaped_*.npz")) < 1_200_000


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_replays_the_library(path: Path) -> None:
    config, data = load(path)
    assert config["steps"] >= 300 and config["dtype"] == "float64"
    checkpoints, norms = replay(config)
    tol = config["tolerance"]
    assert rel(checkpoints[:, data["sample"]], data["checkpoints"]) <= tol
    assert rel(norms, data["norms"]) <= tol


@pytest.mark.parametrize("name", ["shaped_adafactor_torch_eps1e-6",
                                  "shaped_adafactor_keras_eps1e-12",
                                  "shaped_adafactor_optax_lr1e-2_eps1e-12",
                                  "shaped_muon_torch_eps1e-5_tiny_grads"])  # fmt: skip
def test_the_eps_fixtures_tell_eps_apart(name: str) -> None:
    """Each eps fixture is far from a replay at the variant's default eps: eps matters there."""
    config, data = load(FIXTURE_DIR / f"{name}.npz")
    kwargs = {k: v for k, v in config["minnet_kwargs"].items() if k != "eps"}
    checkpoints, _ = replay(config, kwargs)
    assert rel(checkpoints[:, data["sample"]], data["checkpoints"]) > 1e-3


# -- the shaped update against its reference, on matrices ---------------------------------------

SHAPES = [(130, 140), (8, 10), (3, 4, 5), (40,), (1,), (1, 7), (200, 3)]
ROWS = [{"variant": "torch"}, {"variant": "torch", "weight_decay": 0.1, "eps": (1e-6, 1e-2)},
        {"variant": "keras"}, {"variant": "optax"},
        {"variant": "optax", "min_dim_size_to_factor": 2, "weight_decay": 0.1}]  # fmt: skip


def _run(kwargs: dict[str, Any], dtype: Any, steps: int, zero_frac: float = 0.2,
         seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], Adafactor]:  # fmt: skip
    """``steps`` steps of ``Adafactor(**kwargs)`` over parameters of SHAPES, and the same steps
    by the reference over copies of the flat buffers: (minnet's, the reference's arrays)."""
    rng = np.random.default_rng(seed)
    ps = [Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
    opt = Adafactor(ps, lr=1e-2, **kwargs)
    flat = opt._flats[0][0]
    ref = [flat.data.copy(), *(a.copy() for a in flat.arrays)]
    bounds = flat.bounds(list(range(len(ps))))
    group = opt.param_groups[0]
    for t in range(1, steps + 1):
        for p in ps:
            g = rng.standard_normal(p.data.shape) * (rng.random(p.data.shape) >= zero_frac)
            p.grad[...] = g * 10.0 ** rng.integers(-6, 1)
        grad = flat.grad.copy()
        opt.step()
        s = opt._scalars(group, flat.compute_dtype, t)
        adafactor_reference(ref[0], grad, tuple(ref[1:]), s, opt._options(group), bounds,
                            [p.data.shape for p in ps])  # fmt: skip
    return [flat.data, *flat.arrays], ref, opt


@pytest.mark.parametrize("kwargs", ROWS, ids=[str(r) for r in ROWS])
def test_update_matches_reference_float64(kwargs: dict[str, Any]) -> None:
    ours, ref, _ = _run(kwargs, np.float64, 6)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("kwargs", ROWS[::2], ids=[str(r) for r in ROWS[::2]])
def test_update_matches_reference_float32(kwargs: dict[str, Any]) -> None:
    ours, ref, opt = _run(kwargs, np.float32, 4)
    assert all(a.dtype == np.float32 for a in ours)
    s = opt._scalars(opt.param_groups[0], np.dtype(np.float32), 1)
    assert all(np.asarray(v).dtype == np.float32 for v in s)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_factored_state_layout_is_pytorchs() -> None:
    """A factored parameter's row factor is PyTorch's ``row_var`` in column 0 of ``row_var``
    and its column factor ``col_var`` in row 0 of ``col_var``; a vector's second moment is in
    ``row_var``; the rest stays 0."""
    rng = np.random.default_rng(1)
    w, b = Parameter(rng.standard_normal((5, 6))), Parameter(rng.standard_normal(6))
    opt = Adafactor([w, b])
    g = rng.standard_normal((5, 6))
    w.grad[...] = g
    b.grad[...] = g[0]
    opt.step()
    sd = opt.state_dict()["state"]
    np.testing.assert_allclose(sd[0]["row_var"][:, :1], np.mean(g * g, axis=1, keepdims=True))
    np.testing.assert_allclose(sd[0]["col_var"][:1, :], np.mean(g * g, axis=0, keepdims=True))
    assert not sd[0]["row_var"][:, 1:].any() and not sd[0]["col_var"][1:, :].any()
    np.testing.assert_allclose(sd[1]["row_var"], g[0] ** 2)
    assert not sd[1]["col_var"].any()


@pytest.mark.parametrize("dtype", [float16, bfloat16])
def test_16bit_fused_stays_near_float32(dtype: Any) -> None:
    """16-bit parameters (``rounding="fused"``): the step computed in float32 and stored
    rounded once stays within the storage format's precision of a float32 run."""
    rng = np.random.default_rng(2)
    start = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    runs = []
    for dt in (np.float32, dtype):
        ps = [Parameter(x.astype(dt)) for x in start]
        opt = Adafactor(ps, lr=1e-2, track_stats=True)
        for _ in range(3):
            for p, x in zip(ps, start):
                p.grad[...] = (x * 0.5).astype(dt)
            opt.step()
        assert opt.stats.nonfinite == 0 and opt.stats.update_rms > 0
        runs.append([p.data.astype(np.float32) for p in ps])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-2, atol=2e-2)

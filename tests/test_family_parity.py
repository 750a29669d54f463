"""Replay every optimizer of the family against the library that defines it.

Each ``tests/fixtures/family_*.npz`` was recorded by scripts/make_family_fixtures.py from
PyTorch 2.13, Keras 3 (JAX backend) or optax, in float64 (float32 for the ``*_f32`` files), on the
least-squares problem stored once in ``tests/fixtures/lsq_problem.npz`` (all-zero columns and
columns scaled down to 2**-36, so that eps matters). The script's docstring has the formula of
every optimizer and library and where its eps sits. Here minnet replays each fixture with
``getattr(minnet.optim, config["optimizer"])(params, **config["minnet_kwargs"])`` (plus the
fixture's parameter groups and learning-rate scheduler), computing the same NumPy gradient
``A.T @ (A @ w - b) / n`` from its own parameters, and must stay within 1e-9 relative (float64)
or 1e-4 (float32) of the library at every checkpoint and in ``||w||`` after every step. For every
fixture whose ``eps_mode`` is not the optimizer's default, the default placement must miss the
library by more than 1e-3, so that the fixture can tell the placements apart.

No reference library is needed to run these tests.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

import minnet
from minnet.nn import Parameter

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURES = sorted(FIXTURE_DIR.glob("family_*.npz"))
TOL = {"float64": 1e-9, "float32": 1e-4}
MISS = 1e-3  # the default placement must be at least this far from a non-default fixture
# Optimizers, options or schedulers not yet in minnet.optim are skipped with "not implemented
# yet: X" while this is True; set it to False once the whole family has landed, so that anything
# missing fails.
ALLOW_PENDING = False
DEFAULT_EPS_MODE = {
    "Adam": "outside", "AdamW": "outside", "RMSprop": "outside", "Adagrad": "outside",
    "Adamax": "max",
}  # fmt: skip


def pending(what: str) -> NoReturn:
    """Skip (while the family is being built) or fail: ``what`` is not in minnet.optim yet."""
    if ALLOW_PENDING:
        pytest.skip(f"not implemented yet: {what}")
    pytest.fail(f"missing from minnet.optim: {what}")


def load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, arrays) of one fixture."""
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    return json.loads(str(data.pop("config"))), data


@functools.cache
def problem(name: str) -> dict[str, np.ndarray]:
    """The shared problem arrays (``a_int8``, ``a_col_exp``, ``b``, ``w0``) and their checksum."""
    with np.load(FIXTURE_DIR / name, allow_pickle=False) as f:
        arrays = {k: f[k] for k in ("a_int8", "a_col_exp", "b", "w0")}
    h = hashlib.sha256()
    for key, value in arrays.items():
        h.update(key.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return {**arrays, "sha256": np.array(h.hexdigest())}


def _tuples(kwargs: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to tuples (``betas``)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def build(cfg: dict[str, Any], params: list[Parameter], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(optimizer, scheduler or None) as the fixture's config describes them."""
    name = cfg["optimizer"]
    cls = getattr(minnet.optim, name, None)
    if cls is None:
        pending(name)
    groups = cfg.get("groups")
    arg: Any = params
    if groups:
        arg = [
            {"params": [p], **_tuples({k: v for k, v in g.items() if k != "slice"})}
            for p, g in zip(params, groups, strict=True)
        ]
    try:
        opt = cls(arg, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            pending(f"{name}: {e}")
        raise
    except ValueError as e:
        if groups and "group" in str(e):
            pending(f"parameter groups in {name}: {e}")
        raise
    sched = None
    if cfg.get("scheduler"):
        s = cfg["scheduler"]
        try:
            module = importlib.import_module("minnet.optim.lr_scheduler")
        except ModuleNotFoundError:
            pending("minnet.optim.lr_scheduler")
        sched_cls = getattr(module, s["name"], None)
        if sched_cls is None:
            pending(f"minnet.optim.lr_scheduler.{s['name']}")
        sched = sched_cls(opt, **s["kwargs"])
    return opt, sched


def replay(
    cfg: dict[str, Any], **override: Any
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(parameters after every step, lr used at every step, the state arrays named by the
    fixture's ``state_keys`` after every step) of minnet on the fixture's problem.

    ``override`` replaces entries of ``minnet_kwargs`` (the default-placement check).
    """
    prob = problem(cfg["problem"])
    assert str(prob["sha256"]) == cfg["problem_sha256"], f"{cfg['problem']} changed"
    dtype = np.dtype(cfg["dtype"])
    a = prob["a_int8"].astype(np.float64) * np.exp2(prob["a_col_exp"].astype(np.float64))
    b, w0 = prob["b"], prob["w0"]
    slices = [g["slice"] for g in cfg.get("groups") or [{"slice": [0, w0.size]}]]
    shapes = [[hi - lo] for lo, hi in slices]
    if cfg.get("tensors"):  # per-tensor optimizers: parameters of these shapes, in order
        shapes = cfg["tensors"]
        ends = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])
        slices = [[int(lo), int(hi)] for lo, hi in zip(ends[:-1], ends[1:])]
    w0 = w0.copy()
    for i in cfg.get("zero_param_tensors", ()):  # zero-norm tensors: these start at 0
        w0[slices[i][0] : slices[i][1]] = 0.0
    params = [Parameter(w0[lo:hi].astype(dtype).reshape(shape))
              for (lo, hi), shape in zip(slices, shapes, strict=True)]  # fmt: skip
    opt, sched = build(cfg, params, _tuples({**cfg["minnet_kwargs"], **override}))
    steps = cfg["steps"]
    out = np.empty((steps, w0.size), dtype)
    lrs = np.empty(steps)
    states = {key: np.empty((steps, w0.size), dtype) for key in cfg.get("state_keys", ())}
    for t in range(steps):
        w = np.concatenate([p.data.ravel() for p in params]).astype(np.float64)
        g = cfg["grad_scale"] * (a.T @ (a @ w - b) / a.shape[0])
        for i in cfg.get("zero_grad_tensors", ()):  # ... and these get an all-zero gradient
            g[slices[i][0] : slices[i][1]] = 0.0
        for p, (lo, hi) in zip(params, slices, strict=True):
            p.grad[...] = g[lo:hi].reshape(p.data.shape)
        lrs[t] = opt.param_groups[0]["lr"]
        opt.step()
        if sched is not None:
            sched.step()
        out[t] = np.concatenate([p.data.ravel() for p in params])
        if states:
            entries = opt.state_dict()["state"]
            for key, rows in states.items():
                rows[t] = np.concatenate([entries[i][key].ravel() for i in range(len(params))])
    return out, lrs, states


@functools.cache
def replayed(
    path: Path,
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(config, fixture arrays, minnet's trajectory, minnet's lrs, minnet's recorded state
    arrays), once per file."""
    cfg, data = load(path)
    ours, lrs, states = replay(cfg)
    return cfg, data, ours, lrs, states


def rel_gap(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (NaN in ours counts as an infinite gap)."""
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max()
    return float("inf") if not np.isfinite(diff) else float(diff / np.abs(ref).max())


# (optimizer, eps_mode or None, library) that must be recorded; those with eps at >= 2 values.
EXPECTED = {
    ("SGD", None, "PyTorch"), ("Adam", "outside", "PyTorch"), ("AdamW", "outside", "PyTorch"),
    ("RMSprop", "outside", "PyTorch"), ("RMSprop", "inside", "Keras 3"),
    ("RMSprop", "inside", "optax"), ("Adagrad", "outside", "PyTorch"),
    ("Adagrad", "inside", "Keras 3"), ("Adagrad", "inside_guarded", "optax"),
    ("Adadelta", None, "PyTorch"), ("Adadelta", None, "Keras 3"), ("Adamax", "max", "PyTorch"),
    ("Adamax", "max", "optax"), ("Adamax", "outside", "Keras 3"), ("NAdam", None, "PyTorch"),
    ("NAdam", None, "optax"), ("RAdam", None, "PyTorch"), ("RAdam", None, "optax"),
    ("AdaBelief", None, "optax"), ("Lion", None, "optax"),
    ("Lion", None, "Keras 3"), ("Rprop", None, "PyTorch"), ("Rprop", None, "optax"),
    ("ASGD", None, "PyTorch"), ("Yogi", None, "optax"), ("ADOPT", None, "optax"),
    ("Adan", None, "optax"), ("AdEMAMix", None, "optax"),
    ("Ftrl", None, "Keras 3"), ("SignSGD", None, "optax"), ("Signum", None, "optax"),
    ("Lamb", None, "Keras 3"), ("Lamb", None, "optax"), ("Lars", None, "optax"),
    ("OptimisticAdam", None, "optax"),
    ("ScheduleFreeAdamW", None, "optax"), ("ScheduleFreeAdamW", None, "Keras 3"),
    ("Prodigy", None, "optax"),
    ("Novograd", None, "optax"), ("Fromage", None, "optax"),
}  # fmt: skip
NO_EPS = ("SGD", "Lion", "Rprop", "ASGD", "SignSGD", "Signum")


def test_fixture_set_is_complete() -> None:
    """Every optimizer and placement is recorded from its library, at two eps values or more,
    plus parameter groups, two schedules and float32 recordings; the set stays small."""
    assert FIXTURES, "no family fixtures"
    eps_values: dict[tuple[str, str | None, str], set[float]] = {}
    extras = {"groups": set(), "scheduler": set(), "float32": set(), "tensors": set()}
    for path in FIXTURES:
        cfg, data = load(path)
        kw = cfg["minnet_kwargs"]
        key = (cfg["optimizer"], kw.get("eps_mode"), cfg["library"])
        # the argument that plays eps's role (Ftrl's initial_accumulator_value; None: default)
        eps_arg = getattr(getattr(minnet.optim, cfg["optimizer"], None), "eps_arg", "eps")
        eps_values.setdefault(key, set()).add(kw.get(eps_arg))
        assert cfg["steps"] == 300 and cfg["checkpoints"][-1] == cfg["steps"], path.name
        assert data["checkpoints"].shape == (len(cfg["checkpoints"]), 192), path.name
        assert data["checkpoints"].dtype == np.dtype(cfg["dtype"]), path.name
        assert str(problem(cfg["problem"])["sha256"]) == cfg["problem_sha256"], path.name
        if cfg.get("groups"):
            extras["groups"].add(cfg["optimizer"])
        if cfg.get("scheduler"):
            extras["scheduler"].add(cfg["scheduler"]["name"])
        if cfg["dtype"] == "float32":
            extras["float32"].add(cfg["optimizer"])
        if cfg.get("tensors"):  # several parameters of different shapes: per-tensor norms
            assert len({tuple(shape) for shape in cfg["tensors"]}) >= 3, path.name
            extras["tensors"].add(cfg["optimizer"])
    assert set(eps_values) == EXPECTED
    for key, values in eps_values.items():
        if key[0] not in NO_EPS:
            assert len(values) >= 2, f"{key}: only eps {sorted(values)}"
    assert extras == {
        "groups": {"Adam", "RMSprop"},
        "scheduler": {"StepLR", "CosineAnnealingLR"},
        "float32": {"Adam", "RMSprop", "Adagrad", "SGD"},
        "tensors": {"Lamb", "Lars", "Prodigy", "Novograd", "Fromage"},  # Prodigy: one global sum
    }
    total = sum(p.stat().st_size for p in FIXTURES)
    assert total < 2_000_000, f"family fixtures take {total} bytes"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_matches_reference_library(path: Path) -> None:
    cfg, data, ours, lrs, states = replayed(path)
    tol = TOL[cfg["dtype"]]
    assert ours.dtype == np.dtype(cfg["dtype"])
    where = f"{cfg['reference']} ({cfg['library']} {cfg['library_version']})"
    if "lrs" in data:
        gap = np.abs(lrs - data["lrs"]).max() / np.abs(data["lrs"]).max()
        assert gap <= 1e-12, f"learning rates differ from {cfg['scheduler']} by {gap:.3g}"
    for step, ref in zip(cfg["checkpoints"], data["checkpoints"], strict=True):
        gap = rel_gap(ours[step - 1], ref)
        assert gap <= tol, f"after step {step}: relative gap {gap:.3g} to {where}"
    assert sorted(states) == sorted(k[6:] for k in data if k.startswith("state_"))
    for key, rows in states.items():  # state arrays the library's state holds (ASGD's ax)
        for step, ref in zip(cfg["checkpoints"], data[f"state_{key}"], strict=True):
            gap = rel_gap(rows[step - 1], ref)
            assert gap <= tol, f"{key} after step {step}: relative gap {gap:.3g} to {where}"
    norms = np.linalg.norm(ours.astype(np.float64), axis=1)
    step_gaps = np.abs(norms - data["norms"]) / data["norms"]
    worst = int(step_gaps.argmax())
    assert step_gaps[worst] <= tol, (
        f"||w|| after step {worst + 1}: relative gap {step_gaps[worst]:.3g} to {where}"
    )


def _non_default(path: Path) -> bool:
    cfg = load(path)[0]
    mode = cfg["minnet_kwargs"].get("eps_mode")
    return mode is not None and mode != DEFAULT_EPS_MODE[cfg["optimizer"]]


NON_DEFAULT = [p for p in FIXTURES if _non_default(p)]


@pytest.mark.parametrize("path", NON_DEFAULT, ids=[p.stem for p in NON_DEFAULT])
@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # fixtures with eps=0
def test_default_placement_misses(path: Path) -> None:
    """The fixture tells the placements apart: minnet's default eps_mode would miss it."""
    cfg, data = load(path)
    default = DEFAULT_EPS_MODE[cfg["optimizer"]]
    cls = getattr(minnet.optim, cfg["optimizer"], None)
    if cls is not None:
        declared = inspect.signature(cls).parameters["eps_mode"].default
        assert declared == default, f"{cfg['optimizer']}'s default eps_mode is {declared!r}"
    with np.errstate(all="ignore"):
        ours, _, _ = replay(cfg, eps_mode=default)
    gap = rel_gap(ours[-1], data["checkpoints"][-1])
    assert gap > MISS, f"eps_mode={default!r} is only {gap:.3g} away from {cfg['reference']}"


# -- optax.noisy_sgd: the formula given optax's own draws ---------------------------------------

NOISY = FIXTURE_DIR / "noisy_sgd_optax.npz"


@pytest.mark.parametrize("run", [0, 1], ids=["defaults", "eta0.1_gamma1"])
def test_noisy_sgd_matches_optax_given_its_draws(run: int) -> None:
    """minnet's NoisySGD, fed optax's standard normal draws (recorded by the fixture script
    with optax's key splitting: minnet does not replay JAX's PRNG) through ``noise_fn``,
    follows optax.noisy_sgd's trajectory within 1e-9; without them it does not."""
    cfg, data = load(NOISY)
    z = data["noise"]
    rcfg = cfg["runs"][run]
    assert z.shape == (rcfg["steps"], 192) and rcfg["steps"] >= 300

    def optax_draws(step: int, index: int, size: int) -> np.ndarray:
        assert index == 0 and size == 192
        return z[step - 1]

    ours, _, _ = replay(rcfg, noise_fn=optax_draws)
    where = f"{rcfg['reference']} (optax {rcfg['library_version']})"
    ref = data[f"checkpoints_{rcfg['detail']}"]
    for step, row in zip(rcfg["checkpoints"], ref, strict=True):
        gap = rel_gap(ours[step - 1], row)
        assert gap <= 1e-9, f"after step {step}: relative gap {gap:.3g} to {where}"
    norms = np.linalg.norm(ours, axis=1)
    gaps = np.abs(norms - data[f"norms_{rcfg['detail']}"]) / norms
    assert gaps.max() <= 1e-9, f"||w||: relative gap {gaps.max():.3g} to {where}"
    # minnet's own draws (seed 0) are other numbers: the fixture cannot pass by accident
    mine, _, _ = replay(rcfg)
    assert rel_gap(mine[-1], ref[-1]) > 1e-3

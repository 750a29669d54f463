"""Record PyTorch's learning-rate schedules as fixtures for tests/test_lr_scheduler.py.

Run by hand in a separate venv that has torch (never in the repo's .venv):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python scripts/make_scheduler_fixtures.py

Writes tests/fixtures/schedulers.npz: ``configs`` (the JSON list below, so the tests rebuild the
same schedulers), and for every config ``<name>__lr`` (rows: after construction, then after each
``scheduler.step()``; columns: param groups), ``<name>__momentum`` (OneCycleLR, CyclicLR:
``betas[0]`` or ``momentum`` per row) and ``<name>__metrics`` (ReduceLROnPlateau: the metric
given to each step). A config with ``"epochs"`` steps with ``scheduler.step(epoch)`` for each
listed (possibly fractional) epoch instead (CosineAnnealingWarmRestarts). All values are Python
floats (float64), as in PyTorch's schedulers.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.optim import lr_scheduler as tls

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "schedulers.npz"

# Named lr_lambda functions; tests/test_lr_scheduler.py defines the same ones.
LAMBDAS = {
    "exp95": lambda e: 0.95**e,
    "warmup10": lambda e: min(1.0, (e + 1) / 10),
    "inv": lambda e: 1.0 / (1.0 + 0.05 * e),
}


def _s(kind: str, **kw: object) -> dict:
    return {"kind": kind, **kw}


CONFIGS: list[dict] = [
    {"name": "step", "opt": "sgd", "lrs": [0.1, 0.01], "steps": 200,
     "sched": _s("StepLR", step_size=30, gamma=0.5)},
    {"name": "step_default_gamma", "opt": "adam", "lrs": [0.05], "steps": 100,
     "sched": _s("StepLR", step_size=7)},
    {"name": "multistep", "opt": "sgd", "lrs": [0.1, 0.01], "steps": 200,
     "sched": _s("MultiStepLR", milestones=[150, 30, 80, 80], gamma=0.5)},
    {"name": "exponential", "opt": "sgd", "lrs": [0.1, 0.003, 1.0], "steps": 300,
     "sched": _s("ExponentialLR", gamma=0.98)},
    {"name": "cosine", "opt": "sgd", "lrs": [0.1, 0.02], "steps": 300,
     "sched": _s("CosineAnnealingLR", T_max=50, eta_min=1e-3)},
    {"name": "cosine_long", "opt": "adam", "lrs": [0.3], "steps": 250,
     "sched": _s("CosineAnnealingLR", T_max=100)},
    {"name": "cosine_T3", "opt": "sgd", "lrs": [0.1, 0.5], "steps": 100,
     "sched": _s("CosineAnnealingLR", T_max=3, eta_min=0.01)},
    {"name": "linear_warmup", "opt": "sgd", "lrs": [0.1, 0.01], "steps": 100,
     "sched": _s("LinearLR", start_factor=0.25, end_factor=1.0, total_iters=40)},
    {"name": "linear_decay", "opt": "adam", "lrs": [0.1], "steps": 100,
     "sched": _s("LinearLR", start_factor=1.0, end_factor=0.1, total_iters=60)},
    {"name": "linear_default", "opt": "sgd", "lrs": [0.1, 0.2], "steps": 100,
     "sched": _s("LinearLR")},
    {"name": "lambda", "opt": "sgd", "lrs": [0.1, 0.01], "steps": 150,
     "sched": _s("LambdaLR", lr_lambda=["exp95", "warmup10"])},
    {"name": "lambda_single", "opt": "sgd", "lrs": [0.1, 0.2], "steps": 150,
     "sched": _s("LambdaLR", lr_lambda="inv")},
    {"name": "onecycle_cos_adam", "opt": "adam", "lrs": [1e-3, 1e-3], "steps": 200,
     "sched": _s("OneCycleLR", max_lr=[0.1, 0.05], total_steps=200)},
    {"name": "onecycle_linear_3phase_sgd", "opt": "sgd", "lrs": [0.01, 0.01], "steps": 200,
     "sched": _s("OneCycleLR", max_lr=0.2, epochs=10, steps_per_epoch=20,
                 anneal_strategy="linear", three_phase=True, base_momentum=[0.8, 0.85],
                 max_momentum=0.95)},
    {"name": "onecycle_cos_3phase_adam", "opt": "adam", "lrs": [0.01], "steps": 300,
     "sched": _s("OneCycleLR", max_lr=0.3, total_steps=300, pct_start=0.4, three_phase=True)},
    {"name": "onecycle_nomom", "opt": "adam", "lrs": [0.01], "steps": 150,
     "sched": _s("OneCycleLR", max_lr=0.01, total_steps=150, pct_start=0.25, div_factor=10.0,
                 final_div_factor=100.0, cycle_momentum=False)},
    {"name": "sequential", "opt": "sgd", "lrs": [0.1, 0.01], "steps": 150,
     "sched": _s("SequentialLR",
                 schedulers=[_s("LinearLR", start_factor=0.1, total_iters=20),
                             _s("CosineAnnealingLR", T_max=80, eta_min=1e-4)],
                 milestones=[20])},
    {"name": "sequential3", "opt": "adam", "lrs": [0.1], "steps": 120,
     "sched": _s("SequentialLR",
                 schedulers=[_s("LinearLR", start_factor=0.5, total_iters=10),
                             _s("ExponentialLR", gamma=0.97),
                             _s("StepLR", step_size=15, gamma=0.5)],
                 milestones=[10, 60])},
    {"name": "chained_step_exp", "opt": "sgd", "lrs": [0.1, 0.05], "steps": 150,
     "sched": [_s("StepLR", step_size=25, gamma=0.5), _s("ExponentialLR", gamma=0.99)]},
    {"name": "plateau_min_rel", "opt": "sgd", "lrs": [0.1, 0.01], "steps": 200,
     "metric": "noisy_decay", "sched": _s("ReduceLROnPlateau", patience=5)},
    {"name": "plateau_max_abs_cooldown", "opt": "adam", "lrs": [0.1, 0.01], "steps": 200,
     "metric": "noisy_rise",
     "sched": _s("ReduceLROnPlateau", mode="max", factor=0.5, patience=2, threshold=0.01,
                 threshold_mode="abs", cooldown=3, min_lr=[1e-3, 1e-4])},
    {"name": "plateau_min_abs", "opt": "sgd", "lrs": [0.3], "steps": 200,
     "metric": "noisy_decay",
     "sched": _s("ReduceLROnPlateau", factor=0.3, patience=3, threshold=0.05,
                 threshold_mode="abs", min_lr=1e-3)},
    {"name": "plateau_max_rel", "opt": "sgd", "lrs": [0.2, 0.02], "steps": 200,
     "metric": "noisy_rise",
     "sched": _s("ReduceLROnPlateau", mode="max", factor=0.7, patience=4, threshold=0.02,
                 cooldown=1)},
    {"name": "plateau_eps", "opt": "sgd", "lrs": [1e-6, 0.1], "steps": 100,
     "metric": "constant",
     "sched": _s("ReduceLROnPlateau", factor=0.5, patience=0, eps=1e-7)},
    {"name": "constant", "opt": "sgd", "lrs": [0.1, 0.01], "steps": 30,
     "sched": _s("ConstantLR", factor=0.25, total_iters=12)},
    {"name": "constant_default", "opt": "adam", "lrs": [0.05], "steps": 20,
     "sched": _s("ConstantLR")},
    {"name": "polynomial", "opt": "sgd", "lrs": [0.1, 0.02], "steps": 60,
     "sched": _s("PolynomialLR", total_iters=40, power=2.0)},
    {"name": "polynomial_default", "opt": "adam", "lrs": [0.3], "steps": 20,
     "sched": _s("PolynomialLR")},
    {"name": "warm_restarts", "opt": "sgd", "lrs": [0.1, 0.01], "steps": 100,
     "sched": _s("CosineAnnealingWarmRestarts", T_0=10, eta_min=1e-3)},
    {"name": "warm_restarts_mult", "opt": "adam", "lrs": [0.2], "steps": 160,
     "sched": _s("CosineAnnealingWarmRestarts", T_0=5, T_mult=2)},
    {"name": "warm_restarts_fractional", "opt": "sgd", "lrs": [0.1, 0.3], "steps": 64,
     "epochs": [e + i / 4 for e in range(16) for i in range(4)],
     "sched": _s("CosineAnnealingWarmRestarts", T_0=3, T_mult=2, eta_min=0.01)},
    {"name": "chained_class", "opt": "sgd", "lrs": [0.1, 0.05], "steps": 60,
     "sched": _s("ChainedScheduler",
                 schedulers=[_s("ConstantLR", factor=0.5, total_iters=10),
                             _s("ExponentialLR", gamma=0.95)])},
    {"name": "cyclic_triangular_sgd", "opt": "sgd", "lrs": [0.1, 0.1], "steps": 100,
     "sched": _s("CyclicLR", base_lr=[0.01, 0.001], max_lr=0.1, step_size_up=10,
                 step_size_down=15)},
    {"name": "cyclic_triangular2_adam", "opt": "adam", "lrs": [0.1], "steps": 100,
     "sched": _s("CyclicLR", base_lr=0.001, max_lr=0.05, step_size_up=7, mode="triangular2",
                 base_momentum=0.85, max_momentum=0.95)},
    {"name": "cyclic_exp_range", "opt": "sgd", "lrs": [0.1], "steps": 100,
     "sched": _s("CyclicLR", base_lr=0.005, max_lr=0.1, step_size_up=8, mode="exp_range",
                 gamma=0.98, cycle_momentum=False)},
]  # fmt: skip


def metric_sequence(kind: str, n: int) -> np.ndarray:
    """A loss-like sequence with noise and plateaus (seeded; stored in the fixture)."""
    rng = np.random.default_rng(11)
    t = np.arange(1, n + 1, dtype=np.float64)
    base = 1.0 / (1.0 + 0.05 * t) + 0.3 * (t > 120)
    noisy = base + 0.02 * rng.standard_normal(n)
    if kind == "noisy_decay":
        return noisy
    if kind == "noisy_rise":
        return 1.0 - noisy
    if kind == "constant":
        return np.full(n, 0.5)
    raise ValueError(kind)


def build_optimizer(cfg: dict) -> torch.optim.Optimizer:
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in cfg["lrs"]]
    if cfg["opt"] == "sgd":
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    return torch.optim.Adam(groups, lr=1e-3)


def build_scheduler(opt: torch.optim.Optimizer, spec: dict) -> tls.LRScheduler:
    kw = {k: v for k, v in spec.items() if k != "kind"}
    if spec["kind"] == "LambdaLR":
        fn = kw["lr_lambda"]
        kw["lr_lambda"] = [LAMBDAS[f] for f in fn] if isinstance(fn, list) else LAMBDAS[fn]
    if spec["kind"] in ("SequentialLR", "ChainedScheduler"):
        kw["schedulers"] = [build_scheduler(opt, s) for s in kw["schedulers"]]
    if spec["kind"] == "ChainedScheduler":
        return tls.ChainedScheduler(kw["schedulers"], optimizer=opt)
    return getattr(tls, spec["kind"])(opt, **kw)


def momentum_of(group: dict) -> float:
    return float(group["momentum"] if "momentum" in group else group["betas"][0])


def record(cfg: dict) -> dict[str, np.ndarray]:
    opt = build_optimizer(cfg)
    specs = cfg["sched"] if isinstance(cfg["sched"], list) else [cfg["sched"]]
    scheds = [build_scheduler(opt, s) for s in specs]
    metrics = metric_sequence(cfg["metric"], cfg["steps"]) if "metric" in cfg else None
    lrs = [[g["lr"] for g in opt.param_groups]]
    moms = [[momentum_of(g) for g in opt.param_groups]]
    for i in range(cfg["steps"]):
        opt.step()
        for s in scheds:
            if metrics is not None:
                s.step(float(metrics[i]))
            elif "epochs" in cfg:
                s.step(cfg["epochs"][i])
            else:
                s.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        moms.append([momentum_of(g) for g in opt.param_groups])
    out = {f"{cfg['name']}__lr": np.array(lrs, dtype=np.float64)}
    if any(s["kind"] in ("OneCycleLR", "CyclicLR") for s in specs):
        out[f"{cfg['name']}__momentum"] = np.array(moms, dtype=np.float64)
    if metrics is not None:
        out[f"{cfg['name']}__metrics"] = metrics
    assert all(math.isfinite(x) for row in lrs for x in row)
    return out


def main() -> None:
    warnings.simplefilter("ignore")
    arrays: dict[str, np.ndarray] = {}
    for cfg in CONFIGS:
        arrays.update(record(cfg))
    arrays["configs"] = np.array(json.dumps(CONFIGS))
    arrays["torch_version"] = np.array(torch.__version__)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(CONFIGS)} configs)")


if __name__ == "__main__":
    main()

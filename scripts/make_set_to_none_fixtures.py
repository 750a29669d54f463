"""Record PyTorch trajectories in which some parameters get no gradient in some steps.

PyTorch's optimizers skip a parameter whose ``.grad`` is ``None`` (``zero_grad()``'s default
``set_to_none=True`` leaves it so when no backward reaches the parameter): its values, its state
and its own ``"step"`` stay as they were, so parameters of one group end with different step
counts and each gets its own bias corrections. With ``zero_grad(set_to_none=False)`` the same
parameters take every step with a zero gradient.

Three float64 parameters (a 2x3 weight ``w``, a bias ``b`` of 2 and a vector ``c`` of 4) take
12 steps of each optimizer below. ``w`` has a gradient in every step, ``b`` misses steps 3, 6
and 7 (counting from 1), ``c`` gets none in steps 1-4 (its state starts at step 5) nor in step
10. The gradients are standard normal draws (seed 0), the same for every optimizer.
tests/test_set_to_none_parity.py replays the file with ``minnet.optim`` (no torch needed):
per optimizer and mode (``none``: ``zero_grad()``; ``zeros``: ``zero_grad(set_to_none=False)``)
the final parameters and each parameter's ``"step"`` (0 for a parameter without state, NaN for
SGD, whose state has no step).

Run by hand in an environment with PyTorch (never in the project venv):

    PYTHONPATH=. /work/main/.venv-bench/bin/python scripts/make_set_to_none_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "set_to_none.npz"
STEPS = 12
SHAPES = {"w": (2, 3), "b": (2,), "c": (4,)}
#: Steps (from 1) in which each parameter has no gradient.
MISSING = {"w": (), "b": (3, 6, 7), "c": (1, 2, 3, 4, 10)}

#: name -> (torch class, keyword arguments; minnet takes the same names).
CASES = {
    "sgd_momentum": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    "sgd_nesterov_wd": ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True,
                                "weight_decay": 0.1}),
    "adam": ("Adam", {"lr": 0.1}),
    "adam_amsgrad_wd": ("Adam", {"lr": 0.1, "amsgrad": True, "weight_decay": 0.1}),
    "adamw": ("AdamW", {"lr": 0.1}),
    "nadam": ("NAdam", {"lr": 0.1}),
    "radam": ("RAdam", {"lr": 0.1}),
    "adamax": ("Adamax", {"lr": 0.1}),
    "rmsprop_centered_momentum": ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    "adagrad_decay": ("Adagrad", {"lr": 0.1, "lr_decay": 0.1}),
    "adadelta": ("Adadelta", {"lr": 1.0}),
}  # fmt: skip


def gradients() -> dict[str, np.ndarray]:
    """``{name: (STEPS, *shape)}`` standard normal gradients, NaN where the step has none."""
    rng = np.random.default_rng(0)
    out = {}
    for name, shape in SHAPES.items():
        g = rng.standard_normal((STEPS, *shape))
        for t in MISSING[name]:
            g[t - 1] = np.nan
        out[name] = g
    return out


def initial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}


def run(cls: str, kwargs: dict, set_to_none: bool, grads: dict[str, np.ndarray]) -> tuple:
    params = {n: torch.nn.Parameter(torch.tensor(v)) for n, v in initial().items()}
    opt = getattr(torch.optim, cls)(list(params.values()), foreach=False, **kwargs)
    for t in range(STEPS):
        opt.zero_grad(set_to_none=set_to_none)
        for n, p in params.items():
            g = grads[n][t]
            if not np.isnan(g).any():
                p.grad = torch.tensor(g)
        opt.step()
    # PyTorch's per-parameter "step" (0 without state; NaN for SGD, which keeps none).
    steps = [
        float(opt.state[p].get("step", np.nan)) if p in opt.state else 0.0
        for p in params.values()
    ]
    return {n: p.detach().numpy().copy() for n, p in params.items()}, np.array(steps)


def main() -> None:
    torch.set_default_dtype(torch.float64)  # NAdam's mu_product lives in the default dtype
    grads = gradients()
    arrays: dict[str, np.ndarray] = {f"grad_{n}": g for n, g in grads.items()}
    arrays.update({f"init_{n}": v for n, v in initial().items()})
    for case, (cls, kwargs) in CASES.items():
        for mode, set_to_none in (("none", True), ("zeros", False)):
            final, steps = run(cls, kwargs, set_to_none, grads)
            for n, v in final.items():
                arrays[f"{case}_{mode}_{n}"] = v
            arrays[f"{case}_{mode}_steps"] = steps
    arrays["cases"] = np.array(list(CASES))
    arrays["classes"] = np.array([CASES[c][0] for c in CASES])
    arrays["kwargs"] = np.array([repr(CASES[c][1]) for c in CASES])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(OUT, **arrays)
    print(f"wrote {OUT} ({len(CASES)} optimizers x 2 modes, torch {torch.__version__})")


if __name__ == "__main__":
    main()

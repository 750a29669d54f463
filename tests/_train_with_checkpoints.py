"""Training with checkpoints, shared by tests/test_kill_resume.py and run there as a subprocess.

A small mixed-precision regression model (a float32 and a float64 layer, so the optimizer has one
flat buffer of each dtype) trained on minibatches drawn from a NumPy Generator, so that exact
resume needs the model, the optimizer state, the step counter and the RNG state.

    python _train_with_checkpoints.py resume IN OUT STEPS
        IN holds {name: checkpoint}; continue each run to STEPS and save {name: checkpoint} to OUT.
    python _train_with_checkpoints.py run CKPT OUT STEPS EVERY
        resume from CKPT if it exists (else start fresh with the default variant), train to
        STEPS saving CKPT every EVERY steps, then save the final checkpoint to OUT. Prints
        "ready" once set up, just before the first step.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import minnet
from minnet.nn import Linear, MSELoss, ReLU, Sequential

D_IN, HIDDEN, D_OUT, N_DATA, BATCH = 12, 24, 3, 64, 16
HYPER = dict(lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-3)
#: Other optimizers of the family, by name: (class name, hyperparameters); the variant's
#: "optimizer" key selects one (Adam with HYPER when absent).
OTHERS: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "SGD", "lr": 1e-2},
    "sgd-momentum": {"optimizer": "SGD", "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-3},
    "sgd-nesterov": {"optimizer": "SGD", "lr": 1e-2, "momentum": 0.9, "nesterov": True},
    "sgd-dampening-maximize": {"optimizer": "SGD", "lr": 1e-4, "momentum": 0.5,
                               "dampening": 0.3, "maximize": True},
    "adamw": {"optimizer": "AdamW", "lr": 3e-2},
    "adamw-amsgrad": {"optimizer": "AdamW", "lr": 3e-2, "amsgrad": True, "weight_decay": 0.1},
}  # fmt: skip


def variants() -> dict[str, dict[str, Any]]:
    """Every Adam variant: EPS_MODES x AMSGRAD_MAX_MODES (plus plain Adam for each eps mode),
    and the other optimizers of :data:`OTHERS`.

    Falls back to plain Adam and AMSGrad on an optimizer without those constants.
    """
    eps_modes = getattr(minnet.optim, "EPS_MODES", None)
    max_modes = getattr(minnet.optim, "AMSGRAD_MAX_MODES", None)
    if eps_modes is None or max_modes is None:
        return {"adam": {"amsgrad": False}, "amsgrad": {"amsgrad": True}}
    out: dict[str, dict[str, Any]] = dict(OTHERS)
    for eps_mode in eps_modes:
        out[f"{eps_mode}-adam"] = {"eps_mode": eps_mode, "amsgrad": False}
        for max_mode in max_modes:
            out[f"{eps_mode}-amsgrad-{max_mode}"] = {
                "eps_mode": eps_mode,
                "amsgrad": True,
                "amsgrad_max": max_mode,
            }
    return out


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    return rng.standard_normal((N_DATA, D_IN)), rng.standard_normal((N_DATA, D_OUT))


def make_optimizer(params: Any, variant: dict[str, Any]) -> Any:
    """Adam with ``HYPER`` and the variant's options; a variant with an ``"optimizer"`` key
    names another class of ``minnet.optim``, given only the variant's other options."""
    options = dict(variant)
    name = options.pop("optimizer", "Adam")
    if name == "Adam":
        return minnet.optim.Adam(params, **{**HYPER, **options})
    return getattr(minnet.optim, name)(params, **options)


def fresh(variant: dict[str, Any]) -> dict[str, Any]:
    """Everything a run needs at step 0."""
    model = Sequential(
        Linear(D_IN, HIDDEN, rng=1), ReLU(), Linear(HIDDEN, D_OUT, dtype=np.float64, rng=2)
    )
    return {
        "model": model,
        "optimizer": make_optimizer(model.parameters(), variant),
        "variant": variant,
        "step": 0,
        "rng": np.random.default_rng(7),
    }


def checkpoint(run: dict[str, Any]) -> dict[str, Any]:
    """The run as a tree for ``minnet.save``."""
    return {
        "model": run["model"].state_dict(),
        "optimizer": run["optimizer"].state_dict(),
        "variant": run["variant"],
        "step": run["step"],
        "rng": run["rng"].bit_generator.state,
    }


def restore(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A run rebuilt from :func:`checkpoint`'s tree, as a fresh process would."""
    run = fresh(ckpt["variant"])
    run["model"].load_state_dict(ckpt["model"])
    run["optimizer"].load_state_dict(ckpt["optimizer"])
    run["step"] = ckpt["step"]
    run["rng"].bit_generator.state = ckpt["rng"]
    return run


def train(
    run: dict[str, Any], steps: int, path: str | None = None, every: int = 0
) -> dict[str, Any]:
    """Train until ``run["step"] == steps``, saving to ``path`` every ``every`` steps."""
    x, y = data()
    model, opt, rng = run["model"], run["optimizer"], run["rng"]
    loss_fn = MSELoss()
    while run["step"] < steps:
        idx = rng.choice(N_DATA, BATCH, replace=False)
        loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        run["step"] += 1
        if path is not None and run["step"] % every == 0:
            minnet.save(checkpoint(run), path)
    return run


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "resume":
        src, out, steps = args[0], args[1], int(args[2])
        runs = {name: restore(ckpt) for name, ckpt in minnet.load(src).items()}
        minnet.save({name: checkpoint(train(r, steps)) for name, r in runs.items()}, out)
    elif mode == "run":
        path, out, steps, every = args[0], args[1], int(args[2]), int(args[3])
        try:
            run = restore(minnet.load(path))
        except FileNotFoundError:
            run = fresh({})
        print("ready", run["step"], flush=True)
        minnet.save(checkpoint(train(run, steps, path, every)), out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

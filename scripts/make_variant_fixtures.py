"""Record reference trajectories of every Adam variant from the library that defines it.

Each variant of ``minnet.optim.Adam`` (``eps_mode`` x ``amsgrad_max``) is recorded from the
library whose formula it claims to reproduce; tests/test_variant_parity.py replays the files
with minnet (no reference library needed to run the tests).

| minnet variant                   | recorded from                                              |
|----------------------------------|------------------------------------------------------------|
| outside, Adam and AMSGrad "raw"  | ``torch.optim.Adam`` (amsgrad False / True)                |
| outside, Adam                    | ``optax.adam(eps=eps, eps_root=0)``                        |
| inside, Adam                     | ``optax.adam(eps=0, eps_root=eps)``                        |
| hat, Adam and AMSGrad "raw"      | Keras 3 ``keras.optimizers.Adam(epsilon=eps)``             |
| outside/inside, AMSGrad          | ``optax.amsgrad`` (max over bias-corrected nu)             |
| "corrected"                      |                                                            |
| outside/inside, AMSGrad "paper"  | ``optax.amsgrad(bias_correction_mu=False,                  |
|                                  | bias_correction_nu=False)``                                |
| outside, AMSGrad "paper"         | ``reddi2018_amsgrad`` below: a NumPy transcription of      |
|                                  | Reddi et al. 2018, Algorithm 2 (not a library)             |
| atan2, Adam                      | ``adam_atan2_pytorch.AdamAtan2`` (a=1.27, b=1)             |

(outside/hat/inside/atan2 are ``eps_mode``; raw/corrected/paper are ``amsgrad_max``.)

The problem is a least-squares fit ``0.5/n * ||A w - b||^2`` whose gradient
``g = A.T @ (A @ w - b) / n`` is computed in NumPy from the current parameters, so no framework
autograd is involved and the replay computes the identical gradient. ``A`` has zero columns
(coordinates whose gradient is exactly zero) and columns scaled by powers of two from 1 down to
2**-36, so that eps dominates the denominator for some coordinates and not for others. ``A`` is
stored as int8 entries times a power-of-two scale per column, so it is exact and small.

Run by hand in a separate environment with the reference libraries (never in the project venv):

    python3 -m venv /work/refenv
    /work/refenv/bin/pip install torch==2.13.0 numpy einops "jax[cpu]" optax keras
    /work/refenv/bin/pip install --no-deps adam-atan2-pytorch   # its pin must not pull torch
    /work/refenv/bin/python scripts/make_variant_fixtures.py     # writes tests/fixtures/variant_*

Keras runs on its JAX backend (``keras/src/optimizers/adam.py``'s generic ``update_step``), with
``jax_enable_x64`` and floatx float64. Every recording is in float64.

Keys of each ``variant_<name>.npz``: ``config`` (JSON text: library, library_version,
reference call, minnet_kwargs for ``minnet.optim.Adam``, steps, checkpoints), ``a_int8``,
``a_col_exp`` (``A = a_int8 * 2.0**a_col_exp``), ``b``, ``w0`` (initial parameters),
``checkpoints`` (parameters after the steps listed in config["checkpoints"], one row each),
``final`` (parameters after the last step) and ``norms`` (``||w||_2`` after every step).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

N_SAMPLES = 64
N_PARAMS = 192
N_ZERO_COLUMNS = 16
STEPS = 300
CHECKPOINTS = (1, 2, 5, 20, 100, 300)


def make_problem(seed: int = 0) -> dict[str, np.ndarray]:
    """The least-squares problem shared by every fixture (exact in float64)."""
    rng = np.random.default_rng(seed)
    a_int8 = rng.integers(-8, 9, size=(N_SAMPLES, N_PARAMS), dtype=np.int8)
    zero = rng.choice(N_PARAMS, size=N_ZERO_COLUMNS, replace=False)
    a_int8[:, zero] = 0
    # Column scales 2**0 ... 2**-36: gradients from ~1 down to ~1e-11.
    a_col_exp = -rng.integers(0, 37, size=N_PARAMS).astype(np.int64)
    b = rng.standard_normal(N_SAMPLES)
    w0 = 0.5 * rng.standard_normal(N_PARAMS)
    return {"a_int8": a_int8, "a_col_exp": a_col_exp, "b": b, "w0": w0}


def matrix(problem: dict[str, np.ndarray]) -> np.ndarray:
    """``A`` in float64 (int8 entries times powers of two: exact)."""
    return problem["a_int8"].astype(np.float64) * np.exp2(problem["a_col_exp"].astype(np.float64))


def gradient(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Gradient of ``0.5/n * ||A w - b||^2``; the replay uses the same expression."""
    return a.T @ (a @ w - b) / a.shape[0]


# Each recorder takes (problem, hyperparameters) and returns the parameters after every step,
# shape (steps, n_params). ``hp`` holds lr, betas, eps, amsgrad and the library options.
Recorder = Callable[[dict[str, np.ndarray], dict], np.ndarray]


def record_torch(problem: dict[str, np.ndarray], hp: dict) -> np.ndarray:
    import torch

    a, b = matrix(problem), problem["b"]
    w = torch.tensor(problem["w0"], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam(
        [w], lr=hp["lr"], betas=hp["betas"], eps=hp["eps"], amsgrad=hp["amsgrad"], foreach=False
    )
    out = []
    for _ in range(STEPS):
        w.grad = torch.from_numpy(gradient(a, b, w.detach().numpy()))
        opt.step()
        out.append(w.detach().numpy().copy())
    return np.array(out)


def record_adam_atan2(problem: dict[str, np.ndarray], hp: dict) -> np.ndarray:
    import torch
    from adam_atan2_pytorch import AdamAtan2

    a, b = matrix(problem), problem["b"]
    w = torch.tensor(problem["w0"], dtype=torch.float64, requires_grad=True)
    # weight_decay=0: AdamAtan2's decay is decoupled (p *= 1 - lr*wd), unlike minnet's L2.
    opt = AdamAtan2([w], lr=hp["lr"], betas=hp["betas"], weight_decay=0.0, a=1.27, b=1.0)
    out = []
    for _ in range(STEPS):
        w.grad = torch.from_numpy(gradient(a, b, w.detach().numpy()))
        opt.step()
        out.append(w.detach().numpy().copy())
    return np.array(out)


def _jax64():
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def record_optax(problem: dict[str, np.ndarray], hp: dict) -> np.ndarray:
    jax = _jax64()
    import jax.numpy as jnp
    import optax

    a, b = matrix(problem), problem["b"]
    kw = {"b1": hp["betas"][0], "b2": hp["betas"][1], "eps": hp["optax_eps"]}
    kw["eps_root"] = hp["optax_eps_root"]
    if hp["amsgrad"]:
        bias = hp["optax_bias_correction"]
        tx = optax.amsgrad(hp["lr"], bias_correction_mu=bias, bias_correction_nu=bias, **kw)
    else:
        tx = optax.adam(hp["lr"], nesterov=False, **kw)
    params = jnp.asarray(problem["w0"], dtype=jnp.float64)
    state = tx.init(params)

    @jax.jit
    def apply(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    out = []
    for _ in range(STEPS):
        g = jnp.asarray(gradient(a, b, np.asarray(params)))
        params, state = apply(g, state, params)
        assert params.dtype == jnp.float64
        out.append(np.asarray(params).copy())
    return np.array(out)


def record_keras(problem: dict[str, np.ndarray], hp: dict) -> np.ndarray:
    _jax64()
    os.environ.setdefault("KERAS_BACKEND", "jax")  # read when keras is first imported
    import keras

    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax (the default here)"
    keras.config.set_floatx("float64")
    a, b = matrix(problem), problem["b"]
    w = keras.Variable(problem["w0"], dtype="float64")
    opt = keras.optimizers.Adam(
        learning_rate=hp["lr"],
        beta_1=hp["betas"][0],
        beta_2=hp["betas"][1],
        epsilon=hp["eps"],
        amsgrad=hp["amsgrad"],
    )
    out = []
    for _ in range(STEPS):
        g = gradient(a, b, np.asarray(w.value))
        opt.apply_gradients([(keras.ops.convert_to_tensor(g, dtype="float64"), w)])
        assert w.dtype == "float64"
        out.append(np.asarray(w.value).copy())
    return np.array(out)


def reddi2018_amsgrad(problem: dict[str, np.ndarray], hp: dict) -> np.ndarray:
    """Reddi, Kale & Kumar 2018, "On the Convergence of Adam and Beyond", Algorithm 2 (AMSGrad).

    Transcribed from the paper with a constant step size alpha_t = lr and constant
    beta1_t = beta1 (the paper's experiments; its theory lets both decay)::

        m_t     = beta1 * m_{t-1} + (1 - beta1) * g_t
        v_t     = beta2 * v_{t-1} + (1 - beta2) * g_t**2
        vhat_t  = max(vhat_{t-1}, v_t)
        x_{t+1} = x_t - alpha_t * m_t / (sqrt(vhat_t) + eps)

    No bias correction of m or v. The paper has no eps (it divides by sqrt(vhat_t)); eps is added
    outside the square root as every library does, so that never-updated coordinates stay finite.
    """
    a, b = matrix(problem), problem["b"]
    beta1, beta2 = hp["betas"]
    x = problem["w0"].copy()
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    vhat = np.zeros_like(x)
    out = []
    for _ in range(STEPS):
        g = gradient(a, b, x)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        vhat = np.maximum(vhat, v)
        x = x - hp["lr"] * m / (np.sqrt(vhat) + hp["eps"])
        out.append(x.copy())
    return np.array(out)


def _version(dist: str) -> str:
    return importlib.metadata.version(dist)


# Two settings per variant: small eps with PyTorch's betas, large eps with shorter memory.
SETTINGS = (
    {"tag": "eps1e-8", "lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8},
    {"tag": "eps1e-3", "lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-3},
)


# (name, library, distribution for the version, recorder, reference call, minnet variant).
# The reference call is formatted with the fixture's hyperparameters.
VARIANTS: list[tuple[str, str, str, Recorder, str, dict]] = [
    (
        "torch_outside_adam", "PyTorch", "torch", record_torch,
        "torch.optim.Adam(lr={lr}, betas={betas}, eps={eps}, amsgrad=False)",
        {"amsgrad": False, "eps_mode": "outside", "amsgrad_max": "raw"},
    ),
    (
        "torch_outside_amsgrad_raw", "PyTorch", "torch", record_torch,
        "torch.optim.Adam(lr={lr}, betas={betas}, eps={eps}, amsgrad=True)",
        {"amsgrad": True, "eps_mode": "outside", "amsgrad_max": "raw"},
    ),
    (
        "optax_outside_adam", "optax", "optax", record_optax,
        "optax.adam({lr}, b1={b1}, b2={b2}, eps={optax_eps}, eps_root={optax_eps_root})",
        {"amsgrad": False, "eps_mode": "outside", "amsgrad_max": "raw"},
    ),
    (
        "optax_inside_adam", "optax", "optax", record_optax,
        "optax.adam({lr}, b1={b1}, b2={b2}, eps={optax_eps}, eps_root={optax_eps_root})",
        {"amsgrad": False, "eps_mode": "inside", "amsgrad_max": "raw"},
    ),
    (
        "keras_hat_adam", "Keras 3", "keras", record_keras,
        "keras.optimizers.Adam(learning_rate={lr}, beta_1={b1}, beta_2={b2}, epsilon={eps}, "
        "amsgrad=False)",
        {"amsgrad": False, "eps_mode": "hat", "amsgrad_max": "raw"},
    ),
    (
        "keras_hat_amsgrad_raw", "Keras 3", "keras", record_keras,
        "keras.optimizers.Adam(learning_rate={lr}, beta_1={b1}, beta_2={b2}, epsilon={eps}, "
        "amsgrad=True)",
        {"amsgrad": True, "eps_mode": "hat", "amsgrad_max": "raw"},
    ),
    (
        "optax_outside_amsgrad_corrected", "optax", "optax", record_optax,
        "optax.amsgrad({lr}, b1={b1}, b2={b2}, eps={optax_eps}, eps_root={optax_eps_root})",
        {"amsgrad": True, "eps_mode": "outside", "amsgrad_max": "corrected"},
    ),
    (
        "optax_inside_amsgrad_corrected", "optax", "optax", record_optax,
        "optax.amsgrad({lr}, b1={b1}, b2={b2}, eps={optax_eps}, eps_root={optax_eps_root})",
        {"amsgrad": True, "eps_mode": "inside", "amsgrad_max": "corrected"},
    ),
    (
        "optax_outside_amsgrad_paper", "optax", "optax", record_optax,
        "optax.amsgrad({lr}, b1={b1}, b2={b2}, eps={optax_eps}, eps_root={optax_eps_root}, "
        "bias_correction_mu=False, bias_correction_nu=False)",
        {"amsgrad": True, "eps_mode": "outside", "amsgrad_max": "paper"},
    ),
    (
        "optax_inside_amsgrad_paper", "optax", "optax", record_optax,
        "optax.amsgrad({lr}, b1={b1}, b2={b2}, eps={optax_eps}, eps_root={optax_eps_root}, "
        "bias_correction_mu=False, bias_correction_nu=False)",
        {"amsgrad": True, "eps_mode": "inside", "amsgrad_max": "paper"},
    ),
    (
        "reddi2018_outside_amsgrad_paper", "NumPy transcription of Reddi et al. 2018, Alg. 2",
        "numpy", reddi2018_amsgrad,
        "scripts/make_variant_fixtures.py:reddi2018_amsgrad(lr={lr}, b1={b1}, b2={b2}, "
        "eps={eps})",
        {"amsgrad": True, "eps_mode": "outside", "amsgrad_max": "paper"},
    ),
    (
        "adam_atan2_pytorch_atan2_adam", "adam-atan2-pytorch", "adam-atan2-pytorch",
        record_adam_atan2,
        "adam_atan2_pytorch.AdamAtan2(lr={lr}, betas={betas}, weight_decay=0, a=1.27, b=1)",
        {"amsgrad": False, "eps_mode": "atan2", "amsgrad_max": "raw"},
    ),
]  # fmt: skip


def fixtures() -> list[dict]:
    """Every (variant, setting) to record, with its hyperparameters filled in."""
    out: list[dict] = []
    for name, library, dist, recorder, reference, variant in VARIANTS:
        for s in SETTINGS:
            hp = {"lr": s["lr"], "betas": s["betas"], "eps": s["eps"], **variant}
            hp["b1"], hp["b2"] = s["betas"]
            inside = variant["eps_mode"] == "inside"  # optax: eps_root (inside) or eps (outside)
            hp["optax_eps"] = 0.0 if inside else s["eps"]
            hp["optax_eps_root"] = s["eps"] if inside else 0.0
            hp["optax_bias_correction"] = variant["amsgrad_max"] != "paper"
            out.append(
                {
                    "name": f"{name}_{s['tag']}",
                    "library": library,
                    "dist": dist,
                    "recorder": recorder,
                    "reference": reference.format(**hp),
                    "hp": hp,
                }
            )
    return out


def main() -> None:
    """Record every fixture and write tests/fixtures/variant_<name>.npz."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent.parent / "tests" / "fixtures"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    problem = make_problem()
    for f in fixtures():
        hp = f["hp"]
        traj = f["recorder"](problem, hp)
        assert traj.shape == (STEPS, N_PARAMS) and traj.dtype == np.float64
        assert np.isfinite(traj).all(), f"{f['name']}: non-finite parameters"
        config = {
            "name": f["name"],
            "library": f["library"],
            "library_version": _version(f["dist"]),
            "reference": f["reference"],
            "minnet_kwargs": {
                "lr": hp["lr"],
                "betas": list(hp["betas"]),
                "eps": hp["eps"],
                "amsgrad": hp["amsgrad"],
                "eps_mode": hp["eps_mode"],
                "amsgrad_max": hp["amsgrad_max"],
            },
            "dtype": "float64",
            "steps": STEPS,
            "checkpoints": list(CHECKPOINTS),
        }
        path = args.out / f"variant_{f['name']}.npz"
        np.savez_compressed(
            path,
            config=np.array(json.dumps(config)),
            **problem,
            checkpoints=traj[[c - 1 for c in CHECKPOINTS]],
            final=traj[-1],
            norms=np.linalg.norm(traj, axis=1),
        )
        moved = np.abs(traj[-1] - problem["w0"]).max()
        print(f"{path.name}: {config['reference']}; max |w - w0| = {moved:.3g}")


if __name__ == "__main__":
    main()

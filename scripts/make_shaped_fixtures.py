"""Record reference trajectories of the shaped optimizers (Adafactor) from the library each
variant names, on parameters with a matrix shape.

The family's least-squares problem (scripts/make_family_fixtures.py) has 192 coordinates; a
factored second moment needs matrices, and optax factors only matrices whose two largest
dimensions are at least 128. So these fixtures have their own problem, four parameters

    W (130, 140)   factored by all three libraries
    M (8, 10)      factored by PyTorch and Keras (every matrix), not by optax (< 128)
    b (40,)        a vector: an unfactored second moment everywhere
    s (1,)         a scalar-like parameter

and the separable quadratic ``0.5 * sum(h * (w - w_star)**2)``, gradient ``g = h * (w - w_star)``
computed in NumPy from the current parameters, ``h = 2**-k`` with ``k`` drawn from 0..36 (so
some gradients are ~1e-11 and eps matters) and 5% of ``h`` exactly 0 (those gradients are 0:
eps1=0 would divide 0 by 0). ``h``, ``w_star`` and ``w0`` (float32 values, float64 arithmetic)
are stored once in ``tests/fixtures/shaped_problem.npz``.

Each fixture is 300 float64 steps. It stores the parameters after the steps in CHECKPOINTS at
the coordinates SAMPLE (every coordinate of M, b and s, and 1,000 of W: the factored moments
couple each coordinate to its row and column, so an error anywhere reaches them) and the norm
of each parameter after every step. tests/test_shaped_parity.py replays them with minnet.

Run by hand with the libraries (never in the project venv):

    PYTHONPATH=. <venv with torch, optax>/bin/python scripts/make_shaped_fixtures.py \
        --lib torch optax
    KERAS_BACKEND=jax PYTHONPATH=. <venv with keras, jax>/bin/python \
        scripts/make_shaped_fixtures.py --lib keras

Before a fixture is written, minnet's own ``Adafactor`` with the fixture's ``minnet_kwargs`` is
run from the same start (when minnet imports: its venv needs numba) and its largest relative gap
to the library printed; a gap above 1e-9 stops the script.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
from pathlib import Path

import numpy as np

STEPS = 300
CHECKPOINTS = (1, 2, 10, 100, 300)
SHAPES = {"W": (130, 140), "M": (8, 10), "b": (40,), "s": (1,)}
#: Muon's parameters (2-D only, as PyTorch's Muon): a wide, a small and a tall matrix.
MUON_SHAPES = {"W": (130, 140), "M": (8, 10), "T": (12, 5)}
PROBLEM_FILE = "shaped_problem.npz"
FIXTURE_DIR = Path(__file__).parent.parent / "tests" / "fixtures"


def make_problem() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261208)
    out = {}
    for name, shape in SHAPES.items():
        k = rng.integers(0, 37, shape)
        h = 2.0 ** -k.astype(np.float64)
        h[rng.random(shape) < 0.05] = 0.0
        out[f"h_{name}"] = h
        out[f"star_{name}"] = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
        out[f"w0_{name}"] = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    rng = np.random.default_rng(20261209)  # Muon's tall matrix, without moving the others
    shape = MUON_SHAPES["T"]
    out["h_T"] = 2.0 ** -rng.integers(0, 37, shape).astype(np.float64)
    out["star_T"] = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    out["w0_T"] = rng.standard_normal(shape).astype(np.float32).astype(np.float64)
    return out


def sample_index(shapes: dict = SHAPES) -> np.ndarray:
    """Flat indices (over the concatenation of the parameters, W first) kept at the
    checkpoints."""
    rng = np.random.default_rng(7)
    n_w = int(np.prod(shapes["W"]))
    rest = sum(int(np.prod(s)) for k, s in shapes.items() if k != "W")
    w_part = np.sort(rng.choice(n_w, 1000, replace=False))
    return np.concatenate([w_part, n_w + np.arange(rest)])


def gradient(problem: dict[str, np.ndarray], name: str, w: np.ndarray) -> np.ndarray:
    return problem[f"h_{name}"] * (w - problem[f"star_{name}"])


def record_torch(fx: dict, problem: dict) -> list[list[np.ndarray]]:
    import torch

    torch.set_default_dtype(torch.float64)
    shapes = fx.get("shapes") or SHAPES
    ps = [torch.tensor(problem[f"w0_{k}"], requires_grad=True) for k in shapes]
    if fx["optimizer"] == "Muon":
        import torch.optim._muon as muon

        if not hasattr(muon, "_bfloat16_ns"):
            muon._bfloat16_ns = muon._zeropower_via_newtonschulz
        muon._zeropower_via_newtonschulz = (
            muon._bfloat16_ns if fx.get("torch_ns") == "bfloat16" else _ns_in_grads_dtype
        )
    opt = eval(fx["reference"], {"torch": torch, "params": ps})
    out = []
    for _ in range(STEPS):
        for k, p in zip(shapes, ps):
            g = fx.get("grad_scale", 1.0) * gradient(problem, k, p.detach().numpy())
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        out.append([p.detach().numpy().copy() for p in ps])
    return out


def _ns_in_grads_dtype(grad, ns_coefficients, ns_steps, eps):  # type: ignore[no-untyped-def]
    """PyTorch 2.13's ``_zeropower_via_newtonschulz`` line by line, without its ``.bfloat16()``:
    the iteration in the gradient's dtype (float64 here)."""
    import torch

    a, b, c = ns_coefficients
    ortho_grad = grad.clone()
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    ortho_grad.div_(ortho_grad.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram_matrix = ortho_grad @ ortho_grad.T
        gram_update = torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c)
        ortho_grad = torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    return ortho_grad


def record_optax(fx: dict, problem: dict) -> list[list[np.ndarray]]:
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    import jax.numpy as jnp
    import optax

    tx = eval(fx["reference"], {"optax": optax})
    params = [jnp.asarray(problem[f"w0_{k}"]) for k in SHAPES]
    state = tx.init(params)

    @jax.jit
    def apply(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    out = []
    for _ in range(STEPS):
        grads = [jnp.asarray(fx.get("grad_scale", 1.0) * gradient(problem, k, np.asarray(p)))
                 for k, p in zip(SHAPES, params)]  # fmt: skip
        params, state = apply(grads, state, params)
        out.append([np.asarray(p).copy() for p in params])
        assert out[-1][0].dtype == np.float64
    return out


def record_keras(fx: dict, problem: dict) -> list[list[np.ndarray]]:
    import jax

    jax.config.update("jax_enable_x64", True)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    assert keras.backend.backend() == "jax"
    keras.config.set_floatx("float64")
    from keras.src.backend.jax import numpy as knp

    if not hasattr(knp, "_float32_mean"):
        knp._float32_mean = knp.mean
    if fx.get("keras_float32_means"):  # Keras as it is: every mean of float64 in float32
        knp.mean = knp._float32_mean
    else:  # every mean in float64 (result_type(float64, "float32") is "float32" in Keras 3)
        import jax.numpy as jnp

        knp.mean = lambda x, axis=None, keepdims=False: jnp.mean(
            jnp.asarray(x), axis=axis, keepdims=keepdims
        )
    ws = [keras.Variable(problem[f"w0_{k}"], dtype="float64") for k in SHAPES]
    opt = eval(fx["reference"], {"keras": keras})
    out = []
    for _ in range(STEPS):
        grads = [keras.ops.convert_to_tensor(
            fx.get("grad_scale", 1.0) * gradient(problem, k, np.asarray(w.value)), dtype="float64")
            for k, w in zip(SHAPES, ws)]  # fmt: skip
        opt.apply_gradients(list(zip(grads, ws)))
        out.append([np.asarray(w.value).copy() for w in ws])
    return out


def run_minnet(fx: dict, problem: dict) -> list[list[np.ndarray]] | None:
    try:
        import minnet.optim
        from minnet.nn import Parameter
    except ImportError:
        return None
    shapes = fx.get("shapes") or SHAPES
    ps = [Parameter(problem[f"w0_{k}"].copy()) for k in shapes]
    kwargs = dict(fx["minnet_kwargs"])
    for key in ("eps", "ns_coefficients"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    opt = getattr(minnet.optim, fx["optimizer"])(ps, **kwargs)
    out = []
    for _ in range(STEPS):
        for k, p in zip(shapes, ps):
            p.grad[...] = fx.get("grad_scale", 1.0) * gradient(problem, k, p.data)
        opt.step()
        out.append([p.data.copy() for p in ps])
    return out


RECORDERS = {"torch": record_torch, "optax": record_optax, "keras": record_keras}
LIBRARIES = {"torch": ("PyTorch", "torch"), "optax": ("optax", "optax"),
             "keras": ("Keras 3", "keras")}  # fmt: skip


def build_fixtures() -> list[dict]:
    fx = []
    # PyTorch: defaults (eps1 = float64's machine epsilon, a floor), eps1 = 1e-6 dominating the
    # small gradients' sqrt(v_hat), and every other option (decay, d, maximize, weight decay).
    fx += [
        dict(lib="torch", detail="defaults", reference="torch.optim.Adafactor(params)",
             minnet_kwargs={}),
        dict(lib="torch", detail="eps1e-6", minnet_kwargs=dict(eps=(1e-6, 1e-3)),
             reference="torch.optim.Adafactor(params, eps=(1e-6, 1e-3))"),
        dict(lib="torch", detail="options", grad_scale=-1.0,
             minnet_kwargs=dict(lr=1e-2, beta2_decay=-0.6, eps=(None, 1e-2), d=2.0,
                                maximize=True),
             reference="torch.optim.Adafactor(params, lr=0.01, beta2_decay=-0.6, "
                       "eps=(None, 0.01), d=2.0, maximize=True)"),
        # weight decay at lr=1e-3: at lr=1e-2 and weight_decay=0.1 the decay and the normalised
        # steps of the small-h coordinates settle into an oscillation that is chaotic (a 1e-13
        # change of w0 grows past 1e-3), so no library could be replayed to 1e-9
        dict(lib="torch", detail="wd", minnet_kwargs=dict(lr=1e-3, weight_decay=1.0),
             reference="torch.optim.Adafactor(params, lr=0.001, weight_decay=1.0)"),
    ]  # fmt: skip
    # Keras 3: defaults (epsilon_1=1e-30 added to g**2) and epsilon_1=1e-12 dominating the small
    # gradients' g**2 (~1e-22), and the other options.
    fx += [
        dict(lib="keras", detail="defaults", minnet_kwargs=dict(variant="keras"),
             reference="keras.optimizers.Adafactor()"),
        dict(lib="keras", detail="eps1e-12", minnet_kwargs=dict(variant="keras",
                                                                eps=(1e-12, 1e-3)),
             reference="keras.optimizers.Adafactor(epsilon_1=1e-12)"),
        dict(lib="keras", detail="options",
             minnet_kwargs=dict(variant="keras", lr=3e-3, beta2_decay=-0.6, eps=(1e-30, 1e-2),
                                d=2.0),
             reference="keras.optimizers.Adafactor(learning_rate=0.003, beta_2_decay=-0.6, "
                       "epsilon_2=0.01, clip_threshold=2.0)"),
    ]  # fmt: skip
    # Keras as it is: keras.ops.mean computes a float64 array's mean in float32 (its
    # result_type(float64, "float32") is float32), so Keras's float64 Adafactor is ~1e-8 from
    # float64 arithmetic; the fixtures above record Keras with float64 means (the script patches
    # keras.src.backend.jax.numpy.mean), this one without, replayed to its own tolerance.
    fx += [
        dict(lib="keras", detail="defaults_float32_means", keras_float32_means=True,
             minnet_kwargs=dict(variant="keras"), reference="keras.optimizers.Adafactor()",
             tolerance=1e-7),
    ]  # fmt: skip
    # optax: learning_rate=1e-2 (its default None is lr=1: steps of the parameters' own RMS,
    # which oscillate around the minimum), eps 1e-30 and 1e-12, and its other options.
    fx += [
        dict(lib="optax", detail="lr1e-2", minnet_kwargs=dict(variant="optax", lr=1e-2),
             reference="optax.adafactor(learning_rate=0.01)"),
        dict(lib="optax", detail="lr1e-2_eps1e-12",
             minnet_kwargs=dict(variant="optax", lr=1e-2, eps=(1e-12, 1e-3)),
             reference="optax.adafactor(learning_rate=0.01, eps=1e-12)"),
        dict(lib="optax", detail="options",
             minnet_kwargs=dict(variant="optax", lr=3e-3, beta2_decay=-0.7, d=2.0,
                                weight_decay=1e-2, min_dim_size_to_factor=8),
             reference="optax.adafactor(learning_rate=0.003, decay_rate=0.7, "
                       "clipping_threshold=2.0, weight_decay_rate=0.01, "
                       "min_dim_size_to_factor=8)"),
    ]  # fmt: skip
    for f in fx:
        f["optimizer"] = "Adafactor"
        f["minnet_kwargs"].setdefault("variant", "torch")
    # Muon (PyTorch): its Newton-Schulz iteration is bfloat16 whatever the parameter's dtype;
    # these record it in float64 (the script swaps in _ns_in_grads_dtype, the same code without
    # .bfloat16()), the last one as PyTorch has it, replayed with ns_dtype="bfloat16".
    muon = [
        dict(lib="torch", detail="defaults", minnet_kwargs={},
             reference="torch.optim.Muon(params)"),
        dict(lib="torch", detail="eps1e-5_tiny_grads", grad_scale=1e-9,
             minnet_kwargs=dict(lr=1e-2, eps=1e-5),
             reference="torch.optim.Muon(params, lr=0.01, eps=1e-05)"),
        dict(lib="torch", detail="options",
             minnet_kwargs=dict(lr=2e-3, weight_decay=0.01, momentum=0.9, nesterov=False,
                                ns_steps=3, adjust_lr_fn="match_rms_adamw"),
             reference="torch.optim.Muon(params, lr=0.002, weight_decay=0.01, momentum=0.9, "
                       "nesterov=False, ns_steps=3, adjust_lr_fn='match_rms_adamw')"),
        dict(lib="torch", detail="ns_bfloat16", torch_ns="bfloat16", tolerance=1e-4,
             minnet_kwargs=dict(ns_dtype="bfloat16"), reference="torch.optim.Muon(params)"),
    ]  # fmt: skip
    for f in muon:
        f["optimizer"] = "Muon"
        f["shapes"] = MUON_SHAPES
    fx += muon
    for f in fx:
        f["name"] = f"shaped_{f['optimizer'].lower()}_{f['lib']}_{f['detail']}"
    return fx


def rel_gap(ours: list[list[np.ndarray]], ref: list[list[np.ndarray]]) -> float:
    worst = 0.0
    for a_step, b_step in zip(ours, ref, strict=True):
        a = np.concatenate([x.ravel() for x in a_step])
        b = np.concatenate([x.ravel() for x in b_step])
        diff = np.abs(a - b).max()
        if not np.isfinite(diff):
            return float("inf")
        worst = max(worst, float(diff / np.abs(b).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", nargs="+", default=["torch", "optax", "keras"])
    parser.add_argument("-k", default="")
    parser.add_argument("--out", type=Path, default=FIXTURE_DIR)
    args = parser.parse_args()
    problem = make_problem()
    np.savez_compressed(
        args.out / PROBLEM_FILE,
        **{k: (v.astype(np.float32) if not k.startswith("h_") else v) for k, v in problem.items()},
    )
    for fx in build_fixtures():
        index = sample_index(fx.get("shapes") or SHAPES)
        if fx["lib"] not in args.lib or args.k not in fx["name"]:
            continue
        traj = RECORDERS[fx["lib"]](fx, problem)
        flat = np.array([np.concatenate([x.ravel() for x in step]) for step in traj])
        assert np.isfinite(flat).all(), fx["name"]
        line = fx["name"]
        ours = run_minnet(fx, problem)
        if ours is not None:
            gap = rel_gap(ours, traj)
            line += f": minnet gap {gap:.3g}"
            assert gap <= fx.get("tolerance", 1e-9), line
            # Not chaotic: a relative change of 1e-13 in w0 must stay below 1e-9.
            nudged = {k: v * (1 + 1e-13) if k.startswith("w0_") else v
                      for k, v in problem.items()}  # fmt: skip
            amp = rel_gap(run_minnet(fx, nudged), ours) / 1e-13  # type: ignore[arg-type]
            assert amp < 1e4, f"{line}: chaotic, a 1e-13 nudge grows {amp:.3g}x"
            line += f"; sensitivity {amp:.2g}x"
            if fx["detail"].startswith("eps"):  # eps must matter: the default misses by > 1e-3
                kw = {k: v for k, v in fx["minnet_kwargs"].items() if k != "eps"}
                miss = rel_gap(run_minnet(dict(fx, minnet_kwargs=kw), problem), traj)  # type: ignore[arg-type]
                assert miss > 1e-3, f"{line}: the default eps is only {miss:.3g} away"
                line += f"; default eps misses by {miss:.3g}"
        label, dist = LIBRARIES[fx["lib"]]
        config = dict(name=fx["name"], optimizer=fx["optimizer"],
                      minnet_kwargs=fx["minnet_kwargs"], library=label,
                      library_version=importlib.metadata.version(dist),
                      reference=fx["reference"], dtype="float64", steps=STEPS,
                      checkpoints=list(CHECKPOINTS), grad_scale=fx.get("grad_scale", 1.0),
                      shapes={k: list(v) for k, v in (fx.get("shapes") or SHAPES).items()},
                      problem=PROBLEM_FILE,
                      tolerance=fx.get("tolerance", 1e-9))  # fmt: skip
        if fx["lib"] == "keras":
            config["keras_means"] = "float32" if fx.get("keras_float32_means") else "float64"
        norms = np.array([[np.linalg.norm(x) for x in step] for step in traj])
        np.savez_compressed(
            args.out / f"{fx['name']}.npz",
            config=np.array(json.dumps(config)),
            sample=index,
            checkpoints=flat[[c - 1 for c in CHECKPOINTS]][:, index],
            norms=norms,
        )
        moved = np.abs(flat[-1] - flat[0]).max()
        print(f"{line}; max |w_300 - w_1| = {moved:.3g}", flush=True)


if __name__ == "__main__":
    main()

"""The implementations being timed. Each factory returns a zero-argument callable doing one step.

A factory raises ``ImportError`` when its library is missing; the runner then skips it with a note.
Every training step does what the seed program does once per iteration: forward, the loss, read the
loss value on the host (``loss.item()``, as the program prints it), zero the gradients, backward and
one AMSGrad step (lr=1e-4, eps=1e-8, sum-reduced MSE). All start from the same float32 data and
weights.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

N, D_IN, H, D_OUT = 64, 1000, 100, 10
LR, EPS = 1e-4, 1e-8
SEED_PARAMS = H * D_IN + H + D_OUT * H + D_OUT  # 101,110

Step = Callable[[], object]


def seed_data() -> dict[str, np.ndarray]:
    """The seed example's inputs, targets and PyTorch-style initial weights (float32)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D_IN), dtype=np.float32)
    y = rng.standard_normal((N, D_OUT), dtype=np.float32)
    b1, b2 = 1 / math.sqrt(D_IN), 1 / math.sqrt(H)
    return {
        "x": x,
        "y": y,
        "0.weight": rng.uniform(-b1, b1, (H, D_IN)).astype(np.float32),
        "0.bias": rng.uniform(-b1, b1, H).astype(np.float32),
        "2.weight": rng.uniform(-b2, b2, (D_OUT, H)).astype(np.float32),
        "2.bias": rng.uniform(-b2, b2, D_OUT).astype(np.float32),
    }


# -- whole training step ---------------------------------------------------------------------


def _minnet_step(input_grad: bool, threads: int | None = None) -> Step:
    import minnet

    if threads is not None:
        minnet.set_num_threads(threads)  # for the whole worker process
    d = seed_data()
    x, y = d["x"], d["y"]
    model = minnet.nn.Sequential(
        minnet.nn.Linear(D_IN, H), minnet.nn.ReLU(), minnet.nn.Linear(H, D_OUT)
    )
    model.load_state_dict({k: v for k, v in d.items() if "." in k})
    loss_fn = minnet.nn.MSELoss(reduction="sum")
    optimizer = minnet.optim.Adam(model.parameters(), lr=LR, eps=EPS, amsgrad=True)

    if not input_grad:

        def step() -> float:  # the seed example's loop body, line for line
            y_pred = model(x)
            loss = loss_fn(y_pred, y)
            value = loss.item()
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
            return value

    else:

        def step() -> float:
            y_pred = model(x)
            loss = loss_fn(y_pred, y)
            value = loss.item()
            optimizer.zero_grad()
            model.backward(loss_fn.backward(), input_grad=True)
            optimizer.step()
            return value

    return step


def minnet_step() -> Step:
    """The seed example's loop body: ``model.backward(loss_fn.backward())`` (no dLoss/dx), with
    minnet's default thread policy (``minnet.threads``)."""
    return _minnet_step(False)


def minnet_input_grad_step() -> Step:
    """As :func:`minnet_step` with ``model.backward(..., input_grad=True)``, which also computes
    and returns dLoss/dx (one more 64x100x1000 product)."""
    return _minnet_step(True)


def minnet_1thread_step() -> Step:
    """:func:`minnet_step` with ``minnet.set_num_threads(1)``."""
    return _minnet_step(False, 1)


def minnet_all_threads_step() -> Step:
    """:func:`minnet_step` with ``minnet.set_num_threads(os.cpu_count())``: BLAS on every core
    whatever the machine's load (the policy off)."""
    return _minnet_step(False, os.cpu_count() or 1)


def numpy_reference_step() -> Step:
    """Plain NumPy: textbook forward/backward with temporaries, and ``adam_reference``."""
    from minnet.optim.adam import adam_reference, adam_scalars, ams_kind

    d = seed_data()
    x, y = d["x"], d["y"]
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    flat = np.concatenate([d[k].ravel() for k in names])
    grad = np.zeros_like(flat)
    m, v, vmax = np.zeros_like(flat), np.zeros_like(flat), np.zeros_like(flat)
    offs = np.cumsum([0] + [d[k].size for k in names])
    w1, b1, w2, b2 = (flat[a:b].reshape(d[k].shape) for k, a, b in zip(names, offs, offs[1:]))
    gw1, gb1, gw2, gb2 = (grad[a:b].reshape(d[k].shape) for k, a, b in zip(names, offs, offs[1:]))
    t = [0]

    def step() -> float:
        h = np.maximum(x @ w1.T + b1, 0)
        diff = h @ w2.T + b2 - y
        value = float(np.dot(diff.ravel(), diff.ravel()))
        grad.fill(0)
        g2 = 2 * diff
        gw2[...] += g2.T @ h
        gb2[...] += g2.sum(0)
        g1 = np.where(h > 0, g2 @ w2, 0)
        gw1[...] += g1.T @ x
        gb1[...] += g1.sum(0)
        t[0] += 1
        s = adam_scalars(
            flat.dtype, lr=LR, beta1=0.9, beta2=0.999, eps=EPS, weight_decay=0.0, step=t[0],
            amsgrad=True,
        )  # fmt: skip
        adam_reference(flat, grad, (m, v, vmax), s, (0, ams_kind(True, "raw"), False))
        return value

    return step


def _torch_step(fused: bool | None) -> Step:
    import torch

    d = seed_data()
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    model = torch.nn.Sequential(
        torch.nn.Linear(D_IN, H), torch.nn.ReLU(), torch.nn.Linear(H, D_OUT)
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(d[name]))
    loss_fn = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, eps=EPS, amsgrad=True, fused=fused)

    def step() -> float:  # the PyTorch seed program's loop body
        y_pred = model(x)
        loss = loss_fn(y_pred, y)
        value = loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return value

    return step


def torch_step() -> Step:
    """PyTorch, default Adam (its foreach implementation on CPU), ``amsgrad=True``."""
    return _torch_step(None)


def torch_fused_step() -> Step:
    """PyTorch, ``Adam(..., fused=True)``."""
    return _torch_step(True)


def jax_step() -> Step:
    """JAX + optax: forward, ``value_and_grad`` and ``optax.amsgrad`` in one ``jax.jit``.

    Parameters and optimizer state are donated so XLA updates them in place; the loss is read
    on the host every step (``float(loss)``), as the seed program prints it.
    """
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        h = jnp.maximum(x @ p["0.weight"].T + p["0.bias"], 0)
        diff = h @ p["2.weight"].T + p["2.bias"] - y
        return jnp.sum(diff * diff)

    return _jax_jit_step(seed_data(), loss_fn, optax.amsgrad(LR, eps=EPS))


def _jax_jit_step(d: dict[str, np.ndarray], loss_fn: Callable[..., Any], tx: Any) -> Step:
    """``loss_fn(params, x, y)``'s value and gradient and ``tx``'s update in one ``jax.jit``,
    parameters (the keys of ``d`` with a dot) and optimizer state donated; the step returns the
    loss read on the host."""
    import jax
    import jax.numpy as jnp
    import optax

    params = {k: jnp.asarray(v) for k, v in d.items() if "." in k}
    x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])

    def train_step(p: dict, s: object, x: jax.Array, y: jax.Array) -> tuple:
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    train = jax.jit(train_step, donate_argnums=(0, 1))
    state = [params, tx.init(params)]

    def step() -> float:
        p, s, loss = train(state[0], state[1], x, y)
        state[0], state[1] = p, s
        return float(loss)

    return step


STEP_IMPLS: dict[str, Callable[[], Step]] = {
    "minnet": minnet_step,
    "minnet, input_grad=True": minnet_input_grad_step,
    "minnet, 1 BLAS thread": minnet_1thread_step,
    "minnet, BLAS on every core": minnet_all_threads_step,
    "NumPy reference": numpy_reference_step,
    "PyTorch Adam": torch_step,
    "PyTorch Adam fused": torch_fused_step,
    "JAX+optax jit": jax_step,
}

# -- a larger MLP ----------------------------------------------------------------------------

MLP_SIZES = (784, 1024, 1024, 10)
MLP_BATCH = 256
MLP_LR = 1e-3


def mlp_data() -> dict[str, np.ndarray]:
    """Inputs, integer labels and PyTorch-style initial weights of the larger MLP (float32)."""
    rng = np.random.default_rng(2)
    d: dict[str, np.ndarray] = {
        "x": rng.standard_normal((MLP_BATCH, MLP_SIZES[0]), dtype=np.float32),
        "y": rng.integers(0, MLP_SIZES[-1], MLP_BATCH),
    }
    for i, (n_in, n_out) in enumerate(zip(MLP_SIZES, MLP_SIZES[1:])):
        bound = 1 / math.sqrt(n_in)
        d[f"{2 * i}.weight"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)
        d[f"{2 * i}.bias"] = rng.uniform(-bound, bound, n_out).astype(np.float32)
    return d


def minnet_mlp_step() -> Step:
    """784 -> 1024 -> ReLU -> 1024 -> ReLU -> 10, batch 256, ``CrossEntropyLoss``, ``Adam``."""
    import minnet

    d = mlp_data()
    a, b, c, e = MLP_SIZES
    nn = minnet.nn
    model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, e))
    model.load_state_dict({k: v for k, v in d.items() if "." in k})
    loss_fn = nn.CrossEntropyLoss()
    optimizer = minnet.optim.Adam(model.parameters(), lr=MLP_LR)
    x, y = d["x"], d["y"]

    def step() -> float:
        loss = loss_fn(model(x), y)
        value = loss.item()
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
        return value

    return step


def _torch_mlp_step(fused: bool | None) -> Step:
    import torch

    d = mlp_data()
    a, b, c, e = MLP_SIZES
    nn = torch.nn
    model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, e))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(d[name]))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=MLP_LR, fused=fused)
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])

    def step() -> float:
        loss = loss_fn(model(x), y)
        value = loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return value

    return step


def torch_mlp_step() -> Step:
    """The larger MLP in PyTorch, default Adam."""
    return _torch_mlp_step(None)


def torch_fused_mlp_step() -> Step:
    """The larger MLP in PyTorch, ``Adam(fused=True)``."""
    return _torch_mlp_step(True)


def jax_mlp_step() -> Step:
    """The larger MLP in JAX + optax (``optax.adam``), the whole step under one ``jax.jit``."""
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        h = jnp.maximum(x @ p["0.weight"].T + p["0.bias"], 0)
        h = jnp.maximum(h @ p["2.weight"].T + p["2.bias"], 0)
        logits = h @ p["4.weight"].T + p["4.bias"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return _jax_jit_step(mlp_data(), loss_fn, optax.adam(MLP_LR))


MLP_IMPLS: dict[str, Callable[[], Step]] = {
    "minnet": minnet_mlp_step,
    "PyTorch Adam": torch_mlp_step,
    "PyTorch Adam fused": torch_fused_mlp_step,
    "JAX+optax jit": jax_mlp_step,
}


# -- optimizer step alone --------------------------------------------------------------------


def _grads(shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-2) for s in shapes]


def seed_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of the seed model (101,110 values in four arrays)."""
    return [(H, D_IN), (H,), (D_OUT, H), (D_OUT,)]


def minnet_optimizer(shapes: list[tuple[int, ...]]) -> Step:
    """``minnet.optim.Adam(amsgrad=True).step()`` on float32 parameters of these shapes."""
    import minnet

    grads = _grads(shapes)
    params = [minnet.nn.Parameter(np.ones(s, np.float32)) for s in shapes]
    optimizer = minnet.optim.Adam(params, lr=LR, eps=EPS, amsgrad=True)
    for p, g in zip(params, grads):
        p.grad[...] = g
    return optimizer.step


def _torch_optimizer(shapes: list[tuple[int, ...]], fused: bool | None) -> Step:
    import torch

    params = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
    for p, g in zip(params, _grads(shapes)):
        p.grad = torch.from_numpy(g)
    optimizer = torch.optim.Adam(params, lr=LR, eps=EPS, amsgrad=True, fused=fused)
    return optimizer.step


def torch_optimizer(shapes: list[tuple[int, ...]]) -> Step:
    """PyTorch default (foreach) AMSGrad step."""
    return _torch_optimizer(shapes, None)


def torch_fused_optimizer(shapes: list[tuple[int, ...]]) -> Step:
    """PyTorch ``fused=True`` AMSGrad step."""
    return _torch_optimizer(shapes, True)


def _stream_kernels() -> dict[int, Callable]:
    """One compiled no-arithmetic loop per number of state arrays (0 to 4)."""
    import numba

    jit = numba.njit(nogil=True, error_model="numpy")

    @jit
    def s0(p, g, s):  # pragma: no cover - compiled
        for i in range(p.shape[0]):
            p[i] = p[i] * s + g[i]

    @jit
    def s1(p, g, a, s):  # pragma: no cover - compiled
        for i in range(p.shape[0]):
            p[i] = p[i] * s + g[i]
            a[i] = a[i] * s

    @jit
    def s2(p, g, a, b, s):  # pragma: no cover - compiled
        for i in range(p.shape[0]):
            p[i] = p[i] * s + g[i]
            a[i] = a[i] * s
            b[i] = b[i] * s

    @jit
    def s3(p, g, a, b, c, s):  # pragma: no cover - compiled
        for i in range(p.shape[0]):
            p[i] = p[i] * s + g[i]
            a[i] = a[i] * s
            b[i] = b[i] * s
            c[i] = c[i] * s

    @jit
    def s4(p, g, a, b, c, d, s):  # pragma: no cover - compiled
        for i in range(p.shape[0]):
            p[i] = p[i] * s + g[i]
            a[i] = a[i] * s
            b[i] = b[i] * s
            c[i] = c[i] * s
            d[i] = d[i] * s

    return {0: s0, 1: s1, 2: s2, 3: s3, 4: s4}


def streaming_loop(n_params: int, n_state: int = 3) -> Step:
    """The no-arithmetic loop: how fast one thread streams an optimizer's arrays when it does no
    arithmetic to speak of. A reference point, not a memory ceiling (minnet's AMSGrad kernel
    streams faster than it once the arrays leave the cache, from about 3x10^5 parameters on, on
    the reference machine). A serial Numba loop over float32 arrays of ``n_params`` that reads
    ``param``, ``grad`` and ``n_state`` state arrays and writes ``param`` and the state arrays
    back (``p[i] = p[i] * s + g[i]``, ``a[i] = a[i] * s``; ``s = 1`` is passed at run time so
    the values stay put and LLVM cannot drop the loop), with plain stores like minnet's kernels.
    That is ``3 + 2 * n_state`` streams (:func:`stream_bytes_per_param`).

    A plain two-array copy is no reference for a kernel that streams nine arrays: on the
    reference machine one core copied ~30 GB/s at 10^7 values while the nine-stream AMSGrad loop
    reached ~50 GB/s (more streams in flight). So each optimizer is compared with the loop that
    has its own number of streams.
    """
    kernel = _stream_kernels()[n_state]
    arrays = [np.ones(n_params, np.float32) for _ in range(2 + n_state)]
    arrays[1][:] = 0  # grad
    one = np.float32(1)
    return lambda: kernel(*arrays, one)


def stream_bytes_per_param(n_state: int, itemsize: int = 4) -> int:
    """Bytes one step must move per parameter when it reads ``param``, ``grad`` and ``n_state``
    state arrays and writes ``param`` and the state arrays back: ``(3 + 2 * n_state) *
    itemsize``."""
    return (3 + 2 * n_state) * itemsize


OPT_IMPLS: dict[str, Callable[[list[tuple[int, ...]]], Step]] = {
    "minnet": minnet_optimizer,
    "PyTorch Adam": torch_optimizer,
    "PyTorch Adam fused": torch_fused_optimizer,
}

#: Bytes one AMSGrad step moves per float32 parameter: reads param, grad, exp_avg, exp_avg_sq,
#: max_exp_avg_sq and writes all but grad back.
AMSGRAD_BYTES_PER_PARAM = 9 * 4
#: Bytes :func:`streaming_loop` with three state arrays moves per parameter: the same nine
#: float32 accesses.
STREAM_BYTES_PER_PARAM = stream_bytes_per_param(3)


# -- the optimizer family, each optimizer alone -------------------------------------------------


class FamilyEntry(NamedTuple):
    """One optimizer of the family table: minnet's class and its fastest CPU counterpart.

    ``name`` is the class in :mod:`minnet.optim` (an optimizer that is not there is skipped with
    a note and appears once it is); ``peer`` is ``"torch"`` (``torch.optim.<peer_name>``) or
    ``"optax"`` (``optax.<peer_name>``, jitted), built with ``peer_kwargs``, which must describe
    the same update as ``kwargs`` does for minnet.
    """

    name: str
    kwargs: dict[str, Any]
    peer: str
    peer_name: str
    peer_kwargs: dict[str, Any]

    @property
    def peer_label(self) -> str:
        """How the tables name the counterpart."""
        if self.peer == "optax":
            return f"optax.{self.peer_name}, jit"
        if self.peer == "keras":
            return f"Keras 3 {self.peer_name} (JAX backend), jit"
        if self.peer_name in _TORCH_SPARSE:
            return f"PyTorch {self.peer_name} (sparse COO gradient)"
        flag = "fused" if self.peer_kwargs.get("fused") else "foreach"
        return f"PyTorch {self.peer_name}({flag}=True)"


#: PyTorch optimizers that take only a sparse gradient (no foreach or fused switch): the table
#: gives them the dense gradient as a sparse COO tensor of its non-zero elements, minnet the
#: dense one (each element of the 1-D parameter a row).
_TORCH_SPARSE = ("SparseAdam",)


def _torch_peer(name: str, **kwargs: Any) -> tuple[str, str, dict[str, Any]]:
    return "torch", name, kwargs


#: Every optimizer of the family with PyTorch's defaults (SGD with momentum 0.9, the usual
#: setting), against PyTorch's fastest CPU implementation: ``fused=True`` where PyTorch has a
#: fused CPU kernel (SGD, Adam, AdamW, Adagrad), ``foreach=True`` otherwise (SparseAdam, which
#: has neither, with a sparse gradient); AdaBelief, Lion, Yogi, ADOPT, Adan, AdEMAMix, SignSGD,
#: Signum, Lamb, Lars, OptimisticAdam, NoisySGD, ScheduleFreeAdamW, Prodigy, Novograd and
#: Fromage, which PyTorch lacks, against optax's jitted update (NoisySGD's noise: JAX's PRNG
#: there, NumPy's counter-based Generators in minnet, part of the step's time in both); Ftrl (in
#: neither) against Keras 3's jitted ``stateless_apply`` on its JAX backend (skipped with a note
#: where Keras is not installed). LBFGS is not in the table: its ``step(closure)`` evaluates the
#: loss several times, so one call is not one update of this kind.
FAMILY: tuple[FamilyEntry, ...] = (
    FamilyEntry("SGD", {"lr": 1e-3, "momentum": 0.9},
                *_torch_peer("SGD", lr=1e-3, momentum=0.9, fused=True)),
    FamilyEntry("Adam", {"lr": 1e-3}, *_torch_peer("Adam", lr=1e-3, fused=True)),
    FamilyEntry("AdamW", {"lr": 1e-3}, *_torch_peer("AdamW", lr=1e-3, fused=True)),
    FamilyEntry("Adagrad", {"lr": 1e-2}, *_torch_peer("Adagrad", lr=1e-2, fused=True)),
    FamilyEntry("RMSprop", {"lr": 1e-2}, *_torch_peer("RMSprop", lr=1e-2, foreach=True)),
    FamilyEntry("Adadelta", {"lr": 1.0}, *_torch_peer("Adadelta", lr=1.0, foreach=True)),
    FamilyEntry("Adamax", {"lr": 2e-3}, *_torch_peer("Adamax", lr=2e-3, foreach=True)),
    FamilyEntry("NAdam", {"lr": 2e-3}, *_torch_peer("NAdam", lr=2e-3, foreach=True)),
    FamilyEntry("RAdam", {"lr": 1e-3}, *_torch_peer("RAdam", lr=1e-3, foreach=True)),
    FamilyEntry("AdaBelief", {"lr": 1e-3}, "optax", "adabelief",
                {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-16, "eps_root": 1e-16}),
    FamilyEntry("Lion", {"lr": 1e-4}, "optax", "lion",
                {"learning_rate": 1e-4, "b1": 0.9, "b2": 0.99, "weight_decay": 0.0}),
    FamilyEntry("Rprop", {"lr": 1e-2}, *_torch_peer("Rprop", lr=1e-2, foreach=True)),
    FamilyEntry("ASGD", {"lr": 1e-2}, *_torch_peer("ASGD", lr=1e-2, foreach=True)),
    FamilyEntry("Yogi", {"lr": 1e-2}, "optax", "yogi",
                {"learning_rate": 1e-2, "b1": 0.9, "b2": 0.999, "eps": 1e-3}),
    FamilyEntry("ADOPT", {"lr": 1e-3}, "optax", "contrib.adopt",
                {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.9999, "eps": 1e-6}),
    FamilyEntry("Adan", {"lr": 1e-3}, "optax", "adan",
                {"learning_rate": 1e-3, "b1": 0.98, "b2": 0.92, "b3": 0.99, "eps": 1e-8,
                 "eps_root": 1e-8}),
    FamilyEntry("AdEMAMix", {"lr": 1e-3}, "optax", "contrib.ademamix",
                {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "b3": 0.9999, "alpha": 5.0,
                 "eps": 1e-8}),
    FamilyEntry("Ftrl", {"lr": 1e-3}, "keras", "Ftrl", {"learning_rate": 1e-3}),
    FamilyEntry("SignSGD", {"lr": 1e-3}, "optax", "sign_sgd", {"learning_rate": 1e-3}),
    FamilyEntry("Signum", {"lr": 1e-3}, "optax", "signum", {"learning_rate": 1e-3, "beta": 0.9}),
    FamilyEntry("Lamb", {"lr": 1e-3, "variant": "optax"}, "optax", "lamb",
                {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-6}),
    FamilyEntry("Lars", {"lr": 1.0}, "optax", "lars",
                {"learning_rate": 1.0, "trust_coefficient": 1e-3, "momentum": 0.9}),
    FamilyEntry("SparseAdam", {"lr": 1e-3}, *_torch_peer("SparseAdam", lr=1e-3)),
    FamilyEntry("OptimisticAdam", {"lr": 1e-3}, "optax", "optimistic_adam",
                {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8}),
    FamilyEntry("NoisySGD", {"lr": 1e-3}, "optax", "noisy_sgd",
                {"learning_rate": 1e-3, "eta": 0.01, "gamma": 0.55, "key": 0}),
    FamilyEntry("ScheduleFreeAdamW", {"lr": 2.5e-3}, "optax", "contrib.schedule_free_adamw",
                {"learning_rate": 2.5e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8}),
    FamilyEntry("Prodigy", {"lr": 1.0}, "optax", "contrib.prodigy", {"learning_rate": 1.0}),
    FamilyEntry("Novograd", {"lr": 1e-3}, "optax", "novograd",
                {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.25, "eps": 1e-6}),
    FamilyEntry("Fromage", {"lr": 1e-2}, "optax", "fromage",
                {"learning_rate": 1e-2, "min_norm": 1e-6}),
    # A shaped update: on the table's one vector it is unfactored (a matrix is factored).
    FamilyEntry("Adafactor", {"lr": 1e-2}, *_torch_peer("Adafactor", lr=1e-2, foreach=True)),
)  # fmt: skip

FAMILY_BY_NAME: dict[str, FamilyEntry] = {e.name: e for e in FAMILY}


#: Environment variable that sets PyTorch's intra-op threads in the family table's workers.
TORCH_THREADS_ENV = "MINNET_BENCH_TORCH_THREADS"
#: The family table's thread setting, set by ``python -m benchmarks --family-threads``:
#: ``"default"`` (every library on its own default: minnet's thread policy and pool, PyTorch's
#: one intra-op thread per core, XLA's) or ``"1"`` (every library on one thread).
FAMILY_THREADS_ENV = "MINNET_BENCH_FAMILY_THREADS"


def family_one_thread() -> bool:
    """Whether the family table runs every library on one thread (else on its defaults)."""
    return os.environ.get(FAMILY_THREADS_ENV, "default") == "1"


class Unavailable(ImportError):
    """An implementation that cannot be built here (library or optimizer missing)."""


def _minnet_class(name: str) -> type:
    import minnet.optim

    cls = getattr(minnet.optim, name, None)
    if cls is None:
        raise Unavailable(f"minnet.optim has no {name}")
    return cls


def family_state_arrays(name: str) -> int:
    """How many per-parameter state arrays minnet's ``name`` keeps (with the table's kwargs):
    the arrays of the parameter's size in its state dict after one step."""
    import minnet

    entry = FAMILY_BY_NAME[name]
    p = minnet.nn.Parameter(np.ones(16, np.float32))
    optimizer = _minnet_class(name)([p], **entry.kwargs)
    optimizer.step()
    state = optimizer.state_dict()["state"][0]
    return sum(isinstance(v, np.ndarray) and v.size == 16 for v in state.values())


def family_minnet(name: str, n: int) -> Step:
    """``minnet.optim.<name>(**kwargs).step()`` on one float32 parameter of ``n`` values."""
    import minnet

    minnet.set_num_threads(1 if family_one_thread() else None)  # like the peer's threads
    entry = FAMILY_BY_NAME[name]
    p = minnet.nn.Parameter(np.ones(n, np.float32))
    optimizer = _minnet_class(name)([p], **entry.kwargs)
    p.grad[...] = _grads([(n,)])[0]
    return optimizer.step


def family_peer(name: str, n: int) -> Step:
    """The counterpart of :func:`family_minnet`: PyTorch's optimizer (its ``step()``) or optax's
    jitted update with donated buffers (one call, waited for with ``block_until_ready``).

    PyTorch keeps its default intra-op thread count unless the environment variable
    :data:`TORCH_THREADS_ENV` sets one (``python -m benchmarks --torch-threads N``); with
    ``--family-threads 1`` PyTorch and XLA (optax, Keras on JAX) run on one thread.
    """
    entry = FAMILY_BY_NAME[name]
    g = _grads([(n,)])[0]
    if family_one_thread() and "jax" not in sys.modules:  # XLA reads its flags at import
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    if entry.peer == "keras":
        return _keras_peer(entry, g)
    if entry.peer == "torch":
        import torch

        if os.environ.get(TORCH_THREADS_ENV):
            torch.set_num_threads(int(os.environ[TORCH_THREADS_ENV]))
        elif family_one_thread():
            torch.set_num_threads(1)

        cls = getattr(torch.optim, entry.peer_name, None)
        if cls is None:
            raise Unavailable(f"torch.optim has no {entry.peer_name}")
        p = torch.nn.Parameter(torch.ones(n))
        p.grad = torch.from_numpy(g)
        if entry.peer_name in _TORCH_SPARSE:
            p.grad = p.grad.to_sparse()
        return cls([p], **entry.peer_kwargs).step
    import jax
    import jax.numpy as jnp
    import optax

    factory: Any = optax
    for part in entry.peer_name.split("."):  # "contrib.adopt": optax.contrib.adopt
        factory = getattr(factory, part)
    tx = factory(**entry.peer_kwargs)
    grads = jnp.asarray(g)

    def update(p: jax.Array, s: Any, g: jax.Array) -> tuple:
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    jitted = jax.jit(update, donate_argnums=(0, 1))
    params = jnp.ones(n, jnp.float32)
    state = [params, tx.init(params)]

    def step() -> None:
        p, s = jitted(state[0], state[1], grads)
        state[0], state[1] = p, s
        p.block_until_ready()

    return step


def _keras_peer(entry: FamilyEntry, g: np.ndarray) -> Step:
    """Keras 3's optimizer on its JAX backend: ``stateless_apply`` jitted with donated buffers,
    one call per step, waited for with ``block_until_ready``."""
    os.environ.setdefault("KERAS_BACKEND", "jax")  # read when keras is first imported
    try:
        import keras
    except ImportError as exc:
        raise Unavailable("keras is not installed (pip install keras; KERAS_BACKEND=jax)") from exc
    if keras.backend.backend() != "jax":
        raise Unavailable(f"Keras runs on {keras.backend.backend()}, not jax (KERAS_BACKEND)")
    import jax
    import jax.numpy as jnp

    optimizer = getattr(keras.optimizers, entry.peer_name)(**entry.peer_kwargs)
    variable = keras.Variable(np.ones(g.size, np.float32))
    optimizer.build([variable])
    grads = [jnp.asarray(g)]
    jitted = jax.jit(optimizer.stateless_apply, donate_argnums=(0, 2))
    state = [[v.value for v in optimizer.variables], [variable.value]]

    def step() -> None:
        params, opt_vars = jitted(state[0], grads, state[1])
        state[0], state[1] = opt_vars, params
        params[0].block_until_ready()

    return step


# -- Adam in low precision ----------------------------------------------------------------------


class LowpEntry(NamedTuple):
    """One row of the low-precision table: Adam (lr 1e-3, PyTorch's other defaults) on one
    parameter of ``n`` values stored in ``dtype``; minnet with ``state_dtype`` and ``rounding``,
    or PyTorch's ``fused=True`` / default implementation (``torch_fused`` True / False)."""

    name: str
    library: str  # "minnet" or "torch"
    dtype: str
    state_dtype: str | None = None
    rounding: str = "fused"
    torch_fused: bool | None = None
    threads: int | None = 1  # minnet's thread count; None: the default policy (its pool)


#: The rows of ``python -m benchmarks --only lowp``, in table order; the first is the baseline.
LOWP: tuple[LowpEntry, ...] = (
    LowpEntry("minnet float32", "minnet", "float32"),
    LowpEntry("minnet bfloat16 (all, fused)", "minnet", "bfloat16"),
    LowpEntry("minnet float16 (all, fused)", "minnet", "float16"),
    LowpEntry("minnet float16 + float32 state (fused)", "minnet", "float16", "float32"),
    LowpEntry("minnet bfloat16 (all, per_op)", "minnet", "bfloat16", rounding="per_op"),
    LowpEntry("minnet float32, default threads (pool)", "minnet", "float32", threads=None),
    LowpEntry(
        "minnet bfloat16 (all, fused), default threads (pool)", "minnet", "bfloat16", threads=None
    ),  # fmt: skip
    LowpEntry(
        "minnet float16 (all, fused), default threads (pool)", "minnet", "float16", threads=None
    ),
    LowpEntry("PyTorch float32 fused=True", "torch", "float32", torch_fused=True),
    LowpEntry("PyTorch bfloat16 fused=True", "torch", "bfloat16", torch_fused=True),
    LowpEntry("PyTorch bfloat16 default", "torch", "bfloat16", torch_fused=None),
    LowpEntry("PyTorch float16 fused=True", "torch", "float16", torch_fused=True),
    LowpEntry("PyTorch float16 default", "torch", "float16", torch_fused=None),
)
LOWP_BY_NAME: dict[str, LowpEntry] = {e.name: e for e in LOWP}


def lowp_step(name: str, n: int) -> Step:
    """The ``step()`` of :data:`LOWP` row ``name`` on one parameter of ``n`` values (gradient:
    normal * 1e-2, rounded to the parameter's dtype). minnet's eps warning for float16 (eps=1e-8
    is 0 there) is silenced: the table times the step, whatever eps becomes."""
    import warnings

    entry = LOWP_BY_NAME[name]
    g = _grads([(n,)])[0]
    if entry.library == "minnet":
        import minnet
        from minnet.dtypes import as_dtype

        minnet.set_num_threads(entry.threads)  # 1, or None: the default policy and its pool
        dtype = as_dtype(entry.dtype)
        p = minnet.nn.Parameter(np.ones(n, np.float32))
        p.data = np.ones(n, dtype)
        p.grad = g.astype(dtype)
        kwargs: dict[str, Any] = {}
        if dtype != np.float32:
            kwargs = {"state_dtype": entry.state_dtype, "rounding": entry.rounding}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return minnet.optim.Adam([p], lr=1e-3, **kwargs).step
    import torch

    if os.environ.get(TORCH_THREADS_ENV):
        torch.set_num_threads(int(os.environ[TORCH_THREADS_ENV]))
    dtype = getattr(torch, entry.dtype)
    p = torch.nn.Parameter(torch.ones(n, dtype=dtype))
    p.grad = torch.from_numpy(g).to(dtype)
    return torch.optim.Adam([p], lr=1e-3, fused=entry.torch_fused).step

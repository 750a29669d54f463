"""A steady training step allocates nothing new; buffer reuse never leaks into what callers keep.

The seed model (64x1000 -> 100 -> ReLU -> 10, MSE sum, AMSGrad) is checked two ways: every internal
buffer is the same array (same memory) from step to step, and tracemalloc, which sees NumPy's data
allocations, shows no growth and no allocation larger than the arrays handed to the caller.
Every test runs with one thread (the serial path) and with two (minnet's thread pool, where the
first layer adds its weight gradient straight into ``.grad`` and keeps no ``_dw`` buffer).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import minnet

N, D_IN, H, D_OUT = 64, 1000, 100, 10
F32 = 4  # bytes


@pytest.fixture(autouse=True, params=[1, 2], ids=["1thread", "2threads"])
def threads(request: pytest.FixtureRequest):
    if request.param > 1 and minnet.threads._pool_max() < request.param:
        pytest.skip("minnet's thread pool is off or has fewer threads here")
    minnet.set_num_threads(request.param)
    yield request.param
    minnet.set_num_threads(None)


def seed_setup(rng: int = 0) -> tuple:
    gen = np.random.default_rng(rng)
    x = gen.standard_normal((N, D_IN), dtype=np.float32)
    y = gen.standard_normal((N, D_OUT), dtype=np.float32)
    model = minnet.nn.Sequential(
        minnet.nn.Linear(D_IN, H, rng=gen), minnet.nn.ReLU(), minnet.nn.Linear(H, D_OUT, rng=gen)
    )
    loss_fn = minnet.nn.MSELoss(reduction="sum")
    optimizer = minnet.optim.Adam(model.parameters(), lr=1e-4, eps=1e-8, amsgrad=True)
    return x, y, model, loss_fn, optimizer


def train_step(x, y, model, loss_fn, optimizer, input_grad: bool = True) -> None:
    y_pred = model(x)
    loss = loss_fn(y_pred, y)
    loss.item()
    optimizer.zero_grad()
    if input_grad:
        model.backward(loss_fn.backward(), input_grad=True)
    else:
        model.backward(loss_fn.backward())  # the seed example's line
    optimizer.step()


def internal_buffers(model, loss_fn, optimizer) -> dict[str, np.ndarray]:
    lin0, relu, lin2 = model
    pooled = lin0._pool_threads(N) > 1
    assert (lin0._dw is None) == pooled  # the pool path writes straight into .grad
    found = {
        "0._out_t": lin0._out_t,
        "1._buf": relu._buf,
        "1._grad": relu._grad,
        "loss._diff": loss_fn._buf,
    }
    if not pooled:
        found["0._dw"] = lin0._dw
    # a small layer's one-call backward (minnet._pool's BLAS bound) also writes into .grad,
    # and, with the ReLU before it, its input gradient into the ReLU's buffer
    small = lin2._small(N)
    assert (lin2._dw is None) == small and (lin2._dx is None) == small
    if not small:
        found["2._dw"] = lin2._dw
        found["2._dx"] = lin2._dx
    for i, g in enumerate(optimizer._groups):
        for name in ("data", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            found[f"adam{i}.{name}"] = getattr(g, name)
    for name, p in model.named_parameters():
        found[name + ".data"] = p.data
        found[name + ".grad"] = p.grad
    return found


@pytest.mark.parametrize("input_grad", [True, False])
def test_internal_buffers_keep_their_identity(input_grad: bool) -> None:
    setup = seed_setup()
    for _ in range(3):
        train_step(*setup, input_grad=input_grad)
    before = internal_buffers(*setup[2:])
    assert all(isinstance(b, np.ndarray) for b in before.values()), before
    addresses = {k: b.__array_interface__["data"][0] for k, b in before.items()}
    for _ in range(5):
        train_step(*setup, input_grad=input_grad)
    after = internal_buffers(*setup[2:])
    moved = [k for k in before if after[k] is not before[k]]
    assert moved == []
    assert {k: b.__array_interface__["data"][0] for k, b in after.items()} == addresses


@pytest.mark.parametrize(
    ("input_grad", "handed_out"),
    [
        # y_pred (computed transposed, then copied to C order) and dLoss/dy_pred: fresh each
        # step, as the caller may keep them (the seed line)
        (False, 3 * N * D_OUT * F32),
        # ... and dLoss/dx, which backward(..., input_grad=True) returns
        (True, 3 * N * D_OUT * F32 + N * D_IN * F32),
    ],
)
def test_steady_step_allocates_only_what_it_hands_out(input_grad: bool, handed_out: int) -> None:
    setup = seed_setup()
    for _ in range(3):
        train_step(*setup, input_grad=input_grad)
    tracemalloc.start()
    try:
        train_step(*setup, input_grad=input_grad)  # tracemalloc's own first allocations
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(10):
            train_step(*setup, input_grad=input_grad)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Small Python objects: scalars, views, the bias-gradient row sums, and the tuples and floats
    # that Numba boxes for each kernel's return value, which CPython's free lists keep (traced
    # by tracemalloc) for a while: 2-4 KB over 10 steps here. The smallest internal array a
    # steady step could leak (an N x 100 float32 activation) is 25.6 KB per step.
    slack = 16384
    assert current - base <= slack, f"grew by {current - base} bytes over 10 steps"
    # Activations (N x 100), weight gradients (100 x 1000) or optimizer temporaries would exceed
    # this: only the arrays the caller receives are allocated.
    assert peak - base <= handed_out + slack, f"peak {peak - base} B, hand-out {handed_out} B"


def test_outputs_handed_to_the_caller_are_not_overwritten() -> None:
    x, y, model, loss_fn, optimizer = seed_setup()
    y_pred = model(x)
    kept = y_pred.copy()
    loss_fn(y_pred, y)
    g = loss_fn.backward()
    g_kept = g.copy()
    dx = model.backward(g, input_grad=True)
    dx_kept = dx.copy()
    optimizer.step()
    y_next = model(x[::-1].copy())
    loss_fn(y_next, y)
    model.backward(loss_fn.backward())
    assert y_next is not y_pred
    np.testing.assert_array_equal(y_pred, kept)
    np.testing.assert_array_equal(g, g_kept)
    np.testing.assert_array_equal(dx, dx_kept)
    assert y_pred.flags.c_contiguous and dx.flags.c_contiguous


def test_sequential_matches_the_layers_called_one_by_one() -> None:
    x, y, model, loss_fn, _ = seed_setup(3)
    for _ in range(2):  # the second call runs on reused buffers
        out = model(x)
        lin0, relu, lin2 = model
        np.testing.assert_array_equal(out, lin2(relu(lin0(x))))
        out = model(x)
        loss_fn(out, y)
        g = loss_fn.backward()
        model.zero_grad()
        dx = model.backward(g, input_grad=True)
        grads = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        lin2(relu(lin0(x)))  # backward frees what forward kept: run forward again
        manual_dx = lin0.backward(relu.backward(lin2.backward(g)))
        np.testing.assert_array_equal(dx, manual_dx)
        for p, ref in zip(model.parameters(), grads):
            np.testing.assert_array_equal(p.grad, ref)


def test_backward_skips_only_the_input_gradient_unless_asked() -> None:
    x, y, model, loss_fn, _ = seed_setup(5)
    loss_fn(model(x), y)
    g = loss_fn.backward()
    model.zero_grad()
    dx = model.backward(g, input_grad=True)
    full = [p.grad.copy() for p in model.parameters()]
    for call in (lambda: model.backward(g), lambda: model.backward(g, input_grad=False)):
        model.zero_grad()
        model(x)  # backward frees what forward kept: run forward again
        assert call() is None
        for p, ref in zip(model.parameters(), full):
            np.testing.assert_array_equal(p.grad, ref)
    assert isinstance(dx, np.ndarray) and dx.shape == x.shape
    lin0, _, lin2 = model
    expected = (g @ lin2.weight.data) * (lin0(x) > 0) @ lin0.weight.data
    np.testing.assert_allclose(dx, expected, rtol=1e-4, atol=1e-5)


def test_batch_size_change_reallocates_and_stays_correct() -> None:
    x, y, model, loss_fn, _ = seed_setup(7)
    for n in (N, 5, N):
        out = model(x[:n])
        ref = np.maximum(x[:n] @ model[0].weight.data.T + model[0].bias.data, 0)
        ref = ref @ model[2].weight.data.T + model[2].bias.data
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        loss_fn(out, y[:n])
        assert model.backward(loss_fn.backward(), input_grad=True).shape == (n, D_IN)

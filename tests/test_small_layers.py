"""The few-calls path of small layers: a small Linear's passes as one compiled call, a ReLU and
the small Linear after it in a Sequential as one call per pass, MSELoss's one-pass forward, and
zero_grad on the pool. Each must give what the modules called one by one give, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import minnet
from minnet import _pool, threads

nn = minnet.nn


def _needs_blas() -> None:
    if not _pool.available():
        pytest.skip(f"the compiled small-layer path needs minnet's BLAS binding ({_pool.reason()})")


def _model(kind: str, dtype: type, rng: int) -> nn.Sequential:
    gen = np.random.default_rng(rng)
    if kind == "relu-first":
        mods = [nn.ReLU(), nn.Linear(6, 4, rng=gen, dtype=dtype), nn.ReLU(),
                nn.Linear(4, 3, rng=gen, dtype=dtype)]  # fmt: skip
    elif kind == "deep":
        mods = [nn.Linear(6, 8, rng=gen, dtype=dtype), nn.ReLU(),
                nn.Linear(8, 5, rng=gen, dtype=dtype), nn.ReLU(),
                nn.Linear(5, 3, rng=gen, dtype=dtype)]  # fmt: skip
    else:
        mods = [nn.Linear(6, 5, rng=gen, dtype=dtype), nn.ReLU(),
                nn.Linear(5, 3, rng=gen, bias=kind != "nobias", dtype=dtype)]  # fmt: skip
    return nn.Sequential(*mods)


def _one_by_one(model: nn.Sequential, x: np.ndarray, g: np.ndarray) -> tuple:
    """Forward and backward through each module's public methods, in turn."""
    h = x
    for m in model:
        h = m(h)
    out = h
    for m in reversed(list(model)):
        g = m.backward(g)
    return out, g


@pytest.mark.parametrize("kind", ["plain", "nobias", "relu-first", "deep"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_pairs_match_the_modules_one_by_one(kind: str, dtype: type) -> None:
    gen = np.random.default_rng(1)
    x = gen.standard_normal((9, 6)).astype(dtype)
    x[2, 3] = np.nan  # NaN stays NaN through ReLU, its gradient is 0 there
    model = _model(kind, dtype, 2)
    g = gen.standard_normal((9, 3)).astype(dtype)
    for _ in range(2):  # the second round runs on reused buffers
        model.zero_grad()
        out = model(x)
        dx = model.backward(g, input_grad=True)
        grads = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        ref_out, ref_dx = _one_by_one(model, x, g)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(dx, ref_dx)
        for p, ref in zip(model.parameters(), grads):
            np.testing.assert_array_equal(p.grad, ref, err_msg=p.name)
    assert out.flags.c_contiguous and np.isnan(out[2]).all() and not np.isnan(out[3]).any()


def test_pairs_agree_with_a_float64_reference() -> None:
    gen = np.random.default_rng(3)
    x = gen.standard_normal((16, 6)).astype(np.float32)
    g = gen.standard_normal((16, 3)).astype(np.float32)
    model = _model("plain", np.float32, 4)
    lin0, _, lin2 = model
    out = model(x)
    model.zero_grad()
    dx = model.backward(g, input_grad=True)
    w0, b0 = (p.data.astype(np.float64) for p in (lin0.weight, lin0.bias))
    w2, b2 = (p.data.astype(np.float64) for p in (lin2.weight, lin2.bias))
    z = x.astype(np.float64) @ w0.T + b0
    h = np.maximum(z, 0)
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(out, h @ w2.T + b2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin2.weight.grad, g64.T @ h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin2.bias.grad, g64.sum(0), rtol=1e-5, atol=1e-6)
    gz = (g64 @ w2) * (z > 0)
    np.testing.assert_allclose(lin0.weight.grad, gz.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, gz @ w0, rtol=1e-5, atol=1e-6)


def test_pairs_take_the_one_call_path_and_keep_no_product_buffers() -> None:
    _needs_blas()
    model = _model("plain", np.float32, 5)
    x = np.ones((4, 6), np.float32)
    model.backward(model(x) * 0 + 1, input_grad=True)
    lin2 = model[2]
    assert model._pairs == {1}
    assert lin2._small(4)
    # dW went straight into .grad, dx straight into the ReLU's buffer
    assert lin2._dw is None and lin2._dx is None and model[1]._grad is not None


def test_pair_errors_are_the_layers_own() -> None:
    model = _model("plain", np.float32, 6)
    with pytest.raises(ValueError, match=r"layer 0 of Sequential.*expected input of shape"):
        model(np.ones((3, 5), np.float32))
    relu_first = _model("relu-first", np.float32, 6)
    with pytest.raises(ValueError, match=r"layer 1 of Sequential.*\(N, 6\)"):
        relu_first(np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match=r"ReLU \(layer 0 of Sequential\)"):
        relu_first(np.ones((3, 6), np.int64))
    relu_first(np.ones((3, 6), np.float32))
    relu_first.backward(np.ones((3, 3), np.float32))
    with pytest.raises(RuntimeError, match="a second time"):
        relu_first.backward(np.ones((3, 3), np.float32))
    relu_first(np.ones((3, 6), np.float32))
    with pytest.raises(ValueError, match=r"layer 3 of Sequential.*grad_out must have"):
        relu_first.backward(np.ones((3, 4), np.float32))


def test_pairs_cast_other_float_inputs_as_the_layers_do() -> None:
    model = _model("relu-first", np.float32, 7)
    x = np.random.default_rng(8).standard_normal((5, 6))  # float64 into a float32 model
    out = model(x)
    np.testing.assert_array_equal(out, _one_by_one(model, x, np.ones((5, 3), np.float32))[0])
    assert out.dtype == np.float32


def test_pairs_respect_frozen_and_cleared_gradients() -> None:
    model = _model("plain", np.float32, 9)
    lin2 = model[2]
    lin2.weight.requires_grad = False
    frozen = lin2.weight.grad.copy()
    lin2.bias.grad = None  # PyTorch's cleared state
    x = np.random.default_rng(10).standard_normal((6, 6)).astype(np.float32)
    g = np.ones((6, 3), np.float32)
    model(x)
    model.backward(g)
    np.testing.assert_array_equal(lin2.weight.grad, frozen)
    np.testing.assert_array_equal(lin2.bias.grad, g.sum(0))
    model(x)
    model.backward(g)  # the same arrays again: accumulated
    np.testing.assert_array_equal(lin2.bias.grad, 2 * g.sum(0))
    lin2.weight.requires_grad = True
    model(x)
    model.backward(g)
    assert np.abs(lin2.weight.grad - frozen).max() > 0


def test_pairs_under_no_grad_leave_the_pending_backward_alone() -> None:
    model = _model("plain", np.float32, 11)
    gen = np.random.default_rng(12)
    x, x_val = gen.standard_normal((2, 7, 6)).astype(np.float32)
    g = gen.standard_normal((7, 3)).astype(np.float32)
    model(x)
    model.backward(g)
    ref = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model(x)
    with minnet.no_grad():
        model(x_val)
    model.backward(g)
    for p, r in zip(model.parameters(), ref):
        np.testing.assert_array_equal(p.grad, r)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_one_pass_matches_the_formula(reduction: str, dtype: type) -> None:
    gen = np.random.default_rng(13)
    a, b = gen.standard_normal((2, 33, 7)).astype(dtype)
    loss_fn = nn.MSELoss(reduction=reduction)
    got = loss_fn(a, b)
    d = a.astype(np.float64) - b
    ref = (d * d).sum() / (d.size if reduction == "mean" else 1)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref, rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_array_equal(loss_fn._buf, a - b)
    with minnet.no_grad():
        assert loss_fn(a, b) == got  # the same pass, bit for bit
    assert np.isnan(loss_fn(np.where(a > 0, np.nan, a), b))


def test_zero_grad_on_the_pool_clears_every_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    if threads._pool_max() < 2:
        pytest.skip(f"minnet's thread pool is off or has one thread here ({_pool.reason()})")
    monkeypatch.setattr(_pool, "OPTIM_MIN_SIZE", 0)
    minnet.set_num_threads(2)
    try:
        model = _model("deep", np.float32, 14)
        model[2].weight.requires_grad = False  # frozen gradients are cleared too, as before
        opt = minnet.optim.Adam(model.parameters())
        for p in model.parameters():
            p.grad[...] = 3.0
        opt.zero_grad(set_to_none=False)
        for p in model.parameters():
            np.testing.assert_array_equal(p.grad, np.zeros_like(p.data), err_msg=p.name)
        for p in model.parameters():
            p.grad[...] = 3.0
        opt.zero_grad()  # None, over a zero buffer that a backward adds into
        assert all(p.grad is None for p in model.parameters())
        assert not opt._groups[0].grad.any()
        assert opt._groups[0]._all_segments.shape == (2, len(model.parameters()), 2)
    finally:
        minnet.set_num_threads(None)

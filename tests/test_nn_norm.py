"""Normalization layers: finite-difference gradients in float64 for every option, PyTorch's
defaults, BatchNorm's buffers and modes, the 16-bit rule, and use inside models."""

from __future__ import annotations

import inspect

import ml_dtypes
import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.testing import gradcheck

BF16 = np.dtype(ml_dtypes.bfloat16)


def randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    """Parameters away from their ones/zeros start, so a wrong affine term shows."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5 + 1.0
    return module


def data(shape: tuple[int, ...], scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale + 0.2 * scale


# --------------------------------------------------------------------------- gradients

GRAD_CASES = [
    ("layernorm", lambda: nn.LayerNorm(5), (3, 5)),
    ("layernorm_3d", lambda: nn.LayerNorm(5), (2, 3, 5)),
    ("layernorm_2d_shape", lambda: nn.LayerNorm((3, 5), eps=1e-3), (2, 3, 5)),
    ("layernorm_nobias", lambda: nn.LayerNorm(4, bias=False), (3, 4)),
    ("layernorm_noaffine", lambda: nn.LayerNorm(4, elementwise_affine=False), (3, 4)),
    ("rmsnorm", lambda: nn.RMSNorm(5), (2, 3, 5)),
    ("rmsnorm_eps", lambda: nn.RMSNorm((3, 5), eps=0.1), (2, 3, 5)),
    ("rmsnorm_noaffine", lambda: nn.RMSNorm(4, elementwise_affine=False), (3, 4)),
    ("groupnorm_2", lambda: nn.GroupNorm(2, 4), (3, 4, 3)),
    ("groupnorm_1", lambda: nn.GroupNorm(1, 4), (2, 4, 2, 2)),
    ("groupnorm_instance_noaffine", lambda: nn.GroupNorm(3, 3, affine=False), (2, 3, 4)),
    ("groupnorm_2d_input", lambda: nn.GroupNorm(2, 4, eps=0.1), (3, 4)),
    ("batchnorm1d_train", lambda: nn.BatchNorm1d(3), (5, 3)),
    ("batchnorm1d_train_3d", lambda: nn.BatchNorm1d(3, momentum=None), (3, 3, 4)),
    ("batchnorm1d_noaffine", lambda: nn.BatchNorm1d(3, affine=False), (4, 3)),
    (
        "batchnorm1d_notrack_eval",
        lambda: nn.BatchNorm1d(3, track_running_stats=False).eval(),
        (4, 3),
    ),  # fmt: skip
    ("batchnorm2d_train", lambda: nn.BatchNorm2d(2, eps=1e-3), (2, 2, 3, 3)),
]


@pytest.mark.parametrize("make, shape", [c[1:] for c in GRAD_CASES], ids=[c[0] for c in GRAD_CASES])
def test_finite_differences(make, shape) -> None:
    assert gradcheck(randomize(make()), data(shape), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("cls, shape", [(nn.BatchNorm1d, (4, 3)), (nn.BatchNorm2d, (2, 3, 2, 2))])
def test_batchnorm_eval_finite_differences(cls, shape) -> None:
    bn = randomize(cls(3))
    for k in range(3):  # running statistics away from their 0 / 1 start
        bn(data(shape, 2.0, seed=k))
    bn.eval()
    assert not np.allclose(bn.running_mean, 0) and not np.allclose(bn.running_var, 1)
    assert gradcheck(bn, data(shape, seed=9), atol=1e-7, rtol=1e-5)
    # eval: the statistics are constants, so dx = g * weight / sqrt(running_var + eps)
    x = data(shape, seed=4).astype(np.float32)
    g = data(shape, seed=5).astype(np.float32)
    bn(x)
    dx = bn.backward(g)
    scale = bn.weight.data / np.sqrt(bn.running_var + np.float32(bn.eps))
    np.testing.assert_allclose(dx, g * scale.reshape((1, 3) + (1,) * (len(shape) - 2)), rtol=1e-6)


def test_gradcheck_fails_on_a_wrong_backward() -> None:
    class NoCentering(nn.LayerNorm):  # a backward without the mean(gh) term
        def _grad(self, saved, g):
            shape, xhat, rstd = saved
            g2 = g.reshape(xhat.shape) * self.weight.data.reshape(1, -1)
            return (rstd * (g2 - xhat * np.mean(g2 * xhat, 1, keepdims=True))).reshape(shape)

    with pytest.raises(minnet.testing.GradcheckError, match="input"):
        gradcheck(randomize(NoCentering(4)), data((3, 4)), check_input=True)


# --------------------------------------------------------------------------- defaults


def _defaults(cls: type) -> dict:
    return {
        k: v.default
        for k, v in inspect.signature(cls).parameters.items()
        if v.default is not inspect.Parameter.empty and v.kind is not v.KEYWORD_ONLY
    }


def test_pytorch_signatures_and_defaults() -> None:
    assert _defaults(nn.LayerNorm) == {"eps": 1e-5, "elementwise_affine": True, "bias": True}
    assert _defaults(nn.RMSNorm) == {"eps": None, "elementwise_affine": True}
    assert _defaults(nn.GroupNorm) == {"eps": 1e-5, "affine": True}
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d):
        assert _defaults(cls) == {
            "eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True,
        }  # fmt: skip
    ln = nn.LayerNorm((2, 3))
    np.testing.assert_array_equal(ln.weight.data, np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(ln.bias.data, np.zeros((2, 3), np.float32))
    assert [n for n, _ in nn.LayerNorm(3, bias=False).named_parameters()] == ["weight"]
    assert list(nn.LayerNorm(3, elementwise_affine=False).parameters()) == []
    assert [n for n, _ in nn.RMSNorm(3).named_parameters()] == ["weight"]
    gn = nn.GroupNorm(2, 6)
    assert gn.weight.shape == (6,) and gn.bias.shape == (6,)


def test_rmsnorm_eps_none_is_the_computation_dtype_machine_eps() -> None:
    # PyTorch 2.13: finfo(float32).eps for float32, float16 and bfloat16 inputs (opmath), and
    # finfo(float64).eps for float64.
    eps32, eps64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
    for dt, expected in ((np.float32, eps32), (np.float16, eps32), (BF16, eps32),
                         (np.float64, eps64)):  # fmt: skip
        assert nn.RMSNorm(4, dtype=dt).effective_eps() == expected
    assert nn.RMSNorm(4, eps=1e-6, dtype=np.float16).effective_eps() == 1e-6
    # At |x| = 1e-2 the float16 machine eps (9.8e-4) would dominate mean(x**2) = 1e-4.
    x = np.full((1, 4), 1e-2, np.float16)
    y = nn.RMSNorm(4, dtype=np.float16)(x)
    x32 = x.astype(np.float32)
    expected = (x32 / np.sqrt(np.mean(x32 * x32) + np.float32(eps32))).astype(np.float16)
    np.testing.assert_array_equal(y, expected)
    wrong = x32 / np.sqrt(np.mean(x32 * x32) + np.float32(np.finfo(np.float16).eps))
    assert not np.allclose(y.astype(np.float32), wrong, rtol=0.1)
    # float32 input of tiny scale: eps=None is 1.19e-7, not 1e-6 or 0
    x = np.full((1, 4), 3e-4, np.float32)
    y = nn.RMSNorm(4)(x)
    np.testing.assert_allclose(y, x / np.sqrt(x * x + np.float32(eps32)), rtol=1e-6)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: nn.LayerNorm(4), "(x - mean) / sqrt(var + eps)"),
        (lambda: nn.GroupNorm(1, 4), "(x - mean) / sqrt(var + eps)"),
        (lambda: nn.BatchNorm1d(4), "(x - mean) / sqrt(var + eps)"),
    ],
)
def test_eps_sits_inside_the_square_root(make, expected) -> None:
    # At var ~ 1e-6 and eps = 1e-5 the placements differ by a factor of about 3.
    m = make()
    x = data((6, 4), 1e-3, seed=3)
    y = m(x.astype(np.float32)).astype(np.float64)
    axis = 0 if isinstance(m, nn.BatchNorm1d) else 1
    d = x - x.mean(axis=axis, keepdims=True)
    var = (d * d).mean(axis=axis, keepdims=True)
    np.testing.assert_allclose(y, d / np.sqrt(var + 1e-5), rtol=1e-3, err_msg=expected)
    assert not np.allclose(y, d / (np.sqrt(var) + 1e-5), rtol=0.1)


# --------------------------------------------------------------------------- BatchNorm


def test_batchnorm_buffers_state_dict_and_parameters() -> None:
    bn = nn.BatchNorm2d(3)
    assert list(bn.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked",
    ]  # fmt: skip
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var",
                                                  "num_batches_tracked"]  # fmt: skip
    sd = bn.state_dict()
    assert sd["num_batches_tracked"].dtype == np.int64 and sd["num_batches_tracked"].shape == ()
    np.testing.assert_array_equal(sd["running_var"], np.ones(3, np.float32))
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    assert list(model.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked",
    ]  # fmt: skip
    assert len(model.parameters()) == 4
    no_track = nn.BatchNorm1d(3, track_running_stats=False)
    assert list(no_track.state_dict()) == ["weight", "bias"]
    assert no_track.running_mean is None and list(no_track.buffers()) == []
    assert list(nn.BatchNorm1d(3, affine=False).state_dict()) == [
        "running_mean", "running_var", "num_batches_tracked",
    ]  # fmt: skip


def test_batchnorm_running_statistics_pytorch_formula() -> None:
    bn = nn.BatchNorm1d(2, momentum=0.2, dtype=np.float64)
    rm, rv = np.zeros(2), np.ones(2)
    for k in range(4):
        x = data((5, 2), 1.0 + k, seed=k)
        bn(x)
        rm = 0.8 * rm + 0.2 * x.mean(0)
        rv = 0.8 * rv + 0.2 * x.var(0, ddof=1)  # unbiased
        np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-14)
        np.testing.assert_allclose(bn.running_var, rv, rtol=1e-14)
        assert int(bn.num_batches_tracked) == k + 1


def test_batchnorm_momentum_none_is_the_cumulative_average() -> None:
    bn = nn.BatchNorm2d(2, momentum=None, dtype=np.float64)
    xs = [data((2, 2, 3, 3), 1.0, seed=k) for k in range(5)]
    for x in xs:
        bn(x)
    means = [x.mean(axis=(0, 2, 3)) for x in xs]
    variances = [x.var(axis=(0, 2, 3), ddof=1) for x in xs]
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, np.mean(variances, axis=0), rtol=1e-13)


def test_batchnorm_train_eval_and_no_grad() -> None:
    bn = nn.BatchNorm1d(3)
    x = data((4, 3)).astype(np.float32)
    with minnet.no_grad():  # training mode updates the statistics under no_grad, as PyTorch
        bn(x)
    assert int(bn.num_batches_tracked) == 1
    before = bn.state_dict()
    bn.eval()
    y = bn(x)
    after = bn.state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    expected = (x - bn.running_mean) / np.sqrt(bn.running_var + np.float32(1e-5))
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    # without running statistics, evaluation uses the batch's
    nt = nn.BatchNorm1d(3, track_running_stats=False).eval()
    y = nt(x)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-6)
    # one value per channel cannot be normalized in training mode
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nn.BatchNorm1d(3)(np.ones((1, 3), np.float32))
    nn.BatchNorm1d(3).eval()(np.ones((1, 3), np.float32))  # fine in evaluation mode


def test_batchnorm_state_dict_round_trip_and_casts(tmp_path) -> None:
    bn = nn.BatchNorm1d(3)
    for k in range(3):
        bn(data((4, 3), seed=k).astype(np.float32))
    fresh = nn.BatchNorm1d(3)
    fresh.load_state_dict(bn.state_dict())
    for (k, a), (_, b) in zip(bn.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert int(fresh.num_batches_tracked) == 3
    minnet.save({"model": bn.state_dict()}, tmp_path / "bn.ckpt")
    loaded = minnet.load(tmp_path / "bn.ckpt")["model"]
    np.testing.assert_array_equal(loaded["running_var"], bn.running_var)
    with pytest.raises(ValueError, match="Missing key.*running_mean"):
        nn.BatchNorm1d(3).load_state_dict({k: v for k, v in bn.state_dict().items()
                                           if k != "running_mean"})  # fmt: skip
    with pytest.raises(ValueError, match="size mismatch for running_var"):
        nn.BatchNorm1d(3).load_state_dict({**bn.state_dict(), "running_var": np.ones(4)})
    bn.double()
    assert bn.running_mean.dtype == np.float64 and bn.weight.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64  # integer buffers keep their dtype
    assert dict(bn.named_buffers())["running_mean"] is bn.running_mean


def test_batchnorm_errors_name_the_layer() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match=r"BatchNorm2d \(layer 1 of Sequential\).*4D"):
        model(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="expected input with 3 channels"):
        nn.BatchNorm1d(3)(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm1d(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        nn.BatchNorm1d(3, eps=-1.0)
    with pytest.raises(ValueError, match="num_channels must be divisible by num_groups"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"normalized_shape=\[5\].*\[2, 4\]"):
        nn.LayerNorm(5)(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.RMSNorm(0)


# --------------------------------------------------------------------------- 16-bit rule

LOWP_CASES = [
    (lambda dt: nn.LayerNorm(6, dtype=dt), (4, 6)),
    (lambda dt: nn.RMSNorm(6, dtype=dt), (4, 6)),
    (lambda dt: nn.GroupNorm(2, 4, dtype=dt), (3, 4, 3)),
    (lambda dt: nn.BatchNorm1d(4, dtype=dt), (5, 4)),
]


@pytest.mark.parametrize("dt", [np.dtype(np.float16), BF16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("make, shape", LOWP_CASES, ids=["layer", "rms", "group", "batch"])
def test_16bit_is_the_float32_computation_rounded_once(make, shape, dt) -> None:
    low = randomize(make(dt))
    ref = make(np.float32)
    for p, q in zip(low.parameters(), ref.parameters()):
        q.data[...] = p.data.astype(np.float32)
    x = data(shape, 2.0).astype(dt)
    g = data(shape, 1.0, seed=5).astype(dt)
    y = low(x)
    y32 = ref(x.astype(np.float32))
    assert y.dtype == dt
    np.testing.assert_array_equal(y, y32.astype(dt))
    dx = low.backward(g)
    dx32 = ref.backward(g.astype(np.float32))
    assert dx.dtype == dt
    np.testing.assert_array_equal(dx, dx32.astype(dt))
    for p, q in zip(low.parameters(), ref.parameters()):
        assert p.grad.dtype == dt
        np.testing.assert_array_equal(p.grad, q.grad.astype(dt))
    for (_, b), (_, c) in zip(low.named_buffers(), ref.named_buffers()):
        np.testing.assert_array_equal(b, c.astype(b.dtype))


# --------------------------------------------------------------------------- in models


class Block(nn.Module):
    """A pre-LayerNorm residual MLP block written with a hand-written backward."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(6, dtype=np.float64)
        self.fc = nn.Linear(6, 6, dtype=np.float64, rng=0)

    def forward(self, x):
        return x + np.asarray(self.fc(self.norm(x)))

    def backward(self, grad):
        return grad + self.norm.backward(self.fc.backward(grad))


def test_loss_backward_and_hand_written_chain_agree() -> None:
    def build():
        minnet.manual_seed(3)
        return nn.Sequential(
            nn.Linear(5, 6, dtype=np.float64), randomize(nn.BatchNorm1d(6, dtype=np.float64)),
            nn.ReLU(), nn.Linear(6, 6, dtype=np.float64),
            randomize(nn.LayerNorm(6, dtype=np.float64), 2), nn.Linear(6, 3, dtype=np.float64),
            randomize(nn.RMSNorm(3, dtype=np.float64), 3),
        )  # fmt: skip

    x = data((8, 5))
    y = data((8, 3), seed=2)
    a, b = build(), build()
    loss_fn = nn.MSELoss()
    loss = loss_fn(a(x), y)
    loss.backward()
    loss_b = loss_fn(b(x), y)
    b.backward(loss_fn.backward())
    assert float(loss) == float(loss_b)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-15, err_msg=n)
    assert gradcheck(a, x, atol=1e-7, rtol=1e-5)


def test_residual_block_with_layernorm_gradcheck() -> None:
    assert gradcheck(Block(), data((3, 6)), atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------- functional


def test_functional_forms_match_the_modules() -> None:
    F = nn.functional
    x = data((3, 4, 5)).astype(np.float32)
    ln = randomize(nn.LayerNorm(5))
    np.testing.assert_array_equal(F.layer_norm(x, (5,), ln.weight, ln.bias), ln(x))
    rms = randomize(nn.RMSNorm(5, eps=1e-4))
    np.testing.assert_array_equal(F.rms_norm(x, [5], rms.weight, eps=1e-4), rms(x))
    gn = randomize(nn.GroupNorm(2, 4))
    np.testing.assert_array_equal(F.group_norm(x, 2, gn.weight, gn.bias), gn(x))
    bn = randomize(nn.BatchNorm1d(4))
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    y = F.batch_norm(x, rm, rv, bn.weight, bn.bias, training=True)
    np.testing.assert_array_equal(y, bn(x))
    np.testing.assert_array_equal(rm, bn.running_mean)  # updated in place, as PyTorch
    np.testing.assert_array_equal(rv, bn.running_var)
    y = F.batch_norm(x, rm, rv, training=False)
    expected = (x - rm.reshape(1, 4, 1)) / np.sqrt(rv.reshape(1, 4, 1) + np.float32(1e-5))
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="required when not training"):
        F.batch_norm(x, None, None)
    # gradients reach Parameters passed to the function
    w = nn.Parameter(np.ones(5, np.float32))
    out = F.layer_norm(x, (5,), w)
    nn.MSELoss()(out, np.zeros_like(x)).backward()
    assert np.abs(w.grad).sum() > 0

"""Module.register_buffer / buffers, the NotImplementedError of a module without backward, and
nn.init.trunc_normal_."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minnet
from minnet import nn


class WithBuffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.register_buffer("scale", np.full(2, 3.0, np.float32))
        self.register_buffer("cache", np.zeros(4, np.float32), persistent=False)
        self.register_buffer("steps", np.array(0, np.int64))
        self.register_buffer("unset", None)


def test_register_buffer_state_dict_and_listing() -> None:
    m = WithBuffers()
    assert list(m.state_dict()) == ["scale", "steps", "fc.weight", "fc.bias"]
    assert [n for n, _ in m.named_buffers()] == ["scale", "cache", "steps"]
    assert len(m.buffers()) == 3
    assert [n for n, _ in m.named_parameters()] == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(m.scale, [3.0, 3.0])
    outer = nn.Sequential(m)
    assert "0.scale" in outer.state_dict() and "0.cache" not in outer.state_dict()
    # assigning an array replaces the buffer; state_dict copies
    m.scale = np.array([1.0, 2.0], np.float32)
    sd = m.state_dict()
    np.testing.assert_array_equal(sd["scale"], [1.0, 2.0])
    sd["scale"][0] = 9
    assert m.scale[0] == 1.0
    # load writes in place, cast to the buffer's dtype
    m.load_state_dict({**m.state_dict(), "scale": np.array([5, 6]), "steps": np.array(7)})
    np.testing.assert_array_equal(m.scale, [5.0, 6.0])
    assert m.scale.dtype == np.float32 and int(m.steps) == 7
    # casts: floating buffers only
    m.double()
    assert m.scale.dtype == np.float64 and m.cache.dtype == np.float64
    assert m.steps.dtype == np.int64
    assert dict(m.named_buffers())["scale"] is m.scale
    del m.scale
    assert "scale" not in m.state_dict()


def test_register_buffer_errors() -> None:
    m = WithBuffers()
    with pytest.raises(KeyError, match=r'contain "\."'):
        m.register_buffer("a.b", np.zeros(1))
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("fc", np.zeros(1))
    with pytest.raises(TypeError, match="cannot assign 'list' object to buffer 'x'"):
        m.register_buffer("x", [1, 2])
    with pytest.raises(TypeError, match="cannot assign 'str' as buffer 'scale'"):
        m.scale = "a"


def test_module_without_backward_says_what_to_write() -> None:
    class Squares(nn.Module):  # NumPy arithmetic on a sub-module's output
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x) ** 2

    m = Squares()
    x = np.ones((4, 3), np.float32)
    loss = nn.MSELoss()(m(x), np.zeros((4, 2), np.float32))
    with pytest.raises(NotImplementedError, match=r"Squares defines no backward\(\).*def backward"):
        loss.backward()
    m(x)
    with pytest.raises(NotImplementedError, match=r"Give Squares a method `def backward"):
        m.backward(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(m.fc.weight.grad, 0)  # nothing was added before the error

    class Plain(nn.Module):  # calls no module at all
        def forward(self, x):
            return np.tanh(x)

    p = Plain()
    p(x)
    with pytest.raises(NotImplementedError, match=r"write `def backward\(self, grad_out\):`"):
        p.backward(x)

    class Fine(nn.Module):  # module calls only: no backward needed
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return nn.functional.tanh(self.fc(x)) * 2.0

    f = Fine()
    nn.MSELoss()(f(x), np.zeros((4, 2), np.float32)).backward()
    assert np.abs(f.fc.weight.grad).sum() > 0


def _truncated_normal_moments(mean, std, a, b):
    alpha, beta = (a - mean) / std, (b - mean) / std
    pdf = [math.exp(-v * v / 2) / math.sqrt(2 * math.pi) for v in (alpha, beta)]
    z = (math.erf(beta / math.sqrt(2)) - math.erf(alpha / math.sqrt(2))) / 2
    mu = mean + std * (pdf[0] - pdf[1]) / z
    var = std**2 * (1 + (alpha * pdf[0] - beta * pdf[1]) / z - ((pdf[0] - pdf[1]) / z) ** 2)
    return mu, math.sqrt(var)


@pytest.mark.parametrize("mean, std, a, b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04),
                                             (1.0, 2.0, 0.0, 5.0)])  # fmt: skip
def test_trunc_normal(mean, std, a, b) -> None:
    arr = np.empty(200_000, np.float64)
    nn.init.trunc_normal_(arr, mean, std, a, b, generator=0)
    assert arr.min() >= a and arr.max() <= b
    mu, sd = _truncated_normal_moments(mean, std, a, b)
    assert abs(arr.mean() - mu) < 5 * sd / math.sqrt(arr.size)
    assert abs(arr.std() - sd) < 0.01 * sd
    p = nn.Parameter(np.empty((3, 4), np.float32))
    assert nn.init.trunc_normal_(p, generator=1) is p and p.data.dtype == np.float32
    q = nn.Parameter(np.empty((3, 4), np.float32))
    nn.init.trunc_normal_(q, generator=1)
    np.testing.assert_array_equal(p.data, q.data)
    with pytest.raises(ValueError, match="a < b"):
        nn.init.trunc_normal_(arr, a=1.0, b=-1.0)


def test_erfinv_inverts_erf() -> None:
    y = np.linspace(-0.999999, 0.999999, 2001)
    x = nn.init._erfinv(y)
    np.testing.assert_allclose([math.erf(v) for v in x], y, rtol=0, atol=1e-14)


def test_clip_grad_norm_adds_pytorchs_1e6() -> None:
    # clip_coef = max_norm / (total_norm + 1e-6): with max_norm == total_norm the gradient
    # shrinks by total / (total + 1e-6), visibly for a small norm.
    p = nn.Parameter(np.array([3e-6, 4e-6]))
    p.grad[...] = p.data
    total = nn.utils.clip_grad_norm_([p], max_norm=5e-6)
    assert float(total) == pytest.approx(5e-6, rel=1e-12)
    np.testing.assert_allclose(p.grad, p.data * 5e-6 / (5e-6 + 1e-6), rtol=1e-12)
    assert minnet.nn.utils.clip_grad_norm_ is nn.utils.clip_grad_norm_


def test_reset_parameters() -> None:
    bn = nn.BatchNorm1d(3)
    bn.weight.data[...] = 5
    bn(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    bn.reset_parameters()
    np.testing.assert_array_equal(bn.weight.data, 1)
    np.testing.assert_array_equal(bn.running_mean, 0)
    assert int(bn.num_batches_tracked) == 0
    ln = nn.LayerNorm(3)
    ln.bias.data[...] = 2
    ln.reset_parameters()
    np.testing.assert_array_equal(ln.bias.data, 0)
    e = nn.Embedding(6, 2, padding_idx=1, rng=0)
    e.weight.data[...] = 7
    e.reset_parameters(generator=3)
    np.testing.assert_array_equal(e.weight.data[1], 0)
    assert (e.weight.data != 7).all(axis=1).sum() == 6

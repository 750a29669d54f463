"""Module behaviour as PyTorch users expect: registration, state_dict, train/eval, no_grad,
freed forward values, requires_grad_, float/double."""

from __future__ import annotations

import numpy as np
import pytest

import minnet
from minnet import nn


class Net(nn.Module):
    def __init__(self, dtype: type = np.float64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8, dtype=dtype, rng=0)
        self.act = nn.Tanh()
        self.drop = nn.Dropout(0.5, rng=1)
        self.head = nn.Sequential(nn.Linear(8, 3, dtype=dtype, rng=2))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.head(self.drop(self.act(self.fc1(x))))

    def backward(self, g: np.ndarray) -> np.ndarray:
        g = self.head.backward(g, input_grad=True)
        return self.fc1.backward(self.act.backward(self.drop.backward(g)))


KEYS = ["fc1.weight", "fc1.bias", "head.0.weight", "head.0.bias"]


def test_attribute_registration() -> None:
    net = Net()
    assert [k for k, _ in net.named_parameters()] == KEYS
    assert list(net.state_dict()) == KEYS
    assert [p.name for p in net.parameters()] == KEYS
    assert [type(m).__name__ for m in net.modules()] == [
        "Net", "Linear", "Tanh", "Dropout", "Sequential", "Linear"
    ]  # fmt: skip
    assert [n for n, _ in net.named_modules()] == ["", "fc1", "act", "drop", "head", "head.0"]
    assert [n for n, _ in net.named_children()] == ["fc1", "act", "drop", "head"]
    assert len(list(net.children())) == 4
    net.extra = nn.Linear(2, 2)
    assert "extra.weight" in net.state_dict()
    del net.extra
    assert "extra.weight" not in net.state_dict()
    with pytest.raises(TypeError, match="cannot assign 'int' as child module 'fc1'"):
        net.fc1 = 3
    assert "(fc1): Linear(in_features=4" in repr(net)


def test_shared_layer_counts_once() -> None:
    lin = nn.Linear(3, 3)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert [k for k, _ in seq.named_parameters()] == ["0.weight", "0.bias"]


def test_error_names_the_registered_layer() -> None:
    net = Net()
    with pytest.raises(ValueError, match=r"Linear \(fc1 of Net\): expected input of shape"):
        net(np.zeros((2, 5)))


def test_load_state_dict_strict_and_not_strict() -> None:
    src, dst = Net(), Net()
    src.fc1.weight.data += 1
    res = dst.load_state_dict(src.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    np.testing.assert_array_equal(dst.fc1.weight.data, src.fc1.weight.data)
    partial = {"fc1.weight": np.zeros((8, 4)), "other": np.ones(2)}
    with pytest.raises(ValueError, match='Missing key.*"fc1.bias"'):
        dst.load_state_dict(partial)
    res = dst.load_state_dict(partial, strict=False)
    assert res.missing_keys == KEYS[1:] and res.unexpected_keys == ["other"]
    assert not dst.fc1.weight.data.any()
    with pytest.raises(ValueError, match="size mismatch for fc1.weight"):
        dst.load_state_dict({"fc1.weight": np.zeros((3, 3))}, strict=False)


def test_train_eval_recursive() -> None:
    net = Net()
    assert net.training and net.drop.training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    x = np.ones((5, 4))
    np.testing.assert_array_equal(net(x), net(x))  # no dropout in eval mode
    net.train()
    assert all(m.training for m in net.modules())
    assert not np.array_equal(net(x), net(x))
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        net.train("yes")


def grads(model: nn.Module) -> list[np.ndarray]:
    return [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("make", [Net, lambda: nn.Sequential(
    nn.Linear(4, 8, dtype=np.float64, rng=0), nn.ReLU(), nn.Linear(8, 3, dtype=np.float64, rng=1)
)])  # fmt: skip
def test_no_grad_forward_does_not_disturb_a_pending_backward(make) -> None:
    rng = np.random.default_rng(0)
    x, xv = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    y, yv = np.array([0, 1, 2, 0, 1, 2]), np.array([2, 2, 1, 0, 0, 1])
    loss_fn = nn.CrossEntropyLoss()

    def step(validate: bool) -> list[np.ndarray]:
        model = make().eval()  # no dropout, so the two runs are comparable
        loss = loss_fn(model(x), y)
        if validate:
            with minnet.no_grad():
                val = loss_fn(model(xv), yv)
            assert np.isfinite(val) and val != loss
        model.zero_grad()
        model.backward(loss_fn.backward())
        return grads(model)

    for a, b in zip(step(False), step(True)):
        np.testing.assert_array_equal(a, b)


def test_no_grad_is_a_decorator_and_nests() -> None:
    @minnet.no_grad()
    def evaluate(model: nn.Module, x: np.ndarray) -> np.ndarray:
        assert not nn.is_grad_enabled()
        return model(x)

    lin = nn.Linear(2, 2)
    evaluate(lin, np.ones((1, 2)))
    assert nn.is_grad_enabled()
    with pytest.raises(ValueError, match=r"Linear: backward called before forward \(or its "):
        lin.backward(np.ones((1, 2), np.float32))
    with minnet.no_grad():
        with minnet.no_grad():
            pass
        assert not nn.is_grad_enabled()
    assert nn.is_grad_enabled()


@pytest.mark.parametrize("layer", [
    nn.Linear(3, 3), nn.ReLU(), nn.Tanh(), nn.GELU(), nn.Softmax(), nn.Dropout(rng=0),
    nn.Flatten(), nn.Sequential(nn.Linear(3, 3), nn.ReLU()),
])  # fmt: skip
def test_second_backward_raises(layer: nn.Module) -> None:
    y = layer(np.ones((2, 3), np.float32))
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        layer.backward(np.ones_like(y))
    y = layer(np.ones((2, 3), np.float32))  # a new forward can be backpropagated again
    layer.backward(np.ones_like(y))


def test_backward_uses_the_latest_forward() -> None:
    lin = nn.Linear(3, 2, dtype=np.float64, rng=0)
    a, b = np.ones((4, 3)), np.full((4, 3), 2.0)
    lin(a)
    lin(b)
    g = np.ones((4, 2))
    lin.backward(g)
    np.testing.assert_array_equal(lin.weight.grad, g.T @ b)


def test_requires_grad_false_freezes_parameters() -> None:
    net = Net().eval()
    net.fc1.requires_grad_(False)
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]
    assert len(net.parameters()) == 4  # still listed, as in PyTorch
    net(np.ones((2, 4)))
    net.backward(np.ones((2, 3)))
    assert not net.fc1.weight.grad.any() and not net.fc1.bias.grad.any()
    assert net.head[0].weight.grad.any()
    assert net.requires_grad_() is net and all(p.requires_grad for p in net.parameters())


def test_replaced_grad_is_named() -> None:
    lin = nn.Sequential(nn.Linear(2, 2))
    lin(np.ones((1, 2)))
    lin[0].weight.grad = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"parameter '0.weight' has a .grad that was replaced"):
        lin.backward(np.ones((1, 2), np.float32))
    lin(np.ones((1, 2)))
    lin[0].weight.grad = None  # PyTorch's cleared state: backward starts from the gradient
    lin.backward(np.ones((1, 2), np.float32))
    np.testing.assert_array_equal(lin[0].weight.grad, np.ones((2, 2)))


def test_float_and_double() -> None:
    net = Net(np.float32)
    x = np.ones((2, 4))
    before = net.eval()(x)
    assert net.double() is net
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())
    out = net(x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, before, rtol=1e-6)
    net.backward(np.ones_like(out))
    w = net.fc1.weight.data
    net.double()
    assert net.fc1.weight.data is w  # already float64: untouched
    assert net.float()(x).dtype == np.float32


def test_losses_under_no_grad_keep_the_pending_gradient() -> None:
    for loss_fn in (nn.MSELoss(), nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss()):
        x = np.linspace(-1, 1, 6).reshape(2, 3)
        t = np.array([0, 2]) if isinstance(loss_fn, nn.CrossEntropyLoss) else x * 0.5
        loss_fn(x, t)
        ref = loss_fn.backward()
        with minnet.no_grad():
            loss_fn(x * 3, t)
        np.testing.assert_array_equal(loss_fn.backward(), ref)


def test_a_sequential_inside_a_module_returns_its_input_gradient_only_on_request() -> None:
    net = Net()
    x = np.random.default_rng(0).standard_normal((2, 4))
    net.eval()
    out = net(x)
    assert net.head.backward(np.ones_like(out)) is None
    net(x)
    dx = net.backward(np.ones_like(out))  # Net asks with input_grad=True
    assert dx.shape == x.shape and np.isfinite(dx).all()
    net(x)
    g = net.head.backward(np.ones_like(out))  # forgot input_grad=True: a clear error, not NaN
    with pytest.raises(TypeError, match=r"Tanh \(act of Net\): grad_out is None.*input_grad=True"):
        net.act.backward(g)

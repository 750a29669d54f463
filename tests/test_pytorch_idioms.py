"""PyTorch idioms that port unchanged: containers, Identity, functional, init, apply, devices,
DataLoader keywords, random_split / Subset, RNG state, gradcheck."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.data import DataLoader, Subset, TensorDataset, random_split

F = nn.functional
rng = np.random.default_rng(0)
X = rng.standard_normal((5, 4))


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        r = np.random.default_rng(1)
        self.layers = nn.ModuleList([nn.Linear(4, 4, rng=r, dtype=np.float64) for _ in range(2)])
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 2, rng=r, dtype=np.float64)})
        self.skip = nn.Identity()

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.heads["a"](self.skip(x))


def test_module_list_and_dict_register_their_modules() -> None:
    net = Blocks()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                     "heads.a.weight", "heads.a.bias"]  # fmt: skip
    assert len(net.layers) == 2 and isinstance(net.layers[-1], nn.Linear)
    assert list(net.heads) == ["a"] and "a" in net.heads and len(net.heads.values()) == 1
    net.layers.append(nn.Linear(4, 4, dtype=np.float64))
    del net.layers[0]
    assert [n for n, _ in net.layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    assert len(net.layers) == 2
    with pytest.raises(TypeError, match="is not a Module"):
        net.layers.append(3)
    assert minnet.testing.gradcheck(Blocks(), X)


def test_a_plain_list_of_modules_warns() -> None:
    class Lost(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = [nn.Linear(2, 2), nn.Linear(2, 2)]

    with pytest.warns(UserWarning, match=r"Lost.layers is a plain list .*nn.ModuleList"):
        assert Lost().parameters() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.Module().sizes = [1, 2]  # a list of anything else is fine


def test_identity() -> None:
    ident = nn.Identity(54, unused="ignored")
    out = ident(X)
    np.testing.assert_array_equal(out, X)
    np.testing.assert_array_equal(ident.backward(X), X)
    model = nn.Sequential(nn.Identity(), nn.Linear(4, 3, rng=0, dtype=np.float64), nn.Identity())
    assert minnet.testing.gradcheck(model, X)


def test_functional_matches_the_modules_and_is_recorded() -> None:
    np.testing.assert_array_equal(F.relu(X), nn.ReLU()(X))
    np.testing.assert_array_equal(F.gelu(X, approximate="tanh"), nn.GELU("tanh")(X))
    np.testing.assert_array_equal(F.softmax(X, dim=1), nn.Softmax(1)(X))
    np.testing.assert_array_equal(F.log_softmax(X, dim=0), nn.LogSoftmax(0)(X))
    np.testing.assert_array_equal(F.dropout(X, 0.3, training=False), X)
    y = np.array([0, 1, 2, 3, 0])
    assert float(F.cross_entropy(X, y, label_smoothing=0.1)) == float(
        nn.CrossEntropyLoss(label_smoothing=0.1)(X, y)
    )
    assert float(F.mse_loss(X, X * 0, reduction="sum")) == pytest.approx((X**2).sum())
    lin = nn.Linear(4, 3, rng=2, dtype=np.float64)
    np.testing.assert_array_equal(F.linear(X, lin.weight, lin.bias), lin(X))
    # recorded: gradients reach the parameters through the functional calls
    loss = F.mse_loss(F.gelu(F.linear(X, lin.weight, lin.bias)), np.ones((5, 3)))
    loss.backward()
    ref = nn.Linear(4, 3, rng=2, dtype=np.float64)
    nn.MSELoss()(nn.GELU()(ref(X)), np.ones((5, 3))).backward()
    np.testing.assert_allclose(lin.weight.grad, ref.weight.grad, rtol=1e-12)
    np.testing.assert_allclose(lin.bias.grad, ref.bias.grad, rtol=1e-12)


def test_init_fans_bounds_and_spread() -> None:
    w = nn.Parameter(np.zeros((300, 200), np.float32))
    before = w.data
    gen = np.random.default_rng(0)
    assert nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen) is w
    assert w.data is before  # in place: an optimizer's buffers stay shared
    assert np.abs(w.data).max() <= 1 / math.sqrt(200) and np.abs(w.data).max() > 0.95 / 14.2
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=gen)
    assert w.data.std() == pytest.approx(math.sqrt(2 / 300), rel=0.02)
    nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain("tanh"), generator=gen)
    assert np.abs(w.data).max() <= 5 / 3 * math.sqrt(6 / 500)
    nn.init.xavier_normal_(w, generator=gen)
    assert w.data.std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
    conv = np.zeros((8, 3, 5, 5))  # (out, in, kh, kw): fan_in 75, fan_out 200
    assert nn.init._calculate_fan_in_and_fan_out(conv) == (75, 200)
    nn.init.uniform_(conv, -2, 2, generator=gen)
    assert conv.min() >= -2 and conv.max() < 2 and conv.min() < -1.9
    nn.init.normal_(conv, 1.0, 0.5, generator=gen)
    assert conv.mean() == pytest.approx(1.0, abs=0.05)
    for fn, value in ((nn.init.zeros_, 0.0), (nn.init.ones_, 1.0)):
        fn(conv)
        assert (conv == value).all()
    nn.init.constant_(conv, 0.25)
    assert (conv == 0.25).all()
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(np.zeros(3))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        nn.init.kaiming_uniform_(w, mode="fan_avg")


def test_apply_numel_devices_and_inplace_relu() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(inplace=True), nn.Linear(3, 2))
    seen = []

    def init(m: nn.Module) -> None:
        seen.append(type(m).__name__)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

    assert model.apply(init) is model
    assert seen == ["Linear", "ReLU", "Linear", "Sequential"]
    assert all((m.bias.data == 0).all() for m in model if isinstance(m, nn.Linear))
    assert sum(p.numel() for p in model.parameters()) == 4 * 3 + 3 + 3 * 2 + 2
    assert model.to("cpu") is model and model.cpu() is model
    assert model.to(device="cpu", dtype=np.float64) is model
    assert model[0].weight.dtype == np.float64
    with pytest.raises(ValueError, match="CPU only"):
        model.to("cuda")
    assert repr(model[1]) == "ReLU(inplace=True)"
    np.testing.assert_array_equal(model[1](X), np.maximum(X, 0))


def test_dataloader_keywords_random_split_and_subset() -> None:
    ds = TensorDataset(np.arange(10.0).reshape(10, 1), np.arange(10))
    a = [yb.tolist() for _, yb in DataLoader(ds, 4, shuffle=True, generator=3)]
    b = [yb.tolist() for _, yb in DataLoader(ds, 4, shuffle=True, rng=3, num_workers=0)]
    assert a == b and sorted(sum(a, [])) == list(range(10))
    seen = []

    def collate(items: list) -> tuple:
        seen.append(len(items))
        return tuple(np.stack(f) for f in zip(*items))

    batches = list(DataLoader(ds, 3, collate_fn=collate, pin_memory=False))
    assert seen == [3, 3, 3, 1] and batches[0][1].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="num_workers=2 is not supported"):
        DataLoader(ds, num_workers=2)
    train, val = random_split(ds, [0.7, 0.3], generator=np.random.default_rng(0))
    assert (len(train), len(val)) == (7, 3)
    assert sorted(train.indices + val.indices) == list(range(10))
    parts = random_split(ds, [0.5, 0.3, 0.2], generator=1)
    assert [len(p) for p in parts] == [5, 3, 2]
    with pytest.raises(ValueError, match="Sum of input lengths"):
        random_split(ds, [3, 3])
    sub = Subset(ds, [9, 0, 4])
    assert len(sub) == 3 and sub[0][1] == 9
    assert [yb.tolist() for _, yb in DataLoader(sub, 2)] == [[9, 0], [4]]


def test_rng_state_resumes_dropout_and_shuffle_bit_for_bit() -> None:
    minnet.manual_seed(5)
    ds = TensorDataset(np.arange(8.0).reshape(8, 1))
    loader = DataLoader(ds, 4, shuffle=True)
    drop = nn.Dropout(0.5)
    state = minnet.get_rng_state()
    first = [b[0].ravel().tolist() for b in loader], drop(np.ones((4, 4)))
    minnet.set_rng_state(state)
    second = [b[0].ravel().tolist() for b in loader], drop(np.ones((4, 4)))
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    own = DataLoader(ds, 4, shuffle=True, generator=7)
    saved = minnet.get_rng_state(own.generator)
    order = [b[0].ravel().tolist() for b in own]
    minnet.set_rng_state(saved, own.generator)
    assert [b[0].ravel().tolist() for b in own] == order
    with pytest.raises(TypeError, match="get_rng_state"):
        minnet.set_rng_state({"nope": 1})


def test_gradcheck_finds_a_wrong_or_missing_backward() -> None:
    class Scale(nn.Module):
        """A custom layer: y = x * s, backward written by hand (correct)."""

        def __init__(self, wrong: bool = False) -> None:
            super().__init__()
            self.s = nn.Parameter(np.full(4, 2.0))
            self.wrong = wrong

        def forward(self, x: np.ndarray) -> np.ndarray:
            self._x = np.asarray(x)
            return self._x * self.s.data

        def backward(self, g: np.ndarray) -> np.ndarray:
            self.s.grad += (g * self._x).sum(0) * (0.5 if self.wrong else 1.0)
            return g * self.s.data

    assert minnet.testing.gradcheck(Scale(), X)
    with pytest.raises(minnet.testing.GradcheckError, match=r"parameter 's'"):
        minnet.testing.gradcheck(Scale(wrong=True), X)

    class Forgetful(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 3, rng=0), nn.Linear(3, 2, rng=1)

        def forward(self, x: np.ndarray) -> np.ndarray:
            return self.b(self.a(x))

        def backward(self, g: np.ndarray) -> np.ndarray:
            return self.b.backward(g)  # forgot self.a

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert not minnet.testing.gradcheck(Forgetful(), X, raise_exception=False)
    with pytest.raises(ValueError, match="training mode"):
        minnet.testing.gradcheck(nn.Sequential(nn.Dropout(0.5)), X)

"""Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: gradients, PyTorch parity, errors, models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _layer_parity import cases_of, replay

import minnet
from minnet import nn
from minnet.nn import conv
from minnet.testing import gradcheck

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 7, 6))


# ------------------------------------------------------------------------- finite differences

CONV_OPTIONS = [
    {},
    {"stride": 2, "padding": 1},
    {"stride": (2, 3), "padding": (2, 0)},
    {"padding": "same"},
    {"padding": "same", "dilation": 2},
    {"padding": "same", "kernel_size": (4, 2)},  # even kernel: the odd pad at the bottom/right
    {"padding": "valid", "dilation": (2, 1)},
    {"groups": 2, "stride": (2, 1), "padding": (1, 2)},
    {"groups": 4, "bias": False},
]


@pytest.mark.parametrize("options", CONV_OPTIONS, ids=str)
def test_conv2d_gradcheck(options: dict) -> None:
    kw = {"kernel_size": 3, **options}
    out_channels = 4 if kw.get("groups") == 4 else 6
    assert gradcheck(nn.Conv2d(4, out_channels, rng=1, **kw), X)


def test_conv2d_gradcheck_unbatched() -> None:
    assert gradcheck(nn.Conv2d(4, 2, 2, stride=2, padding=1, rng=2), X[0])


POOLS = [
    nn.MaxPool2d(2),
    nn.MaxPool2d(3, stride=2, padding=1),
    nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    nn.MaxPool2d((2, 3), stride=1, dilation=(2, 1)),
    nn.AvgPool2d(2),
    nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
    nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    nn.AvgPool2d((3, 2), stride=1, divisor_override=5),
    nn.AdaptiveAvgPool2d(1),
    nn.AdaptiveAvgPool2d((7, 3)),
    nn.AdaptiveAvgPool2d((3, 4)),
    nn.AdaptiveAvgPool2d((None, 5)),
]


@pytest.mark.parametrize("pool", POOLS, ids=repr)
def test_pool_gradcheck(pool: nn.Module) -> None:
    assert gradcheck(pool, X)


def test_maxpool_routes_ties_to_the_first_maximum_in_row_major_order() -> None:
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    pool = nn.MaxPool2d(2)
    assert pool(x).item() == 3.0
    assert pool.backward(np.ones((1, 1, 1, 1))).tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]]
    # overlapping windows add their gradients at a shared maximum
    y = nn.MaxPool2d(2, stride=1)(np.array([[[[0.0, 0, 0], [0, 5, 0], [0, 0, 0]]]]))
    assert y.tolist() == [[[[5.0, 5.0], [5.0, 5.0]]]]
    y.backward(np.ones(y.shape))


def test_maxpool_padding_never_wins() -> None:
    x = -np.ones((1, 1, 2, 2))
    pool = nn.MaxPool2d(2, stride=1, padding=1)
    assert (pool(x) == -1).all()
    # each output's gradient goes to the first input position (row-major) of its window
    assert pool.backward(np.ones((1, 1, 3, 3))).tolist() == [[[[4.0, 2.0], [2.0, 1.0]]]]


# ------------------------------------------------------------------------------- PyTorch parity


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "case", cases_of("Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"), ids=lambda c: c[0]
)
def test_matches_pytorch(case: list, dtype: str) -> None:
    replay(case, dtype)


def test_parity_fails_on_a_wrong_padding_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """'same' with an even kernel puts the odd pad at the bottom/right; the top/left is wrong."""
    right = conv.Conv2d._pads

    def wrong(self: nn.Conv2d) -> tuple[int, int, int, int]:
        top, bottom, left, r = right(self)
        return bottom, top, r, left

    monkeypatch.setattr(conv.Conv2d, "_pads", wrong)
    (case,) = [c for c in cases_of("Conv2d") if c[0] == "conv_same_even"]
    with pytest.raises(AssertionError, match="relative error"):
        replay(case, "float64")


# --------------------------------------------------------------------------------- init, shapes


def test_conv2d_weight_shape_and_pytorch_init_bounds() -> None:
    minnet.manual_seed(0)
    layer = nn.Conv2d(6, 32, (3, 5), groups=2)
    assert layer.weight.shape == (32, 3, 3, 5) and layer.bias.shape == (32,)
    bound = 1 / math.sqrt(3 * 3 * 5)  # kaiming_uniform_(a=sqrt(5)): 1/sqrt(fan_in)
    w = layer.weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert np.abs(layer.bias.data).max() <= bound
    assert layer.weight.dtype == np.float32
    assert list(dict(layer.named_parameters())) == ["weight", "bias"]


@pytest.mark.parametrize(
    ("options", "shape"),
    [({}, (2, 6, 5, 4)), ({"padding": "same"}, (2, 6, 7, 6)), ({"stride": 2}, (2, 6, 3, 2)),
     ({"dilation": 2, "padding": 1}, (2, 6, 5, 4)), ({"padding": (0, 2)}, (2, 6, 5, 8))],
)  # fmt: skip
def test_conv2d_output_shapes(options: dict, shape: tuple) -> None:
    with minnet.no_grad():
        assert nn.Conv2d(4, 6, 3, rng=0, **options)(X).shape == shape


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: nn.Conv2d(4, 6, 3, stride=2, padding="same"), ValueError,
         "padding='same' is not supported for strided convolutions"),
        (lambda: nn.Conv2d(4, 6, 3, padding="full"), ValueError, "Invalid padding string 'full'"),
        (lambda: nn.Conv2d(4, 6, 3, groups=3), ValueError, "in_channels must be divisible by"),
        (lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, "out_channels must be divisible"),
        (lambda: nn.Conv2d(4, 6, 3, padding=-1), ValueError, "negative padding"),
        (lambda: nn.Conv2d(4, 6, 0), ValueError, "kernel_size must be >= 1"),
        (lambda: nn.Conv2d(4, 6, 3, padding_mode="mirror"), ValueError, "padding_mode must be"),
        (lambda: nn.Conv2d(4, 6, 3, padding=(7, 1), padding_mode="reflect")(X), ValueError,
         r"padding \(7, 7\) at dimension 2 .* less than the input size 7"),
        (lambda: nn.Conv2d(4, 6, 3, padding=(1, 7), padding_mode="circular")(X), ValueError,
         r"padding \(7, 7\) at dimension 3 .* at most the input size 6"),
        (lambda: nn.MaxPool2d(2, padding=2)(X), ValueError, "pad should be at most half"),
        (lambda: nn.AvgPool2d(3, padding=2)(X), ValueError, "pad should be at most half"),
        (lambda: nn.AdaptiveAvgPool2d(0), ValueError, "output_size"),
    ],
)  # fmt: skip
def test_constructor_errors(make: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_forward_errors_name_layer_and_shapes() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match=r"Conv2d \(layer 0 of Sequential\): expected input with "
                       r"3 channels .*got shape \(2, 4, 7, 6\)"):  # fmt: skip
        model(X)
    with pytest.raises(ValueError, match=r"expected a 4-D input \(N, C, H, W\).*shape \(7, 6\)"):
        nn.Conv2d(4, 4, 3)(X[0, 0])
    with pytest.raises(ValueError, match="Kernel size can't be greater than actual input size"):
        nn.Conv2d(4, 4, 9)(X)
    with pytest.raises(ValueError, match="output size is too small"):
        nn.MaxPool2d(8)(X)
    layer = nn.Conv2d(4, 6, 3)
    layer(X)
    with pytest.raises(ValueError, match="grad_out must have the output's shape"):
        layer.backward(np.ones((2, 6, 4, 4)))


# ------------------------------------------------------------------------------------ models


def _cnn(seed: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=seed), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, rng=seed + 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(6, 3, rng=seed + 2),
    )  # fmt: skip


def test_cnn_loss_backward_equals_model_backward_and_gradchecks() -> None:
    x = RNG.standard_normal((5, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    a, b = _cnn(3), _cnn(3)
    nn.CrossEntropyLoss()(a(x), y).backward()  # through the recorded calls
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(b(x), y)
    b.backward(loss_fn.backward())  # the hand-written chain
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert np.array_equal(p.grad, q.grad), name
        assert np.abs(p.grad).sum() > 0, name
    assert gradcheck(_cnn(7), x.astype(np.float64))


def test_sgd_steps_reduce_a_cnn_loss() -> None:
    minnet.manual_seed(0)
    x = RNG.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = x[:, 0].reshape(16, 4, 16).mean(axis=2)[:, :3].argmax(axis=1)  # brightest band
    model = _cnn(11)
    loss_fn = nn.CrossEntropyLoss()
    opt = minnet.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = loss_fn(model(x), y)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_conv_is_the_float32_computation_rounded_once(dtype: str) -> None:
    low = nn.Conv2d(3, 4, 3, padding=1, rng=0).to(dtype)
    ref = nn.Conv2d(3, 4, 3, padding=1, rng=0)
    for p, q in zip(ref.parameters(), low.parameters()):
        p.data[...] = q.data.astype(np.float32)
    x = RNG.standard_normal((2, 3, 6, 6)).astype(low.dtype)
    g = RNG.standard_normal((2, 4, 6, 6)).astype(low.dtype)
    y, y32 = low(x), ref(x.astype(np.float32))
    assert y.dtype == low.dtype and np.array_equal(y, y32.astype(low.dtype))
    dx, dx32 = low.backward(g), ref.backward(g.astype(np.float32))
    assert dx.dtype == low.dtype and np.array_equal(dx, dx32.astype(low.dtype))
    assert np.array_equal(low.weight.grad, ref.weight.grad.astype(low.dtype))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_pass_gradcheck(mode: str) -> None:
    """Each padded position's gradient goes back to the input position it copies."""
    layer = nn.Conv2d(2, 3, 3, padding=(2, 1), stride=(1, 2), padding_mode=mode, dtype=np.float64,
                      rng=0)  # fmt: skip
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 4))
    assert gradcheck(layer, x)
    assert f"padding_mode={mode}" in repr(layer)

"""float16 and bfloat16 models: 16-bit storage, float32 compute, one rounding per result.

The contract, checked bit for bit: a 16-bit layer's output (and input gradient, and parameter
gradient) equals the float32 computation on the widened 16-bit values, rounded to the 16-bit
dtype; losses of 16-bit inputs are the float32 losses of the widened inputs, and their gradients
the float32 gradients rounded to the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest

from minnet import nn

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
LOW = [F16, BF16]
LOW_IDS = ["float16", "bfloat16"]


def assert_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype, shape and bit pattern (so -0.0 differs from 0.0)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_array_equal(
        np.ascontiguousarray(actual).view(np.uint16),
        np.ascontiguousarray(expected).view(np.uint16),
    )


def rounded(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(dtype)


def linear_pair(dtype: np.dtype, bias: bool, in_f: int = 37, out_f: int = 11):
    """A 16-bit Linear and a float32 Linear holding the same (widened) values."""
    low = nn.Linear(in_f, out_f, bias, dtype=dtype, rng=1)
    ref = nn.Linear(in_f, out_f, bias, rng=1)
    for p, q in zip(low.parameters(), ref.parameters()):
        q.data[...] = p.data.astype(F32)
    return low, ref


# -- Linear -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_linear_is_the_float32_layer_rounded(dtype: np.dtype, bias: bool) -> None:
    rng = np.random.default_rng(0)
    low, ref = linear_pair(dtype, bias)
    assert low.weight.dtype == dtype and low.weight.grad.dtype == dtype
    x = rng.standard_normal((13, 37)).astype(dtype)
    out = low(x)
    assert_bits(out, ref(x.astype(F32)).astype(dtype))
    g = rng.standard_normal(out.shape).astype(dtype)
    dx = low.backward(g)
    dx_ref = ref.backward(g.astype(F32))
    assert_bits(dx, dx_ref.astype(dtype))
    for p, q in zip(low.parameters(), ref.parameters()):
        assert_bits(p.grad, q.grad.astype(dtype))


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_linear_rounds_a_wider_input_to_its_dtype_first(dtype: np.dtype) -> None:
    x = np.random.default_rng(1).standard_normal((4, 37))
    low, _ = linear_pair(dtype, True)
    assert_bits(low(x), low(x.astype(dtype)))
    assert_bits(low(x.astype(F32)), low(x.astype(dtype)))


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_linear_products_accumulate_in_float32(dtype: np.dtype) -> None:
    # 4096 ones: a 16-bit running sum stalls (at 2048 in float16, 256 in bfloat16); float32
    # reaches 4096, which both 16-bit dtypes store exactly.
    n = 4096
    layer = nn.Linear(n, 1, bias=False, dtype=dtype, rng=0)
    layer.weight.data[...] = 1
    out = layer(np.ones((2, n), dtype))
    assert out.dtype == dtype and out.tolist() == [[n], [n]]
    layer.backward(np.ones((2, 1), dtype))
    assert layer.weight.grad.dtype == dtype and (layer.weight.grad == 2).all()
    wide = nn.Linear(1, n, bias=False, dtype=dtype, rng=0)
    wide.weight.data[...] = 1
    wide(np.ones((1, 1), dtype))
    assert wide.backward(np.ones((1, n), dtype)).tolist() == [[n]]


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_linear_grad_accumulates_in_the_parameter_dtype(dtype: np.dtype) -> None:
    rng = np.random.default_rng(2)
    low, ref = linear_pair(dtype, True)
    contributions = []
    for _ in range(3):
        x = rng.standard_normal((5, 37)).astype(dtype)
        g = rng.standard_normal((5, 11)).astype(dtype)
        ref.zero_grad()
        ref(x.astype(F32))
        ref.backward(g.astype(F32))
        contributions.append([q.grad.astype(dtype) for q in ref.parameters()])
        low(x)
        low.backward(g)
    for i, p in enumerate(low.parameters()):
        expected = contributions[0][i].copy()
        for c in contributions[1:]:
            expected = (expected.astype(F32) + c[i].astype(F32)).astype(dtype)
        assert_bits(p.grad, expected)


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_sequential_of_16_bit_layers_matches_the_layers_one_by_one(dtype: np.dtype) -> None:
    rng = np.random.default_rng(3)
    model = nn.Sequential(
        nn.Linear(9, 16, dtype=dtype, rng=0), nn.ReLU(), nn.Linear(16, 4, dtype=dtype, rng=1)
    )
    x = rng.standard_normal((6, 9)).astype(dtype)
    g = rng.standard_normal((6, 4)).astype(dtype)
    for _ in range(2):  # the second pass would run on reused buffers in float32
        model.zero_grad()
        out = model(x)
        dx = model.backward(g, input_grad=True)
        grads = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        lin0, relu, lin2 = model
        assert_bits(out, lin2(relu(lin0(x))))
        assert_bits(dx, lin0.backward(relu.backward(lin2.backward(g))))
        for p, ref in zip(model.parameters(), grads):
            assert_bits(p.grad, ref)


# -- activations, Dropout, Flatten --------------------------------------------------------------

# (make the layer, the float32 backward formula on the kept *rounded output* y and g, or None
# when the layer keeps its input, so the float32 layer's own backward is the reference).
SAVES_OUTPUT: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "ReLU": lambda y, g: np.where(y > 0, g, np.float32(0)),
    "Tanh": lambda y, g: g * (1 - y * y),
    "Sigmoid": lambda y, g: g * (1 - y) * y,
    "Softmax": lambda y, g: y * (g - (g * y).sum(axis=-1, keepdims=True)),
    "Softmax0": lambda y, g: y * (g - (g * y).sum(axis=0, keepdims=True)),
    "LogSoftmax": lambda y, g: g - np.exp(y) * g.sum(axis=-1, keepdims=True),
}
LAYERS: dict[str, Callable[[], nn.Module]] = {
    "ReLU": nn.ReLU,
    "Tanh": nn.Tanh,
    "Sigmoid": nn.Sigmoid,
    "Softmax": nn.Softmax,
    "Softmax0": lambda: nn.Softmax(dim=0),
    "LogSoftmax": nn.LogSoftmax,
    "GELU": nn.GELU,
    "GELUtanh": lambda: nn.GELU(approximate="tanh"),
    "LeakyReLU": lambda: nn.LeakyReLU(0.2),
    "Dropout": lambda: nn.Dropout(0.3, rng=7),
    "Dropout1": lambda: nn.Dropout(1.0, rng=7),
    "Flatten": nn.Flatten,
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_layer_is_the_float32_layer_rounded(dtype: np.dtype, name: str) -> None:
    rng = np.random.default_rng(4)
    shape = (5, 3, 4) if name == "Flatten" else (6, 7)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x.reshape(-1)[:3] = [0.0, -0.0, 1e-30]  # zeros and a value that is subnormal or 0
    low, ref = LAYERS[name](), LAYERS[name]()
    out = low(x)
    out_ref = ref(x.astype(F32))
    assert_bits(out, out_ref.astype(dtype))
    g = rng.standard_normal(out.shape).astype(dtype)
    dx = low.backward(g)
    if name in SAVES_OUTPUT:
        expected = SAVES_OUTPUT[name](out.astype(F32), g.astype(F32))
    else:
        expected = ref.backward(g.astype(F32))
    assert_bits(dx, expected.astype(dtype))


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_every_activation_keeps_the_16_bit_dtype_inside_a_sequential(dtype: np.dtype) -> None:
    rng = np.random.default_rng(5)
    for name, make in LAYERS.items():
        if name in ("Flatten", "Softmax0"):
            continue
        model = nn.Sequential(nn.Linear(5, 4, dtype=dtype, rng=0), make())
        out = model(rng.standard_normal((3, 5)).astype(dtype))
        dx = model.backward(np.ones_like(out), input_grad=True)
        assert out.dtype == dtype and dx.dtype == dtype, name
        assert model[0].weight.grad.dtype == dtype, name


# -- losses -------------------------------------------------------------------------------------


def _ce_probs(rng: np.random.Generator) -> np.ndarray:
    p = rng.random((8, 5))
    return p / p.sum(axis=1, keepdims=True)


LOSSES: dict[str, tuple[Callable[[], nn.Module], Callable[[np.random.Generator], np.ndarray]]] = {
    "mse_mean": (nn.MSELoss, lambda r: r.standard_normal((8, 5))),
    "mse_sum": (lambda: nn.MSELoss("sum"), lambda r: r.standard_normal((8, 5))),
    "mse_none": (lambda: nn.MSELoss("none"), lambda r: r.standard_normal((8, 5))),
    "ce_index": (nn.CrossEntropyLoss, lambda r: r.integers(0, 5, 8)),
    "ce_smooth_weight": (
        lambda: nn.CrossEntropyLoss(weight=np.arange(1.0, 6.0), label_smoothing=0.1),
        lambda r: np.where(r.random(8) < 0.2, -100, r.integers(0, 5, 8)),
    ),
    "ce_probs_sum": (lambda: nn.CrossEntropyLoss(reduction="sum"), _ce_probs),
    "ce_none": (lambda: nn.CrossEntropyLoss(reduction="none"), lambda r: r.integers(0, 5, 8)),
    "bce": (nn.BCEWithLogitsLoss, lambda r: (r.random((8, 5)) < 0.5).astype(np.float64)),
    "bce_pos_weight": (
        lambda: nn.BCEWithLogitsLoss(pos_weight=np.linspace(0.5, 3.0, 5), reduction="sum"),
        lambda r: r.random((8, 5)),
    ),
}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_loss_is_computed_in_float32(dtype: np.dtype, name: str) -> None:
    rng = np.random.default_rng(6)
    make, target = LOSSES[name]
    x = (rng.standard_normal((8, 5)) * 2).astype(dtype)
    t = target(rng)
    low, ref = make(), make()
    loss = low(x, t)
    loss_ref = ref(x.astype(F32), t.astype(F32) if t.dtype.kind == "f" else t)
    assert np.asarray(loss).dtype == F32
    np.testing.assert_array_equal(loss, loss_ref)  # bit for bit: the same float32 computation
    if name.endswith("none"):
        g = rng.standard_normal(np.shape(loss)).astype(dtype)
        dx, dx_ref = low.backward(g), ref.backward(g.astype(F32))
    else:
        dx, dx_ref = low.backward(), ref.backward()
    assert_bits(dx, dx_ref.astype(dtype))


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_loss_of_16_bit_input_keeps_float32_precision(dtype: np.dtype) -> None:
    # 4096 squared errors of 1: a 16-bit sum would stall; the float32 loss is exact.
    x = np.ones(4096, dtype)
    assert nn.MSELoss("sum")(x, np.zeros(4096)) == 4096
    # A target between two 16-bit values is not rounded to the input's dtype.
    t = np.float64(1 + 2**-12)
    loss = nn.MSELoss()(np.ones(1, dtype), np.array([t]))
    assert loss == np.float32((1 - np.float32(t)) ** 2) and loss > 0


# -- dtypes, casts and errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("bfloat16", BF16), (ml_dtypes.bfloat16, BF16), (np.float16, F16), ("float16", F16)],
)
def test_dtype_spellings(spec: object, expected: np.dtype) -> None:
    layer = nn.Linear(3, 2, dtype=spec, rng=0)
    assert layer.dtype == expected and layer.weight.dtype == expected
    assert layer.bias.grad.dtype == expected
    assert f"dtype={expected}" in repr(layer)


def test_module_casts_round_to_nearest_even() -> None:
    model = nn.Sequential(nn.Linear(6, 5, rng=0), nn.GELU(), nn.Linear(5, 2, rng=1))
    model(np.ones((1, 6)))
    model.backward(np.ones((1, 2)))
    f32 = {k: v.copy() for k, v in model.state_dict().items()}
    grads32 = [p.grad.copy() for p in model.parameters()]
    for method, dtype in (("half", F16), ("bfloat16", BF16)):
        model.float()
        model.load_state_dict(f32)
        for p, g in zip(model.parameters(), grads32):
            p.grad[...] = g
        assert getattr(model, method)() is model
        assert model[0].dtype == dtype and model[2].dtype == dtype
        for k, v in model.state_dict().items():
            assert_bits(v, f32[k].astype(dtype))
        for p, g in zip(model.parameters(), grads32):
            assert_bits(p.grad, g.astype(dtype))
        assert model(np.ones((2, 6))).dtype == dtype
    assert model.to("float16")[0].weight.dtype == F16
    assert model.to(np.float64)[2].weight.dtype == np.float64
    assert model.to("bfloat16")[2].bias.dtype == BF16


def test_state_dict_round_trips_between_dtypes() -> None:
    low = nn.Linear(4, 3, dtype="bfloat16", rng=0)
    full = nn.Linear(4, 3, rng=1)
    full.load_state_dict(low.state_dict())  # bfloat16 values into a float32 model: exact
    assert_bits(full.weight.data.astype(BF16), low.weight.data)
    low.load_state_dict(nn.Linear(4, 3, dtype=np.float64, rng=2).state_dict())
    assert_bits(low.weight.data, nn.Linear(4, 3, dtype=np.float64, rng=2).weight.data.astype(BF16))


@pytest.mark.parametrize(
    ("call", "exc", "message"),
    [
        (lambda: nn.Linear(3, 2, dtype=np.int32), TypeError,
         "Linear: dtype must be float16, bfloat16, float32 or float64, got int32"),
        (lambda: nn.Linear(3, 2, dtype=ml_dtypes.float8_e4m3fn), TypeError,
         "Linear: dtype must be float16, bfloat16, float32 or float64, got float8_e4m3fn"),
        (lambda: nn.Linear(3, 2, dtype="bfloat17"), TypeError, "Linear: dtype must be"),
        (lambda: nn.Sequential(nn.Linear(3, 2)).to(np.int64), TypeError,
         "Sequential: dtype must be float16, bfloat16, float32 or float64, got int64"),
        (lambda: nn.Parameter(np.zeros(2, ml_dtypes.float8_e5m2), "w"), TypeError,
         "Parameter 'w': data has dtype float8_e5m2; parameters must be float16, bfloat16"),
        (lambda: nn.ReLU()(np.ones(3, ml_dtypes.float8_e4m3fn)), TypeError,
         "ReLU: input has dtype float8_e4m3fn: unsupported dtype"),
        (lambda: nn.GELU()(np.ones(3, ml_dtypes.int4)), TypeError,
         "GELU: input has dtype int4: unsupported dtype"),
        (lambda: nn.Linear(3, 2, dtype="bfloat16")(np.ones((1, 3), ml_dtypes.float8_e4m3fn)),
         TypeError, "Linear: input has dtype float8_e4m3fn: unsupported dtype"),
        (lambda: nn.CrossEntropyLoss()(np.ones((2, 3), ml_dtypes.float8_e4m3fn), np.zeros(2, int)),
         TypeError, "CrossEntropyLoss: input has dtype float8_e4m3fn"),
        (lambda: nn.MSELoss()(np.ones(2, BF16), np.ones(2, ml_dtypes.float8_e4m3fn)),
         TypeError, "MSELoss: target has dtype float8_e4m3fn"),
    ],
)  # fmt: skip
def test_unsupported_dtypes_name_the_layer(call: Callable[[], object], exc: type, message: str):
    with pytest.raises(exc, match=message):
        call()


# -- training -----------------------------------------------------------------------------------


def _blobs(rng: np.random.Generator, n: int = 256, d: int = 8, c: int = 3):
    centers = rng.standard_normal((c, d)) * 3
    y = rng.integers(0, c, n)
    return centers[y] + rng.standard_normal((n, d)), y


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
def test_small_mlp_trains_in_16_bits(dtype: np.dtype) -> None:
    # minnet.optim keeps float32/float64 parameters, so the SGD step is written out: widen,
    # update in float32, round once to the parameter's dtype (a "fused" 16-bit SGD).
    rng = np.random.default_rng(8)
    x, y = _blobs(rng)
    model = nn.Sequential(
        nn.Linear(8, 32, rng=0), nn.GELU(), nn.Dropout(0.1, rng=1), nn.Linear(32, 3, rng=2)
    ).to(dtype)
    loss_fn = nn.CrossEntropyLoss()
    xb = x.astype(dtype)
    lr = 0.1
    losses = []
    for _ in range(60):
        loss = loss_fn(model(xb), y)
        losses.append(loss.item())
        model.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        for p in model.parameters():
            assert p.grad.dtype == dtype and np.isfinite(p.grad.astype(F32)).all()
            p.data[...] = (p.data.astype(F32) - lr * p.grad.astype(F32)).astype(p.data.dtype)
    model.eval()
    accuracy = (model(xb).astype(F32).argmax(axis=1) == y).mean()
    assert losses[-1] < 0.25 * losses[0], losses[::10]
    assert accuracy > 0.95


def test_ml_dtypes_is_imported_on_first_bfloat16_use_only():
    """``import minnet`` leaves ml_dtypes unloaded (0.5-0.9 s of import with ml_dtypes 0.7);
    asking for bfloat16 loads it, and bfloat16 models work as before."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, minnet\n"
        "assert 'ml_dtypes' not in sys.modules, 'imported with minnet'\n"
        "m = minnet.nn.Linear(3, 2).float()\n"
        "assert 'ml_dtypes' not in sys.modules, 'imported by a float32 model'\n"
        "m = m.bfloat16()\n"
        "assert m.weight.data.dtype.name == 'bfloat16'\n"
        "from minnet.dtypes import bfloat16\n"
        "assert m(np.ones((1, 3), bfloat16)).dtype == bfloat16\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

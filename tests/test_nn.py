"""Layers and losses: shapes, dtypes, initialisation, state_dict, and errors that name the layer."""

from __future__ import annotations

import numpy as np
import pytest

from minnet.nn import Linear, MSELoss, ReLU, Sequential


def seed_model() -> Sequential:
    return Sequential(Linear(1000, 100, rng=0), ReLU(), Linear(100, 10, rng=1))


def test_linear_shapes_and_pytorch_init_distribution() -> None:
    layer = Linear(400, 300, rng=0)
    assert layer.weight.data.shape == (300, 400) and layer.bias.data.shape == (300,)
    assert layer.weight.data.dtype == np.float32
    bound = 1 / np.sqrt(400)
    for arr in (layer.weight.data, layer.bias.data):
        assert np.abs(arr).max() <= bound
    w = layer.weight.data.astype(np.float64)
    # U(-b, b) has mean 0 and variance b^2 / 3; 120k samples pin both tightly.
    assert abs(w.mean()) < 0.01 * bound
    assert w.var() == pytest.approx(bound**2 / 3, rel=0.02)


def test_linear_forward_is_x_wt_plus_b() -> None:
    rng = np.random.default_rng(0)
    layer = Linear(3, 2, dtype=np.float64, rng=rng)
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(layer(x), x @ layer.weight.data.T + layer.bias.data, rtol=1e-15)
    no_bias = Linear(3, 2, bias=False, dtype=np.float64, rng=rng)
    assert no_bias.bias is None
    assert [n for n, _ in no_bias.named_parameters()] == ["weight"]


def test_rng_seed_is_reproducible() -> None:
    np.testing.assert_array_equal(Linear(5, 3, rng=7).weight.data, Linear(5, 3, rng=7).weight.data)


def test_state_dict_keys_match_pytorch() -> None:
    model = seed_model()
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert sd["0.weight"].shape == (100, 1000)
    assert list(Linear(2, 3).state_dict()) == ["weight", "bias"]
    assert [p.name for p in model.parameters()] == list(sd)


def test_state_dict_is_a_copy_and_load_casts() -> None:
    model = seed_model()
    sd = model.state_dict()
    sd["0.bias"][:] = 5.0
    assert not np.any(model.state_dict()["0.bias"] == 5.0)
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    model.load_state_dict(sd64)
    assert model[0].bias.data.dtype == np.float32
    assert np.all(model[0].bias.data == 5.0)


def test_load_state_dict_names_every_problem_and_writes_nothing() -> None:
    model = seed_model()
    before = model.state_dict()
    bad = dict(before)
    del bad["2.bias"]
    bad["3.weight"] = np.zeros(3)
    bad["0.weight"] = np.zeros((100, 999), np.float32)
    bad["0.bias"] = np.ones(100, np.float32)  # valid, but must not be written either
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    msg = str(info.value)
    assert 'Missing key(s) in state_dict: "2.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "3.weight"' in msg
    assert "size mismatch for 0.weight" in msg and "(100, 999)" in msg and "(100, 1000)" in msg
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_wrong_feature_count_names_layer_expected_and_received() -> None:
    model = seed_model()
    with pytest.raises(ValueError) as info:
        model(np.zeros((64, 999), np.float32))
    msg = str(info.value)
    assert "Linear (layer 0 of Sequential)" in msg
    assert "1000" in msg and "(64, 999)" in msg
    with pytest.raises(ValueError, match=r"Linear \(layer 2 of Sequential\).*\(N, 100\)"):
        model[2](np.zeros((3, 10), np.float32))


@pytest.mark.parametrize("shape", [(0, 1000), (2, 0, 1000), ()])
def test_empty_batch_or_scalar(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1000\)"):
        seed_model()(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape", [(1000,), (2, 3, 1000)])
def test_leading_dimensions_map_as_pytorch(shape: tuple[int, ...]) -> None:
    # (*, in_features) -> (*, out_features): the rows of the 2-D call, reshaped.
    model = seed_model()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = model(x)
    assert y.shape == shape[:-1] + (10,)
    np.testing.assert_array_equal(y.reshape(-1, 10), model(x.reshape(-1, 1000)))


@pytest.mark.parametrize(
    "x, fragment",
    [
        (np.zeros((2, 1000), np.int64), "integers are not floats"),
        (np.zeros((2, 1000), np.complex64), "complex arrays are not supported"),
        (np.zeros((2, 1000), object), "object arrays are not supported"),
        (np.zeros((2, 1000), bool), "booleans are not floats"),
    ],
)
def test_non_float_input_is_a_type_error(x: np.ndarray, fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment):
        seed_model()(x)


def test_float64_input_is_cast_to_model_dtype() -> None:
    out = seed_model()(np.ones((2, 1000)))
    assert out.dtype == np.float32 and out.shape == (2, 10)


def test_backward_errors() -> None:
    with pytest.raises(ValueError, match=r"Linear: backward called before forward"):
        Linear(3, 2).backward(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="ReLU: backward called before forward"):
        ReLU().backward(np.zeros(3, np.float32))
    layer = Linear(3, 2)
    layer(np.zeros((4, 3), np.float32))
    with pytest.raises(
        ValueError, match=r"grad_out must have the output's shape \(4, 2\), got \(4, 3\)"
    ):
        layer.backward(np.zeros((4, 3), np.float32))


def test_mse_loss_values_scalar_and_errors() -> None:
    loss_fn = MSELoss(reduction="sum")
    loss = loss_fn(np.array([[1.0, 2.0]], np.float32), np.array([[0.0, 0.0]], np.float32))
    assert loss.dtype == np.float32 and loss.shape == () and loss.item() == 5.0
    np.testing.assert_array_equal(loss_fn.backward(), [[2.0, 4.0]])
    assert MSELoss()(np.array([1.0, 2.0]), np.zeros(2)).item() == 2.5
    with pytest.raises(ValueError, match=r"input shape \(64, 10\) and target shape \(32, 10\)"):
        loss_fn(np.zeros((64, 10)), np.zeros((32, 10)))
    with pytest.raises(ValueError, match="empty"):
        loss_fn(np.zeros((0, 10)), np.zeros((0, 10)))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="backward called before"):
        MSELoss().backward()


@pytest.mark.parametrize(
    "kwargs, exc, fragment",
    [
        (dict(in_features=0, out_features=3), ValueError, "in_features must be a positive int"),
        (dict(in_features=3, out_features=2.5), ValueError, "out_features must be a positive int"),
        (dict(in_features=3, out_features=2, dtype=np.int32), TypeError, "float32 or float64"),
        (dict(in_features=3, out_features=2, rng="seed"), TypeError, "rng must be"),
        (dict(in_features=3, out_features=2, bias=1), TypeError, "bias must be a bool"),
    ],
)
def test_linear_constructor_validation(kwargs: dict, exc: type, fragment: str) -> None:
    with pytest.raises(exc, match=fragment):
        Linear(**kwargs)


def test_relu_keeps_nan() -> None:
    out = ReLU()(np.array([np.nan, -1.0, 2.0]))
    assert np.isnan(out[0]) and out[1] == 0 and out[2] == 2

"""PyTorch's keywords on every optimizer PyTorch has: ``maximize`` (the gradient negated before
the update, in the one skeleton), and ``foreach`` / ``fused`` / ``capturable`` /
``differentiable`` accepted as PyTorch code passes them."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

import minnet
from minnet.dtypes import bfloat16
from minnet.nn import Parameter

TORCH_NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam"]
KWARGS: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1},
    "Adam": {"lr": 0.1, "amsgrad": True, "weight_decay": 0.1},
    "AdamW": {"lr": 0.1},
    "RMSprop": {"lr": 0.01, "centered": True, "momentum": 0.5},
    "Adagrad": {"lr": 0.1, "weight_decay": 0.1},
    "Adadelta": {"lr": 1.0, "weight_decay": 0.1},
    "Adamax": {"lr": 0.1},
    "NAdam": {"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True},
    "RAdam": {"lr": 0.1},
}


def run(name: str, maximize: bool, sign: float, dtype: Any, steps: int = 8) -> list[np.ndarray]:
    """``steps`` steps on fixed gradients times ``sign``; the parameter and every state array."""
    rng = np.random.default_rng(0)
    p = Parameter(rng.standard_normal(37).astype(dtype), "w")
    opt = getattr(minnet.optim, name)([p], maximize=maximize, **KWARGS[name])
    for _ in range(steps):
        p.grad[...] = (sign * rng.standard_normal(37)).astype(dtype)
        opt.step()
    return [p.data, *opt._flats[0][0].state.values()]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, bfloat16], ids=str)
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_maximize_is_the_negated_gradient_bit_for_bit(name: str, dtype: Any) -> None:
    ascent = run(name, True, 1.0, dtype)
    descent = run(name, False, -1.0, dtype)
    for a, b in zip(ascent, descent):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ascent[0], run(name, False, 1.0, dtype)[0])  # it does something


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_every_pytorch_optimizer_takes_pytorchs_keywords(name: str) -> None:
    cls = getattr(minnet.optim, name)
    params = inspect.signature(cls).parameters
    assert params["maximize"].default is False
    assert {k: params[k].default for k in ("foreach", "fused", "capturable", "differentiable")} == {
        "foreach": None, "fused": None, "capturable": False, "differentiable": False}
    p = Parameter(np.ones(3))
    opt = cls([p], foreach=None, fused=None, capturable=False, differentiable=False)
    opt = cls([p], foreach=True, fused=True, capturable=True)  # no effect: one fused kernel
    assert opt.param_groups[0]["maximize"] is False
    with pytest.raises(ValueError, match="differentiable=True .* autograd"):
        cls([Parameter(np.ones(3))], differentiable=True)
    with pytest.raises(ValueError, match="fused=True is rounding='fused'"):
        cls([Parameter(np.ones(3, np.float16))], fused=True, rounding="per_op")
    with pytest.raises(TypeError, match="unexpected keyword argument 'fusd'"):
        cls([Parameter(np.ones(3))], fusd=True)
    with pytest.raises(TypeError, match="foreach must be a bool or None"):
        cls([Parameter(np.ones(3))], foreach="yes")
    with pytest.raises(TypeError, match="maximize must be a bool"):
        cls([Parameter(np.ones(3))], maximize=1)


def test_a_state_dict_without_maximize_still_loads() -> None:
    """minnet's state dicts from before ``maximize`` existed (Adam's) lack the key."""
    p = Parameter(np.ones(3))
    opt = minnet.optim.Adam([p])
    p.grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    del sd["param_groups"][0]["maximize"]
    fresh = minnet.optim.Adam([Parameter(np.ones(3))])
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["maximize"] is False

"""A 0-d parameter stays 0-d (as in PyTorch): flat optimizer buffer, state_dicts, checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import minnet
from minnet.nn import Module, Parameter
from minnet.optim import Adam


class _Scale(Module):
    """A module whose one parameter, ``"scale"``, is 0-d (declared by ``named_parameters``)."""

    def __init__(self, value: float, dtype: type) -> None:
        self._held = [Parameter(np.array(value, dtype=dtype), name="scale")]

    @property
    def scale(self) -> Parameter:
        return self._held[0]

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        yield prefix + "scale", self.scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_dim_parameter_keeps_its_shape(dtype: type) -> None:
    p = Parameter(np.array(3.0, dtype=dtype))
    assert p.shape == ()
    assert p.data.shape == () and p.grad.shape == ()
    assert p.data.dtype == dtype and float(p.data) == 3.0


def test_zero_dim_parameter_through_adam_and_state_dicts(tmp_path: Path) -> None:
    model = _Scale(3.0, np.float64)
    other = Parameter(np.arange(4.0).reshape(2, 2), name="w")
    opt = Adam([model.scale, other], lr=0.1)
    assert model.scale.data.shape == () and model.scale.grad.shape == ()
    # One step by hand: the first Adam step moves each coordinate by lr * sign(g) (eps aside).
    model.scale.grad[...] = 2.0
    other.grad[...] = -1.0
    opt.step()
    assert model.scale.data.shape == ()
    m_hat, v_hat = 2.0, 4.0
    assert model.scale.data == pytest.approx(3.0 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8))
    np.testing.assert_allclose(
        other.data, np.arange(4.0).reshape(2, 2) + 0.1 / (1.0 + 1e-8), rtol=1e-12
    )

    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg"].shape == ()
    assert sd["state"][0]["exp_avg_sq"].shape == ()
    assert sd["state"][1]["exp_avg"].shape == (2, 2)
    msd = model.state_dict()
    assert msd["scale"].shape == ()

    # Round trip through a checkpoint, into a fresh model and optimizer.
    minnet.save({"model": msd, "optimizer": sd}, tmp_path / "ckpt.npz")
    ckpt = minnet.load(tmp_path / "ckpt.npz")
    assert ckpt["model"]["scale"].shape == ()
    model2 = _Scale(0.0, np.float64)
    other2 = Parameter(np.zeros((2, 2)), name="w")
    opt2 = Adam([model2.scale, other2], lr=0.1)
    model2.load_state_dict(ckpt["model"])
    other2.data[...] = other.data
    opt2.load_state_dict(ckpt["optimizer"])
    for o, p, q in ((opt, model.scale, other), (opt2, model2.scale, other2)):
        p.grad[...] = 1.0
        q.grad[...] = 1.0
        o.step()
    assert model2.scale.data.shape == ()
    assert model2.scale.data == model.scale.data
    np.testing.assert_array_equal(other2.data, other.data)

    with pytest.raises(ValueError, match="size mismatch for scale"):
        model2.load_state_dict({"scale": np.ones(1)})

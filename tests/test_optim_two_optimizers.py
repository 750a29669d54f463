"""Two optimizers over the same parameters: the newer one takes them over (re-creating an
optimizer is ordinary PyTorch practice), and stepping the older one says so, naming both."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import minnet
from minnet.nn import Linear


def test_a_newer_optimizer_takes_the_parameters_over_and_the_older_one_says_so() -> None:
    model = Linear(3, 2, rng=0)
    first = minnet.optim.Adam(model.parameters(), lr=1e-2)
    model.weight.grad[...] = 1.0
    first.step()
    after_first = model.weight.data.copy()
    second = minnet.optim.SGD(model.parameters(), lr=0.1)
    np.testing.assert_array_equal(model.weight.data, after_first)  # the values carry over
    second.step()
    np.testing.assert_allclose(model.weight.data, after_first - 0.1 * model.weight.grad)
    with pytest.raises(RuntimeError, match=r"weight now belongs to another optimizer \(SGD\) "
                       r"created after this one.*parameter groups"):  # fmt: skip
        first.step()


def test_re_creating_an_optimizer_in_the_same_variable_just_works() -> None:
    model = Linear(3, 2, rng=0)
    opt = minnet.optim.Adam(model.parameters(), lr=1e-2)
    opt = minnet.optim.Adam(model.parameters(), lr=1e-3)
    gc.collect()
    model.weight.grad[...] = 1.0
    opt.step()
    assert np.isfinite(model.weight.data).all()


def test_an_array_the_user_replaced_keeps_its_own_message() -> None:
    model = Linear(3, 2, rng=0)
    opt = minnet.optim.Adam(model.parameters())
    model.weight.data = np.zeros((2, 3), np.float32)
    with pytest.raises(RuntimeError, match="weight .data was replaced by another array"):
        opt.step()

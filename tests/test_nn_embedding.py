"""Embedding: lookup, PyTorch's initialisation, dense and sparse gradients, padding_idx,
16-bit weights and use in models."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import minnet
from minnet import nn

BF16 = np.dtype(ml_dtypes.bfloat16)


def test_lookup_any_index_shape() -> None:
    e = nn.Embedding(7, 3, rng=0)
    for idx in (np.array(4), np.array([1, 6, 1]), np.arange(12).reshape(2, 3, 2) % 7):
        y = e(idx)
        assert y.shape == idx.shape + (3,)
        np.testing.assert_array_equal(y, e.weight.data[idx])
    assert e(np.array([2], np.uint8)).shape == (1, 3)


def test_initialisation_standard_normal_with_zero_padding_row() -> None:
    e = nn.Embedding(4000, 50, padding_idx=-3, rng=1)
    w = e.weight.data
    assert e.padding_idx == 3997 and w.dtype == np.float32
    np.testing.assert_array_equal(w[3997], 0)
    rest = np.delete(w, 3997, axis=0)
    assert abs(rest.mean()) < 0.01 and abs(rest.std() - 1) < 0.01
    np.testing.assert_array_equal(nn.Embedding(5, 2, rng=3).weight.data,
                                  nn.Embedding(5, 2, rng=3).weight.data)  # fmt: skip
    minnet.manual_seed(0)
    a = nn.Embedding(5, 2).weight.data
    minnet.manual_seed(0)
    np.testing.assert_array_equal(a, nn.Embedding(5, 2).weight.data)


def _reference_grad(num: int, idx: np.ndarray, g: np.ndarray, padding_idx=None) -> np.ndarray:
    ref = np.zeros((num, g.shape[-1]))
    for i, row in zip(idx.reshape(-1), g.reshape(-1, g.shape[-1])):
        if i != padding_idx:
            ref[i] += row
    return ref


@pytest.mark.parametrize("n_positions", [6, 600])  # np.add.at and the bincount path
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_dense_gradient_accumulates_rows_and_skips_padding(n_positions, padding_idx) -> None:
    rng = np.random.default_rng(n_positions)
    e = nn.Embedding(9, 4, padding_idx=padding_idx, dtype=np.float64, rng=0)
    idx = rng.integers(0, 9, (n_positions // 3, 3))
    idx[0, :2] = 2  # the padding row, twice
    g = rng.standard_normal(idx.shape + (4,))
    y = e(idx)
    assert e.backward(g) is None  # integer input: no input gradient
    np.testing.assert_allclose(e.weight.grad, _reference_grad(9, idx, g, padding_idx),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    # a second backward adds
    e(idx).backward(g)
    np.testing.assert_allclose(e.weight.grad, 2 * _reference_grad(9, idx, g, padding_idx),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    assert e.weight.grad_rows is None  # dense layer: no row record
    del y


def test_finite_differences_of_the_weight() -> None:
    rng = np.random.default_rng(5)
    e = nn.Embedding(6, 3, padding_idx=0, dtype=np.float64, rng=1)
    idx = np.array([[0, 1, 1], [5, 3, 0]])
    r = rng.standard_normal(idx.shape + (3,))

    def loss() -> float:
        with minnet.no_grad():
            return float(np.sum(e(idx) ** 2 * r))

    out = e(idx)
    e.backward(2 * np.asarray(out) * r)
    num = np.zeros_like(e.weight.data)
    for i in np.ndindex(*num.shape):
        old = e.weight.data[i]
        e.weight.data[i] = old + 1e-6
        up = loss()
        e.weight.data[i] = old - 1e-6
        down = loss()
        e.weight.data[i] = old
        num[i] = (up - down) / 2e-6
    num[0] = 0  # padding_idx: PyTorch gives its row no gradient (its output is not constant)
    np.testing.assert_allclose(e.weight.grad, num, rtol=1e-6, atol=1e-9)


def test_sparse_records_touched_rows_and_zero_grad_resets_them() -> None:
    e = nn.Embedding(10, 2, padding_idx=7, sparse=True, rng=0)
    np.testing.assert_array_equal(e.weight.grad_rows, np.empty(0, np.int64))
    e(np.array([[3, 7, 3], [9, 1, 7]])).backward(np.ones((2, 3, 2), np.float32))
    np.testing.assert_array_equal(e.weight.grad_rows, [1, 3, 9])
    assert e.weight.grad_rows.dtype == np.int64
    # a zero gradient is still a gradient: row 4 is recorded, its .grad row stays 0
    e(np.array([4, 3])).backward(np.zeros((2, 2), np.float32))
    np.testing.assert_array_equal(e.weight.grad_rows, [1, 3, 4, 9])
    np.testing.assert_array_equal(e.weight.grad[4], 0)
    np.testing.assert_array_equal(e.weight.grad[3], 2)  # the dense array holds the sums
    untouched = np.setdiff1d(np.arange(10), e.weight.grad_rows)
    np.testing.assert_array_equal(e.weight.grad[untouched], 0)
    e.zero_grad()  # set_to_none=True, PyTorch's default
    np.testing.assert_array_equal(e.weight.grad_rows, np.empty(0, np.int64))
    assert e.weight.grad is None
    model = nn.Sequential(e)
    model(np.array([5])).backward(np.ones((1, 2), np.float32))
    np.testing.assert_array_equal(e.weight.grad_rows, [5])
    model.zero_grad()
    assert e.weight.grad_rows.size == 0
    # the optimizer's zero_grad forgets the rows too (a lazy optimizer reads them each step)
    opt = minnet.optim.SGD(model.parameters(), lr=0.1)
    model(np.array([2, 6])).backward(np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(e.weight.grad_rows, [2, 6])
    opt.zero_grad()
    assert e.weight.grad_rows.size == 0 and e.weight.grad is None


def test_frozen_weight_gets_nothing() -> None:
    e = nn.Embedding.from_pretrained(np.arange(12.0).reshape(4, 3))
    assert e.weight.dtype == np.float64 and not e.weight.requires_grad
    np.testing.assert_array_equal(e(np.array([2])), [[6.0, 7.0, 8.0]])
    e(np.array([1, 2])).backward(np.ones((2, 3)))
    np.testing.assert_array_equal(e.weight.grad, 0)
    assert nn.Embedding.from_pretrained(np.ones((2, 2)), freeze=False).weight.requires_grad


def test_in_a_model_with_loss_backward() -> None:
    # Embedding -> Linear on (N, T, D) -> CrossEntropyLoss on (N, C, T): a token model's shape.
    minnet.manual_seed(0)
    emb = nn.Embedding(11, 4, dtype=np.float64)
    head = nn.Linear(4, 11, dtype=np.float64)
    idx = np.random.default_rng(0).integers(0, 11, (2, 5))
    target = np.roll(idx, -1, axis=1)
    logits = head(emb(idx))
    assert logits.shape == (2, 5, 11)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(logits.transpose(0, 2, 1), target)  # transposed: computed outside modules
    with pytest.raises(RuntimeError, match="computed from a module's output"):
        loss.backward()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.head = emb, head

        def forward(self, x):
            return self.head(self.emb(x)).reshape(-1, 11)

        def backward(self, g):
            return self.emb.backward(self.head.backward(g.reshape(2, 5, 11)))

    net = Net()
    loss = loss_fn(net(idx), target.reshape(-1))
    loss.backward()
    # the same gradients by hand
    w, b = emb.weight.data, head.weight.data
    x = w[idx]
    z = x @ b.T + head.bias.data
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dz = (p - np.eye(11)[target]) / 10
    np.testing.assert_allclose(head.weight.grad, dz.reshape(-1, 11).T @ x.reshape(-1, 4),
                               rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(emb.weight.grad, _reference_grad(11, idx, dz @ b), rtol=1e-12,
                               atol=1e-15)  # fmt: skip


def test_indices_computed_from_an_output_are_data() -> None:
    lin = nn.Linear(3, 5)
    e = nn.Embedding(5, 2)
    idx = lin(np.ones((4, 3), np.float32)).argmax(axis=1)
    out = e(idx)
    out.backward(np.ones((4, 2), np.float32))  # no "computed outside modules" error
    assert e.weight.grad.sum() == 8


@pytest.mark.parametrize("dt", [np.dtype(np.float16), BF16], ids=["float16", "bfloat16"])
def test_16bit_weight_sums_rows_in_float32_and_rounds_once(dt) -> None:
    e = nn.Embedding(4, 3, dtype=dt, rng=0)
    idx = np.array([1, 1, 1, 2])
    g = np.array([[1.0, 2.0, 3.0], [1e-3, 1e-3, 1e-3], [1e-3, 1e-3, 1e-3], [0.5, 0.5, 0.5]])
    g16 = g.astype(dt)
    out = e(idx)
    assert out.dtype == dt
    e.backward(g16)
    sums = np.zeros((4, 3), np.float32)
    np.add.at(sums, idx, g16.astype(np.float32))
    np.testing.assert_array_equal(e.weight.grad, sums.astype(dt))


def test_errors() -> None:
    e = nn.Embedding(5, 2)
    with pytest.raises(TypeError, match="integer indices"):
        e(np.array([1.0, 2.0]))
    with pytest.raises(IndexError, match="index 5 is out of range for num_embeddings=5"):
        e(np.array([0, 5]))
    with pytest.raises(IndexError, match="index -1"):
        e(np.array([-1]))
    with pytest.raises(ValueError, match="padding_idx must be within num_embeddings"):
        nn.Embedding(5, 2, padding_idx=5)
    with pytest.raises(ValueError, match="embedding_dim must be a positive int"):
        nn.Embedding(5, 0)
    with pytest.raises(ValueError, match="_weight must have shape"):
        nn.Embedding(5, 2, _weight=np.ones((2, 5)))
    e(np.array([1]))
    with pytest.raises(ValueError, match="grad_out must have the output's shape"):
        e.backward(np.ones((2, 2), np.float32))


def test_functional_embedding() -> None:
    w = nn.Parameter(np.arange(8.0).reshape(4, 2))
    y = nn.functional.embedding(np.array([3, 0, 3]), w, padding_idx=0)
    np.testing.assert_array_equal(y, [[6, 7], [0, 1], [6, 7]])
    y.backward(np.ones((3, 2)))
    np.testing.assert_array_equal(w.grad, [[0, 0], [0, 0], [0, 0], [2, 2]])

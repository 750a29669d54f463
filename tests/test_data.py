"""minnet.data (TensorDataset, DataLoader) and minnet.manual_seed."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import minnet
from minnet.data import DataLoader, TensorDataset
from minnet.random import default_generator, resolve_rng


def _xy(n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n) % 4
    return x, y


def test_tensor_dataset_indexes_rows() -> None:
    x, y = _xy()
    ds = TensorDataset(x, y)
    assert len(ds) == 10
    xi, yi = ds[7]
    np.testing.assert_array_equal(xi, x[7])
    assert yi == y[7]
    assert ds.tensors[0] is x


def test_tensor_dataset_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError) as info:
        TensorDataset(np.zeros((5, 2)), np.zeros(4))
    assert str(info.value) == (
        "TensorDataset: Size mismatch between tensors: the first dimensions differ "
        "(array 0: (5, 2), array 1: (4,))"
    )
    with pytest.raises(ValueError, match="array 1 is a scalar"):
        TensorDataset(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="at least one array"):
        TensorDataset()


@pytest.mark.parametrize(
    "n, batch_size, drop_last, sizes",
    [(10, 3, False, [3, 3, 3, 1]), (10, 3, True, [3, 3, 3]), (9, 3, False, [3, 3, 3]),
     (2, 5, False, [2]), (2, 5, True, [])],
)  # fmt: skip
def test_loader_batches_in_order(n: int, batch_size: int, drop_last: bool, sizes: list) -> None:
    x, y = _xy(n)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, drop_last=drop_last)
    batches = list(loader)
    assert len(loader) == len(batches) == len(sizes)
    assert [len(b[0]) for b in batches] == sizes
    if batches:
        np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x[: sum(sizes)])
        np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y[: sum(sizes)])
        assert all(isinstance(b, tuple) and len(b) == 2 for b in batches)
        assert batches[0][0].dtype == np.float32 and not np.shares_memory(batches[0][0], x)


def test_loader_default_batch_size_is_one() -> None:
    x, y = _xy(4)
    batches = list(DataLoader(TensorDataset(x, y)))
    assert len(batches) == 4
    assert batches[2][0].shape == (1, 3) and batches[2][1].shape == (1,)


def test_shuffle_is_a_new_permutation_each_epoch_and_keeps_pairs() -> None:
    x, y = _xy(50)
    loader = DataLoader(TensorDataset(x, np.arange(50)), batch_size=8, shuffle=True, rng=1)
    epochs = [np.concatenate([b[1] for b in loader]) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(50))  # every sample once
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(50))
    for xb, ib in loader:
        np.testing.assert_array_equal(xb, x[ib])  # rows stay paired across arrays
    # An int seed repeats the same sequence of epochs in a new loader.
    again = DataLoader(TensorDataset(x, np.arange(50)), batch_size=8, shuffle=True, rng=1)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in again]), epochs[0])


def test_loader_over_a_generic_dataset_stacks_samples() -> None:
    class Squares(minnet.data.Dataset):
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int) -> tuple:
            return np.full(2, float(i)), i * i

    xb, yb = next(iter(DataLoader(Squares(), batch_size=3)))
    np.testing.assert_array_equal(xb, [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(yb, [0, 1, 4])
    whole = list(DataLoader(np.arange(6.0), batch_size=4))  # an array is a dataset of its rows
    np.testing.assert_array_equal(whole[1], [4.0, 5.0])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"batch_size": 0}, ValueError,
         "batch_size should be a positive integer value, but got batch_size=0"),
        ({"batch_size": 2.0}, ValueError,
         "batch_size should be a positive integer value, but got batch_size=2.0"),
        ({"shuffle": 1}, TypeError, "shuffle should be a boolean value, but got shuffle=1"),
        ({"drop_last": "no"}, TypeError,
         "drop_last should be a boolean value, but got drop_last=no"),
        ({"rng": 1.5}, TypeError,
         "DataLoader: rng must be a numpy Generator, an int seed or None, got 1.5"),
    ],
)  # fmt: skip
def test_loader_rejects_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    x, y = _xy()
    with pytest.raises(error) as info:
        DataLoader(TensorDataset(x, y), **kwargs)
    assert str(info.value) == message
    with pytest.raises(TypeError, match="dataset must have __len__ and __getitem__"):
        DataLoader(3)


def test_manual_seed_repeats_default_generator_draws_and_shuffles() -> None:
    x, y = _xy(40)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)  # rng=None

    def draw() -> tuple:
        minnet.manual_seed(123)
        order = np.concatenate([b[0][:, 0] for b in loader])
        return order, default_generator().standard_normal(3)

    first, second = draw(), draw()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    minnet.manual_seed(124)
    assert not np.array_equal(np.concatenate([b[0][:, 0] for b in loader]), first[0])
    assert resolve_rng(None) is default_generator()


def _linear_uses_default_generator() -> bool:
    source = inspect.getsource(inspect.getmodule(minnet.nn.Linear))
    return "default_generator" in source or "resolve_rng" in source


@pytest.mark.skipif(
    not _linear_uses_default_generator(),
    reason="Linear draws its initial weights from fresh entropy when rng=None",
)
def test_manual_seed_makes_model_init_and_shuffle_reproducible() -> None:
    x, y = _xy(32)

    def once() -> tuple:
        minnet.manual_seed(7)
        model = minnet.nn.Sequential(minnet.nn.Linear(3, 4), minnet.nn.ReLU(),
                                     minnet.nn.Linear(4, 2))  # fmt: skip
        loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
        return model.state_dict(), [b[1] for b in loader]

    (w1, b1), (w2, b2) = once(), once()
    assert w1.keys() == w2.keys()
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k])
    for a, b in zip(b1, b2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "seed, error, message",
    [(-1, ValueError, "manual_seed expected a seed >= 0, got -1"),
     (1.0, TypeError, "manual_seed expected an int seed, got 1.0"),
     (True, TypeError, "manual_seed expected an int seed, got True")],
)  # fmt: skip
def test_manual_seed_rejects_bad_seeds(seed: object, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        minnet.manual_seed(seed)  # type: ignore[arg-type]
    assert str(info.value) == message

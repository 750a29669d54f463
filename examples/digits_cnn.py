"""A small CNN on the 8x8 digits, written as the PyTorch program it ports.

The data and the split of ``examples/digits.py`` (scikit-learn's ``load_digits()``, a fixed
stratified 80/20 split, ``pip install 'minnet[data]'``), the images kept as ``(N, 1, 8, 8)`` and
standardized with the training set's mean and std of all pixels, and::

    Conv2d(1, 16, 3, padding=1, bias=False) -> BatchNorm2d(16) -> ReLU
    -> Conv2d(16, 32, 3, padding=1, bias=False) -> BatchNorm2d(32) -> ReLU -> MaxPool2d(2)
    -> Flatten -> Dropout(0.25) -> Linear(512, 64) -> ReLU -> Linear(64, 10),  CrossEntropyLoss

trained with Adam (lr 2e-3) on mini-batches of 64 for 20 epochs, seeded with
``minnet.manual_seed``. Prints the loss and the test accuracy after every epoch and returns the
final test accuracy. ``python examples/digits_cnn.py --epochs 30 --seed 1``.

Over seeds 0-9 (20 epochs each, the same 360 test images, one image = 0.28%): this CNN ends
between 98.1% and 99.4% test accuracy (mean 98.7%; seed 0: 98.9%), the MLP of
``examples/digits.py`` between 96.9% and 98.1% (mean 97.5%); the CNN is ahead on every seed.
Without the two BatchNorm2d layers (convolutions with biases) it ended between 97.5% and 98.9%
(mean 98.4%), ahead on 8 seeds and level on 2. One seed takes about 14 s on this 2-core machine
shared with other jobs (load average 8), the MLP a few seconds. (Without BatchNorm, a cosine
learning-rate schedule or lr 1e-3 gave a lower mean: 98.1% each.)

What differs from PyTorch: the imports, and batches are NumPy arrays.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

import minnet
from minnet import nn
from minnet.data import DataLoader, TensorDataset


def build_model() -> nn.Sequential:
    """The CNN, its initial weights drawn from minnet's default generator."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),  # BatchNorm2d's shift replaces the bias
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def load_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: ``(N, 1, 8, 8)`` float32 images standardized
    with the training set's statistics, and int labels (the split of ``examples/digits.py``)."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.2, random_state=0, stratify=y
    )
    mean, std = x_train.mean(), x_train.std()
    x_train = ((x_train - mean) / std).reshape(-1, 1, 8, 8)
    x_test = ((x_test - mean) / std).reshape(-1, 1, 8, 8)
    return x_train, y_train, x_test, y_test


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Share of ``x`` classified as ``y``, in eval mode without keeping anything for backward."""
    model.eval()
    with minnet.no_grad():
        return float((model(x).argmax(axis=1) == y).mean())


@threadpool_limits.wrap(limits=1)  # torch.set_num_threads(1): small products, a shared machine
def main(argv: list[str] | None = None) -> float:
    """Train and evaluate; return the test accuracy after the last epoch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="print the final line only")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    minnet.manual_seed(args.seed)  # initial weights, batch order and dropout masks

    x_train, y_train, x_test, y_test = load_images()
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch_size, shuffle=True)
    model = build_model()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = minnet.optim.Adam(model.parameters(), lr=args.lr)

    test_acc = float("nan")
    for epoch in range(1, args.epochs + 1):
        model.train()
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        test_acc = accuracy(model, x_test, y_test)
        if not args.quiet:
            print(f"epoch {epoch:3d}  last batch loss {float(loss):.4f}  test acc {test_acc:.4f}")
    print(f"test accuracy {test_acc:.4f} ({len(y_test)} images) in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return test_acc


if __name__ == "__main__":
    main()

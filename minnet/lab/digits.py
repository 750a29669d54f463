"""The ``digits`` scenario: a real classifier where eps=0 fails for a reason found in the data.

scikit-learn's ``load_digits()`` (1,797 8x8 images, 10 classes; ``pip install 'minnet[data]'``),
pixels scaled to [0, 1], a fixed stratified 80/20 train/test split, and the classifier of
``examples/digits.py``::

    Linear(64, 128) -> Tanh -> Dropout(0.2) -> Linear(128, 10),  CrossEntropyLoss,
    Adam(lr=1e-3), mini-batches of 64, 10 epochs, metric: test accuracy

Some pixels (on the image border) are 0 in every image (4 of the 64 in every training image).
The first layer's weight columns that read them get an exactly zero gradient at every step, so
their Adam moments stay 0 and their update is ``0 / (sqrt(0) + eps)``: 0 for any ``eps > 0``, but
``0/0 = NaN`` for ``eps = 0``. (At step 1 more weights are hit: those of every pixel that is 0 in
all 64 images of the first batch, and those whose pixel is nonzero only in images where dropout
zeroed their hidden unit.) The NaN weight then meets its zero pixel (``NaN * 0 = NaN``) in every
hidden unit: the logits, the loss and every parameter are NaN from the second step on, and the
accuracy falls to chance (a NaN row's argmax is class 0). With ``eps = 1e-8`` the same model
reaches about 94% test accuracy after the 10 epochs (``examples/digits.py``, with standardized
pixels and a larger lr, reaches 97%).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

import minnet
from minnet.lab.problem import Problem, accuracy
from minnet.random import default_generator

__all__ = [
    "NEEDS_SKLEARN",
    "PROBLEMS",
    "digits_cnn_problem",
    "digits_problem",
    "load_digits_split",
]


@functools.lru_cache(maxsize=1)
def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: float32 pixels / 16 and int64 labels, a fixed
    stratified split (1,437 / 360 images, ``random_state=0``). Cached per process."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(
            "the digits data needs scikit-learn: pip install 'minnet[data]'"
        ) from exc
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    for a in (x_train, x_test, y_train, y_test):
        a.setflags(write=False)  # shared by every run of the process
    return x_train, y_train, x_test, y_test


def _train_data() -> tuple[np.ndarray, np.ndarray]:
    x_train, y_train, _, _ = load_digits_split()
    return x_train, y_train


def _test_data() -> tuple[np.ndarray, np.ndarray]:
    _, _, x_test, y_test = load_digits_split()
    return x_test, y_test


def _model() -> minnet.nn.Module:
    nn = minnet.nn
    rng = default_generator()  # the run's seeded generator
    return nn.Sequential(
        nn.Linear(64, 128, rng=rng),
        nn.Tanh(),
        nn.Dropout(0.2, rng=rng),
        nn.Linear(128, 10, rng=rng),
    )


def digits_problem(epochs: int = 10) -> Problem:
    """The ``digits`` scenario as a :class:`~minnet.lab.problem.Problem` (see the module doc)."""
    return Problem(
        "digits",
        model=_model,
        data=_train_data,
        loss_fn=minnet.nn.CrossEntropyLoss(),
        metric=accuracy,
        eval_data=_test_data,
        batch_size=64,
        epochs=epochs,
        lr=1e-3,
        metric_name="test accuracy",
        metric_chance=0.1,  # 10 classes
    )


def _train_images() -> tuple[np.ndarray, np.ndarray]:
    x_train, y_train, _, _ = load_digits_split()
    return x_train.reshape(-1, 1, 8, 8), y_train


def _test_images() -> tuple[np.ndarray, np.ndarray]:
    _, _, x_test, y_test = load_digits_split()
    return x_test.reshape(-1, 1, 8, 8), y_test


def _cnn_model() -> minnet.nn.Module:
    nn = minnet.nn
    rng = default_generator()  # the run's seeded generator
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, rng=rng),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25, rng=rng),
        nn.Linear(32 * 4 * 4, 64, rng=rng),
        nn.ReLU(),
        nn.Linear(64, 10, rng=rng),
    )


def digits_cnn_problem(epochs: int = 10) -> Problem:
    """The ``digits_cnn`` scenario: the CNN of ``examples/digits_cnn.py`` without its BatchNorm2d
    layers (its convolutions with biases instead), on the split and the
    pixels (/ 16) of the ``digits`` scenario, as ``(N, 1, 8, 8)`` images::

        Conv2d(1, 16, 3, padding=1) -> ReLU -> Conv2d(16, 32, 3, padding=1) -> ReLU
        -> MaxPool2d(2) -> Flatten -> Dropout(0.25) -> Linear(512, 64) -> ReLU -> Linear(64, 10)

    CrossEntropyLoss, Adam(lr=1e-3), mini-batches of 64, 10 epochs, metric: test accuracy.

    eps=0 fails here too, for a reason of the network rather than the data: at the first step
    about 17% of the parameters get an exactly zero gradient (mostly ``Linear(512, 64)``
    weights that read features which ReLU, max pooling and dropout made 0 in every image of the
    batch), so their update is ``0 / (sqrt(0) + 0) = NaN`` and everything is NaN from the
    second step on (test accuracy at chance). With eps=1e-8 the same runs reach about 97% test
    accuracy after the 10 epochs (seed 0: 97.2%; ``examples/digits_cnn.py``, with standardized
    pixels, BatchNorm2d and lr 2e-3 for 20 epochs, reaches 98.7% on average over 10 seeds)."""
    return Problem(
        "digits_cnn",
        model=_cnn_model,
        data=_train_images,
        loss_fn=minnet.nn.CrossEntropyLoss(),
        metric=accuracy,
        eval_data=_test_images,
        batch_size=64,
        epochs=epochs,
        lr=1e-3,
        metric_name="test accuracy",
        metric_chance=0.1,  # 10 classes
    )


def _char_transformer_problem() -> Problem:
    from minnet.lab.chars import char_transformer_problem

    return char_transformer_problem()


#: Built-in problems by scenario name: ``RunSpec(scenario="digits")``, ``minnet sweep``.
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "digits": digits_problem,
    "digits_cnn": digits_cnn_problem,
    "char_transformer": _char_transformer_problem,  # minnet/lab/chars.py; needs no scikit-learn
}

#: The built-in problems whose data is scikit-learn's digits.
NEEDS_SKLEARN: frozenset[str] = frozenset({"digits", "digits_cnn"})

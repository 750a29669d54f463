"""The lab on a user's own problem: a one-hot MSE digits classifier built from Linear and ReLU."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minnet
from minnet.lab import Problem, RunSpec, SweepResult, accuracy, grid, run, sweep
from minnet.lab.problem import make_optimizer
from minnet.lab.runner import RUN_COLUMNS
from minnet.random import default_generator

pytest.importorskip("sklearn")

from minnet.lab.digits import load_digits_split  # noqa: E402

EPOCHS = 3
BATCHES = math.ceil(1437 / 64)  # training images / batch size


# Top-level factories: worker processes receive the problem by pickling.
def mlp() -> minnet.nn.Module:
    rng = default_generator()
    return minnet.nn.Sequential(
        minnet.nn.Linear(64, 32, rng=rng), minnet.nn.ReLU(), minnet.nn.Linear(32, 10, rng=rng)
    )


def one_hot_train() -> tuple[np.ndarray, np.ndarray]:
    x, y, _, _ = load_digits_split()
    return x, np.eye(10, dtype=np.float32)[y]


def test_data() -> tuple[np.ndarray, np.ndarray]:
    _, _, x, y = load_digits_split()
    return x, y


test_data.__test__ = False  # a data factory, not a test


def digits_mse(**overrides: object) -> Problem:
    kwargs = dict(model=mlp, data=one_hot_train, loss_fn=minnet.nn.MSELoss(), metric=accuracy,
                  eval_data=test_data, batch_size=64, epochs=EPOCHS, lr=1e-2)  # fmt: skip
    kwargs.update(overrides)
    return Problem("digits_mse", **kwargs)


class PlainSGD:
    """An optimizer the lab knows nothing about: ``p -= lr * g / (|g| + eps)`` (sign-like)."""

    def __init__(self, params: list, lr: float, eps: float = 1e-8) -> None:
        self.params, self.lr, self.eps = params, lr, eps

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        for p in self.params:
            p.data -= (self.lr * p.grad / (np.abs(p.grad) + self.eps)).astype(p.data.dtype)


@pytest.fixture(scope="module")
def problem_sweep() -> tuple[list[RunSpec], SweepResult]:
    specs = grid([0.0, 1e-8], amsgrad=[False], seeds=[0, 1], scenarios=[digits_mse()])
    return specs, sweep(specs, workers=1, progress=False)


def test_eps_zero_ends_nan_and_eps_1e_8_trains(problem_sweep: tuple) -> None:
    _, result = problem_sweep
    info = result.run_table()
    assert info["steps"].tolist() == [EPOCHS * BATCHES] * 4
    assert info["lr"].tolist() == [1e-2] * 4  # the problem's lr
    _, _, _, y_test = load_digits_split()
    chance = float(np.mean(y_test == 0))  # a NaN row's argmax is class 0
    for row in info.rows():
        if row["eps"] == 0:
            assert row["diverged"] and row["first_nonfinite_step"] == 1
            assert math.isnan(row["final_loss"])
            assert row["final_metric"] == pytest.approx(chance)
        else:
            assert not row["diverged"]
            assert row["final_metric"] > 0.85


def test_metric_is_recorded_at_the_end_of_every_epoch(problem_sweep: tuple) -> None:
    specs, result = problem_sweep
    t = result.runs.where(run=2)  # eps 1e-8, seed 0
    assert t.names == list(RUN_COLUMNS)
    evaluated = np.flatnonzero(~np.isnan(t["metric"]))
    assert t["step"][evaluated].tolist() == [BATCHES * (k + 1) for k in range(EPOCHS)]
    assert np.isfinite(t["eps_dominated"]).all() and np.isfinite(t["update_rms"]).all()
    assert t["scenario"][0] == "digits_mse"
    assert result.multipliers.where(run=2)["count"].sum() == 64 * 32 + 32 + 32 * 10 + 10


def test_a_run_depends_on_its_seed_alone(problem_sweep: tuple) -> None:
    specs, result = problem_sweep
    again = run(specs[2])  # eps 1e-8, seed 0
    np.testing.assert_array_equal(again.loss, result.runs.where(run=2)["loss"])
    other_seed = result.runs.where(run=3)["loss"]  # eps 1e-8, seed 1
    assert not np.array_equal(other_seed, again.loss)


def test_local_processes_and_dask_threads_give_the_same_rows(problem_sweep: tuple) -> None:
    specs, serial = problem_sweep
    local = sweep(specs, workers=2, chunksize=1, progress=False)
    for name in RUN_COLUMNS:
        np.testing.assert_array_equal(local.runs[name], serial.runs[name])
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        dask = sweep(specs, scheduler=cluster.scheduler_address, chunksize=1, progress=False)
    for name in RUN_COLUMNS:
        np.testing.assert_array_equal(dask.runs[name], serial.runs[name])


def test_csv_round_trip_keeps_the_metric(problem_sweep: tuple, tmp_path) -> None:
    _, result = problem_sweep
    back = SweepResult.read(result.write(tmp_path))
    np.testing.assert_array_equal(back.runs["metric"], result.runs["metric"])
    # A runs.csv written before the metric column existed still reads, with NaN metrics.
    text = (tmp_path / "runs.csv").read_text().splitlines()
    header = text[0].split(",")
    # the metric column and every column added after it (the 16-bit ones)
    keep = header.index("metric")
    old = [",".join(line.split(",")[:keep]) for line in text]
    (tmp_path / "runs.csv").write_text("\n".join(old) + "\n")
    legacy = SweepResult.read(tmp_path)
    assert legacy.runs.names == list(RUN_COLUMNS)
    assert np.isnan(legacy.runs["metric"]).all()
    assert set(legacy.runs["state_dtype"]) == {"same"}  # a Problem's model decides its dtype
    np.testing.assert_array_equal(legacy.runs["loss"], result.runs["loss"])


def test_full_batch_arrays_and_any_optimizer_class() -> None:
    x, y = one_hot_train()
    problem = digits_mse(data=(x[:200], y[:200]), eval_data=None, batch_size=None, epochs=5,
                         optimizer=PlainSGD, lr=1e-3, metric=accuracy)  # fmt: skip
    r = run(RunSpec(eps=1e-8, scenario=problem, amsgrad=False))
    assert len(r.loss) == 5  # one full-batch step per epoch
    assert not np.isnan(r.metric).any()  # evaluated every epoch, on the training arrays
    assert r.loss[-1] < r.loss[0]
    assert np.isnan(r.eps_dominated).all() and (r.nonfinite == 0).all()  # no optimizer stats
    assert r.multiplier_counts.sum() == 0  # the multiplier histogram is Adam's
    r0 = run(RunSpec(eps=0.0, scenario=problem, amsgrad=False))
    assert r0.nonfinite[0] > 0  # PlainSGD's 0 / (|0| + 0) on the zero pixels


def test_steps_override_epochs_and_optimizer_kwargs_reach_the_optimizer() -> None:
    problem = digits_mse(optimizer="Adam", optimizer_kwargs={"weight_decay": 0.5})
    r = run(RunSpec(eps=1e-8, scenario=problem, steps=BATCHES + 3))
    assert len(r.loss) == BATCHES + 3
    assert np.flatnonzero(~np.isnan(r.metric)).tolist() == [BATCHES - 1, BATCHES + 2]
    opt = make_optimizer("Adam", mlp().parameters(), lr=0.1, eps=1e-3, knobs={"amsgrad": True},
                         extra={"weight_decay": 0.5})  # fmt: skip
    group = opt.param_groups[0]
    assert (group["lr"], group["eps"], group["amsgrad"], group["weight_decay"]) == (
        0.1, 1e-3, True, 0.5)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"optimizer_kwargs": {"eps": 1.0}}, ValueError,
         "optimizer_kwargs must not set eps (each run sets lr and eps"),
        ({"optimizer": "NoSuchOptimizer"}, ValueError,
         "minnet.optim has no optimizer 'NoSuchOptimizer'"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1 or None, got 0"),
        ({"epochs": 0}, ValueError, "epochs must be an int >= 1, got 0"),
        ({"model": "mlp"}, TypeError, "model must be a factory (a function), got str"),
        ({"loss_fn": np.mean}, TypeError, "loss_fn must be a loss with .backward()"),
    ],
)  # fmt: skip
def test_problem_rejects_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        digits_mse(**kwargs)
    assert message in str(info.value)
    assert "'digits_mse'" in str(info.value)


def test_optimizer_without_a_knob_the_run_sets_is_an_error() -> None:
    with pytest.raises(ValueError) as info:
        make_optimizer(PlainSGD, mlp().parameters(), lr=0.1, eps=0.0, knobs={"amsgrad": True})
    assert str(info.value) == (
        "optimizer PlainSGD takes no amsgrad argument, but the run sets amsgrad=True"
    )
    # Knobs at their defaults are simply not passed.
    opt = make_optimizer(PlainSGD, mlp().parameters(), lr=0.1, eps=0.0, knobs={"amsgrad": False})
    assert isinstance(opt, PlainSGD)


def test_accuracy() -> None:
    out = np.array([[0.1, 0.9], [0.8, 0.2], [np.nan, 0.0]])
    assert accuracy(out, np.array([1, 1, 1])) == pytest.approx(1 / 3)
    assert accuracy(out, np.eye(2)[[1, 0, 0]]) == 1.0
    with pytest.raises(ValueError, match="does not match output shape"):
        accuracy(out, np.array([1, 0]))

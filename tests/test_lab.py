"""The epsilon lab: scenarios behave as the README says, sweeps give a complete tidy table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minnet.lab import RunSpec, Scenario, SweepResult, grid, make_problem, run, sweep
from minnet.lab.runner import MULTIPLIER_COLUMNS, RUN_COLUMNS, Table, step_multiplier
from minnet.optim import Adam

# -- scenarios ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario, name",
    [
        (Scenario(), "seed"),
        (Scenario(zero_features=100), "zero_features=100"),
        (Scenario(dead_units=7), "dead_units=7"),
        (Scenario(zero_features=3, dead_units=2), "zero_features=3,dead_units=2"),
    ],
)
def test_scenario_names_round_trip(scenario: Scenario, name: str) -> None:
    assert scenario.name == str(scenario) == name
    assert Scenario.parse(name) == scenario


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"zero_features": 1001},
            ValueError,
            "Scenario: zero_features must be in [0, 1000], got 1001",
        ),
        ({"dead_units": -1}, ValueError, "Scenario: dead_units must be in [0, 100], got -1"),
        ({"dead_units": 2.0}, TypeError, "Scenario: dead_units must be an int, got 2.0"),
    ],
)
def test_scenario_rejects_bad_sizes(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        Scenario(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["dead", "zero_features=", "zero_features=1,zero_features=2"])
def test_scenario_parse_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError) as info:
        Scenario.parse(name)
    assert str(info.value) == (
        f"unknown scenario {name!r}: expected 'seed', 'zero_features=K', 'dead_units=K' or both "
        "joined by a comma"
    )


def test_seed_scenario_is_the_seed_example_problem() -> None:
    p = make_problem("seed", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1000), dtype=np.float32)
    y = rng.standard_normal((64, 10), dtype=np.float32)
    bound = 1 / math.sqrt(1000)
    w1 = rng.uniform(-bound, bound, (100, 1000)).astype(np.float32)
    np.testing.assert_array_equal(p.x, x)
    np.testing.assert_array_equal(p.y, y)
    np.testing.assert_array_equal(p.model[0].weight.data, w1)
    assert p.loss_fn.reduction == "sum"


def _one_gradient(scenario: str) -> tuple:
    p = make_problem(scenario, seed=1)
    hidden = p.model[1](p.model[0](p.x))
    p.loss_fn(p.model[2](hidden), p.y)
    p.model.backward(p.loss_fn.backward())
    return p, hidden


def test_zero_features_get_exactly_zero_gradient() -> None:
    p, _ = _one_gradient("zero_features=30")
    assert not p.x[:, :30].any() and p.x[:, 30:].all()
    w1 = p.model[0].weight
    assert not w1.grad[:, :30].any()
    assert np.count_nonzero(w1.grad[:, 30:]) > 0.9 * w1.grad[:, 30:].size


def test_dead_units_output_zero_and_get_zero_gradient() -> None:
    p, hidden = _one_gradient("dead_units=12")
    assert not hidden[:, :12].any()
    assert (hidden[:, 12:] > 0).any(axis=0).all()  # every other unit is alive on some sample
    w1, b1, w2 = p.model[0].weight, p.model[0].bias, p.model[2].weight
    assert not w1.grad[:12].any() and not b1.grad[:12].any() and not w2.grad[:, :12].any()


# -- what eps does (real runs) ---------------------------------------------------------------------

STEPS = 150


@pytest.fixture(scope="module")
def seed_runs() -> dict[float, object]:
    return {e: run(RunSpec(eps=e, steps=STEPS)) for e in (0.0, 1e-8, 1e-4, 1.0, 10.0)}


def test_seed_problem_trains_identically_for_eps_up_to_1e_4(seed_runs: dict) -> None:
    reference = seed_runs[1e-8].loss
    assert reference[-1] < 0.1 * reference[0]  # it trains
    for e in (0.0, 1e-4):
        curve = seed_runs[e].loss
        np.testing.assert_allclose(curve, reference, rtol=1e-3)
        assert seed_runs[e].eps_dominated.max() < 1e-3
        assert seed_runs[e].nonfinite.max() == 0


def test_large_eps_slows_training_and_dominates_the_denominator(seed_runs: dict) -> None:
    small = seed_runs[1e-8].loss[-1]
    assert seed_runs[1.0].loss[-1] > 3 * small
    assert seed_runs[10.0].loss[-1] > 10 * small
    assert seed_runs[10.0].loss[-1] > 3 * seed_runs[1.0].loss[-1]
    # eps >= sqrt(v_hat) for nearly every coordinate: the update is lr/eps * m_hat, momentum SGD
    assert seed_runs[10.0].eps_dominated.min() > 0.99


@pytest.mark.parametrize("scenario", ["zero_features=100", "dead_units=10"])
@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # eps=0 on purpose
def test_eps_zero_turns_zero_gradient_weights_nan_at_step_1_and_everything_follows(
    scenario: str,
) -> None:
    r = run(RunSpec(eps=0.0, steps=4, scenario=scenario))
    assert r.nonfinite[0] > 0  # 0/0 at the first step
    assert np.isfinite(r.loss[0]) and np.isnan(r.loss[1:]).all()
    # the whole output is NaN after one step (NaN * 0 = NaN)
    p = make_problem(scenario)
    opt = Adam(p.model.parameters(), lr=1e-4, eps=0.0)
    with np.errstate(all="ignore"):
        p.loss_fn(p.model(p.x), p.y)
        p.model.backward(p.loss_fn.backward())
        opt.step()
        assert np.isnan(p.model(p.x)).all()


@pytest.mark.parametrize("scenario", ["zero_features=100", "dead_units=10"])
@pytest.mark.parametrize("eps, eps_mode", [(1e-8, "outside"), (0.0, "atan2")])
def test_eps_1e_8_and_atan2_train_normally_with_zero_gradients(
    scenario: str, eps: float, eps_mode: str
) -> None:
    r = run(RunSpec(eps=eps, eps_mode=eps_mode, steps=40, scenario=scenario))
    assert r.nonfinite.max() == 0 and np.isfinite(r.loss).all()
    assert r.loss[-1] < 0.8 * r.loss[0]


def test_step_multiplier_is_one_over_sqrt_v_hat_plus_eps() -> None:
    p = make_problem("zero_features=5")
    opt = Adam(p.model.parameters(), lr=1e-4, eps=1e-3)
    for _ in range(3):
        p.loss_fn(p.model(p.x), p.y)
        opt.zero_grad()
        p.model.backward(p.loss_fn.backward())
        opt.step()
    k = step_multiplier(opt)
    v = np.concatenate([s["exp_avg_sq"].ravel() for s in opt.state_dict()["state"].values()])
    np.testing.assert_allclose(k, 1 / (np.sqrt(v / (1 - 0.999**3)) + 1e-3), rtol=1e-6)
    assert k.max() == pytest.approx(1e3)  # the zero-gradient weights: 1/eps


# -- sweeps and the table --------------------------------------------------------------------------


def test_grid_order_and_amsgrad_max_only_with_amsgrad() -> None:
    specs = grid(eps=[0, 1], seeds=[0, 1], amsgrad=[False, True], amsgrad_max=["raw", "paper"])
    assert len(specs) == 2 * 2 * (1 + 2)
    assert [(s.amsgrad, s.amsgrad_max) for s in specs[::4]] == [
        (False, "raw"),
        (True, "raw"),
        (True, "paper"),
    ]
    assert [(s.eps, s.seed) for s in specs[:4]] == [(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)]
    assert len(grid()) == 78 and all(s.steps == 500 for s in grid())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -1.0}, "eps must be finite and >= 0, got -1.0"),
        ({"eps": math.nan}, "eps must be finite and >= 0, got nan"),
        ({"eps": 1.0, "eps_mode": "middle"},
         "Invalid eps_mode: 'middle'; expected one of ('outside', 'hat', 'inside', 'atan2')"),
        ({"eps": 1.0, "lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"eps": 1.0, "betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
        ({"eps": 1.0, "amsgrad_max": "paper"}, "amsgrad_max='paper' needs amsgrad=True"),
        ({"eps": 1.0, "steps": 0}, "steps must be >= 1, got 0"),
        ({"eps": 1.0, "dtype": "float8"},
         "dtype must be 'float32', 'float64', 'float16' or 'bfloat16', got 'float8'"),
        ({"eps": 1.0, "state_dtype": "int8"},
         "state_dtype must be 'same' or 'float32', 'float64', 'float16' or 'bfloat16', got "
         "'int8'"),
        ({"eps": 1.0, "rounding": "stochastic"},
         "rounding must be one of ('fused', 'per_op'), got 'stochastic'"),
    ],
)  # fmt: skip
def test_run_spec_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        RunSpec(**kwargs)
    assert str(info.value) == message


def _assert_tables_equal(a: Table, b: Table) -> None:
    assert a.names == b.names
    for name in a.names:
        if a[name].dtype.kind == "f":
            np.testing.assert_array_equal(a[name], b[name])  # NaN == NaN here
        else:
            assert a[name].tolist() == b[name].tolist(), name


@pytest.fixture(scope="module")
def small_sweep() -> tuple[list[RunSpec], SweepResult]:
    specs = grid(eps=[0.0, 1e-8], seeds=[0], amsgrad=[False, True], steps=6,
                 scenarios=["seed", "zero_features=50"])  # fmt: skip
    return specs, sweep(specs, workers=1, progress=False)


def test_sweep_table_has_one_row_per_run_and_step(small_sweep: tuple) -> None:
    specs, result = small_sweep
    t = result.runs
    assert t.names == list(RUN_COLUMNS)
    assert len(t) == len(specs) * 6 == 48
    assert t["run"].tolist() == [i for i in range(len(specs)) for _ in range(6)]
    assert t["step"].tolist() == list(range(1, 7)) * len(specs)
    assert np.isnan(t["metric"]).all()  # the built-in scenarios have no metric
    rows = [{k: v for k, v in row.items() if k != "metric"} for row in t.rows()]
    assert rows[0] == {
        "run": 0, "scenario": "seed", "eps": 0.0, "eps_mode": "outside", "amsgrad": False,
        "amsgrad_max": "raw", "seed": 0, "dtype": "float32", "lr": 1e-4, "optimizer": "Adam",
        "hyperparameters": "{}", "eps_compared_with": "sqrt(v_hat)", "step": 1,
        "loss": rows[0]["loss"], "eps_dominated": 0.0, "nonfinite": 0,
        "update_rms": rows[0]["update_rms"], "state_dtype": "float32", "rounding": "fused",
        "underflow": 0, "lost_updates": 0,
    }  # fmt: skip
    assert result.multipliers.names == list(MULTIPLIER_COLUMNS)
    per_run = {}
    for r, c in zip(result.multipliers["run"], result.multipliers["count"]):
        per_run[r] = per_run.get(r, 0) + c
    assert per_run == {i: 101_110 for i in range(len(specs))}  # every parameter, every run


def test_diverged_runs_are_kept(small_sweep: tuple) -> None:
    specs, result = small_sweep
    info = result.run_table()
    diverged = {
        (s, e, a)
        for s, e, a, d in zip(info["scenario"], info["eps"], info["amsgrad"], info["diverged"])
        if d
    }
    assert diverged == {("zero_features=50", 0.0, False), ("zero_features=50", 0.0, True)}
    for run_id in info.where(diverged=True)["run"]:
        rows = result.runs.where(run=run_id)
        assert len(rows) == 6 and np.isnan(rows["loss"][1:]).all()
    assert info.where(diverged=True)["first_nonfinite_step"].tolist() == [1, 1]
    # a run that never diverged has no first non-finite step: NaN (missing), not 0
    assert np.isnan(info.where(diverged=False)["first_nonfinite_step"]).all()


def test_csv_round_trip_is_exact(small_sweep: tuple, tmp_path) -> None:
    _, result = small_sweep
    result.write(tmp_path)
    header = (tmp_path / "runs.csv").read_text().splitlines()[0]
    assert header == ",".join(RUN_COLUMNS)
    back = SweepResult.read(tmp_path)
    _assert_tables_equal(back.runs, result.runs)
    _assert_tables_equal(back.multipliers, result.multipliers)
    assert not list(tmp_path.glob("*.tmp"))


def test_local_processes_give_the_same_rows_as_one_process(small_sweep: tuple) -> None:
    specs, serial = small_sweep
    local = sweep(specs, workers=2, chunksize=3, progress=False)
    _assert_tables_equal(local.runs, serial.runs)
    _assert_tables_equal(local.multipliers, serial.multipliers)


@pytest.mark.parametrize("processes", [False, True])
def test_dask_gives_the_same_rows_as_local_runs(small_sweep: tuple, processes: bool) -> None:
    distributed = pytest.importorskip("distributed")
    specs, serial = small_sweep
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=processes, dashboard_address=None
    ) as cluster:
        dask = sweep(specs, scheduler=cluster.scheduler_address, chunksize=2, progress=False)
    _assert_tables_equal(dask.runs, serial.runs)
    _assert_tables_equal(dask.multipliers, serial.multipliers)


def test_sweep_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sweep: no runs given"):
        sweep([])
    with pytest.raises(TypeError, match=r"sweep: specs\[0\] is dict, expected RunSpec"):
        sweep([{"eps": 1.0}])
    with pytest.raises(ValueError, match="sweep: workers must be an int >= 1, got 0"):
        sweep([RunSpec(eps=1.0, steps=1)], workers=0)


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.booleans(),
            st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8),
        ),
        max_size=6,
    )
)
def test_table_csv_round_trip_any_values(data: list, tmp_path_factory) -> None:
    schema = {"x": float, "n": int, "flag": bool, "name": str}
    cols = list(zip(*data)) if data else [(), (), (), ()]
    table = Table(
        {
            "x": np.array(cols[0], dtype=np.float64),
            "n": np.array(cols[1], dtype=np.int64),
            "flag": np.array(cols[2], dtype=bool),
            "name": np.array(cols[3], dtype=str),
        },
        schema,
    )
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    table.to_csv(path)
    back = Table.read_csv(path, schema)
    _assert_tables_equal(back, table)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "{path}: empty file, expected a CSV header"),
        ("x,n\n", "{path}: missing column(s) flag"),
        ("x,n,flag\n1.0,2\n", "{path}, line 2: 2 fields, expected 3 (x, n, flag)"),
        ("x,n,flag\n1.0,2.5,True\n",
         "{path}: column 'n': invalid literal for int() with base 10: '2.5'"),
        ("x,n,flag\n1.0,2,yes\n", "{path}: column 'flag': expected True or False, got 'yes'"),
    ],
)  # fmt: skip
def test_read_csv_names_the_file_and_the_problem(text: str, message: str, tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        Table.read_csv(path, {"x": float, "n": int, "flag": bool})
    assert str(info.value) == message.format(path=path)


def test_with_eps_1e_8_zero_gradient_weights_never_move() -> None:
    p = make_problem("zero_features=20,dead_units=5", seed=2)
    w1, b1, w2 = p.model[0].weight, p.model[0].bias, p.model[2].weight
    before = (w1.data[:, :20].copy(), w1.data[:5].copy(), b1.data[:5].copy(), w2.data[:, :5].copy())
    moving = w1.data[5:, 20:].copy()
    opt = Adam(p.model.parameters(), lr=1e-4, eps=1e-8)
    for _ in range(5):
        p.loss_fn(p.model(p.x), p.y)
        opt.zero_grad()
        p.model.backward(p.loss_fn.backward())
        opt.step()
    after = (w1.data[:, :20], w1.data[:5], b1.data[:5], w2.data[:, :5])
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(moving, w1.data[5:, 20:])

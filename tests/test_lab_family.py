"""The lab for the whole optimizer family: registry, grid, rows, multipliers, CLI and the atlas.

Every check asks the optimizer (``eps_compared_with()``, ``multipliers()``) for the expected
value instead of restating a formula. Optimizers not (yet) in ``minnet.optim`` are skipped.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

import minnet
import minnet.optim
from minnet.cli import main
from minnet.lab import RunSpec, grid, run, sweep
from minnet.lab.family import FAMILY, NO_PLACEMENT, available, lookup, resolve_name
from minnet.lab.plots import atlas_coverage, draw_eps_atlas, plot_eps_atlas, plot_multipliers
from minnet.lab.runner import RUN_COLUMNS, SweepResult
from minnet.nn import Parameter

N_PARAMS = 101_110  # the seed problem's parameters
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MEMBERS = available()
WITH_EPS = [m.name for m in MEMBERS if m.has_eps]
WITHOUT_EPS = [m.name for m in MEMBERS if not m.has_eps]


def _figure_text(fig) -> str:  # type: ignore[no-untyped-def]
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [t.get_text() for t in ax.texts] + [ax.get_title()]
    return "\n".join(texts)


# -- the registry agrees with the optimizers ----------------------------------------------------


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_registry_matches_the_optimizer_class(member) -> None:  # type: ignore[no-untyped-def]
    params = inspect.signature(member.cls).parameters
    assert (member.eps_arg in params) == member.has_eps
    assert ("eps_mode" in params) == bool(member.eps_modes)
    if member.eps_modes:
        assert params["eps_mode"].default == member.default_mode
    for mode in member.eps_modes:
        opt = member.cls([Parameter(np.zeros(3))], eps_mode=mode)
        # An optimizer with eps says what it is compared with (atan2 is Adam's one without).
        assert (opt.eps_compared_with() is None) == (mode == "atan2")
    if member.eps_modes:
        with pytest.raises(ValueError, match="eps_mode"):
            member.cls([Parameter(np.zeros(3))], eps_mode="nowhere")
    if not member.eps_modes:
        opt = member.cls([Parameter(np.zeros(3))])
        assert (opt.eps_compared_with() is None) == (not member.has_eps)


def test_names_resolve_in_any_case_and_unknown_names_list_the_family() -> None:
    assert resolve_name("adam") == "Adam" and resolve_name("SGD") == "SGD"
    assert lookup("sgd").has_eps is False and lookup("ADAMW").name == "AdamW"
    with pytest.raises(ValueError, match=r"unknown optimizer 'Sophia'; available: SGD, Adam"):
        resolve_name("Sophia")
    assert [m.name for m in FAMILY[:3]] == ["SGD", "Adam", "AdamW"]


# -- grid ---------------------------------------------------------------------------------------


def test_grid_gives_each_optimizer_its_own_placements_and_collapses_no_eps() -> None:
    specs = grid([0.0, 1e-8, 1.0], optimizers=["adam", "sgd", "adamw"],
                 eps_modes=["outside", "inside"], amsgrad=[False, True], seeds=[0, 1])  # fmt: skip
    by_opt: dict[str, list[RunSpec]] = {}
    for s in specs:
        by_opt.setdefault(s.optimizer, []).append(s)
    # Adam and AdamW: 2 modes x (plain + AMSGrad) x 3 eps x 2 seeds; SGD: once per seed.
    assert len(by_opt["Adam"]) == len(by_opt["AdamW"]) == 2 * 2 * 3 * 2
    assert len(by_opt["SGD"]) == 2
    assert all(np.isnan(s.eps) and s.eps_mode == NO_PLACEMENT for s in by_opt["SGD"])
    assert not any(s.amsgrad for s in by_opt["SGD"])
    assert {s.eps_mode for s in by_opt["Adam"]} == {"outside", "inside"}
    assert [s.optimizer for s in specs] == sorted(
        [s.optimizer for s in specs], key=["Adam", "SGD", "AdamW"].index
    )
    assert {s.lr for s in by_opt["SGD"]} == {lookup("SGD").lr}


def test_grid_all_placements_lr_map_and_hyperparameters() -> None:
    specs = grid([1e-8], optimizers=["Adam", "SGD"], eps_modes=["all"], amsgrad=[False],
                 seeds=[0], lr={"sgd": 3e-4},
                 optimizer_kwargs={"SGD": {"momentum": 0.9}})  # fmt: skip
    assert [s.eps_mode for s in specs if s.optimizer == "Adam"] == list(lookup("Adam").eps_modes)
    sgd = [s for s in specs if s.optimizer == "SGD"]
    assert len(sgd) == 1 and sgd[0].lr == 3e-4
    assert sgd[0].optimizer_kwargs() == {"lr": 3e-4, "momentum": 0.9, "track_stats": True}
    assert all(s.lr == 1e-4 for s in specs if s.optimizer == "Adam")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"optimizers": ["sgd"], "eps_modes": ["hat"]},
         "grid: eps_mode 'hat' is a placement of none of the optimizers swept (SGD: none)"),
        ({"optimizers": ["adam"], "eps_modes": ["outside", "max"]},
         "grid: eps_mode 'max' is a placement of none of the optimizers swept"),
        ({"optimizers": ["adam"], "optimizer_kwargs": {"sgd": {"momentum": 0.9}}},
         "grid: optimizer_kwargs names SGD, which is not among the optimizers swept"),
        ({"optimizers": ["Sophia"]}, "unknown optimizer 'Sophia'"),
        ({"optimizers": []}, "grid: optimizers is empty"),
    ],
)  # fmt: skip
def test_grid_errors_name_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        grid([1e-8], seeds=[0], **kwargs)
    assert message in str(info.value)


def test_run_spec_rejects_what_an_optimizer_does_not_have() -> None:
    with pytest.raises(ValueError, match="SGD has no AMSGrad"):
        RunSpec(eps=1e-8, optimizer="sgd", amsgrad=True)
    with pytest.raises(ValueError, match="SGD has one eps placement"):
        RunSpec(eps=1e-8, optimizer="sgd", eps_mode="outside")
    with pytest.raises(ValueError, match="Invalid momentum value: -1"):
        RunSpec(eps=1e-8, optimizer="sgd", hyperparameters={"momentum": -1.0})
    with pytest.raises(ValueError, match="hyperparameters must not set lr"):
        RunSpec(eps=1e-8, optimizer="sgd", hyperparameters={"lr": 1.0})


# -- rows and multipliers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def family_sweep() -> tuple[list[RunSpec], SweepResult]:
    names = ["Adam", *[n for n in ("NAdam", "RMSprop", "Adagrad") if n in WITH_EPS][:1],
             *WITHOUT_EPS]  # fmt: skip
    specs = grid([0.0, 1e-8], optimizers=names, amsgrad=[False], seeds=[0], steps=3,
                 scenarios=["seed", "zero_features=10"])  # fmt: skip
    return specs, sweep(specs, workers=1, progress=False)


@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # eps=0 in the grid
def test_rows_record_optimizer_placement_and_what_eps_is_compared_with(family_sweep) -> None:  # type: ignore[no-untyped-def]
    specs, result = family_sweep
    assert result.runs.names == list(RUN_COLUMNS)
    info = result.run_table()
    assert len(info) == len(specs)
    for spec, row in zip(specs, info.rows()):
        assert row["optimizer"] == spec.optimizer and row["eps_mode"] == spec.eps_mode
        assert json.loads(row["hyperparameters"]) == dict(spec.hyperparameters)
        member = lookup(spec.optimizer)
        opt = member.cls([Parameter(np.zeros(2))], **spec.optimizer_kwargs())
        assert row["eps_compared_with"] == (opt.eps_compared_with() or "")
        if not member.has_eps:
            assert np.isnan(row["eps"])
            steps = result.runs.where(run=row["run"])
            assert (steps["eps_dominated"] == 0).all()


def test_multipliers_present_with_eps_absent_without(family_sweep) -> None:  # type: ignore[no-untyped-def]
    specs, result = family_sweep
    mult = result.multipliers
    for i, spec in enumerate(specs):
        counts = mult.where(run=i)["count"]
        if lookup(spec.optimizer).has_eps:
            assert counts.sum() == N_PARAMS, spec
        else:
            assert len(counts) == 0, spec


def test_histogram_is_the_optimizers_own_multipliers() -> None:
    from minnet.lab.runner import _histogram
    from minnet.lab.scenarios import make_problem

    name = WITH_EPS[-1]  # the most complex optimizer present with eps
    spec = RunSpec(eps=1e-3, optimizer=name, steps=2, scenario="zero_features=10")
    recorded = run(spec).multiplier_counts
    problem = make_problem(spec.scenario, seed=0)
    opt = lookup(name).cls(problem.model.parameters(), **spec.optimizer_kwargs())
    for _ in range(2):
        problem.loss_fn(problem.model(problem.x), problem.y)
        opt.zero_grad()
        problem.model.backward(problem.loss_fn.backward(), input_grad=False)
        opt.step()
    np.testing.assert_array_equal(recorded, _histogram(opt.multipliers()))


def test_csv_round_trip_and_a_csv_from_before_the_family(family_sweep, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, result = family_sweep
    back = SweepResult.read(result.write(tmp_path / "new"))
    for name in RUN_COLUMNS:
        if back.runs[name].dtype.kind == "f":
            np.testing.assert_array_equal(back.runs[name], result.runs[name])
        else:
            assert back.runs[name].tolist() == result.runs[name].tolist(), name
    # An Adam-only runs.csv without the optimizer columns reads as Adam's.
    adam = sweep(grid([1e-8], eps_modes=["outside", "inside"], amsgrad=[False], seeds=[0],
                      steps=2), workers=1, progress=False)  # fmt: skip
    old = tmp_path / "old"
    adam.write(old)
    lines = (old / "runs.csv").read_text().splitlines()
    header = lines[0].split(",")
    drop = [header.index(k) for k in ("optimizer", "hyperparameters", "eps_compared_with")]
    cut = [",".join(f for j, f in enumerate(line.split(",")) if j not in drop) for line in lines]
    (old / "runs.csv").write_text("\n".join(cut) + "\n")
    legacy = SweepResult.read(old)
    assert legacy.runs.names == list(RUN_COLUMNS)
    assert set(legacy.runs["optimizer"]) == {"Adam"}
    assert legacy.runs["eps_compared_with"].tolist() == adam.runs["eps_compared_with"].tolist()
    np.testing.assert_array_equal(legacy.runs["loss"], adam.runs["loss"])


# -- the atlas: every run drawn, or said left out ----------------------------------------------


def test_atlas_draws_every_run_of_a_tiny_sweep(family_sweep, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    specs, result = family_sweep
    drawn, left_out = atlas_coverage(result)
    assert sorted(drawn) == list(range(len(specs))) and left_out == {}
    fig = draw_eps_atlas(result)
    text = _figure_text(fig)
    assert f"{len(specs)} of {len(specs)} runs drawn." in text
    for name in WITHOUT_EPS:
        assert f"{name} (lr {lookup(name).lr:g}): no eps" in text
    path = plot_eps_atlas(result, tmp_path / "atlas.png")
    assert path is not None and path.read_bytes()[:8] == PNG_MAGIC


def test_atlas_says_what_it_left_out_and_why(family_sweep) -> None:  # type: ignore[no-untyped-def]
    specs, result = family_sweep
    drawn, left_out = atlas_coverage(result, max_panels=1, max_scenarios=1)
    every = sorted(drawn + [i for ids in left_out.values() for i in ids])
    assert every == list(range(len(specs)))  # each run is drawn or listed, once
    info = result.run_table()
    first_panel = set(info.where(optimizer="SGD" if "SGD" in WITHOUT_EPS else "Adam")["run"])
    assert set(drawn) <= first_panel and len(left_out) == 2
    text = _figure_text(draw_eps_atlas(result, max_panels=1, max_scenarios=1))
    assert f"{len(drawn)} of {len(specs)} runs drawn. Left out: " in text
    for reason, ids in left_out.items():
        assert f"{len(ids)} run(s): {reason}" in text


def test_multiplier_figure_says_an_optimizer_without_eps_has_none(family_sweep, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, result = family_sweep
    if not WITHOUT_EPS:
        pytest.skip("no optimizer without eps in minnet.optim")
    path = plot_multipliers(result, tmp_path / "m.png", optimizer=WITHOUT_EPS[0])
    assert path is not None and path.read_bytes()[:8] == PNG_MAGIC
    with_eps = plot_multipliers(result, tmp_path / "a.png", optimizer="Adam")
    assert with_eps is not None


# -- the command line ---------------------------------------------------------------------------


def test_cli_sweeps_several_optimizers(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "fam"
    argv = ["sweep", "--optimizer", "adam", "SGD", "--eps-modes", "outside", "hat", "--eps", "0",
            "1e-8", "--amsgrad", "off", "--seeds", "1", "--steps", "2", "--workers", "1",
            "--no-progress", "--no-plots", "--optimizer-kwargs", "sgd:momentum=0.9",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "SGD has no eps: one run per seed and scenario" in text
    info = SweepResult.read(out).run_table()
    assert info["optimizer"].tolist() == ["Adam"] * 4 + ["SGD"]
    assert info["eps_mode"].tolist() == ["outside", "outside", "hat", "hat", NO_PLACEMENT]
    assert json.loads(info["hyperparameters"][-1]) == {"momentum": 0.9}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--optimizer", "sophia"], "argument --optimizer: unknown optimizer 'sophia'"),
        (["--optimizer", "sgd", "--eps-modes", "hat"],
         "--eps-modes 'hat' is a placement of none of the optimizers swept (SGD: none)"),
        (["--optimizer", "adam", "--optimizer-kwargs", "sgd:momentum=0.9"],
         "--optimizer-kwargs SGD:momentum: SGD is not in --optimizer"),
        (["--optimizer-kwargs", "adam:weight_decay"],
         "argument --optimizer-kwargs: expected NAME:KEY=VALUE, got 'adam:weight_decay'"),
    ],
)  # fmt: skip
def test_cli_family_errors_are_one_line(argv: list[str], message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as info:
        main(["sweep", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_every_family_class_is_exported_where_the_registry_says() -> None:
    for member in MEMBERS:
        assert getattr(minnet.optim, member.name) is member.cls


def test_readme_family_table_names_fixtures_that_exist() -> None:
    """Each cell of the README's family table that claims a check names a fixture that exists
    (and that a parity test replays: ``family_*``, ``variant_*``, ``shaped_*``,
    ``sparse_adam_*``, ``lbfgs_*``, or ``noisy_sgd_optax``, NoisySGD's, which also holds optax's
    draws); the rest say so."""
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    start = text.index("| optimizer (minnet `eps_mode`) | PyTorch | Keras 3 | optax |")
    table = text[start : text.index("\n\n", start)].splitlines()[2:]
    # the optimizers that are not lab members (family.py's docstring says why) have a row too
    others = [line for line in table if line.startswith(("| SparseAdam ", "| LBFGS "))]
    assert len(table) == len(FAMILY) + len(others)
    fixtures = root / "tests" / "fixtures"
    named = 0
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert len(cells) == 3, line
        for cell in cells:
            names = re.findall(
                r"`((?:family|variant|shaped|sparse_adam|lbfgs)_[^`]+|noisy_sgd_optax)`", cell)
            assert names or cell == "not recorded", cell
            for name in names:
                assert (fixtures / f"{name}.npz").is_file(), name
                named += 1
    assert named >= 20


def _tiny_model() -> minnet.nn.Module:
    from minnet.random import default_generator

    rng = default_generator()
    return minnet.nn.Sequential(minnet.nn.Linear(6, 4, rng=rng), minnet.nn.ReLU(),
                                minnet.nn.Linear(4, 2, rng=rng))  # fmt: skip


def test_a_problem_of_your_own_sweeps_any_optimizer() -> None:
    from minnet.lab import Problem

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    x[:, 0] = 0  # a zero input feature: eps=0 makes its weights 0/0 for optimizers with eps
    y = rng.standard_normal((16, 2)).astype(np.float32)
    problem = Problem("tiny", model=_tiny_model, data=(x, y), loss_fn=minnet.nn.MSELoss(),
                      batch_size=None, epochs=3, lr=1e-2)  # fmt: skip
    names = ["Adam", "SGD", *[n for n in ("RMSprop", "Adagrad") if n in WITH_EPS]]
    specs = grid([0.0, 1e-8], optimizers=names, amsgrad=[False], seeds=[0],
                 scenarios=[problem], optimizer_kwargs={"sgd": {"momentum": 0.5}})  # fmt: skip
    info = sweep(specs, workers=1, progress=False).run_table()
    assert info["optimizer"].tolist() == [s.optimizer for s in specs]
    for row in info.rows():
        if lookup(row["optimizer"]).has_eps:
            assert row["diverged"] == (row["eps"] == 0.0 and row["eps_mode"] != "inside_guarded")
        else:
            assert not row["diverged"] and np.isnan(row["eps"])

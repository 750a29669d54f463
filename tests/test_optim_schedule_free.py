"""ScheduleFreeAdamW: what the family tables do not cover. Keras 3 and optax agree only without
warm-up and weight decay (each library's fixture replayed with the other variant); eval() and
train() move the parameters between x and y, step() refuses eval mode, and the mode is in the
state dict; z starts as the parameter at its first step."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from test_family_parity import FIXTURE_DIR, load, rel_gap, replay

from minnet.nn import Parameter
from minnet.optim import ScheduleFreeAdamW

FIXTURES = sorted(FIXTURE_DIR.glob("family_schedulefreeadamw_*.npz"))
OTHER = {"optax": "keras", "keras": "optax"}


def test_fixtures_of_both_libraries_are_there() -> None:
    names = {p.stem.split("_none_")[1] for p in FIXTURES}
    assert names == {f"{lib}_{d}" for lib in ("optax", "keras")
                     for d in ("eps1e-8", "eps1e-3", "warmup50_wd0.05")}  # fmt: skip


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_the_other_library_agrees_only_without_warmup_and_weight_decay(path: Path) -> None:
    """Each fixture replayed with the other library's variant: within 1e-9 without warm-up and
    weight decay (one formula), more than 1e-3 away with them (the libraries differ there)."""
    cfg, data = load(path)
    kw = cfg["minnet_kwargs"]
    ours, _, _ = replay(cfg, variant=OTHER[kw["variant"]])
    pairs = zip(cfg["checkpoints"], data["checkpoints"], strict=True)
    gap = max(rel_gap(ours[step - 1], ref) for step, ref in pairs)
    if kw.get("warmup_steps", 0) or kw.get("weight_decay", 0.0):
        assert gap > 1e-3, f"{kw['variant']} with the other variant only {gap:.3g} away"
    else:
        assert gap <= 1e-9, f"{kw['variant']} with the other variant: {gap:.3g}"


def test_the_two_libraries_recordings_agree_without_warmup() -> None:
    """The recorded trajectories themselves (not minnet): Keras's and optax's, same settings."""
    for detail in ("eps1e-8", "eps1e-3", "warmup50_wd0.05"):
        _, a = load(FIXTURE_DIR / f"family_schedulefreeadamw_none_optax_{detail}.npz")
        _, b = load(FIXTURE_DIR / f"family_schedulefreeadamw_none_keras_{detail}.npz")
        gap = rel_gap(a["checkpoints"][-1], b["checkpoints"][-1])
        assert (gap <= 1e-9) if "warmup" not in detail else (gap > 1e-3), (detail, gap)


def _trained(variant: str = "optax", steps: int = 5) -> tuple[list[Parameter], ScheduleFreeAdamW]:
    rng = np.random.default_rng(0)
    ps = [Parameter(rng.standard_normal((3, 4))), Parameter(rng.standard_normal(5))]
    opt = ScheduleFreeAdamW(ps, lr=0.05, betas=(0.8, 0.99), weight_decay=0.01, variant=variant)
    for _ in range(steps):
        for p in ps:
            p.grad[...] = rng.standard_normal(p.data.shape)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("variant", ["optax", "keras"])
def test_eval_is_optax_eval_params_and_train_goes_back(variant: str) -> None:
    ps, opt = _trained(variant)
    y = [p.data.copy() for p in ps]
    z = [e["z"] for e in opt.state_dict()["state"].values()]
    assert opt.train_mode
    opt.eval()
    assert not opt.train_mode and opt.param_groups[0]["train_mode"] is False
    for p, yi, zi in zip(ps, y, z, strict=True):  # optax.contrib.schedule_free_eval_params
        np.testing.assert_array_equal(p.data, (yi - (1.0 - 0.8) * zi) / 0.8)
    opt.eval()  # a no-op in eval mode
    opt.train()
    for p, yi in zip(ps, y, strict=True):
        np.testing.assert_allclose(p.data, yi, rtol=0, atol=4e-16 * np.abs(yi).max())
    opt.train()  # a no-op in train mode
    assert opt.train_mode


def test_step_in_eval_mode_is_an_error_that_changes_nothing() -> None:
    ps, opt = _trained()
    opt.eval()
    before = [p.data.copy() for p in ps], opt.state_dict()
    with pytest.raises(RuntimeError, match=r"step\(\) in eval mode.*call optimizer.train\(\)"):
        opt.step()
    assert all(np.array_equal(p.data, b) for p, b in zip(ps, before[0], strict=True))
    assert opt.step_count == 5


def test_the_mode_is_saved_and_loaded_with_the_state_dict() -> None:
    ps, opt = _trained()
    opt.eval()
    sd = opt.state_dict()
    assert [g["train_mode"] for g in sd["param_groups"]] == [False]
    qs = [Parameter(p.data.copy()) for p in ps]  # the model saved in eval mode: x
    other = ScheduleFreeAdamW(qs, lr=0.05, betas=(0.8, 0.99), weight_decay=0.01)
    assert other.train_mode
    other.load_state_dict(sd)
    assert not other.train_mode
    with pytest.raises(RuntimeError, match="eval mode"):
        other.step()
    other.train()
    opt.train()
    for p, q in zip(ps, qs, strict=True):
        np.testing.assert_array_equal(p.data, q.data)
    # A state dict without the key (another library's layout) loads in train mode.
    del sd["param_groups"][0]["train_mode"]
    other.load_state_dict(sd)
    assert other.train_mode


def test_z_starts_as_the_parameter_at_its_first_step() -> None:
    """Changed after the optimizer is created, and a parameter without a gradient at the first
    step: each z is the parameter as it is at that parameter's own first step."""
    a, b = Parameter(np.zeros(3)), Parameter(np.zeros(2))
    opt = ScheduleFreeAdamW([a, b], lr=0.0)
    a.data[...] = [1.0, 2.0, 3.0]
    b.grad = None
    opt.step()
    b.data[...] = [4.0, 5.0]
    b.grad = np.zeros(2)
    opt.step()  # b's first step
    sd = opt.state_dict()["state"]
    np.testing.assert_array_equal(sd[0]["z"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(sd[1]["z"], [4.0, 5.0])
    assert (sd[0]["step"], sd[1]["step"]) == (2.0, 1.0)
    np.testing.assert_array_equal(a.data, [1.0, 2.0, 3.0])  # lr 0: y = x = z


def test_weight_lr_power_is_optax_only() -> None:
    with pytest.raises(ValueError, match="weight_lr_power=3.0 is optax's"):
        ScheduleFreeAdamW([Parameter(np.zeros(2))], variant="keras", weight_lr_power=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ScheduleFreeAdamW([Parameter(np.zeros(2))], weight_lr_power=3.0)

"""Muon (PyTorch 2.13's ``torch.optim.Muon``), a shaped update on 2-D parameters only.

The family's tables (tests/test_optim_family.py) drive every optimizer with vectors, which
PyTorch's Muon refuses, so Muon's share of them is here, on matrices: PyTorch's messages, the
shaped update against its reference (float64, float32, the bfloat16 iteration), groups and
state dicts, ``track_stats`` and ``check_finite``, 16-bit storage. Its library fixtures
(``tests/fixtures/shaped_muon_*``) are replayed by tests/test_shaped_parity.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from minnet.dtypes import bfloat16, float16
from minnet.nn import Parameter
from minnet.optim import Muon
from minnet.optim.muon import muon_reference, newton_schulz

SHAPES = [(130, 140), (8, 10), (12, 5), (1, 7)]
pytestmark = pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")


def params(dtype: Any = np.float64, seed: int = 0) -> list[Parameter]:
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def fill(ps: list[Parameter], rng: np.random.Generator) -> None:
    for p in ps:
        p.grad[...] = rng.standard_normal(p.data.shape) * 10.0 ** rng.integers(-3, 1)


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    ({"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ({"lr": math.nan}, ValueError, "Invalid learning rate: nan"),
    ({"momentum": -0.5}, ValueError, "Invalid momentum value: -0.5"),
    ({"weight_decay": math.nan}, ValueError, "Invalid weight_decay value: nan"),
    ({"eps": -1e-7}, ValueError, "Invalid epsilon value: -1e-07"),
    ({"adjust_lr_fn": "rms"}, ValueError, "Adjust learning rate function rms is not supported"),
    ({"ns_coefficients": (1.0, 2.0)}, ValueError, "Coefficients must be a tuple of exactly 3"),
    ({"ns_steps": 100}, ValueError, "Number of steps must be less than 100"),
    ({"ns_dtype": "float16"}, ValueError, "Invalid ns_dtype: 'float16'"),
    ({"nesterov": 1}, TypeError, "nesterov must be a bool"),
    ({"betas": (0.9, 0.99)}, TypeError, "Muon.__init__() got an unexpected keyword argument"),
])  # fmt: skip
def test_invalid_hyperparameters(kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc) as info:
        Muon(params(), **kwargs)
    assert str(info.value).startswith(message), str(info.value)


def test_only_2d_parameters_as_pytorch() -> None:
    with pytest.raises(ValueError, match=r"^Muon only supports 2D parameters whereas we found a "
                                         r"parameter with size: \(3,\)$"):  # fmt: skip
        Muon([Parameter(np.ones((2, 3))), Parameter(np.ones(3))])


def test_defaults_are_pytorchs() -> None:
    opt = Muon(params())
    assert opt.defaults == {"lr": 1e-3, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True,
                            "ns_coefficients": (3.4445, -4.775, 2.0315), "eps": 1e-7,
                            "ns_steps": 5, "adjust_lr_fn": None, "ns_dtype": None}  # fmt: skip
    assert opt.eps_compared_with() == "||u||_F (a floor)"


def _run(kwargs: dict[str, Any], dtype: Any, steps: int) -> tuple[list, list]:
    ps = params(dtype)
    opt = Muon(ps, lr=1e-2, **kwargs)
    flat = opt._flats[0][0]
    ref = [flat.data.copy(), *(a.copy() for a in flat.arrays)]
    bounds = flat.bounds(list(range(len(ps))))
    group = opt.param_groups[0]
    rng = np.random.default_rng(1)
    for t in range(1, steps + 1):
        fill(ps, rng)
        grad = flat.grad.copy()
        opt.step()
        s = opt._scalars(group, flat.compute_dtype, t)
        muon_reference(ref[0], grad, tuple(ref[1:]), s, opt._options(group), bounds,
                       [p.data.shape for p in ps])  # fmt: skip
    return [flat.data, *flat.arrays], ref


ROWS = [{}, {"nesterov": False, "momentum": 0.5, "adjust_lr_fn": "match_rms_adamw"},
        {"ns_steps": 0, "weight_decay": 0.0}, {"ns_dtype": "bfloat16"}]  # fmt: skip


@pytest.mark.parametrize("kwargs", ROWS, ids=[str(r) for r in ROWS])
def test_update_matches_reference_float64(kwargs: dict[str, Any]) -> None:
    ours, ref = _run(kwargs, np.float64, 5)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_update_matches_reference_float32() -> None:
    ours, ref = _run({}, np.float32, 3)
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_newton_schulz_orthogonalizes_and_bfloat16_is_three_digits() -> None:
    """Five steps bring every singular value into about (0.7, 1.2); PyTorch's bfloat16
    iteration lands within ~1e-2 of the float64 one (the gap the ns_dtype option documents)."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((64, 48))
    x64 = newton_schulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7)
    sv = np.linalg.svd(x64, compute_uv=False)
    assert 0.6 < sv.min() and sv.max() < 1.25
    x16 = newton_schulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7, bfloat16=True)
    gap = np.abs(x16 - x64).max() / np.abs(x64).max()
    assert 1e-4 < gap < 5e-2


def test_groups_state_dict_round_trip_and_resume() -> None:
    ps, qs = params(seed=4), params(seed=4)
    opt = Muon([{"params": ps[:2]}, {"params": ps[2:], "lr": 3e-2, "ns_dtype": "bfloat16"}])
    rng = np.random.default_rng(5)
    for _ in range(3):
        fill(ps, rng)
        opt.step()
    sd = opt.state_dict()
    assert list(sd["state"][0]) == ["step", "momentum_buffer"]
    assert sd["state"][0]["momentum_buffer"].shape == (130, 140)
    other = Muon([{"params": qs[:2]}, {"params": qs[2:], "lr": 3e-2, "ns_dtype": "bfloat16"}])
    other.load_state_dict(sd)
    for p, q in zip(ps, qs):
        q.data[...] = p.data
    g = [rng.standard_normal(p.data.shape) for p in ps]
    for opt_, ps_ in ((opt, ps), (other, qs)):
        for p, x in zip(ps_, g):
            p.grad[...] = x
        opt_.step()
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p.data, q.data)


def test_frozen_and_none_gradients_are_skipped() -> None:
    ps = params(seed=6)
    opt = Muon(ps, lr=1e-2)
    fill(ps, np.random.default_rng(7))
    ps[1].grad = None
    ps[2].requires_grad = False
    before = [p.data.copy() for p in ps]
    opt.step()
    assert not np.array_equal(ps[0].data, before[0])
    np.testing.assert_array_equal(ps[1].data, before[1])
    np.testing.assert_array_equal(ps[2].data, before[2])
    assert opt.state_dict()["state"].keys() == {0, 3}


def test_stats_and_check_finite() -> None:
    ps = params(seed=8)
    opt = Muon(ps, track_stats=True, check_finite=True)
    fill(ps, np.random.default_rng(9))
    before = np.concatenate([p.data.ravel() for p in ps])
    opt.step()
    after = np.concatenate([p.data.ravel() for p in ps])
    assert opt.stats.nonfinite == 0 and opt.stats.eps_dominated == 0.0
    assert opt.stats.update_rms == pytest.approx(np.sqrt(np.mean((after - before) ** 2)),
                                                 rel=1e-9)  # fmt: skip
    ps[3].grad[0, 0] = np.nan
    snapshot = [p.data.copy() for p in ps]
    with pytest.raises(FloatingPointError, match=r"Muon \(check_finite=True\): step 2 .*"
                                                 r"NaN or infinite gradient"):  # fmt: skip
        opt.step()
    for p, x in zip(ps, snapshot):
        np.testing.assert_array_equal(p.data, x)


def test_eps_zero_on_a_zero_matrix_is_refused_and_eps_dominates_tiny_gradients() -> None:
    w = Parameter(np.ones((3, 4)), name="w")
    opt = Muon([w], eps=0.0, check_finite=True)
    w.grad[...] = 0.0
    with pytest.raises(FloatingPointError, match="eps=0 and the momentum of w is 0"):
        opt.step()
    opt = Muon([w], track_stats=True)  # the default eps=1e-7 floors a tiny norm
    w.grad[...] = 1e-12
    opt.step()
    assert opt.stats.eps_dominated == 1.0 and np.isfinite(w.data).all()


@pytest.mark.parametrize("dtype", [float16, bfloat16])
def test_16bit_fused_and_per_op_refused(dtype: Any) -> None:
    runs = []
    for dt in (np.float32, dtype):
        ps = params(dt, seed=10)
        opt = Muon(ps, lr=1e-2, track_stats=True)
        rng = np.random.default_rng(11)
        for _ in range(3):
            fill(ps, rng)
            opt.step()
        assert opt.stats.nonfinite == 0
        runs.append([p.data.astype(np.float32) for p in ps])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match="Muon: rounding='per_op'"):
        Muon(params(dtype), rounding="per_op")

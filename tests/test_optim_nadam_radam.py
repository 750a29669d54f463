"""NAdam and RAdam (PyTorch's): what is their own. NAdam's running ``mu_product`` (its value,
kept across a change of beta1, checked on load); the eps-dominated counts and multipliers by
hand, with RAdam's unrectified first steps (no eps) and its rectification factor.

Everything the family shares (the kernel against the NumPy reference, float32, the dry run,
PyTorch's messages, defaults, state dicts, resume, the disk cache, convergence, eps=0's
refusal after RAdam's first rectified step) is in tests/test_optim_family.py; machine code in
tests/test_kernels_vectorized.py; parity with PyTorch itself in tests/test_family_parity.py
(fixtures ``family_nadam_*`` and ``family_radam_*``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_checkpoint import assert_identical

import minnet.optim
from minnet.nn import Parameter
from minnet.optim.nadam import nadam_mu

NAMES = ["NAdam", "RAdam"]


def make(name: str, params: Any, *args: Any, **kw: Any) -> Any:
    """The optimizer ``name`` of minnet.optim."""
    return getattr(minnet.optim, name)(params, *args, **kw)


# -- NAdam's mu_product ------------------------------------------------------------------------


def small_run(name: str, steps: int, **kw: Any) -> tuple[Any, list[Parameter]]:
    rng = np.random.default_rng(11)
    params = [Parameter(rng.standard_normal((3, 4))), Parameter(rng.standard_normal(5))]
    opt = make(name, params, lr=1e-2, weight_decay=1e-2, **kw)
    for _ in range(steps):
        for p in params:
            p.grad[...] = rng.standard_normal(p.data.shape)
        opt.step()
    return opt, params


def test_nadam_mu_product_is_pytorchs_running_product() -> None:
    """After 4 steps every parameter's entry holds ``mu_1 * ... * mu_4`` (a float, multiplied in
    PyTorch's order); the layout itself is in tests/test_optim_family.py."""
    opt, _ = small_run("NAdam", 4)
    sd = opt.state_dict()
    mu = [nadam_mu(0.9, 4e-3, t) for t in range(1, 5)]
    expected = ((1.0 * mu[0]) * mu[1]) * mu[2] * mu[3]
    assert sd["state"][0]["mu_product"] == expected == sd["state"][1]["mu_product"]
    assert isinstance(sd["state"][0]["mu_product"], float)


def test_nadam_mu_product_is_running_state_not_recomputed() -> None:
    # Change beta1 after 3 steps: P must be mu_1*mu_2*mu_3 (beta1=0.9) * mu_4 (beta1=0.5), as
    # PyTorch's running product, not a product recomputed with the new beta1.
    opt, _ = small_run("NAdam", 3)
    opt.param_groups[0]["betas"] = (0.5, 0.999)
    opt.step()
    expected = 1.0
    for t in range(1, 4):
        expected *= nadam_mu(0.9, 4e-3, t)
    expected *= nadam_mu(0.5, 4e-3, 4)
    assert opt.state_dict()["state"][0]["mu_product"] == expected


def test_nadam_load_state_dict_checks_mu_product() -> None:
    opt, _ = small_run("NAdam", 3)
    sd = opt.state_dict()
    bad = {**sd, "state": {k: dict(v) for k, v in sd["state"].items()}}
    bad["state"][1]["mu_product"] = 0.5  # per parameter, as PyTorch keeps it
    opt.load_state_dict(bad)
    assert opt.state_dict()["state"][1]["mu_product"] == 0.5
    assert opt.state_dict()["state"][0]["mu_product"] == sd["state"][0]["mu_product"]
    opt.load_state_dict(sd)
    del bad["state"][1]["mu_product"]
    with pytest.raises(ValueError, match="parameter 1 lacks 'mu_product'"):
        opt.load_state_dict(bad)
    bad["state"][1]["mu_product"] = float("nan")
    with pytest.raises(ValueError, match="'mu_product' for parameter 1 must be a finite"):
        opt.load_state_dict(bad)
    assert_identical(opt.state_dict(), sd)  # every refusal changed nothing
    # A PyTorch-style 0-d array is accepted, and a new P changes the next step.
    other = {**sd, "state": {k: dict(v) for k, v in sd["state"].items()}}
    for v in other["state"].values():
        v["mu_product"] = np.array(0.25)
    opt.load_state_dict(other)
    assert opt.state_dict()["state"][0]["mu_product"] == 0.25
    opt.step()
    assert opt.state_dict()["state"][0]["mu_product"] == 0.25 * nadam_mu(0.9, 4e-3, 4)


# -- stats and multipliers ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_eps_dominated_and_multipliers_match_a_numpy_recount(name: str) -> None:
    rng = np.random.default_rng(0)
    scale = np.exp2(-rng.integers(0, 40, 300).astype(float))
    p = Parameter(rng.standard_normal(300))
    opt = make(name, [p], eps=1e-6, track_stats=True)
    for t in range(1, 9):
        p.grad[...] = rng.standard_normal(300) * scale
        opt.step()
        state = opt.state_dict()["state"][0]
        v = state["exp_avg_sq"]
        bc2 = 1.0 - 0.999**t
        if name == "NAdam":
            compared = np.sqrt(v / bc2)
            k = 1.0 / (compared + 1e-6)
        else:
            compared = np.sqrt(v)
            k = rectified_factor(t) * np.sqrt(bc2) / (compared + 1e-6)
            if not radam_rectified(t):
                compared = np.full_like(v, np.inf)  # no eps before the first rectified step
                k = np.ones_like(v)
        assert opt.stats.eps_dominated == np.mean(1e-6 >= compared)
        np.testing.assert_allclose(opt.multipliers(), k, rtol=1e-12)
    assert 0.0 < opt.stats.eps_dominated < 1.0


def radam_rectified(t: int, beta2: float = 0.999) -> bool:
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    return rho_inf - 2.0 * t * beta2**t / (1.0 - beta2**t) > 5.0


def rectified_factor(t: int, beta2: float = 0.999) -> float:
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho = rho_inf - 2.0 * t * beta2**t / (1.0 - beta2**t)
    if rho <= 5.0:
        return 1.0
    return float(np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)))

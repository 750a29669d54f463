"""Adamax and Adadelta: what is their own. The tracked counts and the update buffer follow
each docstring's eps rule (``|g|`` or ``u`` for Adamax, ``square_avg`` for Adadelta); Adamax's
two placements; the stats and multipliers by hand.

Everything the family shares (the kernel against the NumPy reference under hypothesis,
float32, the dry run, PyTorch's messages, defaults, state dicts, resume, the disk cache,
convergence, eps=0's refusal) is in tests/test_optim_family.py; machine code in
tests/test_kernels_vectorized.py; library parity (PyTorch, optax, Keras 3) in
tests/test_family_parity.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from minnet.nn import Parameter
from minnet.optim import Adadelta, Adamax

# -- the table --------------------------------------------------------------------------------


def adamax_eps_target(kw: dict[str, Any], g: np.ndarray, state: dict[str, np.ndarray]):
    """What eps is compared with after a step (the docstring's rule): |g| or u."""
    return np.abs(g) if kw.get("eps_mode", "max") == "max" else state["exp_inf"]


def adadelta_eps_target(kw: dict[str, Any], g: np.ndarray, state: dict[str, np.ndarray]):
    return state["square_avg"]


def adamax_multiplier(kw: dict[str, Any], state: dict[str, np.ndarray]) -> np.ndarray:
    u = state["exp_inf"]
    return 1 / u if kw.get("eps_mode", "max") == "max" else 1 / (u + kw.get("eps", 1e-8))


def adadelta_multiplier(kw: dict[str, Any], state: dict[str, np.ndarray]) -> np.ndarray:
    return 1 / np.sqrt(state["square_avg"] + kw.get("eps", 1e-6))


#: name -> (class, state names, eps_modes, eps target, multiplier)
OPTIMIZERS: dict[str, tuple[Any, ...]] = {
    "Adamax": (Adamax, ("exp_avg", "exp_inf"), ("max", "outside"), adamax_eps_target,
               adamax_multiplier),
    "Adadelta": (Adadelta, ("square_avg", "acc_delta"), (None,), adadelta_eps_target,
                 adadelta_multiplier),
}  # fmt: skip
VARIANTS = [(name, mode) for name, row in OPTIMIZERS.items() for mode in row[2]]
VARIANT_IDS = [f"{name}-{mode}" if mode else name for name, mode in VARIANTS]


def make(name: str, params: Any, mode: str | None, **kw: Any) -> Any:
    """The optimizer ``name`` with ``eps_mode=mode`` when it has placements."""
    if mode is not None:
        kw["eps_mode"] = mode
    return OPTIMIZERS[name][0](params, **kw)


# -- kernel == NumPy reference ----------------------------------------------------------------


def run_kernel_and_reference(
    name: str, mode: str | None, kw: dict[str, Any], n: int, steps: int, zero_frac: float,
    seed: int,
) -> None:  # fmt: skip
    """Run the plain kernel, the tracked kernel, a dry run and the reference side by side on the
    same random inputs (a fraction ``zero_frac`` of zero gradients), checking each step."""
    opt = make(name, [Parameter(np.zeros(1))], mode, **kw)
    group = opt.param_groups[0]
    spec = opt._state_spec(group)
    assert tuple(spec) == OPTIMIZERS[name][1]
    hp = {k: group[k] for k in opt.defaults}
    eps_target = OPTIMIZERS[name][3]
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n)
    runs = [[param.copy(), *(np.full(n, v) for v in spec.values())] for _ in range(3)]
    plain, tracked, ref = runs
    dtype = np.dtype(np.float64)
    scratch = np.empty(n)
    for t in range(1, steps + 1):
        grad = (
            rng.standard_normal(n) * 10.0 ** rng.integers(-12, 2, n) * (rng.random(n) >= zero_frac)
        )
        s = opt._scalars(group, dtype, t)
        before = [a.copy() for a in tracked]
        with np.errstate(all="ignore"):
            dry = opt._kernel(group, True, False)(*tracked[:1], grad, *tracked[1:], scratch, s)
        for a, b in zip(tracked, before):
            np.testing.assert_array_equal(a, b)  # a dry run writes nothing
        opt._kernel(group, False, True)(plain[0], grad, *plain[1:], np.empty(0), s)
        counts = opt._kernel(group, True, True)(tracked[0], grad, *tracked[1:], scratch, s)
        opt._reference(group)(ref[0], grad, *ref[1:], s)
        assert dry[0] == counts[0] and dry[1] == counts[1]
        for a, b, c in zip(plain, tracked, ref):
            np.testing.assert_array_equal(a, b)  # tracking changes no bit
            np.testing.assert_array_equal(np.isnan(a), np.isnan(c))
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=0, equal_nan=True)
        # The counts are what the docstring says they are.
        g = grad + hp["weight_decay"] * before[0] if hp["weight_decay"] else grad
        state = dict(zip(spec, tracked[1:]))
        with np.errstate(all="ignore"):
            target = eps_target(hp, g, state)
            np.testing.assert_array_equal(before[0] + scratch, tracked[0])  # scratch: updates
        assert counts[0] == int((hp["eps"] >= target).sum())
        assert counts[1] == int((~np.isfinite(tracked[0])).sum())
        if np.isfinite(scratch).all():
            assert counts[2] == pytest.approx(float((scratch**2).sum()), rel=1e-12, abs=0)


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize(
    "kw",
    [{"lr": 0.1, "eps": 1e-3, "weight_decay": 1e-2}, {"lr": 1e-3, "eps": 1e-8},
     {"lr": 1.0, "eps": 0.0}, {"lr": 0.1, "eps": 1.0, "weight_decay": 1e-2}],
    ids=["eps1e-3-wd", "eps1e-8", "eps0", "eps1-wd"],
)  # fmt: skip
@pytest.mark.parametrize("zero_frac", [0.0, 0.5])
@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # eps=0 rows
def test_counts_and_updates_follow_the_docstring(
    name: str, mode: str | None, kw: dict[str, Any], zero_frac: float
) -> None:
    """Gradients over 14 orders of magnitude: eps_dominated counts ``eps >= target``, nonfinite
    the non-finite parameters, the scratch buffer holds each update (``p + scratch == p_new``)
    and its sum of squares the returned one; the kernel also agrees with the reference."""
    for seed in range(3):
        run_kernel_and_reference(name, mode, kw, 200, 5, zero_frac, seed)


def test_adamax_placements_differ_only_while_the_decayed_max_wins() -> None:
    """One gradient, then zeros: "max" keeps u = (|g| + eps) * beta2**k, "outside" divides by
    |g| * beta2**k + eps; the same while |g| + eps wins (step 1)."""
    b2, eps, g0 = 0.5, 0.01, 0.3  # beta2**3 * (g0 + eps) > eps: the decayed max wins
    out = {}
    for mode in ("max", "outside"):
        p = Parameter(np.zeros(1))
        opt = Adamax([p], lr=1.0, betas=(0.0, b2), eps=eps, eps_mode=mode)
        us = []
        for t in range(4):
            p.grad[...] = g0 if t == 0 else 0.0
            opt.step()
            us.append(opt.state_dict()["state"][0]["exp_inf"][0])
            if t == 0:
                np.testing.assert_allclose(p.data, [-g0 / (g0 + eps)], rtol=1e-15)
        out[mode] = np.array(us)
    k = np.arange(4)
    np.testing.assert_allclose(out["max"], (g0 + eps) * b2**k, rtol=1e-15)
    np.testing.assert_allclose(out["outside"], g0 * b2**k, rtol=1e-15)
    np.testing.assert_allclose(
        (out["max"] - (out["outside"] + eps))[1:], -eps * (1 - b2 ** k[1:]), rtol=1e-12
    )


# -- what eps does: stats, multipliers, check_finite --------------------------------------------


@pytest.mark.parametrize(("name", "mode"), VARIANTS, ids=VARIANT_IDS)
def test_stats_and_multipliers_follow_the_docstring(name: str, mode: str | None) -> None:
    rng = np.random.default_rng(3)
    a, b = Parameter(rng.standard_normal((3, 4))), Parameter(rng.standard_normal(5))
    kw = {"eps": 1e-3}
    opt = make(name, [a, b], mode, track_stats=True, **kw)
    with pytest.raises(ValueError, match="at least one optimizer step"):
        opt.multipliers()
    for _ in range(3):
        a.grad[...] = rng.standard_normal(a.grad.shape) * np.array([1.0, 1e-4, 0.0, 1e-6])
        b.grad[...] = rng.standard_normal(5) * 1e-5
        opt.step()
    state = opt.state_dict()["state"]
    spec = OPTIMIZERS[name][1]
    merged = {k: np.concatenate([state[i][k].ravel() for i in (0, 1)]) for k in spec}
    hp = {**kw, **({"eps_mode": mode} if mode else {})}
    np.testing.assert_allclose(opt.multipliers(), OPTIMIZERS[name][4](hp, merged), rtol=1e-15)
    assert opt.eps_compared_with() == {"max": "|g|", "outside": "u", None: "square_avg"}[mode]
    assert opt.stats is not None and opt.stats.n_params == 17 and opt.stats.nonfinite == 0
    assert 0.0 < opt.stats.eps_dominated < 1.0
    if name == "Adadelta" or mode == "outside":  # compared with state: recount from it
        key = "square_avg" if name == "Adadelta" else "exp_inf"
        assert opt.stats.eps_dominated == pytest.approx((kw["eps"] >= merged[key]).mean())

"""RMSprop and Adagrad: what is their own. The tracked counts follow what eps is compared with
for each placement; Adagrad's guarded placement at eps=0; the stats and multipliers by hand.

Everything the family shares (the kernel against the NumPy reference, float32, the dry run,
PyTorch's messages, defaults, state dicts, resume, the disk cache, convergence, eps=0's
refusal) is in tests/test_optim_family.py; machine code in tests/test_kernels_vectorized.py;
library parity (PyTorch, Keras 3, optax) in tests/test_family_parity.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from minnet.nn import Parameter
from minnet.optim import Adagrad, RMSprop
from minnet.optim.adagrad import ADAGRAD_EPS_MODES
from minnet.optim.rmsprop import RMSPROP_EPS_MODES

# -- the variants: every eps_mode and every option that changes the kernel -----------------------

RMSPROP_VARIANTS = [
    {"eps_mode": mode, "centered": centered, "momentum": momentum}
    for mode in RMSPROP_EPS_MODES
    for centered in (False, True)
    for momentum in (0.0, 0.9)
]

VARIANTS: list[tuple[type, dict[str, Any]]] = [(RMSprop, v) for v in RMSPROP_VARIANTS] + [
    (Adagrad, {"eps_mode": mode}) for mode in ADAGRAD_EPS_MODES
]


def variant_id(cls: type, options: dict[str, Any]) -> str:
    """The test id of a variant."""
    return cls.__name__ + "-" + "-".join(f"{k}={v}" for k, v in options.items())


VARIANT_IDS = [variant_id(c, o) for c, o in VARIANTS]


@pytest.mark.parametrize(("cls", "options"), VARIANTS, ids=VARIANT_IDS)
def test_tracked_counts_follow_what_eps_is_compared_with(
    cls: type, options: dict[str, Any]
) -> None:
    """The tracked kernel's counts match a NumPy recount from each placement's eps rule (and
    NaN parameters are counted); the multipliers are finite and nonnegative (guarded: 0 where
    the accumulator is 0). Plain, tracked and dry runs agree: tests/test_optim_family.py."""
    n = 3000
    rng = np.random.default_rng(5)
    opt = cls([Parameter(np.zeros(n))], **options, eps=1e-3)
    group = opt.param_groups[0]
    spec = opt._state_spec(group)
    param = rng.standard_normal(n)
    param[:2] = np.nan  # already NaN: stays NaN and is counted
    state = plausible_state(spec, n, rng)
    grad = rng.standard_normal(n) * (rng.random(n) < 0.5)
    s = opt._scalars(group, np.dtype(np.float64), 3)
    arrays = [param.copy(), grad.copy(), *(a.copy() for a in state)]
    n_dom, n_bad, sum_sq = opt._kernel(group, True, True)(*arrays, np.empty(n), s)
    assert n_bad == 2
    new_state = dict(zip(spec, arrays[2:], strict=True))
    k = opt._multipliers(group, new_state, 3)
    compared = opt.eps_compared_with_options(group)
    assert n_dom == expected_dominated(compared, group, new_state)
    assert 0 < n_dom < n
    finite = param.copy()
    finite[:2] = 0.0  # no weight decay: the update does not depend on the parameter
    ref = [finite.copy(), *(a.copy() for a in state)]
    opt._reference(group)(ref[0], grad, *ref[1:], s)
    assert sum_sq == pytest.approx(np.sum((ref[0] - finite) ** 2), rel=1e-9)
    assert k.shape == (n,) and np.all(k >= 0) and np.isfinite(k).all()  # guarded: 0 at S = 0


def plausible_state(spec: dict[str, float], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random state arrays that a run could reach: half the second moments 0, and
    ``grad_avg**2 <= square_avg``."""
    out: dict[str, np.ndarray] = {}
    for name in spec:
        if name == "grad_avg":
            out[name] = 0.5 * np.sqrt(out["square_avg"]) * rng.uniform(-1, 1, n)
        elif name == "momentum_buffer":
            out[name] = rng.standard_normal(n)
        else:
            out[name] = rng.random(n) * (rng.random(n) < 0.5)
    return list(out.values())


def expected_dominated(compared: str, group: dict[str, Any], state: dict[str, np.ndarray]) -> int:
    """The number of coordinates where eps >= what ``eps_compared_with`` names."""
    if "avg" in compared:
        var = state["square_avg"] - state["grad_avg"] ** 2
    elif "v" in compared:
        var = state["square_avg"]
    else:
        var = state["sum"]
    quantity = np.sqrt(var) if compared.startswith("sqrt") else var
    with np.errstate(invalid="ignore"):
        return int(np.sum(group["eps"] >= quantity))


# -- eps = 0 and check_finite --------------------------------------------------------------------


def test_guarded_adagrad_takes_a_zero_step_at_eps_zero() -> None:
    """optax's guard: a coordinate whose accumulator is 0 does not move (no 0/0), and the
    check passes; with eps > 0 the guarded and plain "inside" placements agree to rounding."""
    p = Parameter(np.array([1.0, 2.0, 3.0]), name="w")
    opt = Adagrad([p], lr=0.1, eps=0.0, eps_mode="inside_guarded", check_finite=True)
    p.grad[...] = [0.5, 0.0, -0.5]
    opt.step()
    np.testing.assert_array_equal(p.data, [0.9, 2.0, 3.1])
    np.testing.assert_array_equal(opt.multipliers(), [2.0, 0.0, 2.0])
    runs = {}
    for mode in ("inside", "inside_guarded"):
        q = Parameter(np.array([1.0, 2.0, 3.0]))
        o = Adagrad([q], lr=0.1, eps=1e-3, eps_mode=mode)
        for g in ([0.5, 0.0, -0.5], [0.1, 0.0, 0.2]):
            q.grad[...] = g
            o.step()
        runs[mode] = q.data.copy()
    np.testing.assert_allclose(runs["inside"], runs["inside_guarded"], rtol=1e-15)
    assert runs["inside"][1] == 2.0


def test_stats_and_multipliers_name_what_eps_is_compared_with() -> None:
    p = Parameter(np.array([1.0, 2.0, 3.0]))
    p.grad[...] = [1.0, 1e-9, 0.0]
    outside = RMSprop([p], eps=1e-6, track_stats=True)
    outside.step()
    assert outside.eps_compared_with() == "sqrt(v)"
    assert outside.stats.eps_dominated == pytest.approx(2 / 3)
    v = 0.01 * np.array([1.0, 1e-18, 0.0])
    np.testing.assert_allclose(outside.multipliers(), 1 / (np.sqrt(v) + 1e-6), rtol=1e-12)
    q = Parameter(np.array([1.0, 2.0, 3.0]))
    q.grad[...] = [1.0, 1e-9, 0.0]
    inside = RMSprop([q], eps=1e-6, eps_mode="inside", centered=True, track_stats=True)
    inside.step()
    assert inside.eps_compared_with() == "v - avg**2"
    var = v - (0.01 * np.array([1.0, 1e-9, 0.0])) ** 2
    np.testing.assert_allclose(inside.multipliers(), 1 / np.sqrt(var + 1e-6), rtol=1e-12)
    assert inside.stats.eps_dominated == pytest.approx(2 / 3)

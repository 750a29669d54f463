"""NAdam and RAdam (PyTorch's): kernel against NumPy reference, validation messages, state dict
(with NAdam's per-group ``mu_product``), exact resume in a new process, convergence on optax's
test problems, check_finite, stats and vectorized machine code.

Parity with PyTorch itself is in tests/test_family_parity.py (fixtures ``family_nadam_*`` and
``family_radam_*``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from _train_with_checkpoints import checkpoint, train
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoint import assert_identical

import minnet
import minnet.optim
from minnet.nn import Linear, Parameter, ReLU, Sequential
from minnet.optim.nadam import nadam_mu

# name -> the option values the property test draws from (every option of the optimizer).
OPTIONS: dict[str, dict[str, list[Any]]] = {
    "NAdam": {
        "lr": [0.0, 1e-3, 2e-3, 0.1],
        "betas": [(0.0, 0.0), (0.5, 0.9), (0.9, 0.999), (0.99, 0.9999)],
        "eps": [0.0, 1e-16, 1e-8, 1e-3, 1.0],
        "weight_decay": [0.0, 1e-2],
        "momentum_decay": [0.0, 4e-3, 0.1],
        "decoupled_weight_decay": [False, True],
    },
    "RAdam": {
        "lr": [0.0, 1e-3, 0.1],
        # beta2 = 0.9 and 0.999 rectify from step 6; beta2 <= 2/3 never does
        "betas": [(0.0, 0.0), (0.5, 0.9), (0.9, 0.999), (0.99, 0.6)],
        "eps": [0.0, 1e-16, 1e-8, 1e-3, 1.0],
        "weight_decay": [0.0, 1e-2],
        "decoupled_weight_decay": [False, True],
    },
}
NAMES = list(OPTIONS)


def make(name: str, params: Any, *args: Any, **kw: Any) -> Any:
    return getattr(minnet.optim, name)(params, *args, **kw)


def step_arrays(opt: Any, t: int, gstate: dict[str, float]) -> tuple[Any, dict[str, float]]:
    """Step ``t``'s scalars of group 0 (float64 buffers), advancing the group state by hand."""
    group = opt.param_groups[0]
    extra: tuple[Any, ...] = ()
    if gstate:
        gstate = opt._advance_group_state(group, gstate, t)
        extra = (gstate,)
    return opt._scalars(group, np.dtype(np.float64), t, *extra), gstate


# -- the kernel against its NumPy reference ---------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    data=st.data(),
    n=st.integers(1, 200),
    steps=st.integers(1, 9),
    zero_frac=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_matches_reference_float64(name, data, n, steps, zero_frac, seed) -> None:
    kw = {k: data.draw(st.sampled_from(v), label=k) for k, v in OPTIONS[name].items()}
    rng = np.random.default_rng(seed)
    opt = make(name, [Parameter(np.zeros(n))], **kw)
    group = opt.param_groups[0]
    spec = opt._state_spec(group)
    p0 = rng.standard_normal(n)
    runs = {}
    for variant in ("plain", "tracked", "reference"):
        runs[variant] = [p0.copy()] + [np.full(n, v) for v in spec.values()]
    scratch = np.empty(n)
    gstate = dict(opt._group_state_spec(group))
    grng = np.random.default_rng(seed + 1)
    for t in range(1, steps + 1):
        grad = grng.standard_normal(n) * (grng.random(n) >= zero_frac)
        s, gstate = step_arrays(opt, t, gstate)
        p, *state = runs["plain"]
        opt._kernel(group, False, True)(p, grad, *state, scratch[:0], s)
        p, *state = runs["tracked"]
        opt._kernel(group, True, True)(p, grad, *state, scratch, s)
        p, *state = runs["reference"]
        opt._reference(group)(p, grad, *state, s)
    for plain, tracked, ref in zip(runs["plain"], runs["tracked"], runs["reference"]):
        # Tracking never changes the arithmetic: bit-identical parameters and state.
        assert plain.tobytes() == tracked.tobytes()
        # NaN where the reference has NaN (eps=0 with a zero second moment), else 1e-12.
        np.testing.assert_array_equal(np.isnan(plain), np.isnan(ref))
        np.testing.assert_allclose(plain, ref, rtol=1e-12, atol=1e-300, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_kernel_matches_reference_float32(name: str) -> None:
    # float32 buffers through optimizer.step() (the per-step constants cast from float64).
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(10_001).astype(np.float32)
    p = Parameter(p0.copy())
    opt = make(name, [p], lr=1e-2, weight_decay=1e-2, eps=1e-6)
    group = opt.param_groups[0]
    ref_p, ref_m, ref_v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    reference = opt._reference(group)
    for t in range(1, 9):
        grad = (rng.standard_normal(p0.size) * (rng.random(p0.size) < 0.7)).astype(np.float32)
        p.grad[...] = grad
        opt.step()
        reference(ref_p, grad, ref_m, ref_v, opt._scalars(group, np.dtype(np.float32), t))
    assert p.data.dtype == np.float32
    np.testing.assert_allclose(p.data, ref_p, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(p.data, p0)


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_writes_nothing_and_counts_like_the_real_step(name: str) -> None:
    rng = np.random.default_rng(3)
    opt = make(name, [Parameter(rng.standard_normal(500))], eps=1e-3)
    group = opt.param_groups[0]
    flat = opt._flats[0][0]
    for t in range(1, 9):  # past RAdam's first rectified step
        flat.grad[...] = rng.standard_normal(500) * (rng.random(500) < 0.5)
        before = [a.copy() for a in flat.args]
        s = opt._scalars(group, flat.dtype, t)
        dry = opt._kernel(group, True, False)(*flat.args, flat.ensure_scratch(), s)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(flat.args, before))
        opt.step()
        real = opt._kernel(group, True, True)
        again = [b.copy() for b in before]
        assert real(*again, flat.ensure_scratch(), s) == dry


# -- validation -------------------------------------------------------------------------------

BAD = [
    # (optimizer, kwargs, exception, message): PyTorch's messages where PyTorch has them.
    (name, kw, exc, msg)
    for name in NAMES
    for kw, exc, msg in [
        ({"lr": -1e-3}, ValueError, "Invalid learning rate: -0.001"),
        ({"lr": float("nan")}, ValueError, "Invalid learning rate: nan"),
        ({"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
        ({"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (-0.1, 0.999)}, ValueError, "Invalid beta parameter at index 0: -0.1"),
        ({"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0"),
        ({"betas": (0.9, float("nan"))}, ValueError, "Invalid beta parameter at index 1: nan"),
        ({"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
        ({"betas": 0.9}, TypeError, "betas must be a pair"),
        ({"lr": "0.1"}, TypeError, "lr must be a real number"),
        ({"decoupled_weight_decay": 1}, TypeError, "decoupled_weight_decay must be a bool"),
    ]
] + [
    ("NAdam", {"momentum_decay": -4e-3}, ValueError, "Invalid momentum_decay value: -0.004"),
    ("NAdam", {"momentum_decay": float("nan")}, ValueError, "Invalid momentum_decay value: nan"),
]


@pytest.mark.parametrize(("name", "kw", "exc", "msg"), BAD, ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_bad_hyperparameters_raise_pytorchs_messages(name, kw, exc, msg) -> None:
    with pytest.raises(exc, match=re.escape(msg)):
        make(name, [Parameter(np.zeros(3))], **kw)
    # The same value set later in a param group is refused at the next step, and nothing moves.
    p = Parameter(np.ones(3))
    opt = make(name, [p])
    opt.param_groups[0].update(kw)
    p.grad[...] = 1.0
    with pytest.raises(exc, match=re.escape(msg)):
        opt.step()
    assert (p.data == 1.0).all() and opt.step_count == 0


@pytest.mark.parametrize("name", NAMES)
def test_signature_and_defaults_are_pytorchs(name: str) -> None:
    opt = make(name, [Parameter(np.zeros(2))])
    expected = {
        "NAdam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                      momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False),
        "RAdam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                      decoupled_weight_decay=False, maximize=False),
    }[name]  # fmt: skip
    assert opt.defaults == expected
    assert list(opt.defaults) == list(expected)  # positional order as in PyTorch
    positional = make(name, [Parameter(np.zeros(2))],
                      *[v for k, v in expected.items() if k != "maximize"])  # keyword-only
    assert positional.param_groups[0] == {**opt.param_groups[0], "params": positional.params}


# -- state dict, mu_product and exact resume --------------------------------------------------


def small_run(name: str, steps: int, **kw: Any) -> tuple[Any, list[Parameter]]:
    rng = np.random.default_rng(11)
    params = [Parameter(rng.standard_normal((3, 4))), Parameter(rng.standard_normal(5))]
    opt = make(name, params, lr=1e-2, weight_decay=1e-2, **kw)
    for _ in range(steps):
        for p in params:
            p.grad[...] = rng.standard_normal(p.data.shape)
        opt.step()
    return opt, params


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_has_pytorchs_keys(name: str) -> None:
    opt, params = small_run(name, 4)
    sd = opt.state_dict()
    keys = {"NAdam": ["step", "mu_product", "exp_avg", "exp_avg_sq"],
            "RAdam": ["step", "exp_avg", "exp_avg_sq"]}[name]  # fmt: skip
    for i, p in enumerate(params):
        assert list(sd["state"][i]) == keys
        assert sd["state"][i]["step"] == 4.0
        assert sd["state"][i]["exp_avg"].shape == p.data.shape
    if name == "NAdam":
        mu = [nadam_mu(0.9, 4e-3, t) for t in range(1, 5)]
        expected = ((1.0 * mu[0]) * mu[1]) * mu[2] * mu[3]
        assert sd["state"][0]["mu_product"] == expected == sd["state"][1]["mu_product"]
        assert isinstance(sd["state"][0]["mu_product"], float)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_bit_identically(name: str) -> None:
    straight, p_straight = small_run(name, 12)
    half, p_half = small_run(name, 6)
    sd = half.state_dict()
    rng = np.random.default_rng(5)
    fresh_params = [Parameter(p.data.copy()) for p in p_half]
    fresh = make(name, fresh_params, lr=1e-2, weight_decay=1e-2)
    fresh.load_state_dict(sd)
    assert_identical(fresh.state_dict(), sd)
    # Continue both the reloaded and the original for 6 more steps on the same gradients.
    for _ in range(6):
        grads = [rng.standard_normal(p.data.shape) for p in p_half]
        for opt, ps in ((half, p_half), (fresh, fresh_params)):
            for p, g in zip(ps, grads):
                p.grad[...] = g
            opt.step()
    assert_identical(fresh.state_dict(), half.state_dict())
    for a, b in zip(p_half, fresh_params):
        assert a.data.tobytes() == b.data.tobytes()


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
    bad["state"][1]["mu_product"] = 0.5
    with pytest.raises(ValueError, match="different 'mu_product' values in group 0"):
        opt.load_state_dict(bad)
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


def fresh_run(name: str) -> dict[str, Any]:
    """A run of tests/_train_with_checkpoints.py's model (a float32 and a float64 layer) with
    this optimizer instead of Adam."""
    model = Sequential(Linear(12, 24, rng=1), ReLU(), Linear(24, 3, dtype=np.float64, rng=2))
    kw = dict(lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-3)
    return {
        "model": model,
        "optimizer": make(name, model.parameters(), **kw),
        "variant": {"optimizer": name},
        "step": 0,
        "rng": np.random.default_rng(7),
    }


RESUME = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{tests!r}]
    import minnet
    from _train_with_checkpoints import checkpoint, train
    from test_optim_nadam_radam import fresh_run

    out = {{}}
    for name, ckpt in minnet.load({src!r}).items():
        run = fresh_run(name)
        run["model"].load_state_dict(ckpt["model"])
        run["optimizer"].load_state_dict(ckpt["optimizer"])
        run["step"] = ckpt["step"]
        run["rng"].bit_generator.state = ckpt["rng"]
        out[name] = checkpoint(train(run, 500))
    minnet.save(out, {dst!r})
    """
)


def test_250_plus_250_steps_in_a_new_process_equal_500(tmp_path: Path) -> None:
    straight, halfway = {}, {}
    for name in NAMES:
        straight[name] = checkpoint(train(fresh_run(name), 500))
        halfway[name] = checkpoint(train(fresh_run(name), 250))
    src, dst = tmp_path / "halfway.npz", tmp_path / "resumed.npz"
    minnet.save(halfway, src)
    code = RESUME.format(tests=str(Path(__file__).parent), src=str(src), dst=str(dst))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    resumed = minnet.load(dst)
    for name in NAMES:
        assert_identical(straight[name], resumed[name], name)
        assert not np.array_equal(
            halfway[name]["model"]["0.weight"], straight[name]["model"]["0.weight"]
        )


# -- convergence on optax's test problems -----------------------------------------------------

CONVERGE = {
    # name: (parabola lr, Rosenbrock lr)
    "NAdam": (0.1, 1e-2),
    "RAdam": (0.1, 1e-2),
}


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_a_parabola(name: str) -> None:
    # optax's alias_test: f(x) = sum((x - x*)**2), from [-1, 10, 1] to x* = [1, -1, 1].
    target = np.array([1.0, -1.0, 1.0])
    p = Parameter(np.array([-1.0, 10.0, 1.0]))
    opt = make(name, [p], lr=CONVERGE[name][0])
    for _ in range(2000):
        p.grad[...] = 2.0 * (p.data - target)
        opt.step()
    np.testing.assert_allclose(p.data, target, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_rosenbrock(name: str) -> None:
    # optax's alias_test: (a - x)**2 + b*(y - x**2)**2, a=1, b=100, from (0, 0) to (1, 1).
    p = Parameter(np.zeros(2))
    opt = make(name, [p], lr=CONVERGE[name][1])
    for _ in range(10_000):
        x, y = p.data
        p.grad[...] = [-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)]
        opt.step()
    np.testing.assert_allclose(p.data, [1.0, 1.0], atol=2e-2)


# -- check_finite and stats -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_check_finite_refuses_the_eps0_zero_over_zero_step(name: str) -> None:
    p = Parameter(np.ones(4))
    p.name = "w"
    opt = make(name, [p], eps=0.0, check_finite=True)
    first_nan = {"NAdam": 1, "RAdam": 6}[name]
    for _ in range(first_nan - 1):  # RAdam's unrectified steps have no eps: no 0/0
        p.grad[...] = [1.0, 0.0, 2.0, 0.0]
        opt.step()
    before = opt.state_dict()
    data = p.data.copy()
    p.grad[...] = [1.0, 0.0, 2.0, 0.0]
    with pytest.raises(FloatingPointError, match=r"step \d+ .*w \(2 of 4 elements\).*eps=0"):
        opt.step()
    assert p.data.tobytes() == data.tobytes()
    assert_identical(opt.state_dict(), before)
    # Without the check, PyTorch's behaviour: NaN on exactly the never-seen coordinates.
    opt.check_finite = False
    opt.step()
    np.testing.assert_array_equal(np.isnan(p.data), [False, True, False, True])


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


@pytest.mark.parametrize("name", NAMES)
def test_eps_compared_with(name: str) -> None:
    opt = make(name, [Parameter(np.zeros(2))])
    assert opt.eps_compared_with() == {"NAdam": "sqrt(v_hat)", "RAdam": "sqrt(v)"}[name]


# -- machine code -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_default_kernel_is_vectorized(name: str) -> None:
    a = np.ones(64, np.float32)
    opt = make(name, [Parameter(a.copy())])
    group = opt.param_groups[0]
    kernel = opt._kernel(group, False, True)
    # The disk-cached kernel cannot show its assembly: compile the same function again, uncached.
    fresh = numba.njit(error_model="numpy", nogil=True)(kernel.py_func)
    n_state = len(opt._state_spec(group))
    fresh(a, a.copy(), *[a.copy() for _ in range(n_state)], a[:0], opt._scalars(group, a.dtype, 9))
    asm = "\n".join(fresh.inspect_asm().values())
    wide = len(re.findall(r"%[yz]mm\d+", asm))
    packed_sqrt = len(re.findall(r"\bvsqrtps\b", asm))
    assert wide > 20 and packed_sqrt > 0, f"{wide} ymm/zmm uses, {packed_sqrt} vsqrtps"

"""float16/bfloat16 parameters and state for every optimizer: one table over every rule.

Each optimizer's 16-bit kernel is held to its NumPy reference bit for bit (NaN matching NaN) in
every rounding model it has, over hypothesis-drawn values that include exact zeros, gradients
near float16's underflow limit and eps=0; ``rounding="per_op"`` is refused where PyTorch has no
such optimizer; the eps-representable warning names each option; the underflow and
lost-update counts equal a recount from the arrays; 16-bit state survives a state-dict round
trip; the 16-bit kernels vectorize with float32 as their only compute dtype. No PyTorch fixture
exists for most of these optimizers in 16-bit, so "per_op" is checked against its NumPy
transcription of PyTorch's op order here (Adam's 16-bit fixtures are tests/test_lowp_parity.py).
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minnet.optim as optim
from minnet import _lowp
from minnet.dtypes import bfloat16, float16, float32
from minnet.nn import Parameter
from minnet.optim._flat import StorageFormats
from minnet.optim.optimizer import LowPrecisionWarning, _Run

# Compiles ~100 kernel specialisations on a cold Numba cache: runs in `make test` (and CI),
# skipped by `make test-fast`.
pytestmark = pytest.mark.slow

F32 = np.dtype(np.float32)


def _make(name: str, params: list[Parameter], **kwargs: Any) -> optim.Optimizer:
    """The optimizer ``name``, its eps warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optim.EpsWarning)  # LowPrecisionWarning and eps=0
        return getattr(optim, name)(params, **kwargs)



#: name -> the option variants exercised (every eps placement and every option that compiles a
#: different kernel; eps itself is drawn by the property test).
FAMILY: dict[str, list[dict[str, Any]]] = {
    "SGD": [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
            {"momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1, "maximize": True}],
    "Adam": [{}, {"amsgrad": True}, {"eps_mode": "hat"}, {"eps_mode": "inside",
             "weight_decay": 0.1}, {"eps_mode": "atan2"},
             {"amsgrad": True, "amsgrad_max": "corrected", "eps_mode": "hat"},
             {"amsgrad": True, "amsgrad_max": "paper"}, {"weight_decay": 0.1},
             {"amsgrad": True, "weight_decay": 0.1}],
    "AdamW": [{}, {"amsgrad": True}],
    "RMSprop": [{}, {"centered": True}, {"momentum": 0.9, "weight_decay": 1e-2},
                {"alpha": 0.3, "centered": True, "momentum": 0.5, "maximize": True},
                {"eps_mode": "inside"}, {"eps_mode": "inside", "centered": True, "momentum": 0.9}],
    "Adagrad": [{}, {"lr_decay": 0.1, "weight_decay": 1e-2},
                {"initial_accumulator_value": 0.1, "maximize": True}, {"eps_mode": "inside"},
                {"eps_mode": "inside_guarded"}],
    "Adamax": [{}, {"eps_mode": "outside"}, {"weight_decay": 0.1},
               {"weight_decay": 0.1, "decoupled_weight_decay": True}],
    "Adadelta": [{}, {"weight_decay": 0.1}],
    "NAdam": [{}, {"weight_decay": 0.1, "decoupled_weight_decay": True}, {"variant": "optax"}],
    "RAdam": [{}, {"weight_decay": 0.1, "decoupled_weight_decay": True},
              {"variant": "optax", "weight_decay": 0.1, "decoupled_weight_decay": True}],
    "AdaBelief": [{}],
    "Lion": [{}, {"weight_decay": 0.1}],
    "Rprop": [{}, {"variant": "optax"}, {"step_sizes": (1e-4, 0.5), "maximize": True}],
    "ASGD": [{}, {"t0": 0.0, "lambd": 0.1, "weight_decay": 0.1, "maximize": True}],
    "Yogi": [{}],
    "ADOPT": [{}, {"nesterov": True, "use_clipping": False}],
    "Adan": [{}, {"weight_decay": 0.1}],
    "AdEMAMix": [{}, {"weight_decay": 0.1, "eps_root": 1e-8}],
    # learning_rate_power=-0.5 only: another power calls pow, which NumPy's float32 SIMD
    # ``power`` (the reference here) may round differently from the C library's powf
    "Ftrl": [{}, {"initial_accumulator_value": 1e-3, "l1_regularization_strength": 1e-3,
                  "l2_regularization_strength": 0.1, "l2_shrinkage_regularization_strength": 0.05,
                  "beta": 0.5}],
    "SignSGD": [{}],
    "Signum": [{}, {"beta": 0.5}],
    "Lamb": [{}, {"variant": "optax", "weight_decay": 0.1}],
    "Lars": [{}, {"nesterov": True, "weight_decay": 1e-2}, {"trust_ratio": False}],
    # lazy: an element whose gradient is 0 keeps its value and state (kernel and reference)
    "SparseAdam": [{}, {"maximize": True, "betas": (0.5, 0.9)}],
    "OptimisticAdam": [{}, {"nesterov": False, "eps_root": 1e-8}],
    # eta=0: no draw outside the kernel, which the reference here would not see (the noise in
    # 16-bit storage is tests/test_noisy_sgd.py's)
    "NoisySGD": [{"eta": 0.0}],
    "ScheduleFreeAdamW": [{}, {"variant": "keras", "weight_decay": 0.1, "warmup_steps": 2}],
    "Prodigy": [{}],
    "Novograd": [{}, {"weight_decay": 0.1, "eps_root": 1e-4}],
    "Fromage": [{}],
    "Adafactor": [{}, {"variant": "keras"}, {"variant": "optax", "weight_decay": 0.1}],
}  # fmt: skip
#: Optimizers that refuse eps = 0 (PyTorch's SparseAdam checks eps > 0).
EPS_POSITIVE = {"SparseAdam"}
HAS_EPS = {n for n in FAMILY if "eps" in inspect.signature(getattr(optim, n)).parameters}
#: Signed state arrays; every other one is nonnegative (a second moment, sum or norm).
SIGNED_STATE = {"exp_avg", "momentum_buffer", "grad_avg", "prev", "ax", "exp_avg_diff", "g",
                "exp_avg_fast", "exp_avg_slow", "trace", "previous_gradient", "noise"}

#: (parameter dtype, state dtype): all float16, all bfloat16, float32 master state for float16
#: parameters, bfloat16 state for float32 parameters, float16 state for bfloat16 parameters.
STORAGE = [(float16, None), (bfloat16, None), (float16, float32), (float32, bfloat16),
           (bfloat16, float16)]  # fmt: skip


def _per_op_allowed(name: str, options: dict[str, Any]) -> bool:
    """Whether the optimizer has a ``rounding="per_op"`` model for these options (PyTorch has
    such a for-loop implementation): asked of the optimizer itself."""
    try:
        _make(name, [Parameter(np.ones(2, float16))], rounding="per_op", **options)
    except ValueError:
        return False
    return True


PER_OP = {name for name in FAMILY if _per_op_allowed(name, {})}

# Every storage recipe for the default options; each other variant with one recipe, in turn
# (each case compiles its own kernels, so the table stays small). MINNET_TEST_FULL_LOWP=1 runs
# every variant in every recipe.
FULL = os.environ.get("MINNET_TEST_FULL_LOWP") == "1"
ALL_CASES = [
    (name, options, fp, fs, rounding)
    for name, variants in FAMILY.items()
    for k, options in enumerate(variants)
    for fp, fs in (STORAGE if not options or FULL else [STORAGE[k % len(STORAGE)]])
    for rounding in ("fused", "per_op")
    if rounding == "fused" or _per_op_allowed(name, options)
]
# The default run takes, for the default options, one case per optimizer and rounding model,
# cycling through the storage recipes; and every other variant once.
_firsts: dict[tuple[str, str], tuple[Any, ...]] = {}
for _i, _case in enumerate(c for c in ALL_CASES if not c[1]):
    _firsts.setdefault((_case[0], _case[4]), _case[:2] + STORAGE[_i % len(STORAGE)] + _case[4:])
CASES = ALL_CASES if FULL else list(_firsts.values()) + [c for c in ALL_CASES if c[1]]


def _case_id(case: tuple[Any, ...]) -> str:
    name, options, fp, fs, rounding = case
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    return f"{name}[{opts}]-{np.dtype(fp).name}-{np.dtype(fs or fp).name}-{rounding}"


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16) if a.itemsize == 2 else a.view(np.uint32)


def _assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    both_nan = np.isnan(got.astype(F32)) & np.isnan(want.astype(F32))
    differ = (_bits(got) != _bits(want)) & ~both_nan
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        pytest.fail(
            f"{what}: {int(differ.sum())} of {got.size} elements differ, first at {i}: "
            f"kernel {got[i]!r} reference {want[i]!r}"
        )


def _step_scalars(opt: optim.Optimizer, flat: Any, t: int) -> Any:
    """The float32 constants ``step()`` uses for step ``t`` of group 0's buffer ``flat`` (after
    a global reduction's pass, for a rule that has one: Prodigy's)."""
    group = opt.param_groups[0]
    if opt.rule is None or opt.rule.reduce is None:
        return opt._scalars(group, F32, t)
    state = flat.group_states[0]
    run = _Run(flat.args, [0], t, state, opt._scalars(group, F32, t, state))
    return opt._reduce_plans([(0, flat, None, [run])])[0][3][0].scalars


# Values that matter in 16-bit: exact zeros, float16's subnormals and smallest normal, the
# magnitudes whose squares underflow (in float16, and in bfloat16), ordinary ones.
SPECIAL = [0.0, 3e-22, 1e-20, 6e-8, 1.2e-7, 3e-5, 6.1e-5, 1e-4, 1e-3, 5e-3, 0.1, 1.0, 3.0]
values = st.one_of(
    st.sampled_from(SPECIAL),
    st.sampled_from(SPECIAL).map(lambda x: -x),
    st.floats(-4.0, 4.0, allow_nan=False, width=32),
)
arrays = st.lists(values, min_size=17, max_size=17)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=_case_id)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=arrays,
    grads=st.lists(arrays, min_size=3, max_size=6),
    state=arrays,
    eps=st.sampled_from([None, 0.0, 1e-4]),
    lr=st.sampled_from([1e-3, 0.1]),
)
def test_kernel_matches_reference_bitwise(
    case: tuple[Any, ...],
    data: list[float],
    grads: list[list[float]],
    state: list[float],
    eps: float | None,
    lr: float,
) -> None:
    """Three to six steps of ``optimizer.step()`` (plain and tracked kernels) equal the NumPy
    reference in the same rounding model, bit for bit, every step and every array, each
    stored in its dtype."""
    name, options, fp, fs, rounding = case
    kwargs = dict(options, lr=lr, state_dtype=fs, rounding=rounding)
    if eps is not None and name in HAS_EPS and not (eps == 0 and name in EPS_POSITIVE):
        kwargs["eps"] = eps
        if name in ("AdaBelief", "Adan", "AdEMAMix"):
            kwargs["eps_root"] = eps
    p = Parameter(np.asarray(data, np.float32).astype(fp))
    q = Parameter(p.data.copy())
    opt = _make(name, [p], **kwargs)
    tracked = _make(name, [q], track_stats=True, **kwargs)
    flat, flat_t = opt._flats[0][0], tracked._flats[0][0]
    assert flat.formats is not None and flat.formats.rounding == rounding
    assert flat.data.dtype == np.dtype(fp)
    for key, arr in flat.state.items():
        assert arr.dtype == np.dtype(fs or fp)
        init = np.asarray(state, np.float32)
        init = init if key in SIGNED_STATE else np.abs(init)
        arr[...] = init.astype(arr.dtype)
        flat_t.state[key][...] = arr
    group = opt.param_groups[0]
    reference = opt._reference(group, flat.formats)
    for t, g in enumerate(grads, start=1):
        p.grad[...] = np.asarray(g, np.float32).astype(fp)
        q.grad[...] = p.grad
        if t == 1:  # state that starts as the parameter (schedule-free's z), as step() does
            opt._start_from_param(flat, [0])
            tracked._start_from_param(flat_t, [0])
        want = [flat.data.copy(), flat.grad.copy(), *(a.copy() for a in flat.arrays)]
        # a per-tensor stage's scalars (Novograd's nu), as the step starts from them
        ts = {"tensor_state": flat.tensor_state.copy()} if flat.tensor_spec else {}
        scalars = _step_scalars(opt, flat, t)
        opt.step()
        tracked.step()
        reference(*want, scalars, **ts)
        if ts:  # float64 sums: the kernel's SIMD lanes and NumPy's pairwise order may differ
            np.testing.assert_allclose(ts["tensor_state"], flat.tensor_state, rtol=1e-13)
        names = ["param", *flat.state]
        for label, got, got_t, ref in zip(
            names, [flat.data, *flat.arrays], [flat_t.data, *flat_t.arrays], [want[0], *want[2:]]
        ):
            _assert_same_bits(got, ref, f"{name} step {t} {label}")
            _assert_same_bits(got_t, got, f"{name} step {t} {label} (tracked kernel)")


@pytest.mark.parametrize("name", ["AdaBelief", "Lion"])
@pytest.mark.parametrize("dtype", [float16, bfloat16])
def test_per_op_refused_where_pytorch_has_no_such_optimizer(name: str, dtype: np.dtype) -> None:
    p = Parameter(np.ones(4, dtype))
    with pytest.raises(ValueError, match=rf"^{name}: rounding='per_op' .*PyTorch has no {name}"):
        _make(name, [p], rounding="per_op")
    with pytest.raises(ValueError, match="per_op exists for the optimizers PyTorch has"):
        _make(name, [Parameter(np.ones(4, float32))], state_dtype="bfloat16", rounding="per_op")
    _make(name, [Parameter(np.ones(4, float32))], rounding="per_op")  # no 16-bit buffer: same


@pytest.mark.parametrize(("name", "options"), [("Yogi", {}), ("ADOPT", {}), ("Adan", {}),
                                             ("AdEMAMix", {}), ("Rprop", {"variant": "optax"}),
                                             ("Ftrl", {}), ("SignSGD", {}), ("Signum", {}),
                                             ("Lamb", {}), ("Lamb", {"variant": "optax"}),
                                             ("Lars", {}), ("OptimisticAdam", {}),
                                             ("NoisySGD", {}), ("NAdam", {"variant": "optax"}),
                                             ("RAdam", {"variant": "optax"}),
                                             ("Adamax", {"weight_decay": 0.1,
                                                         "decoupled_weight_decay": True}),
                                             ("ScheduleFreeAdamW", {}),
                                             ("ScheduleFreeAdamW", {"variant": "keras"}),
                                             ("Prodigy", {}), ("Novograd", {}), ("Fromage", {}),
                                             ("Adafactor", {})])
def test_per_op_refused_for_the_new_optimizers_pytorch_lacks(name: str, options: dict) -> None:
    """Yogi, ADOPT, Adan and AdEMAMix (PyTorch has none of them) and optax's Rprop (not PyTorch's
    algorithm) have no per_op model; PyTorch's Rprop and ASGD have one. Adafactor (a shaped
    update, not an element rule) has none either."""
    for dtype in (float16, bfloat16):
        with pytest.raises(ValueError, match=rf"^{name}: rounding='per_op' "):
            _make(name, [Parameter(np.ones(4, dtype))], rounding="per_op", **options)
    _make(name, [Parameter(np.ones(4, float32))], rounding="per_op", **options)  # no 16-bit
    assert {"Rprop", "ASGD"} <= PER_OP
    pytorch_lacks = {"Yogi", "ADOPT", "Adan", "AdEMAMix", "Ftrl", "SignSGD", "Signum", "Lamb",
                     "Lars", "OptimisticAdam", "NoisySGD", "ScheduleFreeAdamW", "Prodigy",
                     "Novograd", "Fromage"}
    assert not pytorch_lacks & PER_OP


def test_adamax_per_op_needs_pytorchs_eps_placement() -> None:
    p = Parameter(np.ones(4, float16))
    with pytest.raises(ValueError, match="Adamax: rounding='per_op' .*needs eps_mode='max'"):
        _make("Adamax", [p], eps_mode="outside", rounding="per_op")


# name, kwargs (float16 parameters), parts of the warning, parts it must not have, whether
# check_finite refuses it. fused keeps eps in float32, so only the second moment's underflow
# (and AdaBelief's stored eps_root) is said; per_op rounds eps to the float16 state.
EPS_WARNINGS = [
    ("Adam", {}, ["stores exp_avg_sq as 0", "eps stays in float32"], ["eps=1e-08 is"], False),
    ("Adam", {"rounding": "per_op"}, ["eps=1e-08 is 0 in float16 (the state dtype"], [], True),
    ("Adamax", {}, None, [], False),  # eps_mode='max': |g| + eps in float32, each step
    ("Adamax", {"rounding": "per_op"}, ["eps=1e-08 is 0 in float16"], [], True),
    ("Adadelta", {}, ["stores square_avg as 0"], ["eps=1e-06 is"], False),
    ("Adadelta", {"rounding": "per_op"}, ["eps=1e-06 is the subnormal"], [], False),
    ("NAdam", {}, ["stores exp_avg_sq as 0"], ["eps=1e-08 is"], False),
    ("NAdam", {"rounding": "per_op"}, ["eps=1e-08 is 0 in float16"], [], True),
    # the subnormal eps: sqrt(bc2) / eps overflows float16, inf * 0 = NaN for a zero gradient
    ("RAdam", {"eps": 1e-7, "rounding": "per_op"}, ["eps=1e-07 is the subnormal"], [], True),
    ("RAdam", {}, ["stores exp_avg_sq as 0"], ["eps=1e-08 is"], False),
    ("AdaBelief", {}, ["eps_root=1e-16 is added to the state and stored there every step",
                       "float16 state holds it as 0", "each step still adds it in float32",
                       "stores exp_avg_var as 0"], ["eps=1e-16 is"], False),
    ("AdaBelief", {"eps_root": 1e-3}, None, [], False),  # s >= eps_root: nothing underflows
    ("RMSprop", {}, ["stores square_avg as 0"], ["eps=1e-08 is"], False),
    ("Adagrad", {}, ["stores sum as 0"], ["eps=1e-10 is"], False),
    ("SGD", {}, None, [], False),
    ("Lion", {}, None, [], False),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kwargs", "expected", "absent", "fatal"), EPS_WARNINGS)
def test_eps_warning_says_what_the_rounding_model_loses(
    name: str, kwargs: dict[str, Any], expected: list[str] | None, absent: list[str], fatal: bool
) -> None:
    def make(**more: Any) -> optim.Optimizer:
        return getattr(optim, name)([Parameter(np.ones(3, float16))], **kwargs, **more)

    if expected is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            make()
            make(check_finite=True)
        return
    with pytest.warns(LowPrecisionWarning) as record:
        make()
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(f"{name}: ")
    for part in expected:
        assert part in message
    for part in absent:
        assert part not in message
    if fatal:
        with pytest.raises(ValueError, match="check_finite=True"):
            make(check_finite=True)
    else:
        with pytest.warns(LowPrecisionWarning):
            make(check_finite=True)  # a set-up that works is not refused


@pytest.mark.parametrize("name", [n for n in optim.__all__ if n in {
    "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "Adadelta", "NAdam", "RAdam", "AdaBelief"}])
def test_eps_zero_warns_where_a_zero_gradient_gives_nan(name: str) -> None:
    """eps=0 (and eps_root=0 for AdaBelief): a coordinate whose gradient has been 0 gets 0/0,
    in float64 too; the warning says so, and the step indeed makes it NaN."""
    kw: dict[str, Any] = {"eps": 0.0}
    if name == "AdaBelief":
        kw["eps_root"] = 0.0
    p = Parameter(np.ones(2))
    with pytest.warns(optim.EpsWarning, match=r"divides 0 by 0"):
        opt = getattr(optim, name)([p], **kw)
    for _ in range(10):  # RAdam's first steps have no denominator
        p.grad[...] = [1.0, 0.0]
        with np.errstate(all="ignore"):
            opt.step()
    assert np.isnan(p.data[1]) and np.isfinite(p.data[0])


def test_eps_zero_without_zero_over_zero_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optim.Adagrad([Parameter(np.ones(2))], eps=0.0, initial_accumulator_value=0.1)
        optim.AdaBelief([Parameter(np.ones(2))], eps=0.0)  # eps_root=1e-16 is stored
        optim.Adagrad([Parameter(np.ones(2))], eps=0.0, eps_mode="inside_guarded")
        optim.SGD([Parameter(np.ones(2))], lr=0.1)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("Adamax", {}), ("NAdam", {}), ("AdaBelief", {}), ("Lion", {}), ("Adadelta", {}),
     ("AdaBelief", {"eps": 1e-3, "eps_root": 1e-3})],
)  # fmt: skip
def test_no_warning_where_eps_survives(name: str, kwargs: dict[str, Any]) -> None:
    """bfloat16 has float32's range (the defaults survive); float32 state for float16
    parameters holds them; Lion has no eps; large eps survives float16."""
    dtypes = [(bfloat16, None), (float16, float32)]
    if kwargs:
        dtypes.append((float16, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowPrecisionWarning)
        for fp, fs in dtypes:
            getattr(optim, name)([Parameter(np.ones(3, fp))], state_dtype=fs, **kwargs)


# name, kwargs, param dtype, state dtype, gradient: every coordinate's second moment underflows
UNDERFLOW = [
    ("Adamax", {"eps": 0.0}, float32, float16, 1e-9),
    ("Adadelta", {}, float16, None, 1e-4),
    ("NAdam", {}, float16, None, 1e-4),
    ("RAdam", {}, float16, None, 1e-4),
    ("AdaBelief", {"eps": 1e-3}, float16, None, 1e-4),
]


@pytest.mark.parametrize(("name", "kwargs", "fp", "fs", "g"), UNDERFLOW)
@pytest.mark.parametrize("rounding", ["fused", "per_op"])
def test_underflow_and_lost_update_counts(
    name: str, kwargs: dict[str, Any], fp: np.dtype, fs: Any, g: float, rounding: str
) -> None:
    """``stats.underflow`` counts the coordinates whose stored second moment is 0 with a
    nonzero gradient (recounted from the arrays); half the gradients are tiny, half normal."""
    if rounding == "per_op" and name not in PER_OP:
        pytest.skip("per_op is refused")
    n = 8
    p = Parameter(np.linspace(1.0, 2.0, n).astype(fp))
    opt = _make(name, [p], track_stats=True, state_dtype=fs, rounding=rounding, **kwargs)
    p.grad[...] = np.where(np.arange(n) < n // 2, g, 0.5).astype(fp)
    opt.step()
    second = list(opt._flats[0][0].state.values())[-1 if name != "Adadelta" else 0]
    recount = int(((second.astype(F32) == 0) & (p.grad.astype(F32) != 0)).sum())
    assert opt.stats is not None
    assert recount == n // 2
    assert opt.stats.underflow == recount


@pytest.mark.parametrize("name", sorted(FAMILY))
@pytest.mark.parametrize("rounding", ["fused", "per_op"])
def test_lost_updates_in_bfloat16(name: str, rounding: str) -> None:
    """bfloat16 parameters at 256 with lr=1e-3: every update is far below half an ulp (1.0),
    so every coordinate's update is lost; the count equals the parameters that did not move."""
    if rounding == "per_op" and name not in PER_OP:
        pytest.skip("per_op is refused")
    if name == "Ftrl":
        pytest.skip("FTRL computes the new parameter from its sums (-lr * z / sqrt(n)) instead "
                    "of adding a step to the old one: nothing small is added to 256")
    n = 6
    # Prodigy's first step is about d * lr = 1e-6 * lr: lr 1 moves the float32 1.0
    lr = {"Adadelta": 1e-2, "Prodigy": 1.0}.get(name, 1e-3)
    p = Parameter(np.full(n, 256.0, bfloat16))
    q = Parameter(np.full(n, 1.0, float32))  # float32 buffers: no 16-bit stats
    # AdamW's default decay: a lost update is one whose parameter stays at the *decayed* value,
    # p * (1 - lr * wd) = 255.997, which the stored 256 is not; without decay it is counted.
    # ASGD's shrink by 1 - lambd * eta likewise. ADOPT's first step only initialises v.
    extra = {"AdamW": {"weight_decay": 0.0}, "ASGD": {"lambd": 0.0}}.get(name, {})
    opt = _make(name, [p, q], lr=lr, track_stats=True, rounding=rounding, **extra)
    p.grad[...] = np.linspace(0.5, 1.0, n).astype(bfloat16)
    q.grad[...] = 0.5
    if name == "ADOPT":
        opt.step()
    before = p.data.copy()
    opt.step()
    assert opt.stats is not None
    unmoved = int((p.data == before).sum())
    assert unmoved == n
    assert opt.stats.lost_updates == unmoved
    assert not np.array_equal(q.data, np.ones(n, np.float32))


@pytest.mark.parametrize(
    ("name", "kwargs", "steps"), [("Adamax", {}, 1), ("NAdam", {}, 1), ("RAdam", {}, 6)]
)
def test_per_op_float16_breaks_where_fused_trains(
    name: str, kwargs: dict[str, Any], steps: int
) -> None:
    """The issue's failure in each optimizer: float16 with eps=1e-8 and gradients 1e-3, 0,
    3e-5; PyTorch's op-by-op rounding makes eps (and the second moment) 0 and divides by it,
    the fused model computes the same step in float32 and stays finite."""
    out = {}
    for rounding in ("fused", "per_op"):
        p = Parameter(np.ones(3, float16))
        opt = _make(name, [p], rounding=rounding, **kwargs)
        for _ in range(steps):
            p.grad[...] = np.array([1e-3, 0.0, 3e-5], float16)
            opt.step()
        out[rounding] = p.data.astype(F32)
    assert np.isfinite(out["fused"]).all()
    assert not np.isfinite(out["per_op"]).all(), out["per_op"]


#: (optimizer, options, rounding): every optimizer's default options, and per_op with the
#: options that add state (momentum, centered, AMSGrad's max).
ROUND_TRIP: list[tuple[str, dict[str, Any], str]] = [
    *[(name, {}, "fused") for name in sorted(FAMILY)],
    ("SGD", {"momentum": 0.9}, "per_op"),
    ("RMSprop", {"eps": 1e-4, "centered": True, "momentum": 0.5}, "per_op"),
    ("Adagrad", {"eps": 1e-4}, "per_op"),
    ("Adam", {"amsgrad": True, "eps": 1e-4}, "per_op"),
]


@pytest.mark.parametrize(("name", "options", "rounding"), ROUND_TRIP,
                         ids=[f"{n}{o or ''}-{r}" for n, o, r in ROUND_TRIP])  # fmt: skip
@pytest.mark.parametrize(("fp", "fs"), [(float16, None), (bfloat16, None), (float16, float32)])
def test_state_dict_round_trip_with_16bit_state(
    name: str, options: dict[str, Any], rounding: str, fp: np.dtype, fs: Any
) -> None:
    """4 + 4 steps across state_dict / load_state_dict equal 8 steps bit for bit; the state
    dict keeps the state dtype and the loaded state its bits."""
    rng = np.random.default_rng(3)
    init = rng.normal(size=(4, 5)).astype(fp)
    grads = [rng.normal(size=(4, 5)).astype(fp) for _ in range(8)]
    p = Parameter(init.copy())
    opt = _make(name, [p], state_dtype=fs, rounding=rounding, **options)
    for g in grads[:4]:
        p.grad[...] = g
        opt.step()
    saved = opt.state_dict()
    entry = saved["state"][0]
    for key in opt._flats[0][0].state:
        assert entry[key].dtype == np.dtype(fs or fp)
        assert entry[key].shape == (4, 5)
    q = Parameter(p.data.copy())
    opt2 = _make(name, [q], state_dtype=fs, rounding=rounding, **options)
    opt2.load_state_dict(saved)
    for key in opt._flats[0][0].state:
        _assert_same_bits(opt2._flats[0][0].state[key], opt._flats[0][0].state[key], key)
    for g in grads[4:]:
        p.grad[...] = g
        q.grad[...] = g
        opt.step()
        opt2.step()
    _assert_same_bits(q.data.ravel(), p.data.ravel(), f"{name} after resume")
    for key in opt._flats[0][0].state:
        _assert_same_bits(opt2._flats[0][0].state[key], opt._flats[0][0].state[key], key)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_bfloat16_trains_on_a_parabola(name: str) -> None:
    """All-bfloat16 (fused) reaches the minimum of ``sum((x - 3)**2)`` from 0."""
    kwargs = {"Adadelta": {"lr": 1.0, "eps": 1e-2}, "Lion": {"lr": 0.05},
              "Adagrad": {"lr": 1.0}, "Ftrl": {"lr": 1.0}, "Lars": {"lr": 1.0},
              "Prodigy": {"lr": 1.0}}.get(
                  name, {"lr": 0.1})  # fmt: skip
    p = Parameter(np.zeros(16, bfloat16))
    opt = _make(name, [p], **kwargs)
    for _ in range(300):
        p.grad[...] = (2.0 * (p.data.astype(F32) - 3.0)).astype(bfloat16)
        opt.step()
    assert np.abs(p.data.astype(F32) - 3.0).max() < 0.2, p.data


# -- machine code ------------------------------------------------------------------------------


def _lowp_asm(name: str, fmt: int) -> str:
    """The assembly of the plain (untracked, writing, fused) 16-bit kernel, all-``fmt``."""
    formats = StorageFormats(fmt, fmt, "fused")
    dt = float16 if fmt == _lowp.F16 else bfloat16
    p = Parameter(np.ones(64, dt))
    opt = _make(name, [p], rounding="fused")
    kernel = opt._kernel(opt.param_groups[0], False, True, formats)
    flat = opt._flats[0][0]
    scalars = opt._scalars(opt.param_groups[0], F32, 7)
    fresh = numba.njit(error_model="numpy", nogil=True)(kernel.py_func)
    fresh(*flat.args, flat.scratch, scalars)
    return "\n".join(fresh.inspect_asm().values())


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", sorted(n for n in FAMILY if getattr(optim, n).shaped is None) if FULL
    else ["NAdam", "Lion"])  # a shaped update (Adafactor) is NumPy: no kernel to read
@pytest.mark.parametrize("fmt", [_lowp.BF16], ids=["bfloat16"])
def test_16bit_kernels_vectorize_in_float32(name: str, fmt: int) -> None:
    """The 16-bit kernel's loop uses packed single-precision SIMD (ymm/zmm registers) and no
    packed or scalar double-precision arithmetic: float32 is its one compute dtype."""
    asm = _lowp_asm(name, fmt)
    wide = len(re.findall(r"%[yz]mm\d+", asm))
    packed = len(re.findall(r"\bv(?:sqrt|div|fmadd\w*|mul|add|sub|max|min)ps\b", asm))
    double = re.findall(r"\bv?(?:sqrt|div|mul|add|sub|max|min)[sp]d\b|cvtss2sd|cvtps2pd", asm)
    assert wide > 20 and packed > 3, f"{name}: {wide} ymm/zmm uses, {packed} packed-single ops"
    assert not double, f"{name}: double-precision ops in a 16-bit kernel: {sorted(set(double))}"

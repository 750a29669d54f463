"""Learning-rate schedulers: PyTorch's sequences replayed from fixtures, closed forms, errors."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minnet.nn import Parameter
from minnet.optim import Adam
from minnet.optim import lr_scheduler as ls

# These tests step schedulers without an optimizer step in between on purpose (the sequences do
# not depend on it); the warning itself is tested in test_step_before_optimizer_step_warns.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning"
)

FIXTURE = Path(__file__).parent / "fixtures" / "schedulers.npz"
DATA = np.load(FIXTURE)
CONFIGS: list[dict[str, Any]] = json.loads(str(DATA["configs"]))

# The same named functions as scripts/make_scheduler_fixtures.py.
LAMBDAS = {
    "exp95": lambda e: 0.95**e,
    "warmup10": lambda e: min(1.0, (e + 1) / 10),
    "inv": lambda e: 1.0 / (1.0 + 0.05 * e),
}


class FakeOptimizer:
    """Only what a scheduler touches: ``param_groups`` (and ``defaults``, as PyTorch has)."""

    def __init__(self, lrs: list[float], kind: str = "sgd") -> None:
        if kind == "sgd":
            self.defaults: dict[str, Any] = {"lr": 0.1, "momentum": 0.9}
        else:
            self.defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
        self.param_groups = [{"params": [], **self.defaults, "lr": lr} for lr in lrs]

    def step(self) -> None:
        pass


def build(opt: Any, spec: dict[str, Any]) -> ls.LRScheduler:
    kw = {k: v for k, v in spec.items() if k != "kind"}
    if spec["kind"] == "LambdaLR":
        fn = kw["lr_lambda"]
        kw["lr_lambda"] = [LAMBDAS[f] for f in fn] if isinstance(fn, list) else LAMBDAS[fn]
    if spec["kind"] in ("SequentialLR", "ChainedScheduler"):
        kw["schedulers"] = [build(opt, s) for s in kw["schedulers"]]
    if spec["kind"] == "ChainedScheduler":
        return ls.ChainedScheduler(kw["schedulers"], optimizer=opt)
    return getattr(ls, spec["kind"])(opt, **kw)


def momentum_of(group: dict[str, Any]) -> float:
    return float(group["momentum"] if "momentum" in group else group["betas"][0])


def replay(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[ls.LRScheduler]]:
    opt = FakeOptimizer(cfg["lrs"], cfg["opt"])
    specs = cfg["sched"] if isinstance(cfg["sched"], list) else [cfg["sched"]]
    scheds = [build(opt, s) for s in specs]
    metrics = DATA.get(f"{cfg['name']}__metrics")
    lrs = [[g["lr"] for g in opt.param_groups]]
    moms = [[momentum_of(g) for g in opt.param_groups]]
    for i in range(cfg["steps"]):
        opt.step()
        for s in scheds:
            if metrics is not None:
                s.step(float(metrics[i]))
            elif "epochs" in cfg:
                s.step(cfg["epochs"][i])
            else:
                s.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        moms.append([momentum_of(g) for g in opt.param_groups])
    return np.array(lrs), np.array(moms), scheds


def test_fixture_covers_every_scheduler() -> None:
    kinds = set()
    for cfg in CONFIGS:
        for spec in cfg["sched"] if isinstance(cfg["sched"], list) else [cfg["sched"]]:
            kinds.add(spec["kind"])
    assert kinds >= {n for n in ls.__all__ if n != "LRScheduler"}
    assert any(len(cfg["lrs"]) > 1 for cfg in CONFIGS)


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c["name"] for c in CONFIGS])
def test_matches_pytorch(cfg: dict[str, Any]) -> None:
    lrs, moms, scheds = replay(cfg)
    want = DATA[f"{cfg['name']}__lr"]
    assert lrs.shape == want.shape
    np.testing.assert_allclose(lrs, want, rtol=1e-12, atol=0)
    # A schedule that never changes would make this test vacuous.
    assert np.ptp(want[:, -1]) > 0
    key = f"{cfg['name']}__momentum"
    if key in DATA:
        np.testing.assert_allclose(moms, DATA[key], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(scheds[-1].get_last_lr(), lrs[-1])


@pytest.mark.parametrize("T_max,eta_min", [(50, 1e-3), (7, 0.0), (1, 0.05), (100, 0.2)])
def test_cosine_recursive_equals_closed_form(T_max: int, eta_min: float) -> None:
    base = [0.3, 0.01]
    opt = FakeOptimizer(base)
    sched = ls.CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min)
    for t in range(1, 4 * T_max + 3):
        sched.step()
        for b, g in zip(base, opt.param_groups):
            closed = eta_min + (b - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2
            assert abs(g["lr"] - closed) <= 1e-12 * b, (t, g["lr"], closed)


@pytest.mark.parametrize(
    "make",
    [
        lambda o: ls.StepLR(o, step_size=6, gamma=0.7),
        lambda o: ls.MultiStepLR(o, milestones=[3, 9, 9, 20], gamma=0.5),
        lambda o: ls.ExponentialLR(o, gamma=0.9),
        lambda o: ls.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=12),
        lambda o: ls.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
    ],
)
def test_chainable_equals_closed_form(make: Any) -> None:
    opt = FakeOptimizer([0.5, 0.05])
    sched = make(opt)
    chained = [sched.get_last_lr()]
    for _ in range(30):
        sched.step()
        chained.append(sched.get_last_lr())
    opt2 = FakeOptimizer([0.5, 0.05])
    sched2 = make(opt2)
    with pytest.warns(UserWarning, match="epoch parameter"):
        sched2.step(0)
    for epoch in range(31):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched2.step(epoch)
        np.testing.assert_allclose(sched2.get_last_lr(), chained[epoch], rtol=1e-12)


def test_two_schedulers_chain_multiplicatively() -> None:
    opt = FakeOptimizer([1.0])
    a = ls.StepLR(opt, step_size=5, gamma=0.5)
    b = ls.ExponentialLR(opt, gamma=0.9)
    for t in range(1, 21):
        a.step()
        b.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 ** (t // 5) * 0.9**t, rel=1e-12)


def test_construction_protocol() -> None:
    opt = FakeOptimizer([0.1, 0.2])
    sched = ls.StepLR(opt, step_size=3)
    assert sched.last_epoch == 0
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.2]
    assert sched.base_lrs == [0.1, 0.2]
    assert sched.get_last_lr() == [0.1, 0.2]
    sched.get_last_lr().append(5.0)  # a copy
    assert sched.get_last_lr() == [0.1, 0.2]
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()
    # Resuming needs initial_lr in every group.
    with pytest.raises(KeyError, match=r"param 'initial_lr' is not specified in param_groups\[0\]"):
        ls.StepLR(FakeOptimizer([0.1]), step_size=3, last_epoch=4)


@pytest.mark.parametrize(
    "make",
    [
        lambda o: ls.CosineAnnealingLR(o, T_max=20, eta_min=1e-3),
        lambda o: ls.MultiStepLR(o, milestones=[10, 30, 55]),
        lambda o: ls.LambdaLR(o, lr_lambda=LAMBDAS["exp95"]),
        lambda o: ls.OneCycleLR(o, max_lr=[0.1, 0.3], total_steps=100, three_phase=True),
        lambda o: ls.SequentialLR(
            o, [ls.LinearLR(o, total_iters=10), ls.ExponentialLR(o, gamma=0.95)], [10]
        ),
    ],
)
def test_state_dict_resumes_the_same_sequence(make: Any) -> None:
    opt = FakeOptimizer([0.2, 0.4])
    sched = make(opt)
    for _ in range(25):
        sched.step()
    state = sched.state_dict()
    assert "optimizer" not in state
    groups = [dict(g) for g in opt.param_groups]
    rest = []
    for _ in range(50):
        sched.step()
        rest.append(sched.get_last_lr())
    opt2 = FakeOptimizer([0.2, 0.4])
    sched2 = make(opt2)
    opt2.param_groups = groups
    sched2.optimizer = opt2
    if isinstance(sched2, ls.SequentialLR):
        for s in sched2._schedulers:
            s.optimizer = opt2
    sched2.load_state_dict(state)
    for want in rest:
        sched2.step()
        assert sched2.get_last_lr() == want


def test_plateau_eps_is_the_minimal_decay() -> None:
    lr0, factor, eps = 1e-6, 0.5, 1e-7
    opt = FakeOptimizer([lr0])
    sched = ls.ReduceLROnPlateau(opt, factor=factor, patience=0, eps=eps)
    for _ in range(60):
        sched.step(1.0)
    lr = opt.param_groups[0]["lr"]
    # Reduced while the decay lr*(1-factor) exceeded eps, then frozen.
    assert lr * (1 - factor) <= eps < 2 * lr * (1 - factor)
    assert math.log2(lr0 / lr) == pytest.approx(round(math.log2(lr0 / lr)))
    # With eps=0 the same run keeps going.
    opt0 = FakeOptimizer([lr0])
    s0 = ls.ReduceLROnPlateau(opt0, factor=factor, patience=0, eps=0.0)
    for _ in range(60):
        s0.step(1.0)
    assert opt0.param_groups[0]["lr"] < lr * 1e-10


def test_plateau_state_dict_and_new_group() -> None:
    opt = FakeOptimizer([0.1])
    sched = ls.ReduceLROnPlateau(opt, mode="max", min_lr=[0.01])
    sched2 = ls.ReduceLROnPlateau(FakeOptimizer([0.1]))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.mode_worse == -math.inf
    opt.param_groups.append({"lr": 0.1})
    sched.patience = 0
    sched.step(1.0)
    with pytest.raises(RuntimeError, match=r"The number of param groups in the `optimizer` \(2\)"):
        sched.step(1.0)


def test_onecycle_writes_betas_and_momentum() -> None:
    adam_like = FakeOptimizer([0.1, 0.1], "adam")
    ls.OneCycleLR(adam_like, max_lr=1.0, total_steps=10, max_momentum=[0.9, 0.8])
    assert [g["betas"] for g in adam_like.param_groups] == [(0.9, 0.999), (0.8, 0.999)]
    sgd_like = FakeOptimizer([0.1], "sgd")
    sched = ls.OneCycleLR(sgd_like, max_lr=1.0, total_steps=10)
    assert sgd_like.param_groups[0]["momentum"] == 0.95
    assert sgd_like.param_groups[0]["lr"] == pytest.approx(1.0 / 25)
    for _ in range(10):
        sched.step()
    with pytest.raises(ValueError, match="Tried to step 11 times. The specified number of total"):
        sched.step()


@pytest.mark.parametrize(
    "make,exc,msg",
    [
        (lambda o: ls.StepLR(object(), 3), TypeError, "object is not an Optimizer"),
        (lambda o: ls.StepLR(o, 0), ValueError, "StepLR: step_size must be a positive integer"),
        (lambda o: ls.CosineAnnealingLR(o, 0), ValueError, "T_max must be a positive integer"),
        (lambda o: ls.LinearLR(o, start_factor=0), ValueError,
         "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."),
        (lambda o: ls.LinearLR(o, end_factor=1.5), ValueError,
         "Ending multiplicative factor expected to be between 0 and 1."),
        (lambda o: ls.LambdaLR(o, [LAMBDAS["inv"]] * 3), ValueError,
         "Expected 2 lr_lambdas, but got 3"),
        (lambda o: ls.OneCycleLR(o, 0.1), ValueError,
         r"You must define either total_steps OR \(epochs AND steps_per_epoch\)"),
        (lambda o: ls.OneCycleLR(o, 0.1, total_steps=0), ValueError,
         "Expected positive integer total_steps, but got 0"),
        (lambda o: ls.OneCycleLR(o, 0.1, epochs=2.5, steps_per_epoch=3), ValueError,
         "Expected positive integer epochs, but got 2.5"),
        (lambda o: ls.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-1), ValueError,
         "Expected positive integer steps_per_epoch, but got -1"),
        (lambda o: ls.OneCycleLR(o, 0.1, total_steps=9, pct_start=1), ValueError,
         "Expected float between 0 and 1 pct_start, but got 1"),
        (lambda o: ls.OneCycleLR(o, 0.1, total_steps=9, anneal_strategy="exp"), ValueError,
         "anneal_strategy must be one of 'cos' or 'linear', instead got exp"),
        (lambda o: ls.OneCycleLR(o, [0.1], total_steps=9), ValueError,
         "max_lr must have the same length as optimizer.param_groups. max_lr has 1 values, "
         "param_groups has 2."),
        (lambda o: ls.ReduceLROnPlateau(o, factor=1.0), ValueError, r"Factor should be < 1.0."),
        (lambda o: ls.ReduceLROnPlateau(o, mode="avg"), ValueError, "mode avg is unknown!"),
        (lambda o: ls.ReduceLROnPlateau(o, threshold_mode="x"), ValueError,
         "threshold mode x is unknown!"),
        (lambda o: ls.ReduceLROnPlateau(o, min_lr=[0.0]), ValueError,
         "expected 2 min_lrs, got 1"),
        (lambda o: ls.SequentialLR(o, [], []), ValueError,
         "SequentialLR expects at least one scheduler, but got no scheduler."),
        (lambda o: ls.SequentialLR(o, [ls.StepLR(o, 2)], [3]), ValueError,
         "Sequential Schedulers expects number of schedulers provided to be one more than the "
         "number of milestone points, but got number of schedulers 1 and the number of "
         "milestones to be equal to 1"),
        (lambda o: ls.SequentialLR(o, [ls.ReduceLROnPlateau(o)], []), ValueError,
         "does not support `ReduceLROnPlateau`"),
        (lambda o: ls.SequentialLR(o, [ls.StepLR(FakeOptimizer([1.0]), 2)], []), ValueError,
         "expects all schedulers to belong to the same optimizer"),
        (lambda o: ls.SequentialLR(o, [object()], []), TypeError,
         "SequentialLR at index 0 should have `optimizer` as its attribute."),
    ],
)  # fmt: skip
def test_errors_have_pytorchs_messages(make: Any, exc: type, msg: str) -> None:
    opt = FakeOptimizer([0.1, 0.2])
    with pytest.raises(exc, match=msg):
        make(opt)


def test_cycle_momentum_needs_momentum_or_betas() -> None:
    opt = FakeOptimizer([0.1])
    opt.defaults = {"lr": 0.1}
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        ls.OneCycleLR(opt, 0.1, total_steps=10)
    ls.OneCycleLR(opt, 0.1, total_steps=10, cycle_momentum=False)


def _adam_on_constant_gradient() -> tuple[Parameter, Adam]:
    p = Parameter(np.zeros(3))
    p.grad[...] = np.array([1.0, -2.0, 0.5])
    return p, Adam([p], lr=0.1)


def test_end_to_end_with_minnet_adam() -> None:
    """The kernel uses the lr the scheduler writes: with a constant gradient each Adam step
    moves every coordinate by lr * g/|g| (m_hat = g, v_hat = g**2, up to eps)."""
    p, opt = _adam_on_constant_gradient()
    sched = ls.StepLR(opt, step_size=4, gamma=0.5)
    assert opt.param_groups[0]["initial_lr"] == 0.1
    lrs = []
    for _ in range(12):
        before = p.data.copy()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        np.testing.assert_allclose(before - p.data, lr * np.sign(p.grad), rtol=1e-6)
        lrs.append(lr)
        sched.step()
    assert lrs == [0.1] * 4 + [0.05] * 4 + [0.025] * 4


def test_onecycle_drives_minnet_adam_betas() -> None:
    p, opt = _adam_on_constant_gradient()
    sched = ls.OneCycleLR(opt, max_lr=0.1, total_steps=20)
    seen = []
    for _ in range(19):  # the cycle ends at last_epoch = total_steps - 1
        opt.step()
        sched.step()
        seen.append(opt.betas[0])
        assert opt.param_groups[0]["betas"][0] == opt.betas[0]
        assert opt.lr == sched.get_last_lr()[0]
    assert min(seen) == pytest.approx(0.85, abs=1e-3)
    assert seen[-1] == pytest.approx(0.95)
    assert np.all(np.isfinite(p.data))


def _adam() -> Adam:
    return Adam([Parameter(np.zeros(3))], lr=0.1)


def test_step_before_optimizer_step_warns() -> None:
    opt = _adam()
    sched = ls.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match=r"Detected call of `lr_scheduler.step\(\)` before"):
        sched.step()
    opt = _adam()
    sched = ls.CosineAnnealingLR(opt, T_max=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for p in opt.param_groups[0]["params"]:
            p.grad[...] = 1.0
        opt.step()  # the wrapped step still steps
        assert opt._opt_called
        sched.step()
        sched.step()
    assert float(opt.param_groups[0]["params"][0].data[0]) != 0.0
    assert hasattr(opt.step, "_wrapped_by_lr_sched")
    ls.ExponentialLR(opt, gamma=0.9)  # a second scheduler does not wrap twice
    assert opt.step.__wrapped__ is type(opt).step


def test_verbose_is_accepted_with_pytorchs_deprecation_warning() -> None:
    with pytest.warns(UserWarning, match="The verbose parameter is deprecated"):
        sched = ls.StepLR(FakeOptimizer([0.1]), step_size=3, verbose=True)
    assert sched.step_size == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ls.CyclicLR(FakeOptimizer([0.1]), 0.01, 0.1, verbose="deprecated")


def test_new_schedulers_check_their_arguments() -> None:
    opt = FakeOptimizer([0.1])
    with pytest.raises(ValueError, match="Expected positive integer T_0, but got 0"):
        ls.CosineAnnealingWarmRestarts(opt, T_0=0)
    with pytest.raises(ValueError, match="Expected integer T_mult >= 1, but got 1.5"):
        ls.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=1.5)
    with pytest.raises(ValueError, match="Expected non-negative epoch, but got -1"):
        ls.CosineAnnealingWarmRestarts(opt, T_0=3).step(-1)
    with pytest.raises(ValueError, match="Constant multiplicative factor"):
        ls.ConstantLR(opt, factor=1.5)
    with pytest.raises(ValueError, match="mode is invalid and scale_fn is None"):
        ls.CyclicLR(opt, 0.01, 0.1, mode="square")
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        bare = FakeOptimizer([0.1])
        bare.defaults = {"lr": 0.1}
        ls.CyclicLR(bare, 0.01, 0.1)
    with pytest.raises(ValueError, match="expects at least one scheduler to be chained"):
        ls.ChainedScheduler([])
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        ls.ChainedScheduler([ls.ReduceLROnPlateau(opt)])
    other = ls.StepLR(FakeOptimizer([0.1]), 3)
    with pytest.raises(ValueError, match="to belong to the same optimizer"):
        ls.ChainedScheduler([ls.StepLR(opt, 3), other])


def test_chained_and_cyclic_state_dicts_resume() -> None:
    def make(opt: Any) -> ls.ChainedScheduler:
        return ls.ChainedScheduler([ls.ConstantLR(opt, 0.5, 4), ls.ExponentialLR(opt, 0.9)])

    opt_a, opt_b = FakeOptimizer([0.1]), FakeOptimizer([0.1])
    a, b = make(opt_a), make(opt_b)
    for _ in range(3):
        a.step()
    b.load_state_dict(a.state_dict())
    opt_b.param_groups[0]["lr"] = opt_a.param_groups[0]["lr"]
    for _ in range(5):
        a.step()
        b.step()
    assert a.get_last_lr() == b.get_last_lr()
    c = ls.CyclicLR(FakeOptimizer([0.1], "adam"), 0.01, 0.1, step_size_up=4, mode="exp_range",
                    gamma=0.9)  # fmt: skip
    state = c.state_dict()
    assert "_scale_fn_ref" not in state and state["mode"] == "exp_range"
    d = ls.CyclicLR(FakeOptimizer([0.1], "adam"), 0.01, 0.1, step_size_up=4)
    d.load_state_dict(state)
    assert d.scale_fn(2) == pytest.approx(0.81)


def test_optimizer_step_replaced_after_the_scheduler_warns() -> None:
    opt = FakeOptimizer([0.1])
    sched = ls.StepLR(opt, step_size=2)
    opt.step = lambda: None  # replaced after the scheduler wrapped it
    with pytest.warns(UserWarning, match="Seems like `optimizer.step\\(\\)` has been overridden"):
        sched.step()

"""``zero_grad(set_to_none=True)`` and ``p.grad = None``: a step skips a parameter without a
gradient, as PyTorch's optimizers do, from tests/fixtures/set_to_none.npz (recorded by
scripts/make_set_to_none_fixtures.py with PyTorch; replayed here without it)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.nn import Parameter

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "set_to_none.npz")
NAMES = ("w", "b", "c")
CASES = [
    (str(case), str(cls), ast.literal_eval(str(kw)))
    for case, cls, kw in zip(FIXTURE["cases"], FIXTURE["classes"], FIXTURE["kwargs"])
]


def replay(cls: str, kwargs: dict, set_to_none: bool, wrong_steps: bool = False):
    params = [Parameter(FIXTURE[f"init_{n}"].copy(), n) for n in NAMES]
    for p in params:
        p.grad = None  # PyTorch's parameters start without a gradient
    opt = getattr(minnet.optim, cls)(params, **kwargs)
    steps = FIXTURE["grad_w"].shape[0]
    for t in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        for n, p in zip(NAMES, params):
            g = FIXTURE[f"grad_{n}"][t]
            if not np.isnan(g).any():
                p.grad = g.copy()  # copied into the optimizer's buffer
            elif wrong_steps:
                p.grad = np.zeros_like(g)  # the old behaviour: a step with g = 0
        opt.step()
    return opt, params


@pytest.mark.parametrize("mode", ["none", "zeros"])
@pytest.mark.parametrize(("case", "cls", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_matches_pytorch(case: str, cls: str, kwargs: dict, mode: str) -> None:
    opt, params = replay(cls, kwargs, mode == "none")
    for n, p in zip(NAMES, params):
        np.testing.assert_allclose(
            p.data, FIXTURE[f"{case}_{mode}_{n}"], rtol=1e-12, atol=1e-14, err_msg=n
        )
    state = opt.state_dict()["state"]
    expected = FIXTURE[f"{case}_{mode}_steps"]
    for k, want in enumerate(expected):
        if want == 0:
            assert k not in state  # PyTorch has no state for a parameter never updated
        elif not np.isnan(want):
            assert state[k]["step"] == want
    if cls == "SGD":  # PyTorch's SGD keeps no step; minnet's counts the updates
        assert [state[k]["step"] for k in range(3)] == ([12.0, 9.0, 7.0] if mode == "none"
                                                        else [12.0, 12.0, 8.0])  # fmt: skip


@pytest.mark.parametrize("cls", ["Adam", "SGD"])
def test_a_step_with_zero_gradients_misses_the_fixture(cls: str) -> None:
    """The replay can fail: stepping the parameters without a gradient with g = 0 (what
    ``zero_grad`` did before it honoured ``set_to_none``) ends far from PyTorch."""
    case = {"Adam": "adam", "SGD": "sgd_momentum"}[cls]
    kwargs = dict(next(c[2] for c in CASES if c[0] == case))
    _, params = replay(cls, kwargs, True, wrong_steps=True)
    gap = max(
        np.abs(p.data - FIXTURE[f"{case}_none_{n}"]).max() for n, p in zip(NAMES, params)
    )
    assert gap > 1e-3


def test_one_bias_correction_for_every_parameter_misses_the_fixture(monkeypatch) -> None:
    """The replay can fail: parameters whose step counts differ need their own bias
    corrections; running every run with the first parameter's step count misses."""
    from minnet.optim import _flat

    real = _flat.FlatBuffers.step_runs

    def one_step_count(self):
        runs = real(self)
        return [(a, js, runs[0][2], s) for a, js, _, s in runs]

    monkeypatch.setattr(_flat.FlatBuffers, "step_runs", one_step_count)
    _, params = replay("Adam", {"lr": 0.1}, True)
    gap = max(
        np.abs(p.data - FIXTURE[f"adam_none_{n}"]).max() for n, p in zip(NAMES, params)
    )
    assert gap > 1e-6


def test_backward_marks_the_parameters_it_reaches() -> None:
    """A head that the loss does not use keeps ``grad is None``; the step leaves it, its state
    and its step count alone, and the other head trains."""

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 2, dtype=np.float64, rng=0)
            self.b = nn.Linear(3, 2, dtype=np.float64, rng=1)

        def forward(self, x: np.ndarray, head: str) -> np.ndarray:
            return self.a(x) if head == "a" else self.b(x)

    model = TwoHeads()
    opt = minnet.optim.Adam(model.parameters(), lr=0.1)
    loss_fn = nn.MSELoss()
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    for head in ("a", "b", "a", "a"):
        opt.zero_grad()
        before = {n: p.data.copy() for n, p in model.named_parameters()}
        loss_fn(model(x, head), y).backward()
        other = "b" if head == "a" else "a"
        assert getattr(model, other).weight.grad is None
        assert getattr(model, head).weight.grad is not None
        opt.step()
        for n, p in model.named_parameters():
            moved = not np.array_equal(p.data, before[n])
            assert moved == n.startswith(head), n
    state = opt.state_dict()["state"]
    assert [state[k]["step"] for k in range(4)] == [3.0, 3.0, 1.0, 1.0]


def test_hand_written_backward_adds_into_a_cleared_gradient() -> None:
    """A module whose backward does ``p.grad += ...`` works after ``zero_grad()`` set its
    gradient to ``None``: the module's backward starts it from zeros."""

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = Parameter(np.array([2.0, 3.0]))

        def forward(self, x: np.ndarray) -> np.ndarray:
            self._x = x
            return x * self.s.data

        def backward(self, g: np.ndarray) -> np.ndarray:
            self.s.grad += (g * self._x).sum(0)
            return g * self.s.data

    m = Scale()
    opt = minnet.optim.SGD(m.parameters(), lr=0.1)
    opt.zero_grad()
    assert m.s.grad is None
    x = np.array([[1.0, 2.0]])
    m(x)
    m.backward(np.ones((1, 2)))
    np.testing.assert_array_equal(m.s.grad, [1.0, 2.0])
    assert np.shares_memory(m.s.grad, opt._groups[0].grad)  # in the flat buffer the step reads
    opt.step()
    np.testing.assert_allclose(m.s.data, [1.9, 2.8])


def test_user_sets_grad_to_none_then_step_skips_it() -> None:
    w, b = Parameter(np.ones(3), "w"), Parameter(np.ones(2), "b")
    opt = minnet.optim.Adam([w, b], lr=0.1)
    w.grad[...] = 1.0
    b.grad[...] = 1.0
    opt.step()
    b.grad = None
    before = b.data.copy()
    opt.step()  # no complaint about .data: b is skipped
    np.testing.assert_array_equal(b.data, before)
    assert [opt.state_dict()["state"][k]["step"] for k in (0, 1)] == [2.0, 1.0]
    b.grad = np.full(2, 1.0)  # an array of the right shape is copied into the buffer
    assert np.shares_memory(b.grad, opt._groups[0].grad)
    opt.step()
    assert [opt.state_dict()["state"][k]["step"] for k in (0, 1)] == [3.0, 2.0]
    b.grad = np.ones(5)  # the wrong shape is named at the step
    with pytest.raises(RuntimeError, match=r"b \.grad was set to an array of shape \(5,\)"):
        opt.step()


def test_state_dict_round_trip_keeps_per_parameter_steps() -> None:
    opt, params = replay("NAdam", {"lr": 0.1}, True)
    sd = opt.state_dict()
    assert [sd["state"][k]["step"] for k in range(3)] == [12.0, 9.0, 7.0]
    assert len({sd["state"][k]["mu_product"] for k in range(3)}) == 3  # per parameter
    other = [Parameter(p.data.copy(), p.name) for p in params]
    opt2 = minnet.optim.NAdam(other, lr=0.1)
    opt2.load_state_dict(sd)
    g = np.linspace(-1, 1, 6).reshape(2, 3)
    for o, ps in ((opt, params), (opt2, other)):
        o.zero_grad()
        ps[0].grad = g
        o.step()
    np.testing.assert_array_equal(params[0].data, other[0].data)
    assert opt2.state_dict()["state"][1]["step"] == 9.0  # b was skipped


def test_common_case_is_one_kernel_call() -> None:
    """Every parameter with a gradient and one step count: one run over the whole buffer."""
    model = nn.Sequential(nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1))
    opt = minnet.optim.Adam(model.parameters())
    loss_fn = nn.MSELoss()
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(np.ones((2, 4), np.float32)), np.zeros((2, 2), np.float32)).backward()
        (flat,) = opt._groups
        runs = flat.step_runs()
        assert len(runs) == 1 and runs[0][0] is flat.args
        opt.step()

"""Per-call graphs: every module call keeps its own saved state, ``loss.backward()`` walks the
calls that produced the loss (minnet.nn.graph)."""

from __future__ import annotations

import gc
import tracemalloc
import warnings
import weakref

import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.nn.graph import Call, Output

F64 = np.float64


def _seq() -> nn.Sequential:
    r = np.random.default_rng(1)
    return nn.Sequential(
        nn.Linear(5, 7, rng=r, dtype=F64), nn.ReLU(), nn.Linear(7, 3, rng=r, dtype=F64)
    )


class Composite(nn.Module):
    """PyTorch style: a forward only."""

    def __init__(self) -> None:
        super().__init__()
        r = np.random.default_rng(1)
        self.fc1 = nn.Linear(5, 7, rng=r, dtype=F64)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(7, 3, rng=r, dtype=F64)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.fc2(self.act(self.fc1(x)))


class HandWritten(Composite):
    """The same, with the chain written out by hand."""

    def backward(self, g: np.ndarray) -> np.ndarray:
        return self.fc1.backward(self.act.backward(self.fc2.backward(g)))


MAKERS = {"sequential": _seq, "composite": Composite, "hand-written": HandWritten}
rng = np.random.default_rng(0)
XB, XV = rng.standard_normal((4, 5)), 3 * rng.standard_normal((4, 5))
YB, YV = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))


def _reference() -> list[np.ndarray]:
    """The training batch's gradients, computed by hand: a plain forward and backward."""
    m = _seq()
    h = np.maximum(XB @ m[0].weight.data.T + m[0].bias.data, 0)
    out = h @ m[2].weight.data.T + m[2].bias.data
    g = 2 * (out - YB) / out.size
    gh = (g @ m[2].weight.data) * (h > 0)
    return [gh.T @ XB, gh.sum(0), g.T @ h, g.sum(0)]


REF = _reference()


def _assert_ref(model: nn.Module) -> None:
    for p, ref in zip(model.parameters(), REF):
        np.testing.assert_allclose(p.grad, ref, rtol=1e-12, atol=1e-14, err_msg=p.name)


@pytest.mark.parametrize("kind", MAKERS)
def test_loss_backward_fills_every_grad(kind: str) -> None:
    model = MAKERS[kind]()
    loss = nn.MSELoss()(model(XB), YB)
    assert isinstance(loss, Output) and loss.shape == () and loss.grad_fn is not None
    assert loss.backward() is None
    _assert_ref(model)


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize("style", ["loss.backward()", "model.backward(loss_fn.backward())"])
def test_a_forward_between_the_loss_and_backward_changes_nothing(kind: str, style: str) -> None:
    # The case: accuracy on another batch without no_grad, then the backward.
    model, loss_fn = MAKERS[kind](), nn.MSELoss()
    out = model(XB)
    loss = loss_fn(out, YB)
    model(XV)
    kept = model(XV)  # kept alive too: still the training call's state is used
    if style == "loss.backward()":
        loss.backward()
    else:
        model.backward(loss_fn.backward())
    _assert_ref(model)
    assert kept.shape == (4, 3)


@pytest.mark.parametrize("kind", MAKERS)
def test_the_same_loss_object_called_twice(kind: str) -> None:
    model, loss_fn = MAKERS[kind](), nn.MSELoss()
    loss = loss_fn(model(XB), YB)
    val = loss_fn(model(XV), YV)  # validation loss outside no_grad, kept
    loss.backward()
    _assert_ref(model)
    assert float(val) != float(loss)


def test_two_losses_backpropagate_each_their_own_call() -> None:
    model, loss_fn = _seq(), nn.MSELoss()
    la, lb = loss_fn(model(XB), YB), loss_fn(model(XV), YV)
    lb.backward()
    model.zero_grad()
    la.backward()
    _assert_ref(model)


def test_second_backward_raises_pytorchs_message_and_retain_graph_keeps_it() -> None:
    model = _seq()
    loss = nn.MSELoss()(model(XB), YB)
    loss.backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        loss.backward()
    _assert_ref(model)  # the failed call added nothing
    model.zero_grad()
    loss = nn.MSELoss()(model(XB), YB)
    loss.backward(retain_graph=True)
    loss.backward()
    for p, ref in zip(model.parameters(), REF):
        np.testing.assert_allclose(p.grad, 2 * ref, rtol=1e-12, atol=1e-14)


def test_no_grad_forwards_keep_nothing() -> None:
    model, loss_fn = _seq(), nn.MSELoss()
    with minnet.no_grad():
        out = model(XB)
        loss = loss_fn(out, YB)
    assert type(out) is np.ndarray and not isinstance(loss, Output)
    assert "_last" not in model.__dict__ and "_last" not in loss_fn.__dict__
    assert all(getattr(m, "_x", None) is None for m in model)


def test_recorded_operations_on_losses() -> None:
    model, loss_fn = _seq(), nn.MSELoss()
    (loss_fn(model(XB), YB) / 4).backward()  # gradient accumulation's idiom
    for p, ref in zip(model.parameters(), REF):
        np.testing.assert_allclose(p.grad, ref / 4, rtol=1e-12, atol=1e-15)
    model.zero_grad()
    total = 0.5 * loss_fn(model(XB), YB) + loss_fn(model(XB), YB) * 0.5 - 0.0
    total.backward()
    _assert_ref(model)
    model.zero_grad()
    nn.MSELoss(reduction="none")(model(XB), YB).mean().backward()
    _assert_ref(model)
    model.zero_grad()
    per = nn.MSELoss(reduction="none")(model(XB), YB)
    (per.sum() / per.size).backward()
    _assert_ref(model)
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        nn.MSELoss(reduction="none")(model(XB), YB).backward()


def test_a_call_used_twice_gets_the_sum_of_its_gradients() -> None:
    # h feeds two heads: h's call runs once, with both heads' gradients added.
    r = np.random.default_rng(2)
    body, h1, h2 = (nn.Linear(5, 5, rng=r, dtype=F64) for _ in range(3))
    loss_fn = nn.MSELoss(reduction="sum")
    h = body(XB)
    (loss_fn(h1(h), YB[:, :1].repeat(5, 1)) + loss_fn(h2(h), XB)).backward()
    got = [p.grad.copy() for p in body.parameters()]
    for m in (body, h1, h2):
        m.zero_grad()
    h = body.forward(XB)
    g1 = h1.backward(2 * (h1.forward(h) - YB[:, :1].repeat(5, 1)))
    g2 = h2.backward(2 * (h2.forward(h) - XB))
    body.backward(g1 + g2)
    for a, p in zip(got, body.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-12)


def test_numpy_between_modules_is_refused_before_any_gradient() -> None:
    class Squaring(Composite):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return self.fc2(self.act(self.fc1(x)) ** 2)

    model = Squaring()
    loss = nn.MSELoss()(model(XB), YB)
    with pytest.raises(RuntimeError, match=r"Linear \(fc2 of Squaring\): its input was computed"):
        loss.backward()
    assert not any(p.grad.any() for p in model.parameters())
    detached = nn.MSELoss()(model.fc2(model.fc1(XB).detach()), YB)
    detached.backward()  # .detach() cuts the graph: only fc2 gets a gradient
    assert model.fc2.weight.grad.any() and not model.fc1.weight.grad.any()
    with pytest.raises(RuntimeError, match="does not require grad"):
        nn.MSELoss()(XB[:, :3], YB).backward()


def test_scaling_between_modules_is_recorded() -> None:
    class Doubling(Composite):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return self.fc2(self.act(self.fc1(x)) * 2.0)

    model, ref = Doubling(), Composite()
    nn.MSELoss()(model(XB), YB).backward()
    ref.fc2.weight.data *= 2.0
    nn.MSELoss()(ref(XB), YB).backward()
    np.testing.assert_allclose(model.fc1.weight.grad, ref.fc1.weight.grad, rtol=1e-12)
    np.testing.assert_allclose(model.fc2.weight.grad, 2 * ref.fc2.weight.grad, rtol=1e-12)


def test_a_hand_written_backward_that_forgets_a_module_is_reported() -> None:
    class Forgetful(Composite):
        def backward(self, g: np.ndarray) -> np.ndarray:
            return self.act.backward(self.fc2.backward(g))

    model = Forgetful()
    with pytest.warns(RuntimeWarning, match=r"did not call the backward of Linear \(fc1 of"):
        nn.MSELoss()(model(XB), YB).backward()


def _live_calls() -> int:
    gc.collect()
    return sum(type(o) is Call for o in gc.get_objects())


@pytest.mark.parametrize("pattern", [
    "loss.backward",
    pytest.param("legacy", marks=pytest.mark.slow),
    pytest.param("dropped losses", marks=pytest.mark.slow),
])  # fmt: skip
def test_no_growth_over_ten_thousand_steps(pattern: str) -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    loss_fn = nn.CrossEntropyLoss()
    x, y = rng.standard_normal((16, 8), dtype=np.float32), rng.integers(0, 2, 16)
    params = model.parameters()
    refs: list[weakref.ref] = []

    def step(t: int) -> None:
        out = model(x)
        loss = loss_fn(out, y)
        if t % 100 == 0:
            refs.append(weakref.ref(loss.grad_fn))
        model(x[:4])  # an evaluation forward outside no_grad, dropped
        if pattern == "dropped losses":
            return  # the loss is dropped without backward
        for p in params:
            p.grad.fill(0)
        if pattern == "legacy":
            model.backward(loss_fn.backward())
        else:
            loss.backward()
        for p in params:  # plain SGD by hand: this test measures the graph alone
            p.data -= 1e-3 * p.grad

    for t in range(500):
        step(t)
    before = _live_calls()
    only_minnet = [tracemalloc.Filter(True, minnet.__file__.rsplit("/", 1)[0] + "/*")]
    tracemalloc.start()
    for t in range(500):  # what these steps allocate and keep is the steady state
        step(t)
    start = tracemalloc.take_snapshot().filter_traces(only_minnet)
    for t in range(10_000):
        step(t)
    end = tracemalloc.take_snapshot().filter_traces(only_minnet)
    tracemalloc.stop()
    grown = sum(s.size_diff for s in end.compare_to(start, "filename"))
    # Only the latest call of each module (and of the loss) stays alive.
    assert _live_calls() <= max(before, 3)
    assert sum(r() is not None for r in refs) <= 1
    assert grown < 8 * 1024, f"minnet's allocations grew by {grown} bytes"


def test_buffers_are_not_overwritten_while_a_call_waits() -> None:
    # A float32 Sequential reuses its activation buffers; a second call while the first still
    # waits for its backward must write elsewhere.
    r = np.random.default_rng(3)
    model = nn.Sequential(nn.Linear(5, 7, rng=r), nn.ReLU(), nn.Linear(7, 3, rng=r))
    x, xv = XB.astype(np.float32), XV.astype(np.float32)
    loss_fn = nn.MSELoss()
    ref_loss = loss_fn(model(x), YB.astype(np.float32))
    ref_loss.backward()
    ref = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    loss = loss_fn(model(x), YB.astype(np.float32))
    other = loss_fn(model(xv), YV.astype(np.float32))
    loss.backward()
    for a, p in zip(ref, model.parameters()):
        np.testing.assert_array_equal(a, p.grad)
    other.backward()  # and the second call's own gradients are right too
    assert float(other) != float(loss)


def test_outputs_behave_as_arrays() -> None:
    model = _seq()
    out = model(XB)
    assert isinstance(out, np.ndarray) and out.requires_grad
    assert out.detach().__class__ is np.ndarray and out.numpy().__class__ is np.ndarray
    assert (out**2).grad_fn is None and out[:2].grad_fn is None  # NumPy results: not recorded
    assert (out * 2).grad_fn is not None  # scaling by a number is recorded
    loss = nn.MSELoss()(out, YB)
    assert f"{loss:.3f}" == f"{float(loss):.3f}" and loss.item() == float(loss)
    assert repr(loss.grad_fn) == "<MSELossBackward of MSELoss>"
    assert loss.cpu() is loss


def test_module_backward_without_a_loss_keeps_working() -> None:
    lin = nn.Linear(3, 2, dtype=F64, rng=0)
    lin(np.ones((4, 3)))
    lin(np.full((4, 3), 2.0))
    lin.backward(np.ones((4, 2)))  # the latest call
    np.testing.assert_array_equal(lin.weight.grad, np.full((2, 3), 8.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = lin(np.ones((4, 3)))
        out.backward(np.ones((4, 2)))  # an output's backward with its gradient
    np.testing.assert_array_equal(lin.weight.grad, np.full((2, 3), 12.0))


def test_a_sequential_whose_layers_were_called_one_by_one() -> None:
    # model[i](...) calls, then model.backward(g): each layer's own latest call is used.
    model, loss_fn = _seq(), nn.MSELoss()
    h = model[1](model[0](XB))
    loss_fn(model[2](h), YB)
    model.backward(loss_fn.backward())
    _assert_ref(model)


class Inner(nn.Module):
    """A hand-written block used inside a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6, rng=4, dtype=F64)
        self.act = nn.Tanh()

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.act(self.fc(x))

    def backward(self, g: np.ndarray) -> np.ndarray:
        return self.fc.backward(self.act.backward(g))


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 5, rng=0, dtype=F64), nn.GELU(),
                          nn.Dropout(0.5, rng=3), nn.Linear(5, 2, rng=1, dtype=F64)),
    lambda: nn.Sequential(nn.Linear(6, 6, rng=0, dtype=F64), Inner(),
                          nn.Sequential(nn.ReLU(), nn.Linear(6, 2, rng=1, dtype=F64))),
    lambda: nn.Sequential(nn.Linear(6, 8, rng=0), nn.ReLU(), nn.Linear(8, 2, rng=1)).half(),
])  # fmt: skip
def test_every_layer_kind_keeps_its_own_call(make) -> None:
    # Dropout masks, nested Sequentials, hand-written blocks inside a Sequential, 16-bit
    # layers: an extra forward (its own mask, its own buffers) changes nothing.
    x = np.random.default_rng(5).standard_normal((4, 2, 3))
    xv = 2 * np.random.default_rng(6).standard_normal((4, 2, 3))
    y = np.random.default_rng(7).standard_normal((4, 2))
    flat = (lambda a: a) if isinstance(make()[0], nn.Flatten) else (lambda a: a.reshape(4, 6))

    def grads(extra: bool) -> list[np.ndarray]:
        model, loss_fn = make(), nn.MSELoss()
        loss = loss_fn(model(flat(x)), y)
        if extra:
            other = model(flat(xv))
            assert other.shape == (4, 2)
        loss.backward()
        return [p.grad.copy() for p in model.parameters()]

    ref = grads(False)
    assert all(np.isfinite(g.astype(np.float64)).all() for g in ref) and ref[0].any()
    for a, b in zip(ref, grads(True)):
        np.testing.assert_array_equal(a, b)


def test_recorded_chain_passes_gradcheck() -> None:
    model = nn.Sequential(nn.Linear(6, 6, rng=0, dtype=F64), Inner(), nn.Linear(6, 3, rng=2))
    assert minnet.testing.gradcheck(model, np.random.default_rng(8).standard_normal((3, 6)))


def test_every_built_in_layer_keeps_its_saved_state_per_call() -> None:
    """A layer class with saved state (its own ``_state_attrs`` or a base's, as the pooling
    layers share theirs) is recorded per call, so an extra forward cannot change a gradient."""
    import inspect

    from minnet.nn import module as module_mod

    layers = [
        getattr(nn, n) for n in dir(nn)
        if inspect.isclass(getattr(nn, n)) and issubclass(getattr(nn, n), nn.Module)
        and getattr(nn, n)._state_attrs
    ]  # fmt: skip
    assert nn.MaxPool2d in layers and nn.AvgPool2d in layers
    assert [c.__name__ for c in layers if c._kind != module_mod._STATE] == []


@pytest.mark.parametrize(
    "pool", [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.MaxPool2d(2, return_indices=True)]
)
def test_a_pooling_layer_called_again_keeps_the_first_calls_gradient(pool: nn.Module) -> None:
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(1, 2, 1, bias=False, dtype=np.float64, rng=0)
    x1, x2 = rng.standard_normal((2, 1, 1, 4, 4))

    def loss_of(x: np.ndarray) -> object:
        y = pool(conv(x))
        return (y[0] if isinstance(y, tuple) else y).sum()

    loss_of(x1).backward()
    expected = conv.weight.grad.copy()
    conv.weight.grad = None
    loss = loss_of(x1)
    loss_of(x2)  # another call of both layers before the first loss's backward
    loss.backward()
    np.testing.assert_array_equal(conv.weight.grad, expected)
